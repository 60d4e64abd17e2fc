"""``python -m aiopquic serve`` / ``get`` / ``perf`` as a user runs them (subprocesses)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import ssl
import sys

import anyio
import pytest
from h3_helpers import HOST, ROOT_DIR, read_line_with, subprocess_peer, tail

from aiopquic.asyncio.webtransport import connect_webtransport
from aiopquic.http3_tools import fetch
from aiopquic.quic.configuration import QuicConfiguration

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aiopquic", *args]


@pytest.fixture(autouse=True)
def _pythonpath(monkeypatch):
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", ROOT_DIR + (os.pathsep + path if path else ""))


@pytest.fixture
async def served(tmp_path):
    """``serve`` with a runtime certificate and a --root holding hello.txt and a subdir."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello over HTTP/3\n")
    (root / "sub" / "index.html").write_bytes(b"<p>index</p>")
    (tmp_path / "secret.txt").write_bytes(b"outside the root")
    argv = cli("serve", "--host", HOST, "--port", "0", "--root", str(root))
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="serve",
                               stdout_pipe=True) as process:
        err = str(tmp_path / "serve.err")
        fingerprint = await read_line_with(process, "certificate SHA-256:", 60, err)
        line = await read_line_with(process, "listening on", 30, err)
        port = int(line.rsplit(":", 1)[1])
        yield port, fingerprint.split(":", 1)[1].strip(), tmp_path


def insecure() -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE)


async def get(port: int, path: str, method: str = "GET", body=None):
    out = io.BytesIO()
    with anyio.fail_after(30):
        status, headers, n = await fetch(f"https://{HOST}:{port}{path}", out,
                                         configuration=insecure(), method=method, body=body)
    return status, dict(headers), out.getvalue()


async def test_serve_files_head_post_and_errors(served):
    port, fingerprint, _ = served
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint), fingerprint
    status, headers, body = await get(port, "/hello.txt")
    assert (status, body) == (200, b"hello over HTTP/3\n")
    assert headers[b"content-type"].startswith(b"text/plain")
    assert headers[b"content-length"] == b"18"
    status, headers, body = await get(port, "/hello.txt", method="HEAD")
    assert (status, body, headers[b"content-length"]) == (200, b"", b"18")
    assert (await get(port, "/sub/"))[2] == b"<p>index</p>"
    assert (await get(port, "/missing"))[0] == 404
    assert (await get(port, "/../secret.txt"))[0] == 404
    assert (await get(port, "/%2e%2e/secret.txt"))[0] == 404
    payload = os.urandom(300_000)
    status, _, body = await get(port, "/anything", method="POST", body=payload)
    assert status == 200 and body == payload
    assert (await get(port, "/hello.txt", method="DELETE"))[0] == 405


async def test_serve_webtransport_echo(served):
    port, _, _ = served
    with anyio.fail_after(30):
        async with connect_webtransport(f"https://{HOST}:{port}/echo",
                                        configuration=insecure()) as session:
            reader, writer = await session.create_stream()
            writer.write(b"echo me")
            writer.write_eof()
            assert await reader.read() == b"echo me"
            session.send_datagram(b"dgram")
            assert await session.receive_datagram() == b"dgram"


async def test_get_command_writes_the_file_and_fails_on_404(served):
    port, _, tmp_path = served
    out = tmp_path / "out.txt"
    async with subprocess_peer(*cli("get", "--insecure", "-o", str(out),
                                    f"https://{HOST}:{port}/hello.txt"),
                               log_dir=str(tmp_path), name="get") as process:
        with anyio.fail_after(60):
            assert await process.wait() == 0, tail(str(tmp_path / "get.err"))
    assert out.read_bytes() == b"hello over HTTP/3\n"
    assert "HTTP/3 200, 18 bytes" in tail(str(tmp_path / "get.err"))
    async with subprocess_peer(*cli("get", "--insecure", "-q", "-o", str(out),
                                    f"https://{HOST}:{port}/nope"),
                               log_dir=str(tmp_path), name="get404") as process:
        with anyio.fail_after(60):
            assert await process.wait() == 1


async def test_get_verifies_the_certificate(served):
    port, _, tmp_path = served
    async with subprocess_peer(*cli("get", f"https://{HOST}:{port}/hello.txt"),
                               log_dir=str(tmp_path), name="get-verify") as process:
        with anyio.fail_after(60):
            assert await process.wait() == 1
    message = tail(str(tmp_path / "get-verify.err"))
    assert "get:" in message and ("certificate" in message or "TLS" in message), message


async def test_served_fingerprint_is_the_certificate_hash_chromium_accepts(served):
    """Chromium pins the printed SHA-256 through serverCertificateHashes."""
    chromium = "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        pytest.skip(f"{chromium} is absent (Debian package 'chromium')")
    async_playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright (test extra) is not installed"
    ).async_playwright
    from test_webtransport_browser import CHROMIUM_ARGS, PageServer

    port, fingerprint, _ = served
    page_server = PageServer()
    try:
        with anyio.fail_after(120):
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                                   args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(f"http://{HOST}:{page_server.port}/webtransport_echo.html")
                    result = await page.evaluate(
                        "([url, hash]) => window.aiopquicEcho(url, hash)",
                        [f"https://{HOST}:{port}/echo", fingerprint])
                finally:
                    await browser.close()
    finally:
        page_server.close()
    assert result == {"echo": "hello from chromium", "datagram": "ping"}, result


async def test_usage_and_perf_still_work(tmp_path):
    async with subprocess_peer(*cli(), log_dir=str(tmp_path), name="usage") as process:
        with anyio.fail_after(30):
            assert await process.wait() == 2
    usage = tail(str(tmp_path / "usage.out"))
    for command in ("serve", "get", "perf"):
        assert command in usage
    async with subprocess_peer(*cli("perf", "--mib", "8", "--no-progress"),
                               log_dir=str(tmp_path), name="perf") as process:
        with anyio.fail_after(120):
            assert await process.wait() == 0, tail(str(tmp_path / "perf.err"))
    assert "every byte verified" in tail(str(tmp_path / "perf.out"))


def test_fingerprint_helper_matches_der_hash():
    from aiopquic._native import make_self_signed
    from aiopquic.http3_tools import _cert_fingerprint

    cert, _ = make_self_signed("localhost")
    der = ssl.PEM_cert_to_DER_cert(cert.decode())
    assert _cert_fingerprint(cert) == hashlib.sha256(der).digest()
