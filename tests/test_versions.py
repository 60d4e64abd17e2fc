"""QUIC version 2 (RFC 9369) and compatible version negotiation (RFC 9368), over real UDP:
our client and server, aioquic both ways, and Debian's gtlsserver."""

from __future__ import annotations

import os
import shutil

import anyio
import pytest
from quic_helpers import (
    HOST,
    ProtocolCollector,
    RecordingProtocol,
    aioquic_echo_server,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic.configuration import QUIC_V1, QUIC_V2

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PAYLOAD = os.urandom(200_000)


async def _negotiate(server_config, client_config, server_versions, client_versions,
                     original=None) -> tuple[int, int]:
    """Handshake, echo PAYLOAD; return (client's, server's) negotiated version."""
    servers = ProtocolCollector(RecordingProtocol)
    skw = {} if server_versions == "default" else {"supported_versions": server_versions}
    ckw = {} if client_versions == "default" else {"supported_versions": client_versions}
    if original is not None:
        ckw["original_version"] = original
    async with running_server(server_config(**skw), stream_handler=echo_stream_handler,
                              create_protocol=servers) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config(**ckw)) as protocol:
                assert await echo_roundtrip(protocol, PAYLOAD) == PAYLOAD
                peer = await servers.next()
                return protocol._quic.negotiated_version, peer._quic.negotiated_version


@pytest.mark.parametrize("server_versions,client_versions,original,expected", [
    ("default", "default", None, QUIC_V1),           # aioquic's defaults: [V1, V2] both
    ("default", [QUIC_V2], None, QUIC_V2),           # a client that starts in v2
    ([QUIC_V2], [QUIC_V2], None, QUIC_V2),
    ([QUIC_V2, QUIC_V1], [QUIC_V2, QUIC_V1], QUIC_V1, QUIC_V2),  # moved from v1 to v2
    ([QUIC_V2, QUIC_V1], "default", None, QUIC_V2),  # server prefers v2, client offers it
    ([QUIC_V2, QUIC_V1], None, None, QUIC_V1),       # the client offers v1 only
    ([QUIC_V1], [QUIC_V2, QUIC_V1], QUIC_V1, QUIC_V1),
])
async def test_version_negotiation_between_our_endpoints(server_config, client_config,
                                                         server_versions, client_versions,
                                                         original, expected):
    got = await _negotiate(server_config, client_config, server_versions, client_versions,
                           original)
    assert got == (expected, expected)


async def test_v2_through_retry_and_new_token(server_config, client_config):
    """A Retry (and the NEW_TOKEN token of the next connection) in version 2."""
    tokens: list[bytes] = []
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              retry=True) as server:
        for token in (None, "from the first connection"):
            cfg = client_config(supported_versions=[QUIC_V2])
            if token is not None:
                assert tokens, "the server sent no NEW_TOKEN"
                cfg.token = tokens[-1]
            with anyio.fail_after(30):
                async with client(server.local_port, cfg,
                                  token_handler=tokens.append) as protocol:
                    assert await echo_roundtrip(protocol, b"retried") == b"retried"
                    assert protocol._quic.negotiated_version == QUIC_V2
        stats = server.admission_stats()
        # the first connection is retried; the second proves its address with the token
        assert stats["retries"] == 1 and stats["tokens_ok"] == 2, stats


async def test_aioquic_client_in_v2_and_negotiating_to_v2(server_config, certs):
    """aioquic's client: starting in v2, and `--negotiate-v2` style (start in v1, offer v2
    first) against our server preferring v2."""
    from aioquic.asyncio import connect as aioquic_connect
    from aioquic.quic.configuration import QuicConfiguration as AioquicConfiguration

    async with running_server(server_config(supported_versions=[QUIC_V2, QUIC_V1]),
                              stream_handler=echo_stream_handler) as server:
        for versions, original in (([QUIC_V2], None), ([QUIC_V2, QUIC_V1], QUIC_V1)):
            cfg = AioquicConfiguration(is_client=True, alpn_protocols=["test"],
                                       server_name="localhost", supported_versions=versions)
            if original is not None:
                cfg.original_version = original
            cfg.load_verify_locations(certs.ca)
            with anyio.fail_after(30):
                async with aioquic_connect(HOST, server.local_port, configuration=cfg) as proto:
                    reader, writer = await proto.create_stream()
                    writer.write(b"v2?")
                    writer.write_eof()
                    assert await reader.read() == b"v2?"
                    assert proto._quic._version == QUIC_V2


async def test_our_client_in_v2_to_aioquic_server(client_config, certs):
    async with aioquic_echo_server(certs) as port:
        with anyio.fail_after(30):
            async with client(port, client_config(supported_versions=[QUIC_V2])) as protocol:
                assert await echo_roundtrip(protocol, PAYLOAD) == PAYLOAD
                assert protocol._quic.negotiated_version == QUIC_V2


async def _against_gtlsserver(client_config, tmp_path, versions: list[int],
                              quic_logger_factory=None) -> tuple[int, object]:
    """Connect to Debian's gtlsserver offering ``versions``: (negotiated version, the
    QuicLogger of the connection that got through, or None)."""
    from h3_helpers import free_udp_port, self_signed, subprocess_peer

    cert = self_signed(str(tmp_path))
    port = free_udp_port()
    gtlsserver = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
    argv = [gtlsserver, "-q", "-d", str(tmp_path), HOST, str(port), cert.key, cert.cert]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="gtlsserver"):
        with anyio.fail_after(60):
            for _ in range(20):  # gtlsserver binds asynchronously: retry until it answers
                logger = quic_logger_factory() if quic_logger_factory else None
                cfg = client_config(alpn_protocols=["h3"], supported_versions=versions,
                                    cafile=None, handshake_timeout=2, quic_logger=logger)
                cfg.load_verify_locations(cert.cert)
                try:
                    async with client(port, cfg) as protocol:
                        return protocol._quic.negotiated_version, logger
                except ConnectionError:
                    await anyio.sleep(0.25)
    raise AssertionError("gtlsserver never answered")


needs_gtlsserver = pytest.mark.skipif(
    not (shutil.which("gtlsserver") or os.path.exists("/usr/sbin/gtlsserver")),
    reason="gtlsserver missing (Debian package ngtcp2-server)")


@needs_gtlsserver
async def test_our_client_in_v2_to_gtlsserver(client_config, tmp_path):
    version, _ = await _against_gtlsserver(client_config, tmp_path, [QUIC_V2])
    assert version == QUIC_V2


RESERVED = 0x1A2A3A4A  # what aioquic's interop.py puts first to force Version Negotiation


def _vn_packets(logger) -> list[dict]:
    events = logger.to_dict()["traces"][0]["events"]
    return [e["data"] for e in events if e["name"] == "transport:packet_received" and
            e["data"]["header"]["packet_type"] == "version_negotiation"]


@pytest.mark.parametrize("server_versions,client_versions,expected", [
    ([QUIC_V1, QUIC_V2], [RESERVED, QUIC_V1], QUIC_V1),
    # restarts in v2 (its first real version); the server prefers v1 and moves it there
    ([QUIC_V1, QUIC_V2], [RESERVED, QUIC_V2, QUIC_V1], QUIC_V1),
    ([QUIC_V2, QUIC_V1], [RESERVED, QUIC_V2, QUIC_V1], QUIC_V2),
    ([QUIC_V2], [RESERVED, QUIC_V1, QUIC_V2], QUIC_V2),
])
async def test_client_in_a_reserved_version_starts_again_after_version_negotiation(
        server_config, client_config, server_versions, client_versions, expected):
    """The client's first Initial is in a reserved version: the server answers with Version
    Negotiation, the client starts again in its first real version the server offers, the
    connection works, and the client's qlog shows the Version Negotiation packet."""
    from aiopquic.quic.logger import QuicLogger

    logger = QuicLogger()
    cfg = client_config(supported_versions=client_versions, quic_logger=logger)
    async with running_server(server_config(supported_versions=server_versions),
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, cfg) as protocol:
                assert await echo_roundtrip(protocol, PAYLOAD) == PAYLOAD
                assert protocol._quic.negotiated_version == expected
    vn = _vn_packets(logger)
    assert len(vn) == 1
    offered = {int(v, 16) for v in vn[0]["supported_versions"]}
    assert set(server_versions) <= offered and RESERVED not in offered


async def test_version_negotiation_with_no_common_version_fails_with_a_reason(
        server_config, client_config):
    """The server speaks v1 only; the client offers a reserved version and v2: the
    connection fails, naming what the server offers, instead of hanging."""
    cfg = client_config(supported_versions=[RESERVED, QUIC_V2], handshake_timeout=10)
    async with running_server(server_config(supported_versions=[QUIC_V1]),
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(20), pytest.raises(ConnectionError, match="0x00000001"):
            async with client(server.local_port, cfg):
                pass


def test_reserved_versions_alone_are_refused():
    from aiopquic.quic.configuration import QuicConfiguration

    with pytest.raises(ValueError, match="supported_versions"):
        QuicConfiguration(is_client=True, supported_versions=[RESERVED]).validate()
    with pytest.raises(ValueError, match="supported_versions"):
        QuicConfiguration(is_client=True, supported_versions=[0x12345678, QUIC_V1]).validate()


async def test_version_negotiation_against_aioquic_server(client_config, certs):
    from aiopquic.quic.logger import QuicLogger

    logger = QuicLogger()
    async with aioquic_echo_server(certs) as port:
        cfg = client_config(supported_versions=[RESERVED, QUIC_V1], quic_logger=logger)
        with anyio.fail_after(30):
            async with client(port, cfg) as protocol:
                assert await echo_roundtrip(protocol, PAYLOAD) == PAYLOAD
                assert protocol._quic.negotiated_version == QUIC_V1
    assert len(_vn_packets(logger)) == 1


@needs_gtlsserver
async def test_version_negotiation_against_gtlsserver(client_config, tmp_path):
    from aiopquic.quic.logger import QuicLogger

    version, logger = await _against_gtlsserver(
        client_config, tmp_path, [RESERVED, QUIC_V2, QUIC_V1], QuicLogger)
    assert version in (QUIC_V1, QUIC_V2)
    assert len(_vn_packets(logger)) == 1
