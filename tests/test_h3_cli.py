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
    assert (await get(port, "/hello%00.txt"))[0] == 404  # a NUL is in no file name
    assert (await get(port, "/" + "a" * 300))[0] == 404  # longer than a name may be
    payload = os.urandom(300_000)
    status, _, body = await get(port, "/anything", method="POST", body=payload)
    assert status == 200 and body == payload
    assert (await get(port, "/hello.txt", method="DELETE"))[0] == 405


async def test_serve_small_files_follow_changes_on_disk(served):
    """Small files are answered from memory, but every change on disk is seen: new content
    of the same or another size, a file swapped for a symlink out of the root, a removed
    file; a large file is streamed whole."""
    port, _, tmp_path = served
    hello = tmp_path / "root" / "hello.txt"
    assert (await get(port, "/hello.txt"))[2] == b"hello over HTTP/3\n"
    hello.write_bytes(b"HELLO OVER HTTP/3\n")  # same size
    assert (await get(port, "/hello.txt"))[2] == b"HELLO OVER HTTP/3\n"
    hello.write_bytes(b"longer than it was before\n")
    status, headers, body = await get(port, "/hello.txt?v=2")
    assert (status, body) == (200, b"longer than it was before\n")
    assert headers[b"content-length"] == b"26"
    status, headers, body = await get(port, "/hello.txt", method="HEAD")
    assert (status, body, headers[b"content-length"]) == (200, b"", b"26")
    hello.unlink()
    hello.symlink_to(tmp_path / "secret.txt")
    assert (await get(port, "/hello.txt"))[0] == 404
    hello.unlink()
    assert (await get(port, "/hello.txt"))[0] == 404
    big = os.urandom(200_000)
    (tmp_path / "root" / "big.bin").write_bytes(big)
    for _ in range(2):
        status, headers, body = await get(port, "/big.bin")
        assert status == 200 and body == big
    (tmp_path / "root" / "empty").write_bytes(b"")
    status, headers, body = await get(port, "/empty")
    assert (status, body, headers[b"content-length"]) == (200, b"", b"0")


def test_file_cache_is_bounded(tmp_path, monkeypatch):
    from aiopquic import http3_tools
    monkeypatch.setattr(http3_tools, "FILE_CACHE_ENTRIES", 3)
    monkeypatch.setattr(http3_tools, "FILE_CACHE_BYTES", 250)
    monkeypatch.setattr(http3_tools, "SMALL_FILE_BYTES", 200)
    cache = http3_tools._FileCache()
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x" * 50)
        assert cache.load(f"/f{i}".encode(), str(tmp_path / f"f{i}")) is not None
    assert list(cache.entries) == [b"/f2", b"/f3", b"/f4"] and cache.size == 150
    (tmp_path / "g").write_bytes(b"y" * 200)
    assert cache.load(b"/g", str(tmp_path / "g")) is not None
    assert list(cache.entries) == [b"/f4", b"/g"] and cache.size == 250  # bytes bound
    (tmp_path / "h").write_bytes(b"z" * 201)
    assert cache.load(b"/h", str(tmp_path / "h")) is None  # too large: streamed instead
    assert cache.get(b"/g") is not None
    (tmp_path / "g").write_bytes(b"w" * 10)
    assert cache.get(b"/g") is None and cache.size == 50  # changed on disk: dropped
    with pytest.raises(OSError):
        cache.load(b"/none", str(tmp_path / "none"))


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


async def run_cli(tmp_path, name: str, *args: str, timeout: float = 60) -> tuple[int, bytes,
                                                                                    str]:
    """Run ``python -m aiopquic ARGS``; return (exit status, stdout bytes, stderr text)."""
    async with subprocess_peer(*cli(*args), log_dir=str(tmp_path), name=name) as process:
        with anyio.fail_after(timeout):
            rc = await process.wait()
    return rc, (tmp_path / f"{name}.out").read_bytes(), tail(str(tmp_path / f"{name}.err"))


async def test_get_speaks_curl(served):
    """-i / -I / -v / -H / -d (text, @file, implies POST), --version, and serve's
    --write-cert with the --cacert hint it prints."""
    port, _, tmp_path = served
    url = f"https://{HOST}:{port}"
    rc, out, _ = await run_cli(tmp_path, "include", "get", "-k", "-i", f"{url}/hello.txt")
    assert rc == 0
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"HTTP/3 200" and b"content-length: 18" in head
    assert body == b"hello over HTTP/3\n"
    rc, out, _ = await run_cli(tmp_path, "head", "get", "-k", "-I", f"{url}/hello.txt")
    assert rc == 0 and out.startswith(b"HTTP/3 200\r\n") and out.endswith(b"\r\n\r\n")
    assert b"hello over" not in out
    (tmp_path / "body.bin").write_bytes(b"\x00\x01 from a file")
    rc, out, err = await run_cli(tmp_path, "post-file", "get", "-k", "-v", "-d",
                               "@" + str(tmp_path / "body.bin"), "-H", "X-Test: yes", f"{url}/echo")
    assert rc == 0 and out == b"\x00\x01 from a file", err
    assert "> POST" in err and "> x-test: yes" in err and "< HTTP/3 200" in err
    rc, out, _ = await run_cli(tmp_path, "post-text", "get", "-k", "-q", "-d", "plain text",
                               f"{url}/echo")
    assert rc == 0 and out == b"plain text"
    rc, out, _ = await run_cli(tmp_path, "version", "--version")
    assert rc == 0 and out.startswith(b"aiopquic ")

    pem = tmp_path / "served.pem"
    argv = cli("serve", "--host", HOST, "--port", "0", "--write-cert", str(pem))
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="serve2",
                               stdout_pipe=True) as process:
        err_path = str(tmp_path / "serve2.err")
        hint = await read_line_with(process, "  python -m aiopquic get --cacert", 60, err_path)
        line = await read_line_with(process, "listening on", 30, err_path)
        port2 = int(line.rsplit(":", 1)[1])
        assert hint.split()[-1] == f"https://localhost:{port2}/"
        rc, out, err = await run_cli(tmp_path, "verified", "get", "--cacert", str(pem),
                                     f"https://localhost:{port2}/")
        assert rc == 0 and "HTTP/3 200" in err, err  # verified: no --insecure


async def test_user_mistakes_print_one_line_never_a_traceback(tmp_path):
    """Every mistake a user can make on the command line exits non-zero with a message
    naming the culprit, and no Python traceback."""
    mistakes = [
        (("get",), "url"),
        (("get", "-k", "-o", "/nonexistent-dir/x", "https://127.0.0.1:9/"), "-o"),
        (("get", "-k", "-d", "@/nonexistent-file", "https://127.0.0.1:9/"), "@/nonexistent"),
        (("get", "-k", "-H", "no colon here", "https://127.0.0.1:9/"), "-H"),
        (("get", "--cacert", "/nonexistent.pem", "https://127.0.0.1:9/"), "--cacert"),
        (("get", "-k", "ftp://127.0.0.1/"), "https://"),
        (("get", "-k", "https://127.0.0.1:99999/"), "port"),
        (("get", "-k", "--connect-timeout", "0", "https://127.0.0.1:9/"), "--connect-timeout"),
        (("get", "-k", "-I", "-d", "x", "https://127.0.0.1:9/"), "-I"),
        (("get", "-k", "--connect-timeout", "1", "https://127.0.0.1:9/"), "127.0.0.1"),
        (("serve", "--cert", "/nonexistent-cert.pem"), "nonexistent-cert"),
        (("serve", "--port", "70000"), "--port"),
        (("serve", "--root", "/nonexistent-root"), "--root"),
        (("serve", "--port", "0", "--write-cert", "/nonexistent-dir/c.pem"), "--write-cert"),
        (("frobnicate",), "frobnicate"),
    ]
    for i, (args, culprit) in enumerate(mistakes):
        rc, out, err = await run_cli(tmp_path, f"mistake{i}", *args)
        text = err + out.decode(errors="replace")
        assert rc != 0, (args, text)
        assert "Traceback" not in text, (args, text)
        assert culprit in text, (args, culprit, text)
