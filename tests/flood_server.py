"""Server for tests/test_floods.py, run as a subprocess so its RSS can be measured.

Usage: python flood_server.py CERT KEY.  Prints "PORT <n>" once listening; echoes every bidi
stream; counts received datagrams and reports the count on stderr ("DATAGRAMS <n>") at exit.
Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quic_helpers import echo_stream_handler  # noqa: E402

from aiopquic.asyncio import QuicConnectionProtocol, serve  # noqa: E402
from aiopquic.quic.configuration import QuicConfiguration  # noqa: E402
from aiopquic.quic.events import DatagramFrameReceived  # noqa: E402

DATAGRAMS = 0


class CountingProtocol(QuicConnectionProtocol):
    def quic_event_received(self, event):  # type: ignore[no-untyped-def]
        global DATAGRAMS
        if isinstance(event, DatagramFrameReceived):
            DATAGRAMS += 1
        super().quic_event_received(event)


async def main() -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["test"],
                            max_datagram_frame_size=65535,
                            handshake_timeout=float(os.environ.get("FLOOD_HANDSHAKE_TIMEOUT",
                                                                   "10")))
    cfg.load_cert_chain(sys.argv[1], sys.argv[2])
    server = await serve("127.0.0.1", 0, configuration=cfg, stream_handler=echo_stream_handler,
                         create_protocol=CountingProtocol)
    print("PORT", server.local_port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print("DATAGRAMS", DATAGRAMS, file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
