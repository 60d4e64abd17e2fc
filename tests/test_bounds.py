"""Nothing a caller or a peer sends may crash, exhaust or misuse an endpoint.

End to end over real UDP on 127.0.0.1: out-of-range error codes, stream ids and ports raise
ValueError/TypeError naming the argument (before, some aborted the process in an ngtcp2
assertion or were silently truncated); writes after the endpoint closed raise the library's
connection error; the key log is private; credential errors name the files; readers of a
stream cut short by the connection's end get the connection error, not EOF; event
processing is bounded per wake and a connection's event queue is bounded (datagrams are
dropped and counted, stream events never).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import stat
import sys
from typing import Any

import anyio
import pytest
from quic_helpers import (
    HOST,
    HoldingSink,
    ProtocolCollector,
    RecordingProtocol,
    client,
    running_server,
    stream_id_of,
)

import aiopquic.anyio as aq
from aiopquic import _native
from aiopquic.asyncio import _loop, connect, serve
from aiopquic.asyncio.protocol import QuicConnectionProtocol
from aiopquic.quic.connection import QuicConnectionError, StreamStateError
from aiopquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BAD_VARINTS = [2**62, 2**63, 2**64, -1]
CODE_MSG = r"error_code must be an integer in \[0, 2\*\*62\): got "


class QueueingHandler:
    """stream_handler that queues (reader, writer) and keeps the writers referenced."""

    def __init__(self) -> None:
        self.streams: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
            asyncio.Queue()

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.streams.put_nowait((reader, writer))

    async def next(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        with anyio.fail_after(10):
            return await self.streams.get()


# -- error codes ---------------------------------------------------------------------------


async def test_close_with_out_of_range_code_raises_and_connection_still_closes(
        server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                server_protocol = await servers.next()
                for bad in BAD_VARINTS:
                    with pytest.raises(ValueError, match=CODE_MSG + str(bad)):
                        protocol.close(bad)
                    with pytest.raises(ValueError, match=CODE_MSG):
                        protocol._quic.close(error_code=bad)
                with pytest.raises(TypeError, match="error_code must be an integer"):
                    protocol.close("1")  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="error_code must be an integer"):
                    protocol.close(1.0)  # type: ignore[arg-type]
                with pytest.raises(ValueError, match=r"frame_type must be an integer"):
                    protocol._quic.close(1, frame_type=2**62)
                with pytest.raises(TypeError, match="reason_phrase must be a str"):
                    protocol.close(0, b"bytes")  # type: ignore[arg-type]
                # the process survived and the connection is untouched
                assert not protocol._quic.closed
                await protocol.ping()
                protocol.close(2**62 - 1, "last valid code")
                await protocol.wait_closed()
        event = await server_protocol.wait_event(ConnectionTerminated, timeout=10)
        assert event.error_code == 2**62 - 1
        assert event.reason_phrase == "last valid code"


async def test_reset_and_stop_stream_codes_are_checked(server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers,
                              stream_handler=HoldingSink()) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                server_protocol = await servers.next()
                quic = protocol._quic
                reader, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                writer.write(b"hello")
                await writer.drain()
                for bad in BAD_VARINTS:
                    with pytest.raises(ValueError, match=CODE_MSG + str(bad)):
                        quic.reset_stream(stream_id, bad)
                    with pytest.raises(ValueError, match=CODE_MSG + str(bad)):
                        quic.stop_stream(stream_id, bad)
                with pytest.raises(TypeError, match="error_code"):
                    quic.reset_stream(stream_id, None)  # type: ignore[arg-type]
                await protocol.ping()
                quic.reset_stream(stream_id, 2**62 - 1)
                event = await server_protocol.wait_event(
                    StreamReset, lambda e: e.stream_id == stream_id, timeout=10)
                assert event.error_code == 2**62 - 1


async def test_stream_ids_and_buffers_are_checked(server_config, client_config):
    handler = QueueingHandler()
    async with running_server(server_config(), stream_handler=handler) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config(
                    max_datagram_frame_size=1200)) as protocol:
                quic = protocol._quic
                for bad in BAD_VARINTS:
                    with pytest.raises(ValueError, match=r"stream_id must be an integer in "
                                                         r"\[0, 2\*\*62\): got "):
                        quic.send_stream_data(bad, b"x")
                    with pytest.raises(ValueError, match="stream_id"):
                        quic.reset_stream(bad, 0)
                    with pytest.raises(ValueError, match="stream_id"):
                        quic.stop_stream(bad, 0)
                with pytest.raises(TypeError, match="stream_id must be an integer"):
                    quic.send_stream_data("0", b"x")  # type: ignore[arg-type]
                # a local stream far past the next one: it could never open
                with pytest.raises(StreamStateError, match="not open"):
                    quic.send_stream_data(4 * 2**59, b"x")
                # the peer's streams it never opened
                with pytest.raises(StreamStateError, match="the peer has not opened it"):
                    quic.send_stream_data(1, b"x")
                with pytest.raises(StreamStateError, match="the peer has not opened it"):
                    quic.stop_stream(5, 0)
                # buffers: bytes-like only, named in the message
                with pytest.raises(TypeError, match="data must be a bytes-like object"):
                    quic.send_stream_data(0, "text")  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="data must be a bytes-like object"):
                    quic.send_datagram_frame("text")  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="data must be a bytes-like object"):
                    quic.send_datagram_frame(12)  # type: ignore[arg-type]
                with pytest.raises(ValueError, match="uid"):
                    quic.send_ping(-1)
                # a multi-byte-item buffer is sent by its size in bytes
                import array

                words = array.array("I", [0x01020304] * 4)
                reader, writer = await protocol.create_stream()
                writer.write(words)  # type: ignore[arg-type]
                writer.write(memoryview(b"abcdef")[::2])  # non-contiguous: copied
                writer.write_eof()
                server_reader, _ = await handler.next()
                assert await server_reader.read() == words.tobytes() + b"ace"
                assert not quic.closed


# -- ports -----------------------------------------------------------------------------------


async def test_ports_outside_0_65535_raise(server_config, client_config):
    for port in (70000, -1, 65536):
        with pytest.raises(ValueError, match=rf"port must be an integer in \[1, 65536\): "
                                             rf"got {port}"):
            async with connect(HOST, port, configuration=client_config()):
                pass
        with pytest.raises(ValueError, match=rf"port must be an integer in \[0, 65536\): "
                                             rf"got {port}"):
            await serve(HOST, port, configuration=server_config())
        with pytest.raises(ValueError, match=r"local_port must be an integer"):
            async with connect(HOST, 4433, configuration=client_config(), local_port=port):
                pass
        with pytest.raises(ValueError, match=r"port must be an integer in \[1, 65536\)"):
            async with aq.connect(HOST, port, configuration=client_config()):
                pass
    with pytest.raises(TypeError, match="port must be an integer"):
        await serve(HOST, "4433", configuration=server_config())  # type: ignore[arg-type]


# -- the key log, credentials ------------------------------------------------------------------


async def test_secrets_log_file_is_private(server_config, client_config, tmp_path):
    path = tmp_path / "keys.log"
    old = os.umask(0o022)
    try:
        async with running_server(server_config()) as server:
            with anyio.fail_after(20):
                async with client(server.local_port,
                                  client_config(secrets_log_file=str(path))) as protocol:
                    await protocol.ping()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in path.read_text()


async def test_rejected_key_names_the_files(server_config, certs, tmp_path):
    bad_key = tmp_path / "bad-key.pem"
    bad_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    configuration = server_config()
    configuration.load_cert_chain(certs.cert, str(bad_key))
    with pytest.raises(_native.NativeError) as info:
        await serve(HOST, 0, configuration=configuration)
    assert str(bad_key) in str(info.value)
    assert certs.cert in str(info.value)


# -- after the endpoint closed -----------------------------------------------------------------


async def test_write_after_server_close_raises_connection_error(server_config, client_config):
    handler = QueueingHandler()
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        async with running_server(server_config(), stream_handler=handler) as server:
            with anyio.fail_after(20):
                async with client(server.local_port, client_config()) as protocol:
                    _, client_writer = await protocol.create_stream()
                    client_writer.write(b"request")
                    reader, writer = await handler.next()
                    assert await reader.readexactly(7) == b"request"
                    server.close()
                    with pytest.raises(QuicConnectionError, match="endpoint closed"):
                        writer.write(b"late")
                    with pytest.raises(QuicConnectionError):
                        await reader.read()  # no FIN came: not EOF
                    quic = writer.get_extra_info("connection")
                    with pytest.raises(QuicConnectionError):
                        quic.send_datagram_frame(b"x")
                    quic.reset_stream(stream_id_of(writer), 1)  # closed: nothing to do
                    quic.close(5)  # closed: nothing to do
                    writer.close()
                    del writer, reader
                    gc.collect()
                    await protocol.wait_closed()
    finally:
        sys.unraisablehook = old_hook
    assert not unraisable, [u.exc_value for u in unraisable]


# -- readers of a stream the connection's end cut short -------------------------------------


async def test_reader_gets_connection_error_when_the_server_vanishes(server_config,
                                                                     client_config):
    handler = QueueingHandler()
    async with running_server(server_config(), stream_handler=handler) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write(b"GET")
                server_reader, server_writer = await handler.next()
                assert await server_reader.readexactly(3) == b"GET"
                server_writer.write(b"partial download")  # and never a FIN
                assert await reader.readexactly(16) == b"partial download"
                server.close()  # abrupt: CONNECTION_CLOSE "endpoint closed", no FIN
                with pytest.raises(QuicConnectionError, match="endpoint closed"):
                    await reader.read()
                with pytest.raises(QuicConnectionError):
                    await reader.read(10)
                with pytest.raises(QuicConnectionError):
                    await reader.readexactly(1)
                assert isinstance(reader.exception(), ConnectionError)


async def test_buffered_bytes_come_before_the_connection_error(server_config, client_config):
    handler = QueueingHandler()
    async with running_server(server_config(), stream_handler=handler) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write(b"GET")
                server_reader, server_writer = await handler.next()
                await server_reader.readexactly(3)
                server_writer.write(b"abc")
                await protocol.ping()  # the server's bytes are buffered by now
                server_protocol = server.protocols[0]
                server_protocol._quic.close(9, reason_phrase="gone")
                await protocol.wait_closed()
                assert await reader.read(100) == b"abc"
                with pytest.raises(QuicConnectionError) as info:
                    await reader.read(100)
                assert info.value.error_code == 9


async def test_eof_after_fin_survives_the_connection_end(server_config, client_config):
    handler = QueueingHandler()
    async with running_server(server_config(), stream_handler=handler) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write(b"GET")
                writer.write_eof()
                server_reader, server_writer = await handler.next()
                assert await server_reader.read() == b"GET"
                server_writer.write(b"whole")
                server_writer.write_eof()
                assert await reader.read() == b"whole"
                server.close()
                await protocol.wait_closed()
                assert await reader.read() == b""
                assert reader.at_eof()


# -- event processing bounds -------------------------------------------------------------------


class DatagramCounter(RecordingProtocol):
    target = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.datagrams = 0
        self.all_in = asyncio.Event()

    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, DatagramFrameReceived):
            self.datagrams += 1
            if self.datagrams >= self.target:
                self.all_in.set()
            return
        super().quic_event_received(event)


async def test_process_handles_a_bounded_batch_per_wake(server_config, client_config):
    n = 600
    DatagramCounter.target = n
    servers = ProtocolCollector(DatagramCounter)
    loop = asyncio.get_running_loop()
    async with running_server(server_config(max_datagram_frame_size=1200),
                              create_protocol=servers) as server:
        endpoint = server._endpoint
        endpoint.batch_size = 16
        sizes: list[int] = []
        poll = endpoint._poll

        def spy(limit: int) -> list[Any]:
            out = poll(limit)
            sizes.append(len(out))
            return out

        endpoint._poll = spy  # type: ignore[method-assign]
        with anyio.fail_after(30):
            async with client(server.local_port,
                              client_config(max_datagram_frame_size=1200)) as protocol:
                server_protocol = await servers.next()
                await server_protocol.wait_event(HandshakeCompleted)
                # Stop the server's event loop wake-ups, flood, and let the network threads
                # deliver everything: the events pile up in the server's native ring.
                loop.remove_reader(endpoint.fileno)
                for i in range(n):
                    protocol._quic.send_datagram_frame(i.to_bytes(4, "big"))
                await protocol.ping()
                while (await protocol.get_stats()).bytes_in_flight:
                    await protocol.ping()  # until the server has acknowledged everything
                sizes.clear()
                # The wake fd is still readable: the reader fires at once.
                _loop.attach(endpoint, loop, server._protocol_for)
                await server_protocol.all_in.wait()
        assert server_protocol.datagrams == n
        assert max(sizes) == 16, sizes  # full batches, never more
        assert sum(sizes) >= n


class HoldingProtocol(QuicConnectionProtocol):
    """Leaves events queued in the QuicConnection while ``hold`` is set (an application
    that does not keep up), and reports what waits there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.changed = asyncio.Event()

    def _process_events(self) -> None:
        if self.hold:
            self.changed.set()
            return
        super()._process_events()

    def queued(self, kind: type) -> list[Any]:
        return [e for e in self._quic._events if isinstance(e, kind)]


async def test_event_queue_bound_drops_datagrams_never_stream_data(server_config,
                                                                   client_config):
    servers = ProtocolCollector(HoldingProtocol)
    collected: asyncio.Queue[bytes] = asyncio.Queue()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def run() -> None:
            collected.put_nowait(await reader.read())
        asyncio.ensure_future(run())

    async with running_server(server_config(max_datagram_frame_size=1200),
                              create_protocol=servers, stream_handler=on_stream) as server:
        with anyio.fail_after(30):
            async with client(server.local_port,
                              client_config(max_datagram_frame_size=1200)) as protocol:
                server_protocol = await servers.next()
                quic = server_protocol._quic
                quic.max_queued_events = 50
                server_protocol.hold = True
                await protocol.ping()
                sent = 0
                while quic.received_datagrams_dropped == 0:
                    for _ in range(100):
                        protocol._quic.send_datagram_frame(b"d%d" % sent)
                        sent += 1
                    await protocol.ping()
                # the queue is over its bound: stream data still gets in
                _, writer = await protocol.create_stream()
                writer.write(b"never dropped")
                writer.write_eof()
                while not server_protocol.queued(StreamDataReceived) or not any(
                        e.end_stream for e in server_protocol.queued(StreamDataReceived)):
                    server_protocol.changed.clear()
                    await server_protocol.changed.wait()
                assert len(server_protocol.queued(DatagramFrameReceived)) <= 50
                dropped = quic.received_datagrams_dropped
                assert dropped > 0
                server_protocol.hold = False
                server_protocol._process_events()
                assert await collected.get() == b"never dropped"
                stats = await server_protocol.get_stats()
                assert stats.received_datagrams_dropped == dropped


# -- anyio face ----------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_anyio_checks_and_truncated_receive(server_config, client_config,
                                                  anyio_backend):
    if anyio_backend == "trio":
        pytest.importorskip("trio")
    served = anyio.Event()
    holder: dict[str, Any] = {}

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        await stream.receive()
        await stream.send(b"partial")  # and never a FIN
        holder["stream"] = stream
        served.set()
        await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            server_scope = anyio.CancelScope()

            async def run_server(*, task_status: Any) -> None:
                with server_scope:
                    await aq.serve(HOST, 0,
                                   configuration=server_config(max_datagram_frame_size=1200),
                                   handler=handler, task_status=task_status)

            server = await tg.start(functools.partial(run_server))
            async with aq.connect(HOST, server.local_port, configuration=client_config(
                    max_datagram_frame_size=1200)) as connection:
                stream = await connection.open_stream()
                with pytest.raises(TypeError, match="item must be a bytes-like object"):
                    await stream.send("text")  # type: ignore[arg-type]
                with pytest.raises(ValueError, match=CODE_MSG):
                    stream.reset(2**62)
                with pytest.raises(ValueError, match=CODE_MSG):
                    stream.stop_sending(-1)
                with pytest.raises(ValueError, match="max_bytes"):
                    await stream.receive(0)
                with pytest.raises(TypeError, match="data must be a bytes-like object"):
                    await connection.send_datagram("text")  # type: ignore[arg-type]
                with pytest.raises(ValueError, match=CODE_MSG):
                    await connection.aclose(2**62)
                assert not connection.closed
                await stream.send(b"GET")
                await served.wait()
                assert await stream.receive() == b"partial"
                server_scope.cancel()  # the server's endpoint goes away: no FIN
                with pytest.raises(aq.ConnectionClosedError):
                    await stream.receive()
                with pytest.raises(anyio.BrokenResourceError):
                    await stream.receive()


async def test_send_rings_have_a_per_connection_budget(server_config, client_config):
    """128 streams with 1 MiB send rings would pin 128 MiB: past SEND_BUFFER_BUDGET new
    streams get 64 KiB rings, which still carry data; the budget is given back as streams
    finish."""
    from quic_helpers import echo_stream_handler

    from aiopquic.quic.configuration import MIN_STREAM_BUFFER_SIZE
    from aiopquic.quic.connection import SEND_BUFFER_BUDGET

    async with running_server(server_config(max_streams_bidi=256),
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(30):
            async with client(server.local_port,
                              client_config(max_streams_bidi=256)) as protocol:
                quic = protocol._quic
                pairs = [await protocol.create_stream() for _ in range(128)]
                for _, writer in pairs:
                    writer.write(b"x")
                caps = [quic._tx[w.get_extra_info("stream_id")].cap for _, w in pairs]
                assert quic._tx_ring_bytes <= SEND_BUFFER_BUDGET + 128 * MIN_STREAM_BUFFER_SIZE
                assert caps[0] == quic.configuration.stream_buffer_size
                assert caps[-1] == MIN_STREAM_BUFFER_SIZE
                for _, writer in pairs:  # the small rings carry data too
                    writer.write(bytes(200_000))
                    writer.write_eof()
                got = await asyncio.gather(*(reader.read() for reader, _ in pairs))
                assert all(len(g) == 200_001 for g in got)


# -- what an idle connection holds ---------------------------------------------------------


def _owned_bytes(obj: Any, shared: set[int]) -> int:
    """``obj`` and the objects it alone refers to, one level down (empty dicts and lists,
    queues, events, ...), skipping the objects in ``shared`` and immutable scalars."""
    total = sys.getsizeof(obj)
    for ref in gc.get_referents(obj):
        if id(ref) not in shared and not isinstance(ref, (type, int, float, str)):
            total += sys.getsizeof(ref)
    return total


async def test_idle_server_connection_holds_little_python(server_config, client_config):
    """An idle server connection's QuicConnection and protocol keep their state in slots
    (no per-instance dict) and make their event queue, sets, close event, logger adapter
    and transport view only on first use: together under 3 KB (they were ~7 KB; a server
    holding 10,000 idle connections pays this 10,000 times).  No slot hides a class
    attribute (a property, a default) of another class of the same hierarchy."""
    from aiopquic.quic.connection import _NO_EVENTS, QuicConnection

    for cls in (QuicConnection, QuicConnectionProtocol):
        for klass in cls.__mro__:
            for name in klass.__dict__.get("__slots__", ()):
                owners = [c.__name__ for c in cls.__mro__ if name in c.__dict__]
                assert owners == [klass.__name__], (name, owners)

    collector = ProtocolCollector(QuicConnectionProtocol)
    async with running_server(server_config(), create_protocol=collector) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                await protocol.ping()
                proto = await collector.next()
                await asyncio.sleep(0.05)
                quic = proto._quic
                assert quic._events is _NO_EVENTS  # drained: the queue was given back
                assert not vars(quic) and not vars(proto)  # every attribute in a slot
                if sys.implementation.name == "cpython":  # PyPy has no sys.getsizeof
                    shared = {id(x) for x in (quic, proto, quic.configuration,
                                              quic._endpoint, proto._loop, _NO_EVENTS, None,
                                              True, False, vars(quic), vars(proto))}
                    size = _owned_bytes(quic, shared) + _owned_bytes(proto, shared)
                    assert size < 3000, size
