"""Interop with aioquic (a QUIC stack nobody here wrote), custom ALPN, byte-verified echo.

The aioquic side runs as a subprocess (tests/peers/aioquic_peer.py) so the two stacks do not
share an event loop or process state."""

from __future__ import annotations

import asyncio
import os
import sys

import aioquic  # noqa: F401  (test extra; fail loudly if it is missing)
import anyio
import pytest
from quic_helpers import MiB, Pattern, client, echo_roundtrip, running_server, spawn

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "aioquic_peer.py")
ALPN = "aqtest"
SIZE = 16 * MiB


def _read(path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


async def _stop(process) -> None:
    if process.returncode is None:
        process.kill()
    with anyio.fail_after(10):
        await process.wait()


async def test_our_client_to_aioquic_server(client_config, certs, tmp_path):
    stderr_path = tmp_path / "aioquic-server.err"
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            PEER,
            "server",
            "--cert",
            certs.cert,
            "--key",
            certs.key,
            "--alpn",
            ALPN,
            "--lifetime",
            "150",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        with anyio.fail_after(30):
            line = (await process.stdout.readline()).decode().strip()
        assert line.startswith("LISTENING "), (
            f"aioquic server did not start: {line!r}\n{_read(stderr_path)}"
        )
        port = int(line.split()[1])

        payload = Pattern(seed=0xA1).slice(0, SIZE)
        with anyio.fail_after(120):
            async with client(port, client_config(alpn_protocols=[ALPN])) as protocol:
                echoed = await echo_roundtrip(protocol, payload)
        assert len(echoed) == len(payload)
        assert echoed == payload
    finally:
        await _stop(process)


async def test_aioquic_client_to_our_server(server_config, certs, tmp_path):
    received = []

    def echo_and_count(reader, writer):
        async def run() -> None:
            total = 0
            while True:
                data = await reader.read(64 * 1024)
                if not data:
                    break
                total += len(data)
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            received.append(total)

        spawn(run())

    async with running_server(
        server_config(alpn_protocols=[ALPN]), stream_handler=echo_and_count
    ) as server:
        stdout_path = tmp_path / "aioquic-client.out"
        stderr_path = tmp_path / "aioquic-client.err"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                PEER,
                "client",
                "--port",
                str(server.local_port),
                "--ca",
                certs.ca,
                "--server-name",
                "localhost",
                "--alpn",
                ALPN,
                "--size",
                str(SIZE),
                "--lifetime",
                "120",
                stdout=stdout,
                stderr=stderr,
            )
        try:
            with anyio.fail_after(150):
                returncode = await process.wait()
        finally:
            await _stop(process)
        output = _read(stdout_path) + _read(stderr_path)
        assert returncode == 0, f"aioquic client failed ({returncode}):\n{output}"
        assert _read(stdout_path).strip() == f"OK {SIZE}"
    assert received == [SIZE]
