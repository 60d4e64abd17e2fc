"""HTTP/3 framing: H3Connection pairs wired through a recording fake QUIC connection
(sans-IO, deterministic) plus a real-UDP check that protocol errors reach the peer as the
right HTTP/3 error code."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from h3_helpers import FakeQuic, H3Pair

from aiopquic.h3._wire import decode_varint, encode_frame, encode_varint
from aiopquic.h3.connection import (
    ErrorCode,
    FrameType,
    H3Connection,
    Setting,
    StreamType,
    http3_error_to_webtransport,
    webtransport_error_to_http3,
)
from aiopquic.h3.events import (
    DatagramReceived,
    DataReceived,
    GoawayReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aiopquic.h3.exceptions import FrameUnexpected, H3Error, InvalidStreamTypeError
from aiopquic.quic.events import (
    DatagramFrameReceived,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
           (b":path", b"/")]
RESPONSE = [(b":status", b"200")]
WT_CODEPOINTS = {0x08: 1, 0x33: 1, 0x2B603742: 1, 0xC671706A: 1, 0x14E9CD29: 1, 0x2C7CF000: 1}


def settings_frame(settings: dict[int, int]) -> bytes:
    payload = b"".join(encode_varint(k) + encode_varint(v) for k, v in settings.items())
    return encode_frame(FrameType.SETTINGS, payload)


CONTROL = encode_varint(StreamType.CONTROL) + settings_frame({0x1: 0, 0x7: 0})


def feed(h3: H3Connection, stream_id: int, data: bytes, fin: bool = False) -> list:
    return h3.handle_event(StreamDataReceived(data=data, end_stream=fin, stream_id=stream_id))


# ---------------------------------------------------------------------- settings


def test_settings_advertise_every_webtransport_codepoint():
    pair = H3Pair(webtransport=True)
    pair.settle()
    for side in (pair.client, pair.server):
        assert side.received_settings is not None
        for ident, value in WT_CODEPOINTS.items():
            assert side.received_settings.get(ident) == value, hex(ident)
        assert side.peer_supports_webtransport
        # a GREASE setting (0x1f * N + 0x21) is sent too
        assert any((k - 0x21) % 0x1F == 0 for k in side.sent_settings)


def test_settings_without_webtransport():
    pair = H3Pair(webtransport=False)
    pair.settle()
    received = pair.server.received_settings
    assert received is not None
    assert received[Setting.H3_DATAGRAM] == 1  # datagrams are on in the QUIC configuration
    for ident in (0x2B603742, 0xC671706A, 0x14E9CD29, 0x2C7CF000):
        assert ident not in received
    assert not pair.server.peer_supports_webtransport


def test_webtransport_needs_quic_datagrams():
    with pytest.raises(ValueError, match="max_datagram_frame_size"):
        H3Connection(FakeQuic(is_client=False, datagrams=False), enable_webtransport=True)


def test_control_and_qpack_streams_open_with_their_types():
    quic = FakeQuic(is_client=True)
    H3Connection(quic)
    types = {sid: decode_varint(bytes(data), 0)[0] for sid, data in quic.sent.items()}
    assert sorted(types.values()) == [StreamType.CONTROL, StreamType.QPACK_ENCODER,
                                      StreamType.QPACK_DECODER]
    assert all(sid & 2 for sid in types)  # unidirectional


# ---------------------------------------------------------------------- requests


def test_get_with_response_body_and_trailers():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST, end_stream=True)
    at_server, _ = pair.settle()
    assert at_server == [HeadersReceived(headers=REQUEST, stream_id=sid, stream_ended=True)]

    pair.server.send_headers(sid, RESPONSE + [(b"content-length", b"11")])
    pair.server.send_data(sid, b"hello ", end_stream=False)
    pair.server.send_data(sid, b"world", end_stream=False)
    pair.server.send_headers(sid, [(b"x-checksum", b"abc")], end_stream=True)
    _, at_client = pair.settle()
    assert isinstance(at_client[0], HeadersReceived) and not at_client[0].stream_ended
    body = b"".join(e.data for e in at_client if isinstance(e, DataReceived))
    assert body == b"hello world"
    assert at_client[-1] == HeadersReceived(headers=[(b"x-checksum", b"abc")], stream_id=sid,
                                            stream_ended=True)
    with pytest.raises(FrameUnexpected):
        pair.server.send_data(sid, b"more", end_stream=False)


def test_post_body_in_pieces_and_large_data():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    big = bytes(range(256)) * 1024  # 256 KiB: sent as header + separate payload
    pair.client.send_headers(sid, [(b":method", b"POST")] + REQUEST[1:])
    pair.client.send_data(sid, b"x" * 10, end_stream=False)
    pair.client.send_data(sid, big, end_stream=True)
    at_server, _ = pair.settle()
    body = b"".join(e.data for e in at_server if isinstance(e, DataReceived))
    assert body == b"x" * 10 + big
    assert at_server[-1].stream_ended


def test_byte_by_byte_delivery_parses_the_same():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, [(b":method", b"POST")] + REQUEST[1:])
    pair.client.send_data(sid, b"abcdef", end_stream=True)
    for stream_id in list(pair.client_quic.sent):
        if stream_id != sid:
            feed(pair.server, stream_id, pair.client_quic.take(stream_id))
    raw = pair.client_quic.take(sid)
    events = []
    for i in range(len(raw)):
        events += feed(pair.server, sid, raw[i:i + 1], fin=i == len(raw) - 1)
    assert isinstance(events[0], HeadersReceived)
    assert b"".join(e.data for e in events if isinstance(e, DataReceived)) == b"abcdef"
    assert events[-1].stream_ended


def test_interim_response_then_final():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST, end_stream=True)
    pair.settle()
    pair.server.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")])
    pair.server.send_headers(sid, RESPONSE, end_stream=True)
    _, at_client = pair.settle()
    statuses = [dict(e.headers)[b":status"] for e in at_client if isinstance(e, HeadersReceived)]
    assert statuses == [b"103", b"200"]
    assert at_client[-1].stream_ended


def test_send_errors_are_clear():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    with pytest.raises(FrameUnexpected):
        pair.client.send_data(sid, b"body before headers", end_stream=False)
    with pytest.raises(TypeError, match="bytes"):
        pair.client.send_headers(sid, [(":method", "GET")])  # type: ignore[list-item]
    with pytest.raises(InvalidStreamTypeError):
        pair.client.send_headers(2, REQUEST)
    for bad in ([0], 0.0, "0", -4):  # not a stream id: named, whatever its type
        with pytest.raises(ValueError, match="invalid stream id"):
            pair.client.send_headers(bad, REQUEST)  # type: ignore[arg-type]
    with pytest.raises(InvalidStreamTypeError):
        pair.client.send_datagram(1, b"x")
    with pytest.raises(H3Error, match="WebTransport is not enabled"):
        pair.client.create_webtransport_stream(0)


def test_malformed_request_is_a_stream_error_on_the_server():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST + [(b"X-Upper", b"1")], end_stream=True)
    at_server, _ = pair.settle()
    assert at_server == []
    assert pair.server_quic.resets[sid] == ErrorCode.H3_MESSAGE_ERROR
    assert pair.server_quic.closed_with is None
    # the connection still works
    sid2 = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid2, REQUEST, end_stream=True)
    at_server, _ = pair.settle()
    assert [e.stream_id for e in at_server] == [sid2]


@pytest.mark.parametrize("headers", [
    [(b":method", b"GET"), (b":path", b"/")],  # no :scheme
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")],  # no authority
    REQUEST + [(b"connection", b"close")],
    REQUEST + [(b"te", b"gzip")],
    [(b"x", b"1")] + REQUEST,  # pseudo-header after a regular one
    REQUEST + [(b":method", b"GET")],
    REQUEST + [(b"bad", b"a\nb")],
    [(b":method", b"GET"), (b":protocol", b"webtransport")] + REQUEST[1:],
    [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":authority", b"a")],
])
def test_malformed_requests_rejected(headers):
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, headers, end_stream=True)
    at_server, _ = pair.settle()
    assert at_server == []
    assert pair.server_quic.resets.get(sid) == ErrorCode.H3_MESSAGE_ERROR


def test_known_fields_skip_only_context_free_checks():
    """Fields seen valid before skip the character checks, not the checks that depend on
    where they appear: te outside a request, a pseudo-header twice or after a regular field
    and conflicting content-lengths are still refused; invalid fields are never remembered;
    the table stays bounded under a stream of new fields."""
    from aiopquic.h3 import connection as h3c

    pair = H3Pair()
    pair.settle()

    def server_resets(headers):
        sid = pair.client_quic.get_next_available_stream_id()
        pair.client.send_headers(sid, headers, end_stream=True)
        pair.settle()
        return pair.server_quic.resets.get(sid)

    good = REQUEST + [(b"te", b"trailers"), (b"accept", b"*/*")]
    assert server_resets(good) is None
    assert server_resets(good) is None  # served from the table
    assert (b"accept", b"*/*") in h3c._GOOD_FIELDS
    assert server_resets([(b"accept", b"*/*")] + REQUEST) == ErrorCode.H3_MESSAGE_ERROR
    assert server_resets(REQUEST + [REQUEST[0]]) == ErrorCode.H3_MESSAGE_ERROR
    assert server_resets(REQUEST + [(b"content-length", b"1"), (b"content-length", b"2")]) \
        == ErrorCode.H3_MESSAGE_ERROR
    for _ in range(2):
        assert server_resets(REQUEST + [(b"bad", b" padded")]) == ErrorCode.H3_MESSAGE_ERROR
        assert server_resets(REQUEST + [(b"connection", b"close")]) == ErrorCode.H3_MESSAGE_ERROR
    assert (b"bad", b" padded") not in h3c._GOOD_FIELDS
    assert (b"connection", b"close") not in h3c._GOOD_FIELDS
    for i in range(h3c._GOOD_FIELDS_MAX + 10):
        h3c._check_fields([(b"x-n", str(i).encode())], h3c._NO_PSEUDO, None, False)
    assert len(h3c._GOOD_FIELDS) <= h3c._GOOD_FIELDS_MAX
    h3c._check_fields([(b"x-long", b"v" * 1000)], h3c._NO_PSEUDO, None, False)
    assert (b"x-long", b"v" * 1000) not in h3c._GOOD_FIELDS


def test_decoder_instructions_of_a_batch_go_out_in_one_write():
    """Inside an endpoint's batch of events (the QUIC connection's _batch_end list is set)
    the Section Acknowledgments of several header blocks are written once, when the batch
    ends, in order; outside a batch each goes out at once."""
    pair = H3Pair()
    pair.settle()
    request = REQUEST + [(b"x-token", b"a value worth a dynamic table entry")]
    writes: list[tuple[int, bytes]] = []
    real_send = pair.server_quic.send_stream_data

    def send(stream_id, data, end_stream=False):
        writes.append((stream_id, bytes(data)))
        real_send(stream_id, data, end_stream)

    pair.server_quic.send_stream_data = send
    decoder = pair.server._local_decoder

    def one_request():
        sid = pair.client_quic.get_next_available_stream_id()
        pair.client.send_headers(sid, request, end_stream=True)
        pair.client_quic._used.add(sid)
        return sid

    one_request()
    pair.settle()  # the client's encoder inserted the field; later blocks reference it
    writes.clear()
    one_request()
    assert pair.to_server()
    unbatched = [w for w in writes if w[0] == decoder]
    assert len(unbatched) == 1 and unbatched[0][1]  # acknowledged at once
    writes.clear()
    pair.server_quic._batch_end = batch = []
    sids = [one_request() for _ in range(3)]
    events = pair.to_server()
    assert [e.stream_id for e in events if isinstance(e, HeadersReceived)] == sids
    assert not [w for w in writes if w[0] == decoder]  # held until the batch ends
    assert len(batch) == 1
    pair.server_quic._batch_end = None
    batch[0]()
    batched = [w for w in writes if w[0] == decoder]
    assert len(batched) == 1
    assert len(batched[0][1]) == 3 * len(unbatched[0][1])  # three acknowledgments
    assert pair.server._decoder_bytes_sent >= 4 * len(unbatched[0][1])


def test_content_length_mismatch_is_rejected():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, [(b":method", b"POST")] + REQUEST[1:] +
                             [(b"content-length", b"10")])
    pair.client.send_data(sid, b"12345", end_stream=True)
    at_server, _ = pair.settle()
    assert not any(isinstance(e, DataReceived) and e.stream_ended for e in at_server)
    assert pair.server_quic.resets.get(sid) == ErrorCode.H3_MESSAGE_ERROR


def test_malformed_response_closes_the_client_connection():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, REQUEST, end_stream=True)
    pair.settle()
    pair.server.send_headers(sid, [(b":status", b"20")], end_stream=True)
    pair.settle()
    assert pair.client_quic.closed_with[0] == ErrorCode.H3_MESSAGE_ERROR


def test_request_ended_before_headers_is_reset_incomplete():
    pair = H3Pair()
    pair.settle()
    assert feed(pair.server, 0, b"", fin=True) == []
    assert pair.server_quic.resets[0] == ErrorCode.H3_REQUEST_INCOMPLETE


# ---------------------------------------------------------------------- unknown things


def test_unknown_frames_and_streams_are_ignored():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, [(b":method", b"POST")] + REQUEST[1:])
    pair.settle()
    grease = encode_frame(0x21 + 0x1F * 7, b"ignored payload")
    unknown = encode_frame(0x2F00, b"x" * 100)
    events = feed(pair.server, sid, grease + encode_frame(0, b"ab") + unknown +
                  encode_frame(0, b"cd") + grease, fin=True)
    assert b"".join(e.data for e in events if isinstance(e, DataReceived)) == b"abcd"
    assert events[-1].stream_ended
    # unknown frames on the control stream, unknown unidirectional stream type
    control = pair.client._local_control
    assert feed(pair.server, control, encode_frame(0x21, b"zz")) == []
    assert feed(pair.server, 14, encode_varint(0x21 + 0x1F) + b"whatever") == []
    assert pair.server_quic.stops[14] == ErrorCode.H3_STREAM_CREATION_ERROR
    assert feed(pair.server, 14, b"more", fin=True) == []
    assert pair.server_quic.closed_with is None


def test_unknown_settings_are_ignored():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    feed(h3, 2, encode_varint(0) + settings_frame({0x1: 0, 0x7: 0, 0x21: 5, 0xABCDE: 7}))
    assert quic.closed_with is None
    assert h3.received_settings[0xABCDE] == 7


# ---------------------------------------------------------------------- protocol errors

H3 = ErrorCode


@pytest.mark.parametrize("name, side, steps, code", [
    ("first control frame not SETTINGS", "server",
     [(2, encode_varint(0) + encode_frame(FrameType.GOAWAY, b"\x00"), False)],
     H3.H3_MISSING_SETTINGS),
    ("second SETTINGS", "server", [(2, CONTROL + settings_frame({}), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("DATA on the control stream", "server", [(2, CONTROL + encode_frame(0, b"x"), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("HTTP/2 frame type on the control stream", "server",
     [(2, CONTROL + encode_frame(0x2, b""), False)], H3.H3_FRAME_UNEXPECTED),
    ("second control stream", "server", [(2, CONTROL, False), (6, CONTROL, False)],
     H3.H3_STREAM_CREATION_ERROR),
    ("control stream closed", "server", [(2, CONTROL, True)], H3.H3_CLOSED_CRITICAL_STREAM),
    ("duplicate setting", "server",
     [(2, encode_varint(0) + encode_frame(4, b"\x01\x00\x01\x00"), False)],
     H3.H3_SETTINGS_ERROR),
    ("HTTP/2 setting", "server", [(2, encode_varint(0) + settings_frame({0x2: 1}), False)],
     H3.H3_SETTINGS_ERROR),
    ("boolean setting out of range", "server",
     [(2, encode_varint(0) + settings_frame({0x8: 2}), False)], H3.H3_SETTINGS_ERROR),
    ("truncated SETTINGS", "server", [(2, encode_varint(0) + encode_frame(4, b"\x01"), False)],
     H3.H3_FRAME_ERROR),
    ("DATA before HEADERS", "server", [(0, encode_frame(0, b"body"), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("SETTINGS on a request stream", "server", [(0, settings_frame({}), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("HTTP/2 PRIORITY frame on a request stream", "server", [(0, encode_frame(0x2, b""), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("client PUSH_PROMISE", "server", [(0, encode_frame(5, b"\x00"), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("frame truncated by FIN", "server", [(0, b"\x01\x10abc", True)], H3.H3_FRAME_ERROR),
    ("undecodable QPACK", "server", [(0, encode_frame(1, b"\xff\xff\xff\xff"), False)],
     H3.QPACK_DECOMPRESSION_FAILED),
    ("client push stream", "server", [(2, encode_varint(1) + b"\x00", False)],
     H3.H3_STREAM_CREATION_ERROR),
    ("second QPACK encoder stream", "server",
     [(2, encode_varint(2), False), (6, encode_varint(2), False)], H3.H3_STREAM_CREATION_ERROR),
    ("QPACK stream closed", "server", [(2, encode_varint(3), True)],
     H3.H3_CLOSED_CRITICAL_STREAM),
    ("bad QPACK encoder stream", "server", [(2, encode_varint(2) + b"\x3f\xe2\x1f", False)],
     H3.QPACK_ENCODER_STREAM_ERROR),
    ("server MAX_PUSH_ID", "client",
     [(3, encode_varint(0) + settings_frame({}) + encode_frame(0xD, b"\x00"), False)],
     H3.H3_FRAME_UNEXPECTED),
    ("push stream above MAX_PUSH_ID", "client", [(3, encode_varint(1) + encode_varint(9),
                                                  False)], H3.H3_ID_ERROR),
    ("server bidi stream that is not WebTransport", "client",
     [(1, encode_frame(1, b"\x00\x00"), False)], H3.H3_STREAM_CREATION_ERROR),
    ("GOAWAY with a server stream id", "client",
     [(3, encode_varint(0) + settings_frame({}) + encode_frame(7, b"\x01"), False)],
     H3.H3_ID_ERROR),
    ("GOAWAY id increasing", "client",
     [(3, encode_varint(0) + settings_frame({}) + encode_frame(7, b"\x04") +
       encode_frame(7, b"\x08"), False)], H3.H3_ID_ERROR),
    ("huge HEADERS frame", "server", [(0, b"\x01" + encode_varint(1 << 30), False)],
     H3.H3_EXCESSIVE_LOAD),
])
def test_protocol_errors_close_with_the_right_code(name, side, steps, code):
    quic = FakeQuic(is_client=side == "client")
    h3 = H3Connection(quic)
    for stream_id, data, fin in steps:
        assert feed(h3, stream_id, data, fin) == []
    assert quic.closed_with is not None, name
    assert quic.closed_with[0] == code, (name, hex(quic.closed_with[0]))
    # after a connection error nothing more is processed
    assert feed(h3, 0, encode_frame(0, b"x")) == []


def test_critical_stream_reset_or_stopped():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    feed(h3, 2, CONTROL)
    h3.handle_event(StreamReset(error_code=0, stream_id=2))
    assert quic.closed_with[0] == ErrorCode.H3_CLOSED_CRITICAL_STREAM

    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    h3.handle_event(StopSendingReceived(error_code=0, stream_id=h3._local_control))
    assert quic.closed_with[0] == ErrorCode.H3_CLOSED_CRITICAL_STREAM


def test_malformed_datagram_is_a_datagram_error():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic)
    assert h3.handle_event(DatagramFrameReceived(data=b"")) == []
    assert quic.closed_with[0] == ErrorCode.H3_DATAGRAM_ERROR


# ---------------------------------------------------------------------- QPACK, GOAWAY, datagrams


def test_qpack_blocked_headers_resume_when_encoder_data_arrives():
    pair = H3Pair()
    pair.settle()  # SETTINGS exchanged: the encoder may now use the dynamic table
    encoder_stream = pair.client._local_encoder
    headers = REQUEST + [(b"x-custom-header", b"some fairly long value" * 4)]
    for _ in range(5):  # the encoder inserts entries once it has seen them used
        sid = pair.client_quic.get_next_available_stream_id()
        pair.client.send_headers(sid, headers, end_stream=True)
        if pair.client_quic.sent[encoder_stream]:
            break
        pair.settle()
    else:
        pytest.fail("the QPACK encoder never used its dynamic table")
    # deliver the request before the encoder instructions: the server must wait
    assert feed(pair.server, sid, pair.client_quic.take(sid), fin=True) == []
    events = feed(pair.server, encoder_stream, pair.client_quic.take(encoder_stream))
    assert events == [HeadersReceived(headers=headers, stream_id=sid, stream_ended=True)]
    # the decoder acknowledged the section on its stream
    assert pair.server_quic.sent[pair.server._local_decoder]


def test_goaway_both_ways():
    pair = H3Pair()
    pair.settle()
    first = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(first, REQUEST, end_stream=True)
    pair.settle()
    goaway_id = pair.server.send_goaway()
    assert goaway_id == first + 4
    _, at_client = pair.settle()
    assert GoawayReceived(stream_id=first + 4) in at_client
    assert pair.client.goaway_received == first + 4
    with pytest.raises(H3Error, match="GOAWAY"):
        pair.client.send_headers(first + 4, REQUEST, end_stream=True)
    with pytest.raises(ValueError):
        pair.server.send_goaway(first + 8)
    # a request at or above the GOAWAY id that arrives anyway is rejected
    events = feed(pair.server, first + 4, encode_frame(1, b"\x00\x00\xd1\xd7\x50\x89\x41\xf1"
                                                          b"\x1d\x5c\x57\x2e\x5a\x9f\xc1\x87"
                                                          b"\xc7\x05\x12\x45\x04\x22\x78\x89"),
                  fin=True)
    assert not any(isinstance(e, HeadersReceived) for e in events)


def test_h3_datagrams_carry_the_quarter_stream_id():
    pair = H3Pair()
    pair.settle()
    pair.client.send_datagram(8, b"payload")
    assert pair.client_quic.datagrams == [encode_varint(2) + b"payload"]
    at_server = pair.to_server()
    assert at_server == [DatagramReceived(data=b"payload", stream_id=8)]
    pair.server.send_datagram(400, b"x" * 100)
    assert pair.to_client() == [DatagramReceived(data=b"x" * 100, stream_id=400)]


# ---------------------------------------------------------------------- WebTransport framing


def test_webtransport_streams_both_directions():
    pair = H3Pair(webtransport=True)
    pair.settle()
    session = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(session, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"),
                                       (b":scheme", b"https"), (b":authority", b"a"),
                                       (b":path", b"/wt")])
    at_server, _ = pair.settle()
    assert isinstance(at_server[0], HeadersReceived)
    pair.server.send_headers(session, RESPONSE)
    pair.settle()

    bidi = pair.client.create_webtransport_stream(session)
    assert pair.client_quic.sent[bidi][:1] == b"\x40"  # 0x41 as a two-byte varint
    pair.client_quic.send_stream_data(bidi, b"ping")
    uni = pair.client.create_webtransport_stream(session, is_unidirectional=True)
    pair.client_quic.send_stream_data(uni, b"uni data", end_stream=True)
    at_server, _ = pair.settle()
    assert WebTransportStreamDataReceived(data=b"ping", stream_id=bidi, stream_ended=False,
                                          session_id=session) in at_server
    assert WebTransportStreamDataReceived(data=b"uni data", stream_id=uni, stream_ended=True,
                                          session_id=session) in at_server
    # the answer on the client's bidi stream has no header
    pair.server_quic.send_stream_data(bidi, b"pong", end_stream=True)
    server_bidi = pair.server.create_webtransport_stream(session)
    pair.server_quic.send_stream_data(server_bidi, b"from server", end_stream=True)
    _, at_client = pair.settle()
    assert WebTransportStreamDataReceived(data=b"pong", stream_id=bidi, stream_ended=True,
                                          session_id=session) in at_client
    assert WebTransportStreamDataReceived(data=b"from server", stream_id=server_bidi,
                                          stream_ended=True, session_id=session) in at_client


def test_webtransport_signal_after_headers_is_unexpected():
    quic = FakeQuic(is_client=False)
    h3 = H3Connection(quic, enable_webtransport=True)
    pair = H3Pair()
    pair.settle()
    pair.client.send_headers(0, REQUEST)
    block = pair.client_quic.take(0)
    feed(h3, 0, block + encode_varint(0x41) + encode_varint(0))
    assert quic.closed_with[0] == ErrorCode.H3_FRAME_UNEXPECTED


def test_webtransport_error_code_mapping():
    for code in (0, 1, 0x1D, 0x1E, 0x1F, 1000, 0xFFFFFFFF):
        h3code = webtransport_error_to_http3(code)
        assert (h3code - 0x21) % 0x1F != 0  # never a reserved codepoint
        assert http3_error_to_webtransport(h3code) == code
    assert http3_error_to_webtransport(0x100) is None
    with pytest.raises(ValueError):
        webtransport_error_to_http3(1 << 32)


# ---------------------------------------------------------------------- over real UDP



@pytest.mark.anyio
async def test_protocol_error_reaches_the_peer_as_h3_error_code(client_config, server_config):
    """A raw QUIC client opens a control stream whose first frame is not SETTINGS: our H3
    server closes the connection with H3_MISSING_SETTINGS, seen by the client over UDP."""
    from quic_helpers import RecordingProtocol, client, running_server

    from aiopquic.asyncio.webtransport import WebTransportProtocol
    from aiopquic.quic.events import ConnectionTerminated

    def factory(quic, stream_handler=None):
        return WebTransportProtocol(quic, stream_handler, enable_webtransport=False)

    async with running_server(server_config(alpn_protocols=["h3"]),
                              create_protocol=factory) as server:
        async with client(server.local_port, client_config(alpn_protocols=["h3"]),
                          create_protocol=RecordingProtocol) as proto:
            quic = proto._quic
            sid = quic.get_next_available_stream_id(is_unidirectional=True)
            quic.send_stream_data(sid, encode_varint(0) + encode_frame(FrameType.DATA, b"x"))
            event = await proto.wait_event(ConnectionTerminated, timeout=15)
            assert event.error_code == ErrorCode.H3_MISSING_SETTINGS
            with anyio.fail_after(10):
                await asyncio.shield(proto.wait_closed())


def test_head_response_content_length_is_not_checked():
    pair = H3Pair()
    pair.settle()
    sid = pair.client_quic.get_next_available_stream_id()
    pair.client.send_headers(sid, [(b":method", b"HEAD")] + REQUEST[1:], end_stream=True)
    pair.settle()
    pair.server.send_headers(sid, RESPONSE + [(b"content-length", b"1234")], end_stream=True)
    _, at_client = pair.settle()
    assert at_client[-1].stream_ended
    assert pair.client_quic.closed_with is None
