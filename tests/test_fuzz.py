"""Bounded fuzzing of a live server (fixed seed, well under 30 s in total).

From a raw UDP socket: random datagrams (0..1500 bytes, 0 and 65507 bytes), mutated real
client Initials (captured from our own client library), truncated long headers, CID lengths
over 20, version-negotiation triggers, short-header packets with random and known CIDs.
On established connections: malformed HTTP/3 (bad varints, oversized and unknown frames,
garbage QPACK, SETTINGS twice, DATA before HEADERS, bad critical streams), WebTransport
capsule / stream / datagram garbage, empty and maximum-size QUIC datagrams.

After every batch a normal client must still get an echo roundtrip from the same server.
The case count and run time are printed; a minimum count is asserted.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Optional

import anyio
import pytest
from quic_helpers import (
    ProtocolCollector,
    RecordingProtocol,
    client,
    echo_roundtrip,
    echo_stream_handler,
    largest_ipv4_packet,
    running_server,
)
from raw_helpers import capture_initials

from aiopquic.asyncio import connect
from aiopquic.asyncio.webtransport import connect_webtransport, serve_webtransport
from aiopquic.http3_tools import echo_handler
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.events import DatagramFrameReceived

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SEED = 20261206
HOST = "127.0.0.1"


def varint(v: int) -> bytes:
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 0x40000000:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def frame(ftype: int, payload: bytes, length: Optional[int] = None) -> bytes:
    return varint(ftype) + varint(len(payload) if length is None else length) + payload


class Stats:
    def __init__(self) -> None:
        self.cases = 0
        self.t0 = time.monotonic()

    def report(self, what: str) -> None:
        print(f"fuzz {what}: {self.cases} cases in {time.monotonic() - self.t0:.1f}s")


# ----------------------------------------------------------------------- raw UDP


def mutate(rng: random.Random, pkt: bytes) -> bytes:
    b = bytearray(pkt)
    op = rng.randrange(6)
    if op == 0:  # flip 1..8 bits anywhere
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # flip bits in the header (first 64 bytes)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(min(64, len(b)))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 2:  # truncate
        del b[rng.randrange(len(b)):]
    elif op == 3:  # extend
        b += rng.randbytes(rng.randint(1, 400))
    elif op == 4:  # overwrite a run with random bytes
        i = rng.randrange(len(b))
        n = rng.randint(1, 32)
        b[i:i + n] = rng.randbytes(min(n, len(b) - i))
    else:  # set a length byte (DCID/SCID/token length) to something wild
        i = rng.choice([5, 6 + b[5] if len(b) > 5 else 5])
        if i < len(b):
            b[i] = rng.randrange(256)
    return bytes(b)


def long_header(rng: random.Random, version: bytes, dcid: bytes, scid: bytes,
                size: int = 1200) -> bytes:
    pkt = bytes([0xC0 | rng.randrange(0x40)]) + version + bytes([len(dcid)]) + dcid
    pkt += bytes([len(scid)]) + scid
    return pkt + rng.randbytes(max(0, size - len(pkt)))


async def blast(sock: socket.socket, port: int, packets: list, stats: Stats) -> None:
    for i, pkt in enumerate(packets):
        try:
            sock.sendto(pkt, (HOST, port))
        except OSError:
            pass  # e.g. EMSGSIZE for a datagram the kernel refuses
        stats.cases += 1
        if i % 64 == 63:
            await asyncio.sleep(0.002)  # the server's socket buffer is finite
    await asyncio.sleep(0.05)


async def assert_serves(port: int, client_config, what: str) -> None:
    with anyio.fail_after(20):
        async with client(port, client_config()) as protocol:
            payload = b"after " + what.encode() + b" " + bytes(range(256)) * 8
            assert await echo_roundtrip(protocol, payload) == payload, what


def server_cid(reply: bytes) -> Optional[bytes]:
    """The SCID of a long-header reply (the server's chosen connection ID)."""
    if len(reply) < 7 or not reply[0] & 0x80:
        return None
    d = reply[5]
    if len(reply) < 7 + d:
        return None
    s = reply[6 + d]
    return bytes(reply[7 + d : 7 + d + s])


async def test_fuzz_raw_udp(server_config, client_config):
    rng = random.Random(SEED)
    stats = Stats()
    initials = await anyio.to_thread.run_sync(capture_initials, client_config(), 8)
    assert len(initials) == 8
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.bind((HOST, 0))
    cfg = server_config(max_datagram_frame_size=65535, handshake_timeout=3.0)
    try:
        async with running_server(cfg, stream_handler=echo_stream_handler) as server:
            port = server.local_port
            await assert_serves(port, client_config, "start")

            # 1. random datagrams, plus the extremes
            batch = [rng.randbytes(rng.randint(0, 1500)) for _ in range(3000)]
            batch += [b"", b"", bytes(65507), rng.randbytes(65507), b"\xc0" * 65507]
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "random datagrams")

            # 2. mutated real Initials (and a few clean replays)
            batch = [mutate(rng, rng.choice(initials)) for _ in range(3000)]
            batch += initials * 2
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "mutated initials")

            # 3. truncated long headers
            batch = []
            for pkt in initials:
                batch += [pkt[:n] for n in range(0, 64)]
                batch += [pkt[:n] for n in range(64, len(pkt), 97)]
            batch += [bytes([0xC0 | rng.randrange(64)]) + rng.randbytes(rng.randint(0, 30))
                      for _ in range(300)]
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "truncated long headers")

            # 4. CID lengths over 20 (v1, v2 and unknown versions; Initial and other types)
            batch = []
            for _ in range(600):
                version = rng.choice([b"\0\0\0\1", b"\x6b\x33\x43\xcf", rng.randbytes(4)])
                dlen, slen = rng.choice([(rng.randint(21, 255), 8), (8, rng.randint(21, 255)),
                                         (rng.randint(21, 255), rng.randint(21, 255))])
                batch.append(long_header(rng, version, rng.randbytes(dlen), rng.randbytes(slen),
                                         rng.choice([100, 1200, 1500])))
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "oversized CIDs")

            # 5. version negotiation triggers (rate-limited answers), incl. version 0
            batch = [long_header(rng, rng.choice([rng.randbytes(4), b"\x1a\x2a\x3a\x4a",
                                                  b"\0\0\0\0"]),
                                 rng.randbytes(rng.randint(0, 20)),
                                 rng.randbytes(rng.randint(0, 20)),
                                 rng.choice([1199, 1200, 1500]))
                     for _ in range(500)]
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "version negotiation triggers")

            # 6. short headers: random CIDs, then a CID the server really uses
            batch = [bytes([0x40 | rng.randrange(64)]) + rng.randbytes(rng.randint(0, 1400))
                     for _ in range(800)]
            await blast(sock, port, batch, stats)
            sock.settimeout(0.2)
            while True:  # drop what the server sent so far
                try:
                    sock.recv(65535)
                except socket.timeout:
                    break
            sock.sendto(initials[0], (HOST, port))
            known = None
            deadline = time.monotonic() + 3
            while known is None and time.monotonic() < deadline:
                try:
                    known = server_cid(sock.recv(65535))
                except socket.timeout:
                    pass
            assert known, "the server did not answer a replayed Initial"
            batch = [bytes([0x40 | rng.randrange(64)]) + known
                     + rng.randbytes(rng.randint(0, 1300)) for _ in range(800)]
            batch += [known[:n] for n in range(len(known))]
            await blast(sock, port, batch, stats)
            await assert_serves(port, client_config, "short headers")
    finally:
        sock.close()
    stats.report("raw UDP")
    assert stats.cases >= 9000, stats.cases


# ----------------------------------------------------------------------- QUIC datagrams


class DatagramEcho(RecordingProtocol):
    def quic_event_received(self, event):
        super().quic_event_received(event)
        if isinstance(event, DatagramFrameReceived):
            self._quic.send_datagram_frame(event.data)
            self.transmit()


async def wait_path_size(protocol, size: int, timeout: float = 5.0) -> None:
    """Wait until PMTUD lets ``size``-byte packets through (stats.max_datagram_size)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (await protocol.get_stats()).max_datagram_size >= size:
            return
        await asyncio.sleep(0.05)


async def test_fuzz_datagram_sizes(server_config, client_config):
    servers = ProtocolCollector(DatagramEcho)
    async with running_server(server_config(max_datagram_frame_size=65535),
                              create_protocol=servers,
                              stream_handler=echo_stream_handler) as server:
        with anyio.fail_after(60):
            async with client(server.local_port, client_config(max_datagram_frame_size=65535),
                              create_protocol=RecordingProtocol) as protocol:
                quic = protocol._quic
                assert quic.max_datagram_size >= 1154  # what a 1200-byte packet carries
                # the limit follows PMTUD: wait until both sides reached the largest packet
                # this loopback carries (16384 by default; less at a smaller lo MTU), so that
                # it no longer changes under the test
                server_protocol = await servers.next()
                target = largest_ipv4_packet()
                await wait_path_size(protocol, target)
                await wait_path_size(server_protocol, target)
                biggest = quic.max_datagram_size
                assert biggest == target - 46
                for size in (0, 1, biggest - 1, biggest, 0, biggest):
                    payload = bytes([size & 0xFF]) * size
                    got = False
                    for _ in range(10):  # datagrams may be lost: retry a few times
                        quic.send_datagram_frame(payload)
                        protocol.transmit()
                        try:
                            await protocol.wait_event(DatagramFrameReceived,
                                                      lambda e, p=payload: e.data == p, 1.0)
                            got = True
                            break
                        except AssertionError:
                            continue
                    stats = await protocol.get_stats()
                    sstats = await server_protocol.get_stats()
                    assert got, (f"a {size}-byte datagram did not come back; dropped: client "
                                 f"{stats.datagrams_dropped}, server {sstats.datagrams_dropped}")
                with pytest.raises(ValueError):
                    quic.send_datagram_frame(b"x" * (biggest + 1))
                assert await echo_roundtrip(protocol, b"fine") == b"fine"


async def test_max_datagram_right_after_handshake(server_config, client_config):
    servers = ProtocolCollector(DatagramEcho)
    async with running_server(server_config(max_datagram_frame_size=65535),
                              create_protocol=servers) as server:
        with anyio.fail_after(30):
            async with client(server.local_port, client_config(max_datagram_frame_size=65535),
                              create_protocol=RecordingProtocol) as protocol:
                quic = protocol._quic
                payload = b"m" * quic.max_datagram_size
                quic.send_datagram_frame(payload)  # accepted: no ValueError
                protocol.transmit()
                server_protocol = await servers.next()
                with anyio.move_on_after(2):
                    while not any(isinstance(e, DatagramFrameReceived)
                                  for e in server_protocol.seen):
                        await asyncio.sleep(0.02)
                stats = await protocol.get_stats()
                assert stats.datagrams_dropped == 0, stats
                assert any(isinstance(e, DatagramFrameReceived) and e.data == payload
                           for e in server_protocol.seen)


# ----------------------------------------------------------------------- HTTP/3


def h3_cases(rng: random.Random) -> list:
    """(control-stream bytes or None, request-stream bytes or None, extra uni streams)."""
    settings = frame(0x04, varint(0x01) + varint(0) + varint(0x07) + varint(0))
    cases = []
    junk_qpack = [rng.randbytes(rng.randint(0, 64)) for _ in range(20)]
    junk_qpack += [b"", b"\x00", b"\x00\x00\xff", b"\x00\x00\x3f\xe1\xff\xff\xff\xff\x0f",
                   b"\xff\xff\xff\xff\xff\xff\xff\xff", b"\x00\x00\x51\x7f\xff\xff\xff\xff\xff"]
    for q in junk_qpack:  # HEADERS with garbage QPACK
        cases.append((settings, frame(0x01, q), []))
    cases.append((settings, frame(0x00, b"body before headers"), []))  # DATA before HEADERS
    cases.append((settings, frame(0x00, b""), []))
    for ftype in (0x00, 0x01, 0x04, 0x07, 0x0D, 0x21, 0x3FFF, 0x1F * 7 + 0x21):
        # oversized lengths: the stream ends long before the frame does
        cases.append((settings, varint(ftype) + varint((1 << 62) - 1) + b"x" * 10, []))
        cases.append((settings, varint(ftype) + varint(1 << 30) + rng.randbytes(100), []))
    for cut in (b"\x40", b"\x80\x00", b"\xc0\x00\x00\x00", b"\x01\x80", b"\x01\x45"):
        cases.append((settings, cut, []))  # truncated varints at the end of the stream
    cases.append((settings, frame(0x04, b""), []))  # SETTINGS on a request stream
    cases.append((settings, frame(0x05, varint(0) + b"\x00\x00"), []))  # PUSH_PROMISE
    cases.append((settings, frame(0x07, varint(0)), []))  # GOAWAY on a request stream
    cases.append((settings + settings, None, []))  # SETTINGS twice
    cases.append((settings + frame(0x00, b"data on control"), None, []))
    cases.append((frame(0x01, b"\x00\x00"), None, []))  # control stream not starting w/ SETTINGS
    cases.append((settings + frame(0x04, varint(0x06) + varint(10)), None, []))
    cases.append((frame(0x04, varint(0x06)), None, []))  # SETTINGS cut inside
    cases.append((frame(0x04, varint(0x02) + varint(1)), None, []))  # HTTP/2 setting id
    cases.append((frame(0x04, varint(0x01) + varint(1 << 40)), None, []))  # huge table
    cases.append((settings + frame(0x07, varint(7)), None, []))  # GOAWAY with a bad id
    cases.append((settings + frame(0x03, varint(0)), None, []))  # CANCEL_PUSH, no push
    cases.append((settings + frame(0x0D, varint(3)), None, []))  # MAX_PUSH_ID
    cases.append((settings, None, [b"\x00" + settings]))  # a second control stream
    cases.append((settings, None, [b"\x02" + rng.randbytes(40)]))  # QPACK encoder garbage
    cases.append((settings, None, [b"\x03" + rng.randbytes(40)]))  # QPACK decoder garbage
    cases.append((settings, None, [b"\x02", b"\x02"]))  # two encoder streams
    cases.append((settings, None, [b"\x01" + varint(0)]))  # push stream from a client
    cases.append((settings, None, [varint(0x21 + 0x1F * 3) + rng.randbytes(100)]))  # reserved
    cases.append((settings, None, [varint(0x54) + varint(1 << 40) + b"x"]))  # WT, no session
    for _ in range(25):
        cases.append((settings, rng.randbytes(rng.randint(1, 300)), []))
        cases.append((settings + rng.randbytes(rng.randint(1, 100)), None, []))
    return cases


async def run_h3_case(port: int, certs, control: Optional[bytes], request: Optional[bytes],
                      extra: list) -> None:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=certs.ca,
                            server_name="localhost")
    with anyio.fail_after(10):
        async with connect(HOST, port, configuration=cfg) as protocol:
            quic = protocol._quic
            if control is not None:
                sid = quic.get_next_available_stream_id(is_unidirectional=True)
                quic.send_stream_data(sid, b"\x00" + control)
            for data in extra:
                sid = quic.get_next_available_stream_id(is_unidirectional=True)
                quic.send_stream_data(sid, data)
            if request is not None:
                sid = quic.get_next_available_stream_id()
                quic.send_stream_data(sid, request, end_stream=True)
            protocol.transmit()
            with anyio.move_on_after(0.15):
                await protocol.wait_closed()
            protocol.close()


async def wt_serves(port: int, certs, what: str) -> None:
    cfg = QuicConfiguration(is_client=True, cafile=certs.ca, server_name="localhost")
    with anyio.fail_after(20):
        async with connect_webtransport(f"https://{HOST}:{port}/echo", configuration=cfg) as s:
            reader, writer = await s.create_stream()
            payload = b"after " + what.encode()
            writer.write(payload)
            writer.write_eof()
            assert await reader.read() == payload, what


@pytest.fixture
def wt_server_config(certs):
    config = QuicConfiguration(is_client=False, max_datagram_frame_size=65535)
    config.load_cert_chain(certs.cert, certs.key)
    return config


async def test_fuzz_h3_and_webtransport(wt_server_config, certs):
    rng = random.Random(SEED + 1)
    stats = Stats()
    with anyio.fail_after(10):
        server = await serve_webtransport(HOST, 0, configuration=wt_server_config,
                                          handler=echo_handler, path="/echo")
    port = server.local_port
    try:
        await wt_serves(port, certs, "start")
        cases = h3_cases(rng)
        for i, (control, request, extra) in enumerate(cases):
            await run_h3_case(port, certs, control, request, extra)
            stats.cases += 1
            if i % 40 == 39:
                await wt_serves(port, certs, f"h3 case {i}")
        await wt_serves(port, certs, "h3 frames")

        # WebTransport: garbage on live sessions (capsules on the CONNECT stream, WT streams
        # naming other sessions, datagrams with bad quarter stream ids)
        cfg = QuicConfiguration(is_client=True, cafile=certs.ca, server_name="localhost",
                                max_datagram_frame_size=65535)
        capsules = [
            frame(0x2843, b"\x00\x00"),  # CLOSE_WEBTRANSPORT_SESSION too short for its code
            frame(0x2843, b"\x00\x00\x00\x01" + b"r" * 2000),  # reason over 1024 bytes
            frame(0x2843, b"\x00\x00\x00\x01\xff\xfe"),  # reason not UTF-8
            frame(0x78AE, b"payload"),  # DRAIN with a body
            frame(0x00, rng.randbytes(100)),  # DATAGRAM capsule
            varint(0x2843) + varint(1 << 40),  # length far beyond the stream
            b"\x80",  # truncated varint
            frame(0x190B4D3D, b"\xff" * 9),  # WT_MAX_DATA with a bad varint
            frame(0x190B4D3F, varint(1 << 60)),  # WT_MAX_STREAMS_BIDI huge
            frame(0x190B4D43, b""),  # WT_DATA_BLOCKED empty
        ] + [rng.randbytes(rng.randint(1, 200)) for _ in range(20)]
        wt_cases = 0
        for garbage in capsules:
            with anyio.fail_after(10):
                async with connect_webtransport(f"https://{HOST}:{port}/echo",
                                                configuration=cfg) as s:
                    proto = s._protocol
                    quic = proto._quic
                    # raw bytes as the body of the CONNECT stream (DATA frame around capsules)
                    quic.send_stream_data(s.session_id, frame(0x00, garbage))
                    # a WT uni stream for a session that does not exist, and one for ours
                    uni = quic.get_next_available_stream_id(is_unidirectional=True)
                    quic.send_stream_data(uni, varint(0x54) + varint(s.session_id + 4) + garbage)
                    uni = quic.get_next_available_stream_id(is_unidirectional=True)
                    quic.send_stream_data(uni, varint(0x54) + varint(s.session_id) + garbage,
                                          end_stream=True)
                    bidi = quic.get_next_available_stream_id()
                    quic.send_stream_data(bidi, varint(0x41) + varint(s.session_id + 8) + garbage,
                                          end_stream=True)
                    # datagrams: a quarter stream id of no session, a truncated varint, empty
                    for dg in (varint((s.session_id + 400) // 4) + garbage, b"\x80", b"",
                               varint(s.session_id // 4)):
                        try:
                            quic.send_datagram_frame(dg)
                        except ValueError:
                            pass
                    proto.transmit()
                    with anyio.move_on_after(0.15):
                        await proto.wait_closed()
            wt_cases += 1
            stats.cases += 1
        await wt_serves(port, certs, "webtransport garbage")
    finally:
        server.close()
    stats.report("HTTP/3 + WebTransport")
    assert wt_cases == len(capsules)
    assert stats.cases >= 120, stats.cases


# ----------------------------------------------------------------------- HTTP/3 error codes

H3_STREAM_CREATION_ERROR = 0x0103
H3_CLOSED_CRITICAL_STREAM = 0x0104
H3_FRAME_UNEXPECTED = 0x0105
H3_SETTINGS_ERROR = 0x0109
H3_MISSING_SETTINGS = 0x010A

_SETTINGS = frame(0x04, varint(0x01) + varint(0) + varint(0x07) + varint(0))

# (name, control-stream bytes (after the type byte), control FIN, request bytes, extra uni
# streams, the connection error RFC 9114 requires)
H3_VIOLATIONS = [
    ("settings-twice", _SETTINGS + _SETTINGS, False, None, [], H3_FRAME_UNEXPECTED),
    ("data-on-control", _SETTINGS + frame(0x00, b"x"), False, None, [], H3_FRAME_UNEXPECTED),
    ("headers-on-control", _SETTINGS + frame(0x01, b"\0\0"), False, None, [],
     H3_FRAME_UNEXPECTED),
    ("control-without-settings", frame(0x07, varint(0)), False, None, [], H3_MISSING_SETTINGS),
    ("control-closed", _SETTINGS, True, None, [], H3_CLOSED_CRITICAL_STREAM),
    ("http2-setting", frame(0x04, varint(0x02) + varint(1)), False, None, [],
     H3_SETTINGS_ERROR),
    ("second-control-stream", _SETTINGS, False, None, [b"\x00" + _SETTINGS],
     H3_STREAM_CREATION_ERROR),
    ("push-stream-from-client", _SETTINGS, False, None, [b"\x01" + varint(0)],
     H3_STREAM_CREATION_ERROR),
    ("data-before-headers", _SETTINGS, False, frame(0x00, b"body"), [], H3_FRAME_UNEXPECTED),
    ("settings-on-request", _SETTINGS, False, frame(0x04, b""), [], H3_FRAME_UNEXPECTED),
    ("push-promise-from-client", _SETTINGS, False, frame(0x05, varint(0) + b"\0\0"), [],
     H3_FRAME_UNEXPECTED),
    ("goaway-on-request", _SETTINGS, False, frame(0x07, varint(0)), [], H3_FRAME_UNEXPECTED),
]


@pytest.mark.parametrize("name,control,fin,req,extra,expected", H3_VIOLATIONS,
                         ids=[v[0] for v in H3_VIOLATIONS])
async def test_h3_violation_closes_with_rfc_error(wt_server_config, certs, name, control, fin,
                                                  req, extra, expected):
    from aiopquic.quic.events import ConnectionTerminated

    with anyio.fail_after(10):
        server = await serve_webtransport(HOST, 0, configuration=wt_server_config,
                                          handler=echo_handler, path="/echo")
    try:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], cafile=certs.ca,
                                server_name="localhost")
        with anyio.fail_after(15):
            async with connect(HOST, server.local_port, configuration=cfg,
                               create_protocol=RecordingProtocol) as protocol:
                quic = protocol._quic
                sid = quic.get_next_available_stream_id(is_unidirectional=True)
                quic.send_stream_data(sid, b"\x00" + control, end_stream=fin)
                for data in extra:
                    quic.send_stream_data(
                        quic.get_next_available_stream_id(is_unidirectional=True), data)
                if req is not None:
                    quic.send_stream_data(quic.get_next_available_stream_id(), req,
                                          end_stream=True)
                protocol.transmit()
                ev = await protocol.wait_event(ConnectionTerminated, timeout=5.0)
                assert ev.error_code == expected, (name, hex(ev.error_code), ev.reason_phrase)
        await wt_serves(server.local_port, certs, name)
    finally:
        server.close()
