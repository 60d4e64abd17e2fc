"""Transfers over a lossy path.

This machine has no netem, so the shim's test hook drops a share of every endpoint's sent
packets at random (``AIOPQUIC_TEST_LOSS_PPM``, read when an endpoint is created).  Data still
arrives intact and in order, graceful close still delivers everything.
"""

from __future__ import annotations

import hashlib
import os

import anyio
import pytest
from quic_helpers import MiB, client, echo_roundtrip, echo_stream_handler, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def lossy(monkeypatch):
    monkeypatch.setenv("AIOPQUIC_TEST_LOSS_PPM", "30000")  # 3 % of packets, both directions


async def test_echo_survives_loss(lossy, server_config, client_config):
    payload = os.urandom(16 * MiB)
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(120):
            async with client(server.local_port, client_config()) as protocol:
                echoed = await echo_roundtrip(protocol, payload)
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_many_streams_and_close_survive_loss(lossy, server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(120):
            async with client(server.local_port, client_config()) as protocol:
                for i in range(50):
                    payload = bytes([i]) * (1000 + 997 * i)
                    assert await echo_roundtrip(protocol, payload) == payload
