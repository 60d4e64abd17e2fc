#!/usr/bin/env python3
"""A minimal aiopquic HTTP/3 server for benchmarks/h3_requests.py: ``GET /bytes/N`` answers
N bytes from memory, at once, inside the event callback (no task per request, no file),
as tests/peers/aioquic_h3.py does on aioquic -- so the two measure the HTTP/3 stacks, not
an application.

    aiopquic_h3_server.py --cert CERT --key KEY [--host 127.0.0.1] [--port 4433]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from aiopquic.asyncio import serve  # noqa: E402
from aiopquic.asyncio.webtransport import WebTransportProtocol  # noqa: E402
from aiopquic.h3.events import H3Event, HeadersReceived  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402

_BODIES: dict[int, bytes] = {}


class Server(WebTransportProtocol):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, enable_webtransport=False, **kwargs)  # type: ignore[arg-type]

    def http_event_received(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived):
            return
        fields = dict(event.headers)
        path = fields.get(b":path", b"")
        http = self._http
        if fields.get(b":method") == b"GET" and path.startswith(b"/bytes/"):
            size = int(path[7:])
            body = _BODIES.get(size)
            if body is None:
                body = _BODIES[size] = b"x" * size
            http.send_headers(event.stream_id, [(b":status", b"200"),
                                                (b"content-length", str(size).encode())])
            http.send_data(event.stream_id, body, end_stream=True)
        else:
            http.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4433)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    args = p.parse_args()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"],
                            max_datagram_frame_size=65536)
    cfg.load_cert_chain(args.cert, args.key)
    await serve(args.host, args.port, configuration=cfg, create_protocol=Server)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
