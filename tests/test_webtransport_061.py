"""aiopquic 0.6.1's WebTransport API (WebTransportClient / WebTransportServerSession, the
``_on_event`` hook, stream ids, drain events, datagram counts, WT-Protocol) over real UDP on
127.0.0.1, on the same core as the stream-object API."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import anyio
import pytest
from h3_helpers import HOST

from aiopquic.asyncio.webtransport import (
    _EVT_WT_DATAGRAM,
    _EVT_WT_SESSION_CLOSED,
    _EVT_WT_STREAM_DATA,
    _EVT_WT_STREAM_FIN,
    WT_ALPN_ERROR,
    WebTransportClient,
    WebTransportError,
    WebTransportServerSession,
    WebTransportSessionBase,
    connect_webtransport,
    serve_webtransport,
)
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import (
    WebTransportDatagramReceived,
    WebTransportNewStream,
    WebTransportSessionClosed,
    WebTransportStreamDataReceived,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def echo_061(session: WebTransportSessionBase) -> None:
    """0.6.1-style echo: each new stream is echoed (bidi on itself, uni on a new uni
    stream), datagrams are echoed; returns when the session closes."""
    tasks: set[asyncio.Task[None]] = set()

    async def echo(sid: int) -> None:
        out = sid if not sid & 2 else await session.create_stream(bidir=False)
        async for ev in session.receive_stream_data(sid):
            if isinstance(ev, WebTransportStreamDataReceived):
                await session.send_stream_data_drained(out, ev.data, end_stream=ev.end_stream)
            else:
                return

    async for ev in session.events():
        if isinstance(ev, WebTransportNewStream):
            task = asyncio.ensure_future(echo(ev.stream_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif isinstance(ev, WebTransportDatagramReceived):
            session.send_datagram_frame(ev.data)
    for task in tasks:
        task.cancel()


async def read_stream(session: WebTransportSessionBase, sid: int) -> bytes:
    out = bytearray()
    async for ev in session.receive_stream_data(sid):
        assert isinstance(ev, WebTransportStreamDataReceived), ev
        out += ev.data
    return bytes(out)


async def test_061_client_and_server_echo_streams_and_datagrams(certs):
    sessions: list[WebTransportServerSession] = []

    async def handler(session: WebTransportServerSession) -> None:
        sessions.append(session)
        await echo_061(session)

    server = await serve_webtransport(HOST, 0, "/moq", handler=handler,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(60):
            async with connect_webtransport(HOST, server.local_port, "/moq",
                                            ca_file=certs.ca, sni="localhost") as wt:
                assert isinstance(wt, WebTransportClient)
                assert wt.is_client and wt.role == "client" and wt.session_ready
                assert wt.negotiated_protocol is None
                assert wt.control_stream_id == 0 and wt.cnx_ptr != 0
                assert wt._dispatcher_attached  # 0.6.1's flag: the session holds its connection
                payload = hashlib.sha256(b"061").digest() * 65536  # 2 MiB
                sid = await wt.create_stream(bidir=True)
                reader = asyncio.ensure_future(read_stream(wt, sid))
                for off in range(0, len(payload), 256 * 1024):
                    await wt.send_stream_data_drained(sid, payload[off:off + 256 * 1024])
                wt.send_stream_data(sid, b"", end_stream=True)
                assert await reader == payload
                uni = await wt.create_stream(bidir=False)
                wt.send_stream_data(uni, b"one way", end_stream=True)
                events = wt.events()
                new = await events.__anext__()
                assert isinstance(new, WebTransportNewStream)
                assert await read_stream(wt, new.stream_id) == b"one way"
                assert wt.send_datagram_frame(b"dgram") == 5
                got = await events.__anext__()
                assert isinstance(got, WebTransportDatagramReceived) and got.data == b"dgram"
                assert wt.peer_address() == (HOST, server.local_port)
                view = server._transport  # 0.6.1: the listener's transport diagnostics
                assert view.started and view.eventfd >= 0
                assert view.counters["rx_notify_pending_now"] in (0, 1)
            assert wt.session_closed and wt.cnx_ptr == 0
            assert not wt._dispatcher_attached
        assert len(sessions) == 1 and sessions[0].is_server
        await sessions[0].wait_closed(10)
    finally:
        await server.aclose()
    assert not server._transport.started and server._transport.counters == {}


async def test_061_close_code_reaches_the_peer_and_events_end_with_the_close(certs):
    closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportServerSession) -> None:
        last = None
        async for ev in session.events():
            last = ev
        closed.set_result((last, session._session_close_event))

    server = await serve_webtransport(HOST, 0, "", handler=handler,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(HOST, server.local_port, "", ca_file=certs.ca,
                                            sni="localhost") as wt:
                await wt.aclose(7, b"bye")
                assert wt.session_closed
            last, event = await closed
            assert isinstance(last, WebTransportSessionClosed)
            assert (event.error_code, bytes(event.reason)) == (7, b"bye")
    finally:
        server.close()


class Recorder(WebTransportClient):
    """An aiomoqt-style subclass: stream data and datagrams are taken in _on_event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: dict[int, bytearray] = {}
        self.fins: set[int] = set()
        self.datagrams: list[bytes] = []
        self.closed_codes: list[int] = []
        self.done = asyncio.Event()

    def _on_event(self, ev_tuple: Any) -> None:
        evt_type, sid, data, _fin, code = ev_tuple[:5]
        if evt_type in (_EVT_WT_STREAM_DATA, _EVT_WT_STREAM_FIN):
            self.received.setdefault(sid, bytearray()).extend(data or b"")
            if evt_type == _EVT_WT_STREAM_FIN:
                self.fins.add(sid)
                self.done.set()
        elif evt_type == _EVT_WT_DATAGRAM:
            self.datagrams.append(bytes(data))
        else:
            if evt_type == _EVT_WT_SESSION_CLOSED:
                self.closed_codes.append(code)
            super()._on_event(ev_tuple)


async def test_061_subclass_hook_gets_the_data_and_credit_follows(certs):
    """A subclass consuming stream data in _on_event: 24 MiB (more than the windows) from
    the server arrive whole, so credit returns once the hook has taken the bytes."""
    total = 24 * 1024 * 1024
    block = hashlib.sha256(b"hook").digest() * 8192  # 256 KiB

    async def handler(session: WebTransportServerSession) -> None:
        sid = await session.create_stream(bidir=False)
        for _ in range(total // len(block)):
            await session.send_stream_data_drained(sid, block)
        session.send_stream_data(sid, b"", end_stream=True)
        await session.wait_closed()

    server = await serve_webtransport(HOST, 0, "/hook", handler=handler,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(60):
            cfg = QuicConfiguration(is_client=True, cafile=certs.ca, server_name="localhost",
                                    max_data=4 * 1024 * 1024, max_stream_data=1024 * 1024)
            client = Recorder(None, HOST, server.local_port, "/hook")
            client._wt6_configuration = cfg
            await client.open(timeout=10)
            try:
                await client.done.wait()
                (sid, data), = client.received.items()
                assert len(data) == total and data[:len(block)] == block
            finally:
                await client.aclose()
                await client.detach()
    finally:
        server.close()


async def test_061_base_class_reader_holds_the_sender(certs):
    """Bytes queued for receive_stream_data() are credited only as they are read: a server
    session nobody reads stops the client at the flow-control window."""
    sessions: list[WebTransportServerSession] = []
    arrived = asyncio.Event()

    async def handler(session: WebTransportServerSession) -> None:
        sessions.append(session)
        arrived.set()

    config = QuicConfiguration(is_client=False, max_data=1024 * 1024,
                               max_stream_data=256 * 1024)
    server = await serve_webtransport(HOST, 0, "/slow", handler=handler, configuration=config,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(60):
            client_config = QuicConfiguration(is_client=True, cafile=certs.ca,
                                              stream_buffer_size=256 * 1024)
            async with connect_webtransport(HOST, server.local_port, "/slow",
                                            configuration=client_config,
                                            sni="localhost") as wt:
                await arrived.wait()
                sid = await wt.create_stream(bidir=False)
                chunk = b"s" * 65536
                sent = 0
                with anyio.move_on_after(3):
                    while sent < 4 * 1024 * 1024:
                        await wt.send_stream_data_drained(sid, chunk)
                        sent += len(chunk)
                session = sessions[0]
                held = session._wt6_held
                assert held <= 256 * 1024 + 65536, held  # at most about one window
                assert sent < 4 * 1024 * 1024  # the sender is held by the reader
                wt.send_stream_data(sid, b"", end_stream=True)
                got = len(await read_stream(session, sid))
                assert got >= sent and got % len(chunk) == 0
    finally:
        server.close()


async def test_061_protocol_negotiation_and_wt_alpn_error(certs):
    chosen: list[Any] = []

    async def handler(session: WebTransportServerSession) -> None:
        chosen.append(session.negotiated_protocol)
        await session.wait_closed()

    def factory(transport: Any, state: Any) -> WebTransportServerSession:
        session = WebTransportServerSession(transport, state)
        session.made_by_factory = True  # type: ignore[attr-defined]
        return session

    server = await serve_webtransport(HOST, 0, "/neg", handler=handler,
                                      cert_file=certs.cert, key_file=certs.key,
                                      session_factory=factory,
                                      wt_supported_protocols=["moqt-16", "moqt-15"])
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(HOST, server.local_port, "/neg",
                                            ca_file=certs.ca, sni="localhost",
                                            wt_available_protocols=["moqt-15", "moqt-16"]
                                            ) as wt:
                assert wt.negotiated_protocol == "moqt-15"
            assert chosen == ["moqt-15"]
            refused = Recorder(None, HOST, server.local_port, "/neg",
                               wt_available_protocols=["moqt-14"])
            refused._wt6_configuration = QuicConfiguration(
                is_client=True, cafile=certs.ca, server_name="localhost")
            with pytest.raises(WebTransportError,
                               match=r"refused \(HTTP 400\) .*WT_ALPN_ERROR"):
                await refused.open(timeout=10)
            ev = refused._event_queue.get_nowait()
            assert ev.error_code == WT_ALPN_ERROR
            assert chosen == ["moqt-15"]
    finally:
        server.close()


async def test_061_client_closes_with_wt_alpn_error_the_server_sees_it(certs):
    """aiomoqt's rule over a server with no allowlist: the client offered a protocol, got
    none, and closes with WT_ALPN_ERROR; the server session's close code says so."""
    sessions: list[WebTransportServerSession] = []

    async def handler(session: WebTransportServerSession) -> None:
        sessions.append(session)

    server = await serve_webtransport(HOST, 0, "/", handler=handler,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(HOST, server.local_port, "/", ca_file=certs.ca,
                                            sni="localhost",
                                            wt_available_protocols=["moqt-18"]) as wt:
                assert wt.negotiated_protocol is None
                wt.close(WT_ALPN_ERROR, b"None not in offer")
            await sessions[0].wait_closed(10)
            assert sessions[0]._session_close_event is not None
            assert sessions[0]._session_close_event.error_code == WT_ALPN_ERROR
    finally:
        await server.aclose()


async def test_061_errors(certs):
    with pytest.raises(WebTransportError):
        async with connect_webtransport(HOST, 9, "/x", timeout=2, verify_peer=False):
            pass
    server = await serve_webtransport(HOST, 0, "/only", handler=lambda s: None,
                                      cert_file=certs.cert, key_file=certs.key)
    try:
        with anyio.fail_after(30):
            with pytest.raises(WebTransportError, match="HTTP 404"):
                async with connect_webtransport(HOST, server.local_port, "/other",
                                                ca_file=certs.ca, sni="localhost"):
                    pass
    finally:
        server.close()


async def test_061_unread_events_and_streams_are_bounded(certs, monkeypatch):
    """A session whose events() and streams nobody reads: new-stream events past the bound
    are dropped (counted) and streams past the inbox bound are refused."""
    from aiopquic.asyncio import webtransport as wtmod

    monkeypatch.setattr(wtmod, "_MAX_QUEUED_EVENTS", 4)
    monkeypatch.setattr(wtmod, "_MAX_INBOXES", 3)
    seen = asyncio.Event()
    sessions: list[Any] = []

    class Counting(WebTransportServerSession):
        new_streams = 0

        def _on_event(self, ev_tuple: Any) -> None:
            super()._on_event(ev_tuple)
            if ev_tuple[0] == wtmod._EVT_WT_STREAM_FIN:
                self.new_streams += 1
                if self.new_streams >= 10:  # one FIN per stream, refused or not
                    seen.set()

    def factory(transport: Any, state: Any) -> Counting:
        session = Counting(transport, state)
        sessions.append(session)
        return session

    server = await serve_webtransport(HOST, 0, "/b", handler=lambda s: None,
                                      cert_file=certs.cert, key_file=certs.key,
                                      session_factory=factory)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(HOST, server.local_port, "/b", ca_file=certs.ca,
                                            sni="localhost") as wt:
                for i in range(10):
                    sid = await wt.create_stream(bidir=False)
                    wt.send_stream_data(sid, b"d%d" % i, end_stream=True)
                await seen.wait()
                session = sessions[0]
                assert session._event_queue.qsize() == 4
                assert session.events_dropped == 6
                assert len(session._stream_inbox) == 3
                assert session.streams_refused == 7
    finally:
        server.close()
