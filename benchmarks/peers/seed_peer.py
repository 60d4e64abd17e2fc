"""Benchmark peer for the picoquic-based aiopquic 0.6.1 from PyPI (the "seed").

It is a cp312 wheel with the same import name as this project, so this script runs only
from its own Python 3.12 venv (benchmarks/setup_peers.sh makes .bench-venvs/seed).  Its
``serve()`` ignores the host and listens on the wildcard address: run.py starts every
peer pair in a private network namespace that has only loopback.

Two sending paths (``--impl``):
  seed-retry    ``send_stream_data`` all-or-nothing; on ``BufferError`` sleep 100 us and
                resend the same buffer; yield to the loop every 64 writes (its own
                high-level baseline benchmark does this; the issue measured it fastest)
  seed-drained  ``await send_stream_data_drained(...)`` (its recommended path)

    python seed_peer.py server --impl seed-retry --cert C --key K --port P
    python seed_peer.py client --impl seed-retry --port P --ca CA --job JSON
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import benchlib as bl
import evpeer

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve  # the 0.6.1 wheel
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration


class SeedImpl(evpeer.Impl):
    StreamDataReceived = events.StreamDataReceived
    DatagramFrameReceived = events.DatagramFrameReceived
    ProtocolBase = QuicConnectionProtocol

    def __init__(self, variant: str) -> None:
        if variant not in ("seed-retry", "seed-drained"):
            raise ValueError(f"unknown seed variant {variant!r}")
        self.name = variant
        self.drained = variant == "seed-drained"

    def _cfg(self, is_client: bool) -> Any:
        cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[bl.ALPN],
                                idle_timeout=300.0)
        cfg.max_connections = 4096  # the idle-connections scenario holds 1000
        return cfg

    def server_config(self, args: dict[str, Any]) -> Any:
        cfg = self._cfg(False)
        cfg.load_cert_chain(args["cert"], args["key"])
        return cfg

    def client_config(self, args: dict[str, Any]) -> Any:
        cfg = self._cfg(True)
        cfg.cafile = args["ca"]
        cfg.server_name = "localhost"
        return cfg

    async def serve(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        return await serve(args["host"], args["port"], configuration=cfg,
                           create_protocol=create_protocol)

    def connect(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        return connect(args["host"], args["port"], configuration=cfg,
                       create_protocol=create_protocol)

    def send_now(self, proto: Any, sid: int, data: bytes, end: bool = False) -> None:
        queues: dict[int, list[Any]] = proto.__dict__.setdefault("bench_sendq", {})
        q = queues.get(sid)
        if q is not None:
            q.append((bytes(data), end))
            return
        try:
            proto._quic.send_stream_data(sid, bytes(data), end)
        except BufferError:
            queues[sid] = [(bytes(data), end)]
            proto.bench_spawn(self._drain_queue(proto, sid, queues))

    async def _drain_queue(self, proto: Any, sid: int, queues: dict[int, list[Any]]) -> None:
        q = queues[sid]
        while q:
            data, end = q.pop(0)
            await proto._quic.send_stream_data_drained(sid, data, end)
        del queues[sid]

    async def send_bulk(self, proto: Any, sid: int, parts: list[bytes], nfull: int,
                        tail: bytes, job: dict[str, Any]) -> None:
        quic = proto._quic
        n = len(parts)
        if self.drained:
            send_drained = quic.send_stream_data_drained
            for i in range(nfull):
                await send_drained(sid, parts[i % n])
            await send_drained(sid, tail, True)
            return
        send = quic.send_stream_data
        sleep = asyncio.sleep
        for i in range(nfull + 1):
            data, end = (parts[i % n], False) if i < nfull else (tail, True)
            while True:
                try:
                    send(sid, data, end)
                    break
                except BufferError:
                    if quic.closed:
                        raise ConnectionError("connection closed while sending") from None
                    await sleep(0.0001)
            if i % 64 == 63:
                await sleep(0)

    async def send_datagram(self, proto: Any, data: bytes) -> None:
        quic = proto._quic
        while not quic.send_datagram_frame(data):
            await quic.get_datagram_tx_drain_event().wait()

    def next_stream_id(self, proto: Any) -> int:
        return int(proto._quic.get_next_available_stream_id())  # allocates in the seed

    def is_closed(self, proto: Any) -> bool:
        return bool(proto._closed.is_set())


def main() -> int:
    args = bl.job_from_argv(sys.argv[1:])
    return evpeer.main(SeedImpl(args["impl"] or "seed-retry"), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
