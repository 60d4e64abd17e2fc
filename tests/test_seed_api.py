"""aiopquic 0.6.1's API on this engine: the drained send and its backpressure primitives,
stream-id allocation, wrong-direction resets, datagram return values, introspection, the
protocol extras, server close, serve_dispatch and the low-level TransportContext.

Everything runs over real UDP on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from quic_helpers import (
    HOST,
    HoldingSink,
    KiB,
    Pattern,
    PatternVerifier,
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic._binding import _transport as tc
from aiopquic.asyncio import DualStackServer, serve_dispatch
from aiopquic.asyncio.webtransport import WebTransportProtocol
from aiopquic.quic.configuration import MIN_STREAM_BUFFER_SIZE
from aiopquic.quic.connection import PeerAddress, QuicConnectionError
from aiopquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class GatedSink:
    """Stream handler that reads nothing until ``gate`` is set, then reads every stream to
    EOF into ``received`` (so a sender meets flow control first)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received: dict[int, bytearray] = {}
        self.done: asyncio.Queue[int] = asyncio.Queue()
        self.writers: list[Any] = []

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        sid = writer.get_extra_info("stream_id")
        buf = self.received.setdefault(sid, bytearray())

        async def run() -> None:
            await self.gate.wait()
            while True:
                chunk = await reader.read(64 * KiB)
                if not chunk:
                    break
                buf.extend(chunk)
            self.done.put_nowait(sid)

        asyncio.ensure_future(run())


async def test_drained_send_bounds_memory_and_delivers(server_config, client_config):
    """send_stream_data_drained parks while the stream's buffer is full (the peer reads
    nothing), holding at most one ring plus one write, and every byte arrives in order once
    the peer reads."""
    sink = GatedSink()
    chunk, total = 16 * KiB, 1024 * KiB
    async with running_server(server_config(max_stream_data=128 * KiB, max_data=256 * KiB),
                              stream_handler=sink) as server:
        cfg = client_config(stream_buffer_size=MIN_STREAM_BUFFER_SIZE)
        async with client(server.local_port, cfg) as protocol:
            quic = protocol._quic
            sid = quic.get_next_available_stream_id()
            pattern = Pattern(seed=7)
            most = 0
            with anyio.fail_after(30):
                sent = 0
                while sent < total:
                    await quic.send_stream_data_drained(sid, pattern.slice(sent, chunk),
                                                        end_stream=sent + chunk >= total)
                    sent += chunk
                    used = quic.tx_data_ring_used(sid)
                    most = max(most, used)
                    if used >= MIN_STREAM_BUFFER_SIZE // 2:
                        sink.gate.set()  # backpressure reached: now let the peer read
                assert sink.gate.is_set(), "the buffer never filled: no backpressure seen"
                assert await sink.done.get() == sid
            assert most <= MIN_STREAM_BUFFER_SIZE + chunk, most
            verifier = PatternVerifier(pattern)
            verifier.feed(bytes(sink.received[sid]))
            assert verifier.ok and verifier.offset == total


async def test_drain_pending_wakes_on_progress(server_config, client_config):
    """aiomoqt's clear-arm-recheck-wait loop over tx_data_ring_used / set_tx_data_drain_pending
    / get_tx_data_drain_event ends once the peer acknowledges, in few wake-ups (no spin)."""
    sink = HoldingSink()  # reads, never answers: the stream stays open our way
    async with running_server(server_config(), stream_handler=sink) as server:
        async with client(server.local_port, client_config()) as protocol:
            quic = protocol._quic
            sid = quic.get_next_available_stream_id()
            quic.send_stream_data(sid, b"x" * (256 * KiB))
            assert quic.tx_data_ring_used(sid) > 0
            low = 0
            ev = quic.get_tx_data_drain_event(sid)
            wakes = 0
            with anyio.fail_after(20):
                while quic.tx_data_ring_used(sid) > low:
                    ev.clear()
                    quic.set_tx_data_drain_pending(sid)
                    if quic.tx_data_ring_used(sid) <= low:
                        quic.clear_tx_data_drain_pending(sid)
                        break
                    await ev.wait()
                    wakes += 1
            assert quic.tx_data_ring_used(sid) == 0
            assert 0 < wakes < 200, wakes
            assert quic.tx_sent_bytes(sid) == 256 * KiB
            stats = quic.get_stream_buf_stats(sid)
            assert stats == (256 * KiB, 256 * KiB, 0, 0)
            assert quic.get_stream_buf_stats(sid + 400) is None
            assert quic.tx_event_ring_fill() == 0.0


def park_writer(quic: Any, sid: int) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A task that fills ``sid`` until bytes queue in Python (the peer reads nothing), sets
    the returned event and parks in send_stream_data_drained for ever."""
    parked = asyncio.Event()

    async def produce() -> None:
        while not quic.stream_send_pending(sid):
            quic.send_stream_data(sid, b"y" * (16 * KiB))
        parked.set()  # the test runs once the call below has parked
        while True:
            await quic.send_stream_data_drained(sid, b"z" * (16 * KiB))

    return asyncio.ensure_future(produce()), parked


async def test_drained_send_raises_once_closed(server_config, client_config):
    """A producer parked in send_stream_data_drained wakes with QuicConnectionError when the
    peer closes the connection, and later calls raise it at once; bad thresholds raise
    ValueError."""
    sink = GatedSink()  # never opened: the client's writes fill up
    servers = ProtocolCollector()
    async with running_server(server_config(max_stream_data=64 * KiB, max_data=64 * KiB),
                              stream_handler=sink, create_protocol=servers) as server:
        cfg = client_config(stream_buffer_size=MIN_STREAM_BUFFER_SIZE)
        async with client(server.local_port, cfg) as protocol:
            quic = protocol._quic
            sid = quic.get_next_available_stream_id()
            with pytest.raises(ValueError, match="hard_wait_at"):
                await quic.send_stream_data_drained(sid, b"x", hard_wait_at=2)
            server_proto = await servers.next()

            task, parked = park_writer(quic, sid)
            with anyio.fail_after(10):
                await parked.wait()
            assert not task.done()
            ev = quic.get_tx_data_drain_event(sid)
            server_proto.close(error_code=7, reason_phrase="bye")
            with anyio.fail_after(10):
                with pytest.raises(QuicConnectionError):
                    await task
            assert ev.is_set()
            with pytest.raises(QuicConnectionError):
                await quic.send_stream_data_drained(sid, b"z")
            assert quic.path_quality() == {}
            assert quic.peer_transport_parameters is None


async def test_stream_ids_allocated_and_wrong_direction_dropped(server_config, client_config):
    """get_next_available_stream_id takes the id (two calls, two ids, both usable);
    reset_stream on the peer's uni stream and stop_stream on our own uni stream are dropped
    and counted instead of raising."""
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        async with client(server.local_port, client_config(),
                          create_protocol=RecordingProtocol) as protocol:
            quic = protocol._quic
            a = quic.get_next_available_stream_id()
            b = quic.get_next_available_stream_id()
            u = quic.get_next_available_stream_id(is_unidirectional=True)
            assert (a, b, u) == (0, 4, 2)
            quic.send_stream_data(b, b"second", end_stream=True)
            quic.send_stream_data(a, b"first", end_stream=True)
            quic.send_stream_data(u, b"uni", end_stream=True)
            quic.stop_stream(u, 1)  # our own uni stream: nothing to stop
            assert quic.wrong_direction_dropped == 1
            server_proto = await servers.next()
            got: dict[int, bytes] = {}
            with anyio.fail_after(10):
                while len(got) < 3:
                    ev = await server_proto.wait_event(StreamDataReceived,
                                                       lambda e: e.end_stream)
                    got[ev.stream_id] = ev.data
            assert got == {0: b"first", 4: b"second", 2: b"uni"}
            squic = server_proto._quic
            squic.reset_stream(2, 5)  # the client's uni stream: we cannot send on it
            assert squic.wrong_direction_dropped == 1
            with pytest.raises(ValueError, match="stream_id"):
                quic.reset_stream(-1, 0)  # bad ids still raise


async def test_datagrams_and_introspection(server_config, client_config):
    """send_datagram_frame returns the bytes accepted; peer_address is a tuple and a call;
    local_address, _negotiated_alpn, path_quality, transport parameters and
    max_datagram_payload report the connection."""
    servers = ProtocolCollector()
    async with running_server(server_config(max_datagram_frame_size=1200),
                              create_protocol=servers) as server:
        async with client(server.local_port,
                          client_config(max_datagram_frame_size=1200)) as protocol:
            quic = protocol._quic
            assert quic.send_datagram_frame(b"hello") == 5
            assert quic.get_datagram_tx_drain_event().is_set()
            assert quic.peer_address == (HOST, server.local_port)
            assert quic.peer_address() == (HOST, server.local_port)
            assert isinstance(quic.peer_address, PeerAddress)
            local = quic.local_address()
            assert local is not None and local[0] == HOST and local[1] > 0
            assert quic._negotiated_alpn(0) == "test"
            assert quic.path_quality() == {}  # no snapshot yet: asks for one
            await protocol.get_stats()  # answered after the request path_quality made
            pq = quic.path_quality()
            assert pq["rtt"] > 0 and pq["cwin"] > 0 and pq["bytes_sent"] > 0, pq
            assert quic.bytes_sent > 0 and quic.bytes_received > 0
            assert quic.peer_transport_parameters["max_datagram_frame_size"] == 1200
            local_tp = quic.local_transport_parameters
            assert local_tp is not None and local_tp["max_datagram_frame_size"] == 1200
            assert set(quic.connection_ids) == {"local", "remote", "initial"}
            assert 0 < quic.max_datagram_payload() <= 1200
            server_proto = await servers.next()
            assert server_proto._quic.peer_address()[0] == HOST


async def test_protocol_extras(server_config, client_config):
    """aclose() closes and waits; wait_created() returns for a live connection and raises
    ConnectionError for one that never connected; ``async with`` closes on exit."""
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        async with client(server.local_port, client_config(),
                          create_protocol=RecordingProtocol) as protocol:
            await protocol.wait_created()
            server_proto = await servers.next()
            with anyio.fail_after(10):
                await protocol.aclose(error_code=9)
            assert protocol._quic.closed
            ev = await server_proto.wait_event(ConnectionTerminated, timeout=10)
            assert ev.error_code == 9
        async with client(server.local_port, client_config(),
                          create_protocol=RecordingProtocol) as protocol:
            with anyio.fail_after(10):
                async with protocol as same:
                    assert same is protocol
            assert protocol._quic.closed


async def test_server_close_closes_connections(server_config, client_config):
    """After QuicServer.close() its connections say closed, their protocols got
    ConnectionTerminated and wait_closed() returns, a writer parked on a full stream wakes,
    and every later call raises QuicConnectionError (a ConnectionError) or does nothing --
    never a low-level error."""
    servers = ProtocolCollector()
    sink = GatedSink()
    async with client_ctx(server_config, client_config, servers, sink) as (server, protocol):
        server_proto = await servers.next()
        squic = server_proto._quic
        sid = squic.get_next_available_stream_id()

        task, parked = park_writer(squic, sid)
        with anyio.fail_after(10):
            await parked.wait()
        assert not task.done()
        server.close()
        assert squic.closed
        with anyio.fail_after(5):
            await server_proto.wait_closed()
            with pytest.raises(QuicConnectionError):
                await task
        assert any(isinstance(e, ConnectionTerminated) for e in server_proto.seen)
        with pytest.raises(QuicConnectionError):
            squic.send_stream_data(sid, b"late")
        with pytest.raises(QuicConnectionError):
            squic.send_datagram_frame(b"late")
        with pytest.raises(QuicConnectionError):
            squic.send_ping(1)
        with pytest.raises(QuicConnectionError):
            squic.request_key_update()
        squic.reset_stream(sid, 1)  # nothing left to reset: no-op
        squic.set_stream_priority(sid, 1)
        squic.close()
        squic.set_tx_data_drain_pending(sid)
        assert squic.get_tx_data_drain_event(sid).is_set()
        assert squic.path_quality() == {}
        assert squic.local_address() is None
        with pytest.raises(QuicConnectionError):
            await server_proto.create_stream()
        # the client learns it too (CONNECTION_CLOSE "endpoint closed")
        with anyio.fail_after(10):
            await protocol.wait_closed()


def client_ctx(server_config: Any, client_config: Any, servers: Any, sink: Any) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run() -> Any:
        async with running_server(server_config(), create_protocol=servers,
                                  stream_handler=sink) as server:
            cfg = client_config(max_stream_data=64 * KiB, max_data=64 * KiB)
            async with client(server.local_port, cfg) as protocol:
                yield server, protocol

    return run()


async def test_serve_dispatch_routes_by_alpn(server_config, client_config):
    """One UDP port: an ``h3`` connection gets the WebTransport stack, a raw ALPN the raw
    protocol (echo over it works); a configuration listing ``h3`` itself is refused."""
    raw_protos = ProtocolCollector()

    async def handler(session: Any) -> None:
        return None

    with pytest.raises(ValueError, match="'h3' is added here"):
        await serve_dispatch(HOST, 0, configuration=server_config(alpn_protocols=["h3"]),
                             wt_path="/moq", wt_handler=handler)
    with pytest.raises(ValueError, match="wt_path"):
        await serve_dispatch(HOST, 0, configuration=server_config(), wt_path="moq",
                             wt_handler=handler)
    server = await serve_dispatch(HOST, 0, configuration=server_config(alpn_protocols=["raw-1"]),
                                  create_protocol=raw_protos, wt_path="/moq",
                                  wt_handler=handler)
    assert isinstance(server, DualStackServer)
    try:
        port = server.local_port
        async with client(port, client_config(alpn_protocols=["raw-1"])) as protocol:
            assert protocol._quic.alpn_protocol == "raw-1"
            raw_server = await raw_protos.next()
            assert type(raw_server) is RecordingProtocol
            raw_server._stream_handler = echo_stream_handler
            with anyio.fail_after(10):
                assert await echo_roundtrip(protocol, b"ping" * 1000) == b"ping" * 1000
        async with client(port, client_config(alpn_protocols=["h3"],
                                              max_datagram_frame_size=65536)) as protocol:
            assert protocol._quic.alpn_protocol == "h3"
            with anyio.fail_after(10):
                while not any(isinstance(p, WebTransportProtocol) for p in server.protocols):
                    await protocol.get_stats()  # a round trip; the server has accepted it
            assert raw_protos.queue.empty()  # the h3 connection did not reach the raw factory
    finally:
        server.close()


async def _drain_until(ctxs: list[tc.TransportContext], want: Any, timeout: float = 10.0
                       ) -> list[Any]:
    """drain_rx every context (woken by their eventfds) until ``want(events)`` is true."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    fds = [c.eventfd for c in ctxs]
    for fd in fds:
        loop.add_reader(fd, wake.set)
    seen: list[Any] = []
    try:
        with anyio.fail_after(timeout):
            while True:
                wake.clear()
                for c in ctxs:
                    seen.extend((c, ev) for ev in c.drain_rx())
                if want(seen):
                    return seen
                await wake.wait()
    finally:
        for fd in fds:
            loop.remove_reader(fd)


async def test_transport_context_readme_example(certs):
    """0.6.1's README example: a server and a client TransportContext, a connection, one
    stream each way of the events (READY on both sides, data with FIN at the server)."""
    server = tc.TransportContext()
    server.start(port=0, cert_file=certs.cert, key_file=certs.key, alpn="moq-00",
                 is_client=False, host=HOST)
    client_tc = tc.TransportContext()
    try:
        with pytest.raises(RuntimeError, match="not started"):
            client_tc.create_client_connection(HOST, 1)
        client_tc.start(port=0, alpn="moq-00", is_client=True, ca_file=certs.ca)
        with pytest.raises(RuntimeError, match="already started"):
            client_tc.start()
        port = server.endpoints[0].local_port
        cnx = client_tc.create_client_connection(HOST, port, sni="localhost", alpn="moq-00")
        assert cnx > 0
        seen = await _drain_until([server, client_tc], lambda s: sum(
            1 for _, e in s if e[0] == tc.EVT_READY) == 2)
        assert (client_tc, (tc.EVT_ALMOST_READY, 0, None, False, 0, cnx, 0, 0)) in seen
        assert client_tc.get_negotiated_alpn(cnx) == "moq-00"
        client_tc.tx_send_stream(cnx, 0, b"hello over TransportContext", True)
        seen = await _drain_until([server, client_tc], lambda s: any(
            c is server and e[0] == tc.EVT_STREAM_FIN for c, e in s))
        fin = [e for c, e in seen if c is server and e[0] in (tc.EVT_STREAM_DATA,
                                                            tc.EVT_STREAM_FIN)]
        assert b"".join(bytes(e[2]) for e in fin) == b"hello over TransportContext"
        assert client_tc.peer_address(cnx) == (HOST, port)
        # 0.6.1's priority counters: applied to a stream we opened, refused for a peer
        # stream that was never opened
        before = client_tc.counters
        assert before["set_priority_last_err"] == 0
        client_tc.set_stream_priority(cnx, 4, 2)
        client_tc.set_stream_priority(cnx, 1, 2)
        with anyio.fail_after(5):
            while client_tc.counters["set_priority_rejected"] == before["set_priority_rejected"]:
                await asyncio.sleep(0.005)
        after = client_tc.counters
        assert after["set_priority_applied"] == before["set_priority_applied"] + 1
        assert after["set_priority_rejected"] == before["set_priority_rejected"] + 1
        client_tc.push_tx_event(tc.TX_CLOSE, 0, error_code=3, cnx_ptr=cnx)
        seen = await _drain_until([server, client_tc], lambda s: any(
            c is server and e[0] == tc.EVT_APP_CLOSE for c, e in s))
        assert [e[4] for c, e in seen if c is server and e[0] == tc.EVT_APP_CLOSE] == [3]
        with pytest.raises(ValueError, match="wt_path"):
            tc.TransportContext().start(wt_path="/x", is_client=False)
        assert "connections" in server.counters
    finally:
        client_tc.stop()
        server.stop()
    assert not server.started and server.eventfd == -1


async def test_handshake_events_still_reach_protocols(server_config, client_config):
    """on_accept now runs after the handshake event (so the ALPN is known): the server
    protocol still sees HandshakeCompleted, and knows the ALPN at construction."""
    alpns: list[Any] = []

    class Proto(RecordingProtocol):
        def __init__(self, quic: Any, stream_handler: Any = None) -> None:
            alpns.append(quic.alpn_protocol)
            super().__init__(quic, stream_handler=stream_handler)

    servers = ProtocolCollector(Proto)
    async with running_server(server_config(), create_protocol=servers) as server:
        async with client(server.local_port, client_config()):
            server_proto = await servers.next()
            await server_proto.wait_event(HandshakeCompleted)
    assert alpns == ["test"]


async def test_serve_dispatch_without_the_061_wt_server_refuses_h3_only(
        server_config, client_config):
    """With wt_session_factory but no 0.6.1-style WebTransport server in this build, h3
    connections are closed with H3_INTERNAL_ERROR (0x102) naming the reason, while raw QUIC
    on the same port works."""
    from aiopquic.asyncio import webtransport

    if hasattr(webtransport, "dispatch_protocol_factory"):
        pytest.skip("this build has the 0.6.1-style WebTransport server")

    async def handler(session: Any) -> None:
        return None

    server = await serve_dispatch(HOST, 0, configuration=server_config(alpn_protocols=["raw-1"]),
                                  wt_path="/moq", wt_handler=handler,
                                  wt_session_factory=lambda *a, **k: None)
    try:
        async with client(server.local_port, client_config(alpn_protocols=["raw-1"])) as p:
            assert p._quic.alpn_protocol == "raw-1"
        async with client(server.local_port, client_config(alpn_protocols=["h3"]),
                          create_protocol=RecordingProtocol) as p:
            ev = await p.wait_event(ConnectionTerminated, timeout=10)
            assert ev.error_code == 0x102 and "dispatch_protocol_factory" in ev.reason_phrase
    finally:
        server.close()


async def test_server_transport_view(server_config, client_config):
    """server._transport gives 0.6.1's diagnostic counters and a wake fd that tolerates a
    spurious wake; after close it reports the server stopped."""
    import os
    import sys

    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            view = server._transport
            # the echo answers only once the server has accepted the connection
            assert await echo_roundtrip(protocol, b"first") == b"first"
            assert view.started and view.counters["connections"] == 1
            assert view.counters["loop_callbacks"] > 0
            os.write(view.eventfd, (1).to_bytes(8, sys.byteorder))  # a spurious wake
            with anyio.fail_after(10):
                assert await echo_roundtrip(protocol, b"after a kick") == b"after a kick"
    assert not view.started and view.counters == {} and view.eventfd == -1


async def test_transport_parameters_and_connection_ids_match_across_the_connection(
        server_config, client_config):
    """0.6.1's peer_transport_parameters / local_transport_parameters / connection_ids: what
    one side reports as the peer's is what the other reports as its own."""
    servers = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(max_datagram_frame_size=1500, idle_timeout=42),
                              stream_handler=echo_stream_handler,
                              create_protocol=servers) as server:
        async with client(server.local_port, client_config(max_data=3 << 20)) as protocol:
            assert await echo_roundtrip(protocol, b"tp") == b"tp"
            peer = await servers.next()
            ours, theirs = protocol._quic, peer._quic
            assert ours.peer_transport_parameters == theirs.local_transport_parameters
            assert theirs.peer_transport_parameters == ours.local_transport_parameters
            assert ours.peer_transport_parameters["max_datagram_frame_size"] == 1500
            assert ours.peer_transport_parameters["max_idle_timeout"] == 42000
            assert theirs.peer_transport_parameters["initial_max_data"] == 3 << 20
            mine, yours = ours.connection_ids, theirs.connection_ids
            assert mine["initial"] == yours["initial"] and len(mine["initial"]) >= 8
            assert mine["local"] == yours["remote"] and mine["remote"] == yours["local"]
    assert ours.connection_ids is None and ours.peer_transport_parameters is None


def test_subclass_attributes_stay_assignable():
    """Names that were plain attributes stay assignable on a subclass instance, even one made
    without __init__ (aiomoqt's tests build MOQTSessionQuic with object.__new__ and set
    ``_closed`` to their own list): ``_closed``, ``_transport`` and ``_quic._logger`` are made
    on first use now, and their setters keep what is assigned."""
    import logging

    from aiopquic.asyncio.protocol import QuicConnectionProtocol
    from aiopquic.quic.connection import QuicConnection

    class Session(QuicConnectionProtocol):
        pass

    s = object.__new__(Session)
    s._closed = []
    s._closed.append(("code", "reason"))
    assert s._closed == [("code", "reason")]
    marker: Any = object()
    s._transport = marker
    assert s._transport is marker
    quic = object.__new__(QuicConnection)
    adapter = logging.LoggerAdapter(logging.getLogger("x"), {})
    quic._logger = adapter
    assert quic._logger is adapter
