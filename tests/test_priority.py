"""Stream priorities (aiopquic 0.6.1's set_stream_priority): the network thread serves the
most urgent stream first; equals share round robin (even values) or go in stream-id order
(odd values)."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest
from quic_helpers import client, running_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SIZE = 4 * 1024 * 1024


class _FinishOrder:
    """Server stream handler recording when each stream's FIN arrived."""

    def __init__(self) -> None:
        self.done: dict = {}
        self.received: dict = {}  # stream id -> bytes so far
        self.others_at_fin: dict = {}  # stream id -> what the other streams had at its FIN

    def __call__(self, reader, writer):
        sid = writer.get_extra_info("stream_id")

        async def run():
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n += len(data)
                self.received[sid] = n
            self.done[sid] = (time.monotonic(), n)
            self.others_at_fin[sid] = {k: v for k, v in self.received.items() if k != sid}
            writer.write_eof()

        asyncio.get_running_loop().create_task(run())


async def _two_uploads(protocol, set_priorities):
    """Queue SIZE bytes on stream A, then on stream B, before the path can drain them."""
    (ra, wa), (rb, wb) = await protocol.create_stream(), await protocol.create_stream()
    a, b = wa.get_extra_info("stream_id"), wb.get_extra_info("stream_id")
    set_priorities(protocol._quic, a, b)
    block = bytes(64 * 1024)

    async def upload(writer):
        for _ in range(SIZE // len(block)):
            writer.write(block)
            await writer.drain()
        writer.write_eof()

    await asyncio.gather(upload(wa), upload(wb), ra.read(), rb.read())
    return a, b


@pytest.mark.parametrize("mode", ["urgent-second", "same-fifo"])
async def test_priority_orders_streams(server_config, client_config, mode):
    """A is queued first; with B more urgent (or both odd = FIFO... then A, the lower id, must
    finish first even though B competes) the order of completion follows the priorities."""
    sink = _FinishOrder()
    # the connection window is the bottleneck (a stream's own window never blocks it), so
    # every bit of credit goes to whichever stream the scheduler prefers
    conf = dict(max_stream_data=16 * 1024 * 1024, max_data=512 * 1024)
    async with running_server(server_config(**conf), stream_handler=sink) as server:
        async with client(server.local_port, client_config(**conf)) as protocol:
            def prios(quic, a, b):
                if mode == "urgent-second":
                    quic.set_stream_priority(a, 200)
                    quic.set_stream_priority(b, 0)
                else:
                    quic.set_stream_priority(a, 9)
                    quic.set_stream_priority(b, 9)

            with anyio.fail_after(45):
                a, b = await _two_uploads(protocol, prios)
    assert sink.done[a][1] == sink.done[b][1] == SIZE
    if mode == "urgent-second":
        assert sink.done[b][0] < sink.done[a][0], "the urgent stream did not finish first"
        # while the urgent stream had data, the other got (almost) nothing
        assert sink.others_at_fin[b].get(a, 0) < SIZE // 2, sink.others_at_fin
    else:
        assert sink.done[a][0] < sink.done[b][0], "FIFO: the older stream finishes first"
        assert sink.others_at_fin[a].get(b, 0) < SIZE // 2, sink.others_at_fin


async def test_priority_arguments_are_checked(server_config, client_config):
    async with running_server(server_config()) as server:
        async with client(server.local_port, client_config()) as protocol:
            quic = protocol._quic
            with pytest.raises(ValueError, match="priority"):
                quic.set_stream_priority(0, 256)
            with pytest.raises(ValueError, match="stream_id"):
                quic.set_stream_priority(-1, 3)
            with pytest.raises(TypeError, match="priority"):
                quic.set_default_stream_priority("high")
            quic.set_default_stream_priority(1)
            await protocol.ping()  # the connection is fine
