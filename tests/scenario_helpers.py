"""Helpers for tests/test_scenarios.py (the QUIC Interop Runner's test cases).

Every scenario is a download of one or more files through the impairment relay
(``tests/impair``), checked byte for byte, with one of five peer pairings:

``ours``            our client -> relay -> our server, in this process, a small download
                    protocol on raw QUIC streams (request ``b"<offset> <size>"`` + FIN; the
                    answer is ``size`` bytes of a Pattern from ``offset``, then FIN)
``gtlsclient``      Debian's ngtcp2 ``gtlsclient`` -> relay -> ``python -m aiopquic serve``
``gtlsserver``      ``python -m aiopquic get`` -> relay -> Debian's ``gtlsserver``
``aioquic-client``  tests/peers/aioquic_peer.py client -> relay -> our server (echo)
``aioquic-server``  our client -> relay -> tests/peers/aioquic_peer.py server (echo)

Mid-transfer actions (black hole, rebinding, MTU clamp) are triggered by the relay's own
counters (``s2c`` bytes forwarded), so they work the same whatever the peer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import anyio
from h3_helpers import (
    ROOT_DIR,
    free_udp_port,
    read_line_with,
    self_signed,
    sha256_file,
    subprocess_peer,
    tail,
    write_random_file,
)
from impair import Relay
from quic_helpers import KiB, MiB, Pattern, echo_stream_handler, spawn

from aiopquic.asyncio import connect, serve

GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
AIOQUIC_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers",
                            "aioquic_peer.py")
AQ_ALPN = "aqtest"
GTLS_IDLE_TIMEOUT = 16  # gtlsclient's --timeout (idle); its default is 30 s
PATTERN = Pattern(seed=0x5CE)

PEERS = ("ours", "gtlsclient", "gtlsserver", "aioquic-client", "aioquic-server")


def have_gtlsclient() -> bool:
    return os.access(GTLSCLIENT, os.X_OK)


def have_gtlsserver() -> bool:
    return os.access(GTLSSERVER, os.X_OK)


def have_aioquic() -> bool:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return False
    return True


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aiopquic", *args]


def env_with_package() -> None:
    path = os.environ.get("PYTHONPATH", "")
    if ROOT_DIR not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = ROOT_DIR + (os.pathsep + path if path else "")


# ---------------------------------------------------------------------------------------
# The scenario description


@dataclass
class Action:
    """Something done to the relay once the server has sent ``after_bytes`` through it."""

    after_bytes: int
    run: Callable[[Relay], Any]
    name: str = ""
    done: bool = False


@dataclass
class Scenario:
    name: str
    sizes: list = field(default_factory=lambda: [1 * KiB])
    c2s: dict = field(default_factory=dict)
    s2c: dict = field(default_factory=dict)
    both: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)
    seed: int = 1
    timeout: float = 60.0
    host: str = "127.0.0.1"

    def relay(self, upstream: tuple) -> Relay:
        return Relay(upstream=upstream, listen_host=self.host, c2s=self.c2s or None,
                     s2c=self.s2c or None, seed=self.seed, **self.both)


async def drive_actions(relay: Relay, actions: list) -> None:
    """Poll the relay's counters (every 10 ms) and fire each action when its threshold of
    server-to-client bytes has gone through.  Runs until cancelled."""
    pending = sorted(actions, key=lambda a: a.after_bytes)
    while pending:
        sent = relay.stats()["s2c"]["bytes"]
        while pending and sent >= pending[0].after_bytes:
            action = pending.pop(0)
            action.run(relay)
            action.done = True
        await asyncio.sleep(0.01)


class Impaired:
    """Relay + action driver as an async context manager; checks on exit that every action
    fired (a transfer that ended before its trigger point did not test the scenario)."""

    def __init__(self, scenario: Scenario, upstream: tuple) -> None:
        self.scenario = scenario
        self.upstream = upstream
        self.relay: Optional[Relay] = None
        self._task: Optional[asyncio.Task] = None

    async def __aenter__(self) -> Relay:
        self.relay = self.scenario.relay(self.upstream)
        if self.scenario.actions:
            for action in self.scenario.actions:
                action.done = False
            self._task = spawn(drive_actions(self.relay, self.scenario.actions))
        return self.relay

    async def __aexit__(self, exc_type, *exc: object) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass
            if exc_type is None:
                missed = [a.name for a in self.scenario.actions if not a.done]
                assert not missed, f"transfer ended before these actions fired: {missed}"
        finally:
            assert self.relay is not None
            self.stats = self.relay.stats()
            self.relay.close()


# ---------------------------------------------------------------------------------------
# ours <-> ours: a tiny download protocol on raw QUIC streams


def download_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server side: read ``b"<offset> <size>"`` to EOF, answer with the pattern slice."""

    async def run() -> None:
        request = await reader.read()
        offset, size = (int(x) for x in request.split())
        chunk = 256 * KiB
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            writer.write(PATTERN.slice(offset + sent, n))
            await writer.drain()
            sent += n
        writer.write_eof()

    spawn(run())


async def fetch(protocol, offset: int, size: int) -> None:
    """Client side: request a slice and verify every byte as it arrives."""
    reader, writer = await protocol.create_stream()
    writer.write(b"%d %d" % (offset, size))
    writer.write_eof()
    got = 0
    while True:
        data = await reader.read(256 * KiB)
        if not data:
            break
        expected = PATTERN.slice(offset + got, len(data))
        assert data == expected, f"mismatch in [{offset + got}, +{len(data)})"
        got += len(data)
    assert got == size, f"got {got} bytes of {size}"


async def fetch_all(protocol, sizes: list, concurrency: int = 64) -> None:
    limit = asyncio.Semaphore(concurrency)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))] if len(sizes) < 64 else \
        [i * 7919 for i in range(len(sizes))]

    async def one(offset: int, size: int) -> None:
        async with limit:
            await fetch(protocol, offset, size)

    await asyncio.gather(*(one(o, s) for o, s in zip(offsets, sizes)))


async def run_ours(scenario: Scenario, server_config, client_config,
                   during: Optional[Callable[[Any, Relay], Awaitable[None]]] = None,
                   create_protocol: Optional[Callable[..., Any]] = None) -> dict:
    """Our client downloads ``scenario.sizes`` from our server through the relay, in one
    connection.  ``during(protocol, relay)`` runs concurrently with the download (e.g. to
    watch the client's stats); ``create_protocol`` is passed to serve().  Returns the relay
    stats."""
    extra = {} if create_protocol is None else {"create_protocol": create_protocol}
    server = await serve(scenario.host, 0, configuration=server_config(),
                         stream_handler=download_handler, **extra)
    try:
        impaired = Impaired(scenario, (scenario.host, server.local_port))
        async with impaired as relay:
            with anyio.fail_after(scenario.timeout):
                async with connect(relay.address[0], relay.address[1],
                                   configuration=client_config()) as protocol:
                    jobs = [fetch_all(protocol, scenario.sizes)]
                    if during is not None:
                        jobs.append(during(protocol, relay))
                    await asyncio.gather(*jobs)
    finally:
        server.close()
    return impaired.stats


# ---------------------------------------------------------------------------------------
# gtlsclient -> our serve CLI


def write_files(directory: str, sizes: list) -> dict:
    """``f<i>.bin`` of each size; returns {name: sha256}."""
    os.makedirs(directory, exist_ok=True)
    return {f"f{i}.bin": write_random_file(os.path.join(directory, f"f{i}.bin"), size,
                                           seed=1000 + i)
            for i, size in enumerate(sizes)}


async def gather_tolerant(jobs: list, min_ok: Optional[int]) -> None:
    """Run ``jobs`` side by side; all must succeed, or at least ``min_ok`` of them (an
    AssertionError lists the failures)."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    need = len(jobs) if min_ok is None else min_ok
    if len(jobs) - len(failures) < need:
        raise AssertionError(f"{len(jobs) - len(failures)} of {len(jobs)} succeeded (need "
                             f"{need}): " + "; ".join(repr(f) for f in failures))
    if failures:
        print(f"{len(failures)} of {len(jobs)} failed (tolerated): {failures}")


def check_files(directory: str, expected: dict, log: str = "") -> None:
    for name, digest in expected.items():
        path = os.path.join(directory, name)
        assert os.path.exists(path), f"{name} was not downloaded " + (tail(log) if log else "")
        assert sha256_file(path) == digest, f"{name} differs"


async def run_process(argv: list, log_dir: str, name: str, timeout: float) -> int:
    async with subprocess_peer(*argv, log_dir=log_dir, name=name) as process:
        try:
            with anyio.fail_after(timeout):
                return await process.wait()
        except TimeoutError:
            raise AssertionError(f"{name} did not finish within {timeout} s:\n"
                                 f"{tail(os.path.join(log_dir, name + '.err'))}") from None


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_gtlsclient(scenario: Scenario, tmp_path, connections: int = 1,
                         min_ok: Optional[int] = None) -> dict:
    """``connections`` gtlsclient processes (concurrently), each downloading every file of
    the scenario in one connection, from our ``serve`` CLI through the relay.  All must
    succeed, or at least ``min_ok`` of them."""
    env_with_package()
    root = os.path.join(str(tmp_path), "root")
    expected = write_files(root, scenario.sizes)
    argv = cli("serve", "--host", scenario.host, "--port", "0", "--root", root, "--quiet")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aiopquic-serve",
                               stdout_pipe=True) as server:
        line = await read_line_with(server, "listening on", 60,
                                    os.path.join(str(tmp_path), "aiopquic-serve.err"))
        port = int(line.rsplit(":", 1)[1])
        impaired = Impaired(scenario, (scenario.host, port))
        async with impaired as relay:
            rhost, rport = relay.address
            urls = [f"https://{url_host(rhost)}:{rport}/{name}" for name in expected]

            async def one(index: int) -> None:
                dl = os.path.join(str(tmp_path), f"dl{index}")
                os.makedirs(dl)
                name = f"gtlsclient{index}"
                rc = await run_process(
                    [GTLSCLIENT, "-q", "--exit-on-all-streams-close", f"--download={dl}",
                     "--handshake-timeout=60s", f"--timeout={GTLS_IDLE_TIMEOUT}s", rhost,
                     str(rport), *urls],
                    str(tmp_path), name, scenario.timeout)
                # (gtlsclient exits 0 after an idle timeout: the files tell)
                assert rc == 0, tail(os.path.join(str(tmp_path), name + ".err"))
                check_files(dl, expected, os.path.join(str(tmp_path), name + ".err"))

            await gather_tolerant([one(i) for i in range(connections)], min_ok)
    return impaired.stats


async def run_gtlsserver(scenario: Scenario, tmp_path, connections: int = 1,
                         min_ok: Optional[int] = None) -> dict:
    """Our ``get`` CLI downloads each file (one connection per file: ``get`` fetches one
    URL) from gtlsserver through the relay; ``connections`` such downloads of every file run
    side by side."""
    env_with_package()
    cert = self_signed(str(tmp_path))
    root = os.path.join(str(tmp_path), "htdocs")
    expected = write_files(root, scenario.sizes)
    for attempt in range(3):  # a port taken meanwhile, or a server that died at start
        port = free_udp_port() if ":" not in scenario.host else _free_udp6_port()
        argv = [GTLSSERVER, "-q", "-d", root, scenario.host, str(port), cert.key, cert.cert]
        async with subprocess_peer(*argv, log_dir=str(tmp_path),
                                   name=f"gtlsserver{attempt}") as process:
            if not await _bound_while_running(process, scenario.host, port):
                continue
            return await _gtlsserver_downloads(scenario, tmp_path, cert, expected, port,
                                               connections, min_ok)
    raise AssertionError("gtlsserver did not start (3 attempts): " +
                         tail(os.path.join(str(tmp_path), "gtlsserver2.err")))


async def _bound_while_running(process, host: str, port: int, timeout: float = 10.0) -> bool:
    """True once ``port`` is bound; False if the process exited or ``timeout`` passed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    return True
            await asyncio.sleep(0.02)
    return False


async def _gtlsserver_downloads(scenario: Scenario, tmp_path, cert, expected, port: int,
                                connections: int, min_ok: Optional[int]) -> dict:
    """Our ``get`` downloads of every file from the gtlsserver on ``port``, via the relay."""
    impaired = Impaired(scenario, (scenario.host, port))
    async with impaired as relay:
        rhost, rport = relay.address

        async def one(index: int) -> None:
            out_dir = os.path.join(str(tmp_path), f"got{index}")
            os.makedirs(out_dir)
            for name in expected:
                url = f"https://{url_host(rhost)}:{rport}/{name}"
                log = f"aiopquic-get-{index}-{name}"
                rc = await run_process(
                    cli("get", "--cacert", cert.cert, "--server-name", "localhost",
                        "--timeout", str(int(scenario.timeout)),
                        "--handshake-timeout", str(max(10, int(scenario.timeout) - 5)),
                        "-q", "-o",
                        os.path.join(out_dir, name), url),
                    str(tmp_path), log, scenario.timeout + 10)
                assert rc == 0, tail(os.path.join(str(tmp_path), log + ".err"))
            check_files(out_dir, expected)

        await gather_tolerant([one(i) for i in range(connections)], min_ok)
    return impaired.stats


def _free_udp6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------
# aioquic peers (echo of the pattern: upload and download of the same bytes)


def echo_size(scenario: Scenario) -> int:
    """Half the scenario's bytes (at least 1 KiB): an echo moves them twice, and aioquic
    (pure Python) is the slow end; the mid-transfer triggers, counted in server-to-client
    bytes, stay inside the transfer."""
    return max(sum(scenario.sizes) // 2, 1 * KiB) if sum(scenario.sizes) > 1 * MiB \
        else sum(scenario.sizes)


async def run_aioquic_client(scenario: Scenario, server_config, certs, tmp_path) -> dict:
    """aioquic client echoes sum(sizes) bytes through the relay off our in-process server."""
    size = echo_size(scenario)
    server = await serve(scenario.host, 0, configuration=server_config(alpn_protocols=[AQ_ALPN]),
                         stream_handler=echo_stream_handler)
    try:
        impaired = Impaired(scenario, (scenario.host, server.local_port))
        async with impaired as relay:
            rc = await run_process(
                [sys.executable, AIOQUIC_PEER, "client", "--host", relay.address[0],
                 "--port", str(relay.address[1]), "--ca", certs.ca, "--alpn", AQ_ALPN,
                 "--size", str(size), "--lifetime", str(scenario.timeout)],
                str(tmp_path), "aioquic-client", scenario.timeout + 10)
            out = tail(os.path.join(str(tmp_path), "aioquic-client.out"))
            assert rc == 0, out + tail(os.path.join(str(tmp_path), "aioquic-client.err"))
            assert out.strip() == f"OK {size}", out
    finally:
        server.close()
    return impaired.stats


async def run_aioquic_server(scenario: Scenario, client_config, certs, tmp_path) -> dict:
    """Our client echoes sum(sizes) bytes (verified) through the relay off aioquic."""
    size = echo_size(scenario)
    argv = [sys.executable, AIOQUIC_PEER, "server", "--host", scenario.host, "--cert",
            certs.cert, "--key", certs.key, "--alpn", AQ_ALPN, "--lifetime",
            str(scenario.timeout + 30)]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-server",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "LISTENING", 30,
                                    os.path.join(str(tmp_path), "aioquic-server.err"))
        port = int(line.split()[1])
        payload = PATTERN.slice(0, size)
        impaired = Impaired(scenario, (scenario.host, port))
        async with impaired as relay:
            with anyio.fail_after(scenario.timeout):
                async with connect(relay.address[0], relay.address[1],
                                   configuration=client_config(
                                       alpn_protocols=[AQ_ALPN])) as protocol:
                    reader, writer = await protocol.create_stream()

                    async def send() -> None:
                        for offset in range(0, size, 64 * KiB):
                            writer.write(payload[offset:offset + 64 * KiB])
                            await writer.drain()
                        writer.write_eof()

                    echoed, _ = await asyncio.gather(reader.read(), send())
        assert len(echoed) == size and echoed == payload
    return impaired.stats


async def run_peer(peer: str, scenario: Scenario, *, server_config, client_config, certs,
                   tmp_path) -> dict:
    if peer == "ours":
        return await run_ours(scenario, server_config, client_config)
    if peer == "gtlsclient":
        return await run_gtlsclient(scenario, tmp_path)
    if peer == "gtlsserver":
        return await run_gtlsserver(scenario, tmp_path)
    if peer == "aioquic-client":
        return await run_aioquic_client(scenario, server_config, certs, tmp_path)
    if peer == "aioquic-server":
        return await run_aioquic_server(scenario, client_config, certs, tmp_path)
    raise ValueError(peer)


__all__ = [
    "PEERS", "Action", "Impaired", "MiB", "KiB", "Scenario", "run_peer", "run_ours",
    "run_gtlsclient", "have_gtlsclient", "have_gtlsserver", "have_aioquic",
]
