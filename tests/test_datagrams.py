"""QUIC DATAGRAM frames (RFC 9221) both directions and their size limits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from quic_helpers import ProtocolCollector, RecordingProtocol, client, running_server

from aiopquic._native import EV_PATH, NativeEvent, lib
from aiopquic.asyncio import connect, serve
from aiopquic.quic.events import DatagramFrameReceived

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class DatagramEchoProtocol(RecordingProtocol):
    """Server protocol answering every datagram with b"echo:" + data."""

    def quic_event_received(self, event):
        super().quic_event_received(event)
        if isinstance(event, DatagramFrameReceived):
            self._quic.send_datagram_frame(b"echo:" + event.data)
            self.transmit()


async def test_datagrams_both_directions(server_config, client_config):
    servers = ProtocolCollector(DatagramEchoProtocol)
    async with running_server(
        server_config(max_datagram_frame_size=65535), create_protocol=servers
    ) as server:
        with anyio.fail_after(30):
            async with client(
                server.local_port,
                client_config(max_datagram_frame_size=65535),
                create_protocol=RecordingProtocol,
            ) as protocol:
                # Datagrams are unreliable: retry a bounded number of times (loopback
                # should not lose any, but the test must not depend on that).
                echoed = None
                for attempt in range(10):
                    payload = b"dgram-%d-" % attempt + bytes(range(256)) * 4
                    protocol._quic.send_datagram_frame(payload)
                    protocol.transmit()
                    try:
                        echoed = await protocol.wait_event(
                            DatagramFrameReceived,
                            lambda e, p=payload: e.data == b"echo:" + p,
                            timeout=1.0,
                        )
                        break
                    except AssertionError:
                        continue
                assert echoed is not None, "no datagram came back in 10 attempts"
                assert type(echoed.data) is bytes

                server_protocol = await servers.next()
                received = [e for e in server_protocol.seen if isinstance(e, DatagramFrameReceived)]
                assert received, "server saw no DatagramFrameReceived"
                assert all(type(e.data) is bytes for e in received)
                assert echoed.data[len(b"echo:") :] in [e.data for e in received]


async def test_datagram_larger_than_peer_limit_raises(server_config, client_config):
    async with running_server(server_config(max_datagram_frame_size=500)) as server:
        with anyio.fail_after(10):
            async with client(
                server.local_port, client_config(max_datagram_frame_size=65535)
            ) as protocol:
                protocol._quic.send_datagram_frame(b"x" * 100)  # fits: no error
                with pytest.raises(ValueError):
                    protocol._quic.send_datagram_frame(b"x" * 1000)


async def test_datagram_when_peer_disabled_raises(server_config, client_config):
    async with running_server(server_config(max_datagram_frame_size=None)) as server:
        with anyio.fail_after(10):
            async with client(
                server.local_port, client_config(max_datagram_frame_size=65535)
            ) as protocol:
                with pytest.raises(ValueError):
                    protocol._quic.send_datagram_frame(b"nobody listens")


async def test_datagram_when_disabled_both_sides_raises(server_config, client_config):
    async with running_server(server_config()) as server:
        with anyio.fail_after(10):
            async with client(server.local_port, client_config()) as protocol:
                assert protocol._quic.configuration.max_datagram_frame_size is None
                with pytest.raises(ValueError):
                    protocol._quic.send_datagram_frame(b"datagrams are off")


def _datagram_sink(received: list) -> type:
    """A server protocol class appending every datagram's payload to ``received``."""

    class Sink(RecordingProtocol):
        def quic_event_received(self, event):
            if isinstance(event, DatagramFrameReceived):
                received.append(event.data)
            super().quic_event_received(event)

    return Sink


@contextlib.asynccontextmanager
async def _datagram_session(server_config, client_config, received: list,
                            **client_options) -> AsyncIterator[Any]:
    """A server whose protocol appends every datagram's bytes to ``received``, and a client
    protocol connected to it (both with datagrams on); the server is closed afterwards."""
    server = await serve("127.0.0.1", 0, configuration=server_config(
        max_datagram_frame_size=65535), create_protocol=_datagram_sink(received))
    try:
        async with connect("127.0.0.1", server.local_port, configuration=client_config(
                max_datagram_frame_size=65535, **client_options)) as protocol:
            yield protocol
    finally:
        server.close()


async def test_datagram_flood_is_bounded(server_config, client_config):
    """A sender that outruns the path and ignores the return value (aioquic style) is refused
    past datagram_ring_bytes (send_datagram_frame returns 0, counted) instead of growing
    memory without bound; what arrives is intact."""
    received: list[bytes] = []
    async with _datagram_session(server_config, client_config, received) as protocol:
        quic = protocol._quic
        body = os.urandom(1100)  # fits a 1200-byte packet: accepted before PMTUD ran
        taken = 0
        for _ in range(20_000):  # 22 MB at once: far more than the 1 MiB limit
            if quic.send_datagram_frame(body):
                taken += 1
            assert lib.aq_dgq_outstanding(quic._dgq) <= 1 << 20
        with anyio.fail_after(10):
            await protocol.ping()
            stats = await protocol.get_stats()
    assert quic.datagrams_refused == 20_000 - taken > 0
    assert stats.datagrams_dropped == 0  # refused before the native queue had to drop
    assert received and all(d == body for d in received)
    assert len(received) <= taken


async def test_datagram_backpressure_0_6_1_style(server_config, client_config):
    """aiopquic 0.6.1's contract: send_datagram_frame returns 0 while datagram_ring_bytes
    wait to be sent, the drain event clears, and sets again once half have left; a sender
    that waits on it loses nothing at the sender and never holds more than the limit."""
    received: list[bytes] = []
    limit = 64 * 1024
    async with _datagram_session(server_config, client_config, received,
                                 datagram_ring_bytes=limit) as protocol:
        quic = protocol._quic
        body = os.urandom(1000)
        waits = 0
        with anyio.fail_after(30):
            for _ in range(5_000):  # 5 MB: the sender outruns the network thread
                while not quic.send_datagram_frame(body):
                    drained = quic.get_datagram_tx_drain_event()
                    assert not drained.is_set()
                    waits += 1
                    await drained.wait()
                assert lib.aq_dgq_outstanding(quic._dgq) <= limit
            await protocol.ping()
            stats = await protocol.get_stats()
    assert waits > 0 and quic.datagrams_refused == waits
    assert stats.datagrams_dropped == 0
    assert received and all(d == body for d in received)


async def test_datagram_fast_path_follows_the_path(server_config, client_config):
    """After a first datagram, bytes up to the size then allowed take a one-call path; a path
    change (AQ_EV_PATH) turns it off, so the new, smaller limit is enforced again (ValueError),
    and other bytes-like types keep the full path."""
    received: list[bytes] = []
    async with _datagram_session(server_config, client_config, received) as protocol:
        quic = protocol._quic
        assert quic._dg_fast is None
        assert quic.send_datagram_frame(b"a" * 500) == 500
        assert quic._dg_fast is not None and quic._dg_fast[0] >= 500
        assert quic.send_datagram_frame(b"b" * 500) == 500  # the fast path
        assert quic.send_datagram_frame(memoryview(b"c" * 500)) == 500
        # the path shrinks: only 100-byte datagrams fit from now on
        quic._on_native(NativeEvent(EV_PATH, 0, quic._handle, -1, 1200, 100, b""))
        assert quic._dg_fast is None
        with pytest.raises(ValueError, match="larger than the 100-byte maximum"):
            quic.send_datagram_frame(b"d" * 500)
        assert quic.send_datagram_frame(b"e" * 100) == 100
        with anyio.fail_after(10):
            while len(received) < 4:
                await protocol.ping()
    assert sorted(received) == sorted([b"a" * 500, b"b" * 500, b"c" * 500, b"e" * 100])
