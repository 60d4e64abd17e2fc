"""Real paths: link MTUs of 1280, 1500 and 9000 (network namespaces), a path that shrinks
(EMSGSIZE), a black hole (the impairment relay starts dropping large packets), PINGs under
loss, and datagrams that must fit the path without starving streams.

The namespace tests run ``unshare -n`` (root) with ``lo`` set to the MTU under test, so the
kernel's own MTU applies to every packet: this is what a 64 KiB loopback hides.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import anyio
import pytest
from impair import Relay
from netns.netns_common import counting_sink
from quic_helpers import HOST, RecordingProtocol, client, largest_ipv4_packet, running_server

from aiopquic.asyncio import connect
from aiopquic.quic.events import DatagramFrameReceived

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

can_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip (network namespaces)",
)

# largest UDP payload at each MTU: IPv4 header 20 + UDP 8; IPv6 header 40 + UDP 8
PAYLOAD = {("127.0.0.1", 1280): 1252, ("127.0.0.1", 1500): 1472, ("127.0.0.1", 9000): 8972,
           ("::1", 1280): 1232, ("::1", 1500): 1452, ("::1", 9000): 8952}


def in_namespace(mtu: int, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run argv in a new network namespace whose loopback has the given MTU."""
    script = f"ip link set lo mtu {mtu} && ip link set lo up && exec \"$@\""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


@can_unshare
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("mtu", [1280, 1500, 9000])
def test_perf_at_link_mtu(mtu, host):
    """The perf demo (two processes, 32 MiB, every byte CRC-checked) at a real link MTU: PMTUD
    must settle exactly on the largest packet the link carries, never above it."""
    proc = in_namespace(mtu, [sys.executable, "-m", "aiopquic", "perf", "--mib", "32",
                              "--host", host, "--no-progress"], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every byte verified" in proc.stdout
    size = int(re.search(r"path: (\d+)-byte packets", proc.stdout).group(1))
    assert size == PAYLOAD[(host, mtu)], proc.stdout


@can_unshare
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_path_shrinks_mid_transfer(host):
    """At MTU 9000 the path grows to jumbo packets; then the link drops to 1500.  The kernel
    refuses the large packets (EMSGSIZE, DF is set): the connection must lower its packet
    size, resend what was refused and finish byte-exact."""
    proc = in_namespace(9000, [sys.executable, os.path.join(TESTS, "netns", "path_change.py"),
                               host, "1500"], timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["crc_ok"] and report["received"] == report["sent"] > 0
    assert report["before"]["max_datagram_size"] == PAYLOAD[(host, 9000)]
    assert report["after"]["max_datagram_size"] <= PAYLOAD[(host, 1500)]
    assert report["after"]["emsgsize"] > report["before"]["emsgsize"]


@can_unshare
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_no_probe_past_the_local_route(host):
    """Both endpoints allow 16 KiB packets, the loopback carries 1500 bytes: the path search
    starts below the local route's MTU (IP_MTU), so the kernel never refuses a probe
    (EMSGSIZE): each refused probe cost the engine a loss and a PTO probe, three per
    connection on every 1500-byte interface, a fifth of a core for 2,000 connections."""
    proc = in_namespace(1500, [sys.executable, os.path.join(TESTS, "netns", "route_mtu.py"),
                               host], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for side in ("client", "server"):
        assert report[side]["emsgsize"] == 0, report
        assert report[side]["max_datagram_size"] == PAYLOAD[(host, 1500)], report


async def _upload(protocol, total: int, chunk: int = 64 * 1024, between=None) -> bytes:
    reader, writer = await protocol.create_stream()
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < total:
        writer.write(block)
        await writer.drain()
        sent += len(block)
        if between is not None:
            await between(sent)
    writer.write_eof()
    return await reader.read()


needs_large_loopback = pytest.mark.skipif(
    largest_ipv4_packet() <= 1472,
    reason="the path must grow beyond 1472 bytes first: loopback MTU here is too small")


@needs_large_loopback
async def test_black_hole_falls_back_and_recovers(server_config, client_config):
    """Through the relay the path grows to large packets; then the relay silently drops
    everything over 1472 bytes (no ICMP, no EMSGSIZE: a black hole).  The sender must
    notice (no acknowledgement for several PTOs), fall back to small packets and finish."""
    total = 48 * 1024 * 1024
    async with running_server(server_config(max_datagram_size=16384),
                              stream_handler=counting_sink) as server:
        with Relay((HOST, server.local_port)) as relay:
            state = {"clamped": False}
            async with connect(relay.address[0], relay.address[1],
                               configuration=client_config(max_datagram_size=16384)) as proto:

                async def clamp(sent: int) -> None:
                    if state["clamped"] or sent < total // 4:
                        return
                    stats = await proto.get_stats()
                    if stats.max_datagram_size > 1472:
                        relay.set("both", mtu=1472)
                        state["clamped"] = True

                with anyio.fail_after(90):
                    answer = await _upload(proto, total, between=clamp)
                    stats = await proto.get_stats()
            dropped = relay.stats()
    assert state["clamped"], "the path never grew beyond 1472 bytes"
    assert answer == str(total).encode()
    assert stats.blackholes >= 1, stats
    assert stats.max_datagram_size <= 1472, stats
    c2s = dropped.get("c2s", dropped)
    assert c2s.get("dropped_mtu", 1) > 0, dropped


async def test_ping_acknowledged_under_loss(server_config, client_config, monkeypatch):
    """30 % of packets are lost (both endpoints): every ping() still completes, because a
    PING whose packet was lost is written again (PING frames are never retransmitted by the
    engine) and only the ACK of the PING's own packet completes it."""
    monkeypatch.setenv("AIOPQUIC_TEST_LOSS_PPM", "300000")
    # At 30 % loss each way a handshake needs several PTO rounds: a short initial RTT keeps
    # them short, and a long handshake timeout keeps a run of bad luck from failing the
    # test (seen once in CI under PyPy with the 10 s default and a 333 ms initial RTT).
    fast = {"initial_rtt": 0.02, "handshake_timeout": 45.0}
    async with running_server(server_config(**fast)) as server:
        with anyio.fail_after(90):
            async with client(server.local_port, client_config(**fast)) as protocol:
                for _ in range(20):
                    await protocol.ping()


class _DatagramSink(RecordingProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes = []

    def quic_event_received(self, event):
        if isinstance(event, DatagramFrameReceived):
            self.sizes.append(len(event.data))
            return
        super().quic_event_received(event)


async def test_datagram_limit_is_the_path(server_config, client_config):
    """max_datagram_size is exactly what fits: that size is sent and arrives, one byte more
    raises ValueError naming the limit; the limit grows with PMTUD.  0.6.1's
    max_datagram_payload() stays at or below 1200 all along."""
    sinks = []

    def make(*args, **kwargs):
        sinks.append(_DatagramSink(*args, **kwargs))
        return sinks[-1]

    async with running_server(server_config(max_datagram_frame_size=65535,
                                            max_datagram_size=16384),
                              create_protocol=make) as server:
        async with client(server.local_port,
                          client_config(max_datagram_frame_size=65535, max_datagram_size=16384)
                          ) as protocol:
            quic = protocol._quic
            assert quic.max_datagram_size >= 1154
            with anyio.fail_after(20):
                # PMTUD climbs to the largest packet this loopback carries (the configured
                # 16384 bytes on a 64 KiB loopback)
                target = largest_ipv4_packet() - 46  # short header, AEAD tag, DATAGRAM framing
                while quic.max_datagram_size < target:
                    await protocol.ping()
            limit = quic.max_datagram_size
            assert limit == target
            assert 1154 <= quic.max_datagram_payload() <= 1200
            with pytest.raises(ValueError, match=str(limit)):
                quic.send_datagram_frame(bytes(limit + 1))
            with anyio.fail_after(20):
                while limit not in sinks[0].sizes:  # unreliable: send until one arrives
                    quic.send_datagram_frame(bytes(limit))
                    protocol.transmit()
                    await protocol.ping()
            stats = await protocol.get_stats()
            assert stats.max_datagram_payload == limit


async def test_streams_progress_under_a_datagram_flood(server_config, client_config):
    """A sender that keeps its datagram queue full must not starve its streams: datagrams
    and stream data alternate leading each packet."""
    total = 8 * 1024 * 1024
    async with running_server(server_config(max_datagram_frame_size=65535),
                              stream_handler=counting_sink) as server:
        async with client(server.local_port,
                          client_config(max_datagram_frame_size=65535)) as protocol:
            quic = protocol._quic
            body = bytes(1000)

            async def flood(sent: int) -> None:
                for _ in range(200):  # ~200 KB of datagrams per 64 KiB of stream data
                    quic.send_datagram_frame(body)

            with anyio.fail_after(60):
                answer = await _upload(protocol, total, between=flood)
            stats = await protocol.get_stats()
    assert answer == str(total).encode()
    # the flood really outran the path: the datagram queue stayed full (send refused)
    assert quic.datagrams_refused > 0 and stats.datagrams_dropped == 0
