"""The aioquic names and hooks that aioquic programs touch, each checked for behaviour (and
for its error path): ``aiopquic.quic.logger``, ``aiopquic.tls``, ``aiopquic.h0``,
``quic._logger``, ``get_peer_address()``, ``change_connection_id()``,
``server._transport`` / ``protocol._transport``, ``H3Connection.send_push_promise()``,
RuntimeError for writes after FIN, ``QuicStreamAdapter``, connect()'s argument checks, and the
asyncio quickstart server surviving clients that close in every way."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import pickle
import subprocess
import sys
from typing import Any

import anyio
import pytest
from quic_helpers import (
    HOST,
    ProtocolCollector,
    RecordingProtocol,
    client,
    running_server,
    spawn,
)

from aiopquic.asyncio import connect
from aiopquic.asyncio.protocol import QuicStreamAdapter
from aiopquic.h0.connection import H0_ALPN, H0Connection
from aiopquic.h3.connection import H3_ALPN, H3Connection
from aiopquic.h3.events import DataReceived, HeadersReceived
from aiopquic.h3.exceptions import NoAvailablePushIDError
from aiopquic.quic.events import StreamDataReceived, StreamReset
from aiopquic.quic.logger import QuicFileLogger, QuicLogger, QuicLoggerTrace
from aiopquic.tls import CipherSuite, SessionTicket

pytestmark = [pytest.mark.timeout(60)]
anyio_test = pytest.mark.anyio


# ---------------------------------------------------------------------------- logger


def test_quic_logger_collects_traces_as_qlog():
    logger = QuicLogger()
    trace = logger.start_trace(is_client=True, odcid=b"\x01\x02")
    trace.log_event(category="http", event="frame_created",
                    data=trace.encode_http3_data_frame(length=5, stream_id=0))
    trace.log_event(category="http", event="frame_parsed",
                    data=trace.encode_http3_headers_frame(
                        length=9, headers=[(b":status", b"200")], stream_id=0))
    logger.end_trace(trace)
    doc = logger.to_dict()
    assert doc["qlog_version"] == "0.3" and doc["qlog_format"] == "JSON"
    (body,) = doc["traces"]
    assert body["common_fields"] == {"ODCID": "0102"}
    assert body["vantage_point"]["type"] == "client"
    names = [e["name"] for e in body["events"]]
    assert names == ["http:frame_created", "http:frame_parsed"]
    assert body["events"][1]["data"]["frame"]["headers"] == [{"name": ":status",
                                                               "value": "200"}]
    json.dumps(doc)  # serialisable


def test_quic_frame_encoders_match_aioquic():
    """Every QuicLoggerTrace.encode_* helper gives what aioquic's gives for the same input."""
    aioquic_logger = pytest.importorskip("aioquic.quic.logger")
    packet = pytest.importorskip("aioquic.quic.packet")
    ours = QuicLoggerTrace(is_client=True, odcid=b"\x01")
    theirs = aioquic_logger.QuicLoggerTrace(is_client=True, odcid=b"\x01")
    frame = packet.QuicStreamFrame(data=b"abcdef", fin=True, offset=7)
    params = packet.QuicTransportParameters(initial_max_data=1000, disable_active_migration=True,
                                            stateless_reset_token=b"\xaa" * 16)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("encode_ack_frame", ([range(0, 3), range(5, 6)], 0.025)),
        ("encode_connection_close_frame", (0x10, 0x08, "why")),
        ("encode_connection_close_frame", (0x2A, None, "")),
        ("encode_connection_limit_frame", (0x10, 500)),
        ("encode_connection_limit_frame", (0x12, 5)),
        ("encode_connection_limit_frame", (0x13, 6)),
        ("encode_crypto_frame", (frame,)),
        ("encode_data_blocked_frame", (9,)),
        ("encode_datagram_frame", (33,)),
        ("encode_handshake_done_frame", ()),
        ("encode_max_stream_data_frame", (100, 4)),
        ("encode_new_connection_id_frame", (b"\x01\x02", 1, 2, b"\x03" * 16)),
        ("encode_new_token_frame", (b"tok",)),
        ("encode_padding_frame", ()),
        ("encode_path_challenge_frame", (b"12345678",)),
        ("encode_path_response_frame", (b"87654321",)),
        ("encode_ping_frame", ()),
        ("encode_reset_stream_frame", (3, 99, 8)),
        ("encode_retire_connection_id_frame", (4,)),
        ("encode_stream_data_blocked_frame", (10, 12)),
        ("encode_stop_sending_frame", (5, 16)),
        ("encode_stream_frame", (frame, 20)),
        ("encode_streams_blocked_frame", (True, 3)),
        ("encode_streams_blocked_frame", (False, 4)),
        ("encode_transport_parameters", ("local", params)),
        ("encode_http3_data_frame", (11, 0)),
        ("encode_http3_headers_frame", (20, [(b":method", b"GET")], 0)),
        ("encode_http3_push_promise_frame", (20, [(b":path", b"/")], 1, 0)),
        ("encode_time", (1.5,)),
    ]
    for name, args in calls:
        assert getattr(ours, name)(*args) == getattr(theirs, name)(*args), name


def test_quic_logger_rejects_foreign_trace():
    with pytest.raises(ValueError, match="not started by this QuicLogger"):
        QuicLogger().end_trace(QuicLoggerTrace(is_client=False, odcid=b"x"))
    with pytest.raises(TypeError, match="odcid must be bytes"):
        QuicLoggerTrace(is_client=False, odcid="abc")  # type: ignore[arg-type]


def test_quic_file_logger_writes_one_file_per_trace(tmp_path):
    logger = QuicFileLogger(str(tmp_path))
    trace = logger.start_trace(is_client=False, odcid=bytes.fromhex("abcd"))
    trace.log_event(category="transport", event="x", data={"n": 1})
    logger.end_trace(trace)
    with open(tmp_path / "abcd.qlog") as f:
        doc = json.load(f)
    assert doc["traces"][0]["events"][0]["data"] == {"n": 1}
    assert logger.to_dict()["traces"] == []  # written and forgotten
    with pytest.raises(ValueError, match="does not exist"):
        QuicFileLogger(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------- tls


def test_session_ticket_validity_and_pickle():
    now = datetime.datetime.now(datetime.timezone.utc)
    ticket = SessionTicket(age_add=7, cipher_suite=CipherSuite.AES_128_GCM_SHA256,
                           not_valid_after=now + datetime.timedelta(hours=1),
                           not_valid_before=now - datetime.timedelta(seconds=2),
                           resumption_secret=b"s", server_name="localhost", ticket=b"t")
    assert ticket.is_valid
    assert 2000 + 7 <= ticket.obfuscated_age < 60_000
    assert pickle.loads(pickle.dumps(ticket)) == ticket
    expired = SessionTicket(age_add=0, cipher_suite=CipherSuite.CHACHA20_POLY1305_SHA256,
                            not_valid_after=now - datetime.timedelta(seconds=1),
                            not_valid_before=now - datetime.timedelta(hours=1),
                            resumption_secret=b"", server_name="", ticket=b"")
    assert not expired.is_valid
    assert int(CipherSuite.AES_256_GCM_SHA384) == 0x1302


# ---------------------------------------------------------------------------- connection hooks


@anyio_test
async def test_private_hooks_aioquic_programs_use(server_config, client_config, caplog):
    protocols = ProtocolCollector(RecordingProtocol)
    async with running_server(server_config(), create_protocol=protocols) as server:
        sockname = server._transport.get_extra_info("sockname")
        assert sockname == (HOST, server.local_port)
        with pytest.raises(NotImplementedError, match="network thread"):
            server._transport.sendto(b"x")
        async with client(server.local_port, client_config()) as protocol:
            assert protocol._transport.get_extra_info("peername") == (HOST, server.local_port)
            local = protocol._transport.get_extra_info("sockname")
            assert isinstance(local[1], int) and local[1] > 0
            assert protocol._quic.get_peer_address() == (HOST, server.local_port)
            peer = await protocols.next()
            assert peer._quic.get_peer_address() == (HOST, local[1])
            assert peer._transport.get_extra_info("sockname")[1] == server.local_port
            with caplog.at_level(logging.INFO, logger="aiopquic.quic"):
                protocol._quic._logger.info("HTTP request %s", "GET /")
            assert "HTTP request GET /" in caplog.text
            # client: a move to a new local port with a new connection ID; server: refused
            protocol.change_connection_id()
            assert await ping_ok(protocol)
            with pytest.raises(NotImplementedError, match="change_connection_id"):
                peer._quic.change_connection_id()
            with pytest.raises(NotImplementedError, match="change_connection_id"):
                peer.change_connection_id()
            for name, args in (("connection_made", (None,)), ("connection_lost", (None,)),
                               ("datagram_received", (b"", ("::1", 1))),
                               ("error_received", (OSError(),)), ("pause_writing", ()),
                               ("resume_writing", ())):
                with pytest.raises(NotImplementedError, match=f"{name}.*network thread"):
                    getattr(protocol, name)(*args)
            assert await ping_ok(protocol)


async def ping_ok(protocol) -> bool:
    """The connection still works (a PING is acknowledged)."""
    with anyio.fail_after(10):
        await protocol.ping()
    return True


@anyio_test
async def test_write_after_fin_raises_runtime_error(server_config, client_config):
    async with running_server(server_config()) as server:
        async with client(server.local_port, client_config()) as protocol:
            quic = protocol._quic
            sid = quic.get_next_available_stream_id()
            quic.send_stream_data(sid, b"x", end_stream=True)
            with pytest.raises(RuntimeError, match="after its FIN"):
                quic.send_stream_data(sid, b"y")
            reader, writer = await protocol.create_stream()
            assert isinstance(writer.transport, QuicStreamAdapter)
            assert writer.transport.protocol is protocol
            assert writer.transport.stream_id == writer.get_extra_info("stream_id")
            writer.write_eof()
            with pytest.raises(RuntimeError, match="after write_eof"):
                writer.write(b"late")
            # a stream id the peer never opened: ValueError, as in aioquic
            with pytest.raises(ValueError, match="the peer has not opened it"):
                quic.send_stream_data(1, b"x")


@anyio_test
async def test_connect_argument_errors(client_config):
    with pytest.raises(TypeError, match="host must be a str"):
        async with connect(None, 4433, configuration=client_config()):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="configuration must be a QuicConfiguration"):
        async with connect(HOST, 4433, configuration="alpn"):  # type: ignore[arg-type]
            pass


# ---------------------------------------------------------------------------- H3 push, H0


class _H3Server(RecordingProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.push_error: Exception | None = None

    def quic_event_received(self, event):
        for h3_event in self.http.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                try:
                    self.http.send_push_promise(h3_event.stream_id, [(b":path", b"/x")])
                except NoAvailablePushIDError as exc:
                    self.push_error = exc
                self.http.send_headers(h3_event.stream_id, [(b":status", b"204")],
                                       end_stream=True)
        super().quic_event_received(event)


class _H3Client(RecordingProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, max_push_id=None)  # grants no push id
        self.done: anyio.Event = anyio.Event()
        self.status = b""

    def quic_event_received(self, event):
        for h3_event in self.http.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self.status = dict(h3_event.headers)[b":status"]
                if h3_event.stream_ended:
                    self.done.set()
        super().quic_event_received(event)


@anyio_test
async def test_send_push_promise_without_push_ids(server_config, client_config):
    protocols = ProtocolCollector(_H3Server)
    async with running_server(server_config(alpn_protocols=H3_ALPN),
                              create_protocol=protocols) as server:
        async with client(server.local_port, client_config(alpn_protocols=H3_ALPN),
                          create_protocol=_H3Client) as protocol:
            sid = protocol._quic.get_next_available_stream_id()
            protocol.http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                             (b":authority", b"localhost"),
                                             (b":path", b"/")], end_stream=True)
            with anyio.fail_after(10):
                await protocol.done.wait()
            assert protocol.status == b"204"
            peer = await protocols.next()
            assert isinstance(peer.push_error, NoAvailablePushIDError)
            with pytest.raises(RuntimeError, match="only a server"):
                protocol.http.send_push_promise(sid, [])


class _H0Server(RecordingProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H0Connection(self._quic)
        self.requests: list = []

    def quic_event_received(self, event):
        for h_event in self.http.handle_event(event):
            if isinstance(h_event, HeadersReceived):
                self.requests.append(h_event.headers)
                self.http.send_headers(h_event.stream_id, [(b":status", b"200")])
                path = dict(h_event.headers)[b":path"]
                self.http.send_data(h_event.stream_id, b"body of " + path, end_stream=True)
        super().quic_event_received(event)


@anyio_test
async def test_h0_request_response_and_malformed_request(server_config, client_config):
    protocols = ProtocolCollector(_H0Server)
    async with running_server(server_config(alpn_protocols=H0_ALPN),
                              create_protocol=protocols) as server:
        async with client(server.local_port, client_config(alpn_protocols=H0_ALPN),
                          create_protocol=RecordingProtocol) as protocol:
            http = H0Connection(protocol._quic)
            sid = protocol._quic.get_next_available_stream_id()
            # the request line arrives in two pieces: the server waits for CRLF
            protocol._quic.send_stream_data(sid, b"GET /hel")
            http.send_data(sid, b"lo\r\n", end_stream=True)
            body = b""
            got_headers = False
            with anyio.fail_after(10):
                while True:
                    event = await protocol.wait_event(StreamDataReceived,
                                                      lambda e: e.stream_id == sid)
                    for h_event in http.handle_event(event):
                        if isinstance(h_event, HeadersReceived):
                            assert h_event.headers == []
                            got_headers = True
                        elif isinstance(h_event, DataReceived):
                            body += h_event.data
                    if event.end_stream:
                        break
            assert got_headers and body == b"body of /hello"
            with pytest.raises(KeyError, match=":path"):
                http.send_headers(protocol._quic.get_next_available_stream_id(),
                                  [(b":method", b"GET")])

            # a request line without a path: the server resets the stream, no request
            bad = protocol._quic.get_next_available_stream_id()
            protocol._quic.send_stream_data(bad, b"GARBAGE\r\n", end_stream=True)
            reset = await protocol.wait_event(StreamReset, lambda e: e.stream_id == bad)
            assert reset.error_code == 1
            peer = await protocols.next()
            assert peer.requests == [[(b":method", b"GET"), (b":path", b"/hello")]]



# ---------------------------------------------------------------------------- survival


async def _quickstart_echo(reader, writer) -> None:
    data = await reader.read()
    writer.write(data)
    writer.write_eof()


@anyio_test
async def test_asyncio_quickstart_server_survives_every_kind_of_close(server_config,
                                                                      client_config, certs):
    """The asyncio quickstart's echo server against aioquic and aiopquic clients that close
    with 0, 0x100, an error code, or are killed; a bystander connection keeps working and
    nothing reaches the loop's exception handler."""
    pytest.importorskip("aioquic")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dropin",
                          "closing_client.py")
    loop = asyncio.get_running_loop()
    errors: list = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def handle_stream(reader, writer) -> None:
        spawn(_quickstart_echo(reader, writer))

    async def run_client(stack: str, mode: str, count: int, port: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, script, stack, mode, str(count), str(port), certs.ca, "echo",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if mode == "kill":
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready", line
            proc.kill()
            await proc.wait()
            return
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode(errors="replace")
        assert f"ok {count}".encode() in out

    async with running_server(server_config(alpn_protocols=["echo"], idle_timeout=2.0),
                              stream_handler=handle_stream) as server:
        port = server.local_port
        async with client(port, client_config(alpn_protocols=["echo"],
                                              keep_alive_interval=0.5)) as bystander:
            for stack in ("aioquic", "aiopquic"):
                for mode in ("code0", "h3", "error"):
                    await run_client(stack, mode, 16, port)  # 102 connections in all
                await run_client(stack, "kill", 3, port)
                reader, writer = await bystander.create_stream()
                writer.write(stack.encode())
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 10) == stack.encode()
            with anyio.fail_after(30):  # the killed clients' connections idle out
                while len(server.protocols) > 1:
                    await anyio.sleep(0.1)  # polling a condition, bounded above
            assert server.protocols == [server.protocols[0]]
            assert not bystander._quic.closed
    assert errors == []


def test_aioquic_constants_enums_and_error_names():
    """The names aioquic programs import besides the classes: frame and packet types, the
    smallest datagram size, the HTTP/3 protocol error classes with their codes."""
    from aiopquic.h3 import connection as h3c
    from aiopquic.h3.exceptions import FrameUnexpected
    from aiopquic.quic import configuration, connection, logger, packet

    assert configuration.SMALLEST_MAX_DATAGRAM_SIZE == connection.SMALLEST_MAX_DATAGRAM_SIZE \
        == 1200
    with pytest.raises(ValueError, match="max_datagram_size"):
        configuration.QuicConfiguration(
            max_datagram_size=configuration.SMALLEST_MAX_DATAGRAM_SIZE - 1).validate()
    assert configuration.QuicLogger is QuicLogger and configuration.SessionTicket is SessionTicket
    assert configuration.CipherSuite is CipherSuite
    assert packet.QuicFrameType.DATAGRAM == 0x30 and packet.QuicFrameType.HANDSHAKE_DONE == 0x1E
    assert logger.QuicFrameType is packet.QuicFrameType is connection.QuicFrameType
    assert logger.PACKET_TYPE_NAMES[packet.QuicPacketType.ONE_RTT] == "1RTT"
    assert packet.pretty_protocol_version(1) == "VERSION_1 (0x00000001)"
    assert packet.pretty_protocol_version(0x1A2A3A4A).startswith("UNKNOWN")
    assert packet.QuicFrameType.ACK in packet.NON_ACK_ELICITING_FRAME_TYPES
    assert FrameUnexpected("x").error_code == h3c.ErrorCode.H3_FRAME_UNEXPECTED
    for name, code in (("ProtocolError", "H3_GENERAL_PROTOCOL_ERROR"),
                       ("FrameError", "H3_FRAME_ERROR"), ("IdError", "H3_ID_ERROR"),
                       ("MissingSettingsError", "H3_MISSING_SETTINGS"),
                       ("SettingsError", "H3_SETTINGS_ERROR"),
                       ("StreamCreationError", "H3_STREAM_CREATION_ERROR"),
                       ("QpackDecompressionFailed", "QPACK_DECOMPRESSION_FAILED")):
        cls = getattr(h3c, name)
        assert issubclass(cls, h3c.ProtocolError)
        assert cls.error_code == h3c.ErrorCode[code]
    assert h3c.Setting.DUMMY == 0x21
    assert h3c.stream_is_request_response(0) and not h3c.stream_is_request_response(2)
    assert h3c.stream_is_client_initiated(4) and h3c.stream_is_unidirectional(2)


@anyio_test
async def test_connection_state_follows_the_connection(server_config, client_config):
    from aiopquic.quic.connection import QuicConnectionState

    async with running_server(server_config()) as server:
        async with client(server.local_port, client_config()) as protocol:
            quic = protocol._quic
            assert quic.state is QuicConnectionState.CONNECTED
            protocol.close()  # graceful: CONNECTED until the CONNECTION_CLOSE goes out
            with anyio.fail_after(10):
                await protocol.wait_closed()
            assert quic.state is QuicConnectionState.TERMINATED


@anyio_test
async def test_closing_the_transport_inside_connect_is_clean(server_config, client_config):
    """aioquic programs may close ``protocol._transport`` themselves; leaving ``connect()``
    afterwards must not fail (it used to raise a cffi TypeError from the freed endpoint)."""
    async with running_server(server_config()) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                assert await ping_ok(protocol)
                protocol._transport.close()
                protocol._transport.close()  # idempotent
            assert protocol._quic.closed


@anyio_test
async def test_send_while_handling_events_before_the_close_is_dropped(server_config,
                                                                      client_config):
    """A server that answers in its handler for events that came before the client's close
    (ProtocolNegotiated here) is not failed by the close it has not seen yet: the bytes are
    dropped, as aioquic does; after ConnectionTerminated a send raises."""
    from aiopquic.asyncio.protocol import QuicConnectionProtocol
    from aiopquic.quic.connection import QuicConnectionError
    from aiopquic.quic.events import ConnectionTerminated, ProtocolNegotiated

    failures: list[BaseException] = []
    later: list[BaseException] = []

    class Answering(QuicConnectionProtocol):
        def quic_event_received(self, event) -> None:
            quic = self._quic
            try:
                if isinstance(event, ProtocolNegotiated):
                    sid = quic.get_next_available_stream_id(is_unidirectional=True)
                    quic.send_stream_data(sid, b"\x00")
                elif isinstance(event, ConnectionTerminated):
                    try:
                        quic.send_stream_data(quic.get_next_available_stream_id(True), b"x")
                    except QuicConnectionError as exc:
                        later.append(exc)
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                failures.append(exc)

    protocols = ProtocolCollector(Answering)
    async with running_server(server_config(), create_protocol=protocols) as server:
        with anyio.fail_after(60):
            for _ in range(20):
                async with client(server.local_port, client_config()):
                    pass
            while len(later) < 20:
                await anyio.sleep(0.01)  # polling a condition, bounded by fail_after
    assert not failures, failures
