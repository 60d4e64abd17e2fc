"""HTTP/3 and WebTransport receive back-pressure and header limits, end to end over UDP.

A peer must never be able to make the server hold more than about the flow-control window:
bodies and streams nobody reads stop their sender, data behind a header section blocked on
QPACK is bounded, a QPACK "bomb" is refused before it is decoded, and
SETTINGS_MAX_FIELD_SECTION_SIZE is advertised and enforced.  Memory is checked with the RSS of
this process (server and client both run here).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any, Callable, Optional

import anyio
import pylsqpack
import pytest
from h3_helpers import HOST, FakeQuic

from aiopquic.asyncio import QuicConnectionProtocol, connect
from aiopquic.asyncio.webtransport import (
    WebTransportProtocol,
    WebTransportSession,
    connect_webtransport,
    serve_webtransport,
)
from aiopquic.h3._qpack_size import EncoderStreamSizes, encode_prefix_int
from aiopquic.h3._wire import decode_varint, encode_capsule, encode_frame, encode_varint
from aiopquic.h3.capsule import CapsuleBuffer
from aiopquic.h3.connection import (
    MAX_BLOCKED_STREAM_BYTES,
    ErrorCode,
    H3Connection,
    Setting,
)
from aiopquic.h3.events import DataReceived, HeadersReceived
from aiopquic.h3.exceptions import FrameUnexpected
from aiopquic.http3_tools import HttpServerProtocol, _ClientProtocol, echo_handler
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import StreamStateError
from aiopquic.quic.events import (
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

KiB = 1024
MiB = 1024 * KiB
WINDOW = 256 * KiB  # the server's stream receive window in these tests
RSS_LIMIT = 32 * MiB
SEND_LIMIT = 64 * MiB  # a sender getting this far was not held back
STALL = 1.0  # seconds without progress that count as "the sender is held"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def server_cfg(certs: Any, **overrides: Any) -> QuicConfiguration:
    kwargs: dict[str, Any] = {"is_client": False, "alpn_protocols": ["h3"],
                              "max_datagram_frame_size": 65535,
                              "max_stream_data": WINDOW, "max_data": 4 * WINDOW}
    kwargs.update(overrides)
    config = QuicConfiguration(**kwargs)
    config.load_cert_chain(certs.cert, certs.key)
    return config


def client_cfg(certs: Any, **overrides: Any) -> QuicConfiguration:
    kwargs: dict[str, Any] = {"is_client": True, "alpn_protocols": ["h3"],
                              "server_name": "localhost", "cafile": certs.ca,
                              "max_datagram_frame_size": 65535,
                              "max_stream_data": WINDOW, "max_data": 4 * WINDOW,
                              "stream_buffer_size": 64 * KiB}
    kwargs.update(overrides)
    return QuicConfiguration(**kwargs)


async def start_server(certs: Any, protocol: Any = HttpServerProtocol, handler: Any = None,
                       **kwargs: Any) -> Any:
    with anyio.fail_after(10):
        return await serve_webtransport(HOST, 0, configuration=server_cfg(certs),
                                        handler=handler or echo_handler, path="/echo",
                                        create_protocol=protocol, **kwargs)


async def push(quic: Any, stream_id: int, send: Callable[[bytes], None],
               wait_writable: Callable[[], Any]) -> tuple[int, int]:
    """Write 64 KiB chunks until the sender is held (no room and no byte acknowledged for
    STALL seconds), stopped, or SEND_LIMIT is reached.  Returns (bytes written, bytes the peer
    acknowledged)."""
    chunk = bytes(64 * KiB)
    written = 0

    def acked() -> int:
        return written - int(quic.get_stream_buffered_bytes(stream_id))

    while written < SEND_LIMIT:
        try:
            send(chunk)
        except (StreamStateError, FrameUnexpected):  # the peer sent STOP_SENDING
            break
        written += len(chunk)
        while quic.stream_send_pending(stream_id):
            progress = acked()
            try:
                await asyncio.wait_for(wait_writable(), STALL)
            except asyncio.TimeoutError:
                if acked() == progress:  # held: nothing moved for STALL seconds
                    return written, acked()
    return written, acked()


class Collector(_ClientProtocol):
    """HTTP/3 client that records responses and STOP_SENDING; it never credits response
    bodies (it never "reads" them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stops: dict[int, int] = {}
        self.changed = asyncio.Event()

    def quic_event_received(self, event: Any) -> None:
        super().quic_event_received(event)
        if isinstance(event, StopSendingReceived):
            self.stops[event.stream_id] = event.error_code
        self.changed.set()

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


def request(path: str = "/", method: bytes = b"POST",
            extra: Optional[list[tuple[bytes, bytes]]] = None) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"), (b":authority", b"localhost"),
            (b":path", path.encode())] + (extra or [])


async def status_of(queue: asyncio.Queue[Any]) -> bytes:
    with anyio.fail_after(10):
        while True:
            event = await queue.get()
            assert event is not None, "response cut short"
            if isinstance(event, HeadersReceived):
                return dict(event.headers)[b":status"]


# ---------------------------------------------------------------------- request bodies


class NeverReads(WebTransportProtocol):
    """A server that answers nothing and never consumes request bodies."""

    http_credit_on_consume = True
    instances: list[NeverReads] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[int, int] = {}
        NeverReads.instances.append(self)

    def http_event_received(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            self.held[event.stream_id] = self.held.get(event.stream_id, 0) + len(event.data)


async def test_post_body_nobody_reads_holds_the_client_at_the_window(certs):
    NeverReads.instances.clear()
    server = await start_server(certs, NeverReads)
    before = rss()
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=Collector) as client:
            assert isinstance(client, Collector)
            quic, http = client._quic, client.http
            sid = quic.get_next_available_stream_id()
            http.send_headers(sid, request())
            written, acked = await push(quic, sid, lambda b: http.send_data(sid, b, False),
                                        lambda: client._wait_writable(sid))
            assert written < SEND_LIMIT, "the sender was never held back"
            assert 64 * KiB < acked < 2 * MiB, acked
            assert rss() - before < RSS_LIMIT
            # the server application consumes what it holds: the client may send again
            (proto,) = NeverReads.instances
            proto.http.consumed(sid, proto.held[sid])
            with anyio.fail_after(10):
                await client._wait_writable(sid)
            http.send_data(sid, b"", end_stream=True)
    finally:
        server.close()


async def test_post_echo_the_client_never_reads_holds_the_client(certs):
    server = await start_server(certs)  # serve's POST echo
    before = rss()
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=Collector) as client:
            assert isinstance(client, Collector)
            quic, http = client._quic, client.http
            sid = quic.get_next_available_stream_id()
            client.responses[sid] = asyncio.Queue()  # events queued, never credited
            http.send_headers(sid, request())
            written, acked = await push(quic, sid, lambda b: http.send_data(sid, b, False),
                                        lambda: client._wait_writable(sid))
            assert written < SEND_LIMIT, "the sender was never held back"
            # the server's window, its 4 MiB send ring and the client's window
            assert 64 * KiB < acked < 8 * MiB, acked
            assert rss() - before < RSS_LIMIT
            assert await status_of(client.responses[sid]) == b"200"
            quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)  # close without waiting
    finally:
        server.close()


async def test_get_with_an_endless_body_is_answered_and_stopped(certs):
    server = await start_server(certs)
    before = rss()
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=Collector) as client:
            assert isinstance(client, Collector)
            quic, http = client._quic, client.http
            sid = quic.get_next_available_stream_id()
            client.responses[sid] = asyncio.Queue()
            http.send_headers(sid, request(method=b"GET"))
            written, acked = await push(quic, sid, lambda b: http.send_data(sid, b, False),
                                        lambda: client._wait_writable(sid))
            assert written < SEND_LIMIT
            assert acked < 2 * MiB, acked
            assert await status_of(client.responses[sid]) == b"200"
            # the body the answer did not need: the server asks the client to stop
            await client.wait_for(lambda: sid in client.stops)
            assert client.stops[sid] == ErrorCode.H3_NO_ERROR
            assert rss() - before < RSS_LIMIT
            quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
    finally:
        server.close()


# ---------------------------------------------------------------------- WebTransport streams


async def test_webtransport_uni_stream_nobody_reads_holds_the_client(certs):
    async def handler(session: WebTransportSession) -> None:
        session.accept()  # never accepts (reads) a stream
        await session.wait_closed()

    server = await start_server(certs, handler=handler, protocol=None)
    before = rss()
    try:
        url = f"https://{HOST}:{server.local_port}/echo"
        async with connect_webtransport(url, configuration=client_cfg(certs)) as session:
            _, writer = await session.create_stream(bidirectional=False)
            quic = session._protocol._quic
            sid = writer.get_extra_info("stream_id")
            written, acked = await push(quic, sid, writer.write, writer.drain)
            assert written < SEND_LIMIT, "the sender was never held back"
            assert 64 * KiB < acked < 2 * MiB, acked
            assert rss() - before < RSS_LIMIT
            writer.transport.abort()  # close without waiting for the stuck bytes
    finally:
        server.close()


async def test_webtransport_uni_echo_the_client_never_reads_holds_the_client(certs):
    server = await start_server(certs)  # echo_handler: uni streams echoed on new ones
    before = rss()
    try:
        url = f"https://{HOST}:{server.local_port}/echo"
        async with connect_webtransport(url, configuration=client_cfg(certs)) as session:
            _, writer = await session.create_stream(bidirectional=False)
            quic = session._protocol._quic
            sid = writer.get_extra_info("stream_id")
            written, acked = await push(quic, sid, writer.write, writer.drain)
            assert written < SEND_LIMIT, "the sender was never held back"
            # held after the server's echo send ring (4 MiB) and the windows filled
            assert 64 * KiB < acked < 8 * MiB, acked
            assert rss() - before < RSS_LIMIT
            # the echo is there, waiting for the client
            with anyio.fail_after(10):
                reader, _ = await session.accept_stream()
                assert await reader.read(1024)
            writer.transport.abort()
    finally:
        server.close()


# ---------------------------------------------------------------------- raw QPACK attacks


class RawH3(QuicConnectionProtocol):
    """A hand-written HTTP/3 client: sends exactly the bytes a test gives it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: dict[int, bytearray] = {}
        self.stops: dict[int, int] = {}
        self.resets: dict[int, int] = {}
        self.changed = asyncio.Event()

    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
        elif isinstance(event, StopSendingReceived):
            self.stops[event.stream_id] = event.error_code
        elif isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
        self.changed.set()

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()

    async def _wait_writable(self, stream_id: int) -> None:
        fut = asyncio.get_running_loop().create_future()
        if self._quic._add_drain_waiter(stream_id, lambda: fut.done() or fut.set_result(None)):
            await fut

    def open(self, encoder_instructions: bytes = b"") -> None:
        quic = self._quic
        control = quic.get_next_available_stream_id(is_unidirectional=True)
        quic.send_stream_data(control, encode_varint(0) + encode_frame(4, b""))
        encoder = quic.get_next_available_stream_id(is_unidirectional=True)
        quic.send_stream_data(encoder, encode_varint(2) + encoder_instructions)
        decoder = quic.get_next_available_stream_id(is_unidirectional=True)
        quic.send_stream_data(decoder, encode_varint(3))

    def status(self, stream_id: int) -> Optional[bytes]:
        """The :status of the response on ``stream_id`` once its HEADERS frame is in."""
        data = bytes(self.received.get(stream_id, b""))
        head = decode_varint(data, 0)
        length = decode_varint(data, head[1]) if head else None
        if head is None or length is None or len(data) < length[1] + length[0]:
            return None
        assert head[0] == 1, "first frame of a response must be HEADERS"
        # we advertised no QPACK table: the server's blocks are static/literal only
        _, headers = pylsqpack.Decoder(0, 0).feed_header(
            stream_id, data[length[1]:length[1] + length[0]])
        return dict(headers)[b":status"]

    async def get(self, stream_id: int) -> bytes:
        _, block = pylsqpack.Encoder().encode(stream_id, request(method=b"GET"))
        self._quic.send_stream_data(stream_id, encode_frame(1, block), end_stream=True)
        await self.wait_for(lambda: self.status(stream_id) is not None)
        status = self.status(stream_id)
        assert status is not None
        return status


def static_prefix() -> bytes:
    """:method GET, :scheme https, :path / (static) and :authority (literal, static name)."""
    return b"\xd1\xd7\xc1\x50" + encode_prefix_int(9, 7, 0) + b"localhost"


async def test_qpack_bomb_is_refused_and_the_connection_keeps_serving(certs):
    server = await start_server(certs)
    before = rss()
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=RawH3) as client:
            assert isinstance(client, RawH3)
            # one 4,033-byte dynamic entry ...
            client.open(encode_prefix_int(4096, 5, 0x20) + encode_prefix_int(1, 5, 0x40) +
                        b"x" + encode_prefix_int(4000, 7, 0) + b"v" * 4000)
            # ... referenced 16,000 times: a 16 KB block that decodes to 64 MB
            block = b"\x02\x00" + static_prefix() + b"\x80" * 16000
            sid = client._quic.get_next_available_stream_id()
            client._quic.send_stream_data(sid, encode_frame(1, block), end_stream=True)
            await client.wait_for(lambda: client.status(sid) is not None)
            assert client.status(sid) == b"431"
            assert rss() - before < RSS_LIMIT
            # the same connection still serves a normal request
            assert await client.get(client._quic.get_next_available_stream_id()) == b"200"
    finally:
        server.close()


async def test_qpack_blocked_headers_followed_by_a_body_stay_bounded(certs, monkeypatch):
    # the whole 8 MiB stream window from the start (no auto-tuning from a small one): the
    # blocked-stream limit must act, not flow control
    monkeypatch.setenv("AIOPQUIC_STREAM_WINDOW_START", "0")
    with anyio.fail_after(10):
        server = await serve_webtransport(
            HOST, 0, configuration=server_cfg(certs, max_stream_data=8 * MiB,
                                              max_data=16 * MiB),
            handler=echo_handler, path="/echo", create_protocol=HttpServerProtocol)
    before = rss()
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=RawH3) as client:
            assert isinstance(client, RawH3)
            client.open()  # nothing is ever inserted in the dynamic table
            quic = client._quic
            sid = quic.get_next_available_stream_id()
            # Required Insert Count 1: blocked forever
            quic.send_stream_data(sid, encode_frame(1, b"\x02\x00\x80"))
            data = encode_frame(0, bytes(64 * KiB))
            written, _ = await push(quic, sid, lambda _: quic.send_stream_data(sid, data),
                                    lambda: client._wait_writable(sid))
            await client.wait_for(lambda: sid in client.stops)
            assert client.stops[sid] == ErrorCode.H3_EXCESSIVE_LOAD
            quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            assert written < 16 * MiB, written
            assert rss() - before < RSS_LIMIT
            assert await client.get(quic.get_next_available_stream_id()) == b"200"
    finally:
        server.close()


# ---------------------------------------------------------------------- field section size


async def test_max_field_section_size_is_advertised_and_enforced(certs):
    server = await start_server(certs, max_field_section_size=4096)
    try:
        async with connect(HOST, server.local_port, configuration=client_cfg(certs),
                           create_protocol=Collector) as client:
            assert isinstance(client, Collector)
            with anyio.fail_after(10):
                await client.wait_settings()
            http, quic = client.http, client._quic
            assert http.received_settings[Setting.MAX_FIELD_SECTION_SIZE] == 4096
            assert http.sent_settings[Setting.MAX_FIELD_SECTION_SIZE] == 64 * KiB
            big = quic.get_next_available_stream_id()
            client.responses[big] = asyncio.Queue()
            # five 1000-byte fields (older pylsqpack, as on PyPy, refuses one field this big)
            big_fields = [(b"x-big-%d" % i, b"a" * 1000) for i in range(5)]
            http.send_headers(big, request(method=b"GET", extra=big_fields), end_stream=True)
            assert await status_of(client.responses[big]) == b"431"
            small = quic.get_next_available_stream_id()
            client.responses[small] = asyncio.Queue()
            http.send_headers(small, request(method=b"GET"), end_stream=True)
            assert await status_of(client.responses[small]) == b"200"
    finally:
        server.close()


# ---------------------------------------------------------------------- sans-IO


class CreditQuic(FakeQuic):
    """FakeQuic that records the receive credit returned to the peer."""

    def __init__(self, is_client: bool) -> None:
        super().__init__(is_client)
        self._auto_credit = True
        self.credit: dict[int, int] = {}
        self.closed = False

    def _consumed(self, stream_id: int, n: int) -> None:
        self.credit[stream_id] = self.credit.get(stream_id, 0) + n

    def _flush_credit(self, stream_id: int) -> None:
        pass


def feed(h3: H3Connection, stream_id: int, data: bytes, fin: bool = False) -> list[Any]:
    return h3.handle_event(StreamDataReceived(data=data, end_stream=fin, stream_id=stream_id))


def encoded_request(stream_id: int, body: bytes) -> bytes:
    _, block = pylsqpack.Encoder().encode(stream_id, request())
    return encode_frame(1, block) + encode_frame(0, body)


def test_credit_contract_hand_out_and_on_consume():
    wire = encoded_request(0, b"b" * 1000)
    # default (aioquic's contract): everything is credited once the events are handed out
    quic = CreditQuic(is_client=False)
    h3 = H3Connection(quic)
    assert quic._auto_credit is False  # H3Connection owns the credit
    events = feed(h3, 0, wire)
    assert [type(e) for e in events] == [HeadersReceived, DataReceived]
    assert quic.credit[0] == len(wire)
    # credit_on_consume: framing now, payload when the application says so
    quic = CreditQuic(is_client=False)
    h3 = H3Connection(quic, credit_on_consume=True)
    feed(h3, 0, wire)
    assert quic.credit[0] == len(wire) - 1000
    h3.consumed(0, 1000)
    assert quic.credit[0] == len(wire)


def test_blocked_stream_data_is_bounded_and_held_without_credit():
    quic = CreditQuic(is_client=False)
    h3 = H3Connection(quic)
    headers = encode_frame(1, b"\x02\x00\x80")  # Required Insert Count 1: blocked
    assert feed(h3, 0, headers) == []
    chunk = encode_frame(0, bytes(64 * KiB))
    sent = len(headers)
    while 0 not in quic.resets:
        assert feed(h3, 0, chunk) == []
        sent += len(chunk)
        assert sent < 2 * MAX_BLOCKED_STREAM_BYTES
        st = h3._streams.get(0)
        if st is not None and st.blocked:
            assert len(st.held) * len(chunk) == st.held_len  # chunks, not one growing bytes
            assert quic.credit.get(0, 0) <= 2  # only the frame header: nothing held
    assert quic.resets[0] == quic.stops[0] == ErrorCode.H3_EXCESSIVE_LOAD
    assert quic.credit[0] == sent  # dropped bytes give their credit back
    assert quic.closed_with is None  # a stream error, the connection lives on


def test_more_blocked_streams_than_advertised_is_a_decompression_failure():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    assert h3.sent_settings[Setting.QPACK_BLOCKED_STREAMS] == 16
    for i in range(17):
        feed(h3, 4 * i, encode_frame(1, b"\x02\x00\x80"))
    assert quic.closed_with is not None
    assert quic.closed_with[0] == ErrorCode.QPACK_DECOMPRESSION_FAILED


def test_size_bound_is_never_below_the_decoded_size():
    rnd = random.Random(5)
    pool = [bytes(rnd.choice(b"abcdef0123/=;") for _ in range(rnd.randrange(1, 300)))
            for _ in range(30)]
    encoder = pylsqpack.Encoder()
    encoder.apply_settings(max_table_capacity=4096, blocked_streams=16)
    decoder = pylsqpack.Decoder(4096, 16)
    sizes = EncoderStreamSizes(4096)
    for i in range(400):
        headers = request() + [(rnd.choice([b"x-a", b"cookie", b"x-b" + bytes([97 + i % 5])]),
                                rnd.choice(pool)) for _ in range(rnd.randrange(10))]
        enc, block = encoder.encode(4 * i, headers)
        sizes.feed(enc)
        decoder.feed_encoder(enc)
        ack, decoded = decoder.feed_header(4 * i, block)
        encoder.feed_decoder(ack)
        exact = sum(len(n) + len(v) + 32 for n, v in decoded)
        bound = sizes.bound(block, 1 << 40)
        assert bound is not None and exact <= bound <= exact * 8 // 5 + 64, (i, exact, bound)
    assert sizes.inserts > 50  # the dynamic table was exercised


def test_oversized_header_section_gets_431_on_a_server():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic, max_field_section_size=1000)
    _, block = pylsqpack.Encoder().encode(0, request(extra=[(b"x-big", b"a" * 2000)]))
    assert feed(h3, 0, encode_frame(1, block), fin=True) == []
    assert 0 in quic.fin and quic.stops[0] == ErrorCode.H3_EXCESSIVE_LOAD
    answer = bytes(quic.sent[0])
    head = decode_varint(answer, 0)
    length = decode_varint(answer, head[1]) if head else None
    assert head is not None and head[0] == 1 and length is not None
    _, fields = pylsqpack.Decoder(0, 0).feed_header(0, answer[length[1]:])
    assert dict(fields)[b":status"] == b"431"
    assert quic.closed_with is None
    with pytest.raises(ValueError):
        H3Connection(FakeQuic(is_client=False), max_field_section_size=0)
    client_quic = FakeQuic(is_client=True)
    client = H3Connection(client_quic, max_field_section_size=1000)
    client.send_headers(0, request(), end_stream=True)
    _, block = pylsqpack.Encoder().encode(0, [(b":status", b"200"), (b"x", b"a" * 2000)])
    feed(client, 0, encode_frame(1, block))
    assert client_quic.closed_with is not None
    assert client_quic.closed_with[0] == ErrorCode.H3_EXCESSIVE_LOAD


def test_capsules_are_reassembled_without_recopying_and_bounded():
    capsule = encode_capsule(0x1234, bytes(60 * KiB)) + encode_capsule(0x2843, b"\0\0\0\1bye")
    buf = CapsuleBuffer()
    found = []
    for i in range(len(capsule)):  # one byte per DATA frame: linear, not quadratic
        found += buf.feed(capsule[i:i + 1])
    assert found == [(0x1234, bytes(60 * KiB)), (0x2843, b"\0\0\0\1bye")]
    assert buf.pending == 0
    with pytest.raises(ValueError):  # refused as soon as the length is known
        CapsuleBuffer().feed(encode_varint(0x1234) + encode_varint(1 << 20) + b"x")
