"""A server bound to a wildcard address (0.0.0.0, or :: dual-stack) answers from the address
its client sent to (IP_PKTINFO / IPV6_PKTINFO), over real UDP on loopback.

All of 127.0.0.0/8 is loopback on Linux, so a client can reach the same server as 127.0.0.1,
127.0.0.2 and 127.0.0.3.  Without PKTINFO the kernel would pick the source of every reply
(127.0.0.1): the client, whose path is 127.0.0.2, drops them and never completes the
handshake.  The server's view of the connection (``local_address()``) names the address the
client used."""

from __future__ import annotations

import socket

import anyio
import pytest
from quic_helpers import (
    KiB,
    Pattern,
    ProtocolCollector,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.asyncio import connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

TARGETS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def _loopback_answers(address: str) -> bool:
    """True when a UDP socket can be bound to ``address`` (an extra loopback address or
    ::1 may be missing, e.g. in a network namespace without IPv6)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _mapped(host: str, family: int) -> str:
    """How the server names an IPv4 address: itself, or IPv4-mapped on an IPv6 socket."""
    return host if family == socket.AF_INET or ":" in host else f"::ffff:{host}"


async def _echo_via(address: str, port: int, client_config, collector: ProtocolCollector,
                    seed: int) -> tuple[str, int]:
    """Handshake + a 64 KiB echo to ``address:port``; the server's local address of it."""
    payload = Pattern(seed=seed).slice(0, 64 * KiB)
    with anyio.fail_after(15):
        async with connect(address, port, configuration=client_config()) as protocol:
            echoed = await echo_roundtrip(protocol, payload)
            server_side = await collector.next()
    assert echoed == payload
    local = server_side._quic.local_address()
    assert local is not None
    return str(local[0]), int(local[1])


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
async def test_wildcard_server_answers_from_the_address_it_was_sent_to(bind, server_config,
                                                                      client_config):
    if not _loopback_answers("127.0.0.2") or (bind == "::" and not _loopback_answers("::1")):
        pytest.skip("no 127.0.0.2 or no IPv6 loopback here")
    family = socket.AF_INET6 if bind == "::" else socket.AF_INET
    collector = ProtocolCollector()
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=collector, host=bind) as server:
        port = server.local_port
        targets = TARGETS + (("::1",) if bind == "::" else ())
        for seed, address in enumerate(targets):
            local = await _echo_via(address, port, client_config, collector, seed)
            assert local == (_mapped(address, family), port), (address, local)


async def test_retry_leaves_from_the_address_it_was_sent_to(server_config, client_config):
    """Stateless packets (here a Retry) too: a client sent to 127.0.0.3 accepts a Retry only
    from 127.0.0.3."""
    if not _loopback_answers("127.0.0.3"):
        pytest.skip("no 127.0.0.3 here")
    collector = ProtocolCollector()
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=collector, host="0.0.0.0", retry=True) as server:
        port = server.local_port
        local = await _echo_via("127.0.0.3", port, client_config, collector, 7)
    assert local == ("127.0.0.3", port)


async def test_wildcard_workers_answer_from_the_address_sent_to(server_config, client_config):
    """Two SO_REUSEPORT workers on 0.0.0.0: whichever worker a client's packets reach, it
    answers from the address the client used."""
    if not _loopback_answers("127.0.0.3"):
        pytest.skip("no 127.0.0.3 here")
    collector = ProtocolCollector()
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=collector, host="0.0.0.0", workers=2) as server:
        port = server.local_port
        for seed, address in enumerate(("127.0.0.2", "127.0.0.3") * 2):
            local = await _echo_via(address, port, client_config, collector, 20 + seed)
            assert local == (address, port)


async def test_specific_bind_is_unchanged(server_config, client_config):
    """A server bound to one address answers from it, and says so."""
    collector = ProtocolCollector()
    async with running_server(server_config(), stream_handler=echo_stream_handler,
                              create_protocol=collector) as server:
        payload = Pattern(seed=9).slice(0, 64 * KiB)
        with anyio.fail_after(15):
            async with client(server.local_port, client_config()) as protocol:
                assert await echo_roundtrip(protocol, payload) == payload
                server_side = await collector.next()
        assert server_side._quic.local_address() == ("127.0.0.1", server.local_port)
