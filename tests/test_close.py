"""Connection close (application codes, idle timeout), robustness against garbage
datagrams, and TLS key logging."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time

import anyio
import pytest
from quic_helpers import (
    HOST,
    MiB,
    Pattern,
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    running_server,
)

from aiopquic.quic.events import ConnectionTerminated, HandshakeCompleted

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


# -- application close codes ---------------------------------------------------------------


async def test_client_close_code_and_reason_seen_by_server(server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                server_protocol = await servers.next()
                await server_protocol.wait_event(HandshakeCompleted)
                protocol.close(error_code=0x42, reason_phrase="client says bye")
                await protocol.wait_closed()
            event = await server_protocol.wait_event(ConnectionTerminated, timeout=10)
            await server_protocol.wait_closed()
    assert event.error_code == 0x42
    assert event.reason_phrase == "client says bye"


async def test_server_close_code_and_reason_seen_by_client(server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(server_config(), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(), create_protocol=RecordingProtocol
            ) as protocol:
                server_protocol = await servers.next()
                await server_protocol.wait_event(HandshakeCompleted)
                server_protocol.close(error_code=7, reason_phrase="server says bye")
                event = await protocol.wait_event(ConnectionTerminated, timeout=10)
                await protocol.wait_closed()
                await server_protocol.wait_closed()
    assert event.error_code == 7
    assert event.reason_phrase == "server says bye"


async def test_idle_timeout_closes_both_sides(server_config, client_config):
    servers = ProtocolCollector()
    async with running_server(server_config(idle_timeout=0.5), create_protocol=servers) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port,
                client_config(idle_timeout=0.5),
                create_protocol=RecordingProtocol,
            ) as protocol:
                server_protocol = await servers.next()
                started = time.monotonic()
                with anyio.fail_after(5):
                    await protocol.wait_closed()
                with anyio.fail_after(5):
                    await server_protocol.wait_closed()
                elapsed = time.monotonic() - started
                for seen in (protocol.seen, server_protocol.seen):
                    closes = [e for e in seen if isinstance(e, ConnectionTerminated)]
                    assert closes, seen
                    # as in aioquic: no frame caused an idle close
                    assert closes[0].frame_type is None and closes[0].error_code == 0
    assert elapsed < 5.0


# -- garbage datagrams ----------------------------------------------------------------------


async def _capture_client_initial(client_config) -> bytes:
    """The first datagram a real aiopquic client sends (a padded long-header Initial)."""
    trap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        trap.bind((HOST, 0))
        trap.setblocking(False)
        loop = asyncio.get_running_loop()
        with pytest.raises(ConnectionError):
            with anyio.fail_after(15):
                async with client(trap.getsockname()[1], client_config(handshake_timeout=1.0)):
                    pytest.fail("connected to a socket that never answers")
        with anyio.fail_after(5):
            return await loop.sock_recv(trap, 65535)
    finally:
        trap.close()


def _garbage_datagrams(initial: bytes) -> list:
    dcid = os.urandom(8)
    scid = os.urandom(8)
    # A well-formed-looking QUIC v1 Initial header (token length 0, length 1182) whose
    # payload is random, padded to 1200 bytes.
    fake_initial_header = bytes([0xC3, 0, 0, 0, 1, 8]) + dcid + bytes([8]) + scid + b"\x00\x44\x9e"
    fake_initial = fake_initial_header + os.urandom(1200 - len(fake_initial_header))
    unknown_version = bytes([0xC0, 0x1A, 0x2A, 0x3A, 0x4A, 8]) + dcid + bytes([8]) + scid
    unknown_version += os.urandom(1200 - len(unknown_version))
    flipped = bytearray(initial)
    flipped[len(flipped) // 2] ^= 0xFF
    datagrams = [
        b"",
        b"\x00",
        os.urandom(1),
        os.urandom(20),
        os.urandom(1200),
        os.urandom(1500),
        b"\xff" * 1200,
        bytes([0xC0, 0, 0, 0, 1]),  # long header cut right after the version
        bytes([0xC0, 0, 0, 0, 1, 20]) + os.urandom(3),  # DCID length exceeds the datagram
        fake_initial_header,  # header only, no payload
        fake_initial,
        fake_initial[:600],
        unknown_version,  # may be answered with Version Negotiation
        bytes([0x40]) + os.urandom(40),  # short header, unknown CID
        bytes([0x40]) + os.urandom(1400),
        initial[:30],  # truncated copies of a real client Initial
        initial[:200],
        initial[: len(initial) - 1],
        bytes(flipped),  # real Initial with a corrupted payload byte
        initial,  # a replayed real Initial (a new, never-completed connection)
    ]
    for _ in range(50):
        datagrams.append(os.urandom(1 + int.from_bytes(os.urandom(2), "big") % 1500))
    return datagrams


async def test_garbage_datagrams_do_not_disturb_server(server_config, client_config):
    initial = await _capture_client_initial(client_config)
    assert len(initial) >= 1200 and initial[0] & 0x80, "expected a padded long-header Initial"
    garbage = _garbage_datagrams(initial)
    payload = Pattern(seed=99).slice(0, 4 * MiB)

    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config()) as protocol:
                assert await echo_roundtrip(protocol, b"before") == b"before"
                transfer = asyncio.ensure_future(echo_roundtrip(protocol, payload))
                spammer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    for _ in range(3):
                        for datagram in garbage:
                            spammer.sendto(datagram, (HOST, server.local_port))
                        await asyncio.sleep(0)  # let the transfer interleave
                finally:
                    spammer.close()
                assert await transfer == payload, "existing client disturbed by garbage"
                assert await echo_roundtrip(protocol, b"after") == b"after"

            # A brand-new client still gets served.
            async with client(server.local_port, client_config()) as protocol:
                assert await echo_roundtrip(protocol, b"new client") == b"new client"


# -- keylog --------------------------------------------------------------------------------

LABELS = (
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
)
NSS_LINE = re.compile(r"^([A-Z_0-9]+) ([0-9a-fA-F]{64}) ([0-9a-fA-F]{32,})$")


def _nss_lines(path) -> set:
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    parsed = set()
    for line in lines:
        match = NSS_LINE.match(line)
        assert match, f"not an NSS key log line: {line!r}"
        if match.group(1) in LABELS:
            parsed.add(line)
    return parsed


async def test_keylog_file_objects_both_sides(server_config, client_config, tmp_path):
    client_log = tmp_path / "client-keys.log"
    server_log = tmp_path / "server-keys.log"
    servers = ProtocolCollector()
    with open(client_log, "a") as client_file, open(server_log, "a") as server_file:
        async with running_server(
            server_config(secrets_log_file=server_file),
            create_protocol=servers,
            stream_handler=echo_stream_handler,
        ) as server:
            with anyio.fail_after(20):
                async with client(
                    server.local_port, client_config(secrets_log_file=client_file)
                ) as protocol:
                    assert await echo_roundtrip(protocol, b"log me") == b"log me"
                    server_protocol = await servers.next()
                    await server_protocol.wait_event(HandshakeCompleted)
                await server_protocol.wait_closed()

    client_lines = _nss_lines(client_log)
    server_lines = _nss_lines(server_log)
    for label in LABELS:
        assert any(line.startswith(label + " ") for line in client_lines), (label, client_lines)
        assert any(line.startswith(label + " ") for line in server_lines), (label, server_lines)
    # Same connection, same secrets: both sides must log identical lines.
    assert client_lines == server_lines


async def test_keylog_path_string(server_config, client_config, tmp_path):
    client_log = tmp_path / "client-keys-by-path.log"
    async with running_server(server_config(), stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(20):
            async with client(
                server.local_port, client_config(secrets_log_file=str(client_log))
            ) as protocol:
                assert await echo_roundtrip(protocol, b"log me") == b"log me"
    lines = _nss_lines(client_log)
    for label in LABELS:
        assert any(line.startswith(label + " ") for line in lines), (label, lines)
