"""Diagnostic peer: this project's aiopquic through the event API (``protocol._quic``
``send_stream_data`` + ``quic_event_received``, as aioquic code does) instead of asyncio
streams.  Compared with ``aiopquic_peer.py`` it shows what the StreamReader/StreamWriter
layer costs.  Not in run.py's default peers (``--peers aiopquic,aiopquic-ev``).

    python aiopquic_ev_peer.py server --cert C --key K --port P
    python aiopquic_ev_peer.py client --port P --ca CA --job JSON
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import benchlib as bl
import evpeer

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration


class OursImpl(evpeer.Impl):
    name = "aiopquic-ev"
    StreamDataReceived = events.StreamDataReceived
    DatagramFrameReceived = events.DatagramFrameReceived
    ProtocolBase = QuicConnectionProtocol

    def _cfg(self, is_client: bool) -> QuicConfiguration:
        return QuicConfiguration(is_client=is_client, alpn_protocols=[bl.ALPN],
                                 max_datagram_frame_size=65535, idle_timeout=300.0,
                                 max_streams_bidi=1000)

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
        proto._quic.send_stream_data(sid, data, end)

    async def send_bulk(self, proto: Any, sid: int, parts: list[bytes], nfull: int,
                        tail: bytes, job: dict[str, Any]) -> None:
        quic = proto._quic
        loop = asyncio.get_running_loop()
        n = len(parts)
        send = quic.send_stream_data
        for i in range(nfull):
            send(sid, parts[i % n])
            if quic.stream_send_pending(sid):  # what writer.drain() waits for
                fut = loop.create_future()
                if quic._add_drain_waiter(sid, lambda f=fut: f.done() or f.set_result(None)):
                    await fut
                if quic.closed:
                    raise ConnectionError("connection closed while sending")
        send(sid, tail, True)

    async def send_datagram(self, proto: Any, data: bytes) -> None:
        proto._quic.send_datagram_frame(data)

    def is_closed(self, proto: Any) -> bool:
        return bool(proto._quic.closed)


if __name__ == "__main__":
    sys.exit(evpeer.main(OursImpl(), sys.argv[1:]))
