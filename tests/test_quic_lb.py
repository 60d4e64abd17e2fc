"""QUIC-LB plaintext connection IDs (``quic_lb_server_id``): every connection ID a server
issues carries the config rotation bits, its length and the server ID, so that a QUIC-LB
load balancer routes all of a connection's packets to that server.  Checked on the wire
(a recording UDP forwarder between our client and our threaded server) and on the sans-IO
face (its ``host_cid`` and ``ConnectionIdIssued`` events)."""

from __future__ import annotations

import asyncio
import os

import anyio
import pytest
from quic_helpers import HOST, echo_roundtrip, echo_stream_handler, running_server

from aiopquic.asyncio import connect
from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SID = b"\xab\xcd\x01"
CID_LEN = 12


def lb_prefix(config_id: int = 3) -> bytes:
    return bytes([(config_id << 5) | (CID_LEN - 1)]) + SID


class Recorder(asyncio.DatagramProtocol):
    """A UDP forwarder: client -> (this) -> server and back; keeps the destination
    connection IDs of the client's short-header packets."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.client_addr = None
        self.to_server = None
        self.dcids: set[bytes] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if addr == self.upstream:
            if self.client_addr is not None:
                self.transport.sendto(data, self.client_addr)
            return
        self.client_addr = addr
        if data and not data[0] & 0x80:
            self.dcids.add(data[1:1 + CID_LEN])
        self.transport.sendto(data, self.upstream)


async def test_threaded_server_issues_quic_lb_ids(server_config, client_config):
    cfg = server_config(quic_lb_server_id=SID, quic_lb_config_id=3, connection_id_length=CID_LEN)
    async with running_server(cfg, stream_handler=echo_stream_handler) as server:
        loop = asyncio.get_running_loop()
        transport, rec = await loop.create_datagram_endpoint(
            lambda: Recorder((HOST, server.local_port)), local_addr=(HOST, 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            with anyio.fail_after(30):
                async with connect(HOST, port, configuration=client_config()) as p:
                    payload = os.urandom(300_000)
                    assert await echo_roundtrip(p, payload) == payload
        finally:
            transport.close()
    assert rec.dcids, "no short-header packet seen"
    assert all(d.startswith(lb_prefix()) for d in rec.dcids), rec.dcids
    assert len({d[len(lb_prefix()):] for d in rec.dcids}) == len(rec.dcids)  # random nonces


def test_sansio_server_ids_are_quic_lb(client_config, server_config):
    from test_sansio import SansioPair, _has

    scfg = server_config(quic_lb_server_id=SID, quic_lb_config_id=3,
                         connection_id_length=CID_LEN)
    p = SansioPair(client_config(), scfg)
    p.run_until(lambda: _has(p.client_events, events.HandshakeCompleted)
                and _has(p.server_events, events.HandshakeCompleted), "handshake")
    issued = [e.connection_id for e in p.server_events
              if isinstance(e, events.ConnectionIdIssued)]
    assert p.server.host_cid.startswith(lb_prefix())
    assert issued and all(c.startswith(lb_prefix()) for c in issued), issued


def test_quic_lb_arguments_are_checked():
    with pytest.raises(ValueError, match="too short for quic_lb_server_id"):
        QuicConfiguration(quic_lb_server_id=b"12345678", connection_id_length=12)
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        QuicConfiguration(quic_lb_server_id=b"", connection_id_length=20)
    with pytest.raises(TypeError, match="quic_lb_server_id"):
        QuicConfiguration(quic_lb_server_id="ab", connection_id_length=20)  # type: ignore
    with pytest.raises(ValueError, match="quic_lb_config_id"):
        QuicConfiguration(quic_lb_config_id=7)
