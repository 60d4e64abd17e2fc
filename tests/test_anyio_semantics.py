"""anyio semantics that fit the ecosystem, on the asyncio and trio backends:

- a peer's close with code 0 (or H3_NO_ERROR on an HTTP/3 connection) ends
  ``accept_stream()`` / ``receive_datagram()`` (``anyio.EndOfStream``) and ``async for``
  cleanly; any other code raises ``ConnectionClosedError`` with the code;
- ``serve()`` keeps serving when a handler fails (logged, only that connection closed with
  HANDLER_ERROR_CODE), unless the caller passes its own task group (crash-through);
- typed attributes (SocketAttribute, QuicAttribute) on connections, streams and the server;
- ``create_listener()`` gives an ``anyio.abc.Listener``;
- the quickstart echo server survives aioquic and aiopquic clients that close in every way
  (code 0, 0x100, an error code, killed without a close).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import Listener, SocketAttribute

import aiopquic.anyio as aq

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
else:
    BaseExceptionGroup = BaseExceptionGroup  # noqa: PLW0127

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

HOST = "127.0.0.1"
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dropin", "closing_client.py")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: Any) -> str:
    if request.param == "trio":
        pytest.importorskip("trio")
    return str(request.param)


async def echo(connection: aq.Connection) -> None:
    """The quickstart's echo handler, as written there."""
    async for stream in connection:
        async with stream:
            async for chunk in stream:
                await stream.send(chunk)


async def echo_once(connection: aq.Connection, payload: bytes = b"ping") -> bytes:
    stream = await connection.open_stream()
    await stream.send(payload)
    await stream.send_eof()
    return b"".join([chunk async for chunk in stream])


# ---------------------------------------------------------------------------- clean ends


@pytest.mark.parametrize("alpn,code,clean", [
    ("echo", 0, True),
    ("h3", 0x100, True),       # H3_NO_ERROR on HTTP/3
    ("echo", 0x100, False),    # 0x100 means nothing special outside HTTP/3
    ("echo", 0x2A, False),
])
async def test_peer_close_ends_accept_and_datagrams(server_config, client_config,
                                                    alpn, code, clean):
    outcome: dict[str, Any] = {}
    done = anyio.Event()

    async def handler(connection: aq.Connection) -> None:
        try:
            streams = [stream async for stream in connection]
            outcome["async for"] = len(streams)
        except aq.ConnectionClosedError as exc:
            outcome["async for"] = exc
        for name, call in (("accept", connection.accept_stream),
                           ("datagram", connection.receive_datagram)):
            try:
                await call()
                outcome[name] = "returned"
            except BaseException as exc:  # noqa: B036 - recorded for the asserts below
                outcome[name] = exc
        done.set()

    scfg = server_config(alpn_protocols=[alpn], max_datagram_frame_size=1200)
    ccfg = client_config(alpn_protocols=[alpn], max_datagram_frame_size=1200)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=scfg, handler=handler))
            async with aq.connect(HOST, server.local_port, configuration=ccfg) as conn:
                await conn.aclose(error_code=code, reason_phrase="bye")
            await done.wait()
            tg.cancel_scope.cancel()
    if clean:
        assert outcome["async for"] == 0
        assert isinstance(outcome["accept"], anyio.EndOfStream)
        assert isinstance(outcome["datagram"], anyio.EndOfStream)
    else:
        for name in ("async for", "accept", "datagram"):
            exc = outcome[name]
            assert isinstance(exc, aq.ConnectionClosedError), (name, exc)
            assert exc.error_code == code and exc.reason_phrase == "bye"


# ---------------------------------------------------------------------------- handler failure


async def test_failing_handler_closes_only_its_connection(server_config, client_config,
                                                          caplog):
    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        data = await stream.receive()
        if data == b"fail":
            raise ZeroDivisionError("handler bug")
        await stream.send(data)
        await stream.send_eof()
        await connection.wait_closed()

    with anyio.fail_after(60), caplog.at_level(logging.INFO, logger="aiopquic.anyio"):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=server_config(), handler=handler))
            async with aq.connect(HOST, server.local_port,
                                  configuration=client_config()) as bystander:
                async with aq.connect(HOST, server.local_port,
                                      configuration=client_config()) as victim:
                    stream = await victim.open_stream()
                    await stream.send(b"fail")
                    with pytest.raises(aq.ConnectionClosedError) as info:
                        await victim.accept_stream()
                    assert info.value.error_code == aq.HANDLER_ERROR_CODE
                    assert "internal error" in info.value.reason_phrase
                # the other connection and the server are untouched
                assert await echo_once(bystander) == b"ping"
                assert not bystander.closed
            async with aq.connect(HOST, server.local_port,
                                  configuration=client_config()) as later:
                assert await echo_once(later, b"again") == b"again"
            tg.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ZeroDivisionError)


async def test_handler_failure_crashes_through_a_callers_task_group(server_config,
                                                                    client_config):
    class HandlerFailed(Exception):
        pass

    async def handler(connection: aq.Connection) -> None:
        stream = await connection.accept_stream()
        if await stream.receive() == b"fail":
            raise HandlerFailed("boom")

    failed: dict[str, BaseException] = {}
    group_ended = anyio.Event()

    async def handler_group(*, task_status: Any) -> None:
        try:
            async with anyio.create_task_group() as handlers:
                task_status.started(handlers)
                await anyio.sleep_forever()
        except BaseExceptionGroup as exc:
            failed["group"] = exc
        finally:
            group_ended.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            handlers = await tg.start(handler_group)
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=server_config(), handler=handler,
                task_group=handlers))
            async with aq.connect(HOST, server.local_port,
                                  configuration=client_config()) as conn:
                stream = await conn.open_stream()
                await stream.send(b"fail")
                with pytest.raises(aq.ConnectionClosedError) as closed:
                    await conn.accept_stream()
                assert closed.value.error_code == aq.HANDLER_ERROR_CODE
            await group_ended.wait()
            tg.cancel_scope.cancel()
    group = failed["group"]
    assert [type(e) for e in group.exceptions] == [HandlerFailed]
    assert str(group.exceptions[0]) == "boom"


# ---------------------------------------------------------------------------- listener, attributes


async def test_listener_and_typed_attributes(server_config, client_config):
    seen: dict[str, Any] = {}

    async def handler(connection: aq.Connection) -> None:
        seen["remote"] = connection.extra(SocketAttribute.remote_address)
        seen["alpn"] = connection.extra(aq.QuicAttribute.alpn_protocol)
        stream = await connection.accept_stream()
        seen["stream_id"] = stream.extra(aq.QuicAttribute.stream_id)
        seen["stream_local_port"] = stream.extra(SocketAttribute.local_port)
        await stream.send(await stream.receive())
        await stream.send_eof()

    with anyio.fail_after(30):
        listener = await aq.create_listener(HOST, 0, configuration=server_config())
        assert isinstance(listener, Listener)
        port = listener.extra(SocketAttribute.local_port)
        assert port == listener.local_port > 0
        assert listener.extra(SocketAttribute.local_address) == (HOST, port)
        assert listener.extra(SocketAttribute.family) == socket.AF_INET
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            async with aq.connect(HOST, port, configuration=client_config()) as conn:
                assert conn.extra(SocketAttribute.remote_address) == (HOST, port)
                assert conn.extra(SocketAttribute.remote_port) == port
                local_port = conn.extra(SocketAttribute.local_port)
                assert conn.extra(SocketAttribute.local_address) == ("0.0.0.0", local_port)
                assert conn.extra(aq.QuicAttribute.alpn_protocol) == "test"
                assert conn.extra(aq.QuicAttribute.server_name) == "localhost"
                assert conn.extra(aq.QuicAttribute.quic_connection) is conn.quic
                with pytest.raises(anyio.TypedAttributeLookupError):
                    conn.extra(aq.QuicAttribute.stream_id)
                assert await echo_once(conn) == b"ping"
            await listener.aclose()  # stops serve() and releases the socket
        assert seen["remote"] == (HOST, local_port)
        assert seen["alpn"] == "test"
        assert seen["stream_id"] == 0
        assert seen["stream_local_port"] == port
        with pytest.raises(anyio.ClosedResourceError):
            await listener.serve(handler)
        # the port is free again
        again = await aq.create_listener(HOST, port, configuration=server_config())
        await again.aclose()
        await again.aclose()  # idempotent


# ---------------------------------------------------------------------------- survival


async def _client_process(stack: str, mode: str, count: int, port: int, ca: str,
                          alpn: str) -> str:
    with anyio.fail_after(120):
        result = await anyio.run_process(
            [sys.executable, CLIENT, stack, mode, str(count), str(port), ca, alpn],
            check=False, stderr=subprocess.STDOUT)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"{stack} {mode}: exit {result.returncode}\n{out}"
    return out


async def _killed_client(stack: str, count: int, port: int, ca: str, alpn: str) -> None:
    """Open ``count`` connections from a child process, then SIGKILL it."""
    async with await anyio.open_process(
            [sys.executable, CLIENT, stack, "kill", str(count), str(port), ca, alpn],
            stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        buffered = b""
        with anyio.fail_after(60):
            async for chunk in proc.stdout:
                buffered += chunk
                if b"ready" in buffered:
                    break
        assert b"ready" in buffered, buffered
        proc.kill()
        await proc.wait()


async def test_quickstart_server_survives_every_kind_of_close(server_config, client_config,
                                                              certs):
    pytest.importorskip("aioquic")
    count = 16  # x 3 ways x 2 stacks + 6 killed: 102 connections
    scfg = server_config(alpn_protocols=["echo"], idle_timeout=2.0)
    with anyio.fail_after(170):
        async with anyio.create_task_group() as tg:
            server = await tg.start(functools.partial(
                aq.serve, HOST, 0, configuration=scfg, handler=echo))
            port = server.local_port
            async with aq.connect(HOST, port, configuration=client_config(
                    alpn_protocols=["echo"], keep_alive_interval=0.5)) as bystander:
                for stack in ("aioquic", "aiopquic"):
                    for mode in ("code0", "h3", "error"):
                        out = await _client_process(stack, mode, count, port, certs.ca, "echo")
                        assert f"ok {count}" in out
                    await _killed_client(stack, 3, port, certs.ca, "echo")
                    assert await echo_once(bystander, stack.encode()) == stack.encode()
                # killed clients' connections end by the server's idle timeout
                with anyio.fail_after(30):
                    while len(server.connections) > 1:
                        await anyio.sleep(0.1)  # polling a condition, bounded above
                assert server.connections[0].peer_address[1] == \
                    bystander.extra(SocketAttribute.local_port)
                assert await echo_once(bystander, b"still here") == b"still here"
            tg.cancel_scope.cancel()
