"""Helpers for the HTTP/3 and WebTransport tests (imported as ``h3_helpers``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Optional

import anyio

HOST = "127.0.0.1"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.path.join(TESTS_DIR, "peers")
WEB_DIR = os.path.join(TESTS_DIR, "web")
ROOT_DIR = os.path.dirname(TESTS_DIR)

_TASKS: set[asyncio.Task[Any]] = set()


def spawn(coro: Any) -> asyncio.Task[Any]:
    """Start a task and keep a strong reference to it until it ends."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


@dataclass(frozen=True)
class SelfSigned:
    """A runtime ECDSA P-256 certificate (from the native layer) written to files."""

    cert: str
    key: str
    cert_pem: bytes
    key_pem: bytes
    sha256: bytes  # of the DER certificate (what serverCertificateHashes wants)


def self_signed(directory: str) -> SelfSigned:
    from aiopquic._native import make_self_signed

    cert_pem, key_pem = make_self_signed("localhost,127.0.0.1", days=10)
    cert = os.path.join(directory, "wt-cert.pem")
    key = os.path.join(directory, "wt-key.pem")
    with open(cert, "wb") as f:
        f.write(cert_pem)
    with open(key, "wb") as f:
        f.write(key_pem)
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    return SelfSigned(cert, key, cert_pem, key_pem, hashlib.sha256(der).digest())


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now (for peers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_random_file(path: str, size: int, seed: int = 7) -> str:
    """Write ``size`` pseudo-random bytes; returns their sha256."""
    import random

    rnd = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            block = rnd.randbytes(n)
            f.write(block)
            h.update(block)
            left -= n
    return h.hexdigest()


def tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


async def stop_process(process: asyncio.subprocess.Process, timeout: float = 15.0) -> None:
    """Terminate (then kill) a subprocess and reap it, bounded in time."""
    if process.returncode is None:
        try:
            process.terminate()
        except ProcessLookupError:
            pass
        try:
            with anyio.fail_after(timeout):
                await process.wait()
            return
        except TimeoutError:
            pass
        try:
            process.kill()
        except ProcessLookupError:
            pass
    with anyio.fail_after(timeout):
        await process.wait()


@asynccontextmanager
async def subprocess_peer(*argv: str, log_dir: str, name: str,
                          stdout_pipe: bool = False) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run a peer process; its stderr (and stdout unless piped) go to files in ``log_dir``;
    the process is terminated on exit."""
    out_path = os.path.join(log_dir, f"{name}.out")
    err_path = os.path.join(log_dir, f"{name}.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE if stdout_pipe else out, stderr=err,
            stdin=asyncio.subprocess.DEVNULL)
    try:
        yield process
    finally:
        await stop_process(process)


async def read_line_with(process: asyncio.subprocess.Process, prefix: str,
                         timeout: float, err_path: str) -> str:
    """Read the peer's stdout until a line starting with ``prefix``; fail with its stderr."""
    assert process.stdout is not None
    seen = []
    try:
        with anyio.fail_after(timeout):
            while True:
                raw = await process.stdout.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip("\n")
                seen.append(line)
                if line.startswith(prefix):
                    return line
    except TimeoutError:
        pass
    raise AssertionError(f"no {prefix!r} line from the peer; stdout: {seen!r}\n"
                         f"stderr: {tail(err_path)}")


def python_peer(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(PEERS_DIR, script), *args]


class FakeQuic:
    """A stand-in QuicConnection for sans-IO H3Connection tests: records what is sent."""

    def __init__(self, is_client: bool, datagrams: bool = True, credit: bool = False) -> None:
        """``credit``: record the receive credit the H3 layer returns, in ``credited``."""
        from aiopquic.quic.configuration import QuicConfiguration

        self.configuration = QuicConfiguration(
            is_client=is_client, max_datagram_frame_size=65535 if datagrams else None)
        self._is_client = is_client
        self.sent: dict[int, bytearray] = {}
        self.fin: set[int] = set()
        self.datagrams: list[bytes] = []
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.closed_with: Optional[tuple[int, str]] = None
        self.closed = False
        self._used: set[int] = set()
        self.handshake_complete = True
        self._peer_max_datagram = 65535 if datagrams else 0
        self._quic_logger = None
        self.credited: dict[int, int] = {}
        if credit:
            self._auto_credit = True
            self._consumed = self._record_credit
            self._flush_credit = lambda stream_id: None

    def _record_credit(self, stream_id: int, nbytes: int) -> None:
        self.credited[stream_id] = self.credited.get(stream_id, 0) + nbytes

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        sid = (int(is_unidirectional) << 1) | int(not self._is_client)
        while sid in self._used:
            sid += 4
        return sid

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._used.add(stream_id)
        self.sent.setdefault(stream_id, bytearray()).extend(data)
        if end_stream:
            self.fin.add(stream_id)

    def send_datagram_frame(self, data: bytes) -> None:
        self.datagrams.append(bytes(data))

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.resets[stream_id] = error_code

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self.stops[stream_id] = error_code

    def close(self, error_code: int = 0, frame_type: Optional[int] = None,
              reason_phrase: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (error_code, reason_phrase)
            self.closed = True

    def take(self, stream_id: int) -> bytes:
        """Bytes sent on ``stream_id`` since the last take."""
        data = bytes(self.sent.get(stream_id, b""))
        self.sent[stream_id] = bytearray()
        return data


class H3Pair:
    """Two sans-IO H3Connections wired through FakeQuic objects."""

    def __init__(self, webtransport: bool = False) -> None:
        from aiopquic.h3.connection import H3Connection

        self.client_quic = FakeQuic(is_client=True)
        self.server_quic = FakeQuic(is_client=False)
        self.client = H3Connection(self.client_quic, enable_webtransport=webtransport)
        self.server = H3Connection(self.server_quic, enable_webtransport=webtransport)
        self._delivered_fin: set[tuple[bool, int]] = set()

    def _transfer(self, src: FakeQuic, dst: Any, to_client: bool) -> list[Any]:
        from aiopquic.quic.events import DatagramFrameReceived, StreamDataReceived

        events: list[Any] = []
        for stream_id in sorted(src.sent):
            data = src.take(stream_id)
            fin = stream_id in src.fin and (to_client, stream_id) not in self._delivered_fin
            if fin:
                self._delivered_fin.add((to_client, stream_id))
            if data or fin:
                events += dst.handle_event(StreamDataReceived(data=data, end_stream=fin,
                                                              stream_id=stream_id))
        for datagram in src.datagrams:
            events += dst.handle_event(DatagramFrameReceived(data=datagram))
        src.datagrams.clear()
        return events

    def to_server(self) -> list[Any]:
        return self._transfer(self.client_quic, self.server, False)

    def to_client(self) -> list[Any]:
        return self._transfer(self.server_quic, self.client, True)

    def settle(self) -> tuple[list[Any], list[Any]]:
        """Exchange until quiet; returns (events at the server, events at the client)."""
        at_server: list[Any] = []
        at_client: list[Any] = []
        for _ in range(10):
            a = self.to_server()
            b = self.to_client()
            at_server += a
            at_client += b
            if not a and not b and not any(self.client_quic.sent.values()) and \
                    not any(self.server_quic.sent.values()):
                break
        return at_server, at_client
