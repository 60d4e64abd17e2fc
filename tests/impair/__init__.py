"""UDP impairment relay for tests and benchmarks (this kernel has no netem).

``Relay`` runs ``relay.c`` (compiled on first use, cached by a hash of its source) as a
child process: clients send to ``relay.address``, the relay forwards to ``upstream`` and
sends the replies back, applying per-direction impairments on the way::

    from impair import Relay

    with Relay(upstream=("127.0.0.1", server_port), c2s={"loss": 0.01}, delay_ms=10) as relay:
        connect(*relay.address, ...)
        relay.set("s2c", loss=0.05)
        relay.blackhole("both", 1.5)
        relay.rebind("port")
        print(relay.stats()["c2s"]["dropped_loss"])

Directions are ``"c2s"`` (client to server), ``"s2c"`` (server to client) and ``"both"``.
Parameters (see docs/impairment-relay.md): ``mtu``, ``loss``, ``burst_enter``,
``burst_exit``, ``burst_loss``, ``delay_ms``, ``jitter_ms``, ``reorder``, ``reorder_ms``,
``dup``, ``corrupt``, ``rate_mbit``, ``queue_bytes``.

Control calls are synchronous and quick (a line to the relay's stdin, a JSON line back),
each bounded by ``timeout``; calling them from a coroutine is fine.  Dependency-free: the
benchmarks import this package too.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Optional, Union

__all__ = ["PARAMS", "Relay", "RelayError", "build_relay", "build_tool"]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]

#: Every per-direction impairment parameter the relay accepts.
PARAMS = frozenset(
    {
        "mtu",
        "loss",
        "burst_enter",
        "burst_exit",
        "burst_loss",
        "delay_ms",
        "jitter_ms",
        "reorder",
        "reorder_ms",
        "dup",
        "corrupt",
        "rate_mbit",
        "queue_bytes",
    }
)
DIRECTIONS = ("c2s", "s2c", "both")

Number = Union[int, float]


class RelayError(RuntimeError):
    """The relay could not be built or started, refused a command, or did not answer."""


def _cache_dirs() -> list:
    return [
        os.path.join(REPO_ROOT, "build", "impair"),
        os.path.join(tempfile.gettempdir(), "aiopquic-impair"),
    ]


def build_relay(cc: Optional[str] = None) -> str:
    """Compile relay.c (once per source version) and return the executable's path.

    The binary is named after a hash of the source and flags, built under a temporary name
    and moved into place with ``os.replace``, so concurrent builders (two pytest processes)
    never see a half-written file.  ``$CC`` (default gcc) is the compiler.
    ``$AIOPQUIC_RELAY_BINARY`` names a prebuilt relay to use instead (e.g. a sanitizer
    build)."""
    override = os.environ.get("AIOPQUIC_RELAY_BINARY")
    if override:
        return override
    return build_tool("relay.c", cc)


def build_tool(source_name: str, cc: Optional[str] = None) -> str:
    """Compile ``source_name`` (a C file next to this module) into the cache; see
    ``build_relay``."""
    compiler = cc or os.environ.get("CC") or "gcc"
    source_path = os.path.join(HERE, source_name)
    stem = os.path.splitext(source_name)[0]
    with open(source_path, "rb") as f:
        source = f.read()
    digest = hashlib.sha256(source + " ".join(CFLAGS).encode()).hexdigest()[:16]
    errors = []
    for directory in _cache_dirs():
        target = os.path.join(directory, f"{stem}-{digest}")
        if os.access(target, os.X_OK):
            return target
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            errors.append(f"{directory}: {exc}")
            continue
        if shutil.which(compiler) is None:
            raise RelayError(f"C compiler {compiler!r} not found (needed to build {source_path})")
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}-{digest}-", dir=directory)
        os.close(fd)
        try:
            proc = subprocess.run(
                [compiler, *CFLAGS, "-o", tmp, source_path],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
            if proc.returncode != 0:
                raise RelayError(
                    f"building {source_name} failed:\n{proc.stdout.decode(errors='replace')}"
                )
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
            return target
        except OSError as exc:
            errors.append(f"{directory}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RelayError(f"no writable cache directory for {source_name}: " + "; ".join(errors))


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"impairment values must be numbers, not {value!r}")
    return repr(float(value)) if isinstance(value, float) else str(value)


def _params_text(params: dict[str, Number]) -> str:
    unknown = set(params) - PARAMS
    if unknown:
        raise ValueError(f"unknown impairment parameter(s): {sorted(unknown)}")
    return " ".join(f"{key}={_format_value(value)}" for key, value in params.items())


class Relay:
    """A running impairment relay (context manager).

    ``upstream`` is the server's (host, port); the relay listens on ``listen_host``
    (port ``listen_port``, 0 = any) and ``address`` is where clients should send.
    Initial impairments: ``c2s={...}`` / ``s2c={...}`` for one direction, and any
    parameter given as a keyword (``loss=0.01``) applies to both directions (after the
    per-direction dicts, so it overrides them).  ``seed`` makes the random choices
    reproducible; ``max_seconds`` bounds the relay's lifetime in case nobody closes it.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        *,
        c2s: Optional[dict[str, Number]] = None,
        s2c: Optional[dict[str, Number]] = None,
        seed: Optional[int] = None,
        max_seconds: float = 600.0,
        timeout: float = 5.0,
        **both: Number,
    ) -> None:
        self.timeout = timeout
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        binary = build_relay()
        argv = [
            binary,
            "--upstream-host",
            str(upstream[0]),
            "--upstream-port",
            str(int(upstream[1])),
            "--listen-host",
            listen_host,
            "--listen-port",
            str(int(listen_port)),
            "--max-seconds",
            repr(float(max_seconds)),
        ]
        if seed is not None:
            argv += ["--seed", str(int(seed))]
        # Validate before starting anything.
        for params in (c2s, s2c, both):
            if params:
                _params_text(params)
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,
            close_fds=True,
        )
        self._reader = threading.Thread(target=self._read_lines, name="relay-stdout", daemon=True)
        self._reader.start()
        try:
            hello = self._next_reply(timeout)
            if hello.get("event") != "listening":
                raise RelayError(f"relay failed to start: {hello}")
            self.address: tuple[str, int] = (str(hello["host"]), int(hello["port"]))
            self.pid: int = int(hello["pid"])
            if c2s:
                self.set("c2s", **c2s)
            if s2c:
                self.set("s2c", **s2c)
            if both:
                self.set("both", **both)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _read_lines(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        for raw in stdout:
            self._lines.put(raw.decode("utf-8", errors="replace"))
        self._lines.put(None)

    def _next_reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RelayError(f"relay did not answer within {timeout:.1f}s") from None
        if line is None:
            self._lines.put(None)  # keep reporting EOF to later callers
            raise RelayError(f"relay exited (status {self._proc.poll()})")
        try:
            reply = json.loads(line)
        except ValueError:
            raise RelayError(f"relay sent a non-JSON line: {line!r}") from None
        if not isinstance(reply, dict):
            raise RelayError(f"relay sent an unexpected reply: {line!r}")
        return reply

    def command(self, line: str, timeout: Optional[float] = None) -> dict[str, Any]:
        """Send one raw control line and return its JSON answer (``RelayError`` if the relay
        refused it, exited, or did not answer within ``timeout``)."""
        if "\n" in line:
            raise ValueError("one command per call")
        with self._lock:
            if self._closed:
                raise RelayError("relay is closed")
            stdin = self._proc.stdin
            assert stdin is not None
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except OSError as exc:
                raise RelayError(f"relay is gone: {exc}") from None
            reply = self._next_reply(self.timeout if timeout is None else timeout)
        if not reply.get("ok"):
            raise RelayError(f"relay refused {line!r}: {reply}")
        return reply

    # ------------------------------------------------------------------ control

    def set(self, direction: str, **params: Number) -> dict[str, Any]:
        """Change impairments of ``direction`` ("c2s", "s2c" or "both"); parameters not
        given keep their values.  Returns the resulting configuration of both directions."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        text = _params_text(params)
        return self.command(f"set {direction} {text}".rstrip())

    def blackhole(self, direction: str, seconds: float) -> None:
        """Drop everything in ``direction`` for ``seconds`` from now (0 ends a black hole)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        self.command(f"blackhole {direction} {float(seconds)!r}")

    def rebind(self, kind: str = "port") -> dict[str, Any]:
        """NAT rebinding: give every client a fresh upstream socket, so the server sees it
        move.  ``"port"``: same address, new port.  ``"addr"``: next 127.0.0.N address
        (IPv4; on IPv6 only ::1 exists, so the port changes and ``addr_changed`` is false).
        Replies still in flight to the old socket are dropped."""
        if kind not in ("port", "addr"):
            raise ValueError("kind must be 'port' or 'addr'")
        return self.command(f"rebind {kind}")

    def sessions(self) -> list:
        """Per client: ``{"client": [host, port], "upstream_local": [host, port]}``."""
        return list(self.command("sessions")["sessions"])

    def stats(self) -> dict[str, Any]:
        """Counters: ``{"c2s": {...}, "s2c": {...}, "sessions": n, "held_bytes": n}``; per
        direction received, rx_bytes, forwarded, bytes, dropped_mtu, dropped_loss,
        dropped_queue, dropped_blackhole, dropped_send, dropped_nosession, duplicated,
        corrupted, reordered, held."""
        return self.command("stats")

    def zero(self) -> None:
        """Reset all counters to zero."""
        self.command("zero")

    def reset(self) -> None:
        """Clear every impairment (and any black hole) in both directions."""
        self.command("reset")

    # ------------------------------------------------------------------ lifetime

    @property
    def returncode(self) -> Optional[int]:
        """The relay's exit status, or None while it runs."""
        return self._proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the relay to exit by itself (``subprocess.TimeoutExpired`` if it does not
        within ``timeout``) and return its exit status."""
        return self._proc.wait(timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Close the relay's stdin (it exits on EOF) and wait; kill it if it lingers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=timeout)
        if self._proc.stdout is not None:
            self._reader.join(timeout=timeout)
            self._proc.stdout.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and getattr(self, "_proc", None) is not None:
            try:
                self._proc.kill()
            except OSError:
                pass

    def __repr__(self) -> str:
        address = getattr(self, "address", None)
        return f"<Relay {address} pid={getattr(self, 'pid', None)}>"


if __name__ == "__main__":  # pragma: no cover - manual use: python -m impair
    print(build_relay(), file=sys.stdout)
