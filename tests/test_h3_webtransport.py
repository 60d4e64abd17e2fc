"""The sans-IO WebTransport layer (aiopquic.h3.webtransport) between two instances wired
through FakeQuic objects: session handshake and draft-15 ``:protocol``, WT-Protocol
negotiation, flow control (settings and capsules), buffered streams, close."""

from __future__ import annotations

from typing import Any

import pytest
from h3_helpers import FakeQuic

from aiopquic.h3._wire import encode_varint
from aiopquic.h3.connection import WT_SESSION_GONE, Setting, webtransport_error_to_http3
from aiopquic.h3.webtransport import (
    SETTING_WT_INITIAL_MAX_DATA,
    SETTING_WT_INITIAL_MAX_STREAMS_BIDI,
    SETTING_WT_INITIAL_MAX_STREAMS_UNI,
    WT_ALPN_ERROR,
    WT_FLOW_CONTROL_ERROR,
    SessionClosed,
    SessionDatagram,
    SessionDraining,
    SessionEstablished,
    SessionRefused,
    SessionRequested,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamResetByPeer,
    WebTransportConnection,
    encode_sf_string_list,
    parse_sf_string,
    parse_sf_string_list,
)
from aiopquic.quic.events import DatagramFrameReceived, StreamDataReceived, StreamReset


class WTPair:
    def __init__(self, client_kwargs: Any = None, server_kwargs: Any = None,
                 credit: bool = False) -> None:
        self.client_quic = FakeQuic(is_client=True, credit=credit)
        self.server_quic = FakeQuic(is_client=False, credit=credit)
        self.client = WebTransportConnection(self.client_quic, **(client_kwargs or {}))
        self.server = WebTransportConnection(self.server_quic, **(server_kwargs or {}))
        self._fin: set[tuple[bool, int]] = set()
        self.at_client: list[Any] = []

    def _transfer(self, src: FakeQuic, dst: WebTransportConnection, to_client: bool,
                  skip: frozenset[int] = frozenset()) -> list[Any]:
        events: list[Any] = []
        for stream_id in sorted(src.sent):
            if stream_id in skip:
                continue
            data = src.take(stream_id)
            fin = stream_id in src.fin and (to_client, stream_id) not in self._fin
            if fin:
                self._fin.add((to_client, stream_id))
            if data or fin:
                events += dst.handle_event(StreamDataReceived(data=data, end_stream=fin,
                                                              stream_id=stream_id))
        for datagram in src.datagrams:
            events += dst.handle_event(DatagramFrameReceived(data=datagram))
        src.datagrams.clear()
        return events

    def settle(self) -> tuple[list[Any], list[Any]]:
        at_server: list[Any] = []
        at_client: list[Any] = []
        for _ in range(20):
            a = self._transfer(self.client_quic, self.server, False)
            b = self._transfer(self.server_quic, self.client, True)
            at_server += a
            at_client += b
            if not a and not b and not any(self.client_quic.sent.values()) and \
                    not any(self.server_quic.sent.values()):
                break
        return at_server, at_client

    def open(self, **kwargs: Any) -> tuple[int, list[Any], list[Any]]:
        self.settle()
        sid = self.client.open_session("example.com", "/wt", **kwargs)
        at_server, self.at_client = self.settle()
        req = [e for e in at_server if isinstance(e, SessionRequested)]
        return sid, req, at_server


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def request_headers(pair: WTPair, sid: int) -> dict[bytes, bytes]:
    return dict(pair.server.session_headers(sid))


def test_settings_advertise_flow_control_and_several_sessions():
    pair = WTPair()
    pair.settle()
    sent = pair.server.http.sent_settings
    assert sent is not None
    assert sent[Setting.WT_MAX_SESSIONS] > 1
    assert sent[Setting.WT_ENABLED] == 1
    for ident in (SETTING_WT_INITIAL_MAX_DATA, SETTING_WT_INITIAL_MAX_STREAMS_BIDI,
                  SETTING_WT_INITIAL_MAX_STREAMS_UNI):
        assert sent[ident] > 0
    assert pair.client.flow_control and pair.server.flow_control
    assert pair.client.peer_speaks_draft15


def test_client_uses_webtransport_h3_with_a_draft15_server_and_legacy_token_otherwise():
    pair = WTPair()
    sid, req, _ = pair.open()
    assert len(req) == 1 and req[0].path == "/wt"
    assert request_headers(pair, sid)[b":protocol"] == b"webtransport-h3"
    pair2 = WTPair()
    pair2.settle()
    settings = pair2.client.http.received_settings
    assert settings is not None
    del settings[Setting.WT_ENABLED]  # an older server: no draft-15 setting
    sid2 = pair2.client.open_session("example.com", "/wt")
    at_server, _ = pair2.settle()
    assert of(at_server, SessionRequested)
    assert request_headers(pair2, sid2)[b":protocol"] == b"webtransport"


def test_open_before_settings_is_refused():
    pair = WTPair()
    with pytest.raises(RuntimeError, match="SETTINGS"):
        pair.client.open_session("example.com", "/wt")


def test_accept_streams_datagrams_and_close_both_ways():
    pair = WTPair()
    sid, req, _ = pair.open()
    pair.server.accept_session(sid)
    _, at_client = pair.settle()
    est = of(at_client, SessionEstablished)
    assert est and est[0].protocol is None
    stream = pair.client.create_stream(sid)
    pair.client.send_stream_data(stream, b"hello", end_stream=True)
    pair.client.send_datagram(sid, b"dgram")
    at_server, _ = pair.settle()
    assert of(at_server, StreamOpened)[0].stream_id == stream
    data = of(at_server, StreamData)
    assert b"".join(e.data for e in data) == b"hello" and data[-1].ended
    assert of(at_server, SessionDatagram)[0].data == b"dgram"
    pair.server.send_stream_data(stream, b"back", end_stream=True)
    _, at_client = pair.settle()
    assert b"".join(e.data for e in of(at_client, StreamData)) == b"back"
    assert of(at_client, StreamFinished)  # both directions done: forgotten
    pair.server.drain_session(sid)
    _, at_client = pair.settle()
    assert of(at_client, SessionDraining)
    events = pair.server.close_session(sid, 77, "bye")
    assert of(events, SessionClosed)[0].code == 77
    _, at_client = pair.settle()
    closed = of(at_client, SessionClosed)
    assert closed and (closed[0].code, closed[0].reason, closed[0].by_peer) == (77, "bye", True)
    assert pair.client.session_state(sid) == "closed"


def test_protocol_negotiation_server_picks_from_its_list_in_client_order():
    pair = WTPair(server_kwargs={"supported_protocols": ["moqt-16", "moqt-15"]})
    sid, req, _ = pair.open(available_protocols=["moqt-17", "moqt-15", "moqt-16"])
    assert req[0].protocols == ["moqt-17", "moqt-15", "moqt-16"]
    assert request_headers(pair, sid)[b"wt-available-protocols"] == \
        b'"moqt-17", "moqt-15", "moqt-16"'
    assert pair.server.session_protocol(sid) == "moqt-15"
    pair.server.accept_session(sid)
    _, at_client = pair.settle()
    assert of(at_client, SessionEstablished)[0].protocol == "moqt-15"
    assert pair.client.session_protocol(sid) == "moqt-15"


def test_no_protocol_in_common_is_refused_with_wt_alpn_error():
    pair = WTPair(server_kwargs={"supported_protocols": ["moqt-16"]})
    sid, req, at_server = pair.open(available_protocols=["moqt-14"])
    assert not req
    closed = of(at_server, SessionClosed)
    assert closed and closed[0].code == WT_ALPN_ERROR
    refused = of(pair.at_client, SessionRefused)
    assert refused and refused[0].status == 400


def test_client_closes_with_wt_alpn_error_when_the_server_picks_an_unoffered_protocol():
    pair = WTPair()
    sid, _, _ = pair.open(available_protocols=["a"])
    pair.server.accept_session(sid, headers=[(b"wt-protocol", b'"b"')])
    at_server, at_client = pair.settle()
    closed = of(at_client, SessionClosed)
    assert closed and closed[0].code == WT_ALPN_ERROR
    assert of(at_server, SessionClosed)[0].code == WT_ALPN_ERROR


def test_stream_limit_is_enforced_and_replenished():
    pair = WTPair(server_kwargs={"max_streams": 2})
    sid, _, _ = pair.open()
    pair.server.accept_session(sid)
    pair.settle()
    opened = []
    while pair.client.can_open_stream(sid, True):
        opened.append(pair.client.create_stream(sid))
        assert len(opened) <= 2
    assert len(opened) == 2
    for stream in opened:
        pair.client.send_stream_data(stream, b"x", end_stream=True)
    pair.settle()
    for stream in opened:
        pair.server.send_stream_data(stream, b"", end_stream=True)
    pair.settle()  # both directions done at the server: WT_MAX_STREAMS goes out
    assert pair.client.can_open_stream(sid, True)


def test_a_peer_over_the_stream_limit_gets_a_session_error():
    pair = WTPair(server_kwargs={"max_streams": 1})
    sid, _, _ = pair.open()
    pair.server.accept_session(sid)
    pair.settle()
    quic = pair.client_quic
    for _ in range(2):  # hand-made bidi streams, ignoring the limit
        stream = quic.get_next_available_stream_id()
        quic.send_stream_data(stream, encode_varint(0x41) + encode_varint(sid) + b"z")
    at_server, _ = pair.settle()
    closed = of(at_server, SessionClosed)
    assert closed and closed[0].code == WT_FLOW_CONTROL_ERROR
    assert pair.server_quic.resets.get(sid) == WT_FLOW_CONTROL_ERROR


def test_session_data_limit_follows_consumption():
    window = 1000
    pair = WTPair(server_kwargs={"max_session_data": window})
    sid, _, _ = pair.open()
    pair.server.accept_session(sid)
    pair.settle()
    stream = pair.client.create_stream(sid)
    pair.client.send_stream_data(stream, b"a" * 900)
    at_server, _ = pair.settle()
    got = sum(len(e.data) for e in of(at_server, StreamData))
    assert got == 900
    pair.server.consumed(stream, got)  # the application read it: WT_MAX_DATA goes out
    _, at_client = pair.settle()
    pair.client.send_stream_data(stream, b"b" * 900)
    at_server, _ = pair.settle()
    assert not of(at_server, SessionClosed)
    # a peer that sends past the window without the application reading is cut off
    pair.client.send_stream_data(stream, b"c" * 1500)
    at_server, _ = pair.settle()
    closed = of(at_server, SessionClosed)
    assert closed and closed[0].code == WT_FLOW_CONTROL_ERROR


def test_streams_before_the_session_are_buffered_then_delivered_and_bounded():
    pair = WTPair()
    pair.settle()
    sid = pair.client.open_session("example.com", "/wt")
    # the client's stream overtakes its CONNECT: deliver everything except the request
    quic = pair.client_quic
    early = quic.get_next_available_stream_id()
    assert early != sid
    quic.send_stream_data(early, encode_varint(0x41) + encode_varint(sid) + b"early")
    at_server = pair._transfer(quic, pair.server, False, skip=frozenset({sid}))
    assert not of(at_server, StreamOpened)
    for _ in range(40):  # more orphans than allowed: refused
        stream = quic.get_next_available_stream_id(is_unidirectional=True)
        quic.send_stream_data(stream, encode_varint(0x54) + encode_varint(sid) + b"u")
    pair._transfer(quic, pair.server, False, skip=frozenset({sid}))
    assert 0x3994BD84 in pair.server_quic.stops.values()  # WT_BUFFERED_STREAM_REJECTED
    at_server, _ = pair.settle()
    assert of(at_server, SessionRequested)
    pair.server.accept_session(sid)
    events = pair.server._take()
    opened = of(events, StreamOpened)
    assert early in [e.stream_id for e in opened]
    assert len(opened) <= 32
    assert b"early" in b"".join(e.data for e in of(events, StreamData)
                                if e.stream_id == early)


def test_stream_reset_code_and_session_gone():
    pair = WTPair()
    sid, _, _ = pair.open()
    pair.server.accept_session(sid)
    pair.settle()
    stream = pair.client.create_stream(sid)
    pair.client.send_stream_data(stream, b"x")
    pair.settle()
    events = pair.server.handle_event(StreamReset(
        error_code=webtransport_error_to_http3(33), stream_id=stream))
    reset = of(events, StreamResetByPeer)
    assert reset and reset[0].error_code == 33
    other = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(other, b"y")
    pair.settle()
    pair.client.close_session(sid, 0, "")
    at_server, _ = pair.settle()
    closed = of(at_server, SessionClosed)
    assert closed and other in closed[0].streams
    # the client ended the CONNECT stream and the server answered: streams reset now
    pair.settle()
    assert pair.client_quic.resets.get(other) == WT_SESSION_GONE


def test_structured_field_helpers():
    assert encode_sf_string_list(["a", 'q"x']) == b'"a", "q\\"x"'
    assert parse_sf_string_list(b'"a", "q\\"x";p=1 , "c"') == ["a", 'q"x', "c"]
    assert parse_sf_string_list(b'"a", tok') is None  # a non-String member: ignored
    assert parse_sf_string_list(b"") == []
    assert parse_sf_string(b'"moqt-16"; x=1') == "moqt-16"
    assert parse_sf_string(b"moqt-16") is None
    with pytest.raises(ValueError):
        encode_sf_string_list(["caf\u00e9"])


def test_ended_sessions_are_remembered_boundedly():
    from aiopquic.h3 import webtransport as wtmod

    pair = WTPair()
    pair.settle()
    for _ in range(wtmod._MAX_GONE + 100):
        sid = pair.client.open_session("example.com", "/wt")
        pair.settle()
        pair.server.accept_session(sid)
        pair.server.close_session(sid, 0, "")
        pair.settle()
    assert len(pair.server._gone) <= wtmod._MAX_GONE
    assert len(pair.client._gone) <= wtmod._MAX_GONE
    assert not pair.server._sessions and not pair.server._streams


@pytest.mark.parametrize("how", ["refuse", "stop"])
def test_data_after_a_refused_or_stopped_stream_does_not_open_it_again(how):
    """A stream the application refused (backlog full) or stopped: its later data and FIN are
    dropped and credited, never reported as a new stream (it once counted twice as refused)."""
    pair = WTPair(credit=True)
    sid, _, _ = pair.open()
    pair.server.accept_session(sid)
    pair.settle()
    stream = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(stream, b"first")
    at_server, _ = pair.settle()
    assert [e.stream_id for e in of(at_server, StreamOpened)] == [stream]
    if how == "refuse":
        pair.server.refuse_stream(stream)
    else:
        pair.server.stop_stream(stream, 5)
    assert stream in pair.server_quic.stops
    def credited() -> int:  # the stream's credit, and the connection's (key -1: it ended)
        return pair.server_quic.credited.get(stream, 0) + pair.server_quic.credited.get(-1, 0)

    credited_before = credited()
    pair.client.send_stream_data(stream, b"late data", end_stream=True)
    at_server, _ = pair.settle()
    assert not of(at_server, StreamOpened)
    assert not of(at_server, StreamData)
    assert credited() - credited_before >= len(b"late data")
