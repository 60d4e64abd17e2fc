"""Helpers shared by the loopback tests (imported as ``quic_helpers``; see conftest.py)."""

from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional

import anyio

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve

HOST = "127.0.0.1"
KiB = 1024
MiB = 1024 * 1024

# Strong references to handler tasks so the event loop cannot garbage-collect them.
_TASKS: set[asyncio.Task[Any]] = set()


def spawn(coro) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def stream_id_of(writer: asyncio.StreamWriter) -> int:
    """The QUIC stream id behind a StreamWriter (aioquic: transport extra info "stream_id")."""
    stream_id = writer.get_extra_info("stream_id")
    assert isinstance(stream_id, int), "writer.get_extra_info('stream_id') must return the id"
    return stream_id


# ---------------------------------------------------------------------------------------
# Stream handlers (aioquic semantics: a plain callable invoked with (reader, writer) for
# every peer-initiated stream; it spawns its own task).


def echo_stream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until EOF, echoing as we go (with drain), then FIN."""

    async def run() -> None:
        while True:
            data = await reader.read(64 * KiB)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    spawn(run())


class HoldingSink:
    """Stream handler that reads and discards until EOF or error, never writes, and keeps
    every writer referenced for the life of this object, so no FIN is sent on our side of the
    stream behind the test's back (a garbage-collected StreamWriter closes its transport)."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

        async def run() -> None:
            try:
                while await reader.read(64 * KiB):
                    pass
            except Exception:
                pass

        spawn(run())


class StreamCollector:
    """Stream handler that reads each incoming stream to EOF and queues (stream_id, data)."""

    def __init__(self) -> None:
        self.results: asyncio.Queue[tuple] = asyncio.Queue()

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def run() -> None:
            data = await reader.read()
            self.results.put_nowait((stream_id_of(writer), data))

        spawn(run())

    async def get(self, timeout: float = 10.0) -> tuple:
        with anyio.fail_after(timeout):
            return await self.results.get()


# ---------------------------------------------------------------------------------------
# Protocols


class RecordingProtocol(QuicConnectionProtocol):
    """QuicConnectionProtocol that records every event (in order) for the test to inspect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: list[Any] = []
        super().__init__(*args, **kwargs)

    def quic_event_received(self, event: Any) -> None:
        self.seen.append(event)
        self.events.put_nowait(event)
        super().quic_event_received(event)

    async def wait_event(
        self,
        event_type: type,
        predicate: Optional[Callable[[Any], bool]] = None,
        timeout: float = 5.0,
    ) -> Any:
        """Consume queued events until one of ``event_type`` matching ``predicate``."""
        try:
            with anyio.fail_after(timeout):
                while True:
                    event = await self.events.get()
                    if isinstance(event, event_type) and (predicate is None or predicate(event)):
                        return event
        except TimeoutError:
            raise AssertionError(
                f"no {event_type.__name__} within {timeout:.1f}s; events seen: {self.seen!r}"
            ) from None


class ProtocolCollector:
    """``create_protocol`` factory for serve(): builds ``cls`` and queues each instance."""

    def __init__(self, cls: type = RecordingProtocol) -> None:
        self.cls = cls
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        protocol = self.cls(*args, **kwargs)
        self.queue.put_nowait(protocol)
        return protocol

    async def next(self, timeout: float = 5.0) -> Any:
        with anyio.fail_after(timeout):
            return await self.queue.get()


@asynccontextmanager
async def running_server(configuration, *, stream_handler=None, create_protocol=None,
                         host: str = HOST, **serve_kwargs: Any):
    """serve() on ``host`` (127.0.0.1) port 0 (``serve_kwargs`` go to serve(), e.g.
    ``retry``); closes the server on exit."""
    kwargs: dict = {"configuration": configuration, "stream_handler": stream_handler,
                    **serve_kwargs}
    if create_protocol is not None:
        kwargs["create_protocol"] = create_protocol
    with anyio.fail_after(10):
        server = await serve(host, 0, **kwargs)
    try:
        port = server.local_port
        assert isinstance(port, int) and 0 < port < 65536, port
        yield server
    finally:
        server.close()


@asynccontextmanager
async def aioquic_echo_server(certs, *, alpn: str = "test", tolerant: bool = False):
    """aioquic's own server on 127.0.0.1 (test extra), echoing every stream back when its
    FIN arrives; yields its port.  ``tolerant``: ignore data aioquic 1.x reports again for a
    stream it already finished and forgot (a retransmitted STREAM frame arriving late at a
    slow server, e.g. on PyPy), which its stock protocol feeds into a reader at EOF."""
    from aioquic.asyncio import QuicConnectionProtocol as AioquicProtocol
    from aioquic.asyncio import serve as aioquic_serve
    from aioquic.quic.configuration import QuicConfiguration as AioquicConfiguration
    from aioquic.quic.events import StreamDataReceived

    class Tolerant(AioquicProtocol):  # type: ignore[misc]
        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, StreamDataReceived):
                reader = self._stream_readers.get(event.stream_id)
                if reader is not None and getattr(reader, "_eof", False):
                    return
            super().quic_event_received(event)

    def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def echo() -> None:
            writer.write(await reader.read())
            writer.write_eof()
        asyncio.ensure_future(echo())

    cfg = AioquicConfiguration(is_client=False, alpn_protocols=[alpn])
    cfg.load_cert_chain(certs.cert, certs.key)
    server = await aioquic_serve(HOST, 0, configuration=cfg, stream_handler=handler,
                                 create_protocol=Tolerant if tolerant else AioquicProtocol)
    try:
        yield server._transport.get_extra_info("sockname")[1]
    finally:
        server.close()


async def anyio_roundtrip(conn, payload: bytes) -> bytes:
    """On an aiopquic.anyio Connection: open a stream, send ``payload`` and FIN, return all
    that comes back until the peer's FIN."""
    stream = await conn.open_stream()
    await stream.send(payload)
    await stream.send_eof()
    got = b""
    try:
        while True:
            got += await stream.receive()
    except anyio.EndOfStream:
        pass
    return got


def client(port: int, configuration, **kwargs: Any):
    """connect() to 127.0.0.1:port (an async context manager yielding the protocol)."""
    return connect(HOST, port, configuration=configuration, **kwargs)


async def echo_roundtrip(protocol, payload: bytes, chunk: int = 64 * KiB) -> bytes:
    """Open a bidi stream, send ``payload`` (with drain) + FIN while reading the echo
    concurrently; return everything read until EOF."""
    reader, writer = await protocol.create_stream()

    async def send() -> None:
        view = memoryview(payload)
        for offset in range(0, len(payload), chunk):
            writer.write(bytes(view[offset : offset + chunk]))
            await writer.drain()
        writer.write_eof()

    received, _ = await asyncio.gather(reader.read(), send())
    return received


# ---------------------------------------------------------------------------------------
# Deterministic data pattern for byte-for-byte verification without holding it all


class Pattern:
    """An endless byte stream: a pseudo-random block of a prime length, repeated.

    The period (1,000,003) shares no factor with any power-of-two ring or buffer size, so
    lost, duplicated or reordered spans show up as mismatches."""

    def __init__(self, seed: int = 1, period: int = 1_000_003) -> None:
        block = random.Random(seed).randbytes(period)
        self.period = period
        self._double = block + block

    def slice(self, offset: int, n: int) -> bytes:
        out = []
        while n > 0:
            start = offset % self.period
            take = min(n, self.period)
            out.append(self._double[start : start + take])
            offset += take
            n -= take
        return b"".join(out)


class PatternVerifier:
    """Incrementally checks received bytes against a Pattern."""

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.offset = 0
        self.first_mismatch: Optional[int] = None

    def feed(self, data: bytes) -> None:
        if self.first_mismatch is None and data != self.pattern.slice(self.offset, len(data)):
            expected = self.pattern.slice(self.offset, len(data))
            index = next(i for i, (a, b) in enumerate(zip(data, expected)) if a != b)
            self.first_mismatch = self.offset + index
        self.offset += len(data)

    @property
    def ok(self) -> bool:
        return self.first_mismatch is None


async def send_pattern(
    writer: asyncio.StreamWriter, pattern: Pattern, total: int, chunk: int = 256 * KiB
) -> None:
    offset = 0
    while offset < total:
        n = min(chunk, total - offset)
        writer.write(pattern.slice(offset, n))
        await writer.drain()
        offset += n
    writer.write_eof()


# PMTUD's ladder of UDP payload sizes (csrc/conn.c aq_ladder), above the 1200-byte base.
PMTUD_LADDER = (1232, 1252, 1452, 1472, 8952, 8972, 16384, 32768, 65000)


def loopback_mtu() -> int:
    """MTU of ``lo`` in this network namespace (SIOCGIFMTU: /sys/class/net shows the initial
    namespace's device, not a namespace's own)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16si", b"lo", 0)
        return int(struct.unpack("16si", fcntl.ioctl(s.fileno(), 0x8921, req))[1])


def largest_ipv4_packet(configured: int = 16384) -> int:
    """The UDP payload PMTUD settles on over IPv4 loopback here, with ``max_datagram_size``
    = ``configured``: the largest ladder rung that fits both (1200 if none does)."""
    fits = [r for r in PMTUD_LADDER if r <= configured and r <= loopback_mtu() - 28]
    return max(fits) if fits else 1200
