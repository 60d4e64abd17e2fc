"""The zero-copy stream reader: every StreamReader method sees the same byte sequence, and
receive credit is returned exactly for what was consumed."""

from __future__ import annotations

import asyncio
import random

import anyio
import pytest
from quic_helpers import client, echo_stream_handler, running_server

from aiopquic.asyncio.protocol import _StreamReader

pytestmark = pytest.mark.anyio


class _FakeQuic:
    def __init__(self) -> None:
        self.credited = 0

    def _consumed(self, stream_id: int, n: int) -> None:
        self.credited += n

    def _flush_credit(self, stream_id: int) -> None:
        pass


def _reader() -> tuple:
    quic = _FakeQuic()
    return _StreamReader(quic, 0, asyncio.get_running_loop()), quic  # type: ignore[arg-type]


async def test_mixed_reads_see_one_byte_sequence():
    reader, quic = _reader()
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(200_000)).replace(b"\n", b"x")
    lines = data[:1000] + b"\n" + data[1000:2000] + b"\n"
    stream = lines + data
    pos = 0
    while pos < len(stream):
        n = rng.randrange(1, 5000)
        reader.feed_data(stream[pos:pos + n])
        pos += n
    reader.feed_eof()
    out = [await reader.readline(), await reader.read(10), await reader.readexactly(990)]
    out.append(await reader.readuntil(b"\n"))
    while True:
        step = rng.choice(["read", "exact"])
        if step == "read":
            chunk = await reader.read(rng.randrange(1, 70000))
            if not chunk:
                break
            out.append(chunk)
        else:
            try:
                out.append(await reader.readexactly(rng.randrange(1, 3000)))
            except asyncio.IncompleteReadError as e:
                out.append(e.partial)
                break
    assert b"".join(out) == stream
    assert reader.at_eof()
    assert quic.credited == len(stream)


async def test_read_waits_and_wakes():
    reader, quic = _reader()
    task = asyncio.ensure_future(reader.read(100))
    await asyncio.sleep(0)
    assert not task.done()
    reader.feed_data(b"abc")
    assert await asyncio.wait_for(task, 5) == b"abc"
    task = asyncio.ensure_future(reader.readexactly(4))
    await asyncio.sleep(0)
    reader.feed_data(b"de")
    reader.feed_data(b"fg")
    assert await asyncio.wait_for(task, 5) == b"defg"
    reader.feed_eof()
    assert await reader.read() == b""
    assert quic.credited == 7


async def test_read_all_and_exception():
    reader, _ = _reader()
    for i in range(10):
        reader.feed_data(bytes([i]) * 10000)
    reader.feed_eof()
    assert await reader.read() == b"".join(bytes([i]) * 10000 for i in range(10))
    reader2, _ = _reader()
    reader2.set_exception(ConnectionResetError("boom"))
    with pytest.raises(ConnectionResetError):
        await reader2.read(10)


async def test_line_protocol_over_quic(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            reader, writer = await protocol.create_stream()
            lines = [b"line %d %s\n" % (i, b"y" * (i * 37 % 5000)) for i in range(300)]
            with anyio.fail_after(30):
                for line in lines:
                    writer.write(line)
                    await writer.drain()
                writer.write_eof()
                got = [await reader.readline() for _ in lines]
                assert await reader.read() == b""
            assert got == lines


async def test_writer_close_and_wait_closed_keep_the_connection(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            with anyio.fail_after(10):
                reader, writer = await protocol.create_stream()
                writer.write(b"x" * 3_000_000)
                writer.close()  # FIN after the data
                await writer.wait_closed()
                assert writer.is_closing()
                assert len(await reader.read()) == 3_000_000
                # the connection is still usable
                reader2, writer2 = await protocol.create_stream()
                writer2.write(b"again")
                writer2.write_eof()
                assert await reader2.read() == b"again"
