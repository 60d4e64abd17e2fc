"""aiopquic.anyio.http3 against foreign peers: headless Chromium and aioquic, with our side
on the trio backend (and on asyncio).

Our server runs in its own process (tests/peers/anyio_h3_peer.py, ``--backend trio`` or
``asyncio``) because Playwright and aioquic's client run on asyncio; our client runs in the
test on both backends against aioquic's server (tests/peers/aioquic_h3.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from h3_helpers import HOST, PEERS_DIR, self_signed

from aiopquic.anyio import http3

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def aioquic_pattern(n: int) -> bytes:
    block = hashlib.sha256(b"aioquic-h3").digest() * 2048
    return (block * (n // len(block) + 1))[:n]


@asynccontextmanager
async def peer(log: Any, script: str, *args: str) -> AsyncIterator[tuple[Any, int]]:
    """Start a peer script; yield (process, the port of its "LISTENING <port>" line)."""
    err = open(log, "wb")
    process = await anyio.open_process([sys.executable, "-u", os.path.join(PEERS_DIR, script),
                                        *args], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=err)
    try:
        assert process.stdout is not None
        buffered = b""
        with anyio.fail_after(60):
            while b"\n" not in buffered:
                buffered += await process.stdout.receive()
        line = buffered.split(b"\n", 1)[0].decode()
        assert line.startswith("LISTENING"), (line, open(log, "rb").read()[-2000:])
        yield process, int(line.split()[1])
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.move_on_after(15) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
        await process.aclose()
        err.close()


async def read_lines_until(process: Any, prefix: bytes, timeout: float) -> list[str]:
    lines: list[str] = []
    buffered = b""
    with anyio.fail_after(timeout):
        while True:
            while b"\n" in buffered:
                raw, buffered = buffered.split(b"\n", 1)
                lines.append(raw.decode())
                if raw.startswith(prefix):
                    return lines
            buffered += await process.stdout.receive()


# ---------------------------------------------------------------- our server on trio


@pytest.fixture(params=["trio", "asyncio"])
def server_backend(request: Any) -> str:
    if request.param == "trio":
        pytest.importorskip("trio")
    return str(request.param)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the test side: Playwright and aioquic's tooling are asyncio


def spki_sha256_base64(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason=f"{CHROMIUM} is absent (Debian package 'chromium')")
async def test_chromium_gets_a_page_and_echoes_webtransport(tmp_path, server_backend):
    """Chromium loads a page over HTTP/3 (``nextHopProtocol`` is ``h3``) from our anyio
    server, then runs the WebTransport echo page against it: 1 MiB bidi echo, uni echo,
    datagrams, and the session close code and reason the server sent."""
    async_playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright (test extra) is not installed"
    ).async_playwright
    from test_webtransport_browser import PageServer

    cert = self_signed(str(tmp_path))
    async with peer(tmp_path / "server.err", "anyio_h3_peer.py", "--backend", server_backend,
                    "--cert", cert.cert, "--key", cert.key, "--lifetime", "200") as (_, port):
        page_server = PageServer()
        try:
            with anyio.fail_after(180):
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(
                        executable_path=CHROMIUM, headless=True,
                        args=CHROMIUM_ARGS + [
                            f"--origin-to-force-quic-on=127.0.0.1:{port}",
                            "--ignore-certificate-errors-spki-list="
                            + spki_sha256_base64(cert.cert_pem)])
                    try:
                        # the WebTransport echo first, in its own context: Chromium may pool
                        # a session onto an open HTTP/3 connection to the same origin, and
                        # the page load's connection goes away when its page navigates off
                        wt_context = await browser.new_context()
                        page = await wt_context.new_page()
                        await page.goto(f"http://{HOST}:{page_server.port}/"
                                        "webtransport_echo.html")
                        result = await page.evaluate(
                            "([url, hash, size]) => window.aiopquicRun(url, hash, size)",
                            [f"https://{HOST}:{port}/echo", cert.sha256.hex(), 1 << 20])
                        await wt_context.close()

                        h3_context = await browser.new_context()
                        page = await h3_context.new_page()
                        response = await page.goto(f"https://127.0.0.1:{port}/")
                        assert response is not None and response.status == 200
                        assert await page.text_content("#msg") == "anyio h3 ok"
                        proto = await page.evaluate(
                            "performance.getEntriesByType('navigation')[0].nextHopProtocol")
                        assert proto == "h3"
                        await h3_context.close()
                    finally:
                        await browser.close()
        finally:
            page_server.close()
    context = f"browser result: {result!r}; server log: {open(tmp_path / 'server.err').read()}"
    assert "error" not in result, context
    assert result["steps"] == ["ready", "bidi", "uni", "datagrams", "closed"], context
    assert result["bidiLength"] == 1 << 20 and result["bidiEqual"] is True, context
    assert result["uniEcho"] == result["uniSent"], context
    assert result["datagramsEchoed"] >= 95, context
    assert result["closeInfo"] == {"closeCode": 4242, "reason": "bye from aiopquic"}, context


async def test_aioquic_client_get_and_webtransport(tmp_path, certs, server_backend):
    """aioquic's H3Connection as the client of our anyio server: a 4 MiB GET (sha256) and a
    WebTransport session (bidi, uni, datagrams, close code)."""
    pytest.importorskip("aioquic")
    async with peer(tmp_path / "server.err", "anyio_h3_peer.py", "--backend", server_backend,
                    "--cert", certs.cert, "--key", certs.key, "--own-stream",
                    "--lifetime", "200") as (server, port):
        size = 4 * 1024 * 1024
        get = await anyio.run_process(
            [sys.executable, os.path.join(PEERS_DIR, "aioquic_h3.py"), "get", "--port",
             str(port), "--ca", certs.ca, "--path", f"/bytes/{size}", "--lifetime", "120"],
            check=False)
        want = hashlib.sha256(aioquic_pattern(size)).hexdigest()
        assert get.stdout.decode().strip() == f"STATUS 200 LENGTH {size} SHA256 {want}", \
            get.stderr.decode()[-2000:]
        wt = await anyio.run_process(
            [sys.executable, os.path.join(PEERS_DIR, "aioquic_h3.py"), "wt", "--port",
             str(port), "--ca", certs.ca, "--path", "/echo", "--size", str(512 * 1024),
             "--lifetime", "120"], check=False)
        line = wt.stdout.decode().strip()
        head, close = line.split(" close=", 1)
        fields = dict(item.split("=", 1) for item in head.split()[1:])
        assert fields == {"bidi": "True", "uni": "True", "datagrams": fields["datagrams"],
                          "ended": "True"}, (line, wt.stderr.decode()[-2000:])
        assert int(fields["datagrams"]) >= 15, line
        assert close == "4242:bye from aiopquic", line
        lines = await read_lines_until(server, b"THANKS", 30)
        assert lines[-1] == "THANKS thanks"


# ---------------------------------------------------------------- our client, both backends


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_our_client_against_aioquic_server(tmp_path, certs, anyio_backend):
    pytest.importorskip("aioquic")
    if anyio_backend == "trio":
        pytest.importorskip("trio")
    cfg_kwargs: dict[str, Any] = {"is_client": True, "alpn_protocols": ["h3"],
                                  "server_name": "localhost", "cafile": certs.ca}
    from aiopquic.quic.configuration import QuicConfiguration

    async with peer(tmp_path / "server.err", "aioquic_h3.py", "server", "--cert", certs.cert,
                    "--key", certs.key, "--lifetime", "150") as (_, port):
        cfg = QuicConfiguration(**cfg_kwargs)
        with anyio.fail_after(90):
            async with http3.connect_http3(HOST, port, configuration=cfg) as h:
                r = await h.get("/bytes/3000001")
                assert r.status == 200 and r.body == aioquic_pattern(3000001)
                session = await h.webtransport("/echo")
                stream = await session.open_stream(bidirectional=False)
                await stream.send(b"uni to aioquic")
                await stream.send_eof()
                back = await session.accept_stream()
                got = b""
                try:
                    while True:
                        got += await back.receive()
                except anyio.EndOfStream:
                    pass
                assert got == b"uni to aioquic"
                await session.send_datagram(b"ping")
                assert await session.receive_datagram() == b"ping"
                closer = await session.open_stream()
                await closer.send(b"close")
                await closer.send_eof()
                await session.wait_closed()
                assert (session.close_code, session.close_reason) == (4242, "bye from aioquic")

