"""Sans-IO WebTransport sessions over :class:`~aiopquic.h3.connection.H3Connection`
(draft-ietf-webtrans-http3, up to draft-15).

:class:`WebTransportConnection` is the one place that tracks WebTransport sessions and their
streams on an HTTP/3 connection: session requests and answers (the extended CONNECT, parsed
once), the streams of each session (buffered while their session is not known yet, bounded),
HTTP datagrams, capsules (close, drain and flow control), WT-Protocol negotiation and the
end of a session (which ends its streams with ``WT_SESSION_GONE``).  Feed it every QUIC event
with :meth:`WebTransportConnection.handle_event`; it returns :class:`WebTransportEvent`
objects plus the plain HTTP/3 events that belong to no session.  Like H3Connection it sends
through the :class:`~aiopquic.quic.connection.QuicConnection` it wraps and never blocks;
it keeps no timers: the one delay it needs (resetting the streams of a session we closed
if the peer never ends the CONNECT stream) is :meth:`WebTransportConnection.expire_close`,
which the I/O adapter calls.

Receive credit follows the application: stream payload is credited when the adapter calls
:meth:`WebTransportConnection.consumed`; session capsules are credited as they are parsed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from aiopquic.h3._wire import decode_varint, encode_capsule, encode_varint
from aiopquic.h3.capsule import (
    CLOSE_WEBTRANSPORT_SESSION,
    DRAIN_WEBTRANSPORT_SESSION,
    CapsuleBuffer,
    decode_close_session,
    encode_close_session,
)
from aiopquic.h3.connection import (
    DEFAULT_MAX_FIELD_SECTION_SIZE,
    WT_BUFFERED_STREAM_REJECTED,
    WT_SESSION_GONE,
    ErrorCode,
    H3Connection,
    Setting,
    http3_error_to_webtransport,
    webtransport_error_to_http3,
)
from aiopquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    Headers,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import (
    ConnectionTerminated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

__all__ = [
    "WebTransportConnection",
    "WebTransportEvent",
    "SessionRequested",
    "SessionEstablished",
    "SessionRefused",
    "SessionClosed",
    "SessionDraining",
    "StreamOpened",
    "StreamData",
    "StreamResetByPeer",
    "StreamStopped",
    "StreamFinished",
    "SessionDatagram",
    "WT_ALPN_ERROR",
    "WT_FLOW_CONTROL_ERROR",
    "WT_PROTOCOL_TOKENS",
    "encode_sf_string_list",
    "parse_sf_string_list",
    "parse_sf_string",
]

logger = logging.getLogger("aiopquic.webtransport")

WT_ALPN_ERROR = 0x0817B3DD
"""Session error: the server chose a WT-Protocol the client never offered, or none of the
client's offers is acceptable to the server."""
WT_FLOW_CONTROL_ERROR = 0x045D4487
"""Session error: the peer exceeded a WebTransport flow-control limit."""
WT_REQUIREMENTS_NOT_MET = 0x212C0D48

WT_PROTOCOL_TOKENS = (b"webtransport", b"webtransport-h3")
"""``:protocol`` values accepted for a WebTransport extended CONNECT (``webtransport-h3`` is
draft-15's, ``webtransport`` the earlier drafts' and browsers')."""

# Flow control (draft-ietf-webtrans-http3 section 5).
SETTING_WT_INITIAL_MAX_DATA = 0x2B61
SETTING_WT_INITIAL_MAX_STREAMS_UNI = 0x2B64
SETTING_WT_INITIAL_MAX_STREAMS_BIDI = 0x2B65
WT_MAX_DATA = 0x190B4D3D
WT_MAX_STREAMS_BIDI = 0x190B4D3F
WT_MAX_STREAMS_UNI = 0x190B4D40
WT_DATA_BLOCKED = 0x190B4D41
WT_STREAMS_BLOCKED_BIDI = 0x190B4D43
WT_STREAMS_BLOCKED_UNI = 0x190B4D44
_FLOW_CAPSULES = frozenset((WT_MAX_DATA, WT_MAX_STREAMS_BIDI, WT_MAX_STREAMS_UNI,
                            WT_DATA_BLOCKED, WT_STREAMS_BLOCKED_BIDI,
                            WT_STREAMS_BLOCKED_UNI))

DEFAULT_MAX_SESSIONS = 16
"""Sessions a peer may have open at once on one connection (advertised)."""
DEFAULT_MAX_STREAMS = 256
"""Streams of each direction a peer may have open at once in one session (advertised)."""
DEFAULT_MAX_SESSION_DATA = 64 * 1024 * 1024
"""Bytes a peer may send ahead of the application's reads, per session (advertised)."""

_MAX_ORPHAN_STREAMS = 32  # streams buffered for sessions not known yet (per connection)
_MAX_ORPHAN_BYTES = 1024 * 1024  # and their bytes (QUIC credit is not returned for them)
_MAX_ORPHAN_DATAGRAMS = 32
_MAX_PROTOCOLS = 64
_MAX_GONE = 1024  # ended session ids remembered (to refuse their late streams quietly)

# session states
_REQUESTED, _CONNECTING, _OPEN, _CLOSED = "requested", "connecting", "open", "closed"


# ---------------------------------------------------------------------- structured fields


_SF_TOKEN = re.compile(r'\s*"((?:[^"\\]|\\["\\])*)"\s*(?:;[^,]*)?\s*$')


def encode_sf_string_list(items: list[str]) -> bytes:
    """A Structured Field List of Strings (RFC 9651), as WT-Available-Protocols carries it.
    Raises :class:`ValueError` for a string with characters outside printable ASCII."""
    out = []
    for item in items:
        if not isinstance(item, str) or any(not 0x20 <= ord(c) <= 0x7E for c in item):
            raise ValueError(f"WebTransport protocol {item!r} must be printable ASCII")
        out.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ", ".join(out).encode("ascii")


def _split_list(text: str) -> list[str]:
    members, cur, quoted, esc = [], [], False, False
    for ch in text:
        if quoted:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch == ",":
            members.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    members.append("".join(cur))
    return members


def parse_sf_string(value: Union[bytes, str]) -> Optional[str]:
    """The String of a Structured Field Item (WT-Protocol), parameters ignored; ``None`` if
    the value is not a String (then the field is ignored, as the draft requires)."""
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return None
    m = _SF_TOKEN.match(text)
    if m is None:
        return None
    return re.sub(r'\\(["\\])', r"\1", m.group(1))


def parse_sf_string_list(value: Union[bytes, str]) -> Optional[list[str]]:
    """The Strings of a Structured Field List (WT-Available-Protocols); ``None`` if any
    member is not a String (the whole field is then ignored)."""
    try:
        text = value.decode("ascii") if isinstance(value, bytes) else value
    except UnicodeDecodeError:
        return None
    if not text.strip():
        return []
    out = []
    for member in _split_list(text):
        item = parse_sf_string(member)
        if item is None:
            return None
        out.append(item)
    return out[:_MAX_PROTOCOLS]


# ---------------------------------------------------------------------- events


class WebTransportEvent(H3Event):
    """Base class of the events :class:`WebTransportConnection` reports."""


@dataclass
class SessionRequested(WebTransportEvent):
    """Server: a client asks for a session (extended CONNECT); answer it with
    :meth:`WebTransportConnection.accept_session` or
    :meth:`WebTransportConnection.reject_session`."""

    session_id: int
    headers: Headers
    path: str
    protocols: list[str]
    "The client's WT-Available-Protocols, in its order of preference (may be empty)."


@dataclass
class SessionEstablished(WebTransportEvent):
    """Client: the server accepted the session (2xx)."""

    session_id: int
    headers: Headers
    protocol: Optional[str]
    "The WT-Protocol the server chose (one the client offered), or ``None``."


@dataclass
class SessionRefused(WebTransportEvent):
    """Client: the server refused the session (non-2xx, or the request stream ended)."""

    session_id: int
    status: int
    "The HTTP status (0 when the request stream was reset or ended without an answer)."
    headers: Headers
    reason: str


@dataclass
class SessionClosed(WebTransportEvent):
    """The session ended: CLOSE_WEBTRANSPORT_SESSION from either side, the CONNECT stream
    ended or reset, or the connection closed.  ``streams`` are the session's streams that
    were still open (they are ended with ``WT_SESSION_GONE``)."""

    session_id: int
    code: int
    reason: str
    by_peer: bool
    streams: list[int] = field(default_factory=list)
    connection_gone: bool = False


@dataclass
class SessionDraining(WebTransportEvent):
    """The peer sent DRAIN_WEBTRANSPORT_SESSION (or GOAWAY): it asks to end the session."""

    session_id: int


@dataclass
class StreamOpened(WebTransportEvent):
    """The peer opened a stream of the session."""

    session_id: int
    stream_id: int
    bidirectional: bool


@dataclass
class StreamData(WebTransportEvent):
    """Payload on a WebTransport stream (its header stripped).  The adapter returns the
    credit with :meth:`WebTransportConnection.consumed` once the application has the
    bytes."""

    session_id: int
    stream_id: int
    data: bytes
    ended: bool


@dataclass
class StreamResetByPeer(WebTransportEvent):
    """The peer reset a stream of the session.  ``error_code`` is the WebTransport code
    (``None`` if the HTTP/3 code is outside the WebTransport range, e.g.
    WT_SESSION_GONE); ``http3_code`` is the code on the wire."""

    session_id: int
    stream_id: int
    error_code: Optional[int]
    http3_code: int


@dataclass
class StreamStopped(WebTransportEvent):
    """The peer sent STOP_SENDING on a stream of the session (codes as in
    :class:`StreamResetByPeer`)."""

    session_id: int
    stream_id: int
    error_code: Optional[int]
    http3_code: int


@dataclass
class StreamFinished(WebTransportEvent):
    """The layer forgot a stream (both directions done): the adapter may drop its objects."""

    session_id: int
    stream_id: int


@dataclass
class SessionDatagram(WebTransportEvent):
    """An HTTP datagram of the session."""

    session_id: int
    data: bytes


DEFAULT_DATAGRAM_FRAME_SIZE = 65535
"""``max_datagram_frame_size`` given to a configuration that has none, where WebTransport
(which needs QUIC datagrams) is served or used."""


def h3_configuration(configuration: QuicConfiguration, what: str,
                     datagrams: bool = True) -> QuicConfiguration:
    """``configuration`` ready for HTTP/3 (and WebTransport when ``datagrams``): ALPN
    ``h3`` when it has no ALPN list, and ``max_datagram_frame_size``
    (:data:`DEFAULT_DATAGRAM_FRAME_SIZE`) when it has none.  The caller's object is never
    changed: a modified copy is returned.  Raises :class:`ValueError` naming ``what`` when its
    ALPN list lacks ``h3``."""
    changes: dict[str, Any] = {}
    alpn = configuration.alpn_protocols
    if alpn is None:
        changes["alpn_protocols"] = ["h3"]
    elif "h3" not in alpn:
        raise ValueError(f"{what}: configuration.alpn_protocols {alpn!r} lacks 'h3'")
    if datagrams and not configuration.max_datagram_frame_size:
        changes["max_datagram_frame_size"] = DEFAULT_DATAGRAM_FRAME_SIZE
    return dataclasses.replace(configuration, **changes) if changes else configuration


# ---------------------------------------------------------------------- state


class _WTStream:
    __slots__ = ("stream_id", "session_id", "send_open", "recv_open", "local", "bidi",
                 "held", "held_len", "held_fin", "counted")

    def __init__(self, stream_id: int, session_id: int, local: bool, bidi: bool) -> None:
        self.stream_id = stream_id
        self.session_id = session_id
        self.local = local
        self.bidi = bidi
        self.send_open = local or bidi
        self.recv_open = not local or bidi
        self.held: list[bytes] = []  # orphan stream: bytes before the session is known
        self.held_len = 0
        self.held_fin = False
        self.counted = False  # a peer stream counted against the session's stream limit


class _Session:
    __slots__ = ("session_id", "state", "headers", "path", "offered", "protocol", "streams",
                 "capsules", "send_ended", "closed_info", "draining", "peer_max_bidi",
                 "peer_max_uni", "opened_bidi", "opened_uni", "allow_bidi", "allow_uni",
                 "peer_opened_bidi", "peer_opened_uni", "peer_done_bidi", "peer_done_uni",
                 "rx_window", "rx_limit", "rx_consumed", "rx_received", "tx_sent",
                 "peer_max_data", "closing", "datagrams")

    def __init__(self, session_id: int, state: str, path: str) -> None:
        self.session_id = session_id
        self.state = state
        self.headers: Headers = []
        self.path = path
        self.offered: list[str] = []
        self.protocol: Optional[str] = None
        self.streams: dict[int, _WTStream] = {}
        self.capsules = CapsuleBuffer()
        self.send_ended = False
        self.closed_info: Optional[tuple[int, str]] = None
        self.draining = False
        # flow control: limits the peer gave us, and what we opened
        self.peer_max_bidi: Optional[int] = None
        self.peer_max_uni: Optional[int] = None
        self.opened_bidi = 0
        self.opened_uni = 0
        # limits we gave the peer (cumulative), what it opened and finished
        self.allow_bidi = 0
        self.allow_uni = 0
        self.peer_opened_bidi = 0
        self.peer_opened_uni = 0
        self.peer_done_bidi = 0
        self.peer_done_uni = 0
        self.rx_window = 0
        self.rx_limit = 0
        self.rx_consumed = 0
        self.rx_received = 0
        self.tx_sent = 0
        self.peer_max_data: Optional[int] = None
        # locally closed: streams to reset once the peer ends the CONNECT stream
        self.closing: Optional[list[tuple[int, bool, bool]]] = None
        self.datagrams: list[bytes] = []  # client: datagrams before the 2xx


def _header(headers: Headers, name: bytes) -> Optional[bytes]:
    for k, v in headers:
        if k == name:
            return v
    return None


class WebTransportConnection:
    """Sans-IO WebTransport sessions on one HTTP/3 connection.

    ``quic`` is the :class:`~aiopquic.quic.connection.QuicConnection`; the
    :class:`H3Connection` is created here (``enable_webtransport`` off gives plain HTTP/3
    with every WebTransport request answered by the adapter; it grants no server push ids:
    use :class:`H3Connection` directly for push).  ``max_sessions``,
    ``max_streams`` and ``max_session_data`` are the flow-control limits advertised to the
    peer (SETTINGS_WT_MAX_SESSIONS, SETTINGS_WT_INITIAL_MAX_STREAMS_*, SETTINGS_WT_INITIAL_
    MAX_DATA) and enforced on it.  ``supported_protocols`` (server) is the WT-Protocol
    allowlist: the first protocol of the client's WT-Available-Protocols on it is chosen.
    """

    def __init__(self, quic: Any, *, enable_webtransport: bool = True,
                 max_field_section_size: int = DEFAULT_MAX_FIELD_SECTION_SIZE,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_streams: int = DEFAULT_MAX_STREAMS,
                 max_session_data: int = DEFAULT_MAX_SESSION_DATA,
                 supported_protocols: Optional[list[str]] = None) -> None:
        for name, value in (("max_sessions", max_sessions), ("max_streams", max_streams),
                            ("max_session_data", max_session_data)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._quic = quic
        self._is_client = bool(quic.configuration.is_client)
        extra: dict[int, int] = {}
        if enable_webtransport:
            extra = {
                Setting.WT_MAX_SESSIONS: max_sessions,
                Setting.WEBTRANSPORT_MAX_SESSIONS: max_sessions,
                SETTING_WT_INITIAL_MAX_STREAMS_BIDI: max_streams,
                SETTING_WT_INITIAL_MAX_STREAMS_UNI: max_streams,
                SETTING_WT_INITIAL_MAX_DATA: max_session_data,
            }
        self.http = H3Connection(quic, enable_webtransport=enable_webtransport,
                                 credit_on_consume=True,
                                 max_field_section_size=max_field_section_size,
                                 extra_settings=extra,
                                 max_push_id=None)  # no server push through sessions
        self._enabled = self.http.webtransport_enabled
        self._max_sessions = max_sessions
        self._max_streams = max_streams
        self._max_data = max_session_data
        self._supported = list(supported_protocols) if supported_protocols else None
        self._sessions: dict[int, _Session] = {}
        self._streams: dict[int, _WTStream] = {}
        self._orphans: dict[int, list[_WTStream]] = {}
        self._orphan_count = 0
        self._orphan_bytes = 0
        self._orphan_datagrams: list[tuple[int, bytes]] = []
        # recently ended sessions (an ordered set: the oldest are forgotten past _MAX_GONE)
        self._gone: dict[int, None] = {}
        self._out: list[H3Event] = []
        self._done = False

    # ------------------------------------------------------------------ properties

    @property
    def webtransport_enabled(self) -> bool:
        """True when this connection speaks WebTransport (needs QUIC datagrams)."""
        return self._enabled

    @property
    def settings_received(self) -> bool:
        """True once the peer's SETTINGS arrived."""
        return self.http.received_settings is not None

    @property
    def peer_supports_webtransport(self) -> bool:
        """True once the peer's SETTINGS advertise WebTransport."""
        return self.http.peer_supports_webtransport

    @property
    def peer_speaks_draft15(self) -> bool:
        """True when the peer's SETTINGS carry draft-15's WT_ENABLED: then a client sends
        ``:protocol webtransport-h3``; else the legacy ``webtransport``."""
        s = self.http.received_settings or {}
        return s.get(Setting.WT_ENABLED, 0) == 1

    @property
    def flow_control(self) -> bool:
        """True when WebTransport flow control is in force (both sides allow more than one
        session, or the peer sent initial flow-control limits)."""
        s = self.http.received_settings or {}
        if not self._enabled:
            return False
        return s.get(Setting.WT_MAX_SESSIONS, 0) > 1 or any(
            s.get(k, 0) for k in (SETTING_WT_INITIAL_MAX_DATA,
                                  SETTING_WT_INITIAL_MAX_STREAMS_BIDI,
                                  SETTING_WT_INITIAL_MAX_STREAMS_UNI))

    def session_ids(self) -> list[int]:
        """Ids of the sessions not closed yet."""
        return [sid for sid, s in self._sessions.items() if s.closed_info is None]

    def session_protocol(self, session_id: int) -> Optional[str]:
        """The negotiated WT-Protocol of a session, or ``None``."""
        s = self._sessions.get(session_id)
        return s.protocol if s is not None else None

    def session_headers(self, session_id: int) -> Headers:
        """Request headers (server) or response headers (client) of a session."""
        s = self._sessions.get(session_id)
        return list(s.headers) if s is not None else []

    def session_state(self, session_id: int) -> Optional[str]:
        """``"requested"``, ``"connecting"``, ``"open"``, ``"closed"`` or ``None``."""
        s = self._sessions.get(session_id)
        if s is not None:
            return s.state
        return _CLOSED if session_id in self._gone else None

    def stream_session(self, stream_id: int) -> Optional[int]:
        """The session a tracked stream belongs to, else ``None``."""
        st = self._streams.get(stream_id)
        return st.session_id if st is not None else None

    def can_open_stream(self, session_id: int, bidirectional: bool) -> bool:
        """False while the peer's WT_MAX_STREAMS forbids another stream of that kind."""
        s = self._sessions.get(session_id)
        if s is None or not self.flow_control:
            return True
        limit = s.peer_max_bidi if bidirectional else s.peer_max_uni
        if limit is None:
            s_ = self.http.received_settings or {}
            limit = s_.get(SETTING_WT_INITIAL_MAX_STREAMS_BIDI if bidirectional else
                           SETTING_WT_INITIAL_MAX_STREAMS_UNI, 0)
        opened = s.opened_bidi if bidirectional else s.opened_uni
        return opened < limit

    def close_message(self) -> str:
        """Why the connection closed, in words (for error messages)."""
        msg: Callable[[], str] = getattr(self._quic, "_close_message", lambda: "closed")
        return msg()

    def add_drain_waiter(self, stream_id: int, callback: Callable[[], None]) -> bool:
        """Call ``callback`` once ``stream_id``'s send queue empties; False if it is empty
        already (then nothing is registered)."""
        add: Optional[Callable[[int, Callable[[], None]], bool]] = getattr(
            self._quic, "_add_drain_waiter", None)
        if add is None:
            return False
        return add(stream_id, callback)

    def _mark_gone(self, session_id: int) -> None:
        gone = self._gone
        gone[session_id] = None
        if len(gone) > _MAX_GONE:
            del gone[next(iter(gone))]

    # ------------------------------------------------------------------ output

    def _emit(self, event: H3Event) -> None:
        self._out.append(event)

    def _take(self) -> list[H3Event]:
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------ client

    def open_session(self, authority: str, path: str, *, headers: Optional[Headers] = None,
                     protocol: Optional[str] = None,
                     available_protocols: Optional[list[str]] = None) -> int:
        """Client: send a WebTransport extended CONNECT and return the session id.

        ``protocol`` is the ``:protocol`` token (default: ``webtransport-h3`` if the server
        sent draft-15's WT_ENABLED, else ``webtransport``).  ``available_protocols`` is sent
        as WT-Available-Protocols.  Raises :class:`RuntimeError` before the server's SETTINGS
        or if it lacks WebTransport, or when the server's session limit is reached."""
        if not self._is_client:
            raise RuntimeError("open_session is for clients")
        if not self.settings_received:
            raise RuntimeError("the server's SETTINGS have not arrived yet")
        if not self.peer_supports_webtransport or not self._enabled:
            raise RuntimeError("the server does not support WebTransport (its SETTINGS lack "
                               "extended CONNECT, H3_DATAGRAM or a WebTransport capability)")
        peer = self.http.received_settings or {}
        peer_max = peer.get(Setting.WT_MAX_SESSIONS) or peer.get(
            Setting.WEBTRANSPORT_MAX_SESSIONS)
        if peer_max is not None and peer_max >= 1 and len(self.session_ids()) >= peer_max:
            raise RuntimeError(f"the server allows {peer_max} WebTransport session(s) per "
                               "connection; open another connection")
        if protocol is None:
            protocol = "webtransport-h3" if self.peer_speaks_draft15 else "webtransport"
        stream_id = int(self._quic.get_next_available_stream_id())
        request: Headers = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        extra = list(headers or [])
        names = {name for name, _ in extra}
        if b"origin" not in names:
            request.append((b"origin", b"https://" + authority.encode()))
        session = _Session(stream_id, _CONNECTING, path)
        if available_protocols:
            request.append((b"wt-available-protocols",
                            encode_sf_string_list(list(available_protocols))))
            session.offered = list(available_protocols)
        request.extend(extra)
        self._init_flow(session)
        self._sessions[stream_id] = session
        self.http.send_headers(stream_id, request)
        return stream_id

    def cancel_session(self, session_id: int) -> list[H3Event]:
        """Client: give up a session request that got no answer (the request stream is
        reset with H3_REQUEST_CANCELLED)."""
        s = self._sessions.get(session_id)
        if s is None or s.state != _CONNECTING:
            return []
        self._forget_session(s)
        if not self._quic.closed:
            self._quic.reset_stream(session_id, ErrorCode.H3_REQUEST_CANCELLED)
        return self._take()

    # ------------------------------------------------------------------ server

    def accept_session(self, session_id: int, headers: Optional[Headers] = None) -> None:
        """Server: accept a requested session (200).  Raises :class:`RuntimeError` if it is
        not pending."""
        s = self._sessions.get(session_id)
        if s is None or s.state != _REQUESTED:
            raise RuntimeError(f"session {session_id} is not waiting for an answer")
        s.state = _OPEN
        response: Headers = [(b":status", b"200"),
                             (b"sec-webtransport-http3-draft", b"draft02")]
        if s.protocol is not None:
            response.append((b"wt-protocol", encode_sf_string_list([s.protocol])))
        response.extend(headers or [])
        self.http.send_headers(session_id, response)
        self._adopt_orphans(s)

    def reject_session(self, session_id: int, status: int = 403) -> list[H3Event]:
        """Server: refuse a requested session with HTTP ``status`` and end its stream.
        Returns the resulting events (:class:`SessionClosed`)."""
        self._reject(session_id, status)
        return self._take()

    def _reject(self, session_id: int, status: int) -> None:
        s = self._sessions.get(session_id)
        if s is None or s.state != _REQUESTED:
            raise RuntimeError(f"session {session_id} is not waiting for an answer")
        s.send_ended = True
        self.http.send_headers(session_id, [(b":status", str(status).encode()),
                                            (b"content-length", b"0")], end_stream=True)
        alpn = status == 400 and bool(s.offered) and s.protocol is None and \
            self._supported is not None
        self._terminate(s, WT_ALPN_ERROR if alpn else 0,
                        "no WT-Protocol in common" if alpn else
                        f"rejected with HTTP status {status}", by_peer=False)

    # ------------------------------------------------------------------ streams

    def create_stream(self, session_id: int, bidirectional: bool = True) -> int:
        """Open a stream of the session and return its id (its WebTransport header is
        written).  Raises :class:`RuntimeError` if the session is not open."""
        s = self._sessions.get(session_id)
        if s is None or s.state == _CLOSED or s.closed_info is not None:
            raise RuntimeError(f"WebTransport session {session_id} is closed")
        if s.state == _REQUESTED:
            raise RuntimeError(f"WebTransport session {session_id} is not accepted yet")
        stream_id = self.http.create_webtransport_stream(
            session_id, is_unidirectional=not bidirectional)
        st = _WTStream(stream_id, session_id, local=True, bidi=bidirectional)
        self._streams[stream_id] = st
        s.streams[stream_id] = st
        if bidirectional:
            s.opened_bidi += 1
        else:
            s.opened_uni += 1
        return stream_id

    def send_stream_data(self, stream_id: int, data: Union[bytes, bytearray, memoryview],
                         end_stream: bool = False) -> None:
        """Write payload on a WebTransport stream.  Raises :class:`RuntimeError` when the
        stream is not open for sending here (unknown, finished, or its session closed)."""
        st = self._streams.get(stream_id)
        if st is None or not st.send_open:
            raise RuntimeError(f"WebTransport stream {stream_id} is not open for sending")
        s = self._sessions.get(st.session_id)
        if s is None or s.closed_info is not None:
            raise RuntimeError(f"the session of stream {stream_id} is closed")
        s.tx_sent += len(data)
        if end_stream:
            st.send_open = False
        self._quic.send_stream_data(stream_id, data, end_stream)
        if end_stream:
            self._maybe_forget(st)

    def _send_now(self, stream_id: int, data: bytes) -> Any:
        """The fast path of a 0.6.1-style drained write (no FIN) on a stream open for
        sending in an open session: ``QuicConnection._write_now``'s result (the stream's
        send state, or None when nothing was written and :meth:`send_stream_data` must
        be used).  Only for a ``QuicConnection`` underneath."""
        st = self._streams.get(stream_id)
        if st is None or not st.send_open:
            return None
        s = self._sessions.get(st.session_id)
        if s is None or s.closed_info is not None:
            return None
        tx = self._quic._write_now(stream_id, data, False)
        if tx is not None:
            s.tx_sent += len(data)
        return tx

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Reset our sending side of a stream with WebTransport code ``error_code``
        (32-bit).  A stream not open for sending is left alone."""
        code = webtransport_error_to_http3(error_code)
        st = self._streams.get(stream_id)
        if st is None or not st.send_open:
            return
        st.send_open = False
        if not self._quic.closed:
            self._quic.reset_stream(stream_id, code)
        self._maybe_forget(st)

    def stop_stream(self, stream_id: int, error_code: int = 0) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING with WebTransport code
        ``error_code``); what still arrives is dropped and its credit returned."""
        code = webtransport_error_to_http3(error_code)
        st = self._streams.get(stream_id)
        if st is None or not st.recv_open:
            return
        st.recv_open = False
        if not self._quic.closed:
            self._quic.stop_stream(stream_id, code)
            self.http.ignore_stream(stream_id)
        self._maybe_forget(st)

    def refuse_stream(self, stream_id: int, code: int = WT_BUFFERED_STREAM_REJECTED) -> None:
        """Refuse a peer's stream the application cannot take (too many waiting): STOP_SENDING
        (and RESET_STREAM on a bidirectional one) with the HTTP/3 ``code``; what still
        arrives on it is dropped and credited."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        st.recv_open = False
        st.send_open = False
        self._refuse_stream(stream_id, st.bidi, code)
        self._maybe_forget(st)

    def consumed(self, stream_id: int, nbytes: int, flush: bool = True,
                 session_id: Optional[int] = None) -> None:
        """The application consumed ``nbytes`` of a stream's payload: return the QUIC credit
        (and the session's WT_MAX_DATA credit; ``session_id`` names the session of a stream
        this layer already forgot).  ``flush=False`` lets small amounts batch."""
        if nbytes <= 0:
            return
        self.http.consumed(stream_id, nbytes, flush=flush)
        if session_id is None:
            st = self._streams.get(stream_id)
            if st is None:
                return
            session_id = st.session_id
        s = self._sessions.get(session_id)
        if s is not None and s.closed_info is None:
            self._credit_session(s, nbytes)

    # ------------------------------------------------------------------ datagrams

    def send_datagram(self, session_id: int, data: Union[bytes, bytearray, memoryview]) -> bool:
        """Send an HTTP datagram of the session; False when the QUIC layer's datagram queue
        is full (nothing was queued).  Raises :class:`RuntimeError` if the session is closed,
        :class:`ValueError` if the datagram does not fit a packet."""
        s = self._sessions.get(session_id)
        if s is None or s.closed_info is not None:
            raise RuntimeError(f"WebTransport session {session_id} is closed")
        accepted: Any = self.http.send_datagram(session_id, bytes(data))
        return bool(accepted != 0)

    # ------------------------------------------------------------------ closing

    def close_session(self, session_id: int, code: int = 0, reason: str = "") -> list[H3Event]:
        """Close the session: CLOSE_WEBTRANSPORT_SESSION (``code`` 32-bit, ``reason`` at most
        1024 UTF-8 bytes) and FIN on the CONNECT stream.  The session's streams are reset on
        the wire once the peer ends the CONNECT stream too, or at :meth:`expire_close`.
        Returns the resulting events (:class:`SessionClosed`).  Raises :class:`ValueError`
        for a bad code or reason."""
        self._close(session_id, code, reason)
        return self._take()

    def _close(self, session_id: int, code: int, reason: str) -> None:
        capsule = encode_close_session(code, reason)
        s = self._sessions.get(session_id)
        if s is None or s.closed_info is not None:
            return
        if s.state == _REQUESTED:
            self.accept_session(session_id)
        if not s.send_ended and not self._quic.closed:
            s.send_ended = True
            try:
                self.http.send_data(session_id, capsule, end_stream=True)
            except Exception as exc:  # the stream may already be gone
                logger.debug("cannot send the session close capsule: %s", exc)
        self._terminate(s, code, reason, by_peer=False, defer_resets=True)

    def drain_session(self, session_id: int) -> None:
        """Send DRAIN_WEBTRANSPORT_SESSION: ask the peer to end the session soon."""
        s = self._sessions.get(session_id)
        if s is None or s.closed_info is not None or s.send_ended:
            return
        self.http.send_data(session_id, encode_capsule(DRAIN_WEBTRANSPORT_SESSION, b""),
                            end_stream=False)

    def expire_close(self, session_id: int) -> None:
        """The peer did not end the CONNECT stream of a session we closed in time: reset the
        session's streams now (the adapter calls this a few seconds after the close)."""
        s = self._sessions.get(session_id)
        if s is not None and s.closing is not None:
            self._flush_closing(s)

    # ------------------------------------------------------------------ receiving

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        """Process one QUIC event; returns the WebTransport events and the HTTP/3 events of
        no session (plain requests and responses, GOAWAY, ...)."""
        http = self.http
        if type(event) is StreamDataReceived and not self._enabled and not self._out and \
                not self._sessions and not self._gone:
            # plain HTTP/3 (WebTransport off, no session ever): every event passes unchanged
            return http.handle_event(event)
        if isinstance(event, StreamReset):
            http.handle_event(event)
            self._on_stream_reset(event.stream_id, event.error_code)
        elif isinstance(event, StopSendingReceived):
            http.handle_event(event)
            self._on_stop_sending(event.stream_id, event.error_code)
        elif isinstance(event, ConnectionTerminated):
            http.handle_event(event)
            self._on_connection_terminated()
        else:
            for h3_event in http.handle_event(event):
                self._dispatch(h3_event)
        return self._take()

    def _dispatch(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            self._on_wt_data(event.stream_id, event.session_id, event.data,
                             event.stream_ended)
        elif isinstance(event, DatagramReceived):
            s = self._sessions.get(event.stream_id)
            if s is not None:
                if s.closed_info is None and s.state == _OPEN:
                    self._emit(SessionDatagram(event.stream_id, event.data))
                elif s.state == _CONNECTING and len(s.datagrams) < _MAX_ORPHAN_DATAGRAMS:
                    s.datagrams.append(event.data)
            elif event.stream_id in self._gone:
                pass
            elif self._enabled and not self._is_client and \
                    event.stream_id % 4 == 0 and event.stream_id >= 0:
                # a datagram may overtake its session's CONNECT: keep a few
                if len(self._orphan_datagrams) < _MAX_ORPHAN_DATAGRAMS:
                    self._orphan_datagrams.append((event.stream_id, event.data))
            else:
                self._emit(event)
        elif isinstance(event, HeadersReceived):
            s = self._sessions.get(event.stream_id)
            if s is None:
                if not self._is_client and self._enabled and \
                        event.stream_id not in self._gone and \
                        self._is_webtransport_request(event.headers):
                    self._on_session_request(event)
                elif event.stream_id not in self._gone:
                    self._emit(event)
                return
            if s.state == _CONNECTING:
                self._on_response(s, event.headers, event.stream_ended)
            elif event.stream_ended:  # trailers ending the CONNECT stream
                self._on_session_stream_end(s)
        elif isinstance(event, DataReceived):
            s = self._sessions.get(event.stream_id)
            if s is None:
                if event.stream_id in self._gone:
                    self.http.consumed(event.stream_id, len(event.data))
                    return
                self._emit(event)
                return
            self.http.consumed(event.stream_id, len(event.data))  # capsules: parsed now
            if event.data and s.closed_info is None:
                self._on_capsule_data(s, event.data)
            elif event.data and s.closing is not None:
                pass  # after our close: what the peer still says is of no interest
            if event.stream_ended:
                self._on_session_stream_end(s)
        else:
            self._emit(event)

    @staticmethod
    def _is_webtransport_request(headers: Headers) -> bool:
        method = protocol = None
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":protocol":
                protocol = value
        return method == b"CONNECT" and protocol in WT_PROTOCOL_TOKENS

    # ---- sessions

    def _init_flow(self, s: _Session) -> None:
        s.allow_bidi = self._max_streams
        s.allow_uni = self._max_streams
        s.rx_window = self._max_data
        s.rx_limit = self._max_data

    def _on_session_request(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        path = (_header(event.headers, b":path") or b"").decode("utf-8", "replace")
        s = _Session(sid, _REQUESTED, path)
        s.headers = event.headers
        self._init_flow(s)
        self._sessions[sid] = s
        offered_raw = _header(event.headers, b"wt-available-protocols")
        offered = parse_sf_string_list(offered_raw) if offered_raw is not None else None
        s.offered = offered or []
        if event.stream_ended:
            self._reject(sid, 400)
            return
        live = sum(1 for x in self._sessions.values()
                   if x.closed_info is None and x is not s)
        if live >= self._max_sessions:
            # more sessions than we advertised: refuse this CONNECT (draft section 5.2)
            self._forget_session(s)
            self._mark_gone(sid)
            self._quic.reset_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            self._quic.stop_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        if self._supported is not None and s.offered:
            chosen = next((p for p in s.offered if p in self._supported), None)
            if chosen is None:
                self._reject(sid, 400)
                return
            s.protocol = chosen
        self._emit(SessionRequested(sid, event.headers, path, list(s.offered)))

    def _on_response(self, s: _Session, headers: Headers, ended: bool) -> None:
        status = _header(headers, b":status") or b""
        s.headers = headers
        if not status.startswith(b"2") or ended:
            code = int(status) if status.isdigit() else 0
            self._forget_session(s)
            self._mark_gone(s.session_id)
            self._emit(SessionRefused(s.session_id, code, headers,
                                      f"HTTP status {code}" if code else "no answer"))
            return
        chosen_raw = _header(headers, b"wt-protocol")
        chosen = parse_sf_string(chosen_raw) if chosen_raw is not None else None
        if chosen is not None and chosen not in s.offered:
            # the server chose a protocol we never offered: close with WT_ALPN_ERROR
            s.state = _OPEN
            self._emit(SessionEstablished(s.session_id, headers, None))
            self._close(s.session_id, WT_ALPN_ERROR,
                        f"server chose WT-Protocol {chosen!r}, not offered")
            return
        s.protocol = chosen
        s.state = _OPEN
        self._emit(SessionEstablished(s.session_id, headers, chosen))
        self._adopt_orphans(s)
        for data in s.datagrams:
            self._emit(SessionDatagram(s.session_id, data))
        s.datagrams = []

    def _adopt_orphans(self, s: _Session) -> None:
        for st in self._orphans.pop(s.session_id, []):
            self._orphan_count -= 1
            self._orphan_bytes -= st.held_len
            if self._streams.get(st.stream_id) is not st:
                continue
            held, st.held, st.held_len = st.held, [], 0
            s.streams[st.stream_id] = st
            if not self._count_peer_stream(s, st):
                continue
            self._emit(StreamOpened(s.session_id, st.stream_id, st.bidi))
            data = b"".join(held)
            if data or st.held_fin:
                self._deliver(s, st, data, st.held_fin)
        if self._orphan_datagrams:
            keep = []
            for sid, data in self._orphan_datagrams:
                if sid == s.session_id:
                    self._emit(SessionDatagram(sid, data))
                else:
                    keep.append((sid, data))
            self._orphan_datagrams = keep

    # ---- streams

    def _on_wt_data(self, stream_id: int, session_id: int, data: bytes, fin: bool) -> None:
        st = self._streams.get(stream_id)
        if st is None:
            st = self._open_peer_stream(stream_id, session_id)
            if st is None:
                self.http.consumed(stream_id, len(data))
                return
        if not st.recv_open:
            self.http.consumed(stream_id, len(data))  # stopped or finished: drop
            return
        s = self._sessions.get(st.session_id)
        if s is None or s.state != _OPEN:  # orphan: hold the bytes until the session opens
            if data:
                st.held.append(data)
                st.held_len += len(data)
                self._orphan_bytes += len(data)
            st.held_fin = st.held_fin or fin
            if self._orphan_bytes > _MAX_ORPHAN_BYTES:
                self._drop_orphan(st)
            return
        self._deliver(s, st, data, fin)

    def _deliver(self, s: _Session, st: _WTStream, data: bytes, fin: bool) -> None:
        if data:
            s.rx_received += len(data)
            if self.flow_control and s.rx_received > s.rx_limit:
                self._session_error(s, WT_FLOW_CONTROL_ERROR,
                                    f"{s.rx_received} bytes, over WT_MAX_DATA {s.rx_limit}")
                return
        if fin:
            st.recv_open = False
        self._emit(StreamData(s.session_id, st.stream_id, data, fin))
        if fin:
            self._maybe_forget(st)

    def _open_peer_stream(self, stream_id: int, session_id: int) -> Optional[_WTStream]:
        bidi = not stream_id & 2
        if session_id % 4 != 0:
            self.http._fail(ErrorCode.H3_ID_ERROR, f"WebTransport session id {session_id} "
                            "is not a client-initiated bidirectional stream")
            return None
        s = self._sessions.get(session_id)
        if (s is not None and s.closed_info is not None) or \
                (s is None and session_id in self._gone):
            self._refuse_stream(stream_id, bidi, WT_SESSION_GONE)
            return None
        st = _WTStream(stream_id, session_id, local=False, bidi=bidi)
        if s is None or s.state != _OPEN:
            if self._orphan_count >= _MAX_ORPHAN_STREAMS:
                self._refuse_stream(stream_id, bidi, WT_BUFFERED_STREAM_REJECTED)
                return None
            self._streams[stream_id] = st
            self._orphans.setdefault(session_id, []).append(st)
            self._orphan_count += 1
            return st
        self._streams[stream_id] = st
        s.streams[stream_id] = st
        if not self._count_peer_stream(s, st):
            return None
        self._emit(StreamOpened(session_id, stream_id, bidi))
        return st

    def _count_peer_stream(self, s: _Session, st: _WTStream) -> bool:
        st.counted = True
        if st.bidi:
            s.peer_opened_bidi += 1
            over = s.peer_opened_bidi > s.allow_bidi
        else:
            s.peer_opened_uni += 1
            over = s.peer_opened_uni > s.allow_uni
        if over and self.flow_control:
            self._session_error(s, WT_FLOW_CONTROL_ERROR, "too many streams (over "
                                "WT_MAX_STREAMS)")
            return False
        return True

    def _drop_orphan(self, st: _WTStream) -> None:
        self._drop_orphan_quietly(st)
        self._refuse_stream(st.stream_id, st.bidi, WT_BUFFERED_STREAM_REJECTED)

    def _refuse_stream(self, stream_id: int, bidi: bool, code: int) -> None:
        quic = self._quic
        if quic.closed:
            return
        quic.stop_stream(stream_id, code)
        if bidi:
            quic.reset_stream(stream_id, code)
        # what still arrives on it (its FIN, late data) must not open it again
        self.http.ignore_stream(stream_id)

    def _maybe_forget(self, st: _WTStream) -> None:
        if st.send_open or st.recv_open:
            return
        if self._streams.get(st.stream_id) is st:
            del self._streams[st.stream_id]
        s = self._sessions.get(st.session_id)
        if s is not None and s.streams.pop(st.stream_id, None) is not None:
            if st.counted:
                self._peer_stream_done(s, st)
            self._emit(StreamFinished(st.session_id, st.stream_id))

    def _on_stream_reset(self, stream_id: int, error_code: int) -> None:
        st = self._streams.get(stream_id)
        if st is not None:
            s = self._sessions.get(st.session_id)
            if s is None or s.state != _OPEN:  # an orphan: forget it
                self._drop_orphan_quietly(st)
                return
            if st.recv_open:
                st.recv_open = False
                self._emit(StreamResetByPeer(st.session_id, stream_id,
                                             http3_error_to_webtransport(error_code),
                                             error_code))
            self._maybe_forget(st)
            return
        s = self._sessions.get(stream_id)
        if s is None:
            return
        if s.closing is not None:
            self._flush_closing(s)
            return
        if s.state == _CONNECTING:
            self._forget_session(s)
            self._mark_gone(stream_id)
            self._emit(SessionRefused(stream_id, 0, [],
                                      f"the server reset the session request (code "
                                      f"{error_code:#x})"))
            return
        s.send_ended = True
        self._terminate(s, 0, f"session stream reset (code {error_code:#x})", by_peer=True)

    def _drop_orphan_quietly(self, st: _WTStream) -> None:
        lst = self._orphans.get(st.session_id, [])
        if st in lst:
            lst.remove(st)
            self._orphan_count -= 1
            self._orphan_bytes -= st.held_len
            if not lst:
                self._orphans.pop(st.session_id, None)
        self._streams.pop(st.stream_id, None)
        self.http.consumed(st.stream_id, st.held_len)
        st.held, st.held_len = [], 0

    def _on_stop_sending(self, stream_id: int, error_code: int) -> None:
        st = self._streams.get(stream_id)
        if st is None or not st.send_open:
            return
        st.send_open = False
        s = self._sessions.get(st.session_id)
        if s is not None and s.state == _OPEN:
            self._emit(StreamStopped(st.session_id, stream_id,
                                     http3_error_to_webtransport(error_code), error_code))
        self._maybe_forget(st)

    # ---- capsules

    def _on_capsule_data(self, s: _Session, data: bytes) -> None:
        try:
            capsules = s.capsules.feed(data)
        except ValueError:
            self._session_error(s, ErrorCode.H3_MESSAGE_ERROR, "malformed capsule")
            return
        for ctype, value in capsules:
            if ctype == CLOSE_WEBTRANSPORT_SESSION:
                info = decode_close_session(value)
                code, reason = info if info is not None else (0, "malformed close capsule")
                self._peer_closed(s, code, reason)
                return
            if ctype == DRAIN_WEBTRANSPORT_SESSION:
                if not s.draining:
                    s.draining = True
                    self._emit(SessionDraining(s.session_id))
            elif ctype in _FLOW_CAPSULES:
                self._on_flow_capsule(s, ctype, value)
                if s.closed_info is not None:
                    return

    def _on_flow_capsule(self, s: _Session, ctype: int, value: bytes) -> None:
        v = decode_varint(value, 0)
        if v is None or v[1] != len(value):
            self._session_error(s, ErrorCode.H3_MESSAGE_ERROR, "malformed flow-control capsule")
            return
        n = v[0]
        if ctype == WT_MAX_STREAMS_BIDI:
            if s.peer_max_bidi is None or n > s.peer_max_bidi:
                s.peer_max_bidi = n
        elif ctype == WT_MAX_STREAMS_UNI:
            if s.peer_max_uni is None or n > s.peer_max_uni:
                s.peer_max_uni = n
        elif ctype == WT_MAX_DATA:
            if s.peer_max_data is None or n > s.peer_max_data:
                s.peer_max_data = n
        # *_BLOCKED: informational (our limits move as the application reads)

    def _send_capsule(self, s: _Session, ctype: int, value: int) -> None:
        if s.send_ended or s.closed_info is not None or self._quic.closed:
            return
        try:
            self.http.send_data(s.session_id, encode_capsule(ctype, encode_varint(value)),
                                end_stream=False)
        except Exception as exc:
            logger.debug("cannot send capsule %#x: %s", ctype, exc)

    def _credit_session(self, s: _Session, nbytes: int) -> None:
        s.rx_consumed += nbytes
        if not self.flow_control:
            s.rx_limit = s.rx_consumed + s.rx_window
            return
        if s.rx_limit - s.rx_consumed < s.rx_window // 2:
            s.rx_limit = s.rx_consumed + s.rx_window
            self._send_capsule(s, WT_MAX_DATA, s.rx_limit)

    def _peer_stream_done(self, s: _Session, st: _WTStream) -> None:
        if st.bidi:
            s.peer_done_bidi += 1
            new = s.peer_done_bidi + self._max_streams
            if new - s.allow_bidi >= max(1, self._max_streams // 4):
                s.allow_bidi = new
                if self.flow_control:
                    self._send_capsule(s, WT_MAX_STREAMS_BIDI, new)
        else:
            s.peer_done_uni += 1
            new = s.peer_done_uni + self._max_streams
            if new - s.allow_uni >= max(1, self._max_streams // 4):
                s.allow_uni = new
                if self.flow_control:
                    self._send_capsule(s, WT_MAX_STREAMS_UNI, new)

    # ---- session end

    def _session_error(self, s: _Session, code: int, reason: str) -> None:
        """A session error: reset and stop the CONNECT stream with ``code``."""
        logger.debug("WebTransport session %d error %#x: %s", s.session_id, code, reason)
        if not self._quic.closed:
            if not s.send_ended:
                self._quic.reset_stream(s.session_id, code)
            self._quic.stop_stream(s.session_id, code)
        s.send_ended = True
        self._terminate(s, code, reason, by_peer=False)

    def _peer_closed(self, s: _Session, code: int, reason: str) -> None:
        if s.closed_info is not None:
            return
        if not s.send_ended and not self._quic.closed:
            s.send_ended = True
            try:
                self.http.send_data(s.session_id, b"", end_stream=True)
            except Exception as exc:
                logger.debug("cannot end the CONNECT stream: %s", exc)
        self._terminate(s, code, reason, by_peer=True)

    def _on_session_stream_end(self, s: _Session) -> None:
        if s.closing is not None:
            self._flush_closing(s)
            return
        self._peer_closed(s, 0, "")

    def _terminate(self, s: _Session, code: int, reason: str, by_peer: bool,
                   defer_resets: bool = False, connection_gone: bool = False) -> None:
        if s.closed_info is not None:
            return
        s.state = _CLOSED
        s.closed_info = (code, reason)
        gone = connection_gone or self._quic.closed
        pending: list[tuple[int, bool, bool]] = []
        ids = []
        for st in list(s.streams.values()):
            ids.append(st.stream_id)
            pending.append((st.stream_id, st.send_open, st.recv_open))
            st.send_open = st.recv_open = False
            self._streams.pop(st.stream_id, None)
        s.streams.clear()
        for st in self._orphans.pop(s.session_id, []):
            self._orphan_count -= 1
            self._orphan_bytes -= st.held_len
            self._streams.pop(st.stream_id, None)
            self.http.consumed(st.stream_id, st.held_len)
            if not gone:
                self._refuse_stream(st.stream_id, st.bidi, WT_SESSION_GONE)
        if not gone:
            if defer_resets and pending:
                s.closing = pending
            else:
                self._reset_streams(pending)
        self._mark_gone(s.session_id)
        if s.closing is None:
            self._forget_session(s)
        # the peer's own close (its capsule or the end of its CONNECT stream) keeps its code
        # even when the connection closed right behind it, in the same batch of events
        self._emit(SessionClosed(s.session_id, code, reason, by_peer, ids,
                                 connection_gone or (gone and not by_peer)))

    def _reset_streams(self, pending: list[tuple[int, bool, bool]]) -> None:
        quic = self._quic
        if quic.closed:
            return
        for stream_id, need_reset, need_stop in pending:
            if need_reset:
                quic.reset_stream(stream_id, WT_SESSION_GONE)
            if need_stop:
                quic.stop_stream(stream_id, WT_SESSION_GONE)
                self.http.ignore_stream(stream_id)

    def _flush_closing(self, s: _Session) -> None:
        pending, s.closing = s.closing, None
        if pending:
            self._reset_streams(pending)
        self._forget_session(s)

    def _forget_session(self, s: _Session) -> None:
        if self._sessions.get(s.session_id) is s:
            del self._sessions[s.session_id]

    def _on_connection_terminated(self) -> None:
        self._done = True
        for s in list(self._sessions.values()):
            if s.state == _CONNECTING:
                self._forget_session(s)
                self._emit(SessionRefused(s.session_id, 0, [],
                                          f"connection closed: {self.close_message()}"))
                continue
            s.closing = None
            self._terminate(s, 0, f"connection closed: {self.close_message()}",
                            by_peer=True, connection_gone=True)
            self._forget_session(s)
        self._sessions.clear()
        self._streams.clear()
        self._orphans.clear()
        self._orphan_count = 0
        self._orphan_bytes = 0
        self._orphan_datagrams = []
