"""HTTP/3 server push (RFC 9114 section 4.6) with aioquic's names and semantics.

Sans-IO: H3Connection pairs wired through FakeQuic (tests/h3_helpers.py), hostile frames fed
by hand.  End to end over UDP: our client and our server, aioquic's client against our
server and our client against aioquic's server (aioquic is a test extra).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Optional

import anyio
import pylsqpack
import pytest
from h3_helpers import (
    HOST,
    FakeQuic,
    H3Pair,
    python_peer,
    read_line_with,
    subprocess_peer,
)

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve
from aiopquic.h3._wire import decode_varint, encode_frame, encode_varint
from aiopquic.h3.connection import (
    H3_ALPN,
    MAX_BLOCKED_STREAM_BYTES,
    ErrorCode,
    FrameType,
    H3Connection,
    StreamType,
)
from aiopquic.h3.events import DataReceived, HeadersReceived, PushPromiseReceived
from aiopquic.h3.exceptions import (
    FrameUnexpected,
    InvalidStreamTypeError,
    NoAvailablePushIDError,
)
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
           (b":path", b"/")]
PROMISE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
           (b":path", b"/style.css")]
RESPONSE = [(b":status", b"200")]
SETTINGS = encode_frame(FrameType.SETTINGS, encode_varint(0x1) + encode_varint(0) +
                        encode_varint(0x7) + encode_varint(0))
CONTROL = encode_varint(StreamType.CONTROL) + SETTINGS


def static_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A QPACK field section that uses no dynamic table."""
    return pylsqpack.Encoder().encode(0, headers)[1]


STATIC_200 = static_block(RESPONSE)
STATIC_PROMISE = static_block(PROMISE)
OTHER_PROMISE = static_block(PROMISE[:3] + [(b":path", b"/other.css")])
NO_AUTHORITY = static_block(PROMISE[:2] + PROMISE[3:])


def feed(h3: H3Connection, stream_id: int, data: bytes, fin: bool = False) -> list[Any]:
    return h3.handle_event(StreamDataReceived(data=data, end_stream=fin, stream_id=stream_id))


def request(pair: H3Pair) -> int:
    """Send a GET from the client and deliver it; returns its stream id."""
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST, end_stream=True)
    at_server, _ = pair.settle()
    assert at_server == [HeadersReceived(headers=REQUEST, stream_id=sid, stream_ended=True)]
    return sid


def client_with_settings(max_push_id: Optional[int] = 8,
                         credit: bool = False) -> tuple[FakeQuic, H3Connection]:
    quic = FakeQuic(is_client=True, credit=credit)
    h3 = H3Connection(quic, max_push_id=max_push_id)
    assert feed(h3, 3, CONTROL) == []
    return quic, h3


# ---------------------------------------------------------------------------- granting


def test_client_sends_max_push_id_after_settings():
    quic = FakeQuic(is_client=True)
    h3 = H3Connection(quic)
    control = bytes(quic.sent[h3._local_control])
    stream_type, pos = decode_varint(control, 0)
    assert stream_type == StreamType.CONTROL
    frames = []
    while pos < len(control):
        ftype, pos = decode_varint(control, pos)
        length, pos = decode_varint(control, pos)
        frames.append((ftype, control[pos:pos + length]))
        pos += length
    assert [f for f, _ in frames] == [FrameType.SETTINGS, FrameType.MAX_PUSH_ID]
    assert decode_varint(frames[1][1], 0)[0] == 8  # aioquic's client grants 0 .. 8


@pytest.mark.parametrize("is_client,max_push_id", [(True, None), (False, 5), (False, 8)])
def test_no_max_push_id_from_a_server_or_with_none(is_client, max_push_id):
    quic = FakeQuic(is_client=is_client)
    h3 = H3Connection(quic, max_push_id=max_push_id)
    control = bytes(quic.sent[h3._local_control])
    # the control stream holds its type and SETTINGS, nothing else
    pos = decode_varint(control, 0)[1]
    ftype, pos = decode_varint(control, pos)
    length, pos = decode_varint(control, pos)
    assert ftype == FrameType.SETTINGS and pos + length == len(control)


@pytest.mark.parametrize("bad", [-1, 0x10000, True, "8", 1.0])
def test_bad_max_push_id_names_the_parameter(bad):
    with pytest.raises(ValueError, match="max_push_id"):
        H3Connection(FakeQuic(is_client=True), max_push_id=bad)


def test_push_ids_run_out_at_the_granted_maximum():
    pair = H3Pair()
    sid = request(pair)
    push_stream_ids = [pair.server.send_push_promise(sid, PROMISE) for _ in range(9)]
    assert len(set(push_stream_ids)) == 9
    assert all(s % 4 == 3 for s in push_stream_ids)  # server-initiated unidirectional
    with pytest.raises(NoAvailablePushIDError, match="up to 8"):
        pair.server.send_push_promise(sid, PROMISE)
    _, at_client = pair.settle()
    promises = [e for e in at_client if isinstance(e, PushPromiseReceived)]
    assert [e.push_id for e in promises] == list(range(9))
    assert all(e.stream_id == sid and e.headers == PROMISE for e in promises)


def test_no_push_without_max_push_id():
    pair = H3Pair()
    pair.client_quic = FakeQuic(is_client=True)
    pair.client = H3Connection(pair.client_quic, max_push_id=None)
    sid = request(pair)
    with pytest.raises(NoAvailablePushIDError, match="no push id"):
        pair.server.send_push_promise(sid, PROMISE)


def test_send_push_promise_usage_errors():
    pair = H3Pair()
    sid = request(pair)
    with pytest.raises(RuntimeError, match="only a server"):
        pair.client.send_push_promise(sid, PROMISE)
    with pytest.raises(InvalidStreamTypeError):
        pair.server.send_push_promise(sid + 1, PROMISE)
    with pytest.raises(InvalidStreamTypeError):
        pair.server.send_push_promise(2, PROMISE)
    with pytest.raises(FrameUnexpected, match="not an open request stream"):
        pair.server.send_push_promise(sid + 400, PROMISE)
    with pytest.raises(TypeError, match="bytes"):
        pair.server.send_push_promise(sid, [(":path", "/")])  # type: ignore[list-item]
    pair.server.send_headers(sid, RESPONSE, end_stream=True)
    with pytest.raises(FrameUnexpected):
        pair.server.send_push_promise(sid, PROMISE)
    # no push id was used by the failed calls
    assert pair.server._next_push_id == 0


def test_client_goaway_limits_push_ids():
    pair = H3Pair()
    sid = request(pair)
    pair.server.send_push_promise(sid, PROMISE)  # push id 0
    pair.client.send_goaway(1)  # a client's GOAWAY carries a push id: none from 1 on
    pair.settle()
    with pytest.raises(NoAvailablePushIDError, match="GOAWAY"):
        pair.server.send_push_promise(sid, PROMISE)


# ---------------------------------------------------------------------------- a push


def test_push_promise_then_pushed_response():
    pair = H3Pair()
    sid = request(pair)
    push_sid = pair.server.send_push_promise(sid, PROMISE)
    pair.server.send_headers(push_sid, RESPONSE + [(b"content-length", b"4")])
    pair.server.send_data(push_sid, b"body", end_stream=True)
    pair.server.send_headers(sid, RESPONSE, end_stream=True)
    with pytest.raises(FrameUnexpected):
        pair.server.send_data(push_sid, b"more", end_stream=False)  # forgotten: ended
    _, at_client = pair.settle()
    assert at_client[0] == PushPromiseReceived(headers=PROMISE, push_id=0, stream_id=sid)
    pushed = [e for e in at_client if getattr(e, "push_id", None) == 0 and
              not isinstance(e, PushPromiseReceived)]
    assert pushed[0] == HeadersReceived(headers=RESPONSE + [(b"content-length", b"4")],
                                        stream_id=push_sid, stream_ended=False, push_id=0)
    assert b"".join(e.data for e in pushed[1:]) == b"body"
    assert pushed[-1].stream_ended and all(e.stream_id == push_sid for e in pushed)
    response = [e for e in at_client if getattr(e, "stream_id", None) == sid and
                not isinstance(e, PushPromiseReceived)]
    assert response == [HeadersReceived(headers=RESPONSE, stream_id=sid, stream_ended=True)]
    # both sides forget the finished streams
    assert push_sid not in pair.server._streams and push_sid not in pair.client._streams
    assert pair.server._push_streams == {}


def test_push_stream_before_its_promise_is_held_without_credit():
    pair = H3Pair()
    pair.client_quic = FakeQuic(is_client=True, credit=True)
    pair.client = H3Connection(pair.client_quic)
    sid = request(pair)
    push_sid = pair.server.send_push_promise(sid, PROMISE)
    pair.server.send_headers(push_sid, RESPONSE)
    pair.server.send_data(push_sid, b"x" * 1000, end_stream=True)
    # the push stream overtakes the request stream that carries the promise
    raw = pair.server_quic.take(push_sid)
    assert feed(pair.client, push_sid, raw, fin=True) == []
    # held: only the stream header (type, push id) is credited until the promise arrives
    # (its FIN arrived: the credit is the connection's, key -1, no MAX_STREAM_DATA needed)
    credited = pair.client_quic.credited
    assert credited.get(push_sid, 0) + credited.get(-1, 0) == len(_push_stream(0))
    events = feed(pair.client, sid, pair.server_quic.take(sid))
    assert events[0] == PushPromiseReceived(headers=PROMISE, push_id=0, stream_id=sid)
    assert events[1] == HeadersReceived(headers=RESPONSE, stream_id=push_sid,
                                        stream_ended=False, push_id=0)
    assert b"".join(e.data for e in events[2:]) == b"x" * 1000
    assert events[-1].stream_ended
    # all of it, once handed out
    assert credited.get(push_sid, 0) + credited.get(-1, 0) == len(raw)


def test_push_credit_follows_consumption_with_credit_on_consume():
    pair = H3Pair()
    pair.client_quic = FakeQuic(is_client=True, credit=True)
    pair.client = H3Connection(pair.client_quic, credit_on_consume=True)
    sid = request(pair)
    push_sid = pair.server.send_push_promise(sid, PROMISE)
    pair.server.send_headers(push_sid, RESPONSE)
    pair.server.send_data(push_sid, b"y" * 5000, end_stream=False)
    raw_len = len(pair.server_quic.sent[push_sid])
    _, at_client = pair.settle()
    assert sum(len(e.data) for e in at_client if isinstance(e, DataReceived)) == 5000
    assert pair.client_quic.credited[push_sid] == raw_len - 5000  # framing only
    pair.client.consumed(push_sid, 5000)
    assert pair.client_quic.credited[push_sid] == raw_len


def test_repeated_promise_with_the_same_headers_is_reported_once():
    pair = H3Pair()
    first = request(pair)
    second = request(pair)
    pair.server.send_push_promise(first, PROMISE)
    _, at_client = pair.settle()
    assert len([e for e in at_client if isinstance(e, PushPromiseReceived)]) == 1
    # the server promises push 0 again on the second request (allowed, same headers)
    block = pair.server._encoder.encode(second, PROMISE)[1]
    events = feed(pair.client, second, encode_frame(FrameType.PUSH_PROMISE,
                                                    encode_varint(0) + block))
    assert events == [] and pair.client_quic.closed_with is None


def test_qpack_blocked_push_promise_resumes():
    pair = H3Pair()
    headers = PROMISE + [(b"x-custom-header", b"some fairly long value" * 4)]
    encoder_stream = pair.server._local_encoder
    for _ in range(5):  # the encoder inserts entries once it has seen them used
        sid = request(pair)
        pair.server.send_push_promise(sid, headers)
        if pair.server_quic.sent[encoder_stream]:
            break
        pair.settle()
    else:
        pytest.fail("the QPACK encoder never used its dynamic table")
    assert feed(pair.client, sid, pair.server_quic.take(sid)) == []  # blocked
    events = feed(pair.client, encoder_stream, pair.server_quic.take(encoder_stream))
    assert [type(e) for e in events] == [PushPromiseReceived]
    assert events[0].headers == headers and events[0].stream_id == sid


# ---------------------------------------------------------------------------- CANCEL_PUSH


def test_client_cancels_a_push():
    pair = H3Pair()
    sid = request(pair)
    push_sid = pair.server.send_push_promise(sid, PROMISE)
    pair.server.send_headers(push_sid, RESPONSE)
    pair.settle()
    pair.client.cancel_push(0)
    assert pair.client_quic.stops[push_sid] == ErrorCode.H3_REQUEST_CANCELLED
    pair.settle()
    assert pair.server_quic.resets[push_sid] == ErrorCode.H3_REQUEST_CANCELLED
    with pytest.raises(FrameUnexpected, match="cancelled"):
        pair.server.send_data(push_sid, b"late", end_stream=True)
    # data still in flight is discarded by the client without events
    assert feed(pair.client, push_sid, encode_frame(0, b"zz"), fin=True) == []
    assert pair.client_quic.closed_with is None and pair.server_quic.closed_with is None
    with pytest.raises(ValueError, match="never granted"):
        pair.client.cancel_push(9)


def test_server_cancels_a_push_before_its_stream_arrives():
    pair = H3Pair()
    sid = request(pair)
    push_sid = pair.server.send_push_promise(sid, PROMISE)
    pair.server.send_headers(push_sid, RESPONSE)
    raw = pair.server_quic.take(push_sid)
    pair.server.cancel_push(0)
    assert pair.server_quic.resets[push_sid] == ErrorCode.H3_REQUEST_CANCELLED
    _, at_client = pair.settle()
    assert [type(e) for e in at_client] == [PushPromiseReceived]
    # the push stream that was already on its way: stopped, no events
    assert feed(pair.client, push_sid, raw) == []
    assert pair.client_quic.stops[push_sid] == ErrorCode.H3_REQUEST_CANCELLED
    with pytest.raises(ValueError, match="never promised"):
        pair.server.cancel_push(1)


# ---------------------------------------------------------------------------- hostile peers


def _push_stream(push_id: int) -> bytes:
    return encode_varint(StreamType.PUSH) + encode_varint(push_id)


def _promise(push_id: int, block: bytes = STATIC_PROMISE) -> bytes:
    return encode_frame(FrameType.PUSH_PROMISE, encode_varint(push_id) + block)


CLIENT_VIOLATIONS = [
    # (name, max_push_id, [(stream, bytes)], error)
    ("PUSH_PROMISE above MAX_PUSH_ID", 8, [(0, _promise(9))], ErrorCode.H3_ID_ERROR),
    ("PUSH_PROMISE without MAX_PUSH_ID", None, [(0, _promise(0))], ErrorCode.H3_ID_ERROR),
    ("push stream above MAX_PUSH_ID", 8, [(15, _push_stream(9))], ErrorCode.H3_ID_ERROR),
    ("push stream without MAX_PUSH_ID", None, [(15, _push_stream(0))],
     ErrorCode.H3_ID_ERROR),
    ("push stream with a huge push id", 8, [(15, _push_stream((1 << 62) - 1))],
     ErrorCode.H3_ID_ERROR),
    ("two push streams with one push id", 8,
     [(15, _push_stream(2)), (19, _push_stream(2))], ErrorCode.H3_ID_ERROR),
    ("CANCEL_PUSH above MAX_PUSH_ID", 8,
     [(3, encode_frame(FrameType.CANCEL_PUSH, encode_varint(100)))], ErrorCode.H3_ID_ERROR),
    ("PUSH_PROMISE on a push stream", 8,
     [(0, _promise(0)), (15, _push_stream(0) + _promise(1))], ErrorCode.H3_FRAME_UNEXPECTED),
    ("PUSH_PROMISE repeated with other headers", 8,
     [(0, _promise(0)), (0, _promise(0, OTHER_PROMISE))], ErrorCode.H3_GENERAL_PROTOCOL_ERROR),
    ("PUSH_PROMISE without :authority", 8, [(0, _promise(0, NO_AUTHORITY))],
     ErrorCode.H3_MESSAGE_ERROR),
    ("PUSH_PROMISE without a push id", 8, [(0, encode_frame(FrameType.PUSH_PROMISE, b""))],
     ErrorCode.H3_FRAME_ERROR),
    ("huge PUSH_PROMISE", 8, [(0, encode_varint(FrameType.PUSH_PROMISE) +
                               encode_varint(1 << 30))], ErrorCode.H3_EXCESSIVE_LOAD),
    ("DATA before HEADERS on a push stream", 8,
     [(0, _promise(0)), (15, _push_stream(0) + encode_frame(0, b"x"))],
     ErrorCode.H3_FRAME_UNEXPECTED),
    ("push stream without a promise, endless", 8,
     [(15, _push_stream(1) + b"\x21" * (MAX_BLOCKED_STREAM_BYTES + 1))],
     ErrorCode.H3_EXCESSIVE_LOAD),
]


@pytest.mark.parametrize("name,max_push_id,steps,code", CLIENT_VIOLATIONS,
                         ids=[v[0] for v in CLIENT_VIOLATIONS])
def test_hostile_server_closes_with_the_right_code(name, max_push_id, steps, code):
    quic, h3 = client_with_settings(max_push_id)
    # a request stream the promises can arrive on
    h3.send_headers(0, REQUEST, end_stream=True)
    for stream_id, data in steps:
        feed(h3, stream_id, data)
    assert quic.closed_with is not None, name
    assert quic.closed_with[0] == code, (name, hex(quic.closed_with[0]))
    assert feed(h3, 0, encode_frame(1, STATIC_200)) == []  # nothing more is processed


SERVER_VIOLATIONS = [
    ("PUSH_PROMISE from a client", [(0, _promise(0))], ErrorCode.H3_FRAME_UNEXPECTED),
    ("push stream from a client", [(2, _push_stream(0))], ErrorCode.H3_STREAM_CREATION_ERROR),
    ("CANCEL_PUSH of a push never promised",
     [(2, CONTROL + encode_frame(FrameType.CANCEL_PUSH, encode_varint(0)))],
     ErrorCode.H3_ID_ERROR),
    ("MAX_PUSH_ID reduced",
     [(2, CONTROL + encode_frame(FrameType.MAX_PUSH_ID, encode_varint(5)) +
       encode_frame(FrameType.MAX_PUSH_ID, encode_varint(4)))], ErrorCode.H3_ID_ERROR),
    ("malformed MAX_PUSH_ID",
     [(2, CONTROL + encode_frame(FrameType.MAX_PUSH_ID, encode_varint(5) + b"\x00"))],
     ErrorCode.H3_FRAME_ERROR),
]


@pytest.mark.parametrize("name,steps,code", SERVER_VIOLATIONS,
                         ids=[v[0] for v in SERVER_VIOLATIONS])
def test_hostile_client_closes_with_the_right_code(name, steps, code):
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    for stream_id, data in steps:
        feed(h3, stream_id, data)
    assert quic.closed_with is not None, name
    assert quic.closed_with[0] == code, (name, hex(quic.closed_with[0]))


def test_client_push_state_is_bounded_by_the_push_ids_granted():
    quic, h3 = client_with_settings(max_push_id=3)
    h3.send_headers(0, REQUEST, end_stream=True)
    for push_id in range(4):
        feed(h3, 0, _promise(push_id))
        feed(h3, 15 + 4 * push_id, _push_stream(push_id) + encode_frame(1, STATIC_200), True)
    assert quic.closed_with is None
    assert len(h3._promises) == 4 and len(h3._push_streams) == 4
    feed(h3, 0, _promise(4))  # one more is refused: the state cannot grow past the grant
    assert quic.closed_with[0] == ErrorCode.H3_ID_ERROR
    assert len(h3._promises) == 4


# ---------------------------------------------------------------------------- over UDP

SIZE = 300 * 1024


def aioquic_pattern(n: int) -> bytes:
    """The body tests/peers/aioquic_h3.py serves for /bytes/N (and pushes for /push/N)."""
    block = hashlib.sha256(b"aioquic-h3").digest() * 2048
    return (block * (n // len(block) + 1))[:n]


class PushServer(QuicConnectionProtocol):
    """aioquic-style server (H3Connection on QuicConnectionProtocol): GET /push/N pushes
    /bytes/N, then answers "pushed" (or "no push")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.http.handle_event(event):
            if not isinstance(h3_event, HeadersReceived):
                continue
            sid = h3_event.stream_id
            headers = dict(h3_event.headers)
            path = headers.get(b":path", b"")
            if not path.startswith(b"/push/"):
                self.http.send_headers(sid, [(b":status", b"404")], end_stream=True)
                continue
            size = path[len(b"/push/"):]
            try:
                push_sid = self.http.send_push_promise(sid, [
                    (b":method", b"GET"), (b":scheme", b"https"),
                    (b":authority", headers.get(b":authority", b"localhost")),
                    (b":path", b"/bytes/" + size)])
            except NoAvailablePushIDError:
                answer = b"no push"
            else:
                body = aioquic_pattern(int(size))
                self.http.send_headers(push_sid, [(b":status", b"200"), (
                    b"content-length", str(len(body)).encode())])
                self.http.send_data(push_sid, body, end_stream=True)
                answer = b"pushed"
            self.http.send_headers(sid, [(b":status", b"200")])
            self.http.send_data(sid, answer, end_stream=True)
        self.transmit()


class PushClient(QuicConnectionProtocol):
    """aioquic-style client: records the HTTP/3 events of one GET and of its pushes."""

    max_push_id: Optional[int] = 8
    credit_on_consume = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, max_push_id=self.max_push_id,
                                 credit_on_consume=self.credit_on_consume)
        self.events: list[Any] = []
        self.changed = asyncio.Event()
        self.terminated: Optional[ConnectionTerminated] = None

    def quic_event_received(self, event: QuicEvent) -> None:
        new = self.http.handle_event(event)
        if self.credit_on_consume:
            for h3_event in new:
                if isinstance(h3_event, DataReceived):  # "consumed" as soon as it is seen
                    self.http.consumed(h3_event.stream_id, len(h3_event.data))
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        if new or isinstance(event, ConnectionTerminated):
            self.events += new
            self.changed.set()

    async def get_with_push(self, port: int, path: str) -> tuple[list[Any], list[Any]]:
        """GET ``path``; wait (bounded) for the response and, if promised, the whole push.
        Returns (response events, push events incl. the promise)."""
        sid = self._quic.get_next_available_stream_id()
        self.http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                     (b":authority", f"localhost:{port}".encode()),
                                     (b":path", path.encode())], end_stream=True)
        self.transmit()

        def split() -> tuple[list[Any], list[Any]]:
            response = [e for e in self.events if getattr(e, "stream_id", None) == sid and
                        not isinstance(e, PushPromiseReceived)]
            pushes = [e for e in self.events if isinstance(e, PushPromiseReceived) or
                      getattr(e, "push_id", None) is not None]
            return response, pushes

        with anyio.fail_after(30):
            while True:
                response, pushes = split()
                promised = any(isinstance(e, PushPromiseReceived) for e in pushes)
                pushed_end = any(getattr(e, "stream_ended", False) for e in pushes)
                if response and response[-1].stream_ended and (pushed_end or not promised):
                    return response, pushes
                assert self.terminated is None, f"connection closed: {self.terminated}"
                self.changed.clear()
                await self.changed.wait()


def check_push(response: list[Any], pushes: list[Any], push_id: int = 0) -> None:
    assert dict(response[0].headers)[b":status"] == b"200"
    assert b"".join(e.data for e in response if isinstance(e, DataReceived)) == b"pushed"
    promise = pushes[0]
    assert isinstance(promise, PushPromiseReceived) and promise.push_id == push_id
    assert dict(promise.headers)[b":path"] == f"/bytes/{SIZE}".encode()
    assert promise.stream_id == response[0].stream_id
    assert isinstance(pushes[1], HeadersReceived) and pushes[1].push_id == push_id
    assert dict(pushes[1].headers)[b":status"] == b"200"
    push_sid = pushes[1].stream_id
    assert push_sid % 4 == 3  # a server-initiated unidirectional (push) stream
    body = b"".join(e.data for e in pushes[2:] if isinstance(e, DataReceived))
    assert all(e.push_id == push_id and e.stream_id == push_sid for e in pushes[1:])
    assert len(body) == SIZE and body == aioquic_pattern(SIZE)
    assert pushes[-1].stream_ended
    assert len([e for e in pushes if isinstance(e, PushPromiseReceived)]) == 1


WINDOW = 64 * 1024


def h3_client_config(certs: Any) -> QuicConfiguration:
    """A client whose receive windows are far below the pushed body: the push completes
    only if the push stream's credit comes back as it is consumed."""
    return QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, cafile=certs.ca,
                             server_name="localhost", max_stream_data=WINDOW,
                             max_data=2 * WINDOW)


@pytest.mark.anyio
@pytest.mark.timeout(90)
@pytest.mark.parametrize("credit_on_consume", [False, True])
async def test_our_client_and_our_server_over_udp(certs, credit_on_consume):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(certs.cert, certs.key)

    class Client(PushClient):
        pass

    Client.credit_on_consume = credit_on_consume
    server = await serve(HOST, 0, configuration=config, create_protocol=PushServer)
    try:
        async with connect(HOST, server.local_port, configuration=h3_client_config(certs),
                           create_protocol=Client) as protocol:
            for push_id in range(2):  # two GETs on one connection: push ids 0 and 1
                protocol.events.clear()
                response, pushes = await protocol.get_with_push(server.local_port,
                                                                f"/push/{SIZE}")
                check_push(response, pushes, push_id)
    finally:
        server.close()


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_our_server_without_push_ids_answers_without_push(certs):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(certs.cert, certs.key)

    class NoPushClient(PushClient):
        max_push_id = None

    server = await serve(HOST, 0, configuration=config, create_protocol=PushServer)
    try:
        async with connect(HOST, server.local_port, configuration=h3_client_config(certs),
                           create_protocol=NoPushClient) as protocol:
            response, pushes = await protocol.get_with_push(server.local_port,
                                                            f"/push/{SIZE}")
            assert pushes == []
            assert b"".join(e.data for e in response if isinstance(e, DataReceived)) == \
                b"no push"
    finally:
        server.close()


@pytest.mark.anyio
@pytest.mark.interop
@pytest.mark.timeout(120)
async def test_aioquic_client_gets_a_push_from_our_server(certs, tmp_path):
    pytest.importorskip("aioquic")
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(certs.cert, certs.key)
    server = await serve(HOST, 0, configuration=config, create_protocol=PushServer)
    try:
        argv = python_peer("aioquic_h3.py", "push-get", "--port", str(server.local_port),
                           "--ca", certs.ca, "--path", f"/push/{SIZE}", "--lifetime", "60")
        async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-push-get",
                                   stdout_pipe=True) as process:
            line = await read_line_with(process, "PUSH ", 90,
                                        str(tmp_path / "aioquic-push-get.err"))
        digest = hashlib.sha256(aioquic_pattern(SIZE)).hexdigest()
        assert line == (f"PUSH promises=1 path=/bytes/{SIZE} status=200 length={SIZE} "
                        f"sha256={digest} ended=True response=200:pushed")
    finally:
        server.close()


@pytest.mark.anyio
@pytest.mark.interop
@pytest.mark.timeout(120)
async def test_our_client_gets_a_push_from_aioquic_server(certs, tmp_path):
    pytest.importorskip("aioquic")
    argv = python_peer("aioquic_h3.py", "server", "--cert", certs.cert, "--key", certs.key,
                       "--lifetime", "100")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-push-server",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "LISTENING", 30,
                                    str(tmp_path / "aioquic-push-server.err"))
        port = int(line.split()[1])
        async with connect(HOST, port, configuration=h3_client_config(certs),
                           create_protocol=PushClient) as protocol:
            for push_id in range(2):
                protocol.events.clear()
                response, pushes = await protocol.get_with_push(port, f"/push/{SIZE}")
                check_push(response, pushes, push_id)


class HostileServer(PushServer):
    """Answers a GET by opening a push stream with push id 9 (the client granted 0 .. 8),
    bypassing H3Connection's checks."""

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.http.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
                self._quic.send_stream_data(sid, _push_stream(9) + encode_frame(1, STATIC_200))
        self.transmit()


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_push_id_over_the_grant_closes_a_real_connection(certs):
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(certs.cert, certs.key)
    server = await serve(HOST, 0, configuration=config, create_protocol=HostileServer)
    try:
        async with connect(HOST, server.local_port, configuration=h3_client_config(certs),
                           create_protocol=PushClient) as protocol:
            with pytest.raises(AssertionError, match="connection closed"):
                await protocol.get_with_push(server.local_port, "/")
            assert protocol.terminated is not None
            assert protocol.terminated.error_code == ErrorCode.H3_ID_ERROR
            assert "push id 9" in protocol.terminated.reason_phrase
    finally:
        server.close()
