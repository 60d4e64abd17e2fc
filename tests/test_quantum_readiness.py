"""``QuicConfiguration.quantum_readiness_test`` (aioquic's name): the client's ClientHello
carries 1200 extra bytes, so it spans two Initial packets and the server must reassemble
it.  Over real UDP against our server, aioquic's and Debian's ``gtlsserver``, with a
counting relay in between that sees how many Initial datagrams the client sends before the
server first answers (1 without the flag, 2 with it)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Optional, cast

import anyio
import pytest
from h3_helpers import free_udp_port, read_line_with, self_signed, subprocess_peer, tail
from quic_helpers import (
    HOST,
    KiB,
    Pattern,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)
from test_resumption import early_exchange, get_ticket

from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
PEER = os.path.join(PEERS, "aioquic_peer.py")
GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
ALPN = "aqtest"
QUIC_V1, QUIC_V2 = 0x00000001, 0x6B3343CF


def is_initial(datagram: bytes) -> bool:
    """True when the datagram starts with a QUIC v1 or v2 Initial packet."""
    if len(datagram) < 5 or not datagram[0] & 0x80:
        return False
    version = int.from_bytes(datagram[1:5], "big")
    kind = (datagram[0] >> 4) & 3
    return (version == QUIC_V1 and kind == 0) or (version == QUIC_V2 and kind == 1)


class CountingRelay(asyncio.DatagramProtocol):
    """Forwards datagrams between one client and a server, counting the client's Initial
    datagrams (and their bytes) sent before the server's first datagram came back."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.upstream: Optional[asyncio.DatagramTransport] = None
        self.client: Optional[tuple[str, int]] = None
        self.first_flight = 0
        self.first_flight_bytes = 0
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client = addr
        if not self.answered and is_initial(data):
            self.first_flight += 1
            self.first_flight_bytes += len(data)
        assert self.upstream is not None
        self.upstream.sendto(data)

    def from_server(self, data: bytes) -> None:
        self.answered = True
        if self.transport is not None and self.client is not None:
            self.transport.sendto(data, self.client)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: CountingRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.from_server(data)


@asynccontextmanager
async def counting_relay(port: int) -> AsyncIterator[tuple[CountingRelay, int]]:
    """A relay on 127.0.0.1 (a free port) to the server at 127.0.0.1:``port``; yields the
    relay and its port."""
    loop = asyncio.get_running_loop()
    relay = CountingRelay((HOST, port))
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=(HOST, 0))
    upstream, _ = await loop.create_datagram_endpoint(lambda: _Upstream(relay),
                                                      remote_addr=(HOST, port))
    relay.upstream = upstream
    try:
        yield relay, int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()
        upstream.close()


def test_first_flight_of_the_sansio_face_is_two_initials() -> None:
    """Without any network: the client's first datagrams are one Initial without the flag,
    two with it (1200 bytes each: the ClientHello no longer fits one)."""
    for flag, expected in ((False, 1), (True, 2)):
        cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                                quantum_readiness_test=flag)
        conn = QuicConnection(configuration=cfg)
        conn.connect((HOST, 4433), now=time.time())
        datagrams = [data for data, _ in conn.datagrams_to_send(now=time.time())]
        assert len(datagrams) == expected, (flag, [len(d) for d in datagrams])
        assert all(is_initial(d) for d in datagrams)


def test_flag_is_a_bool() -> None:
    with pytest.raises(TypeError, match="quantum_readiness_test"):
        QuicConfiguration(is_client=True, quantum_readiness_test=1).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", [False, True])
async def test_our_server_reassembles_a_large_client_hello(flag, server_config, client_config):
    payload = Pattern(seed=0x51).slice(0, 256 * KiB)
    async with running_server(server_config(alpn_protocols=[ALPN]),
                              stream_handler=echo_stream_handler) as server:
        async with counting_relay(server.local_port) as (relay, port):
            with anyio.fail_after(30):
                config = client_config(alpn_protocols=[ALPN], quantum_readiness_test=flag)
                async with client(port, config) as protocol:
                    echoed = await echo_roundtrip(protocol, payload)
    assert echoed == payload
    assert relay.first_flight == (2 if flag else 1), relay.first_flight
    if flag:
        assert relay.first_flight_bytes >= 2400


async def test_aioquic_server_reassembles_our_large_client_hello(client_config, certs, tmp_path):
    argv = [sys.executable, PEER, "server", "--cert", certs.cert, "--key", certs.key,
            "--alpn", ALPN, "--lifetime", "100"]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-server",
                               stdout_pipe=True) as process:
        with anyio.fail_after(30):
            line = (await process.stdout.readline()).decode().strip()
        assert line.startswith("LISTENING "), (
            f"aioquic server did not start: {line!r}\n"
            f"{tail(str(tmp_path / 'aioquic-server.err'))}")
        payload = Pattern(seed=0x52).slice(0, 64 * KiB)
        async with counting_relay(int(line.split()[1])) as (relay, port):
            with anyio.fail_after(30):
                config = client_config(alpn_protocols=[ALPN], quantum_readiness_test=True)
                async with client(port, config) as protocol:
                    echoed = await echo_roundtrip(protocol, payload)
    assert echoed == payload
    assert relay.first_flight == 2, relay.first_flight


@pytest.mark.interop
@pytest.mark.skipif(not os.access(GTLSSERVER, os.X_OK),
                    reason="gtlsserver missing (Debian package ngtcp2-server)")
async def test_gtlsserver_reassembles_our_large_client_hello(tmp_path):
    from aiopquic.http3_tools import fetch

    cert = self_signed(str(tmp_path))
    root = tmp_path / "htdocs"
    root.mkdir()
    body = os.urandom(100 * KiB)
    (root / "blob.bin").write_bytes(body)
    server_port = free_udp_port()
    argv = [GTLSSERVER, "-q", "-d", str(root), HOST, str(server_port), cert.key, cert.cert]

    def configuration(flag: bool) -> QuicConfiguration:
        return QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=cert.cert,
                                 server_name="localhost", quantum_readiness_test=flag,
                                 handshake_timeout=2.0)

    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="gtlsserver"):
        # gtlsserver binds asynchronously: wait until a plain request gets an answer
        with anyio.fail_after(30):
            while True:
                try:
                    await fetch(f"https://{HOST}:{server_port}/blob.bin", io.BytesIO(),
                                configuration=configuration(False))
                    break
                except ConnectionError:
                    await anyio.sleep(0.1)
        async with counting_relay(server_port) as (relay, port):
            out = io.BytesIO()
            with anyio.fail_after(30):
                status, _, size = await fetch(f"https://{HOST}:{port}/blob.bin", out,
                                              configuration=configuration(True))
    assert status == 200 and size == len(body), tail(str(tmp_path / "gtlsserver.err"))
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(body).digest()
    assert relay.first_flight == 2, relay.first_flight


async def test_resumes_with_0rtt_against_aioquic_server(client_config, certs, tmp_path):
    """With a session ticket the ClientHello also carries pre_shared_key, which must stay
    the last extension (aioquic's server refuses anything after it): resumption and 0-RTT
    still work with the large ClientHello."""
    argv = [sys.executable, os.path.join(PEERS, "aioquic_resume.py"), "server", "--cert",
            certs.cert, "--key", certs.key]
    err = str(tmp_path / "aioquic-server.err")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-server",
                               stdout_pipe=True) as process:
        port = int((await read_line_with(process, "LISTENING", 60, err)).split()[1])
        ticket = await get_ticket(port, client_config(alpn_protocols=[ALPN],
                                                      quantum_readiness_test=True))
        assert json.loads(await read_line_with(process, "{", 10, err)) == {
            "resumed": False, "early": False}
        async with counting_relay(port) as (relay, relay_port):
            proto, echoes = await early_exchange(
                relay_port, client_config(alpn_protocols=[ALPN], session_ticket=ticket,
                                          quantum_readiness_test=True), datagram=False)
        assert echoes == [b"A" * 1000]
        assert proto._quic.session_resumed and proto._quic.early_data_accepted
        assert json.loads(await read_line_with(process, "{", 10, err)) == {
            "resumed": True, "early": True}
        assert relay.first_flight >= 2, relay.first_flight
