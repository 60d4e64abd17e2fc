"""Handshake, ALPN, certificate verification and connect failures over real UDP."""

from __future__ import annotations

import socket
import ssl
import time

import anyio
import pytest
from quic_helpers import (
    HOST,
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import HandshakeCompleted, PingAcknowledged, ProtocolNegotiated

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_handshake_and_alpn_negotiation(server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(
        server_config(alpn_protocols=["a", "b"]),
        create_protocol=servers,
        stream_handler=echo_stream_handler,
    ) as server:
        configuration = client_config(alpn_protocols=["b", "c"])
        with anyio.fail_after(10):
            async with client(
                server.local_port, configuration, create_protocol=RecordingProtocol
            ) as protocol:
                assert isinstance(protocol, RecordingProtocol)
                assert protocol._quic.configuration.alpn_protocols == ["b", "c"]

                negotiated = await protocol.wait_event(ProtocolNegotiated)
                assert negotiated.alpn_protocol == "b"
                done = await protocol.wait_event(HandshakeCompleted)
                assert done.alpn_protocol == "b"
                assert done.session_resumed is False

                server_protocol = await servers.next()
                server_done = await server_protocol.wait_event(HandshakeCompleted)
                assert server_done.alpn_protocol == "b"

                # The connection is usable, not merely "completed".
                assert await echo_roundtrip(protocol, b"hello over quic") == b"hello over quic"


async def test_wait_connected_and_ping(server_config, client_config):
    async with running_server(server_config()) as server:
        with anyio.fail_after(10):
            async with client(
                server.local_port, client_config(), create_protocol=RecordingProtocol
            ) as protocol:
                await protocol.wait_connected()  # already connected: returns at once
                await protocol.ping()
                await protocol.wait_event(PingAcknowledged)


async def test_alpn_mismatch_raises_connection_error(server_config, client_config):
    async with running_server(server_config(alpn_protocols=["a"])) as server:
        configuration = client_config(alpn_protocols=["z"], handshake_timeout=10.0)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            with anyio.fail_after(15):
                async with client(server.local_port, configuration):
                    pytest.fail("connected although no ALPN protocol is shared")
        # Rejected by the server's TLS alert, not by running out the handshake timeout.
        assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("peer", ["closed-port", "silent-socket"])
async def test_connect_nobody_serving_raises_within_handshake_timeout(client_config, peer):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        if peer == "closed-port":
            sock.close()  # nothing bound there any more (ICMP port unreachable)
        configuration = client_config(handshake_timeout=3.0)
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            with anyio.fail_after(15):
                async with client(port, configuration):
                    pytest.fail("connected to a port where nobody serves QUIC")
        elapsed = time.monotonic() - started
        assert elapsed < 5.0
        if peer == "closed-port":
            # ICMP refusals close the handshake once they kept coming for 0.9 s (one
            # unauthenticated ICMP error, or a server restarting, closes nothing)
            assert "connection refused" in str(info.value), info.value
            assert elapsed >= 0.85, elapsed
    finally:
        sock.close()


async def test_untrusted_ca_raises_connection_error(server_config, client_config, other_certs):
    async with running_server(server_config()) as server:
        configuration = client_config(cafile=other_certs.ca, handshake_timeout=5.0)
        with pytest.raises(ConnectionError):
            with anyio.fail_after(15):
                async with client(server.local_port, configuration):
                    pytest.fail("connected although the server certificate is untrusted")


async def test_wrong_server_name_raises_connection_error(server_config, client_config):
    async with running_server(server_config()) as server:
        configuration = client_config(server_name="not-this-host.example", handshake_timeout=5.0)
        with pytest.raises(ConnectionError):
            with anyio.fail_after(15):
                async with client(server.local_port, configuration):
                    pytest.fail("connected although the certificate names another host")


async def test_cert_none_skips_verification(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        configuration = client_config(cafile=None, verify_mode=ssl.CERT_NONE)
        with anyio.fail_after(10):
            async with client(server.local_port, configuration) as protocol:
                assert await echo_roundtrip(protocol, b"unverified") == b"unverified"


async def test_cadata_instead_of_cafile(server_config, client_config, certs):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        configuration = client_config(cafile=None)
        with open(certs.ca, "rb") as f:
            configuration.load_verify_locations(cadata=f.read())
        with anyio.fail_after(10):
            async with client(server.local_port, configuration) as protocol:
                assert await echo_roundtrip(protocol, b"cadata") == b"cadata"


async def test_server_sends_intermediate_chain(server_config, client_config, chain_certs):
    # The client trusts only the root; verification needs the intermediate from the server.
    async with running_server(
        server_config(cert_paths=chain_certs), stream_handler=echo_stream_handler
    ) as server:
        configuration = client_config(cafile=chain_certs.ca)
        with anyio.fail_after(10):
            async with client(server.local_port, configuration) as protocol:
                assert await echo_roundtrip(protocol, b"chain") == b"chain"


async def test_encrypted_private_key_with_password(client_config, encrypted_key_certs):
    server_configuration = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    server_configuration.load_cert_chain(
        encrypted_key_certs.cert, encrypted_key_certs.key, password=encrypted_key_certs.password
    )
    async with running_server(server_configuration, stream_handler=echo_stream_handler) as server:
        configuration = client_config(cafile=encrypted_key_certs.ca)
        with anyio.fail_after(10):
            async with client(server.local_port, configuration) as protocol:
                assert await echo_roundtrip(protocol, b"encrypted key") == b"encrypted key"


def test_bad_cert_path_names_file(tmp_path, certs):
    missing = str(tmp_path / "missing-server-cert.pem")
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    with pytest.raises(OSError) as excinfo:
        configuration.load_cert_chain(missing, certs.key)
    assert missing in str(excinfo.value)


def test_bad_key_path_names_file(tmp_path, certs):
    missing = str(tmp_path / "missing-server-key.pem")
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    with pytest.raises(OSError) as excinfo:
        configuration.load_cert_chain(certs.cert, missing)
    assert missing in str(excinfo.value)
