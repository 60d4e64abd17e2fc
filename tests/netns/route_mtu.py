"""Run inside a private network namespace whose loopback has a small MTU: both endpoints
allow 16 KiB packets, yet neither may probe past what the local route carries.

``python route_mtu.py HOST`` serves on HOST, uploads 4 MiB over one stream and prints one
JSON line with the client's and the server's stats (``emsgsize``: packets the kernel refused
as too large; ``max_datagram_size``: the packet size the path settled on).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from netns_common import counting_sink, self_signed_files

from aiopquic.asyncio import QuicConnectionProtocol, connect, serve
from aiopquic.quic.configuration import QuicConfiguration

CHUNK = 64 * 1024
TOTAL = 4 * 1024 * 1024


async def main(host: str) -> int:
    cert, key = self_signed_files()
    sconf = QuicConfiguration(is_client=False, alpn_protocols=["t"], max_datagram_size=16384)
    sconf.load_cert_chain(cert, key)
    servers: list[QuicConnectionProtocol] = []

    def make(*args: object, **kwargs: object) -> QuicConnectionProtocol:
        proto = QuicConnectionProtocol(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(proto)
        return proto

    server = await serve(host, 0, configuration=sconf, stream_handler=counting_sink,
                         create_protocol=make)
    cconf = QuicConfiguration(alpn_protocols=["t"], cafile=cert, server_name="localhost",
                              max_datagram_size=16384)
    try:
        async with connect(host, server.local_port, configuration=cconf) as client:
            reader, writer = await client.create_stream()
            block = os.urandom(CHUNK)
            for _ in range(TOTAL // CHUNK):
                writer.write(block)
                await writer.drain()
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 60)
            report = {"received": int(answer), "client": (await client.get_stats()).__dict__,
                      "server": (await servers[0].get_stats()).__dict__}
    finally:
        server.close()
    print(json.dumps(report))
    return 0 if report["received"] == TOTAL else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
