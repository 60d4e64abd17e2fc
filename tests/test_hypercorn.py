"""Hypercorn 0.18.0, unchanged, serves HTTP/3 on aiopquic: every ``aioquic`` module it imports
is mapped to aiopquic's (tests/peers/hypercorn_peer.py, in a subprocess), so Hypercorn drives
our sans-IO QuicConnection over its own UDP socket.  Requests come from our client and from
aioquic's (the real package, in a subprocess); 16 MiB bodies both ways, byte-verified."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import anyio
import pytest
from h3_helpers import HOST, python_peer, read_line_with, subprocess_peer

from aiopquic.http3_tools import fetch
from aiopquic.quic.configuration import QuicConfiguration

pytest.importorskip("hypercorn", reason="Hypercorn 0.18 (test extra, Python >= 3.10)")
pytest.importorskip("aioquic", reason="aioquic (test extra)")

sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/peers")
import hypercorn_peer  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.interop, pytest.mark.timeout(240)]

SIZE = 16 * 1024 * 1024


@pytest.fixture
async def hypercorn_port(certs, tmp_path):
    argv = python_peer("hypercorn_peer.py", "server", "--cert", certs.cert, "--key", certs.key,
                       "--lifetime", "200")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="hypercorn",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "LISTENING", 30, str(tmp_path / "hypercorn.err"))
        yield int(line.split()[1])
        assert process.returncode is None, "Hypercorn died while serving"
    err = (tmp_path / "hypercorn.err").read_text(errors="replace")
    assert "Traceback" not in err, err[-4000:]


def _client_config(certs) -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=certs.ca,
                             server_name="localhost")


async def test_our_client_gets_16_mib(certs, hypercorn_port):
    out = io.BytesIO()
    with anyio.fail_after(120):
        status, headers, received = await fetch(
            f"https://{HOST}:{hypercorn_port}/bytes/{SIZE}", out,
            configuration=_client_config(certs))
    assert status == 200 and received == SIZE
    assert dict(headers)[b"content-length"] == str(SIZE).encode()
    body = out.getvalue()
    assert len(body) == SIZE
    assert body == b"".join(hypercorn_peer.pattern_chunks(SIZE))


async def test_our_client_posts_16_mib(certs, hypercorn_port):
    payload = b"".join(hypercorn_peer.pattern_chunks(SIZE))
    out = io.BytesIO()
    with anyio.fail_after(120):
        status, _, _ = await fetch(f"https://{HOST}:{hypercorn_port}/upload", out,
                                   configuration=_client_config(certs), method="POST",
                                   body=payload)
    assert status == 200
    assert out.getvalue().decode() == \
        f"LENGTH {SIZE} SHA256 {hypercorn_peer.pattern_sha256(SIZE)}"


@pytest.mark.parametrize("mode", ["get", "post"])
async def test_aioquic_client_16_mib(certs, hypercorn_port, tmp_path, mode):
    argv = python_peer("hypercorn_peer.py", mode, "--port", str(hypercorn_port), "--ca",
                       certs.ca, "--size", str(SIZE), "--lifetime", "150")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name=f"aioquic-{mode}",
                               stdout_pipe=True) as process:
        line = await read_line_with(process, "RESULT", 160,
                                    str(tmp_path / f"aioquic-{mode}.err"))
    assert line == f"RESULT 200 LENGTH {SIZE} SHA256 {hypercorn_peer.pattern_sha256(SIZE)}"


async def test_small_requests_from_both_clients(certs, hypercorn_port, tmp_path):
    for _ in range(3):
        out = io.BytesIO()
        with anyio.fail_after(30):
            status, _, _ = await fetch(f"https://{HOST}:{hypercorn_port}/small", out,
                                       configuration=_client_config(certs))
        assert (status, out.getvalue()) == (200, b"ok")
    argv = python_peer("hypercorn_peer.py", "get", "--port", str(hypercorn_port), "--ca",
                       certs.ca, "--count", "5", "--lifetime", "60")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-small",
                               stdout_pipe=True) as process:
        for _ in range(5):
            line = await read_line_with(process, "RESULT", 60,
                                        str(tmp_path / "aioquic-small.err"))
            assert line == "RESULT 200 LENGTH 2 SHA256 " \
                "2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df"


async def test_a_client_vanishing_mid_body_does_not_hurt_others(certs, hypercorn_port,
                                                                tmp_path):
    big = 512 * 1024 * 1024  # far more than arrives before the client is killed
    argv = python_peer("hypercorn_peer.py", "get", "--port", str(hypercorn_port), "--ca",
                       certs.ca, "--size", str(big), "--lifetime", "120")
    async with subprocess_peer(*argv, log_dir=str(tmp_path), name="aioquic-vanishing",
                               stdout_pipe=True) as process:
        await read_line_with(process, "RECEIVING", 60, str(tmp_path / "aioquic-vanishing.err"))
        process.kill()  # no CONNECTION_CLOSE: the server's packets now go nowhere
        await process.wait()
    # while Hypercorn still retransmits to the vanished client, others are served in full
    out = io.BytesIO()
    with anyio.fail_after(120):
        status, _, received = await fetch(f"https://{HOST}:{hypercorn_port}/bytes/{SIZE}",
                                          out, configuration=_client_config(certs))
    assert status == 200 and received == SIZE
    assert out.getvalue() == b"".join(hypercorn_peer.pattern_chunks(SIZE))
    payload = b"".join(hypercorn_peer.pattern_chunks(1 << 20))
    out = io.BytesIO()
    with anyio.fail_after(60):
        status, _, _ = await fetch(f"https://{HOST}:{hypercorn_port}/upload", out,
                                   configuration=_client_config(certs), method="POST",
                                   body=payload)
    assert (status, out.getvalue().decode()) == \
        (200, f"LENGTH {1 << 20} SHA256 {hypercorn_peer.pattern_sha256(1 << 20)}")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip (network namespaces)")
def test_16_mib_both_ways_at_mtu_1500():
    """The 16 MiB tests above (our client and aioquic's, GET and POST) again inside a network
    namespace whose loopback MTU is 1500: Hypercorn's socket, not ours, sends every packet,
    and the kernel refuses what is larger than the link (DF)."""
    here = os.path.dirname(os.path.abspath(__file__))
    script = "ip link set lo mtu 1500 && ip link set lo up && exec \"$@\""
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, "-m", "pytest", "-q",
         "-p", "no:cacheprovider", os.path.join(here, "test_hypercorn.py"),
         "-k", "16_mib and not mtu"],
        capture_output=True, text=True, timeout=220, cwd=os.path.dirname(here))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 passed" in proc.stdout, proc.stdout[-2000:]
