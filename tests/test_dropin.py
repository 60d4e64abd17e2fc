"""Drop-in for aioquic users.

1. aioquic's own ``H3Connection`` (from the aioquic package, not ours) runs over aiopquic's
   ``QuicConnection`` on both sides and completes an HTTP/3 GET.
2. tests/dropin/aioquic_app.py, a program written for aioquic's asyncio API, runs under
   aioquic as written and under aiopquic with only its import lines changed, and both runs
   print the same transcript.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sys
from typing import Any

import anyio
import pytest
from quic_helpers import HOST, ProtocolCollector, client, running_server

pytest.importorskip("aioquic")

import aioquic.quic.events as aioquic_events  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402

from aiopquic.asyncio import QuicConnectionProtocol  # noqa: E402
from aiopquic.quic import events  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dropin", "aioquic_app.py")


def to_aioquic(event: events.QuicEvent) -> Any:
    """The same event as an instance of aioquic's class (same name, same fields).

    aioquic's H3Connection.handle_event() tests ``isinstance(event, <aioquic class>)``, so
    aiopquic's event objects must be converted before they are handed to it."""
    cls = getattr(aioquic_events, type(event).__name__)
    return cls(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})


class H3Protocol(QuicConnectionProtocol):
    """aioquic's H3Connection over an aiopquic connection (client or server)."""

    BODY = b"hello from aioquic's H3Connection over aiopquic\n" * 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.responses: dict[int, dict[str, Any]] = {}
        self.requests_seen: list[list[tuple[bytes, bytes]]] = []
        self.done: asyncio.Queue[int] = asyncio.Queue()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        for h3_event in self.http.handle_event(to_aioquic(event)):
            if self._quic.configuration.is_client:
                self._client_event(h3_event)
            else:
                self._server_event(h3_event)

    def _server_event(self, h3_event: Any) -> None:
        if isinstance(h3_event, HeadersReceived):
            self.requests_seen.append(h3_event.headers)
            headers = dict(h3_event.headers)
            status = b"200" if headers.get(b":path") == b"/hello" else b"404"
            body = self.BODY if status == b"200" else b"not found"
            self.http.send_headers(h3_event.stream_id, [
                (b":status", status),
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ])
            self.http.send_data(h3_event.stream_id, body, end_stream=True)
            self.transmit()

    def _client_event(self, h3_event: Any) -> None:
        if isinstance(h3_event, (HeadersReceived, DataReceived)):
            response = self.responses.setdefault(h3_event.stream_id,
                                                 {"headers": [], "body": b""})
            if isinstance(h3_event, HeadersReceived):
                response["headers"] = h3_event.headers
            else:
                response["body"] += h3_event.data
            if h3_event.stream_ended:
                self.done.put_nowait(h3_event.stream_id)

    async def get(self, authority: str, path: str) -> dict[str, Any]:
        stream_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(stream_id, [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"aioquic-h3-over-aiopquic"),
        ], end_stream=True)
        self.transmit()
        with anyio.fail_after(20):
            while True:
                done = await self.done.get()
                if done == stream_id:
                    return self.responses.pop(stream_id)


async def test_aioquic_h3connection_get_over_aiopquic(server_config, client_config):
    protocols = ProtocolCollector(H3Protocol)
    async with running_server(server_config(alpn_protocols=H3_ALPN),
                              create_protocol=protocols) as server:
        with anyio.fail_after(40):
            async with client(server.local_port, client_config(alpn_protocols=H3_ALPN),
                              create_protocol=H3Protocol) as protocol:
                assert protocol._quic.alpn_protocol == "h3"
                authority = f"localhost:{server.local_port}"
                response = await protocol.get(authority, "/hello")
                headers = dict(response["headers"])
                assert headers[b":status"] == b"200"
                assert headers[b"content-length"] == str(len(H3Protocol.BODY)).encode()
                assert response["body"] == H3Protocol.BODY

                missing = await protocol.get(authority, "/missing")
                assert dict(missing["headers"])[b":status"] == b"404"
                assert missing["body"] == b"not found"

                server_protocol = await protocols.next()
                paths = [dict(h)[b":path"] for h in server_protocol.requests_seen]
                assert paths == [b"/hello", b"/missing"]


# ---------------------------------------------------------------------------- the program


EXPECTED = [
    "alpn: dropin",
    "event request: b'HELLO VIA EVENTS'",
    "stream request digest ok: True",
    "pushed: b'server push'",
    "ping: ok",
    "server saw close: code=0x10 reason='done'",
]


def _switch_imports(source: str) -> str:
    """``aioquic`` -> ``aiopquic`` in import lines, nothing else."""
    out = []
    for line in source.splitlines(keepends=True):
        if line.startswith(("from aioquic.", "import aioquic")):
            line = line.replace("aioquic", "aiopquic", 1)
        out.append(line)
    return "".join(out)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _run_app(path: str, certs: Any) -> list[str]:
    last = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry
        with anyio.fail_after(90):
            result = await anyio.run_process(
                [sys.executable, path, "--cert", certs.cert, "--key", certs.key,
                 "--ca", certs.ca, "--port", str(_free_udp_port())],
                check=False)
        out = result.stdout.decode()
        last = f"exit {result.returncode}\nstdout:\n{out}\nstderr:\n{result.stderr.decode()}"
        if result.returncode == 0:
            return out.splitlines()
        if "in use" not in last:
            break
    raise AssertionError(f"{os.path.basename(path)} failed: {last[-4000:]}")


async def test_aioquic_program_runs_unchanged_under_both_stacks(certs, tmp_path):
    with open(APP) as f:
        original = f.read()
    switched = _switch_imports(original)
    changed = [(a, b) for a, b in zip(original.splitlines(), switched.splitlines()) if a != b]
    assert len(changed) >= 3, "the program must import aioquic"
    assert all(a.startswith(("from aioquic", "import aioquic")) for a, _ in changed), changed

    ported = tmp_path / "aiopquic_app.py"
    ported.write_text(switched)

    under_aioquic = await _run_app(APP, certs)
    under_aiopquic = await _run_app(str(ported), certs)
    assert under_aioquic == EXPECTED
    assert under_aiopquic == EXPECTED
