"""Shared client endpoints (aiopquic.asyncio.ClientEndpoint): hundreds of client connections
from one process on a fixed number of network threads and sockets, over real UDP against our
server and aioquic's, with thread and file-descriptor counts measured."""

from __future__ import annotations

import os
import socket

import anyio
import pytest
from quic_helpers import (
    HOST,
    aioquic_echo_server,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.asyncio import ClientEndpoint, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

N = 300  # the benchmark runs the 10,000 (benchmarks/connections.py)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _net_threads() -> int:
    """The process's aiopquic client network threads (named by the engine)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                count += f.read().strip() == "aiopquic-cli"
        except OSError:
            pass
    return count


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_hundreds_of_connections_share_two_threads(server_config, client_config):
    """N concurrent connections, each echoing its own payload, through a 2-thread endpoint:
    two sockets and two network threads in all (measured in /proc), and every connection
    handled by the thread that owns its socket (each gets its echo back)."""
    async with running_server(server_config(max_connections=None),
                              stream_handler=echo_stream_handler) as server:
        async with ClientEndpoint(client_config(), threads=2) as endpoint:
            fds0, threads0 = _fds(), _net_threads()
            opened = anyio.Event()
            release = anyio.Event()
            count = 0
            failures: list[BaseException] = []

            async def one(i: int) -> None:
                nonlocal count
                try:
                    async with endpoint.connect(HOST, server.local_port) as protocol:
                        payload = i.to_bytes(4, "big") * 256
                        assert await echo_roundtrip(protocol, payload) == payload
                        count += 1
                        if count == N:
                            opened.set()
                        await release.wait()
                except BaseException as exc:  # noqa: BLE001 - collected and reported
                    failures.append(exc)
                    opened.set()
                    raise

            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    for i in range(N):
                        tg.start_soon(one, i)
                    await opened.wait()
                    assert not failures, failures[:3]
                    # all N open at once on two sockets and two network threads; each
                    # endpoint holds a socket, an epoll fd, a timerfd and two eventfds
                    assert endpoint.connection_count == N
                    assert len(endpoint.local_ports) == 2
                    assert _net_threads() - threads0 == 2
                    assert _fds() - fds0 <= 2 * 6
                    release.set()
            assert endpoint.connection_count == 0


async def test_connect_endpoint_keyword_and_errors(server_config, client_config, certs):
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        endpoint = ClientEndpoint(client_config())
        with anyio.fail_after(30):
            async with connect(HOST, server.local_port, endpoint=endpoint) as protocol:
                assert await echo_roundtrip(protocol, b"shared") == b"shared"
                with pytest.raises(RuntimeError, match="shared ClientEndpoint cannot migrate"):
                    await protocol.migrate()
                assert await protocol.ping() is None  # unaffected
            with pytest.raises(ValueError, match="leave configuration and local_port out"):
                async with connect(HOST, server.local_port, endpoint=endpoint,
                                   configuration=client_config()):
                    pass
            # a handshake the server refuses (ALPN) fails only that connection
            bad = ClientEndpoint(client_config(alpn_protocols=["nope"]))
            with pytest.raises(ConnectionError, match="no_application_protocol|ALPN"):
                async with bad.connect(HOST, server.local_port):
                    pass
            bad.close()
            async with endpoint.connect(HOST, server.local_port) as protocol:
                assert await echo_roundtrip(protocol, b"again") == b"again"
        endpoint.close()
        with pytest.raises(RuntimeError, match="closed"):
            async with endpoint.connect(HOST, server.local_port):
                pass
    with pytest.raises(ValueError, match="is_client"):
        ClientEndpoint(server_config())
    with pytest.raises(ValueError, match="token"):
        ClientEndpoint(client_config(token=b"t"))
    with pytest.raises(ValueError, match="threads"):
        ClientEndpoint(client_config(), threads=0)
    with pytest.raises(TypeError, match="endpoint must be a ClientEndpoint"):
        async with connect(HOST, 4433, endpoint=object()):  # type: ignore[arg-type]
            pass


async def test_nobody_there_fails_by_handshake_timeout(client_config):
    """An unconnected socket sees no ICMP error: the connection ends by handshake_timeout
    (documented), and the endpoint's other connections are unaffected."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    async with ClientEndpoint(client_config(handshake_timeout=1.0)) as endpoint:
        with anyio.fail_after(20), pytest.raises(ConnectionError):
            async with endpoint.connect(HOST, port):
                pass
        assert endpoint.connection_count == 0


async def test_shared_endpoint_against_aioquic_server(client_config, certs):
    async with aioquic_echo_server(certs, tolerant=True) as port:
        async with ClientEndpoint(client_config()) as endpoint:
            async def one(i: int) -> None:
                async with endpoint.connect(HOST, port) as protocol:
                    payload = os.urandom(50_000)
                    assert await echo_roundtrip(protocol, payload) == payload

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(one, i)
            assert len(endpoint.local_ports) == 1
