"""A real browser: headless Chromium (Debian's ``chromium``, driven by Playwright for Python)
opens a WebTransport session to our server, authenticating its runtime ECDSA P-256
certificate through ``serverCertificateHashes``.

The page (tests/web/webtransport_echo.html) is served from ``http://127.0.0.1`` by a tiny
HTTP server in the test (a secure context, unlike ``data:`` URLs).  It echoes 1 MiB on a
bidirectional stream (byte-exact), a unidirectional stream and 100 datagrams, then asks the
server to close the session and reports the close code and reason it saw.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import threading

import anyio
import pytest
from h3_helpers import HOST, WEB_DIR, self_signed

from aiopquic.asyncio.webtransport import (
    WebTransportProtocol,
    WebTransportSession,
    WebTransportSessionClosed,
    serve_webtransport,
)
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import ConnectionTerminated

CHROMIUM = "/usr/bin/chromium"
CLOSE_CODE = 4242
CLOSE_REASON = "bye from aiopquic"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.interop,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"{CHROMIUM} is absent (Debian package 'chromium'); the "
                              "browser WebTransport test needs it"),
]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


async def browser_echo_handler(session: WebTransportSession) -> None:
    """Echo bidi streams on the same stream, uni streams on a new uni stream, datagrams as
    datagrams; a bidi stream carrying exactly b"close" closes the session with CLOSE_CODE."""
    tasks: set[asyncio.Task] = set()

    async def echo(reader: asyncio.StreamReader, writer) -> None:
        if writer is None:
            data = await reader.read()
            _, out = await session.create_stream(bidirectional=False)
            out.write(data)
            out.write_eof()
            return
        first = await reader.read(5)
        if first == b"close" and not await reader.read():
            session.close(CLOSE_CODE, CLOSE_REASON)
            return
        writer.write(first)
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def streams() -> None:
        while True:
            reader, writer = await session.accept_stream()
            task = asyncio.ensure_future(echo(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def datagrams() -> None:
        while True:
            session.send_datagram(await session.receive_datagram())

    try:
        await asyncio.gather(streams(), datagrams())
    except WebTransportSessionClosed:
        pass
    finally:
        for task in tasks:
            task.cancel()


class RecordingProtocol(WebTransportProtocol):
    """Keeps how each connection ended (for failure messages)."""

    closes: list[str] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fail = self._http._fail

        def recording_fail(code: int, reason: str) -> None:
            self.closes.append(f"HTTP/3 error {code:#x}: {reason}")
            fail(code, reason)

        self._http._fail = recording_fail  # type: ignore[method-assign]

    def quic_event_received(self, event) -> None:
        super().quic_event_received(event)
        if isinstance(event, ConnectionTerminated):
            self.closes.append(self._quic._close_message())


class PageServer:
    """http://127.0.0.1:<port>/ serving tests/web (a thread; stopped by close())."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=WEB_DIR)
        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


async def test_chromium_webtransport_echo_and_close(tmp_path):
    async_playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright (test extra) is not installed"
    ).async_playwright

    cert = self_signed(str(tmp_path))
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(cert.cert, cert.key)
    RecordingProtocol.closes = []
    server = await serve_webtransport(HOST, 0, configuration=config,
                                      handler=browser_echo_handler, path="/echo",
                                      create_protocol=RecordingProtocol)
    page_server = PageServer()
    console: list[str] = []
    try:
        with anyio.fail_after(180):
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
                    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
                    await page.goto(f"http://{HOST}:{page_server.port}/webtransport_echo.html")
                    url = f"https://{HOST}:{server.local_port}/echo"
                    result = await page.evaluate(
                        "([url, hash, size]) => window.aiopquicRun(url, hash, size)",
                        [url, cert.sha256.hex(), 1 << 20])
                finally:
                    await browser.close()
    finally:
        page_server.close()
        server.close()
    context = (f"browser result: {result!r}\nconsole: {console!r}\n"
               f"server-side connection ends: {RecordingProtocol.closes!r}")
    assert "error" not in result, context
    assert result["steps"] == ["ready", "bidi", "uni", "datagrams", "closed"], context
    assert result["bidiLength"] == 1 << 20 and result["bidiEqual"] is True, context
    assert result["uniEcho"] == result["uniSent"], context
    assert result["datagramsEchoed"] >= 95, context
    assert result["closeInfo"] == {"closeCode": CLOSE_CODE, "reason": CLOSE_REASON}, context
    print(f"chromium: 1 MiB bidi echo ok, uni ok, {result['datagramsEchoed']}/100 datagrams "
          f"echoed, close {result['closeInfo']}")


async def test_chromium_protocols_option_negotiates_wt_protocol(tmp_path):
    """Chromium's ``protocols`` option (WT-Available-Protocols) against our server's
    allowlist: the browser sees our choice as ``wt.protocol``; an offer with nothing on the
    list fails to connect (400) and the server records WT_ALPN_ERROR."""
    async_playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright (test extra) is not installed"
    ).async_playwright
    from aiopquic.http3_tools import echo_handler

    cert = self_signed(str(tmp_path))
    config = QuicConfiguration(is_client=False)
    config.load_cert_chain(cert.cert, cert.key)
    chosen: list[object] = []

    async def handler(session: WebTransportSession) -> None:
        chosen.append(session.protocol)
        await echo_handler(session)

    server = await serve_webtransport(HOST, 0, configuration=config, handler=handler,
                                      path="/echo", supported_protocols=["moqt-15", "moqt-16"])
    page_server = PageServer()
    try:
        with anyio.fail_after(120):
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://{HOST}:{page_server.port}/webtransport_echo.html")
                    url = f"https://{HOST}:{server.local_port}/echo"
                    good = await page.evaluate(
                        "([url, hash, p]) => window.aiopquicNegotiate(url, hash, p)",
                        [url, cert.sha256.hex(), ["moqt-17", "moqt-16"]])
                    if not good.get("supported"):
                        pytest.skip("this Chromium has no WebTransport.protocol (no "
                                    "'protocols' option)")
                    bad = await page.evaluate(
                        "([url, hash, p]) => window.aiopquicNegotiate(url, hash, p)",
                        [url, cert.sha256.hex(), ["moqt-14"]])
                finally:
                    await browser.close()
    finally:
        page_server.close()
        server.close()
    assert good.get("error") is None, good
    assert good["protocol"] == "moqt-16" and good["echo"] == "negotiated", good
    assert chosen == ["moqt-16"]
    assert "error" in bad, bad  # refused with 400: the browser's handshake fails
    print(f"chromium protocols: offered ['moqt-17', 'moqt-16'] -> {good['protocol']!r}; "
          f"['moqt-14'] -> {bad['error']!r}")
