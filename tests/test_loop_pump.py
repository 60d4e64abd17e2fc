"""The asyncio glue's pump (aiopquic/asyncio/_loop.py): under a steady backlog of native
events it runs at most one batch per event-loop iteration, however often the wake fd
fires, so other tasks keep running (a second wake while a pump is scheduled used to start
another chain of pumps, and the chains multiplied)."""

from __future__ import annotations

import asyncio
import os

from aiopquic.asyncio._loop import attach


class _BackloggedEndpoint:
    """Stands in for a QuicEndpoint whose wake fd stays readable and whose every batch is
    full (process() returns True) until ``batches`` have run."""

    def __init__(self, fd: int, batches: int, loop_ticks: list[int]) -> None:
        self.fileno = fd
        self.on_events = None
        self.on_error = None
        self._closed = False
        self.batches = batches
        self.calls_in_tick: dict[int, int] = {}
        self._ticks = loop_ticks

    def process(self) -> bool:
        tick = self._ticks[0]
        self.calls_in_tick[tick] = self.calls_in_tick.get(tick, 0) + 1
        self.batches -= 1
        return self.batches > 0


def test_pump_runs_once_per_iteration_under_a_backlog() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ticks = [0]
        done = asyncio.Event()

        def tick() -> None:  # one call per loop iteration
            ticks[0] += 1
            if not done.is_set():
                loop.call_soon(tick)

        rfd, wfd = os.pipe()
        os.write(wfd, b"x")  # never read: the fd stays readable, as a busy wake fd
        ep = _BackloggedEndpoint(rfd, batches=300, loop_ticks=ticks)
        try:
            loop.call_soon(tick)
            attach(ep, loop, lambda quic: None)  # type: ignore[arg-type]
            for _ in range(2000):  # bounded: the 300 batches take ~300 iterations
                await asyncio.sleep(0)
                if ep.batches <= 0:
                    break
            done.set()
            assert ep.batches <= 0, "the backlog was not drained"
            assert max(ep.calls_in_tick.values()) <= 2, ep.calls_in_tick
        finally:
            loop.remove_reader(rfd)
            os.close(rfd)
            os.close(wfd)

    asyncio.run(main())
