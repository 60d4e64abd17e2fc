"""A small application written for aioquic's asyncio API.

tests/test_dropin.py runs this file as it is (under aioquic) and with ``aioquic`` changed to
``aiopquic`` in its import lines only (under aiopquic), and checks both runs print the same
transcript.  It uses the parts of the API an aioquic application typically touches:

- ``serve()`` with ``create_protocol`` and ``connect()`` with ``create_protocol`` and
  ``stream_handler``;
- ``quic_event_received()`` overrides (HandshakeCompleted, StreamDataReceived,
  ConnectionTerminated), falling back to ``super()`` for reader/writer streams;
- ``_quic.get_next_available_stream_id()`` + ``_quic.send_stream_data()`` + ``transmit()``;
- ``create_stream()`` with ``write`` / ``drain`` / ``write_eof`` / ``read``;
- a server-initiated stream delivered to the client's ``stream_handler``;
- ``ping()``, ``close(error_code, reason_phrase)``, ``wait_closed()``.

Usage: ``python aioquic_app.py --cert CERT --key KEY --ca CA --port PORT``.
"""

import argparse
import asyncio
import hashlib
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamDataReceived

ALPN = "dropin"
TIMEOUT = 20.0

SERVER_CLOSES: "asyncio.Queue[tuple]" = None  # type: ignore[assignment]
PUSHED: "asyncio.Queue[bytes]" = None  # type: ignore[assignment]
TASKS = set()


class EchoServerProtocol(QuicConnectionProtocol):
    """Event-level server: answers every request stream when its FIN arrives (upper-cased
    echo, or ``sha256:<blob>`` -> hex digest), and opens one unidirectional stream to the
    client after the first answer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._requests = {}
        self._pushed = False

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            buffer = self._requests.setdefault(event.stream_id, bytearray())
            buffer += event.data
            if event.end_stream:
                request = bytes(self._requests.pop(event.stream_id))
                if request.startswith(b"sha256:"):
                    reply = hashlib.sha256(request[7:]).hexdigest().encode()
                else:
                    reply = request.upper()
                self._quic.send_stream_data(event.stream_id, reply, end_stream=True)
                if not self._pushed:
                    self._pushed = True
                    push_id = self._quic.get_next_available_stream_id(is_unidirectional=True)
                    self._quic.send_stream_data(push_id, b"server push", end_stream=True)
                self.transmit()
        elif isinstance(event, ConnectionTerminated):
            SERVER_CLOSES.put_nowait((event.error_code, event.reason_phrase))


class ClientProtocol(QuicConnectionProtocol):
    """Event-level requests on streams it opens itself; everything else goes to super()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpn = None
        self._responses = {}

    async def request(self, data):
        stream_id = self._quic.get_next_available_stream_id()
        waiter = asyncio.get_running_loop().create_future()
        self._responses[stream_id] = (bytearray(), waiter)
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(waiter, TIMEOUT)

    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            self.alpn = event.alpn_protocol
        if isinstance(event, StreamDataReceived) and event.stream_id in self._responses:
            buffer, waiter = self._responses[event.stream_id]
            buffer += event.data
            if event.end_stream:
                del self._responses[event.stream_id]
                waiter.set_result(bytes(buffer))
            return
        super().quic_event_received(event)


def on_server_stream(reader, writer):
    async def read():
        PUSHED.put_nowait(await reader.read())

    task = asyncio.ensure_future(read())
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)


async def main(args):
    global SERVER_CLOSES, PUSHED
    SERVER_CLOSES = asyncio.Queue()
    PUSHED = asyncio.Queue()

    server_config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    server_config.load_cert_chain(args.cert, args.key)
    server = await serve(args.host, args.port, configuration=server_config,
                         create_protocol=EchoServerProtocol)
    try:
        client_config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
        client_config.load_verify_locations(args.ca)
        async with connect(args.host, args.port, configuration=client_config,
                           create_protocol=ClientProtocol,
                           stream_handler=on_server_stream) as client:
            print("alpn:", client.alpn)
            print("event request:", await client.request(b"hello via events"))

            blob = bytes(range(256)) * 4096  # 1 MiB
            reader, writer = await client.create_stream()
            writer.write(b"sha256:")
            for offset in range(0, len(blob), 65536):
                writer.write(blob[offset:offset + 65536])
                await writer.drain()
            writer.write_eof()
            digest = await asyncio.wait_for(reader.read(), TIMEOUT)
            print("stream request digest ok:",
                  digest == hashlib.sha256(blob).hexdigest().encode())

            print("pushed:", await asyncio.wait_for(PUSHED.get(), TIMEOUT))
            await asyncio.wait_for(client.ping(), TIMEOUT)
            print("ping: ok")
            client.close(error_code=0x10, reason_phrase="done")
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        code, reason = await asyncio.wait_for(SERVER_CLOSES.get(), TIMEOUT)
        print(f"server saw close: code={code:#x} reason={reason!r}")
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
