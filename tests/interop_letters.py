"""aioquic's examples/interop.py, pointed at local servers: the letter string for one
(client stack, server stack) pair.

interop.py is aioquic's interoperability client: one test function per letter, run against a
hard-coded list of public servers (``SERVERS``), then one line per server such as
``aioquic             VHDCRZSQ MBAUP-L- 3dp`` (a ``-`` for each letter not earned).  Its code
is used as published; only its module globals are replaced from outside:

- ``SERVERS``: one local ``Server`` (host 127.0.0.1, the main port, ``retry_port`` = a second
  server process started with ``--retry``, ``push_path="/"`` as in its own aioquic entry,
  ``structured_logging=True`` since both servers run with ``-q``, ``throughput_path=None``:
  see below);
- ``QuicConfiguration``: the same class, with the test CA loaded (``cafile``), so that the
  server's certificate is verified as for the public servers rather than with CERT_NONE;
- ``httpx``: only ``test_throughput`` uses it (the ``T`` letter, HTTPS over TCP on port 443
  of the server's host compared with the time over QUIC): no such TCP server runs here, so
  when httpx is not installed a stub stands in for it.

The client runs in a subprocess whose current directory and ``sys.path[0]`` is an example
tree (tests/test_dropin_examples.py builds them): the tree as published for aioquic's client,
the one with ``aioquic`` -> ``aiopquic`` in its import lines for ours.  The servers are the
trees' ``http3_server.py`` (the demo ASGI application), so "aiopquic's server" is aioquic's
own example server program running on aiopquic.

Usage::

    python tests/interop_letters.py --client aiopquic --server aioquic [-v]

prints interop.py's output and, last, its result line.  (``--run-client TREE ...`` is the
internal mode the subprocess runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

HOST = "127.0.0.1"
STACKS = ("aioquic", "aiopquic")
# interop.py gives each test 10 s (asyncio.wait_for); 13 tests, at most ~140 s for one run
CLIENT_TIMEOUT = 170.0
# Result's flags in value order, as interop.print_result writes them ("three" printed "3")
LETTERS = "VHDCRZSQMBAUPELT3dp"
MEANING = {
    "V": "version negotiation (a Version Negotiation packet for an unknown version)",
    "H": "handshake",
    "D": "stream data (an HTTP/0.9 or HTTP/3 GET answered with headers)",
    "C": "connection close",
    "R": "session resumption (TLS session ticket)",
    "Z": "0-RTT data accepted",
    "S": "stateless retry (a Retry packet on the retry port)",
    "Q": "quantum readiness (a ClientHello larger than one packet)",
    "M": "server connection ID change (change_connection_id)",
    "B": "NAT rebinding (new client socket: the server sends PATH_CHALLENGE)",
    "A": "address mobility (new socket and new connection ID: PATH_CHALLENGE)",
    "U": "key update",
    "P": "spin bit (both values seen)",
    "E": "ECN (no test in interop.py sets it)",
    "L": "structured logging (declared per server: qlog)",
    "T": "throughput (HTTPS over TCP on port 443 vs HTTP/3)",
    "3": "HTTP/3",
    "d": "QPACK dynamic table used in both directions",
    "p": "HTTP/3 server push",
}


# ---------------------------------------------------------------------------- client side


def _client_main(argv: list[str]) -> None:
    """Inside the subprocess: import the tree's interop.py, point it at the local server,
    run all its tests the way its ``__main__`` does."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-client", required=True, metavar="TREE")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--retry-port", type=int)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--test", help="only this test function")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    import logging

    tree = os.path.abspath(args.run_client)
    sys.path.insert(0, tree)
    os.chdir(tree)
    try:
        import httpx  # noqa: F401
    except ImportError:
        stub = types.ModuleType("httpx")

        def get(*_: Any, **__: Any) -> Any:
            raise RuntimeError("httpx is not installed (only test_throughput uses it)")

        stub.get = get  # type: ignore[attr-defined]
        sys.modules["httpx"] = stub
    import interop  # the tree's copy: aioquic's, or the one importing aiopquic

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        level=logging.DEBUG if args.verbose else logging.INFO)

    published = interop.QuicConfiguration

    def configuration(**kwargs: Any) -> Any:
        kwargs.setdefault("cafile", args.cafile)
        return published(**kwargs)

    interop.QuicConfiguration = configuration
    server = interop.Server(
        args.name, HOST, port=args.port, retry_port=args.retry_port, push_path="/",
        structured_logging=True, throughput_path=None)
    interop.SERVERS[:] = [server]
    tests = [(name, func) for name, func in vars(interop).items()
             if name.startswith("test_") and (args.test is None or name == args.test)]
    asyncio.run(interop.main(servers=[server], tests=tests))


# ---------------------------------------------------------------------------- orchestration


class Certs(NamedTuple):
    ca: str
    cert: str
    key: str


def make_certs(directory: str) -> Certs:
    """A trustme CA and a leaf for localhost / 127.0.0.1 written as PEM files."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = Certs(*(os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")))
    ca.cert_pem.write_to_path(paths.ca)
    leaf.private_key_pem.write_to_path(paths.key)
    with open(paths.cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    return paths


def build_trees(base: str) -> dict[str, str]:
    """The published examples and the import-switched copy (as test_dropin_examples'
    ``example_trees`` fixture builds them)."""
    import aioquic
    from test_dropin_examples import _fetch_examples, switch_imports

    examples = _fetch_examples(aioquic.__version__)
    trees = {stack: os.path.join(base, stack) for stack in STACKS}
    for tree in trees.values():
        shutil.copytree(examples, tree)
    for name in os.listdir(trees["aiopquic"]):
        if name.endswith(".py"):
            path = os.path.join(trees["aiopquic"], name)
            with open(path) as f:
                source = f.read()
            with open(path, "w") as f:
                f.write(switch_imports(source))
    return trees


class LocalServer(NamedTuple):
    port: int
    retry_port: int


# A send on a connection the peer has already closed, made after the application saw the
# close, raises QuicConnectionError in aiopquic (aioquic drops it).  interop.py closes most
# connections right after one PING; the race where http3_server.py's first send came before
# it handled the close is fixed (such sends are dropped now), so these should not occur; any
# that do are counted (``ServerLogs``) rather than failing the letters.
TOLERATED_SERVER_ERROR = "QuicConnectionError: connection closed (error 0x"


class ServerLogs:
    """Filled when :func:`serving` exits: tracebacks tolerated in the servers' logs."""

    def __init__(self) -> None:
        self.tolerated = 0


@asynccontextmanager
async def running(argv: list[str], cwd: str, port: int, logs: ServerLogs) -> AsyncIterator[Any]:
    """test_dropin_examples.running, counting the tracebacks of
    :data:`TOLERATED_SERVER_ERROR` into ``logs``."""
    from test_dropin_examples import running as run_example

    counts: list[int] = []
    try:
        async with run_example(argv, cwd, port, known=TOLERATED_SERVER_ERROR,
                               tolerated=counts) as proc:
            yield proc
    finally:
        logs.tolerated += sum(counts)


@asynccontextmanager
async def serving(tree: str, certs: Any, qlog_dir: str,
                  logs: ServerLogs | None = None) -> AsyncIterator[LocalServer]:
    """The tree's http3_server.py twice: on a main port and, with ``--retry``, on a retry
    port; both writing qlog (``-q``).  Every wait is bounded."""
    from test_dropin_examples import _free_udp_port

    logs = logs if logs is not None else ServerLogs()
    port, retry_port = _free_udp_port(), _free_udp_port()
    while retry_port == port:
        retry_port = _free_udp_port()
    os.makedirs(qlog_dir, exist_ok=True)
    base = [sys.executable, "http3_server.py", "--host", HOST, "-c", certs.cert,
            "-k", certs.key, "-q", qlog_dir]
    async with running(base + ["--port", str(port)], tree, port, logs):
        async with running(base + ["--port", str(retry_port), "--retry"], tree, retry_port,
                           logs):
            yield LocalServer(port, retry_port)


def client_argv(client_tree: str, name: str, server: LocalServer, cafile: str,
                test: str | None = None, verbose: bool = False) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--run-client", client_tree,
            "--name", name, "--port", str(server.port), "--retry-port",
            str(server.retry_port), "--cafile", cafile]
    if test:
        argv += ["--test", test]
    if verbose:
        argv.append("-v")
    return argv


def letters_of(output: str, name: str) -> str:
    """The result line interop.print_result wrote for ``name``: e.g. "VHDCRZSQ MBAUP-L- 3dp"."""
    lines = [line for line in output.splitlines()
             if re.fullmatch(re.escape(name) + r" +[-A-Za-z3]{8} [-A-Za-z]{8} [-3a-z]{3}",
                             line)]
    if not lines:
        raise AssertionError(f"no result line for {name!r} in interop.py's output:\n{output}")
    return lines[-1][len(name):].strip()


def earned(letters: str) -> set[str]:
    return {c for c in letters.replace(" ", "") if c != "-"}


async def run_interop(client_tree: str, name: str, server: LocalServer, cafile: str,
                      test: str | None = None, verbose: bool = False) -> tuple[str, str]:
    """Run interop.py from ``client_tree`` against ``server``: (letters, its output)."""
    import anyio

    with anyio.fail_after(CLIENT_TIMEOUT):
        result = await anyio.run_process(
            client_argv(client_tree, name, server, cafile, test, verbose),
            cwd=client_tree, check=False, stderr=subprocess.STDOUT)
    out = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise AssertionError(f"interop.py exited {result.returncode}:\n{out}")
    return letters_of(out, name), out


async def _orchestrate(args: argparse.Namespace) -> int:
    work = tempfile.mkdtemp(prefix="interop-letters-")
    try:
        trees = build_trees(os.path.join(work, "trees"))
        certs = make_certs(work)
        logs = ServerLogs()
        async with serving(trees[args.server], certs, os.path.join(work, "qlog"),
                           logs) as server:
            name = f"{args.server}-server"
            letters, out = await run_interop(trees[args.client], name, server, certs.ca,
                                             args.test, args.verbose)
        print(out, end="")
        print(f"\nclient {args.client}, server {args.server}: {letters}")
        for letter in LETTERS:
            if letter not in earned(letters):
                print(f"  not earned: {letter} {MEANING[letter]}")
        if logs.tolerated:
            print(f"(the servers logged {logs.tolerated} send(s) on a connection already "
                  "closed by the client: see TOLERATED_SERVER_ERROR)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    if "--run-client" in sys.argv:
        _client_main(sys.argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=STACKS, required=True)
    parser.add_argument("--server", choices=STACKS, required=True)
    parser.add_argument("--test", help="only this interop.py test function")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    import anyio

    return anyio.run(_orchestrate, args)


if __name__ == "__main__":
    sys.exit(main())
