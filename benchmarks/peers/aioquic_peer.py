"""Benchmark peer for aioquic and qh3 (qh3 mirrors aioquic's API under another name).

Their natural fast path: ``protocol._quic.send_stream_data`` in large runs, then
``protocol.transmit()``.  Neither has send backpressure (aioquic's ``writer.drain()`` never
waits, qh3's has no protocol behind it), so the sender yields to the event loop every
``yield_bytes`` (default 1 MiB) and buffers the rest: the client reports its memory.
Flow-control windows are raised to this project's defaults (16 MiB connection, 8 MiB
stream) so that they do not cap the result; everything else is left at the stack's defaults.

    python aioquic_peer.py server --impl aioquic|qh3 --cert C --key K --port P
    python aioquic_peer.py client --impl aioquic|qh3 --port P --ca CA --job JSON
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any

import benchlib as bl
import evpeer

MAX_DATA = 16 << 20
MAX_STREAM_DATA = 8 << 20
MAX_UDP_PAYLOAD = 1452


class AioquicImpl(evpeer.Impl):
    def __init__(self, module: str) -> None:
        self.name = module
        self.mod_asyncio = importlib.import_module(module + ".asyncio")
        self.mod_cfg = importlib.import_module(module + ".quic.configuration")
        ev = importlib.import_module(module + ".quic.events")
        self.StreamDataReceived = ev.StreamDataReceived
        self.DatagramFrameReceived = ev.DatagramFrameReceived
        self.ProtocolBase = self.mod_asyncio.QuicConnectionProtocol

    def _cfg(self, is_client: bool) -> Any:
        cfg = self.mod_cfg.QuicConfiguration(
            is_client=is_client, alpn_protocols=[bl.ALPN], idle_timeout=300.0,
            max_datagram_frame_size=65536, max_data=MAX_DATA, max_stream_data=MAX_STREAM_DATA)
        if self.name == "aioquic":
            # aioquic's default 1200-byte packets cannot carry a 1200-byte DATAGRAM frame;
            # 1452 is the UDP payload this project's stack uses.
            cfg.max_datagram_size = MAX_UDP_PAYLOAD
        return cfg

    def server_config(self, args: dict[str, Any]) -> Any:
        cfg = self._cfg(False)
        cfg.load_cert_chain(args["cert"], args["key"])
        return cfg

    def client_config(self, args: dict[str, Any]) -> Any:
        cfg = self._cfg(True)
        cfg.load_verify_locations(cafile=args["ca"])
        cfg.server_name = "localhost"
        return cfg

    async def serve(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        return await self.mod_asyncio.serve(args["host"], args["port"], configuration=cfg,
                                            create_protocol=create_protocol)

    def connect(self, args: dict[str, Any], cfg: Any, create_protocol: Any) -> Any:
        return self.mod_asyncio.connect(args["host"], args["port"], configuration=cfg,
                                        create_protocol=create_protocol)

    def send_now(self, proto: Any, sid: int, data: bytes, end: bool = False) -> None:
        proto._quic.send_stream_data(sid, data, end)
        proto.transmit()

    async def send_bulk(self, proto: Any, sid: int, parts: list[bytes], nfull: int,
                        tail: bytes, job: dict[str, Any]) -> None:
        quic = proto._quic
        n = len(parts)
        every = max(1, int(job.get("yield_bytes", 1 << 20)) // len(parts[0]))
        send = quic.send_stream_data
        for i in range(nfull):
            send(sid, parts[i % n])
            if i % every == every - 1:
                proto.transmit()
                await asyncio.sleep(0)
        send(sid, tail, True)
        proto.transmit()

    async def send_datagram(self, proto: Any, data: bytes) -> None:
        proto._quic.send_datagram_frame(data)

    def flush(self, proto: Any) -> None:
        proto.transmit()

    def is_closed(self, proto: Any) -> bool:
        return bool(proto._closed.is_set())


def main() -> int:
    args = bl.job_from_argv(sys.argv[1:])
    impl = AioquicImpl(args["impl"] or "aioquic")
    return evpeer.main(impl, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
