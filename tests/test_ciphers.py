"""TLS cipher suite choice (``cipher_suites``, aioquic's field; ``cipher_suite``, 0.6.1's):
every TLS 1.3 suite QUIC can use, end to end between our client and server, the negotiated
suite reported on both sides (``QuicConnection.cipher_suite``), a server that shares no
suite with the client refusing the handshake, and Debian's ``gtlsclient`` (ngtcp2 +
GnuTLS) fetching over HTTP/3 with ChaCha20-Poly1305 only from our server."""

from __future__ import annotations

import functools
import os
import shutil

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

from aiopquic.quic.connection import QuicConnectionError
from aiopquic.tls import CipherSuite

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"


@pytest.mark.parametrize("suite", [CipherSuite.AES_128_GCM_SHA256,
                                   CipherSuite.AES_256_GCM_SHA384,
                                   CipherSuite.CHACHA20_POLY1305_SHA256, 0x1304])
async def test_each_suite_end_to_end(server_config, client_config, suite):
    protocols = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=protocols) as server:
        with anyio.fail_after(30):
            async with client(server.local_port,
                              client_config(cipher_suites=[suite])) as p:
                payload = os.urandom(300_000)
                assert await echo_roundtrip(p, payload) == payload
                assert p._quic.cipher_suite == suite
                peer = await protocols.next()
                assert peer._quic.cipher_suite == suite


async def test_server_preference_and_0_6_1_field(server_config, client_config):
    """A server limited to AES-256-GCM makes a default client use it (0.6.1's
    ``cipher_suite`` on the server side)."""
    async with running_server(server_config(cipher_suite=CipherSuite.AES_256_GCM_SHA384),
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config()) as p:
                assert p._quic.cipher_suite == CipherSuite.AES_256_GCM_SHA384


async def test_no_common_suite_fails_the_handshake(server_config, client_config):
    async with running_server(server_config(
            cipher_suites=[CipherSuite.AES_256_GCM_SHA384])) as server:
        with anyio.fail_after(30):
            with pytest.raises(QuicConnectionError) as info:
                async with client(server.local_port, client_config(
                        cipher_suites=[CipherSuite.CHACHA20_POLY1305_SHA256])):
                    pass
    assert "TLS" in str(info.value) or "handshake" in str(info.value), str(info.value)


@pytest.mark.skipif(not os.access(GTLSCLIENT, os.X_OK),
                    reason="gtlsclient missing (Debian package ngtcp2-client)")
async def test_gtlsclient_with_chacha20_only(server_config, tmp_path):
    from h3_helpers import subprocess_peer, tail

    from aiopquic.anyio import http3

    seen: list[object] = []

    async def handler(request: http3.Request) -> None:
        seen.append(request.connection.quic.cipher_suite)
        await request.respond(200, [(b"content-type", b"text/plain")], b"chacha ok\n")

    cfg = server_config(alpn_protocols=["h3"],
                        cipher_suites=[CipherSuite.CHACHA20_POLY1305_SHA256])
    async with anyio.create_task_group() as tg:
        server = await tg.start(functools.partial(http3.serve_http3, HOST, 0,
                                                  configuration=cfg, handler=handler))
        port = server.local_port
        dl = tmp_path / "dl"
        dl.mkdir()
        argv = [GTLSCLIENT, "-q", "--exit-on-all-streams-close", f"--download={dl}",
                "--ciphers=NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305",
                HOST, str(port), f"https://localhost:{port}/"]
        async with subprocess_peer(*argv, log_dir=str(tmp_path), name="gtlsclient") as proc:
            with anyio.fail_after(60):
                rc = await proc.wait()
        tg.cancel_scope.cancel()
    assert rc == 0, tail(str(tmp_path / "gtlsclient.err"))
    assert (dl / "index.html").read_bytes() == b"chacha ok\n" or \
        any(p.read_bytes() == b"chacha ok\n" for p in dl.iterdir())
    assert seen == [CipherSuite.CHACHA20_POLY1305_SHA256]
