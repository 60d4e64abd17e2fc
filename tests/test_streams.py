"""Streams over real UDP: bidi and uni both ways, FIN, reset / stop-sending codes, many
streams, large verified transfers, graceful close, slow-reader backpressure, many clients."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from quic_helpers import (
    HoldingSink,
    KiB,
    MiB,
    Pattern,
    PatternVerifier,
    ProtocolCollector,
    RecordingProtocol,
    StreamCollector,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
    send_pattern,
    spawn,
    stream_id_of,
)

from aiopquic.quic.events import (
    HandshakeCompleted,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _is_client_initiated(stream_id: int) -> bool:
    return stream_id & 0x1 == 0


def _is_unidirectional(stream_id: int) -> bool:
    return stream_id & 0x2 == 2


# -- bidi / uni, both directions ---------------------------------------------------------


async def test_bidi_echo_client_opened(server_config, client_config):
    payload = Pattern(seed=11).slice(0, 300 * KiB)
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(), create_protocol=RecordingProtocol
            ) as protocol:
                reader, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                assert _is_client_initiated(stream_id) and not _is_unidirectional(stream_id)
                writer.write(payload)
                writer.write_eof()
                assert await reader.read() == payload

                data_events = [
                    e
                    for e in protocol.seen
                    if isinstance(e, StreamDataReceived) and e.stream_id == stream_id
                ]
                assert data_events, "StreamDataReceived events must reach quic_event_received"
                assert all(type(e.data) is bytes for e in data_events)
                assert b"".join(e.data for e in data_events) == payload
                assert data_events[-1].end_stream is True
                assert not any(e.end_stream for e in data_events[:-1])


async def test_bidi_echo_server_opened(server_config, client_config):
    payload = Pattern(seed=12).slice(0, 300 * KiB)
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(), stream_handler=echo_stream_handler
            ):
                server_protocol = await servers.next()
                await server_protocol.wait_event(HandshakeCompleted)
                reader, writer = await server_protocol.create_stream()
                stream_id = stream_id_of(writer)
                assert not _is_client_initiated(stream_id)
                assert not _is_unidirectional(stream_id)
                writer.write(payload)
                writer.write_eof()
                assert await reader.read() == payload


async def test_uni_stream_client_to_server(server_config, client_config):
    payload = Pattern(seed=13).slice(0, 200 * KiB)
    collector = StreamCollector()
    async with running_server(server_config(), stream_handler=collector) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                _, writer = await protocol.create_stream(is_unidirectional=True)
                sent_id = stream_id_of(writer)
                assert _is_client_initiated(sent_id) and _is_unidirectional(sent_id)
                writer.write(payload)
                writer.write_eof()
                await writer.drain()
                stream_id, data = await collector.get()
                assert stream_id == sent_id
                assert data == payload


async def test_uni_stream_server_to_client(server_config, client_config):
    payload = Pattern(seed=14).slice(0, 200 * KiB)
    servers = ProtocolCollector()
    collector = StreamCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config(), stream_handler=collector):
                server_protocol = await servers.next()
                await server_protocol.wait_event(HandshakeCompleted)
                _, writer = await server_protocol.create_stream(is_unidirectional=True)
                sent_id = stream_id_of(writer)
                assert not _is_client_initiated(sent_id) and _is_unidirectional(sent_id)
                writer.write(payload)
                writer.write_eof()
                await writer.drain()
                stream_id, data = await collector.get()
                assert stream_id == sent_id
                assert data == payload


async def test_empty_stream_fin_only(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(10):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write_eof()
                assert await reader.read() == b""
                assert reader.at_eof()


# -- reset and stop-sending carry the application code to the peer -------------------------


async def test_reset_stream_client_to_server(server_config, client_config):
    servers = ProtocolCollector()
    sink = HoldingSink()
    async with running_server(
        server_config(), create_protocol=servers, stream_handler=sink
    ) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                _, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                writer.write(b"partial request")
                await writer.drain()
                protocol._quic.reset_stream(stream_id, 0x1234)
                protocol.transmit()
                server_protocol = await servers.next()
                event = await server_protocol.wait_event(
                    StreamReset, lambda e: e.stream_id == stream_id
                )
                assert event.error_code == 0x1234


async def test_reset_stream_server_to_client(server_config, client_config):
    servers = ProtocolCollector()
    sink = HoldingSink()
    async with running_server(
        server_config(), create_protocol=servers, stream_handler=sink
    ) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(), create_protocol=RecordingProtocol
            ) as protocol:
                _, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                writer.write(b"please reset me")
                await writer.drain()
                server_protocol = await servers.next()
                await server_protocol.wait_event(
                    StreamDataReceived, lambda e: e.stream_id == stream_id
                )
                server_protocol._quic.reset_stream(stream_id, 0x55)
                server_protocol.transmit()
                event = await protocol.wait_event(StreamReset, lambda e: e.stream_id == stream_id)
                assert event.error_code == 0x55


async def test_stop_sending_client_to_server(server_config, client_config):
    servers = ProtocolCollector()
    sink = HoldingSink()
    async with running_server(
        server_config(), create_protocol=servers, stream_handler=sink
    ) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                _, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                writer.write(b"request")
                # FIN our side too, so the stream can close completely at the server
                # (ngtcp2 1.11 reports the peer's STOP_SENDING code at stream close).
                writer.write_eof()
                await writer.drain()
                protocol._quic.stop_stream(stream_id, 77)
                protocol.transmit()
                server_protocol = await servers.next()
                event = await server_protocol.wait_event(
                    StopSendingReceived, lambda e: e.stream_id == stream_id, timeout=10
                )
                assert event.error_code == 77


async def test_stop_sending_server_to_client(server_config, client_config):
    servers = ProtocolCollector()
    sink = HoldingSink()
    async with running_server(
        server_config(), create_protocol=servers, stream_handler=sink
    ) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(), create_protocol=RecordingProtocol
            ) as protocol:
                reader, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)
                writer.write(b"keep sending?")
                await writer.drain()
                server_protocol = await servers.next()
                await server_protocol.wait_event(
                    StreamDataReceived, lambda e: e.stream_id == stream_id
                )
                server_protocol._quic.stop_stream(stream_id, 88)
                server_protocol._quic.send_stream_data(stream_id, b"", end_stream=True)
                server_protocol.transmit()
                event = await protocol.wait_event(
                    StopSendingReceived, lambda e: e.stream_id == stream_id, timeout=10
                )
                assert event.error_code == 88


# -- many streams, many clients ----------------------------------------------------------


async def test_1000_streams_on_one_connection(server_config, client_config):
    # Default max_streams_bidi (128) is far below 1000: stream credit must be extended as
    # streams complete, and create_stream() must wait for it.
    count = 1000
    concurrency = 50
    results = {}
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(90):
            async with client(server.local_port, client_config()) as protocol:
                limiter = asyncio.Semaphore(concurrency)

                async def one(i: int) -> None:
                    payload = f"stream {i}|".encode() * (1 + i % 50)
                    async with limiter:
                        results[i] = (await echo_roundtrip(protocol, payload)) == payload

                await asyncio.gather(*(one(i) for i in range(count)))
    assert len(results) == count
    failed = sorted(i for i, ok in results.items() if not ok)
    assert not failed, f"echo mismatch on streams {failed[:20]!r}"


async def test_50_concurrent_clients(server_config, client_config):
    clients = 50
    size = 64 * KiB
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:

        async def one(i: int) -> bool:
            payload = Pattern(seed=100 + i).slice(0, size)
            async with client(server.local_port, client_config()) as protocol:
                return await echo_roundtrip(protocol, payload) == payload

        with anyio.fail_after(90):
            outcomes = await asyncio.gather(*(one(i) for i in range(clients)))
    assert outcomes == [True] * clients


# -- large transfers, verified byte for byte -----------------------------------------------

BIG = 256 * MiB


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_256mib_client_to_server(server_config, client_config):
    pattern = Pattern(seed=256)
    verifiers = []

    def verify_handler(reader, writer):
        async def run() -> None:
            verifier = PatternVerifier(pattern)
            verifiers.append(verifier)
            while True:
                data = await reader.read(1 * MiB)
                if not data:
                    break
                verifier.feed(data)
            writer.write(b"%d %d\n" % (verifier.offset, 1 if verifier.ok else 0))
            writer.write_eof()

        spawn(run())

    async with running_server(server_config(), stream_handler=verify_handler) as server:
        with anyio.fail_after(300):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                await send_pattern(writer, pattern, BIG)
                reply = await reader.read()
    assert len(verifiers) == 1
    assert verifiers[0].first_mismatch is None, f"first mismatch at {verifiers[0].first_mismatch}"
    assert verifiers[0].offset == BIG
    assert reply == b"%d 1\n" % BIG


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_256mib_server_to_client(server_config, client_config):
    pattern = Pattern(seed=257)

    def send_handler(reader, writer):
        async def run() -> None:
            request = await reader.read()
            size = int(request.split()[1])
            await send_pattern(writer, pattern, size)

        spawn(run())

    verifier = PatternVerifier(pattern)
    async with running_server(server_config(), stream_handler=send_handler) as server:
        with anyio.fail_after(300):
            async with client(server.local_port, client_config()) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write(b"SEND %d\n" % BIG)
                writer.write_eof()
                while True:
                    data = await reader.read(1 * MiB)
                    if not data:
                        break
                    verifier.feed(data)
    assert verifier.first_mismatch is None, f"first mismatch at {verifier.first_mismatch}"
    assert verifier.offset == BIG


# -- graceful close flushes ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["protocol.close", "context-exit"])
async def test_graceful_close_delivers_every_byte(server_config, client_config, how):
    size = 8 * MiB
    pattern = Pattern(seed=8)
    received: asyncio.Future = asyncio.get_running_loop().create_future()

    def verify_handler(reader, writer):
        # `writer` is passed to run() only to keep it alive (see HoldingSink).
        async def run(writer) -> None:
            verifier = PatternVerifier(pattern)
            try:
                while True:
                    data = await reader.read(1 * MiB)
                    if not data:
                        break
                    verifier.feed(data)
            finally:
                if not received.done():
                    received.set_result(verifier)

        spawn(run(writer))

    async with running_server(server_config(), stream_handler=verify_handler) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config()) as protocol:
                _, writer = await protocol.create_stream()
                writer.write(pattern.slice(0, size))  # one big write, no drain
                writer.write_eof()
                if how == "protocol.close":
                    protocol.close()
        verifier = None
        with anyio.move_on_after(20):
            verifier = await received
    assert verifier is not None, "the server never saw the stream (or its end)"
    assert verifier.first_mismatch is None, f"first mismatch at {verifier.first_mismatch}"
    assert verifier.offset == size


# -- slow reader bounds the sender's memory ---------------------------------------------------


async def test_slow_reader_bounds_sender_memory(server_config, client_config):
    total = 64 * MiB
    write_chunk = 1 * MiB
    read_chunk = 64 * KiB
    bound = 32 * MiB
    pattern = Pattern(seed=64)

    permits: asyncio.Queue[int] = asyncio.Queue()
    reads_done: asyncio.Queue[int] = asyncio.Queue()
    reader_state = {"free": False}
    result: asyncio.Future = asyncio.get_running_loop().create_future()

    def slow_handler(reader, writer):
        # `writer` is passed to run() only to keep it alive (see HoldingSink).
        async def run(writer) -> None:
            verifier = PatternVerifier(pattern)
            try:
                while True:
                    if not reader_state["free"]:
                        await permits.get()  # read only when the test allows it
                    data = await reader.read(read_chunk)
                    reads_done.put_nowait(len(data))
                    if not data:
                        break
                    verifier.feed(data)
            finally:
                if not result.done():
                    result.set_result(verifier)

        spawn(run(writer))

    writer_state = {"in_drain": False, "max_buffered": 0, "samples": 0}
    changed = asyncio.Event()

    async with running_server(server_config(), stream_handler=slow_handler) as server:
        with anyio.fail_after(120):
            async with client(server.local_port, client_config()) as protocol:
                _, writer = await protocol.create_stream()
                stream_id = stream_id_of(writer)

                def sample() -> None:
                    buffered = protocol._quic.get_stream_buffered_bytes(stream_id)
                    writer_state["samples"] += 1
                    writer_state["max_buffered"] = max(writer_state["max_buffered"], buffered)

                async def produce() -> None:
                    try:
                        offset = 0
                        while offset < total:
                            writer.write(pattern.slice(offset, write_chunk))
                            offset += write_chunk
                            sample()
                            writer_state["in_drain"] = True
                            changed.set()
                            await writer.drain()
                            writer_state["in_drain"] = False
                            changed.set()
                            sample()
                        writer.write_eof()
                    finally:
                        writer_state["in_drain"] = False
                        changed.set()

                producer = asyncio.ensure_future(produce())
                blocked_reads = 0
                try:
                    # The reader only gets to read while the writer is stuck in drain():
                    # it is always behind, so only backpressure keeps memory bounded.
                    for _ in range(1_000_000):
                        changed.clear()
                        if producer.done():
                            break
                        if writer_state["in_drain"]:
                            blocked_reads += 1
                            permits.put_nowait(1)
                            with anyio.fail_after(20):
                                await reads_done.get()
                            continue
                        with anyio.fail_after(20):
                            await changed.wait()
                    await producer
                finally:
                    if not producer.done():
                        producer.cancel()
                    reader_state["free"] = True
                    permits.put_nowait(1)

                verifier = await result

    assert writer_state["samples"] > 0
    assert writer_state["max_buffered"] > 0, "get_stream_buffered_bytes never saw queued bytes"
    assert writer_state["max_buffered"] <= bound, (
        f"sender buffered {writer_state['max_buffered']} bytes for a slow reader"
    )
    assert blocked_reads > 0, "drain() never waited although the reader was stalled"
    assert verifier.first_mismatch is None, f"first mismatch at {verifier.first_mismatch}"
    assert verifier.offset == total


async def test_data_reaches_the_peer_in_the_order_it_was_sent_across_streams(
        server_config, client_config):
    """A message on one stream, then a new stream that refers to it (MoQ's SUBSCRIBE_OK, then
    the objects): the receiver sees the first stream's bytes no later than the second
    stream's, even when both arrive in one packet and the second carries a FIN (delivered at
    once, where the first stream's bytes wait for the end of the read)."""
    servers = ProtocolCollector()
    rounds = 40
    held: list = []  # the server keeps its stream writers: a collected one would send a FIN

    async with running_server(server_config(), create_protocol=servers,
                              stream_handler=lambda r, w: held.append((r, w))) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config()) as protocol:
                quic = protocol._quic
                control = quic.get_next_available_stream_id()
                quic.send_stream_data(control, b"hello")
                protocol.transmit()
                server_protocol = await servers.next()
                await server_protocol.wait_event(
                    StreamDataReceived, lambda e: e.stream_id == control)
                control_sent = [5]
                uni_ids = []
                for i in range(rounds):
                    message = b"ok %03d;" % i
                    quic.send_stream_data(control, message)
                    control_sent.append(control_sent[-1] + len(message))
                    uni = quic.get_next_available_stream_id(is_unidirectional=True)
                    quic.send_stream_data(uni, b"object %03d" % i, end_stream=True)
                    uni_ids.append(uni)
                    protocol.transmit()
                    await asyncio.sleep(0)
                last = uni_ids[-1]
                await server_protocol.wait_event(
                    StreamDataReceived, lambda e: e.stream_id == last and e.end_stream)
    control_received = 0
    seen_at: dict[int, int] = {}
    for event in server_protocol.seen:
        if isinstance(event, StreamDataReceived):
            if event.stream_id == control:
                control_received += len(event.data)
            elif event.stream_id not in seen_at:
                seen_at[event.stream_id] = control_received
    late = [(i, seen_at.get(uni), control_sent[i + 1]) for i, uni in enumerate(uni_ids)
            if seen_at.get(uni, -1) < control_sent[i + 1]]
    # QUIC orders nothing across streams when a packet is lost (the other stream's bytes are
    # delivered while the lost ones are resent), and a loaded machine's loopback does drop a
    # packet now and then; without loss no round is late (before the fix, nearly all were)
    assert len(late) <= 3, f"(round, control bytes seen, control bytes sent before it): {late}"


async def test_finished_streams_rings_are_reused(server_config, client_config):
    """A finished stream's send ring goes to its endpoint's pool once the network thread has
    let go of it, and the next stream writes into it from offset 0: many sequential echoes,
    each larger than the last (so stale bytes or a stale write position would show), arrive
    intact, and the client allocates far fewer rings than it opens streams."""
    from aiopquic.quic.connection import RING_POOL_BYTES

    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config(stream_buffer_size=64 * KiB)
                              ) as protocol:
                endpoint = protocol._quic._endpoint
                new_rings = 0
                real_new = endpoint._ring_new

                def counting_new(cap: int):
                    nonlocal new_rings
                    if not endpoint._ring_pool.get(cap):
                        new_rings += 1
                    return real_new(cap)

                endpoint._ring_new = counting_new
                pattern = Pattern(seed=29)
                for i in range(24):
                    payload = pattern.slice(i * 7919, 1000 + i * 9000)
                    assert await echo_roundtrip(protocol, payload, chunk=16 * KiB) == payload
                pooled = endpoint._ring_pool_bytes
                assert 0 < pooled <= RING_POOL_BYTES
                assert new_rings <= 12, new_rings  # most of the 24 streams took a pooled ring
    assert endpoint._ring_pool_bytes == 0 and not endpoint._ring_pool  # freed at close
