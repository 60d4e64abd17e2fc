"""What a peer does must reach the application, completely and promptly: a client without
ALPN is refused (RFC 9001 8.1), every STOP_SENDING is reported however many arrive at once,
and a peer that vanishes (ICMP port unreachable) closes the connection at once instead of
after the idle timeout."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import anyio
import pytest
from quic_helpers import (
    HOST,
    HoldingSink,
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic.events import ConnectionTerminated, StopSendingReceived, StreamDataReceived

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


async def test_client_without_alpn_is_refused(server_config, client_config):
    """A server that requires ALPN closes a client offering none with TLS alert 120
    (no_application_protocol, QUIC error 0x178) instead of accepting it."""
    async with running_server(server_config(alpn_protocols=["a"])) as server:
        configuration = client_config(alpn_protocols=None, handshake_timeout=10.0)
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            with anyio.fail_after(15):
                async with client(server.local_port, configuration,
                                  create_protocol=RecordingProtocol):
                    pytest.fail("connected without any ALPN protocol")
        assert time.monotonic() - started < 5.0
        assert "0x178" in str(info.value) or "no_application_protocol" in str(info.value) \
            or getattr(info.value, "error_code", None) == 0x178, repr(info.value)


async def test_every_stop_sending_is_reported(server_config, client_config):
    """The server stops 300 streams in one burst; the client hears about every one of them
    (the frame scanner used to keep at most 16 per receive batch)."""
    count = 300
    servers = ProtocolCollector()
    async with running_server(server_config(max_streams_bidi=1000), create_protocol=servers,
                              stream_handler=HoldingSink()) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config(max_streams_bidi=1000),
                              create_protocol=RecordingProtocol) as protocol:
                ids, writers = [], []  # keep the writers: a dropped writer sends FIN
                for _ in range(count):
                    _, writer = await protocol.create_stream()
                    writer.write(b"x")
                    writers.append(writer)
                    ids.append(writer.get_extra_info("stream_id"))
                await protocol.ping()
                sp = await servers.next()
                got: set = set()
                while not got >= set(ids):  # events arrive in any order
                    got.add((await sp.wait_event(StreamDataReceived, timeout=20)).stream_id)
                for sid in ids:  # one burst: all in one or a few packets
                    sp._quic.stop_stream(sid, 0x42)
                sp.transmit()
                seen: set = set()
                while len(seen) < count:
                    event = await protocol.wait_event(
                        StopSendingReceived, lambda e: e.stream_id not in seen, timeout=20)
                    assert event.error_code == 0x42
                    seen.add(event.stream_id)
                assert seen == set(ids)


SERVER = textwrap.dedent("""
    import asyncio, sys
    from aiopquic._native import make_self_signed
    from aiopquic.asyncio import serve
    from aiopquic.quic.configuration import QuicConfiguration

    async def main():
        cert, key = make_self_signed("localhost,127.0.0.1")
        for path, pem in ((sys.argv[1], cert), (sys.argv[2], key)):
            with open(path, "wb") as f:  # closed now, also on PyPy
                f.write(pem)
        conf = QuicConfiguration(is_client=False, alpn_protocols=["t"])
        conf.load_cert_chain(sys.argv[1], sys.argv[2])
        held = []
        def on_stream(reader, writer):
            held.append((reader, writer))  # a dropped writer would send FIN
        server = await serve("127.0.0.1", 0, configuration=conf, stream_handler=on_stream)
        print(server.local_port, flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
""")


async def test_vanished_peer_closes_promptly(tmp_path, client_config):
    """The server process is killed (no CONNECTION_CLOSE).  The client's next packets draw
    ICMP port unreachable: the connection must close within a second or two with a clear
    reason, and a pending reader must get an error, not a clean EOF."""
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))
    proc = subprocess.Popen([sys.executable, "-c", SERVER, cert, key], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        port = int(line)
        configuration = client_config(alpn_protocols=["t"], idle_timeout=60.0)
        configuration.load_verify_locations(cafile=cert)
        with anyio.fail_after(30):
            async with client(port, configuration, create_protocol=RecordingProtocol) as protocol:
                reader, writer = await protocol.create_stream()
                writer.write(b"hello")
                await protocol.ping()
                proc.kill()
                proc.wait(timeout=10)
                started = time.monotonic()
                writer.write(b"are you there?")
                event = await protocol.wait_event(ConnectionTerminated, timeout=10)
                assert time.monotonic() - started < 5.0
                assert "unreachable" in event.reason_phrase, event
                with pytest.raises(ConnectionError):
                    await asyncio.wait_for(reader.read(), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert HOST  # the test only touched loopback


class _Proxy(asyncio.DatagramProtocol):
    """A UDP hop between one client and the server that remembers the connection IDs the
    client addresses the server with (short-header packets: byte 0 has the top bit clear,
    the 18-byte destination connection ID follows)."""

    def __init__(self, server: tuple) -> None:
        self.server = server
        self.client: Any = None
        self.dcids: set = set()
        self.transport: Any = None
        self.upstream: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if data and not data[0] & 0x80 and len(data) > 19:
            self.dcids.add(data[1:19])
        self.transport.sendto(data, self.server)


async def test_closing_connection_reflects_little(server_config, client_config):
    """While a server connection is closing, packets carrying its connection ID from an
    unvalidated address get the saved CONNECTION_CLOSE only at the 1st, 2nd, 4th, 8th, 16th
    one, and never more bytes than the packet that triggered it (RFC 9000 10.2.1; it used to
    answer every packet: 3.5-3.7x reflection)."""
    servers = ProtocolCollector()
    loop = asyncio.get_running_loop()
    async with running_server(server_config(), create_protocol=servers,
                              stream_handler=echo_stream_handler) as server:
        proxy = _Proxy((HOST, server.local_port))
        ptransport, _ = await loop.create_datagram_endpoint(lambda: proxy,
                                                            local_addr=(HOST, 0))
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind((HOST, 0))
        raw.setblocking(False)
        try:
            port = ptransport.get_extra_info("sockname")[1]
            with anyio.fail_after(20):
                async with client(port, client_config(),
                                  create_protocol=RecordingProtocol) as protocol:
                    assert await echo_roundtrip(protocol, b"hello") == b"hello"
                    server_protocol = await servers.next()
                    assert proxy.dcids, "no short-header packet seen"
                    server_protocol.close()
                    await protocol.wait_event(ConnectionTerminated, timeout=10)
                    # the server is in its closing period now (3 PTOs): 16 triggers of 200
                    # bytes from an address it never validated, then 16 of 25 bytes
                    sent = 0
                    for size in [200] * 16 + [25] * 16:
                        for dcid in proxy.dcids:
                            pkt = bytes([0x40]) + dcid + os.urandom(size - 19)
                            raw.sendto(pkt, (HOST, server.local_port))
                            sent += len(pkt)
                    answers = []
                    with anyio.move_on_after(0.3):
                        while True:
                            answers.append(await loop.sock_recv(raw, 65536))
        finally:
            raw.close()
            ptransport.close()
    per_cid = len(proxy.dcids)
    assert answers, "the closing connection never answered (did the test miss its window?)"
    assert len(answers) <= 5 * per_cid, [len(a) for a in answers]  # 1, 2, 4, 8, 16
    assert all(len(a) <= 200 for a in answers), [len(a) for a in answers]
    assert sum(len(a) for a in answers) <= 3 * sent
