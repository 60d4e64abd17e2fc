"""WebTransport between our client and our server over real UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import anyio
import pytest
from h3_helpers import HOST, spawn

from aiopquic.asyncio import connect
from aiopquic.asyncio.webtransport import (
    WebTransportError,
    WebTransportProtocol,
    WebTransportRejected,
    WebTransportSession,
    WebTransportSessionClosed,
    connect_webtransport,
    serve_webtransport,
)
from aiopquic.h3.connection import WT_SESSION_GONE, webtransport_error_to_http3
from aiopquic.http3_tools import echo_handler
from aiopquic.quic.configuration import QuicConfiguration

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def client_cfg(certs) -> QuicConfiguration:
    return QuicConfiguration(is_client=True, cafile=certs.ca, server_name="localhost")


@pytest.fixture
def wt_server_config(certs):
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(certs.cert, certs.key)
    return config


class WtServer:
    def __init__(self, server):
        self.server = server
        self.port = server.local_port

    def url(self, path: str = "/echo") -> str:
        return f"https://{HOST}:{self.port}{path}"


async def start(config, handler, path="/echo", **kwargs) -> WtServer:
    with anyio.fail_after(10):
        server = await serve_webtransport(HOST, 0, configuration=config, handler=handler,
                                          path=path, **kwargs)
    return WtServer(server)


async def test_bidi_uni_and_datagram_echo(wt_server_config, certs):
    srv = await start(wt_server_config, echo_handler)
    try:
        with anyio.fail_after(60):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                assert s.path == "/echo"
                assert dict(s.headers)[b":status"] == b"200"
                payload = hashlib.sha256(b"x").digest() * 32768  # 1 MiB
                reader, writer = await s.create_stream()

                async def send():
                    for off in range(0, len(payload), 100_000):
                        writer.write(payload[off:off + 100_000])
                        await writer.drain()
                    writer.write_eof()

                echoed, _ = await asyncio.gather(reader.read(), send())
                assert echoed == payload

                _, uni = await s.create_stream(bidirectional=False)
                uni.write(b"one-way")
                uni.write_eof()
                back_reader, back_writer = await s.accept_stream()
                assert back_writer is None
                assert await back_reader.read() == b"one-way"

                for i in range(50):
                    s.send_datagram(b"datagram-%d" % i)
                seen = set()
                with anyio.move_on_after(5):
                    while len(seen) < 50:
                        seen.add(await s.receive_datagram())
                assert len(seen) >= 45, len(seen)
    finally:
        srv.server.close()


async def test_server_close_code_and_reason_reach_the_client(wt_server_config, certs):
    async def handler(session: WebTransportSession) -> None:
        reader, writer = await session.accept_stream()
        assert await reader.read() == b"please close"
        session.close(4242, "bye \u2603")

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                _, writer = await s.create_stream()
                writer.write(b"please close")
                writer.write_eof()
                await s.wait_closed()
                assert (s.close_code, s.close_reason) == (4242, "bye \u2603")
                with pytest.raises(WebTransportSessionClosed) as info:
                    await s.create_stream()
                assert info.value.code == 4242
                with pytest.raises(WebTransportSessionClosed):
                    s.send_datagram(b"x")
    finally:
        srv.server.close()


async def test_client_close_code_reaches_the_server_and_resets_streams(wt_server_config, certs):
    seen: asyncio.Future = asyncio.get_running_loop().create_future()
    stream_error: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        reader, writer = await session.accept_stream()
        assert await reader.readexactly(5) == b"hello"
        writer.write(b"ok")

        async def read_more():
            try:
                await reader.read()
                stream_error.set_result(None)
            except Exception as exc:
                stream_error.set_result(exc)

        spawn(read_more())
        await session.wait_closed()
        seen.set_result((session.close_code, session.close_reason))

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                reader, writer = await s.create_stream()
                writer.write(b"hello")
                assert await reader.readexactly(2) == b"ok"  # the server has read it
                s.close(7, "client done")
                assert s.closed and s.close_code == 7
                # our own stream of the closed session is finished locally
                with pytest.raises(WebTransportSessionClosed):
                    await reader.read()
                with pytest.raises(WebTransportSessionClosed):
                    writer.write(b"more")
                assert await seen == (7, "client done")
                exc = await stream_error
                # the server's reader of a stream of the closed session fails (not EOF)
                assert isinstance(exc, (WebTransportSessionClosed, ConnectionResetError)), exc
    finally:
        srv.server.close()


async def test_handler_rejects_with_http_status(wt_server_config, certs):
    async def handler(session: WebTransportSession) -> None:
        if dict(session.headers).get(b"x-token") != b"secret":
            raise WebTransportRejected(403)
        session.accept()
        await session.wait_closed()

    srv = await start(wt_server_config, handler, path=None)
    try:
        with anyio.fail_after(30):
            with pytest.raises(WebTransportRejected) as info:
                async with connect_webtransport(srv.url("/any"),
                                                configuration=client_cfg(certs)):
                    pass
            assert info.value.status == 403
            async with connect_webtransport(srv.url("/any"), configuration=client_cfg(certs),
                                            headers=[(b"x-token", b"secret")]) as s:
                assert s.path == "/any"
                assert not s.closed
    finally:
        srv.server.close()


async def test_wrong_path_is_404_and_handler_error_is_500(wt_server_config, certs):
    async def handler(session: WebTransportSession) -> None:
        raise RuntimeError("boom")

    srv = await start(wt_server_config, handler, path="/only")
    try:
        with anyio.fail_after(30):
            with pytest.raises(WebTransportRejected) as info:
                async with connect_webtransport(srv.url("/other"),
                                                configuration=client_cfg(certs)):
                    pass
            assert info.value.status == 404
            with pytest.raises(WebTransportRejected) as info:
                async with connect_webtransport(srv.url("/only"),
                                                configuration=client_cfg(certs)):
                    pass
            assert info.value.status == 500
    finally:
        srv.server.close()


async def test_webtransport_h3_protocol_token_is_accepted(wt_server_config, certs):
    srv = await start(wt_server_config, echo_handler)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs),
                                            protocol="webtransport-h3") as s:
                reader, writer = await s.create_stream()
                writer.write(b"token")
                writer.write_eof()
                assert await reader.read() == b"token"
    finally:
        srv.server.close()


async def test_server_opens_streams_and_sends_datagrams(wt_server_config, certs):
    async def handler(session: WebTransportSession) -> None:
        reader, writer = await session.create_stream()
        writer.write(b"from the server")
        writer.write_eof()
        assert await reader.read() == b"client answer"
        _, uni = await session.create_stream(bidirectional=False)
        uni.write(b"server uni")
        uni.write_eof()
        session.send_datagram(b"server datagram")
        await session.wait_closed()

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                reader, writer = await s.accept_stream()
                assert writer is not None
                assert await reader.read() == b"from the server"
                writer.write(b"client answer")
                writer.write_eof()
                reader, writer = await s.accept_stream()
                assert writer is None and await reader.read() == b"server uni"
                assert await s.receive_datagram() == b"server datagram"
    finally:
        srv.server.close()


async def test_several_sessions_on_one_connection(wt_server_config, certs):
    handled = []

    async def handler(session: WebTransportSession) -> None:
        handled.append(session.session_id)
        await echo_handler(session)

    srv = await start(wt_server_config, handler, path=None)
    try:
        with anyio.fail_after(30):
            async with connect(HOST, srv.port, configuration=QuicConfiguration(
                    is_client=True, cafile=certs.ca, server_name="localhost",
                    alpn_protocols=["h3"], max_datagram_frame_size=65535),
                    create_protocol=WebTransportProtocol) as proto:
                authority = f"{HOST}:{srv.port}"
                s1 = await proto.open_session(authority, "/one")
                s2 = await proto.open_session(authority, "/two")
                assert s1.session_id != s2.session_id
                for session, text in ((s1, b"first"), (s2, b"second")):
                    reader, writer = await session.create_stream()
                    writer.write(text)
                    writer.write_eof()
                    assert await reader.read() == text
                    session.send_datagram(text)
                assert await s1.receive_datagram() == b"first"
                assert await s2.receive_datagram() == b"second"
                s1.close(1, "one")
                # the other session is unaffected
                reader, writer = await s2.create_stream()
                writer.write(b"still here")
                writer.write_eof()
                assert await reader.read() == b"still here"
                s2.close()
        assert len(handled) == 2
    finally:
        srv.server.close()


async def test_stream_reset_by_peer_carries_webtransport_code(wt_server_config, certs):
    async def handler(session: WebTransportSession) -> None:
        reader, writer = await session.accept_stream()
        await reader.readexactly(3)
        writer.transport.abort(33)  # reset with WebTransport error 33
        await session.wait_closed()

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                reader, writer = await s.create_stream()
                writer.write(b"abc")
                with pytest.raises(ConnectionResetError, match="WebTransport code 33"):
                    await reader.read()
    finally:
        srv.server.close()


async def test_slow_reader_gets_every_byte(wt_server_config, certs):
    """8 MiB through a reader that reads in small pieces: flow control keeps the sender in
    step with the reader and every byte arrives in order."""
    total = 8 * 1024 * 1024
    block = hashlib.sha256(b"slow").digest() * 2048  # 64 KiB

    async def handler(session: WebTransportSession) -> None:
        _, writer = await session.create_stream(bidirectional=False)
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        writer.write_eof()
        await session.wait_closed()

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(90):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                reader, _ = await s.accept_stream()
                got = 0
                while True:
                    chunk = await reader.read(7000)
                    if not chunk:
                        break
                    assert chunk == (block * 2)[got % len(block):got % len(block) + len(chunk)]
                    got += len(chunk)
                assert got == total
    finally:
        srv.server.close()


async def test_connection_close_ends_sessions(wt_server_config, certs):
    ended = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        try:
            await session.receive_datagram()
        except WebTransportSessionClosed as exc:
            ended.set_result(str(exc))

    srv = await start(wt_server_config, handler)
    try:
        with anyio.fail_after(30):
            async with connect(HOST, srv.port, configuration=QuicConfiguration(
                    is_client=True, cafile=certs.ca, server_name="localhost",
                    alpn_protocols=["h3"], max_datagram_frame_size=65535),
                    create_protocol=WebTransportProtocol) as proto:
                session = await proto.open_session(f"{HOST}:{srv.port}", "/echo")
                proto.close(error_code=0x100)
                await session.wait_closed()
                assert session.closed
            assert "closed" in await ended
    finally:
        srv.server.close()


async def test_bad_arguments_are_reported(wt_server_config, certs):
    with pytest.raises(ValueError, match="https"):
        async with connect_webtransport("http://127.0.0.1:1/x"):
            pass
    with pytest.raises(ValueError, match="alpn"):
        await serve_webtransport(HOST, 0, configuration=QuicConfiguration(
            is_client=False, alpn_protocols=["hq"]), handler=echo_handler)
    with pytest.raises(ValueError, match="path"):
        await serve_webtransport(HOST, 0, configuration=wt_server_config, handler=echo_handler,
                                 path="echo")
    with pytest.raises(ValueError):
        WebTransportRejected(200)
    assert webtransport_error_to_http3(0) != WT_SESSION_GONE


async def test_server_without_webtransport_is_reported(certs, server_config):
    """A plain HTTP/3 server (WebTransport off) makes connect_webtransport fail clearly."""
    from quic_helpers import running_server

    def factory(quic, stream_handler=None):
        return WebTransportProtocol(quic, stream_handler, enable_webtransport=False)

    async with running_server(server_config(alpn_protocols=["h3"]),
                              create_protocol=factory) as server:
        with anyio.fail_after(30):
            with pytest.raises(WebTransportError, match="does not support WebTransport"):
                async with connect_webtransport(
                        f"https://{HOST}:{server.local_port}/x",
                        configuration=QuicConfiguration(is_client=True,
                                                        verify_mode=ssl.CERT_NONE)):
                    pass


async def test_garbage_from_a_peer_closes_only_its_connection(wt_server_config, certs):
    """Random bytes on a request stream and a control stream close that connection with an
    HTTP/3 error code; the server keeps serving others."""
    import random

    from quic_helpers import RecordingProtocol

    from aiopquic.quic.events import ConnectionTerminated

    srv = await start(wt_server_config, echo_handler)
    try:
        rnd = random.Random(5)
        for attempt in range(3):
            async with connect(HOST, srv.port, configuration=QuicConfiguration(
                    is_client=True, cafile=certs.ca, server_name="localhost",
                    alpn_protocols=["h3"]), create_protocol=RecordingProtocol) as proto:
                quic = proto._quic
                uni = quic.get_next_available_stream_id(is_unidirectional=True)
                quic.send_stream_data(uni, b"\x00" + rnd.randbytes(64))  # control stream
                bidi = quic.get_next_available_stream_id()
                quic.send_stream_data(bidi, rnd.randbytes(200), end_stream=True)
                event = await proto.wait_event(ConnectionTerminated, timeout=15)
                assert 0x100 <= event.error_code <= 0x202, (attempt, hex(event.error_code))
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                reader, writer = await s.create_stream()
                writer.write(b"still serving")
                writer.write_eof()
                assert await reader.read() == b"still serving"
    finally:
        srv.server.close()


async def test_draft15_token_and_protocol_negotiation(wt_server_config, certs):
    """Our client sends ``:protocol webtransport-h3`` to our (draft-15) server; the server
    picks the client's first offered WT-Protocol on its list; an offer with none on it is
    refused with 400 and the server's session ends with WT_ALPN_ERROR."""
    seen: list[tuple[bytes, object]] = []

    async def handler(session: WebTransportSession) -> None:
        seen.append((dict(session.headers)[b":protocol"], session.protocol))
        await echo_handler(session)

    srv = await start(wt_server_config, handler,
                      supported_protocols=["moqt-16", "moqt-15"])
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs),
                                            protocols=["moqt-17", "moqt-15", "moqt-16"]) as s:
                assert s.protocol == "moqt-15"
                reader, writer = await s.create_stream()
                writer.write(b"negotiated")
                writer.write_eof()
                assert await reader.read() == b"negotiated"
            assert seen == [(b"webtransport-h3", "moqt-15")]
            with pytest.raises(WebTransportRejected) as info:
                async with connect_webtransport(srv.url(), configuration=client_cfg(certs),
                                                protocols=["moqt-14"]):
                    pass
            assert info.value.status == 400
            assert len(seen) == 1  # the handler never saw the refused session
    finally:
        srv.server.close()


async def test_streams_nobody_accepts_are_refused_not_piled_up(wt_server_config, certs,
                                                               monkeypatch):
    """A peer opening streams faster than the handler accepts them: past the backlog they
    are refused (WT_BUFFERED_STREAM_REJECTED) instead of queued without bound."""
    from aiopquic.asyncio import webtransport as wtmod

    monkeypatch.setattr(wtmod, "_MAX_PENDING_STREAMS", 4)
    sessions: list[WebTransportSession] = []
    settled = asyncio.Event()

    class Watching(WebTransportProtocol):
        def _dispatch(self, event) -> None:
            super()._dispatch(event)
            for s in sessions:
                if len(s._incoming) + s.streams_refused >= 10:
                    settled.set()

    async def handler(session: WebTransportSession) -> None:
        sessions.append(session)
        session.accept()
        await session.wait_closed()

    srv = await start(wt_server_config, handler, create_protocol=Watching)
    try:
        with anyio.fail_after(30):
            async with connect_webtransport(srv.url(), configuration=client_cfg(certs)) as s:
                for i in range(10):
                    _, writer = await s.create_stream(bidirectional=False)
                    writer.write(b"x%d" % i)
                    writer.write_eof()
                await settled.wait()
                session = sessions[0]
                assert len(session._incoming) == 4
                assert session.streams_refused == 6
    finally:
        srv.server.close()
