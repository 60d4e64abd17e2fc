"""The anyio API (aiopquic.anyio) over real UDP on 127.0.0.1, on the asyncio AND trio
backends: handshake, echo both ways, uni streams, datagrams, reset / stop-sending codes,
errors, cancellation, exceptions from handlers, backpressure, serve() shut down by
cancellation."""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable

import anyio
import pytest
from quic_helpers import Pattern, PatternVerifier

import aiopquic.anyio as aq
from aiopquic.quic.connection import QuicConnectionError

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
else:
    BaseExceptionGroup = BaseExceptionGroup  # noqa: PLW0127

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: Any) -> str:
    """Every test in this module runs on both backends."""
    if request.param == "trio":
        pytest.importorskip("trio")
    return str(request.param)


# ---------------------------------------------------------------------------- helpers


@asynccontextmanager
async def running(configuration: Any, handler: Callable[..., Any]) -> AsyncIterator[aq.Server]:
    """serve() on 127.0.0.1 port 0 inside a task group; cancelled on exit."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(15):
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=configuration, handler=handler))
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def connect(port: int, configuration: Any) -> Any:
    return aq.connect(HOST, port, configuration=configuration)


async def read_all(stream: aq.QuicStream, max_bytes: int = 65536) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive(max_bytes))
        except anyio.EndOfStream:
            return b"".join(chunks)


async def echo_handler(connection: aq.Connection) -> None:
    """Echo every bidirectional stream the client opens (concurrently), until it closes."""
    async with anyio.create_task_group() as tg:
        async for stream in connection:

            async def echo(stream: aq.QuicStream = stream) -> None:
                async with stream:
                    while True:
                        try:
                            data = await stream.receive()
                        except anyio.EndOfStream:
                            return
                        await stream.send(data)

            tg.start_soon(echo)


def find_in_group(exc: BaseException, kind: type) -> BaseException:
    """The first exception of ``kind`` in ``exc`` (possibly nested exception groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            try:
                return find_in_group(inner, kind)
            except LookupError:
                continue
    raise LookupError(f"no {kind.__name__} in {exc!r}")


# ---------------------------------------------------------------------------- handshake


async def test_handshake_and_connection_properties(server_config, client_config):
    seen: list[aq.Connection] = []
    handler_done = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        seen.append(connection)
        with pytest.raises(anyio.EndOfStream):
            await connection.accept_stream()  # until the client's graceful close
        handler_done.set()

    async with running(server_config(), handler) as server:
        assert 0 < server.local_port < 65536
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                assert isinstance(conn, aq.Connection)
                assert conn.alpn_protocol == "test"
                assert conn.peer_address == (HOST, server.local_port)
                assert conn.quic.handshake_complete
                assert not conn.closed
                await conn.ping()
            assert conn.closed
            assert conn.close_event is not None and conn.close_event.error_code == 0
            await handler_done.wait()
    assert len(seen) == 1 and seen[0].alpn_protocol == "test"


async def test_connect_to_nobody_raises_connection_error(client_config):
    # A bound UDP port nobody answers on (our own socket, never read).
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    try:
        with anyio.fail_after(30):
            with pytest.raises(ConnectionError) as info:
                async with connect(port, client_config(handshake_timeout=1.0)):
                    pytest.fail("connected to nobody")
        assert isinstance(info.value, QuicConnectionError)
    finally:
        sock.close()


async def test_alpn_mismatch_raises_connection_error(server_config, client_config):
    async def handler(connection: aq.Connection) -> None:
        pytest.fail("no connection should be accepted")

    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            with pytest.raises(ConnectionError, match="ALPN"):
                async with connect(server.local_port, client_config(alpn_protocols=["nope"])):
                    pass


async def test_exception_in_connect_body_propagates_unwrapped(server_config, client_config):
    """On trio a nursery would wrap it in an ExceptionGroup; connect() must not."""

    class Boom(Exception):
        pass

    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            with pytest.raises(Boom):
                async with connect(server.local_port, client_config()):
                    raise Boom


async def test_bad_configurations_are_rejected(server_config, client_config):
    with pytest.raises(ValueError, match="client configuration"):
        async with aq.connect(HOST, 4433, configuration=server_config()):
            pass
    with pytest.raises(ValueError, match="server configuration"):
        await aq.serve(HOST, 0, configuration=client_config(), handler=echo_handler)
    bare = client_config()
    bare.is_client = False
    with pytest.raises(ValueError, match="certificate"):
        await aq.serve(HOST, 0, configuration=bare, handler=echo_handler)


# ---------------------------------------------------------------------------- echo


async def test_echo_client_opened_stream(server_config, client_config):
    payload = Pattern(seed=21).slice(0, 2 * MiB)
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                assert isinstance(stream, anyio.abc.ByteStream)
                assert stream.stream_id == 0 and not stream.is_unidirectional
                received = bytearray()

                async def reader() -> None:
                    received.extend(await read_all(stream))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(reader)
                    view = memoryview(payload)
                    for offset in range(0, len(payload), 100_000):
                        await stream.send(view[offset:offset + 100_000])
                    await stream.send_eof()
                assert bytes(received) == payload
                await stream.aclose()


async def test_echo_server_opened_stream(server_config, client_config):
    payload = Pattern(seed=22).slice(0, 1 * MiB)
    result: dict[str, Any] = {}

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.open_stream()
        assert stream.stream_id == 1  # server-initiated bidirectional
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                result["echo"] = await read_all(stream)

            tg.start_soon(reader)
            await stream.send(payload)
            await stream.send_eof()
        await stream.aclose()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.accept_stream()
                assert stream.stream_id == 1 and not stream.is_unidirectional
                while True:
                    try:
                        await stream.send(await stream.receive())
                    except anyio.EndOfStream:
                        break
                await stream.aclose()
                await conn.wait_closed()  # the handler returned: the server closes
    assert result["echo"] == payload


async def test_many_concurrent_streams_and_no_stream_leak(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(60):
            async with connect(server.local_port, client_config()) as conn:

                async def one(i: int) -> None:
                    data = Pattern(seed=100 + i).slice(0, 20_000 + i * 997)
                    async with await conn.open_stream() as stream:
                        await stream.send(data)
                        await stream.send_eof()
                        assert await read_all(stream) == data

                async with anyio.create_task_group() as tg:
                    for i in range(60):
                        tg.start_soon(one, i)
                # finished streams are forgotten (no per-stream state left behind)
                assert conn._streams == {}


async def test_receive_max_bytes_splits_chunks(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                await stream.send(b"abcdefgh")
                await stream.send_eof()
                parts = []
                while True:
                    try:
                        part = await stream.receive(3)
                    except anyio.EndOfStream:
                        break
                    assert 1 <= len(part) <= 3
                    parts.append(part)
                assert b"".join(parts) == b"abcdefgh"
                with pytest.raises(ValueError):
                    await stream.receive(0)
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"after eof")


# ---------------------------------------------------------------------------- uni streams


async def test_unidirectional_streams_both_ways(server_config, client_config):
    got: dict[str, Any] = {}
    server_sent = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        got["uni_from_client"] = (stream.stream_id, stream.is_unidirectional,
                                  await read_all(stream))
        with pytest.raises(aq.StreamStateError):
            await stream.send(b"x")  # the client's uni stream is receive-only here
        out = await connection.open_stream(bidirectional=False)
        assert out.stream_id == 3 and out.is_unidirectional
        with pytest.raises(aq.StreamStateError):
            await out.receive()
        await out.send(b"from the server")
        await out.aclose()
        server_sent.set()
        with pytest.raises(anyio.EndOfStream):
            await connection.accept_stream()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                out = await conn.open_stream(bidirectional=False)
                assert out.stream_id == 2 and out.is_unidirectional
                await out.send(b"from the client")
                await out.send_eof()
                incoming = await conn.accept_stream()
                assert incoming.stream_id == 3 and incoming.is_unidirectional
                assert await read_all(incoming) == b"from the server"
                await server_sent.wait()
    assert got["uni_from_client"] == (2, True, b"from the client")


# ---------------------------------------------------------------------------- datagrams


async def test_datagrams_both_ways(server_config, client_config):
    async def handler(connection: aq.Connection) -> None:
        for _ in range(3):
            data = await connection.receive_datagram()
            await connection.send_datagram(b"echo:" + data)
        with pytest.raises(anyio.EndOfStream):
            await connection.receive_datagram()

    async with running(server_config(max_datagram_frame_size=1200), handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port,
                               client_config(max_datagram_frame_size=1200)) as conn:
                assert 0 < conn.max_datagram_size <= 1197  # the peer's 1200-byte frames
                with pytest.raises(ValueError):  # (the limit grows with PMTUD up to 1197)
                    await conn.send_datagram(b"x" * 1198)
                got = set()
                for i in range(3):
                    # unreliable in principle; loopback does not lose them, but resend once
                    # per second to be safe on a loaded machine
                    payload = b"dgram-%d" % i
                    while True:
                        await conn.send_datagram(payload)
                        with anyio.move_on_after(1.0):
                            got.add(await conn.receive_datagram())
                            break
                assert {b"echo:dgram-%d" % i for i in range(3)} <= got


async def test_datagrams_off_raise_value_error(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                assert conn.max_datagram_size == 0
                with pytest.raises(ValueError, match="disabled"):
                    await conn.send_datagram(b"x")


# ---------------------------------------------------------------------------- reset / stop


async def test_reset_code_reaches_the_peer(server_config, client_config):
    outcome: dict[str, Any] = {}
    done = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        first = await stream.receive()
        await stream.send(b"ack")
        try:
            while True:
                await stream.receive()
        except aq.StreamResetError as exc:
            outcome["first"], outcome["code"], outcome["sid"] = first, exc.error_code, \
                exc.stream_id
            assert isinstance(exc, anyio.BrokenResourceError)
        done.set()
        await connection.wait_closed()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                await stream.send(b"partial")
                assert await stream.receive() == b"ack"  # so the reset cannot overtake it
                stream.reset(0x1234)
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"more")
                await done.wait()
    assert outcome == {"first": b"partial", "code": 0x1234, "sid": 0}


async def test_stop_sending_code_reaches_the_sender(server_config, client_config):
    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        await stream.receive()
        stream.stop_sending(0x77)
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        await stream.send(b"the other direction still works")
        await stream.send_eof()
        await connection.wait_closed()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                with pytest.raises(aq.StreamStoppedError) as info:
                    for _ in range(10_000):  # bounded: the STOP_SENDING arrives long before
                        await stream.send(b"x" * 16 * KiB)
                assert info.value.error_code == 0x77 and info.value.stream_id == 0
                assert isinstance(info.value, anyio.BrokenResourceError)
                assert await read_all(stream) == b"the other direction still works"


async def test_stream_aclose_sends_stop_sending_code_0(server_config, client_config):
    closed = anyio.Event()
    stopped = anyio.Event()
    outcome: dict[str, Any] = {}

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.open_stream()
        await stream.send(b"hello")
        await closed.wait()
        try:
            for _ in range(10_000):
                await stream.send(b"y" * 16 * KiB)
        except aq.StreamStoppedError as exc:
            outcome["code"] = exc.error_code
        stopped.set()
        await connection.wait_closed()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.accept_stream()
                assert await stream.receive() == b"hello"
                await stream.aclose()
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.receive()
                closed.set()
                await stopped.wait()
    assert outcome["code"] == 0


# ---------------------------------------------------------------------------- closing


async def test_server_close_code_reaches_client(server_config, client_config):
    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        await stream.receive()
        await connection.aclose(error_code=0x42, reason_phrase="bye")
        with pytest.raises(anyio.ClosedResourceError):
            await connection.open_stream()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                await stream.send(b"hi")
                with pytest.raises(aq.ConnectionClosedError) as info:
                    await stream.receive()
                assert info.value.error_code == 0x42
                assert info.value.reason_phrase == "bye"
                assert isinstance(info.value, anyio.BrokenResourceError)
                assert isinstance(info.value, ConnectionError)
                with pytest.raises(aq.ConnectionClosedError):
                    await conn.accept_stream()
                with pytest.raises(aq.ConnectionClosedError):
                    await stream.send(b"x")


async def test_local_aclose_makes_calls_raise_closed_resource(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                errors: list[BaseException] = []

                async def waiter() -> None:
                    try:
                        await stream.receive()
                    except anyio.ClosedResourceError as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.wait_all_tasks_blocked()
                    await conn.aclose()
                assert len(errors) == 1 and isinstance(errors[0], anyio.ClosedResourceError)
                assert conn.closed
                for call in (conn.open_stream(), conn.accept_stream(),
                             conn.receive_datagram(), stream.send(b"x")):
                    with pytest.raises(anyio.ClosedResourceError):
                        await call


async def test_graceful_close_delivers_pending_data(server_config, client_config):
    payload = Pattern(seed=5).slice(0, 3 * MiB)
    result: dict[str, bytes] = {}
    done = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        result["data"] = await read_all(stream)
        done.set()

    cfg = client_config(stream_buffer_size=64 * KiB)
    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, cfg) as conn:
                stream = await conn.open_stream(bidirectional=False)
                conn.quic.send_stream_data(stream.stream_id, payload, end_stream=True)
                # leaving the block closes gracefully: the 3 MiB still queued are delivered
            await done.wait()
    assert result["data"] == payload


# ---------------------------------------------------------------------------- cancellation


async def test_cancelled_receive_loses_no_data(server_config, client_config):
    go = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        await stream.receive()
        await go.wait()
        await stream.send(b"late reply")
        await stream.send_eof()
        await connection.wait_closed()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                stream = await conn.open_stream()
                await stream.send(b"request")
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(stream.receive)
                        await anyio.wait_all_tasks_blocked()
                        scope.cancel()
                assert scope.cancelled_caught
                go.set()
                assert await read_all(stream) == b"late reply"


async def test_cancelling_serve_cancels_handlers_and_closes_connections(
        server_config, client_config):
    handler_started = anyio.Event()
    handler_exit: list[BaseException] = []

    async def handler(connection: aq.Connection) -> None:
        handler_started.set()
        try:
            await anyio.sleep_forever()
        except BaseException as exc:
            handler_exit.append(exc)
            raise

    with anyio.fail_after(30):
        async with connect_after_serve(server_config(), handler, client_config()) as (
                tg, conn):
            await handler_started.wait()
            tg.cancel_scope.cancel()  # stops serve(): its handlers are cancelled
            with pytest.raises((anyio.EndOfStream, aq.ConnectionClosedError)):
                await conn.accept_stream()
            assert conn.close_event is not None
            assert conn.close_event.reason_phrase == "endpoint closed"
    assert len(handler_exit) == 1
    assert isinstance(handler_exit[0], anyio.get_cancelled_exc_class())


@asynccontextmanager
async def connect_after_serve(server_cfg: Any, handler: Any, client_cfg: Any) -> Any:
    """A serve() task group (yielded, so the test can cancel it) and a client connection."""
    tg_holder: dict[str, Any] = {}
    port_ready = anyio.Event()
    port: dict[str, int] = {}

    async def run_server() -> None:
        async with anyio.create_task_group() as tg:
            tg_holder["tg"] = tg
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=server_cfg, handler=handler))
            port["port"] = server.local_port
            port_ready.set()

    async with anyio.create_task_group() as outer:
        outer.start_soon(run_server)
        await port_ready.wait()
        async with connect(port["port"], client_cfg) as conn:
            yield tg_holder["tg"], conn
        outer.cancel_scope.cancel()


# A failing handler: tests/test_anyio_semantics.py (contained by default, crash-through
# with the caller's task group).


async def test_serve_shut_down_by_cancellation_releases_the_port(server_config, client_config):
    with anyio.fail_after(30):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                server = await tg.start(functools.partial(
                    aq.serve, HOST, 0, configuration=server_config(), handler=echo_handler))
                port = server.local_port
                async with connect(port, client_config()) as conn:
                    async with await conn.open_stream() as stream:
                        await stream.send(b"ping")
                        await stream.send_eof()
                        assert await read_all(stream) == b"ping"
                    assert len(server.connections) == 1
                scope.cancel()
        assert scope.cancelled_caught
        # the socket is closed: the same port can be bound again at once
        async with running(server_config(), echo_handler):
            pass
        async with anyio.create_task_group() as tg:
            again = await tg.start(functools.partial(
                aq.serve, HOST, port, configuration=server_config(), handler=echo_handler))
            assert again.local_port == port
            tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------- backpressure


async def test_slow_reader_bounds_memory_on_both_sides(server_config, client_config):
    """The sender's send() waits while its queue is full (sender memory <= the stream's
    ring); the receiver returns credit only as data is read (receiver memory <=
    max_stream_data)."""
    total = 6 * MiB
    chunk = 32 * KiB
    window = 256 * KiB
    ring = 64 * KiB
    pattern = Pattern(seed=9)
    verifier = PatternVerifier(pattern)
    peak = {"rx": 0, "tx": 0}
    finished = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        while True:
            peak["rx"] = max(peak["rx"], stream.receive_buffered)
            try:
                data = await stream.receive(16 * KiB)
            except anyio.EndOfStream:
                break
            verifier.feed(data)
            await anyio.sleep(0.001)  # a slow consumer (load shaping, not synchronisation)
        finished.set()
        await connection.wait_closed()

    scfg = server_config(max_stream_data=window, max_data=4 * window)
    ccfg = client_config(stream_buffer_size=ring)
    async with running(scfg, handler) as server:
        with anyio.fail_after(90):
            async with connect(server.local_port, ccfg) as conn:
                stream = await conn.open_stream(bidirectional=False)
                for offset in range(0, total, chunk):
                    await stream.send(pattern.slice(offset, chunk))
                    peak["tx"] = max(peak["tx"], stream.send_buffered)
                await stream.send_eof()
            await finished.wait()
    assert verifier.ok and verifier.offset == total
    assert peak["tx"] <= ring, peak
    assert 0 < peak["rx"] <= window, peak


async def test_cancelling_the_connect_body_closes_quietly(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            with anyio.CancelScope() as scope:
                async with connect(server.local_port, client_config()) as conn:
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
            assert conn.closed
            # cancelled during the handshake: nothing leaks, the scope catches it
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with connect(server.local_port, client_config()):
                    pytest.fail("the body must not run")
            assert scope.cancelled_caught


async def test_streams_past_the_accept_backlog_are_refused(server_config, client_config,
                                                           monkeypatch):
    import aiopquic.anyio._connection as impl

    monkeypatch.setattr(impl, "ACCEPT_BACKLOG", 2)
    release = anyio.Event()
    done = anyio.Event()
    accepted: list[bytes] = []
    refused: list[int] = []

    async def handler(connection: aq.Connection) -> None:
        await release.wait()
        refused.append(connection.streams_refused)
        for _ in range(2):
            stream = await connection.accept_stream()
            accepted.append(await read_all(stream))
        done.set()
        await connection.wait_closed()

    async with running(server_config(), handler) as server:
        with anyio.fail_after(30):
            async with connect(server.local_port, client_config()) as conn:
                streams = [await conn.open_stream() for _ in range(4)]
                for i, stream in enumerate(streams):
                    await stream.send(b"stream %d" % i)
                    await stream.send_eof()
                    if i == 1:
                        await conn.ping()  # the first two are queued first
                for stream in streams[2:]:
                    with pytest.raises(aq.StreamResetError) as info:
                        await stream.receive()
                    assert info.value.error_code == 0
                release.set()
                await done.wait()
    assert refused == [2]
    assert accepted == [b"stream 0", b"stream 1"]


async def test_stats_and_key_update(server_config, client_config):
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                async with await conn.open_stream() as stream:
                    await stream.send(b"before")
                    assert await stream.receive() == b"before"
                    conn.request_key_update()
                    await stream.send(b"after the key update")
                    await stream.send_eof()
                    assert await read_all(stream) == b"after the key update"
                stats = await conn.get_stats()
                assert stats.smoothed_rtt > 0 and stats.cwnd > 0
                assert stats.bytes_sent > 0 and stats.bytes_received > 0
            with pytest.raises(anyio.ClosedResourceError):
                await conn.get_stats()


async def test_fallback_wait_for_anyio_without_wait_readable(server_config, client_config,
                                                             monkeypatch):
    """anyio < 4.7 has no wait_readable(); the fallback uses the backend's own primitive."""
    pytest.importorskip("sniffio")
    import aiopquic.anyio._io as io

    monkeypatch.setattr(io, "wait_readable", io._legacy_wait_readable())
    async with running(server_config(), echo_handler) as server:
        with anyio.fail_after(20):
            async with connect(server.local_port, client_config()) as conn:
                async with await conn.open_stream() as stream:
                    await stream.send(b"fallback")
                    await stream.send_eof()
                    assert await read_all(stream) == b"fallback"
