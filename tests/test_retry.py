"""Address validation and handshake admission on a server: Retry (always, never, automatic
under a handshake flood), NEW_TOKEN tokens that let a returning client skip the Retry round
trip, INVALID_TOKEN for a forged Retry token, the half-open cap and the per-source handshake
rate.  Peers: our own client, aioquic's client (subprocess), Debian's gtlsserver -V (a
server that always sends Retry) for our client's side, and raw Initials captured from our
own client library for the flood cases."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys

import anyio
import pytest
from h3_helpers import free_udp_port, self_signed, subprocess_peer, tail
from quic_helpers import client, echo_roundtrip, echo_stream_handler, running_server
from raw_helpers import capture_initials
from scenario_helpers import AIOQUIC_PEER, AQ_ALPN, _bound_while_running, run_process

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"


async def _until(predicate, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` (cheap, synchronous) until it holds; fail after ``timeout``."""
    with anyio.fail_after(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _send_raw(packets: list, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for pkt in packets:
            sock.sendto(pkt, ("127.0.0.1", port))


async def test_retry_always_then_new_token_skips_it(server_config, client_config):
    """retry=True: the first connection pays one Retry round trip; the NEW_TOKEN token the
    server sends lets the second connection in without one."""
    tokens: list = []
    async with running_server(server_config(), retry=True,
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config(),
                              token_handler=tokens.append) as protocol:
                assert await echo_roundtrip(protocol, b"x" * 5000) == b"x" * 5000
                await _until(lambda: tokens, what="a NEW_TOKEN token")
            stats = server.admission_stats()
            assert stats["retries"] == 1, stats
            assert stats["tokens_ok"] == 1, stats  # the Retry token came back valid
            token = tokens[0]
            assert token and token[0] == 0x36, token  # ngtcp2's regular-token magic
            async with client(server.local_port, client_config(token=token)) as protocol:
                assert await echo_roundtrip(protocol, b"again") == b"again"
        stats = server.admission_stats()
    assert stats["retries"] == 1, stats  # no second Retry
    assert stats["tokens_ok"] == 2, stats
    assert stats["tokens_bad"] == 0, stats


async def test_forged_retry_token_is_refused_with_invalid_token(server_config, client_config):
    """A Retry token this server never issued closes the attempt with INVALID_TOKEN (0xb)
    at once: the client's connect() fails fast with that code, it does not time out."""
    forged = bytes([0xB7]) + os.urandom(90)
    async with running_server(server_config(), retry=True) as server:
        with anyio.fail_after(20):
            with pytest.raises(ConnectionError) as excinfo:
                async with client(server.local_port,
                                  client_config(token=forged, handshake_timeout=15)):
                    pass
        stats = server.admission_stats()
    assert "0xb" in str(excinfo.value), excinfo.value
    assert stats["tokens_bad"] >= 1, stats
    assert stats["retries"] == 0, stats


async def test_stale_new_token_falls_back_to_retry(server_config, client_config):
    """A NEW_TOKEN-style token that does not verify (another server's) is ignored: the
    client gets a Retry and connects."""
    foreign = bytes([0x36]) + os.urandom(60)
    async with running_server(server_config(), retry=True) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config(token=foreign)) as protocol:
                await protocol.ping()
        stats = server.admission_stats()
    assert stats["tokens_bad"] == 1, stats
    assert stats["retries"] == 1, stats


async def test_no_retry_without_pressure_by_default(server_config, client_config):
    async with running_server(server_config()) as server:
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                await protocol.ping()
        stats = server.admission_stats()
    assert stats["retries"] == 0, stats


@pytest.mark.parametrize("retry", [None, False])
async def test_automatic_retry_above_the_threshold(server_config, client_config, retry):
    """With retry_threshold=1 and one handshake left half-open by a raw Initial, the
    automatic mode (retry=None) answers the next client with Retry; retry=False never does.
    Either way the client connects."""
    initials = await anyio.to_thread.run_sync(capture_initials, client_config(), 1)
    assert len(initials) == 1
    config = server_config(retry_threshold=1, handshake_timeout=30)
    async with running_server(config, retry=retry) as server:
        _send_raw(initials, server.local_port)
        await _until(lambda: server.admission_stats()["half_open"] == 1)
        with anyio.fail_after(20):
            async with client(server.local_port, client_config()) as protocol:
                await protocol.ping()
        stats = server.admission_stats()
    if retry is None:
        assert stats["retries"] == 1 and stats["tokens_ok"] == 1, stats
    else:
        assert stats["retries"] == 0 and stats["tokens_ok"] == 0, stats


async def test_half_open_cap_drops_initials_beyond_it(server_config, client_config):
    initials = await anyio.to_thread.run_sync(capture_initials, client_config(), 6)
    assert len(initials) == 6
    config = server_config(max_half_open=3, handshake_timeout=30)
    async with running_server(config, retry=False) as server:
        _send_raw(initials, server.local_port)
        await _until(lambda: server.admission_stats()["dropped_full"] == 3)
        stats = server.admission_stats()
    assert stats["half_open"] == 3, stats


async def test_per_source_handshake_rate(server_config, client_config):
    """handshake_rate_per_source=1 (bursts of 2): of 6 Initials sent at once from one
    address, 2 open handshakes and 4 are dropped as rate limited."""
    initials = await anyio.to_thread.run_sync(capture_initials, client_config(), 6)
    assert len(initials) == 6
    config = server_config(handshake_rate_per_source=1.0, handshake_timeout=30)
    async with running_server(config, retry=False) as server:
        _send_raw(initials, server.local_port)
        await _until(lambda: server.admission_stats()["rate_limited"] >= 4)
        stats = server.admission_stats()
    assert stats["half_open"] == 2, stats
    assert stats["rate_limited"] == 4, stats


async def test_admission_stats_after_close_raises(server_config):
    async with running_server(server_config()) as server:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        server.admission_stats()


def test_configuration_checks_the_admission_fields():
    from aiopquic.quic.configuration import QuicConfiguration

    with pytest.raises(ValueError, match="max_half_open"):
        QuicConfiguration(is_client=False, max_half_open=0)
    with pytest.raises(ValueError, match="retry_threshold"):
        QuicConfiguration(is_client=False, retry_threshold=0)
    with pytest.raises(ValueError, match="handshake_rate_per_source"):
        QuicConfiguration(is_client=False, handshake_rate_per_source=-1)
    with pytest.raises(ValueError, match="token"):
        QuicConfiguration(token=bytes(5000))


async def test_aioquic_client_through_our_retry(server_config, certs, tmp_path):
    """aioquic's client (a stack nobody here wrote) follows our Retry and echoes."""
    size = 200_000
    async with running_server(server_config(alpn_protocols=[AQ_ALPN]), retry=True,
                              stream_handler=echo_stream_handler) as server:
        rc = await run_process(
            [sys.executable, AIOQUIC_PEER, "client", "--host", "127.0.0.1", "--port",
             str(server.local_port), "--ca", certs.ca, "--alpn", AQ_ALPN, "--size", str(size),
             "--lifetime", "40"],
            str(tmp_path), "aioquic-client", 50)
        out = tail(os.path.join(str(tmp_path), "aioquic-client.out"))
        assert rc == 0, out + tail(os.path.join(str(tmp_path), "aioquic-client.err"))
        assert out.strip() == f"OK {size}", out
        stats = server.admission_stats()
    assert stats["retries"] >= 1 and stats["tokens_ok"] >= 1, stats


@pytest.mark.skipif(not os.path.exists(GTLSSERVER), reason="Debian's ngtcp2 examples missing")
async def test_our_client_follows_gtlsserver_retry(client_config, tmp_path):
    """gtlsserver -V sends Retry to every client: our client completes the handshake."""
    cert = self_signed(str(tmp_path))
    root = tmp_path / "htdocs"
    root.mkdir()
    for attempt in range(3):
        port = free_udp_port()
        argv = [GTLSSERVER, "-q", "-V", "-d", str(root), "127.0.0.1", str(port), cert.key,
                cert.cert]
        async with subprocess_peer(*argv, log_dir=str(tmp_path),
                                   name=f"gtlsserver{attempt}") as process:
            if not await _bound_while_running(process, "127.0.0.1", port):
                continue
            with anyio.fail_after(20):
                async with client(port, client_config(alpn_protocols=["h3"],
                                                      cafile=cert.cert)) as protocol:
                    assert protocol._quic.handshake_complete
            return
    raise AssertionError("gtlsserver did not start: " + tail(str(tmp_path / "gtlsserver2.err")))
