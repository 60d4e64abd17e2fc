"""Client connection migration (RFC 9000 section 9): ``await protocol.migrate()`` moves a
client connection to a new local UDP port; the engine takes a fresh connection ID for the
new path and validates it, and the server follows.  aioquic's ``change_connection_id()``
does the same on a client.  Checked against our server (which sees the peer's new port) and
against aioquic's server (a foreign stack validating our new path), with data flowing
before and after each move."""

from __future__ import annotations

import os
import sys

import anyio
import pytest
from quic_helpers import (
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic.connection import QuicConnectionError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")


async def test_client_moves_three_times_and_the_server_follows(server_config, client_config):
    protocols = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=protocols) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config()) as p:
                peer = await protocols.next()
                ports = [p._transport.get_extra_info("sockname")[1]]
                assert peer._quic.get_peer_address()[1] == ports[0]
                for round_ in range(3):
                    payload = os.urandom(200_000)
                    assert await echo_roundtrip(p, payload) == payload
                    if round_ == 1:
                        p.change_connection_id()  # aioquic's spelling of the same move
                        await p.ping()
                        new = p._transport.get_extra_info("sockname")[1]
                    else:
                        new = await p.migrate()
                    assert new not in ports
                    ports.append(new)
                    payload = os.urandom(200_000)
                    assert await echo_roundtrip(p, payload) == payload
                    assert peer._quic.get_peer_address()[1] == new
                stats = await p.get_stats()
                assert stats.packets_received > 0


async def test_migration_to_a_chosen_port_and_errors(server_config, client_config):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config()) as p:
                busy = p._transport.get_extra_info("sockname")[1]
                with pytest.raises(OSError, match="migration failed"):
                    await p.migrate(local_port=busy)  # our own current port is taken
                assert await p.ping() is None  # still on its path
                with pytest.raises((ValueError, TypeError)):
                    await p.migrate(local_port=70000)
            with pytest.raises(QuicConnectionError):
                await p.migrate()
        protocols = server.protocols
        for proto in protocols:
            with pytest.raises(RuntimeError, match="client"):
                proto._quic.migrate()
            with pytest.raises(NotImplementedError):
                proto.change_connection_id()


async def test_migration_against_aioquic_server(certs, client_config, tmp_path):
    pytest.importorskip("aioquic")
    from h3_helpers import read_line_with, subprocess_peer

    argv = [sys.executable, os.path.join(PEERS, "aioquic_peer.py"), "server", "--cert",
            certs.cert, "--key", certs.key, "--lifetime", "80"]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-server",
                               stdout_pipe=True) as proc:
        line = await read_line_with(proc, "LISTENING", 30, str(tmp_path / "aioquic-server.err"))
        port = int(line.split()[1])
        with anyio.fail_after(60):
            async with client(port, client_config(alpn_protocols=["aqtest"])) as p:
                for _ in range(3):
                    payload = os.urandom(100_000)
                    assert await echo_roundtrip(p, payload) == payload
                    await p.migrate()
                payload = os.urandom(100_000)
                assert await echo_roundtrip(p, payload) == payload


async def test_aioquic_rebinding_idiom_moves_the_client(server_config, client_config):
    """aioquic's interop.py moves a client to a new socket by closing
    ``protocol._transport`` and attaching the protocol to a new asyncio socket: the
    connection survives the close, moves to a new port of the engine's own, the server
    validates the new path (a PATH_CHALLENGE in the client's qlog) and follows."""
    import asyncio

    from aiopquic.quic.logger import QuicLogger

    logger = QuicLogger()
    protocols = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=protocols) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config(quic_logger=logger)) as p:
                peer = await protocols.next()
                old = p._transport.get_extra_info("sockname")[1]
                await p.ping()
                p._transport.close()  # the connection lives on, as with aioquic
                await p.ping()
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: p, local_addr=("127.0.0.1", 0))
                assert transport.is_closing()  # handed back: the engine owns the sockets
                await p.ping()
                payload = os.urandom(100_000)
                assert await echo_roundtrip(p, payload) == payload
                new = p._transport.get_extra_info("sockname")[1]
                assert new != old
                assert peer._quic.get_peer_address()[1] == new
    challenges = [f for e in logger.to_dict()["traces"][0]["events"]
                  if e["name"] == "transport:packet_received" and
                  e["data"]["header"]["packet_type"] == "1RTT"
                  for f in e["data"]["frames"] if f["frame_type"] == "path_challenge"]
    assert challenges


async def test_a_server_protocol_refuses_a_new_socket(server_config, client_config):
    protocols = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=protocols) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config()) as p:
                await p.ping()
                peer = await protocols.next()
                with pytest.raises(NotImplementedError):
                    peer.connection_made(object())
                with pytest.raises(NotImplementedError):
                    peer.connection_lost(None)
