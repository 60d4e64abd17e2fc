"""ECN (RFC 9000 section 13.4, RFC 3168): our packets carry ECT(0) where the path keeps the
marks, the codepoint of every received packet reaches ngtcp2 (which feeds ACK_ECN counts
back and validates the path), and a path that bleaches the marks (the impairment relay
forwards bare payloads) makes the sender stop marking without hurting the transfer.
Counts are in ``QuicConnectionStats`` (``ecn_sent``, ``ecn_ect0_received``, ...)."""

from __future__ import annotations

import os

import anyio
import pytest
from impair import Relay
from quic_helpers import HOST, client, echo_roundtrip, echo_stream_handler, running_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

MiB = 1024 * 1024



@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_marks_travel_both_ways_on_loopback(server_config, client_config, host):
    payload = os.urandom(2 * MiB)

    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              host=host) as server:
        from aiopquic.asyncio import connect

        with anyio.fail_after(60):
            async with connect(host, server.local_port, configuration=client_config()) as p:
                echoed = await echo_roundtrip(p, payload)
                assert echoed == payload
                stats = await p.get_stats()
    # the client marked (almost) everything it sent after the handshake, and the server's
    # marks arrived intact: loopback keeps the IP header's ECN bits
    assert stats.ecn_sent > 0.9 * stats.packets_sent, stats
    assert stats.ecn_ect0_received > 0.9 * stats.packets_received, stats
    assert stats.ecn_ce_received == 0


async def test_bleached_path_stops_marking_and_still_delivers(server_config, client_config):
    payload = os.urandom(4 * MiB)
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with Relay(upstream=(HOST, server.local_port)) as relay:
            with anyio.fail_after(90):
                async with client(relay.address[1], client_config()) as p:
                    echoed = await echo_roundtrip(p, payload)
                    assert echoed == payload
                    stats = await p.get_stats()
    assert stats.ecn_ect0_received == 0  # the relay sends bare payloads
    # ECN validation fails (no ECN counts come back): marking stops after a few packets
    assert stats.ecn_sent < 50 < stats.packets_sent, stats
