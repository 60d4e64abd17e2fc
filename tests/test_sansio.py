"""The sans-IO connection (aioquic's ``QuicConnection`` API) with no sockets: a client and a
server wired together in memory, the test moving every datagram and the clock -- so loss,
reordering and time jumps are under its control.

The connection-level checks (streams both ways, datagrams, ping, close with a code, key
update) run on both drivers of the native connection core: the synchronous sans-IO one and
the threaded endpoint (two real loopback endpoints, driven through ``QuicEndpoint.process``).
"""

from __future__ import annotations

import os
import random
import select
import time
from typing import Any, Callable, Optional

import pytest

from aiopquic.buffer import Buffer, BufferReadError, BufferWriteError, size_uint_var
from aiopquic.quic import events
from aiopquic.quic.connection import QuicConnection, QuicEndpoint
from aiopquic.quic.packet import (
    PACKET_TYPE_INITIAL,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aiopquic.quic.sansio import SansioQuicConnection

CLIENT_ADDR = ("10.0.0.1", 50000)
SERVER_ADDR = ("10.0.0.2", 443)
MAX_ROUNDS = 20000


def drain(quic: QuicConnection) -> list[Any]:
    out = []
    while True:
        event = quic.next_event()
        if event is None:
            return out
        out.append(event)


class SansioPair:
    """A client and a server connection wired in memory; the server connection is created
    the way a server owning its socket does it (Hypercorn): from the first Initial's header,
    then every datagram is routed by destination connection ID."""

    kind = "sansio"

    def __init__(self, client_config: Any, server_config: Any, *, loss: float = 0.0,
                 reorder: bool = False, seed: int = 1) -> None:
        self.server_config = server_config
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.loss = loss
        self.reorder = reorder
        self.client = QuicConnection(configuration=client_config)
        self.server: Optional[QuicConnection] = None
        self.routes: dict[bytes, QuicConnection] = {}
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.client.connect(SERVER_ADDR, now=self.now)
        self.dropped = 0

    # -- datagram movement

    def _to_server(self, data: bytes) -> None:
        header = pull_quic_header(Buffer(data=data),
                                  host_cid_length=self.server_config.connection_id_length)
        quic = self.routes.get(header.destination_cid)
        if quic is None and self.server is None and header.packet_type == PACKET_TYPE_INITIAL:
            quic = QuicConnection(configuration=self.server_config,
                                  original_destination_connection_id=header.destination_cid)
            self.server = quic
            self.routes[header.destination_cid] = quic
            self.routes[quic.host_cid] = quic
        if quic is not None:
            quic.receive_datagram(data, CLIENT_ADDR, now=self.now)

    def _collect(self) -> None:
        self.client_events += drain(self.client)
        if self.server is not None:
            for ev in drain(self.server):
                if isinstance(ev, events.ConnectionIdIssued):
                    self.routes[ev.connection_id] = self.server
                elif isinstance(ev, events.ConnectionIdRetired):
                    del self.routes[ev.connection_id]
                self.server_events.append(ev)

    def _lose(self, batch: list[Any]) -> list[Any]:
        kept = []
        for item in batch:
            if self.loss and self.rng.random() < self.loss:
                self.dropped += 1
            else:
                kept.append(item)
        if self.reorder:
            self.rng.shuffle(kept)
        return kept

    def step(self) -> bool:
        """Move one round of datagrams each way; True if any moved."""
        moved = False
        for data, addr in self._lose(self.client.datagrams_to_send(now=self.now)):
            assert addr == SERVER_ADDR
            self._to_server(data)
            moved = True
        self._collect()
        if self.server is not None:
            for data, addr in self._lose(self.server.datagrams_to_send(now=self.now)):
                assert addr == CLIENT_ADDR
                self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
                moved = True
        self._collect()
        return moved

    def advance(self) -> None:
        """Jump the clock to the earliest timer and run it."""
        timers = [t for t in (self.client.get_timer(),
                              self.server.get_timer() if self.server else None) if t is not None]
        if not timers:
            self.now += 1.0
            return
        self.now = max(self.now, min(timers))
        for quic in (self.client, self.server):
            if quic is not None:
                timer = quic.get_timer()
                if timer is not None and timer <= self.now:
                    quic.handle_timer(now=self.now)
        self._collect()

    def run_until(self, predicate: Callable[[], bool], what: str = "condition",
                  max_rounds: int = MAX_ROUNDS) -> None:
        for _ in range(max_rounds):
            if predicate():
                return
            if not self.step():
                self.advance()
        raise AssertionError(f"{what} not reached in {max_rounds} rounds (t={self.now:.3f})")

    def close(self) -> None:
        pass


class ThreadedPair:
    """The same two connections on the threaded engine: two loopback endpoints, each with
    its network thread, driven by QuicEndpoint.process() with bounded waits."""

    kind = "threaded"

    def __init__(self, client_config: Any, server_config: Any) -> None:
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.server_ep = QuicEndpoint(server_config, "127.0.0.1", 0)
        accepted: list[QuicConnection] = []
        self.server_ep.on_accept = accepted.append
        self.server_ep.start()
        self._accepted = accepted
        self.client_ep = QuicEndpoint(client_config, "127.0.0.1", 0)
        self.client = self.client_ep.connect("127.0.0.1", self.server_ep.local_port, "localhost")
        self.server: Optional[QuicConnection] = None

    def _collect(self) -> None:
        for ep in (self.server_ep, self.client_ep):
            ep.process()
        if self.server is None and self._accepted:
            self.server = self._accepted[0]
        self.client_events += drain(self.client)
        if self.server is not None:
            self.server_events += drain(self.server)

    def run_until(self, predicate: Callable[[], bool], what: str = "condition",
                  timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._collect()
            if predicate():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what} not reached within {timeout} s")
            select.select([self.server_ep.fileno, self.client_ep.fileno], [], [],
                          min(left, 0.05))

    def close(self) -> None:
        self.client_ep.close()
        self.server_ep.close()


def _has(evs: list[Any], kind: type, pred: Callable[[Any], bool] = lambda e: True) -> bool:
    return any(isinstance(e, kind) and pred(e) for e in evs)


@pytest.fixture(params=["sansio", "threaded"])
def pair(request, client_config, server_config):
    def make(**overrides: Any) -> Any:
        cc = client_config(**overrides)
        sc = server_config(**overrides)
        p = SansioPair(cc, sc) if request.param == "sansio" else ThreadedPair(cc, sc)
        made.append(p)
        p.run_until(lambda: _has(p.client_events, events.HandshakeCompleted)
                    and _has(p.server_events, events.HandshakeCompleted), "handshake")
        return p

    made: list[Any] = []
    yield make
    for p in made:
        p.close()


# ----------------------------------------------------------------- shared connection checks


def test_handshake_negotiates_alpn(pair):
    p = pair()
    for evs in (p.client_events, p.server_events):
        done = [e for e in evs if isinstance(e, events.HandshakeCompleted)]
        assert done and done[0].alpn_protocol == "test"
        assert _has(evs, events.ProtocolNegotiated, lambda e: e.alpn_protocol == "test")


def _stream_bytes(evs: list[Any], stream_id: int) -> tuple[bytes, bool]:
    data = b"".join(e.data for e in evs
                    if isinstance(e, events.StreamDataReceived) and e.stream_id == stream_id)
    fin = any(e.end_stream for e in evs
              if isinstance(e, events.StreamDataReceived) and e.stream_id == stream_id)
    return data, fin


def test_streams_both_ways(pair):
    p = pair()
    payload = bytes(random.Random(7).getrandbits(8) for _ in range(200_000))
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, payload, end_stream=True)
    p.run_until(lambda: _stream_bytes(p.server_events, sid) == (payload, True), "request")
    p.server.send_stream_data(sid, payload[::-1], end_stream=True)
    uni = p.server.get_next_available_stream_id(is_unidirectional=True)
    assert uni == 3
    p.server.send_stream_data(uni, b"server push", end_stream=True)
    p.run_until(lambda: _stream_bytes(p.client_events, sid) == (payload[::-1], True)
                and _stream_bytes(p.client_events, uni) == (b"server push", True), "replies")


def test_datagrams_both_ways(pair):
    p = pair(max_datagram_frame_size=65536)
    p.client.send_datagram_frame(b"ping-datagram")
    p.server.send_datagram_frame(b"pong-datagram")
    p.run_until(lambda: _has(p.server_events, events.DatagramFrameReceived,
                             lambda e: e.data == b"ping-datagram")
                and _has(p.client_events, events.DatagramFrameReceived,
                         lambda e: e.data == b"pong-datagram"), "datagrams")


def test_ping_is_acknowledged(pair):
    p = pair()
    p.client.send_ping(12345)
    p.server.send_ping(678)
    p.run_until(lambda: _has(p.client_events, events.PingAcknowledged, lambda e: e.uid == 12345)
                and _has(p.server_events, events.PingAcknowledged, lambda e: e.uid == 678),
                "ping acknowledgements")


def test_close_with_code_and_reason(pair):
    p = pair()
    p.client.close(error_code=0x1234, reason_phrase="done here")
    p.run_until(lambda: _has(p.server_events, events.ConnectionTerminated)
                and _has(p.client_events, events.ConnectionTerminated), "termination")
    for evs in (p.server_events, p.client_events):
        ev = [e for e in evs if isinstance(e, events.ConnectionTerminated)][0]
        assert (ev.error_code, ev.frame_type, ev.reason_phrase) == (0x1234, None, "done here")


def test_key_update_keeps_the_connection_working(pair):
    p = pair()
    for round_no in range(3):
        p.client.request_key_update()
        sid = p.client.get_next_available_stream_id()
        p.client.send_stream_data(sid, b"after key update %d" % round_no, end_stream=True)
        p.run_until(lambda sid=sid: _stream_bytes(p.server_events, sid)[1], "data after key update")
        assert _stream_bytes(p.server_events, sid)[0] == b"after key update %d" % round_no
    assert not p.client.closed and not p.server.closed


# ----------------------------------------------------------------- sans-IO only


@pytest.fixture
def sansio(client_config, server_config):
    def make(*, loss: float = 0.0, reorder: bool = False, seed: int = 1,
             handshake: bool = True, **overrides: Any) -> SansioPair:
        p = SansioPair(client_config(**overrides), server_config(**overrides), loss=loss,
                       reorder=reorder, seed=seed)
        if handshake:
            p.run_until(lambda: _has(p.client_events, events.HandshakeCompleted)
                        and _has(p.server_events, events.HandshakeCompleted), "handshake")
        return p

    return make


def test_user_built_connection_is_the_sans_io_one(client_config):
    quic = QuicConnection(configuration=client_config())
    assert isinstance(quic, SansioQuicConnection) and isinstance(quic, QuicConnection)
    assert len(quic.host_cid) == 8
    assert len(quic.original_destination_connection_id) == 8
    assert quic.get_timer() is None and quic.datagrams_to_send(now=0.0) == []


def test_aioquic_argument_errors(client_config, server_config):
    with pytest.raises(ValueError, match="original_destination_connection_id"):
        QuicConnection(configuration=client_config(), original_destination_connection_id=b"x" * 8)
    with pytest.raises(ValueError, match="original_destination_connection_id is required"):
        QuicConnection(configuration=server_config())
    server = QuicConnection(configuration=server_config(),
                            original_destination_connection_id=b"x" * 8)
    with pytest.raises(RuntimeError):
        server.connect(SERVER_ADDR, now=0.0)
    client = QuicConnection(configuration=client_config())
    client.connect(SERVER_ADDR, now=0.0)
    with pytest.raises(RuntimeError):
        client.connect(SERVER_ADDR, now=0.0)


@pytest.mark.parametrize("length", [8, 12, 20])
def test_connection_ids_have_the_configured_length_and_route(sansio, length):
    p = sansio(connection_id_length=length)
    assert len(p.client.host_cid) == length and len(p.server.host_cid) == length
    issued = [e.connection_id for e in p.server_events
              if isinstance(e, events.ConnectionIdIssued)]
    assert issued and all(len(c) == length for c in issued)
    assert len(set(issued)) == len(issued) and p.server.host_cid not in issued
    assert _has(p.client_events, events.ConnectionIdIssued)
    # every short-header packet the client sends names one of the server's routed IDs
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, b"x" * 5000, end_stream=True)
    for data, _ in p.client.datagrams_to_send(now=p.now):
        header = pull_quic_header(Buffer(data=data), host_cid_length=length)
        assert header.packet_type == QuicPacketType.ONE_RTT
        assert p.routes[header.destination_cid] is p.server
        p._to_server(data)
    p.run_until(lambda: _stream_bytes(p.server_events, sid)[1], "routed data")


def test_transfer_under_loss_and_reordering(sansio):
    p = sansio(loss=0.15, reorder=True, seed=3)
    payload = random.Random(5).randbytes(300_000) if hasattr(random.Random, "randbytes") \
        else bytes(random.Random(5).getrandbits(8) for _ in range(300_000))
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, payload, end_stream=True)
    p.run_until(lambda: _stream_bytes(p.server_events, sid) == (payload, True),
                "lossy transfer")
    assert p.dropped > 0


class DelayedPair(SansioPair):
    """A SansioPair whose datagrams take ``one_way`` seconds each way (a path with an RTT),
    with random loss applied per datagram: the clock jumps to the next delivery or timer."""

    def __init__(self, *args: Any, one_way: float, **kwargs: Any) -> None:
        self.one_way = one_way
        self.wire: list[tuple[float, int, str, bytes]] = []  # (due, order, to, datagram)
        self.order = 0
        super().__init__(*args, **kwargs)

    def step(self) -> bool:
        moved = False
        for to, quic in (("server", self.client), ("client", self.server)):
            if quic is None:
                continue
            for data, _ in self._lose(quic.datagrams_to_send(now=self.now)):
                self.order += 1
                self.wire.append((self.now + self.one_way, self.order, to, data))
                moved = True
        self.wire.sort()
        while self.wire and self.wire[0][0] <= self.now:
            _, _, to, data = self.wire.pop(0)
            if to == "server":
                self._to_server(data)
            else:
                self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
            moved = True
        self._collect()
        return moved

    def advance(self) -> None:
        due = [t for t in (self.client.get_timer(),
                           self.server.get_timer() if self.server else None) if t is not None]
        if self.wire:
            due.append(self.wire[0][0])
        self.now = max(self.now, min(due)) if due else self.now + 1.0
        for quic in (self.client, self.server):
            if quic is not None:
                timer = quic.get_timer()
                if timer is not None and timer <= self.now:
                    quic.handle_timer(now=self.now)
        self._collect()


def _upload_time(client_config, server_config, window_start: int, loss: float,
                 send_ring: int = 4 << 20) -> float:
    """Simulated seconds for the server to receive 4 MiB on one stream over a 20 ms RTT
    path with ``loss``, its stream windows starting at ``window_start`` (0: the whole
    max_stream_data), the client's stream send ring ``send_ring`` bytes."""
    size = 4 << 20
    p = DelayedPair(client_config(stream_buffer_size=send_ring),
                    server_config(max_stream_data=8 << 20, stream_window_start=window_start),
                    loss=loss, seed=7, one_way=0.010)
    p.run_until(lambda: _has(p.client_events, events.HandshakeCompleted)
                and _has(p.server_events, events.HandshakeCompleted), "handshake")
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, bytes(size), end_stream=True)
    t0 = p.now

    def received() -> int:
        return sum(len(e.data) for e in p.server_events
                   if isinstance(e, events.StreamDataReceived) and e.stream_id == sid)

    p.run_until(lambda: received() == size, "upload", max_rounds=200_000)
    return p.now - t0


@pytest.mark.parametrize("loss", [0.0, 0.01])
def test_receive_window_keeps_up_with_the_sender_on_a_long_path(client_config,
                                                                 server_config, loss):
    """A stream window that starts small (64 KiB) grows as fast as a fast reader on a
    20 ms path needs it: the upload takes hardly longer than with the whole 8 MiB window
    from the start (1.04x at 1 % loss; doubling alone, ngtcp2's auto-tuning, took 1.6x)."""
    full = _upload_time(client_config, server_config, 0, loss)
    small = _upload_time(client_config, server_config, 64 << 10, loss)
    assert small < 1.3 * full, (small, full)


def test_send_ring_is_refilled_before_the_engine_runs_dry(client_config, server_config):
    """With a send ring smaller than the path's bandwidth-delay product, the writer is
    woken when the engine is about to run out of bytes, not only once half the ring is
    acknowledged: 4 MiB through a 256 KiB ring on a 20 ms path takes about 20 RTTs (16
    would be a full ring per RTT; waking at half took 28)."""
    t = _upload_time(client_config, server_config, 0, 0.0, send_ring=256 << 10)
    assert t < 24 * 0.020, t


def test_lost_first_initial_is_resent_after_the_timer(sansio, client_config, server_config):
    p = SansioPair(client_config(), server_config())
    first = p.client.datagrams_to_send(now=p.now)
    assert len(first) == 1 and len(first[0][0]) >= 1200  # padded Initial, then "lost"
    assert p.server is None
    timer = p.client.get_timer()
    assert timer is not None and timer > p.now
    sent_at = p.now
    p.client.handle_timer(now=p.now + 1e-9)  # too early for a retransmission
    assert p.client.datagrams_to_send(now=p.now + 1e-9) == []
    again: list = []
    for _ in range(10):  # pacing and ACK timers may come first; the PTO resends
        timer = p.client.get_timer()
        assert timer is not None
        p.now = timer
        p.client.handle_timer(now=p.now)
        again = p.client.datagrams_to_send(now=p.now)
        if again:
            break
    assert again, "the Initial must be sent again once the timer fired"
    assert p.now - sent_at > 0.3  # a probe timeout (the initial RTT is 333 ms), not at once
    for data, _ in again:
        p._to_server(data)
    p.run_until(lambda: _has(p.client_events, events.HandshakeCompleted), "handshake")


def test_idle_timeout_after_a_time_jump(sansio):
    p = sansio(idle_timeout=5.0)
    p.now += 60.0  # nothing was heard for a minute
    p.client.handle_timer(now=p.now)
    p.server.handle_timer(now=p.now)
    p.run_until(lambda: _has(p.client_events, events.ConnectionTerminated)
                and _has(p.server_events, events.ConnectionTerminated), "idle timeout")
    assert p.client.get_timer() is None and p.server.get_timer() is None
    assert p.client.datagrams_to_send(now=p.now) == []


def test_garbage_never_hurts(sansio, server_config):
    rng = random.Random(11)
    lonely = QuicConnection(configuration=server_config(),
                            original_destination_connection_id=b"x" * 8)
    for size in (0, 1, 5, 40, 1200, 1500):
        lonely.receive_datagram(bytes(rng.getrandbits(8) for _ in range(size)), CLIENT_ADDR,
                                now=1.0)
    assert lonely.datagrams_to_send(now=1.0) == [] and lonely.get_timer() is None
    p = sansio()
    for size in (1, 30, 1200):
        junk = bytes([0x40]) + p.server.host_cid + bytes(rng.getrandbits(8) for _ in range(size))
        p.server.receive_datagram(junk, CLIENT_ADDR, now=p.now)
        p.client.receive_datagram(junk, SERVER_ADDR, now=p.now)
    sid = p.client.get_next_available_stream_id()
    p.client.send_stream_data(sid, b"still fine", end_stream=True)
    p.run_until(lambda: _stream_bytes(p.server_events, sid) == (b"still fine", True), "data")


def test_free_ends_the_connection_safely(sansio):
    p = sansio()
    p.client.free()
    ev = drain(p.client)[-1]
    assert isinstance(ev, events.ConnectionTerminated) and ev.reason_phrase == "connection released"
    with pytest.raises(ConnectionError):
        p.client.send_stream_data(0, b"late")
    with pytest.raises(ConnectionError):
        p.client.send_ping(1)
    p.client.close()
    p.client.reset_stream(0, 1)
    p.client.receive_datagram(b"\x40" * 50, SERVER_ADDR, now=p.now)
    p.client.handle_timer(now=p.now)
    assert p.client.datagrams_to_send(now=p.now) == [] and p.client.get_timer() is None
    p.client.free()


def test_server_connection_ignores_a_non_initial_first_datagram(server_config):
    server = QuicConnection(configuration=server_config(),
                            original_destination_connection_id=b"y" * 8)
    short = bytes([0x41]) + b"y" * 8 + bytes(60)
    server.receive_datagram(short, CLIENT_ADDR, now=0.0)
    assert server.next_event() is None and server.datagrams_to_send(now=0.0) == []


# ----------------------------------------------------------------- header helpers, Buffer


def test_pull_quic_header_initial_and_version_negotiation(client_config):
    client = QuicConnection(configuration=client_config())
    client.connect(SERVER_ADDR, now=0.0)
    data = client.datagrams_to_send(now=0.0)[0][0]
    header = pull_quic_header(Buffer(data=data), host_cid_length=8)
    assert header.version == QuicProtocolVersion.VERSION_1
    assert header.packet_type == PACKET_TYPE_INITIAL == QuicPacketType.INITIAL
    assert header.destination_cid == client.original_destination_connection_id
    assert header.source_cid == client.host_cid
    assert header.token == b"" and 0 < header.packet_length <= len(data)
    vn = encode_quic_version_negotiation(source_cid=header.destination_cid,
                                         destination_cid=header.source_cid,
                                         supported_versions=[0x1, 0x6B3343CF])
    parsed = pull_quic_header(Buffer(data=vn), host_cid_length=8)
    assert parsed.packet_type == QuicPacketType.VERSION_NEGOTIATION
    assert parsed.version == 0 and parsed.supported_versions == [0x1, 0x6B3343CF]
    assert (parsed.destination_cid, parsed.source_cid) == (client.host_cid,
                                                          client.original_destination_connection_id)


@pytest.mark.parametrize("data", [b"", b"\xc0", b"\xc0\x00\x00\x00\x01\x15" + b"x" * 21,
                                  b"\xc0\x00\x00\x00\x01\x08" + b"x" * 8 + b"\x00\x00\x44",
                                  b"\x00" + b"x" * 20])
def test_pull_quic_header_rejects_malformed_with_value_error(data):
    with pytest.raises(ValueError):
        pull_quic_header(Buffer(data=data), host_cid_length=8)


def test_buffer_serves_aioquic_api():
    buf = Buffer(capacity=32)
    buf.push_uint8(1)
    buf.push_uint16(0x203)
    buf.push_uint32(0x4050607)
    buf.push_uint64(0x8090A0B0C0D0E0F)
    buf.push_uint_var(16383)
    buf.push_bytes(b"ab")
    assert buf.tell() == 19 and buf.capacity >= 32
    data = buf.data
    reader = Buffer(data=data)
    assert (reader.pull_uint8(), reader.pull_uint16(), reader.pull_uint32(),
            reader.pull_uint64(), reader.pull_uint_var(), reader.pull_bytes(2)) == \
        (1, 0x203, 0x4050607, 0x8090A0B0C0D0E0F, 16383, b"ab")
    assert reader.eof()
    reader.seek(1)
    assert reader.pull_uint16() == 0x203
    assert [size_uint_var(v) for v in (0, 63, 64, 16383, 16384, 2**30, 2**62 - 1)] == \
        [1, 1, 2, 2, 4, 8, 8]
    with pytest.raises(ValueError):
        Buffer(data=b"").pull_uint8()  # BufferReadError is a ValueError, as in aioquic
    with pytest.raises(BufferWriteError):
        Buffer(data=b"x").push_uint8(1)
    assert issubclass(BufferWriteError, BufferReadError)


def test_connections_share_credentials_and_reload_a_changed_cafile(sansio, certs, tmp_path,
                                                                   client_config):
    """Sans-IO connections with the same TLS material borrow one loaded copy of it (a
    server parses its key once, not per client); a CA file that changed on disk is read
    again, so a client configured with a new CA does not keep trusting the old one."""
    from aiopquic.quic import sansio as sansio_module

    sansio_module._CREDS_CACHE.clear()
    first = sansio()
    second = sansio()
    assert first.server is not None and second.server is not None
    assert first.server._engine._creds is second.server._engine._creds
    assert first.client._engine._creds is second.client._engine._creds
    assert first.server._engine._creds is not first.client._engine._creds

    ca = tmp_path / "ca.pem"
    ca.write_bytes(open(certs.ca, "rb").read())
    cfg = client_config(cafile=str(ca))
    a = QuicConnection(configuration=cfg)
    ca.write_bytes(open(certs.ca, "rb").read() + b"\n")  # new size: changed on disk
    b = QuicConnection(configuration=cfg)
    assert a._engine._creds is not b._engine._creds
    ca.write_bytes(b"not a certificate")
    os.utime(ca, ns=(1, 1))
    with pytest.raises(Exception, match="cafile"):
        QuicConnection(configuration=cfg)
