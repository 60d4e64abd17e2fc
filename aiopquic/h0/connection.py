"""HTTP/0.9 over QUIC (``hq-interop``), with the interface of aioquic's ``H0Connection``.

A request is one client-initiated bidirectional stream carrying ``METHOD SP PATH CRLF`` and a
FIN; the response is the raw body followed by FIN.  There are no status codes and no header
fields.  :meth:`H0Connection.handle_event` turns QUIC stream events into the HTTP/3 event
classes (:class:`~aiopquic.h3.events.HeadersReceived`, :class:`~aiopquic.h3.events.DataReceived`)
so one handler serves both protocols, as in aioquic's examples.
"""

from __future__ import annotations

from typing import Any

from aiopquic.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from aiopquic.quic.events import QuicEvent, StreamDataReceived

__all__ = ["H0_ALPN", "H0Connection"]

H0_ALPN = ["hq-interop"]
"""ALPN tokens of HTTP/0.9 over QUIC."""

_MAX_REQUEST_LINE = 8192  # bytes of a request line a server buffers before giving up


class H0Connection:
    """An HTTP/0.9 connection over a QUIC connection (``quic`` is ``protocol._quic``).

    Client: :meth:`send_headers` writes the request line (``:method`` and ``:path`` are
    required); each response produces one empty :class:`HeadersReceived` and then
    :class:`DataReceived` events.  Server: a request produces :class:`HeadersReceived` with
    ``:method`` and ``:path`` once its line is complete, then :class:`DataReceived`;
    :meth:`send_headers` sends nothing (HTTP/0.9 has no response headers).
    """

    def __init__(self, quic: Any) -> None:
        self._quic = quic
        self._is_client = bool(quic.configuration.is_client)
        self._pending: dict[int, bytes] = {}  # server: request line still incomplete
        self._started: set[int] = set()  # streams whose HeadersReceived was emitted

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        """HTTP events for one QUIC event (only data on client-initiated bidirectional
        streams produces any).

        A server stream whose request line is malformed or longer than 8 KiB is reset with
        code 0x1 (the request is ignored) and produces no event."""
        out: list[H3Event] = []
        if not isinstance(event, StreamDataReceived) or event.stream_id % 4 != 0:
            return out
        sid = event.stream_id
        data = bytes(event.data)
        if sid not in self._started:
            if self._is_client:
                out.append(HeadersReceived(headers=[], stream_ended=False, stream_id=sid))
            else:
                data = self._pending.pop(sid, b"") + data
                line_end = data.find(b"\r\n")
                if line_end < 0 and not event.end_stream:
                    if len(data) > _MAX_REQUEST_LINE:
                        self._quic.reset_stream(sid, 1)
                        self._started.add(sid)
                        return out
                    self._pending[sid] = data
                    return out
                line = data if line_end < 0 else data[:line_end]
                data = b"" if line_end < 0 else data[line_end + 2:]
                parts = line.strip().split(b" ", 1)
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    self._quic.reset_stream(sid, 1)
                    self._started.add(sid)
                    return out
                out.append(HeadersReceived(headers=[(b":method", parts[0]), (b":path", parts[1])],
                                           stream_ended=False, stream_id=sid))
            self._started.add(sid)
        out.append(DataReceived(data=data, stream_ended=event.end_stream, stream_id=sid))
        if event.end_stream:
            self._started.discard(sid)
        return out

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool = False) -> None:
        """Client: send the request line built from ``:method`` and ``:path`` (raises
        :class:`KeyError` naming the missing pseudo-header).  Server: nothing is sent (FIN only
        if ``end_stream``)."""
        if self._is_client:
            fields = dict(headers)
            for name in (b":method", b":path"):
                if name not in fields:
                    raise KeyError(f"HTTP/0.9 request needs the {name.decode()} header")
            data = fields[b":method"] + b" " + fields[b":path"] + b"\r\n"
        else:
            data = b""
        if data or end_stream:
            self._quic.send_stream_data(stream_id, data, end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send body bytes (the response, or a request body) on ``stream_id``."""
        self._quic.send_stream_data(stream_id, data, end_stream)
