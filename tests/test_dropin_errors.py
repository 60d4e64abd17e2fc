"""Errors that name the culprit, in the asyncio and the anyio API (issue 10 item 4):
``send("text")`` says bytes are needed; a host that is not a str or a configuration that is
not a QuicConfiguration raises TypeError; EADDRINUSE is an OSError with ``errno`` set and the
address in the message; a certificate/key mismatch names both files; "connection refused"
appears once, with host and port; a handshake timeout names the address."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import trustme

import aiopquic.anyio as aq
from aiopquic.asyncio import connect, serve
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnectionError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HOST = "127.0.0.1"


@pytest.fixture(params=["asyncio-api", "anyio-asyncio", "anyio-trio"])
def api(request: Any) -> str:
    """Which API (and for anyio which backend) a test uses."""
    return str(request.param)


@pytest.fixture
def anyio_backend(api: str) -> str:
    if api == "anyio-trio":
        pytest.importorskip("trio")
        return "trio"
    return "asyncio"


async def _connect(api: str, host: Any, port: int, configuration: Any) -> None:
    if api == "asyncio-api":
        async with connect(host, port, configuration=configuration):
            pass
    else:
        async with aq.connect(host, port, configuration=configuration):
            pass


async def _serve(api: str, port: int, configuration: Any) -> None:
    """Bind a server on ``port`` and release it at once."""
    if api == "asyncio-api":
        server = await serve(HOST, port, configuration=configuration)
        server.close()
    else:
        listener = await aq.create_listener(HOST, port, configuration=configuration)
        await listener.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A bound UDP port that never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        yield int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def test_arguments_of_the_wrong_type(api, client_config, server_config):
    with pytest.raises(TypeError, match="host must be a str, got NoneType"):
        await _connect(api, None, 4433, client_config())
    with pytest.raises(TypeError, match="configuration must be a QuicConfiguration, got str"):
        await _connect(api, HOST, 4433, "h3")
    with pytest.raises(TypeError, match="configuration must be a QuicConfiguration, got NoneType"):
        await _serve(api, 0, None)


async def test_address_in_use_is_an_oserror_with_errno(api, server_config, silent_port):
    with pytest.raises(OSError) as info:
        await _serve(api, silent_port, server_config())
    assert info.value.errno == errno.EADDRINUSE
    assert f"{HOST} port {silent_port}" in str(info.value)


async def test_certificate_key_mismatch_names_both_files(api, certs, tmp_path):
    other_key = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    configuration.load_cert_chain(certs.cert, str(other_key))
    with pytest.raises(OSError) as info:
        await _serve(api, 0, configuration)
    message = str(info.value)
    assert "do not match" in message
    assert certs.cert in message and str(other_key) in message


async def test_refused_connection_says_so_once_with_host_and_port(api, client_config):
    port = _closed_port()
    with anyio.fail_after(30):
        with pytest.raises(ConnectionError) as info:
            await _connect(api, HOST, port, client_config(handshake_timeout=5.0))
    message = str(info.value)
    assert f"{HOST}:{port}" in message
    assert message.lower().count("refused") == 1, message
    assert isinstance(info.value, QuicConnectionError)


async def test_handshake_timeout_names_the_address(api, client_config, silent_port):
    with anyio.fail_after(30):
        with pytest.raises(ConnectionError) as info:
            await _connect(api, "localhost", silent_port, client_config(handshake_timeout=1.0))
    message = str(info.value)
    assert f"localhost:{silent_port}" in message
    assert "timed out after 1 s" in message


async def test_sending_str_says_bytes_are_needed(api, server_config, client_config):
    if api == "asyncio-api":
        server = await serve(HOST, 0, configuration=server_config())
        try:
            async with connect(HOST, server.local_port, configuration=client_config()) as proto:
                _, writer = await proto.create_stream()
                with pytest.raises(TypeError, match=r"bytes-like object, got str.*encode"):
                    writer.write("text")  # type: ignore[arg-type]
                sid = proto._quic.get_next_available_stream_id()
                with pytest.raises(TypeError, match=r"bytes-like object, got str.*encode"):
                    proto._quic.send_stream_data(sid, "text")  # type: ignore[arg-type]
        finally:
            server.close()
        return

    async def handler(connection: aq.Connection) -> None:
        await connection.wait_closed()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            srv = await tg.start(lambda task_status: aq.serve(
                HOST, 0, configuration=server_config(), handler=handler,
                task_status=task_status))
            async with aq.connect(HOST, srv.local_port, configuration=client_config()) as conn:
                stream = await conn.open_stream()
                with pytest.raises(TypeError, match=r"item must be a bytes-like object, got "
                                                    r"str \(encode it first"):
                    await stream.send("text")  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="data must be a bytes-like object"):
                    await conn.send_datagram("text")  # type: ignore[arg-type]
            tg.cancel_scope.cancel()
