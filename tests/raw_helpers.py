"""Raw-UDP helpers for the fuzz and flood tests (imported as ``raw_helpers``).

``capture_initials`` runs our own client library against a plain UDP socket that never
answers and returns the first datagram of each connection: real, decryptable client Initials
(with distinct DCIDs) to replay or mutate.  ``ServerProcess`` runs an echo + datagram server
(tests/flood_server.py) in a subprocess so its RSS can be read from /proc.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def initial_dcid(pkt: bytes) -> Optional[bytes]:
    """The DCID of a long-header packet, or None."""
    if len(pkt) < 7 or not pkt[0] & 0x80:
        return None
    n = pkt[5]
    if len(pkt) < 6 + n:
        return None
    return bytes(pkt[6 : 6 + n])


def capture_initials(client_configuration: Any, count: int, timeout: float = 20.0,
                     batch: int = 64) -> list[bytes]:
    """First datagrams of ``count`` client connections made by our library (distinct DCIDs)."""
    from aiopquic.quic.connection import QuicEndpoint

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.2)
    port = sink.getsockname()[1]
    found: dict[bytes, bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            # one client connection per endpoint (a client endpoint connects once, before
            # it starts); a batch at a time so threads and sockets stay few
            endpoints = []
            try:
                for _ in range(min(batch, count - len(found))):
                    ep = QuicEndpoint(client_configuration, "127.0.0.1", 0)
                    endpoints.append(ep)
                    ep.connect("127.0.0.1", port, "localhost")
                want = len(found) + len(endpoints)
                batch_deadline = time.monotonic() + 3.0
                while len(found) < want and time.monotonic() < batch_deadline:
                    try:
                        pkt = sink.recv(65535)
                    except socket.timeout:
                        continue
                    dcid = initial_dcid(pkt)
                    if dcid is not None and dcid not in found:  # retransmits repeat a DCID
                        found[dcid] = pkt
            finally:
                for ep in endpoints:
                    ep.close()
    finally:
        sink.close()
    return list(found.values())[:count]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class ServerProcess:
    """tests/flood_server.py in a subprocess: echo streams, count datagrams."""

    def __init__(self, cert: str, key: str, extra_env: Optional[dict] = None) -> None:
        env = dict(os.environ)
        # PyPy: major collections wait until the heap has grown by up to ~82%; cap the
        # growth between collections so RSS measures what the library keeps, not GC slack
        env.setdefault("PYPY_GC_MAX_DELTA", "8MB")
        env.update(extra_env or {})
        self._err: Optional[str] = None
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "flood_server.py"), cert, key],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"flood server did not start: {line!r} {err}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> str:
        """Stop the server; returns its stderr (sanitizer reports, tracebacks, counters)."""
        if self._err is not None:
            return self._err
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=15)
        self._err = err or ""
        return self._err
