"""HTTP/3 interop with Debian's ngtcp2 examples (gtlsclient / gtlsserver, GnuTLS builds,
nghttp3 inside), driving our command-line tools (``python -m aiopquic serve`` / ``get``)
as subprocesses: 16 MiB download and upload, sha256 checked."""

from __future__ import annotations

import os
import shutil
import sys
import time

import anyio
import pytest
from h3_helpers import (
    HOST,
    ROOT_DIR,
    free_udp_port,
    read_line_with,
    self_signed,
    sha256_file,
    subprocess_peer,
    tail,
    write_random_file,
)

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(240)]

GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
SIZE = 16 * 1024 * 1024

need_client = pytest.mark.skipif(not os.access(GTLSCLIENT, os.X_OK),
                                 reason="gtlsclient missing (Debian package ngtcp2-client)")
need_server = pytest.mark.skipif(not os.access(GTLSSERVER, os.X_OK),
                                 reason="gtlsserver missing (Debian package ngtcp2-server)")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aiopquic", *args]


def env_with_package() -> None:
    path = os.environ.get("PYTHONPATH", "")
    if ROOT_DIR not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = ROOT_DIR + (os.pathsep + path if path else "")


async def run(argv: list[str], log_dir: str, name: str, timeout: float) -> int:
    async with subprocess_peer(*argv, log_dir=log_dir, name=name) as process:
        try:
            with anyio.fail_after(timeout):
                return await process.wait()
        except TimeoutError:
            raise AssertionError(f"{name} did not finish within {timeout} s:\n"
                                 f"{tail(os.path.join(log_dir, name + '.err'))}") from None


@pytest.fixture
async def cli_server(tmp_path):
    """``python -m aiopquic serve --root`` with a 16 MiB file; yields (port, root, digest)."""
    env_with_package()
    root = tmp_path / "root"
    root.mkdir()
    digest = write_random_file(str(root / "blob.bin"), SIZE, seed=16)
    argv = cli("serve", "--host", HOST, "--port", "0", "--root", str(root), "--quiet")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aiopquic-serve",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "listening on", 60,
                                    str(tmp_path / "aiopquic-serve.err"))
        port = int(line.rsplit(":", 1)[1])
        yield port, root, digest


@need_client
async def test_gtlsclient_downloads_16mib_from_our_server(cli_server, tmp_path):
    port, _, digest = cli_server
    dl = tmp_path / "dl"
    dl.mkdir()
    start = time.perf_counter()
    rc = await run([GTLSCLIENT, "-q", "--exit-on-all-streams-close", f"--download={dl}",
                    HOST, str(port), f"https://localhost:{port}/blob.bin"],
                   str(tmp_path), "gtlsclient-get", 120)
    elapsed = time.perf_counter() - start
    assert rc == 0, tail(str(tmp_path / "gtlsclient-get.err"))
    assert os.path.getsize(dl / "blob.bin") == SIZE
    assert sha256_file(str(dl / "blob.bin")) == digest
    print(f"gtlsclient downloaded 16 MiB in {elapsed:.3f} s "
          f"({SIZE / elapsed / 2**20:.1f} MiB/s incl. process start)")


@need_client
async def test_gtlsclient_uploads_16mib_with_post(cli_server, tmp_path):
    port, root, digest = cli_server
    dl = tmp_path / "echo"
    dl.mkdir()
    rc = await run([GTLSCLIENT, "-q", "--exit-on-all-streams-close", "-m", "POST",
                    "-d", str(root / "blob.bin"), f"--download={dl}",
                    HOST, str(port), f"https://localhost:{port}/upload"],
                   str(tmp_path), "gtlsclient-post", 120)
    assert rc == 0, tail(str(tmp_path / "gtlsclient-post.err"))
    # the server echoes the request body: what came back is what was uploaded
    assert os.path.getsize(dl / "upload") == SIZE
    assert sha256_file(str(dl / "upload")) == digest


@need_server
async def test_our_client_downloads_16mib_from_gtlsserver(tmp_path):
    env_with_package()
    cert = self_signed(str(tmp_path))
    root = tmp_path / "htdocs"
    root.mkdir()
    digest = write_random_file(str(root / "blob.bin"), SIZE, seed=61)
    port = free_udp_port()
    argv = [GTLSSERVER, "-q", "-d", str(root), HOST, str(port), cert.key, cert.cert]
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="gtlsserver"):
        out = tmp_path / "got.bin"
        rc = 1
        with anyio.fail_after(90):
            for _ in range(20):  # gtlsserver binds asynchronously: retry until it answers
                rc = await run(cli("get", "--cacert", cert.cert, "--timeout", "20", "-o",
                                   str(out), f"https://{HOST}:{port}/blob.bin"),
                               str(tmp_path), "aiopquic-get", 60)
                if rc == 0:
                    break
                await anyio.sleep(0.25)
        assert rc == 0, tail(str(tmp_path / "aiopquic-get.err")) + tail(
            str(tmp_path / "gtlsserver.err"))
        assert sha256_file(str(out)) == digest
        summary = tail(str(tmp_path / "aiopquic-get.err"))
        assert f"HTTP/3 200, {SIZE} bytes" in summary, summary
        print(summary.strip())
