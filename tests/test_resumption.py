"""Session resumption and 0-RTT over real UDP on 127.0.0.1 (aioquic's names and semantics).

Our client and server: the server sends a ticket after the handshake, ``connect()``'s
``session_ticket_handler`` gets it as a :class:`aiopquic.tls.SessionTicket`, and
``configuration.session_ticket`` resumes with it; stream data and a datagram written before
the handshake completes travel as 0-RTT.  When the server cannot use the ticket (another
server: another ticket key) the handshake falls back to a full one and the streams' data is
sent again after it.  ``early_data=False`` turns 0-RTT off on either side.  Bad tickets raise
ValueError naming ``session_ticket``; damaged ones never crash.  Interop: aioquic's client
against our server, our client against aioquic's server (both ways with 0-RTT), and Debian's
gtlsclient (``--session-file --tp-file``) resuming against ``python -m aiopquic serve``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import struct
import sys

import anyio
import pytest
from h3_helpers import read_line_with, subprocess_peer, tail
from impair import Relay
from quic_helpers import (
    HOST,
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic import events
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.tls import CipherSuite, SessionTicket, session_ticket_from_blob

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
DGRAM = 65536


@pytest.fixture
def scfg(server_config):
    def make(**kw):
        return server_config(max_datagram_frame_size=DGRAM, **kw)
    return make


@pytest.fixture
def ccfg(client_config):
    def make(**kw):
        return client_config(max_datagram_frame_size=DGRAM, **kw)
    return make


async def get_ticket(port: int, configuration: QuicConfiguration) -> SessionTicket:
    """Connect once, return the first ticket the server sends (within 5 s)."""
    got: asyncio.Queue[SessionTicket] = asyncio.Queue()
    async with client(port, configuration, session_ticket_handler=got.put_nowait) as proto:
        await proto.ping()
        with anyio.fail_after(5):
            ticket = await got.get()
    first = [e for e in proto.seen if isinstance(e, events.HandshakeCompleted)] \
        if isinstance(proto, RecordingProtocol) else []
    assert all(not e.session_resumed for e in first)
    return ticket


async def early_exchange(port: int, configuration: QuicConfiguration, *, streams: int = 1,
                         size: int = 1000,
                         datagram: bool = True) -> tuple[RecordingProtocol, list[bytes]]:
    """Connect with wait_connected=False; before the handshake completes write ``streams``
    echo streams (+ FIN) and one datagram; return the protocol and the echoes."""
    async with client(port, configuration, wait_connected=False,
                      create_protocol=RecordingProtocol) as proto:
        readers = []
        for i in range(streams):
            reader, writer = await proto.create_stream()
            writer.write(bytes([65 + i]) * size)
            writer.write_eof()
            readers.append(reader)
        if datagram:
            proto._quic.send_datagram_frame(b"early datagram")
        with anyio.fail_after(10):
            echoes = [await r.read() for r in readers]
            await proto.wait_connected()
    return proto, echoes


def kinds(proto) -> list[str]:
    return [type(e).__name__ for e in proto.seen]


# ------------------------------------------------------------------------ our client/server


async def test_resume_with_0rtt_stream_and_datagram(scfg, ccfg):
    coll = ProtocolCollector()
    async with running_server(scfg(), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
        first = await coll.next()
        assert first._quic.session_resumed is False
        assert isinstance(ticket, SessionTicket)
        assert ticket.server_name == "localhost"
        assert ticket.alpn_protocol == "test"
        assert ticket.max_early_data_size == 0xFFFFFFFF
        assert ticket.cipher_suite in (CipherSuite.AES_128_GCM_SHA256,
                                       CipherSuite.AES_256_GCM_SHA384,
                                       CipherSuite.CHACHA20_POLY1305_SHA256)
        assert ticket.is_valid and ticket.ticket[:4] == b"AQST"

        # 20 ms each way: Python writes long before the handshake could complete, so what
        # it writes must travel as 0-RTT (on bare loopback a slow interpreter may lose
        # that race and send in 1-RTT).  The relay stays up until the server has seen the
        # client's Finished (the client closes as soon as its echoes are in).
        with Relay(upstream=(HOST, srv.local_port), listen_host=HOST, delay_ms=20) as relay:
            proto, echoes = await early_exchange(relay.address[1],
                                                 ccfg(session_ticket=ticket), streams=2)
            assert echoes == [b"A" * 1000, b"B" * 1000]
            done = [e for e in proto.seen if isinstance(e, events.HandshakeCompleted)]
            assert len(done) == 1
            assert done[0].session_resumed is True and done[0].early_data_accepted is True
            assert proto._quic.early_data_rejected is False

            server = await coll.next()
            with anyio.fail_after(5):
                while not ({"DatagramFrameReceived", "HandshakeCompleted"}
                           <= set(kinds(server))):
                    await asyncio.sleep(0.01)
        assert [e.data for e in server.seen
                if isinstance(e, events.DatagramFrameReceived)] == [b"early datagram"]
        sdone = [e for e in server.seen if isinstance(e, events.HandshakeCompleted)]
        assert sdone and sdone[0].session_resumed and sdone[0].early_data_accepted
        seen = kinds(server)
        # 0-RTT: the data reached the server before its handshake completed, after the ALPN
        # (aioquic's order: ProtocolNegotiated, the 0-RTT data, HandshakeCompleted)
        assert seen.index("StreamDataReceived") < seen.index("HandshakeCompleted"), seen
        assert seen.index("DatagramFrameReceived") < seen.index("HandshakeCompleted"), seen
        assert seen[0] == "ProtocolNegotiated" and seen.count("ProtocolNegotiated") == 1, seen
        assert server._quic.alpn_protocol == "test"


async def test_tickets_resume_more_than_once(scfg, ccfg):
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
        for _ in range(2):  # each ClientHello differs, so anti-replay lets both in
            proto, echoes = await early_exchange(srv.local_port, ccfg(session_ticket=ticket))
            assert echoes == [b"A" * 1000]
            assert proto._quic.session_resumed and proto._quic.early_data_accepted


async def test_other_server_falls_back_and_resends_0rtt_streams(scfg, ccfg):
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
    coll = ProtocolCollector()
    # a fresh server has another ticket key: full handshake, 0-RTT refused
    async with running_server(scfg(), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        with Relay(upstream=(HOST, srv.local_port), listen_host=HOST, delay_ms=20) as relay:
            proto, echoes = await early_exchange(relay.address[1],
                                                 ccfg(session_ticket=ticket),
                                                 streams=3, size=20000)
        assert echoes == [bytes([65 + i]) * 20000 for i in range(3)]
        done = [e for e in proto.seen if isinstance(e, events.HandshakeCompleted)]
        assert done[0].session_resumed is False and done[0].early_data_accepted is False
        assert proto._quic.early_data_rejected is True
        server = await coll.next()
        assert server._quic.session_resumed is False
        assert server._quic.early_data_accepted is False
        # the streams were opened again with the same ids: the server saw 0, 4, 8
        ids = sorted({e.stream_id for e in server.seen
                      if isinstance(e, events.StreamDataReceived)})
        assert ids == [0, 4, 8]


async def test_stream_reset_in_refused_0rtt_is_reset_again(scfg, ccfg):
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
    coll = ProtocolCollector()
    async with running_server(scfg(), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        with Relay(upstream=(HOST, srv.local_port), listen_host=HOST, delay_ms=20) as relay:
            async with client(relay.address[1], ccfg(session_ticket=ticket),
                              wait_connected=False, create_protocol=RecordingProtocol) as proto:
                quic = proto._quic
                doomed = quic.get_next_available_stream_id()
                quic.send_stream_data(doomed, b"never mind" * 100)
                quic.reset_stream(doomed, 7)
                reader, writer = await proto.create_stream()
                writer.write(b"kept")
                writer.write_eof()
                with anyio.fail_after(10):
                    assert await reader.read() == b"kept"
                server = await coll.next()
                reset = await server.wait_event(events.StreamReset,
                                                lambda e: e.stream_id == doomed)
                assert reset.error_code == 7
            assert quic.early_data_rejected is True


async def test_server_without_early_data_resumes_without_0rtt(scfg, ccfg):
    coll = ProtocolCollector()
    async with running_server(scfg(early_data=False), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
        await coll.next()
        assert ticket.max_early_data_size is None
        proto, echoes = await early_exchange(srv.local_port, ccfg(session_ticket=ticket))
        assert echoes == [b"A" * 1000]
        assert proto._quic.session_resumed is True
        assert proto._quic.early_data_accepted is False
        assert proto._quic.early_data_rejected is False  # nothing was attempted
        server = await coll.next()
        assert server._quic.session_resumed and not server._quic.early_data_accepted
        seen = kinds(server)
        assert seen.index("HandshakeCompleted") < seen.index("StreamDataReceived"), seen


async def test_client_without_early_data_sends_after_the_handshake(scfg, ccfg):
    coll = ProtocolCollector()
    async with running_server(scfg(), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
        await coll.next()
        proto, echoes = await early_exchange(
            srv.local_port, ccfg(session_ticket=ticket, early_data=False))
        assert echoes == [b"A" * 1000]
        assert proto._quic.session_resumed is True
        assert not proto._quic.early_data_accepted and not proto._quic.early_data_rejected
        server = await coll.next()
        seen = kinds(server)
        assert seen.index("HandshakeCompleted") < seen.index("StreamDataReceived"), seen


async def test_session_ticket_file_saves_and_resumes(scfg, ccfg, tmp_path):
    path = str(tmp_path / "tickets.bin")
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        async with client(srv.local_port, ccfg(session_ticket_file=path)) as proto:
            await proto.ping()
            with anyio.fail_after(5):
                while not os.path.exists(path):
                    await asyncio.sleep(0.01)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        proto, echoes = await early_exchange(srv.local_port, ccfg(session_ticket_file=path))
        assert echoes == [b"A" * 1000]
        assert proto._quic.session_resumed and proto._quic.early_data_accepted
        # another server name finds no ticket in the file: a full handshake
        other = ccfg(session_ticket_file=path, server_name="127.0.0.1")
        async with client(srv.local_port, other, create_protocol=RecordingProtocol) as p2:
            await p2.ping()
        assert p2._quic.session_resumed is False


async def test_damaged_ticket_file_is_a_full_handshake(scfg, ccfg, tmp_path):
    path = tmp_path / "tickets.bin"
    path.write_bytes(struct.pack("!I", 40) + os.urandom(40) + b"\xff\xff")
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        async with client(srv.local_port, ccfg(session_ticket_file=str(path))) as proto:
            await proto.ping()
        assert proto._quic.session_resumed is False


async def test_anyio_connect_takes_the_handler_and_resumes(scfg, ccfg):
    import aiopquic.anyio as aq_anyio

    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        got: list[SessionTicket] = []
        async with aq_anyio.connect(HOST, srv.local_port, configuration=ccfg(),
                                    session_ticket_handler=got.append) as conn:
            await conn.ping()
            with anyio.fail_after(5):
                while not got:
                    await anyio.sleep(0.01)
        async with aq_anyio.connect(HOST, srv.local_port,
                                    configuration=ccfg(session_ticket=got[0])) as conn:
            assert conn.quic.session_resumed is True


# ------------------------------------------------------------------------ bad tickets


def _signed(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def _blob(**over) -> bytes:
    f = {"tls": b"\x01" * 40, "tp": b"", "issued": 1, "lifetime": 0, "early": 0,
         "suite": 0x1301, "alpn": b"test", "sni": b"localhost"}
    f.update(over)
    return _signed(b"AQST\x01" + struct.pack("!I", len(f["tls"])) + f["tls"]
                   + struct.pack("!I", len(f["tp"])) + f["tp"]
                   + struct.pack("!QIIHB", f["issued"], f["lifetime"], f["early"], f["suite"],
                                 len(f["alpn"])) + f["alpn"]
                   + struct.pack("!H", len(f["sni"])) + f["sni"])


def _ticket(blob: bytes) -> SessionTicket:
    base = session_ticket_from_blob(_blob())
    return dataclasses.replace(base, ticket=blob)


@pytest.mark.parametrize("value", [
    object(),
    b"AQST",  # not a SessionTicket at all
    _ticket(b"aioquic's opaque ticket bytes"),
    _ticket(_blob()[:-1]),  # truncated
    _ticket(_blob() + b"x"),  # trailing bytes
    _ticket(_signed(_blob()[:-32] + b"x")),  # trailing bytes, digest made to match
    _ticket(b"AQST\x09" + _blob()[5:]),  # unknown format version
    _ticket(_blob(tls=b"")),
    _ticket(_blob()[:20] + bytes([_blob()[20] ^ 1]) + _blob()[21:]),  # one bit flipped
])
def test_bad_ticket_is_a_value_error_naming_session_ticket(value):
    with pytest.raises(ValueError, match="QuicConfiguration.session_ticket"):
        QuicConfiguration(is_client=True, session_ticket=value)


@pytest.mark.parametrize("tls, tp", [
    (os.urandom(300), b""),  # framing fine, GnuTLS session data garbage
    (b"\x00" * 8, b""),
])
async def test_garbage_ticket_contents_never_crash(scfg, ccfg, tls, tp):
    ticket = _ticket(_blob(tls=tls, tp=tp, early=0xFFFFFFFF))
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        try:
            async with client(srv.local_port, ccfg(session_ticket=ticket),
                              create_protocol=RecordingProtocol) as proto:
                await proto.ping()
        except ValueError as exc:
            assert "session_ticket" in str(exc)
        else:
            assert proto._quic.session_resumed is False
        # the server is unharmed
        async with client(srv.local_port, ccfg()) as proto:
            await proto.ping()


async def test_garbage_transport_parameters_in_a_real_ticket(scfg, ccfg):
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        ticket = await get_ticket(srv.local_port, ccfg())
        raw = ticket.ticket
        (tls_len,) = struct.unpack_from("!I", raw, 5)
        pos = 9 + tls_len
        (tp_len,) = struct.unpack_from("!I", raw, pos)
        bad = _signed(raw[:pos + 4] + b"\xff" * tp_len + raw[pos + 4 + tp_len:-32])
        with pytest.raises(ValueError, match="session_ticket"):
            async with client(srv.local_port, ccfg(session_ticket=_ticket(bad))):
                pass


# ------------------------------------------------------------------------ sans-IO driver


def _sansio_resume(client_config, first_server, second_server):
    from test_sansio import SansioPair, _has

    tickets: list[SessionTicket] = []
    pair = SansioPair(client_config(), first_server)
    pair.client._session_ticket_handler = tickets.append
    pair.run_until(lambda: bool(tickets), "a session ticket")

    pair = SansioPair(client_config(session_ticket=tickets[0]), second_server)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"sent before the handshake", end_stream=True)
    pair.run_until(lambda: _has(pair.server_events, events.StreamDataReceived,
                                lambda e: e.end_stream), "the stream's data")
    data = b"".join(e.data for e in pair.server_events
                    if isinstance(e, events.StreamDataReceived))
    assert data == b"sent before the handshake"
    return tickets[0], pair


def test_sansio_server_connections_of_one_configuration_resume(client_config, server_config):
    shared = server_config()
    ticket, pair = _sansio_resume(client_config, shared, shared)
    # sans-IO server connections share the configuration's ticket key but refuse 0-RTT
    assert ticket.max_early_data_size is None
    assert pair.client.session_resumed is True and pair.server.session_resumed is True
    assert not pair.client.early_data_accepted and not pair.client.early_data_rejected


def test_sansio_client_with_0rtt_falls_back_on_another_server(client_config, server_config,
                                                             scfg, ccfg):
    # a ticket allowing 0-RTT (from a socket server) against a sans-IO server of another
    # configuration: full handshake, the early data is sent again
    import asyncio as _asyncio

    async def ticket_from_socket_server() -> SessionTicket:
        async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
            return await get_ticket(srv.local_port, ccfg())

    ticket = _asyncio.run(ticket_from_socket_server())
    assert ticket.max_early_data_size
    from test_sansio import SansioPair, _has

    pair = SansioPair(client_config(session_ticket=ticket), server_config())
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"0-RTT attempt", end_stream=True)
    pair.run_until(lambda: _has(pair.server_events, events.StreamDataReceived,
                                lambda e: e.end_stream), "the stream's data")
    data = b"".join(e.data for e in pair.server_events
                    if isinstance(e, events.StreamDataReceived))
    assert data == b"0-RTT attempt"
    assert pair.client.session_resumed is False and pair.client.early_data_rejected is True


async def test_servers_of_one_configuration_resume_each_others_tickets(scfg, ccfg):
    shared = scfg()
    async with running_server(shared, stream_handler=echo_stream_handler) as one:
        ticket = await get_ticket(one.local_port, ccfg())
    async with running_server(shared, stream_handler=echo_stream_handler) as two:
        with Relay(upstream=(HOST, two.local_port), listen_host=HOST, delay_ms=20) as relay:
            proto, echoes = await early_exchange(relay.address[1], ccfg(session_ticket=ticket),
                                                 streams=2)
    assert echoes == [b"A" * 1000, b"B" * 1000]
    # the key is the configuration's, so the session resumes; but GnuTLS's anti-replay
    # refuses 0-RTT with a ticket issued before this server started (it cannot know
    # whether that ClientHello was seen before): resumed, 0-RTT refused, data resent
    assert proto._quic.session_resumed is True
    assert proto._quic.early_data_accepted is False
    assert proto._quic.early_data_rejected is True


# ------------------------------------------------------------------------ interop


def _aioquic_peer(tmp_path, *argv: str):
    return subprocess_peer(sys.executable, os.path.join(PEERS, "aioquic_resume.py"), *argv,
                           log_dir=str(tmp_path), name="aioquic-" + argv[0],
                           stdout_pipe=True)


async def test_aioquic_client_resumes_with_0rtt_against_our_server(server_config, certs,
                                                                   tmp_path):
    coll = ProtocolCollector()
    async with running_server(server_config(alpn_protocols=["aqtest"]), create_protocol=coll,
                              stream_handler=echo_stream_handler) as srv:
        async with _aioquic_peer(tmp_path, "client", "--port", str(srv.local_port),
                                       "--ca", certs.ca) as process:
            line = await read_line_with(process, "{", 60, str(tmp_path / "aioquic-client.err"))
        result = json.loads(line)
        assert result == {"resumed": True, "early": True, "echo_ok": True,
                          "max_early_data": 0xFFFFFFFF}, result
        await coll.next()
        second = await coll.next()
        assert second._quic.session_resumed and second._quic.early_data_accepted


async def test_our_client_resumes_with_0rtt_against_aioquic_server(client_config, certs,
                                                                   tmp_path):
    err = str(tmp_path / "aioquic-server.err")
    async with _aioquic_peer(tmp_path, "server", "--cert", certs.cert, "--key",
                                   certs.key) as process:
        line = await read_line_with(process, "LISTENING", 60, err)
        port = int(line.split()[1])
        cfg = client_config(alpn_protocols=["aqtest"])
        ticket = await get_ticket(port, cfg)
        assert ticket.max_early_data_size  # aioquic allows 0-RTT
        first = json.loads(await read_line_with(process, "{", 10, err))
        assert first == {"resumed": False, "early": False}
        proto, echoes = await early_exchange(
            port, client_config(alpn_protocols=["aqtest"], session_ticket=ticket),
            datagram=False)
        assert echoes == [b"A" * 1000]
        assert proto._quic.session_resumed and proto._quic.early_data_accepted
        second = json.loads(await read_line_with(process, "{", 10, err))
        assert second == {"resumed": True, "early": True}


@pytest.mark.interop
@pytest.mark.skipif(not os.access(GTLSCLIENT, os.X_OK),
                    reason="gtlsclient missing (Debian package ngtcp2-client)")
async def test_gtlsclient_resumes_with_0rtt_against_our_cli_server(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(50000))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "aiopquic", "serve", "--host", HOST, "--port", "0",
            "--root", str(root), "--quiet"]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aiopquic-serve",
                               stdout_pipe=True) as server:
        line = await read_line_with(server, "listening on", 60,
                                    str(tmp_path / "aiopquic-serve.err"))
        port = line.rsplit(":", 1)[1].strip()
        url = f"https://localhost:{port}/blob.bin"
        sess, tp = str(tmp_path / "sess.pem"), str(tmp_path / "tp.pem")
        for run, extra in (("first", ["--wait-for-ticket"]), ("second", [])):
            dl = tmp_path / ("dl-" + run)
            dl.mkdir()
            name = "gtlsclient-" + run
            async with subprocess_peer(GTLSCLIENT, "--exit-on-all-streams-close", *extra,
                                       f"--session-file={sess}", f"--tp-file={tp}",
                                       f"--download={dl}", HOST, port, url,
                                       log_dir=str(tmp_path), name=name) as process:
                with anyio.fail_after(30):
                    rc = await process.wait()
            log_out = tail(str(tmp_path / (name + ".out")), 10**7) + \
                tail(str(tmp_path / (name + ".err")), 10**7)
            assert rc == 0, log_out[-3000:]
            assert (dl / "blob.bin").read_bytes() == (root / "blob.bin").read_bytes()
        # the second run sent its request in 0-RTT packets and the server took them
        assert "type=0RTT" in log_out
        assert "Early data was rejected" not in log_out


async def test_061_transport_context_ticket_file(certs, tmp_path):
    """aiopquic 0.6.1's TransportContext(ticket_file=...): the first connection stores the
    ticket, the second resumes from it (session_resumed)."""
    from test_seed_api import _drain_until

    from aiopquic._binding import _transport as tc

    path = str(tmp_path / "tickets.bin")
    server = tc.TransportContext()
    server.start(port=0, cert_file=certs.cert, key_file=certs.key, alpn="moq-00",
                 is_client=False, host=HOST)
    client_tc = tc.TransportContext()
    try:
        client_tc.start(port=0, alpn="moq-00", is_client=True, ca_file=certs.ca,
                        ticket_file=path)
        port = server.endpoints[0].local_port
        resumed = []
        for _ in range(2):
            cnx = client_tc.create_client_connection(HOST, port, sni="localhost", alpn="moq-00")
            await _drain_until([server, client_tc], lambda s, cnx=cnx: any(
                c is client_tc and e[0] == tc.EVT_READY and e[5] == cnx for c, e in s))
            resumed.append(client_tc.session_resumed(cnx))
            # the ticket comes after the handshake: keep pumping events until it is stored
            await _drain_until([server, client_tc], lambda s: os.path.exists(path))
        assert resumed == [False, True]
    finally:
        client_tc.stop()
        server.stop()


async def test_mutated_tickets_never_crash(scfg, ccfg):
    """Bit flips anywhere: refused by the digest (ValueError at configuration time).
    Re-signed flips in the transport parameters and metadata: a ValueError, a clean
    connection error or a working connection -- and the server keeps serving."""
    import random

    rng = random.Random(11)
    async with running_server(scfg(), stream_handler=echo_stream_handler) as srv:
        raw = (await get_ticket(srv.local_port, ccfg())).ticket
        (tls_len,) = struct.unpack_from("!I", raw, 5)
        for _ in range(40):
            flipped = bytearray(raw)
            pos = rng.randrange(len(raw))
            flipped[pos] ^= 1 << rng.randrange(8)
            with pytest.raises(ValueError, match="session_ticket"):
                ccfg(session_ticket=_ticket(bytes(flipped)))
        outcomes = set()
        for _ in range(15):
            body = bytearray(raw[:-32])
            pos = rng.randrange(9 + tls_len, len(body))
            body[pos] ^= 1 << rng.randrange(8)
            try:
                cfg = ccfg(session_ticket=_ticket(_signed(bytes(body))), handshake_timeout=3)
                async with client(srv.local_port, cfg) as proto:
                    await proto.ping()
                outcomes.add("connected")
            except ValueError as exc:
                assert "session_ticket" in str(exc)
                outcomes.add("refused")
            except ConnectionError:
                outcomes.add("connection error")
        assert outcomes
        async with client(srv.local_port, ccfg()) as proto:
            await proto.ping()
