"""QuicConfiguration fields from aiopquic 0.6.1 (picoquic) and aioquic: every one is accepted
by keyword and readable, and is either honoured (shown over real UDP where observable) or
accepted at its default only, with validate() rejecting other values by name.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from quic_helpers import (
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic import connection as quic_connection
from aiopquic.quic.configuration import (
    CONNECTION_ID_LENGTH,
    QUIC_V1,
    QUIC_V2,
    QuicConfiguration,
)
from aiopquic.quic.events import ConnectionTerminated, DatagramFrameReceived

pytestmark = [pytest.mark.timeout(60)]
anyio_test = pytest.mark.anyio

MiB = 1024 * 1024

# Every field either API defines that aiopquic did not have before, with its default here.
COMPAT_DEFAULTS: dict[str, Any] = {
    # aiopquic 0.6.1
    "certificate_file": None,
    "private_key_file": None,
    "keep_alive_interval": None,
    "max_connections": None,
    "socket_buffer_size": None,
    "stream_ring_cap": None,
    "tx_max_queued_bytes": None,
    "event_ring_capacity": None,
    "qlog_dir": None,
    "datagram_ring_bytes": None,
    "datagram_max_payload": None,
    "key_exchange_groups": None,
    "cipher_suite": None,
    "key_update_interval": None,
    "session_ticket_file": None,
    "ip_family": None,
    "pmtud": None,
    # aioquic
    "certificate": None,
    "cipher_suites": None,
    "supported_versions": [QUIC_V1, QUIC_V2],
    "original_version": None,
    "initial_rtt": None,
    "connection_id_length": CONNECTION_ID_LENGTH,
    "token": b"",
    "session_ticket": None,
    "quantum_readiness_test": False,
    "quic_logger": None,
}


# ------------------------------------------------------------------------ construction


@pytest.mark.parametrize("name", sorted(COMPAT_DEFAULTS))
def test_field_default_readable_and_accepted_by_keyword(name):
    default = COMPAT_DEFAULTS[name]
    assert getattr(QuicConfiguration(), name) == default
    c = QuicConfiguration(**{name: default})
    assert getattr(c, name) == default
    c.validate()


def test_properties_from_061():
    c = QuicConfiguration()
    assert c.verify_peer is True
    assert c.desired_version == QUIC_V1
    c.verify_peer = False
    assert c.verify_mode == ssl.CERT_NONE and c.verify_peer is False
    c.verify_peer = True
    assert c.verify_mode == ssl.CERT_REQUIRED and c.verify_peer is True
    assert QuicConfiguration(verify_mode=ssl.CERT_NONE).verify_peer is False


def test_unknown_keyword_still_raises_type_error():
    with pytest.raises(TypeError, match="no_such_field"):
        QuicConfiguration(no_such_field=1)  # type: ignore[call-arg]


# Accepted only at the default: (field, rejected value, words the message must contain).
REJECTED = [
    ("tx_max_queued_bytes", 4 * MiB, "per stream"),
    ("key_exchange_groups", ["x25519mlkem768"], "GnuTLS"),
    ("cipher_suite", "TLS_AES_128_CCM_8_SHA256", "unknown cipher suite"),
    ("cipher_suites", [0x1305], "not a TLS 1.3 suite"),
    ("key_update_interval", 1000, "request_key_update"),
    ("session_ticket", object(), "resumption"),
    ("ip_family", socket.AF_INET6, "follows the address"),
    ("pmtud", "delayed", "delayed"),
    ("supported_versions", [QUIC_V1, 0xFF00001D], "versions 1"),
    ("supported_versions", [QUIC_V1, QUIC_V1], "each once"),
    ("supported_versions", [], "each once"),
    ("original_version", 0xFF00001D, "one of supported_versions"),
    ("connection_id_length", 21, "between 8 and 20"),
    ("token", bytes(5000), "token"),
    ("congestion_control_algorithm", "prague", "picoquic controller"),
    ("congestion_control_algorithm", "c4", "picoquic controller"),
    ("congestion_control_algorithm", "dcubic", "picoquic controller"),
    ("congestion_control_algorithm", "fast", "picoquic controller"),
]


@pytest.mark.parametrize(("name", "value", "words"), REJECTED)
def test_rejected_on_construction_naming_the_field(name, value, words):
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(**{name: value})
    message = str(excinfo.value)
    assert f"QuicConfiguration.{name}" in message
    assert words in message


@pytest.mark.parametrize(("name", "value", "words"), REJECTED)
def test_rejected_by_validate_when_assigned_later(name, value, words):
    # aiomoqt assigns most of these after construction: connect()/serve() call validate()
    c = QuicConfiguration()
    setattr(c, name, value)
    with pytest.raises(ValueError, match=f"QuicConfiguration.{name}"):
        c.validate()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("keep_alive_interval", 0),
        ("tx_max_queued_bytes", 0),
        ("ip_family", socket.AF_UNSPEC),
        ("pmtud", "basic"),
        ("pmtud", "BLOCKED"),
        ("supported_versions", [QUIC_V1]),
        ("original_version", QUIC_V1),
        ("token", None),
        ("congestion_control_algorithm", None),
        ("max_datagram_frame_size", 0),
        ("cipher_suite", "TLS_CHACHA20_POLY1305_SHA256"),
        ("cipher_suites", ["tls_aes_256_gcm_sha384", 0x1301]),
    ],
)
def test_off_or_default_spellings_accepted(name, value):
    QuicConfiguration(**{name: value})


@pytest.mark.parametrize(
    ("name", "value", "exc"),
    [
        ("max_connections", 0, ValueError),
        ("max_connections", "10", TypeError),
        ("event_ring_capacity", 8, ValueError),
        ("event_ring_capacity", (1 << 20) + 1, ValueError),
        ("supported_versions", 1, TypeError),
        ("datagram_max_payload", 0, ValueError),
        ("datagram_max_payload", 70000, ValueError),
        ("stream_ring_cap", 0, ValueError),
        ("pmtud", 1, TypeError),
    ],
)
def test_bad_values_of_honoured_fields(name, value, exc):
    with pytest.raises(exc, match=name):
        QuicConfiguration(**{name: value})


# ----------------------------------------------------------------- mapping to the engine


def _native(**kwargs: Any) -> dict[str, Any]:
    return quic_connection.native_config(QuicConfiguration(**kwargs))


def test_max_datagram_frame_size_any_varint():
    assert QuicConfiguration(max_datagram_frame_size=65536).max_datagram_frame_size == 65536
    assert _native(max_datagram_frame_size=65536)["max_datagram_frame_size"] == 65536
    assert _native(max_datagram_frame_size=(1 << 62) - 1)["max_datagram_frame_size"] == (
        1 << 62
    ) - 1
    assert QuicConfiguration(max_datagram_frame_size=0).max_datagram_frame_size is None


@pytest.mark.parametrize(
    ("name", "engine"),
    [("bbr1", "AQ_CC_BBR"), ("bbr", "AQ_CC_BBR"), ("BBR1", "AQ_CC_BBR"),
     ("newreno", "AQ_CC_RENO"), ("reno", "AQ_CC_RENO"), ("cubic", "AQ_CC_CUBIC"),
     (None, "AQ_CC_BBR")],
)
def test_congestion_control_names_from_061(name, engine):
    from aiopquic._native import lib

    assert _native(congestion_control_algorithm=name)["cc_algo"] == getattr(lib, engine)


def test_stream_ring_cap_sets_stream_buffer_size():
    assert QuicConfiguration(stream_ring_cap=4 * MiB).stream_buffer_size == 4 * MiB
    assert QuicConfiguration(stream_ring_cap=3 * MiB).stream_buffer_size == 4 * MiB
    assert QuicConfiguration(stream_ring_cap=1000).stream_buffer_size == 64 * 1024
    c = QuicConfiguration()
    c.stream_ring_cap = 2 * MiB  # as aiomoqt does it: after construction
    c.validate()
    assert c.stream_buffer_size == 2 * MiB


def test_event_ring_capacity_sets_the_native_ring():
    assert _native()["event_ring_size"] == 0  # engine default (4096)
    assert _native(event_ring_capacity=1000)["event_ring_size"] == 1024
    assert _native(event_ring_capacity=16384)["event_ring_size"] == 16384


def test_pmtud_blocked_caps_packets_at_1200():
    assert _native()["max_udp_payload"] == 16384
    assert _native(pmtud="blocked")["max_udp_payload"] == 1200
    assert _native(pmtud="basic")["max_udp_payload"] == 16384


def test_idle_timeout_zero_means_none():
    c = QuicConfiguration(idle_timeout=0)
    assert c.idle_timeout == 0.0
    assert quic_connection.native_config(c)["idle_timeout_ns"] == 0
    with pytest.raises(ValueError, match="idle_timeout"):
        QuicConfiguration(idle_timeout=-1)


def test_max_datagram_size_below_1200_explains():
    with pytest.raises(ValueError, match="1200-byte UDP payloads"):
        QuicConfiguration(max_datagram_size=1100)


# --------------------------------------------------------------------------- credentials


def test_certificate_file_keywords_load_like_load_cert_chain(certs):
    c = QuicConfiguration(is_client=False, certificate_file=certs.cert, private_key_file=certs.key)
    ref = QuicConfiguration(is_client=False)
    ref.load_cert_chain(certs.cert, certs.key)
    assert c.certificate_chain == ref.certificate_chain
    assert c.private_key == ref.private_key
    assert (c.certfile, c.keyfile) == (certs.cert, certs.key)
    # load_cert_chain sets 0.6.1's names too
    assert (ref.certificate_file, ref.private_key_file) == (certs.cert, certs.key)


def test_certificate_file_assigned_later_is_loaded_by_validate(certs):
    c = QuicConfiguration(is_client=False)
    c.certificate_file = certs.cert
    c.private_key_file = certs.key
    c.validate()
    assert c.certificate_chain and c.private_key


def test_certificate_file_errors(certs, tmp_path):
    with pytest.raises(ValueError, match="private_key_file"):
        QuicConfiguration(is_client=False, private_key_file=certs.key)
    with pytest.raises(FileNotFoundError):
        QuicConfiguration(is_client=False, certificate_file=str(tmp_path / "missing.pem"))


def _crypto_objects(certs):
    with open(certs.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(certs.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def test_cryptography_objects_become_pem(certs):
    cert, key = _crypto_objects(certs)
    c = QuicConfiguration(is_client=False, certificate=cert, private_key=key)
    assert c.certificate is cert
    assert c.certificate_chain == cert.public_bytes(serialization.Encoding.PEM)
    assert isinstance(c.private_key, bytes) and b"BEGIN PRIVATE KEY" in c.private_key
    c.validate()  # idempotent: the certificate is not prepended twice
    assert c.certificate_chain == cert.public_bytes(serialization.Encoding.PEM)
    # aioquic's certificate_chain: a list of x509 objects (the intermediates)
    with open(certs.ca, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    d = QuicConfiguration(is_client=False, certificate=cert, private_key=key,
                          certificate_chain=[ca])
    expected = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    assert d.certificate_chain == expected
    d.validate()
    assert d.certificate_chain == expected
    with pytest.raises(TypeError, match="certificate"):
        QuicConfiguration(certificate=object())


# ------------------------------------------------------------------------- over real UDP


@anyio_test
async def test_certificate_file_serves_a_handshake(certs, client_config):
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["test"],
                                   certificate_file=certs.cert, private_key_file=certs.key)
    async with running_server(server_cfg, stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as proto:
            assert await echo_roundtrip(proto, b"x" * 1000) == b"x" * 1000


@anyio_test
async def test_cryptography_objects_serve_a_handshake(certs, client_config):
    cert, key = _crypto_objects(certs)
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["test"],
                                   certificate=cert, private_key=key)
    async with running_server(server_cfg, stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as proto:
            assert await echo_roundtrip(proto, b"y" * 1000) == b"y" * 1000


@anyio_test
async def test_max_connections_refuses_the_extra_connection(server_config, client_config):
    accepted: list[Any] = []

    def create(*args: Any, **kwargs: Any) -> RecordingProtocol:
        proto = RecordingProtocol(*args, **kwargs)
        accepted.append(proto)
        return proto

    async with running_server(server_config(max_connections=2), create_protocol=create,
                              stream_handler=echo_stream_handler) as srv:
        port = srv.local_port
        async with client(port, client_config()) as first, client(port, client_config()) as second:
            assert first._quic.handshake_complete and second._quic.handshake_complete
            third_cm = client(port, client_config(), create_protocol=RecordingProtocol)
            try:
                async with third_cm as third:
                    ev = await third.wait_event(ConnectionTerminated, timeout=10)
                    assert ev.error_code == 0x2 and ev.frame_type is not None
                    assert "max_connections" in ev.reason_phrase
            except ConnectionError as exc:  # refused before connect() returned
                assert "0x2" in str(exc) or "max_connections" in str(exc)
            assert len(accepted) == 2
            # the two accepted connections still work
            assert await echo_roundtrip(first, b"ok") == b"ok"
        # once they are closed, a new one is accepted
        with anyio.fail_after(10):
            while srv._endpoint.connections:
                await asyncio.sleep(0.05)
        async with client(port, client_config()) as fourth:
            assert await echo_roundtrip(fourth, b"again") == b"again"
        assert len(accepted) == 3


@anyio_test
async def test_max_datagram_frame_size_65536_carries_datagrams(server_config, client_config):
    async with running_server(server_config(max_datagram_frame_size=65536),
                              create_protocol=RecordingProtocol,
                              stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config(max_datagram_frame_size=65536),
                          create_protocol=RecordingProtocol) as proto:
            # the echo answers only once the server's side of the handshake is done, so the
            # server's protocol exists by then
            assert await echo_roundtrip(proto, b"hi") == b"hi"
            proto._quic.send_datagram_frame(b"d" * 1000)
            proto.transmit()
            peer = next(iter(server._protocols.values()))
            ev = await peer.wait_event(DatagramFrameReceived, timeout=10)
            assert ev.data == b"d" * 1000


@anyio_test
async def test_datagram_max_payload_caps_sends(server_config, client_config):
    async with running_server(server_config(max_datagram_frame_size=65536),
                              stream_handler=echo_stream_handler) as server:
        cfg = client_config(max_datagram_frame_size=65536, datagram_max_payload=500)
        async with client(server.local_port, cfg) as proto:
            assert proto._quic.max_datagram_payload() == 500
            proto._quic.send_datagram_frame(b"z" * 500)
            with pytest.raises(ValueError, match="500-byte maximum"):
                proto._quic.send_datagram_frame(b"z" * 501)


@anyio_test
async def test_pmtud_blocked_keeps_1200_byte_packets(server_config, client_config):
    payload = b"p" * (2 * MiB)
    async with running_server(server_config(pmtud="blocked"),
                              stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config(pmtud="blocked")) as proto:
            assert await echo_roundtrip(proto, payload) == payload
            stats = await proto.get_stats()
            assert stats.max_datagram_size == 1200
        async with client(server.local_port, client_config()) as proto:
            # the client's own PMTUD still climbs on loopback
            assert await echo_roundtrip(proto, payload) == payload
            stats = await proto.get_stats()
            assert stats.max_datagram_size > 1200


@anyio_test
async def test_event_ring_and_stream_ring_settings_carry_traffic(server_config, client_config):
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with running_server(server_config(event_ring_capacity=64, stream_ring_cap=100_000),
                              stream_handler=_echo) as server:
        cfg = client_config(event_ring_capacity=64, stream_ring_cap=100_000,
                            congestion_control_algorithm="bbr1")
        assert cfg.stream_buffer_size == 128 * 1024
        async with client(server.local_port, cfg) as proto:
            assert await echo_roundtrip(proto, payload) == payload


def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def run() -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    task = asyncio.ensure_future(run())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Future[None]] = set()


@anyio_test
async def test_idle_timeout_zero_keeps_an_idle_connection(server_config, client_config):
    async with running_server(server_config(idle_timeout=0),
                              stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config(idle_timeout=0)) as proto:
            await asyncio.sleep(1.5)
            assert not proto._quic.closed
            assert await echo_roundtrip(proto, b"still here") == b"still here"


# ------------------------------------------------------- a 0.6.1 program: aiomoqt 0.13.3


@anyio_test
async def test_aiomoqt_style_configuration_handshakes(certs):
    """The QuicConfiguration calls aiomoqt 0.13.3 makes (aiomoqt/server.py serve_dual() and
    serve(), aiomoqt/client.py connect()), with its keyword sets and its later assignments,
    copied as literals."""
    alpn = ["moqt-16", "moq-00"]
    # server.py serve_dual()
    server_cfg = QuicConfiguration(
        alpn_protocols=alpn,
        is_client=False,
        max_data=2**24, max_stream_data=2**24,
        max_datagram_frame_size=64 * 1024,
        certificate_file=certs.cert,
        private_key_file=certs.key,
    )
    # what serve() assigns when its caller passed these options
    server_cfg.congestion_control_algorithm = "bbr1"
    server_cfg.stream_ring_cap = 4 * MiB
    server_cfg.max_connections = 256
    # client.py connect(), raw QUIC branch
    client_cfg = QuicConfiguration(
        alpn_protocols=alpn, is_client=True,
        max_data=2**24, max_stream_data=2**24,
        max_datagram_frame_size=64 * 1024,
        server_name="localhost",
        secrets_log_file=None,
    )
    if client_cfg.cafile is None:
        client_cfg.cafile = certs.ca
    if client_cfg.qlog_dir is None:
        pass  # aiomoqt assigns qlog_dir only when its caller asked for qlog
    client_cfg.congestion_control_algorithm = "bbr1"
    # what the WebTransport branch reads
    assert client_cfg.event_ring_capacity is None
    assert client_cfg.verify_peer is True
    assert client_cfg.tx_max_queued_bytes is None
    server_cfg.validate()
    client_cfg.validate()

    async with running_server(server_cfg, stream_handler=_echo,
                              create_protocol=RecordingProtocol) as server:
        async with client(server.local_port, client_cfg,
                          create_protocol=RecordingProtocol) as proto:
            assert proto._quic.alpn_protocol == "moqt-16"
            assert await echo_roundtrip(proto, b"SETUP" * 100) == b"SETUP" * 100
            proto._quic.send_datagram_frame(b"object")
            peer = next(iter(server._protocols.values()))
            ev = await peer.wait_event(DatagramFrameReceived, timeout=10)
            assert ev.data == b"object"


@pytest.mark.parametrize("name, bad, exc", [
    ("keep_alive_interval", -1.0, ValueError),
    ("keep_alive_interval", "5", TypeError),
    ("socket_buffer_size", 100, ValueError),
    ("socket_buffer_size", 1.5, TypeError),
    ("datagram_ring_bytes", 10, ValueError),
    ("initial_rtt", 120.0, ValueError),
])
def test_engine_knobs_are_range_checked(name, bad, exc):
    with pytest.raises(exc, match=name):
        QuicConfiguration(**{name: bad})


@pytest.mark.anyio
async def test_keep_alive_keeps_an_idle_connection_open(server_config, client_config):
    """idle_timeout 1 s on both sides; the client sends a PING after 0.2 s of silence, so
    the connection survives 2.5 s of application silence (without it, it would idle out)."""
    async with running_server(server_config(idle_timeout=1.0)) as server:
        conf = client_config(idle_timeout=1.0, keep_alive_interval=0.2, initial_rtt=0.05,
                             socket_buffer_size=1 << 20, datagram_ring_bytes=65536)
        with anyio.fail_after(20):
            async with client(server.local_port, conf) as protocol:
                await anyio.sleep(2.5)  # the point of the test: time passes idle
                assert not protocol._quic.closed
                await protocol.ping()
