"""QPACK decoder instructions over real UDP (our HTTP/3 server and client): the Section
Acknowledgments a batch of requests makes are gathered and written when the batch ends
(H3Connection._send_decoder), and every one of them still reaches the peer's encoder."""

from __future__ import annotations

import asyncio
from typing import Any

from aiopquic.asyncio import connect, serve
from aiopquic.asyncio.webtransport import WebTransportProtocol
from aiopquic.h3.events import H3Event, HeadersReceived
from aiopquic.http3_tools import _ClientProtocol

SERVERS: list[Any] = []


class _Server(WebTransportProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, enable_webtransport=False, **kwargs)
        SERVERS.append(self)

    def http_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._http.send_headers(event.stream_id, [(b":status", b"200"),
                                                      (b"x-answer", b"the same long value")])
            self._http.send_data(event.stream_id, b"ok", end_stream=True)


async def _get(proto: Any) -> None:
    http = proto.http
    sid = proto._quic.get_next_available_stream_id()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    proto.responses[sid] = queue
    http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                            (b":authority", b"localhost"), (b":path", b"/x"),
                            (b"x-token", b"a value worth a dynamic table entry")],
                      end_stream=True)
    while True:
        ev = await asyncio.wait_for(queue.get(), 10)
        assert ev is not None
        if getattr(ev, "stream_ended", False):
            break
    del proto.responses[sid]


def test_every_section_acknowledgment_reaches_the_peer(server_config, client_config):
    asyncio.run(asyncio.wait_for(_exchange(server_config, client_config), 60))


async def _exchange(server_config: Any, client_config: Any) -> None:
    SERVERS.clear()
    server = await serve("127.0.0.1", 0, configuration=server_config(alpn_protocols=["h3"]),
                         create_protocol=_Server)
    try:
        port = server.local_port
        cfg = client_config(alpn_protocols=["h3"], max_streams_bidi=1000)
        async with connect("127.0.0.1", port, configuration=cfg,
                           create_protocol=_ClientProtocol) as proto:
            for _ in range(4):
                await asyncio.gather(*(_get(proto) for _ in range(40)))
            [srv] = SERVERS
            client_h3, server_h3 = proto.http, srv._http
            # both sides' blocks referenced the dynamic table: acknowledgments were due
            assert server_h3._decoder_bytes_sent > 0 and client_h3._decoder_bytes_sent > 0

            async def all_arrived() -> None:
                while (client_h3._decoder_bytes_received != server_h3._decoder_bytes_sent or
                       server_h3._decoder_bytes_received != client_h3._decoder_bytes_sent):
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(all_arrived(), 10)
            assert not server_h3._decoder_pending and not client_h3._decoder_pending
    finally:
        server.close()
