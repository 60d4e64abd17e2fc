#!/usr/bin/env python3
"""An aioquic HTTP/3 + WebTransport peer for interop tests (a stack nobody here wrote).

    aioquic_h3.py server --cert CERT --key KEY [--port 0]
        HTTP/3 server on aioquic's H3Connection:
          GET /bytes/N       N bytes of a deterministic pattern (seed "aioquic-h3")
          GET /push/N        a server push of /bytes/N (PUSH_PROMISE, then the pushed
                             response), then the response "pushed" (or "no push" when the
                             client granted no push id)
          CONNECT /echo      (extended CONNECT, :protocol webtransport) WebTransport echo:
                             bidi streams echoed on the same stream, uni streams on a new
                             uni stream, datagrams echoed; a bidi stream carrying exactly
                             b"close" makes the server close the session with code 4242 and
                             reason "bye from aioquic".
        Prints "LISTENING <port>" once bound.
    aioquic_h3.py get --port PORT --ca CA --path PATH
        GET PATH; prints "STATUS <code> LENGTH <n> SHA256 <hex>".
    aioquic_h3.py push-get --port PORT --ca CA --path PATH
        GET PATH; prints "PUSH promises=<n> path=<promised :path> status=<pushed :status>
        length=<n> sha256=<hex> ended=<bool> response=<status>:<body>".
    aioquic_h3.py wt --port PORT --ca CA --path PATH [--size N]
        Opens a WebTransport session, sends N bytes on a bidi stream (the server must echo
        them on a bidi stream of its own, which is answered with b"thanks"), a short message
        on a uni stream (echoed on a server uni stream) and 20 datagrams, then asks the
        server to close the session ("close" on a bidi stream) and reads the
        CLOSE_WEBTRANSPORT_SESSION capsule.  Prints
        "WT bidi=<ok> uni=<ok> datagrams=<count> ended=<bool> close=<code>:<reason>".

Every mode gives up after --lifetime seconds.  Standalone: imports only aioquic and the
standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import traceback

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.buffer import Buffer, encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    HeadersReceived,
    PushPromiseReceived,
    WebTransportStreamDataReceived,
)
from aioquic.h3.exceptions import NoAvailablePushIDError
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent

CLOSE_CAPSULE = 0x2843


def pattern(n: int) -> bytes:
    block = hashlib.sha256(b"aioquic-h3").digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def close_capsule(code: int, reason: str) -> bytes:
    value = code.to_bytes(4, "big") + reason.encode()
    return encode_uint_var(CLOSE_CAPSULE) + encode_uint_var(len(value)) + value


def parse_capsules(data: bytes) -> list:
    out = []
    buf = Buffer(data=data)
    while not buf.eof():
        ctype = buf.pull_uint_var()
        length = buf.pull_uint_var()
        out.append((ctype, buf.pull_bytes(length)))
    return out


class ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http = None
        self.sessions = set()
        self.buffers = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.http = H3Connection(self._quic, enable_webtransport=True)
        if self.http is None:
            return
        for h3_event in self.http.handle_event(event):
            self.h3_event(h3_event)
        self.transmit()

    def h3_event(self, event) -> None:
        http = self.http
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            method = headers.get(b":method")
            path = headers.get(b":path", b"")
            if method == b"CONNECT" and headers.get(b":protocol") == b"webtransport":
                if path == b"/echo":
                    self.sessions.add(event.stream_id)
                    http.send_headers(event.stream_id, [(b":status", b"200"),
                                                        (b"sec-webtransport-http3-draft",
                                                         b"draft02")])
                else:
                    http.send_headers(event.stream_id, [(b":status", b"404")],
                                      end_stream=True)
            elif method == b"GET" and path.startswith(b"/push/"):
                size = path[len(b"/push/"):]
                try:
                    push_sid = http.send_push_promise(event.stream_id, [
                        (b":method", b"GET"), (b":scheme", b"https"),
                        (b":authority", headers.get(b":authority", b"localhost")),
                        (b":path", b"/bytes/" + size)])
                except NoAvailablePushIDError:
                    answer = b"no push"
                else:
                    body = pattern(int(size))
                    http.send_headers(push_sid, [(b":status", b"200"), (b"content-length",
                                                                        str(len(body)).encode())])
                    http.send_data(push_sid, body, end_stream=True)
                    answer = b"pushed"
                http.send_headers(event.stream_id, [(b":status", b"200")])
                http.send_data(event.stream_id, answer, end_stream=True)
            elif method == b"GET" and path.startswith(b"/bytes/"):
                body = pattern(int(path[len(b"/bytes/"):]))
                http.send_headers(event.stream_id, [(b":status", b"200"),
                                                    (b"content-length", str(len(body)).encode())])
                http.send_data(event.stream_id, body, end_stream=True)
            else:
                http.send_headers(event.stream_id, [(b":status", b"404")], end_stream=True)
        elif isinstance(event, WebTransportStreamDataReceived):
            buf = self.buffers.setdefault(event.stream_id, bytearray())
            buf += event.data
            if not event.stream_ended:
                return
            data = bytes(self.buffers.pop(event.stream_id))
            if event.stream_id & 2:  # unidirectional: answer on a new uni stream
                sid = http.create_webtransport_stream(event.session_id, is_unidirectional=True)
                self._quic.send_stream_data(sid, data, end_stream=True)
            elif data == b"close":
                self._quic.send_stream_data(event.stream_id, b"", end_stream=True)
                http.send_data(event.session_id, close_capsule(4242, "bye from aioquic"),
                               end_stream=True)
            else:
                self._quic.send_stream_data(event.stream_id, data, end_stream=True)
        elif isinstance(event, DatagramReceived):
            if event.stream_id in self.sessions:
                http.send_datagram(event.stream_id, event.data)


async def run_server(args) -> int:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN,
                                      max_datagram_frame_size=65536)
    configuration.load_cert_chain(args.cert, args.key)
    server = await serve(args.host, args.port, configuration=configuration,
                         create_protocol=ServerProtocol)
    try:
        port = server._transport.get_extra_info("sockname")[1]
        print(f"LISTENING {port}", flush=True)
        await asyncio.Event().wait()
    finally:
        server.close()
    return 0


class ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.queue: asyncio.Queue = asyncio.Queue()

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.http.handle_event(event):
            self.queue.put_nowait(h3_event)


def client_configuration(args) -> QuicConfiguration:
    """The client side of every mode: HTTP/3 with datagrams, the test CA."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                      server_name=args.server_name,
                                      max_datagram_frame_size=65536)
    configuration.load_verify_locations(cafile=args.ca)
    return configuration


def send_get(proto, args) -> int:
    """Send GET args.path on a new request stream; its stream id."""
    sid = proto._quic.get_next_available_stream_id()
    proto.http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                  (b":authority", f"localhost:{args.port}".encode()),
                                  (b":path", args.path.encode())], end_stream=True)
    proto.transmit()
    return sid


async def run_get(args) -> int:
    configuration = client_configuration(args)
    async with connect(args.host, args.port, configuration=configuration,
                       create_protocol=ClientProtocol) as proto:
        sid = send_get(proto, args)
        status, body = b"", bytearray()
        while True:
            ev = await proto.queue.get()
            if isinstance(ev, HeadersReceived) and ev.stream_id == sid:
                status = dict(ev.headers).get(b":status", b"")
            elif isinstance(ev, DataReceived) and ev.stream_id == sid:
                body += ev.data
            else:
                continue
            if ev.stream_ended:
                break
    print(f"STATUS {status.decode()} LENGTH {len(body)} "
          f"SHA256 {hashlib.sha256(body).hexdigest()}", flush=True)
    return 0


async def run_push_get(args) -> int:
    configuration = client_configuration(args)
    async with connect(args.host, args.port, configuration=configuration,
                       create_protocol=ClientProtocol) as proto:
        sid = send_get(proto, args)
        promises, promised_path = 0, b""
        status, body, pushed_status, pushed = b"", bytearray(), b"", bytearray()
        ended = response_done = False
        while not (response_done and (ended or not promises)):
            ev = await proto.queue.get()
            if isinstance(ev, PushPromiseReceived):
                promises += 1
                promised_path = dict(ev.headers).get(b":path", b"")
            elif isinstance(ev, (HeadersReceived, DataReceived)) and ev.push_id is not None:
                if isinstance(ev, HeadersReceived):
                    pushed_status = dict(ev.headers).get(b":status", b"")
                else:
                    pushed += ev.data
                ended = ended or ev.stream_ended
            elif isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_id == sid:
                if isinstance(ev, HeadersReceived):
                    status = dict(ev.headers).get(b":status", b"")
                else:
                    body += ev.data
                response_done = ev.stream_ended
    print(f"PUSH promises={promises} path={promised_path.decode()} "
          f"status={pushed_status.decode()} length={len(pushed)} "
          f"sha256={hashlib.sha256(pushed).hexdigest()} ended={ended} "
          f"response={status.decode()}:{body.decode()}", flush=True)
    return 0


async def run_wt(args) -> int:
    configuration = client_configuration(args)
    async with connect(args.host, args.port, configuration=configuration,
                       create_protocol=ClientProtocol) as proto:
        http, quic = proto.http, proto._quic
        session = quic.get_next_available_stream_id()
        http.send_headers(session, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"),
                                    (b":scheme", b"https"),
                                    (b":authority", f"localhost:{args.port}".encode()),
                                    (b":path", args.path.encode())])
        proto.transmit()
        streams: dict = {}
        datagrams = set()
        capsule_data = bytearray()
        session_ended = False

        async def next_event():
            ev = await proto.queue.get()
            nonlocal session_ended
            if isinstance(ev, WebTransportStreamDataReceived):
                entry = streams.setdefault(ev.stream_id, [bytearray(), False])
                entry[0] += ev.data
                entry[1] = entry[1] or ev.stream_ended
            elif isinstance(ev, DatagramReceived) and ev.stream_id == session:
                datagrams.add(ev.data)
            elif isinstance(ev, DataReceived) and ev.stream_id == session:
                capsule_data.extend(ev.data)
                session_ended = session_ended or ev.stream_ended
            return ev

        while True:
            ev = await next_event()
            if isinstance(ev, HeadersReceived) and ev.stream_id == session:
                status = dict(ev.headers).get(b":status")
                if status != b"200":
                    print(f"WT rejected {status!r}", flush=True)
                    return 1
                break

        payload = pattern(args.size)
        bidi = http.create_webtransport_stream(session)
        quic.send_stream_data(bidi, payload, end_stream=True)
        uni = http.create_webtransport_stream(session, is_unidirectional=True)
        quic.send_stream_data(uni, b"uni from aioquic", end_stream=True)
        for i in range(20):
            http.send_datagram(session, b"dgram-%d" % i)
        proto.transmit()

        # aioquic 1.7 cannot read the answer on a bidirectional stream it opened itself (it
        # keeps no state for it), so the server echoes on a bidi stream it opens.
        def echoed_back():
            for s, (data, ended) in streams.items():
                if s % 4 == 1 and ended and bytes(data) == payload:
                    return s
            return None

        def done() -> bool:
            uni_in = [s for s in streams if s % 4 == 3 and streams[s][1]]
            return echoed_back() is not None and bool(uni_in) and len(datagrams) >= 15

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not done() and loop.time() < deadline:
            try:
                await asyncio.wait_for(next_event(), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
        back = echoed_back()
        bidi_ok = back is not None
        if back is not None:  # answer on the server's stream: the server checks it
            quic.send_stream_data(back, b"thanks", end_stream=True)
        uni_in = [bytes(streams[s][0]) for s in streams if s % 4 == 3 and streams[s][1]]
        uni_ok = uni_in == [b"uni from aioquic"]

        closer = http.create_webtransport_stream(session)
        quic.send_stream_data(closer, b"close", end_stream=True)
        proto.transmit()
        deadline = loop.time() + 15
        while not session_ended and loop.time() < deadline:
            try:
                await asyncio.wait_for(next_event(), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
        close = "none"
        for ctype, value in parse_capsules(bytes(capsule_data)):
            if ctype == CLOSE_CAPSULE:
                close = f"{int.from_bytes(value[:4], 'big')}:{value[4:].decode()}"
        print(f"WT bidi={bidi_ok} uni={uni_ok} datagrams={len(datagrams)} "
              f"ended={session_ended} close={close}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["server", "get", "push-get", "wt"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--path", default="/")
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args(argv)
    run = {"server": run_server, "get": run_get, "push-get": run_push_get,
           "wt": run_wt}[args.mode]
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.lifetime))
    except asyncio.TimeoutError:
        if args.mode == "server":
            return 0
        print(f"TIMEOUT after {args.lifetime:.0f}s", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
