"""aioquic's own example programs, run with only their imports changed.

The examples come from aioquic's source distribution, fetched at test time with pip (into a
cache directory, ``$AIOPQUIC_TEST_CACHE`` or ``~/.cache/aiopquic-tests``; none of their code is
in this repository).  A temporary copy gets ``aioquic`` -> ``aiopquic`` in its import lines and
nothing else (``import aioquic`` becomes ``import aiopquic as aioquic``).  Then:

- ``http3_server.py`` (with its Starlette ``demo:app``) and ``http3_client.py``: GET ``/`` (a
  page that pushes ``/style.css``), POST ``/echo`` and HTTP/0.9 (``--legacy-http``,
  hq-interop), for every mix of aioquic and aiopquic on the two sides;
- ``doq_server.py`` / ``doq_client.py`` (DNS over QUIC), the server forwarding to a stub DNS
  resolver on a loopback address, for every mix.

Skips (with the reason) when the source distribution cannot be fetched, when an example's
own dependencies (wsproto, starlette, jinja2, dnslib) are missing, and on Python < 3.10 (the
examples use ``X | Y`` annotations at run time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Optional

import anyio
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(240)]

if sys.version_info < (3, 10):
    pytest.skip("aioquic's examples use `X | Y` annotations at run time (Python >= 3.10)",
                allow_module_level=True)

aioquic = pytest.importorskip("aioquic")

HOST = "127.0.0.1"
STUB_RESOLVER = "127.83.0.1"  # any 127/8 address is loopback on Linux
STACKS = ("aioquic", "aiopquic")
MIXES = [(server, client) for server in STACKS for client in STACKS
         if (server, client) != ("aioquic", "aioquic")]
TIMEOUT = 30.0


# ---------------------------------------------------------------------------- the examples


def _cache_dir() -> str:
    base = os.environ.get("AIOPQUIC_TEST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "aiopquic-tests")
    os.makedirs(base, exist_ok=True)
    return base


def _fetch_examples(version: str) -> str:
    """The examples/ directory of aioquic ``version``'s sdist (downloaded once, cached)."""
    cache = _cache_dir()
    root = os.path.join(cache, f"aioquic-{version}")
    examples = os.path.join(root, "examples")
    if os.path.isdir(examples):
        return examples
    archive = os.path.join(cache, f"aioquic-{version}.tar.gz")
    if not os.path.exists(archive):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"aioquic=={version}", "-d", cache],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180, check=False)
        if result.returncode != 0 or not os.path.exists(archive):
            pytest.skip(f"cannot download aioquic {version}'s source distribution with pip: "
                        f"{result.stdout.decode(errors='replace')[-300:]}")
    # extract beside the cache, then rename: a concurrent run never sees half a tree
    staging = tempfile.mkdtemp(prefix="aioquic-examples-", dir=cache)
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(f"aioquic-{version}/examples/")
                       and (m.isfile() or m.isdir())]
            safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **safe)
        extracted = os.path.join(staging, f"aioquic-{version}")
        if os.path.isdir(extracted) and not os.path.isdir(root):
            try:
                os.rename(extracted, root)
            except OSError:  # another run renamed its copy first
                pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not os.path.isdir(examples):
        pytest.skip(f"aioquic {version}'s source distribution has no examples/ directory")
    return examples


def switch_imports(source: str) -> str:
    """``aioquic`` -> ``aiopquic`` in import lines only (``import aioquic`` keeps its name
    through ``as aioquic``, since the examples read ``aioquic.__version__``)."""
    out = []
    for line in source.splitlines(keepends=True):
        if line.startswith("import aioquic") and line.strip() == "import aioquic":
            line = line.replace("import aioquic", "import aiopquic as aioquic", 1)
        elif line.startswith("from aioquic.") or line.startswith("import aioquic."):
            line = line.replace("aioquic", "aiopquic", 1)
        out.append(line)
    return "".join(out)


@pytest.fixture(scope="module")
def example_trees(tmp_path_factory: Any) -> dict[str, str]:
    """{"aioquic": examples as published, "aiopquic": the same with imports switched}."""
    for module in ("wsproto", "starlette", "jinja2", "dnslib"):
        pytest.importorskip(module, reason=f"aioquic's examples need {module}")
    examples = _fetch_examples(aioquic.__version__)
    base = tmp_path_factory.mktemp("aioquic-examples")
    original = os.path.join(str(base), "aioquic")
    ported = os.path.join(str(base), "aiopquic")
    shutil.copytree(examples, original)
    shutil.copytree(examples, ported)
    changed = 0
    for name in os.listdir(ported):
        if not name.endswith(".py"):
            continue
        path = os.path.join(ported, name)
        with open(path) as f:
            before = f.read()
        after = switch_imports(before)
        for old, new in zip(before.splitlines(), after.splitlines()):
            if old != new:
                assert old.startswith(("import aioquic", "from aioquic")), (name, old)
                changed += 1
        with open(path, "w") as f:
            f.write(after)
    assert changed >= 20, "the examples must import aioquic"
    return {"aioquic": original, "aiopquic": ported}


# ---------------------------------------------------------------------------- processes


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _udp_bound(port: int) -> bool:
    """True once some socket is bound to UDP ``port`` (read from /proc/net/udp)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


# aiopquic raises QuicConnectionError for a send on a connection that is already closed;
# aioquic drops such sends silently.  The demo's WebSocket handler sends its close frame after
# the client has closed the connection, so aiopquic's server logs that error (the client's
# run is not affected): the one traceback a server log may show.
KNOWN_SERVER_ERROR = "QuicConnectionError: connection closed (error 0x100"


def sort_tracebacks(log: str, known: str = KNOWN_SERVER_ERROR) -> tuple[list[str], int]:
    """(the tracebacks in ``log`` whose exception line does not contain ``known``, how many
    do)."""
    out, tolerated = [], 0
    for block in log.split("Traceback (most recent call last):")[1:]:
        last = next((line for line in block.splitlines()
                     if line and not line.startswith((" ", "\t"))), "")
        if known in last:
            tolerated += 1
        else:
            out.append(block)
    return out, tolerated


def _unexpected_tracebacks(log: str) -> list[str]:
    """The tracebacks in ``log`` whose exception line is not the known one."""
    return sort_tracebacks(log)[0]


@asynccontextmanager
async def running(argv: list[str], cwd: str, port: int, known: str = KNOWN_SERVER_ERROR,
                  tolerated: Optional[list[int]] = None) -> AsyncIterator[Any]:
    """Start a server example and wait (bounded) until its UDP port is bound; stop it on
    exit.  Fails with the server's output if it exits first, or if its log shows a
    traceback other than ``known`` (:data:`KNOWN_SERVER_ERROR`); the count of known ones
    is appended to ``tolerated`` when given."""
    log = open(os.path.join(cwd, f"server-{port}.log"), "w+b")
    proc = await anyio.open_process(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        with anyio.fail_after(TIMEOUT):
            while not _udp_bound(port):
                if proc.returncode is not None:
                    log.seek(0)
                    raise AssertionError(f"server exited early: {log.read().decode()}")
                await anyio.sleep(0.05)  # polling a condition (the port), bounded above
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with anyio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log.seek(0)
        server_log = log.read().decode(errors="replace")
        log.close()
        unexpected, count = sort_tracebacks(server_log, known)
        if tolerated is not None:
            tolerated.append(count)
        assert not unexpected, server_log


async def run_client(argv: list[str], cwd: str) -> str:
    """Run a client example to completion; return its output, failing on a non-zero exit."""
    with anyio.fail_after(TIMEOUT):
        result = await anyio.run_process(argv, cwd=cwd, check=False,
                                         stderr=subprocess.STDOUT)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{out}"
    assert "Traceback" not in out, out
    return out


# ---------------------------------------------------------------------------- HTTP/3 + H0


@pytest.mark.parametrize("server_stack,client_stack", MIXES)
async def test_http3_example_get_post_and_legacy(example_trees, certs, tmp_path,
                                                 server_stack, client_stack):
    server_dir = example_trees[server_stack]
    client_dir = example_trees[client_stack]
    port = _free_udp_port()
    url = f"https://localhost:{port}"
    client = [sys.executable, "http3_client.py", "--ca-certs", certs.ca]
    server_qlog = tmp_path / "server-qlog"
    server_qlog.mkdir()
    async with running([sys.executable, "http3_server.py", "--host", HOST, "--port", str(port),
                        "-c", certs.cert, "-k", certs.key, "-q", str(server_qlog)],
                       server_dir, port):
        # GET /: the demo page pushes /style.css; the PUSH_PROMISE precedes the response on
        # the request stream, so the client has it when it reports the pushes
        get_dir = tmp_path / "get"
        get_dir.mkdir()
        out = await run_client(client + ["-i", "--output-dir", str(get_dir), url + "/"],
                               client_dir)
        assert "Response received for GET /" in out
        assert "Push received for GET /style.css" in out, out
        page = (get_dir / "index.html").read_bytes()
        assert page.startswith(b":status: 200\r\n"), page[:200]
        assert b"server: aioquic/" in page
        assert b"<html" in page and b"</html>" in page

        # POST /echo: the body comes back; -q writes the client's qlog (QuicFileLogger)
        post_dir = tmp_path / "post"
        post_dir.mkdir()
        qlog_dir = tmp_path / "qlog"
        qlog_dir.mkdir()
        body = "drop-in=yes&stack=" + client_stack
        out = await run_client(client + ["-d", body, "--output-dir", str(post_dir),
                                         "-q", str(qlog_dir), url + "/echo"], client_dir)
        assert "Response received for POST /echo" in out
        assert (post_dir / "echo").read_bytes() == body.encode()
        traces = [json.loads(f.read_text()) for f in qlog_dir.glob("*.qlog")]
        assert len(traces) == 1, traces
        names = [e["name"] for e in traces[0]["traces"][0]["events"]]
        if client_stack == "aiopquic":
            assert "transport:alpn_information" in names
            assert names[-1] == "connectivity:connection_closed"

        # --cipher-suites: the client offers ChaCha20-Poly1305 only (cipher_suites)
        chacha_dir = tmp_path / "chacha"
        chacha_dir.mkdir()
        out = await run_client(client + ["--cipher-suites", "CHACHA20_POLY1305_SHA256",
                                         "--output-dir", str(chacha_dir), url + "/"],
                               client_dir)
        assert "Response received for GET /" in out, out
        assert b"</html>" in (chacha_dir / "index.html").read_bytes()

        # HTTP/0.9 over QUIC (hq-interop): raw body, no headers
        h0_dir = tmp_path / "h0"
        h0_dir.mkdir()
        out = await run_client(client + ["--legacy-http", "--output-dir", str(h0_dir),
                                         url + "/"], client_dir)
        legacy = (h0_dir / "index.html").read_bytes()
        assert legacy.lstrip().startswith(b"<!DOCTYPE html>") or legacy.startswith(b"<html"), \
            legacy[:200]
        assert b"</html>" in legacy
        assert b":status" not in legacy

        # session resumption and 0-RTT: -s keeps the pickled SessionTicket the client's
        # session_ticket_handler received; the second run loads it and, with --zero-rtt,
        # sends its GET before the handshake completes (connect(wait_connected=False))
        ticket_file = tmp_path / "session-ticket.pickle"
        for run in ("first", "resumed"):
            run_dir = tmp_path / ("zero-rtt-" + run)
            run_dir.mkdir()
            out = await run_client(client + ["-s", str(ticket_file), "--zero-rtt",
                                             "--output-dir", str(run_dir), url + "/"],
                                   client_dir)
            assert "Response received for GET /" in out, out
            if run == "first":  # (a 0-RTT answer may beat the next ticket: no check then)
                assert "New session ticket received" in out, out
            assert b"</html>" in (run_dir / "index.html").read_bytes()
            assert ticket_file.stat().st_size > 0

        # WebSocket over HTTP/3 (RFC 9220, extended CONNECT): the demo's /ws echoes
        out = await run_client(client + [f"wss://localhost:{port}/ws"], client_dir)
        assert out.count("< Hello") == 2, out
        assert "< Hello 1, WebSocket!" in out

        if client_stack == "aiopquic":
            # our own CLI speaks hq-interop too: python -m aiopquic get --legacy-http
            cli_out = tmp_path / "cli-h0.html"
            out = await run_client([sys.executable, "-m", "aiopquic", "get", "--legacy-http",
                                    "-q", "--cacert", certs.ca, "-o", str(cli_out),
                                    url + "/"], client_dir)
            assert cli_out.read_bytes() == legacy


# ---------------------------------------------------------------------------- DNS over QUIC


@pytest.fixture
def stub_resolver() -> Iterator[str]:
    """A classic DNS resolver on ``STUB_RESOLVER``:53 answering every A query with
    192.0.2.7 (doq_server.py forwards to port 53 of the resolver it is given)."""
    from dnslib import QTYPE, RR, A, DNSRecord

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((STUB_RESOLVER, 53))
    except OSError as exc:  # port 53 needs privileges
        sock.close()
        pytest.skip(f"cannot bind a stub DNS resolver on {STUB_RESOLVER}:53: {exc}")
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except socket.timeout:
                continue
            query = DNSRecord.parse(data)
            reply = query.reply()
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=60))
            sock.sendto(reply.pack(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield STUB_RESOLVER
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.mark.parametrize("server_stack,client_stack", MIXES)
async def test_doq_example(example_trees, certs, stub_resolver, server_stack, client_stack):
    port = _free_udp_port()
    async with running([sys.executable, "doq_server.py", "--host", HOST, "--port", str(port),
                        "-c", certs.cert, "-k", certs.key, "--resolver", stub_resolver],
                       example_trees[server_stack], port):
        out = await run_client([sys.executable, "doq_client.py", "--ca-certs", certs.ca,
                                "--host", "localhost", "--port", str(port),
                                "--query-name", "dropin.example"],
                               example_trees[client_stack])
    assert "Received DNS answer" in out
    assert "dropin.example." in out and "192.0.2.7" in out
