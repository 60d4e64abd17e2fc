"""Run inside a private network namespace: upload while the path gets smaller, then report.

``python path_change.py HOST MTU_AFTER`` serves on HOST (127.0.0.1 or ::1), connects, uploads
over one stream; once the path's packet size has grown past the new MTU it sets ``lo``'s MTU
to MTU_AFTER (the kernel then refuses larger packets with EMSGSIZE: DF is set), uploads as
much again, and prints one JSON line: the server's byte count and CRC check, and the client's
stats before and after.  Exits 0 only if every byte arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zlib

from netns_common import self_signed_files

from aiopquic.asyncio import connect, serve
from aiopquic.quic.configuration import QuicConfiguration

CHUNK = 64 * 1024
PHASE = 24 * 1024 * 1024  # bytes before and after the change


async def main(host: str, mtu_after: int) -> int:
    cert, key = self_signed_files()
    sconf = QuicConfiguration(is_client=False, alpn_protocols=["t"], max_datagram_size=16384)
    sconf.load_cert_chain(cert, key)
    got = {"bytes": 0, "crc": 0}
    done = asyncio.Event()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def run() -> None:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                got["bytes"] += len(data)
                got["crc"] = zlib.crc32(data, got["crc"])
            writer.write(b"ok")
            writer.write_eof()
            done.set()

        asyncio.get_running_loop().create_task(run())

    server = await serve(host, 0, configuration=sconf, stream_handler=on_stream)
    cconf = QuicConfiguration(alpn_protocols=["t"], cafile=cert, server_name="localhost",
                              max_datagram_size=16384)
    block = os.urandom(CHUNK)
    crc, sent = 0, 0
    report: dict = {}
    try:
        async with connect(host, server.local_port, configuration=cconf) as client:
            reader, writer = await client.create_stream()

            async def send(n: int) -> None:
                nonlocal crc, sent
                for _ in range(n // CHUNK):
                    writer.write(block)
                    crc = zlib.crc32(block, crc)
                    sent += CHUNK
                    await writer.drain()

            await asyncio.wait_for(send(PHASE), 60)
            before = await client.get_stats()
            report["before"] = before.__dict__
            subprocess.run(["ip", "link", "set", "lo", "mtu", str(mtu_after)], check=True)
            await asyncio.wait_for(send(PHASE), 60)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), 60)
            after = await client.get_stats()
            report["after"] = after.__dict__
            await asyncio.wait_for(done.wait(), 10)
    finally:
        server.close()
    report.update(sent=sent, received=got["bytes"], crc_ok=got["crc"] == crc,
                  answer=answer.decode(errors="replace"))
    print(json.dumps(report), flush=True)
    return 0 if answer == b"ok" and got["bytes"] == sent and got["crc"] == crc else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
