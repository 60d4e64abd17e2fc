"""Endpoint-level behaviour: IPv6, version negotiation, stateless reset, SSLKEYLOGFILE,
the system trust store, server shutdown, and the ``perf`` demo."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys

import anyio
import pytest
from quic_helpers import (
    HOST,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.asyncio import connect, serve
from aiopquic.quic.events import ConnectionTerminated

pytestmark = pytest.mark.anyio


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_echo(server_config, client_config):
    with anyio.fail_after(10):
        server = await serve("::1", 0, configuration=server_config(),
                             stream_handler=echo_stream_handler)
        try:
            async with connect("::1", server.local_port,
                               configuration=client_config(server_name="localhost")) as p:
                assert await echo_roundtrip(p, b"six" * 1000) == b"six" * 1000
        finally:
            server.close()


async def test_server_binds_the_address_asked_for(server_config):
    server = await serve(HOST, 0, configuration=server_config())
    try:
        # the same port on another loopback address is free: nothing bound the wildcard
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", server.local_port))
    finally:
        server.close()


def _udp_exchange(port: int, packet: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (HOST, port))
        data, _ = s.recvfrom(65536)
        return data


async def test_unknown_version_gets_version_negotiation(server_config):
    async with running_server(server_config()) as server:
        dcid, scid = os.urandom(8), os.urandom(8)
        # long header, version 0x1a2a3a4a (reserved), padded to 1200 bytes
        pkt = bytes([0xC0]) + struct.pack("!I", 0x1A2A3A4A) + bytes([8]) + dcid + bytes([8])
        pkt += scid
        pkt += b"\0" * (1200 - len(pkt))
        reply = await anyio.to_thread.run_sync(_udp_exchange, server.local_port, pkt)
        assert reply[0] & 0x80, "not a long header"
        assert reply[1:5] == b"\0\0\0\0", "not a Version Negotiation packet"
        # the server echoes our connection ids swapped
        assert reply[5] == 8 and reply[6:14] == scid
        assert reply[14] == 8 and reply[15:23] == dcid
        versions = [struct.unpack("!I", reply[i:i + 4])[0] for i in range(23, len(reply), 4)]
        assert 0x00000001 in versions


async def test_unknown_connection_id_gets_stateless_reset(server_config):
    async with running_server(server_config()) as server:
        pkt = bytes([0x40]) + os.urandom(99)  # short header, a CID the server never issued
        reply = await anyio.to_thread.run_sync(_udp_exchange, server.local_port, pkt)
        assert not reply[0] & 0x80 and reply[0] & 0x40, "a stateless reset looks like 1-RTT"
        assert 21 <= len(reply) < len(pkt), "a reset is shorter than what triggered it"


_KEYLOG_SCRIPT = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from quic_helpers import client, echo_roundtrip, echo_stream_handler, running_server
from aiopquic.quic.configuration import QuicConfiguration

async def main():
    cert, key, ca = sys.argv[2:5]
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    server_cfg.load_cert_chain(cert, key)
    client_cfg = QuicConfiguration(alpn_protocols=["test"], cafile=ca, server_name="localhost")
    async with running_server(server_cfg, stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_cfg) as p:
            assert await echo_roundtrip(p, b"x") == b"x"

asyncio.run(asyncio.wait_for(main(), 20))
"""


async def test_sslkeylogfile_is_honoured(tmp_path, certs):
    log = tmp_path / "keys.log"
    env = dict(os.environ, SSLKEYLOGFILE=str(log))
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = await anyio.run_process(
        [sys.executable, "-c", _KEYLOG_SCRIPT, tests_dir, certs.cert, certs.key, certs.ca],
        env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = log.read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    assert {"CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels
    assert len({line.split()[1] for line in lines}) == 1  # one handshake, one client random


async def test_default_verification_uses_the_system_store(server_config, client_config):
    # trustme's CA is in no system store: without cafile the handshake must fail
    async with running_server(server_config()) as server:
        cfg = client_config(cafile=None)
        with anyio.fail_after(10), pytest.raises(ConnectionError, match="certificate"):
            async with client(server.local_port, cfg):
                pytest.fail("connected without trusting the server's CA")


async def test_server_close_notifies_clients(server_config, client_config):
    async with running_server(server_config()) as server:
        async with client(server.local_port, client_config(),
                          create_protocol=RecordingProtocol) as protocol:
            server.close()
            with anyio.fail_after(5):
                event = await protocol.wait_event(ConnectionTerminated)
            assert event.reason_phrase == "endpoint closed"
            assert protocol._quic.closed


async def test_perf_demo_runs_and_verifies():
    proc = await anyio.run_process(
        [sys.executable, "-m", "aiopquic", "perf", "--mib", "8", "--streams", "2",
         "--chunk", "4096"], check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "every byte verified" in out
    assert "handshake:" in out and "Mbps" in out


async def test_many_endpoints_in_one_process(server_config, client_config):
    servers = [await serve(HOST, 0, configuration=server_config(),
                           stream_handler=echo_stream_handler) for _ in range(3)]
    try:
        async def one(port: int, i: int) -> None:
            async with connect(HOST, port, configuration=client_config()) as p:
                payload = bytes([i]) * 50000
                assert await echo_roundtrip(p, payload) == payload

        with anyio.fail_after(20):
            await asyncio.gather(*(one(s.local_port, i) for i, s in enumerate(servers * 4)))
    finally:
        for s in servers:
            s.close()


async def test_finished_streams_are_forgotten(server_config, client_config):
    """Long-lived connections must not keep a reader per finished stream (aioquic #590)."""
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            with anyio.fail_after(30):
                for i in range(200):
                    assert await echo_roundtrip(protocol, b"%d" % i) == b"%d" % i
                # two PING round trips: every FIN and its ACK have crossed by then
                await protocol.ping()
                await protocol.ping()
            assert len(protocol._stream_readers) <= 2, len(protocol._stream_readers)
            assert len(protocol._quic._tx) <= 2, len(protocol._quic._tx)


async def test_key_updates_during_a_transfer(server_config, client_config):
    payload = os.urandom(4 * 1024 * 1024)
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            reader, writer = await protocol.create_stream()
            with anyio.fail_after(60):
                for i in range(0, len(payload), 256 * 1024):
                    writer.write(payload[i:i + 256 * 1024])
                    await writer.drain()
                    protocol.request_key_update()
                    await protocol.ping()  # lets each update be confirmed before the next
                writer.write_eof()
                assert await reader.read() == payload


async def test_stats_and_path_mtu_discovery(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config()) as protocol:
            with anyio.fail_after(30):
                before = await protocol.get_stats()
                payload = os.urandom(8 * 1024 * 1024)
                assert await echo_roundtrip(protocol, payload) == payload
                after = await protocol.get_stats()
    assert 0 < after.smoothed_rtt < 1.0 and after.min_rtt <= after.smoothed_rtt
    assert after.cwnd > 0
    assert after.bytes_sent > len(payload) and after.bytes_received > len(payload)
    assert after.packets_sent > before.packets_sent
    # loopback carries large datagrams: PMTUD climbs past Ethernet size to the default ceiling
    assert before.max_datagram_size >= 1200
    assert after.max_datagram_size > 1454, after


async def test_max_datagram_size_caps_pmtud(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        async with client(server.local_port, client_config(max_datagram_size=1452)) as p:
            with anyio.fail_after(30):
                assert await echo_roundtrip(p, b"z" * 2_000_000) == b"z" * 2_000_000
                stats = await p.get_stats()
    assert 1200 <= stats.max_datagram_size <= 1452


async def test_a_failing_handler_does_not_stop_other_connections(server_config, client_config):
    """An exception in one connection's quic_event_received goes to the loop's exception
    handler; the server keeps serving everyone else."""
    from aiopquic.asyncio import QuicConnectionProtocol
    from aiopquic.quic.events import StreamDataReceived

    class Fragile(QuicConnectionProtocol):
        def quic_event_received(self, event):
            if isinstance(event, StreamDataReceived) and event.data.startswith(b"boom"):
                raise RuntimeError("handler bug")
            super().quic_event_received(event)

    errors = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, ctx: errors.append(ctx.get("exception")))
    try:
        async with running_server(server_config(), stream_handler=echo_stream_handler,
                                  create_protocol=Fragile) as server:
            async with client(server.local_port, client_config()) as bad:
                _, writer = await bad.create_stream()
                writer.write(b"boom")
                async with client(server.local_port, client_config()) as good:
                    with anyio.fail_after(10):
                        while not errors:  # bounded by fail_after
                            await good.ping()
                        assert await echo_roundtrip(good, b"still here") == b"still here"
    finally:
        loop.set_exception_handler(None)
    assert isinstance(errors[0], RuntimeError)


async def test_sending_on_a_finished_stream_raises(server_config, client_config):
    from aiopquic.quic.connection import StreamStateError

    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(15):
            async with client(server.local_port, client_config()) as protocol:
                assert await echo_roundtrip(protocol, b"once") == b"once"
                await protocol.ping()
                await protocol.ping()
                with pytest.raises(StreamStateError, match="finished"):
                    protocol._quic.send_stream_data(0, b"late")
            # leaving the block closed gracefully without waiting for an idle timeout


async def test_peer_streams_credit_is_returned_once(server_config, client_config):
    """Receive credit is returned exactly once per byte: on the client's own stream and on
    the server's peer-opened stream (whose first chunk next_event() credits)."""
    from aiopquic.asyncio import QuicConnectionProtocol

    credited = {"client": [], "server": []}

    def spy_on(quic, side):
        real = quic._consumed

        def spy(stream_id, n):
            credited[side].append((stream_id, n))
            real(stream_id, n)

        quic._consumed = spy

    class Spied(QuicConnectionProtocol):
        def __init__(self, quic, stream_handler=None):
            super().__init__(quic, stream_handler=stream_handler)
            spy_on(quic, "server")

    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=Spied) as server:
        async with client(server.local_port, client_config()) as protocol:
            spy_on(protocol._quic, "client")
            with anyio.fail_after(15):
                payload = os.urandom(300_000)
                assert await echo_roundtrip(protocol, payload) == payload
                await protocol.ping()
    for side in ("client", "server"):
        assert sum(n for sid, n in credited[side] if sid == 0) == len(payload), side


async def test_reset_and_stop_of_a_finished_stream_do_nothing(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(15):
            async with client(server.local_port, client_config()) as protocol:
                assert await echo_roundtrip(protocol, b"done") == b"done"
                await protocol.ping()
                await protocol.ping()
                assert protocol._quic._is_finished(0)
                protocol._quic.reset_stream(0, 7)  # no exception, nothing sent
                protocol._quic.stop_stream(0, 7)
                assert await echo_roundtrip(protocol, b"still fine") == b"still fine"
