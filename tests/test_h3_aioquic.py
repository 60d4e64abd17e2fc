"""HTTP/3 and WebTransport interop with aioquic's H3Connection, both directions.

The aioquic side runs in a subprocess (tests/peers/aioquic_h3.py) so the two stacks share
no event loop or process state."""

from __future__ import annotations

import hashlib
import io
import os

import aioquic  # noqa: F401  (test extra; fail loudly if it is missing)
import anyio
import pytest
from h3_helpers import (
    HOST,
    python_peer,
    read_line_with,
    subprocess_peer,
    write_random_file,
)

from aiopquic.asyncio.webtransport import WebTransportSession, serve_webtransport
from aiopquic.http3_tools import HttpServerProtocol, echo_handler, fetch
from aiopquic.quic.configuration import QuicConfiguration

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(180)]

SIZE = 4 * 1024 * 1024


def aioquic_pattern(n: int) -> bytes:
    block = hashlib.sha256(b"aioquic-h3").digest() * 2048
    return (block * (n // len(block) + 1))[:n]


async def test_our_client_gets_from_aioquic_server(certs, tmp_path):
    argv = python_peer("aioquic_h3.py", "server", "--cert", certs.cert, "--key", certs.key,
                       "--lifetime", "150")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-h3-server",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "LISTENING", 30,
                                    str(tmp_path / "aioquic-h3-server.err"))
        port = int(line.split()[1])
        out = io.BytesIO()
        config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=certs.ca,
                                   server_name="localhost")
        with anyio.fail_after(60):
            status, headers, received = await fetch(f"https://{HOST}:{port}/bytes/{SIZE}", out,
                                                    configuration=config)
        assert status == 200
        assert dict(headers)[b"content-length"] == str(SIZE).encode()
        assert received == SIZE
        assert hashlib.sha256(out.getvalue()).hexdigest() == \
            hashlib.sha256(aioquic_pattern(SIZE)).hexdigest()


async def test_aioquic_client_gets_from_our_server(certs, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    digest = write_random_file(str(root / "blob.bin"), SIZE)

    class Protocol(HttpServerProtocol):
        pass

    Protocol.root = str(root)
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(certs.cert, certs.key)
    server = await serve_webtransport(HOST, 0, configuration=config, handler=echo_handler,
                                      path="/echo", create_protocol=Protocol)
    try:
        argv = python_peer("aioquic_h3.py", "get", "--port", str(server.local_port),
                           "--ca", certs.ca, "--path", "/blob.bin", "--lifetime", "120")
        async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-h3-get",
                                   stdout_pipe=True) as process:
            line = await read_line_with(process, "STATUS", 150,
                                        str(tmp_path / "aioquic-h3-get.err"))
        assert line == f"STATUS 200 LENGTH {SIZE} SHA256 {digest}"
    finally:
        server.close()


async def test_our_webtransport_client_to_aioquic_server(certs, tmp_path):
    from aiopquic.asyncio.webtransport import connect_webtransport

    argv = python_peer("aioquic_h3.py", "server", "--cert", certs.cert, "--key", certs.key,
                       "--lifetime", "150")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-wt-server",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "LISTENING", 30,
                                    str(tmp_path / "aioquic-wt-server.err"))
        port = int(line.split()[1])
        config = QuicConfiguration(is_client=True, cafile=certs.ca, server_name="localhost")
        with anyio.fail_after(60):
            async with connect_webtransport(f"https://{HOST}:{port}/echo",
                                            configuration=config) as session:
                payload = os.urandom(512 * 1024)
                reader, writer = await session.create_stream()
                writer.write(payload)
                writer.write_eof()
                assert await reader.read() == payload

                _, uni = await session.create_stream(bidirectional=False)
                uni.write(b"uni to aioquic")
                uni.write_eof()
                back, none = await session.accept_stream()
                assert none is None and await back.read() == b"uni to aioquic"

                for i in range(20):
                    session.send_datagram(b"dg-%d" % i)
                seen = set()
                with anyio.move_on_after(5):
                    while len(seen) < 20:
                        seen.add(await session.receive_datagram())
                assert len(seen) >= 18

                _, closer = await session.create_stream()
                closer.write(b"close")
                closer.write_eof()
                await session.wait_closed()
                assert (session.close_code, session.close_reason) == (4242, "bye from aioquic")


async def test_aioquic_webtransport_client_to_our_server(certs, tmp_path):
    import asyncio

    thanks: list = []

    async def handler(session: WebTransportSession) -> None:
        async def answer_on_own_stream(data: bytes) -> None:
            # aioquic cannot read answers on the bidi streams it opens: echo on ours
            reader, writer = await session.create_stream()
            writer.write(data)
            writer.write_eof()
            thanks.append(await reader.read())

        async def streams() -> None:
            while True:
                reader, writer = await session.accept_stream()
                data = await reader.read()
                if writer is None:
                    _, out = await session.create_stream(bidirectional=False)
                    out.write(data)
                    out.write_eof()
                    continue
                writer.write_eof()
                if data == b"close":
                    session.close(4242, "bye from aiopquic")
                    return
                asyncio.ensure_future(answer_on_own_stream(data))

        async def datagrams() -> None:
            while True:
                session.send_datagram(await session.receive_datagram())

        task = asyncio.ensure_future(datagrams())
        try:
            await streams()
        finally:
            task.cancel()

    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(certs.cert, certs.key)
    server = await serve_webtransport(HOST, 0, configuration=config, handler=handler,
                                      path="/echo")
    try:
        argv = python_peer("aioquic_h3.py", "wt", "--port", str(server.local_port), "--ca",
                           certs.ca, "--path", "/echo", "--size", str(512 * 1024),
                           "--lifetime", "120")
        async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-wt-client",
                                   stdout_pipe=True) as process:
            line = await read_line_with(process, "WT ", 150,
                                        str(tmp_path / "aioquic-wt-client.err"))
        head, close = line.split(" close=", 1)
        fields = dict(item.split("=", 1) for item in head.split()[1:])
        assert fields["bidi"] == "True", line
        assert fields["uni"] == "True", line
        assert int(fields["datagrams"]) >= 15, line
        assert fields["ended"] == "True", line
        assert close == "4242:bye from aiopquic", line
        assert thanks == [b"thanks"]
    finally:
        server.close()
