#!/usr/bin/env python3
"""An aioquic peer for the session resumption / 0-RTT interop tests.

    aioquic_resume.py server --cert CERT --key KEY [--alpn aqtest]
        Echo server (each stream: read to FIN, write it back, FIN) that stores the session
        tickets it issues (session_ticket_handler) and hands them back
        (session_ticket_fetcher), so clients can resume with 0-RTT.  Prints
        "LISTENING <port>" once bound, then one JSON line per completed handshake:
        {"resumed": bool, "early": bool}.
    aioquic_resume.py client --port PORT --ca CA [--alpn aqtest]
        Connects once and keeps the ticket, then connects again with it, writes a message
        on a bidi stream (+ FIN) before the handshake completes (0-RTT), reads the echo and
        prints one JSON line: {"resumed": bool, "early": bool, "echo_ok": bool}.

Both modes give up after --lifetime seconds so an orphaned peer never lingers.
Standalone on purpose: imports only aioquic and the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted

MESSAGE = b"early bytes from aioquic " * 40
_TASKS: set = set()


class Recorder(QuicConnectionProtocol):
    """Notes the HandshakeCompleted event (and prints it on a server)."""

    report = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handshake = None

    def quic_event_received(self, event) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake = event
            if self.report:
                print(json.dumps({"resumed": event.session_resumed,
                                  "early": event.early_data_accepted}), flush=True)
        super().quic_event_received(event)


class ServerRecorder(Recorder):
    report = True


def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def echo() -> None:
        data = await reader.read()
        writer.write(data)
        writer.write_eof()

    task = asyncio.ensure_future(echo())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def run_server(args) -> int:
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[args.alpn])
    configuration.load_cert_chain(args.cert, args.key)
    tickets: dict = {}
    server = await serve(args.host, args.port, configuration=configuration,
                         create_protocol=ServerRecorder, stream_handler=echo_handler,
                         session_ticket_handler=lambda t: tickets.__setitem__(t.ticket, t),
                         session_ticket_fetcher=tickets.pop)
    try:
        port = server._transport.get_extra_info("sockname")[1]
        print(f"LISTENING {port}", flush=True)
        await asyncio.Event().wait()  # until killed (or --lifetime)
    finally:
        server.close()
    return 0


async def run_client(args) -> int:
    def config() -> QuicConfiguration:
        c = QuicConfiguration(is_client=True, alpn_protocols=[args.alpn],
                              server_name=args.server_name)
        c.load_verify_locations(args.ca)
        return c

    tickets: list = []
    async with connect(args.host, args.port, configuration=config(),
                       session_ticket_handler=tickets.append) as protocol:
        await protocol.ping()
        for _ in range(200):
            if tickets:
                break
            await asyncio.sleep(0.01)
    if not tickets:
        print(json.dumps({"error": "no session ticket received"}), flush=True)
        return 1
    configuration = config()
    configuration.session_ticket = tickets[-1]
    async with connect(args.host, args.port, configuration=configuration,
                       create_protocol=Recorder, wait_connected=False) as protocol:
        reader, writer = await protocol.create_stream()
        writer.write(MESSAGE)
        writer.write_eof()
        echo = await asyncio.wait_for(reader.read(), 10)
        # (not wait_connected(): aioquic 1.7 only marks a protocol connected when a waiter
        # existed at the handshake, so a later wait would never end)
        for _ in range(1000):
            if protocol.handshake is not None:
                break
            await asyncio.sleep(0.01)
        hs = protocol.handshake
        print(json.dumps({"resumed": bool(hs and hs.session_resumed),
                          "early": bool(hs and hs.early_data_accepted),
                          "echo_ok": echo == MESSAGE,
                          "max_early_data": tickets[-1].max_early_data_size}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--alpn", default="aqtest")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    run = run_server if args.mode == "server" else run_client
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.lifetime))
    except asyncio.TimeoutError:
        return 0 if args.mode == "server" else 2
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
