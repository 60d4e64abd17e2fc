"""Connects to an echo server COUNT times with aioquic or aiopquic (asyncio API), echoes one
stream each time and then ends the connection one way:

- ``code0``: close with application error code 0;
- ``h3``:    close with 0x100 (H3_NO_ERROR, what aioquic's HTTP/3 client sends);
- ``error``: close with application error code 0x2a, reason "client gave up";
- ``kill``:  keep every connection open, print ``ready`` and wait to be killed (SIGKILL: no
  CONNECTION_CLOSE ever reaches the server).

Prints ``ok N`` after N connections (``ready`` in kill mode).  Used by
tests/test_anyio_semantics.py.

Usage: ``python closing_client.py STACK MODE COUNT PORT CAFILE ALPN``.
"""

import asyncio
import sys

STACK, MODE, COUNT, PORT, CAFILE, ALPN = sys.argv[1:7]

if STACK == "aioquic":
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration
else:
    from aiopquic.asyncio import connect
    from aiopquic.quic.configuration import QuicConfiguration

CODES = {"code0": (0, ""), "h3": (0x100, ""), "error": (0x2A, "client gave up")}


async def one(held: list) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=[ALPN])
    config.load_verify_locations(CAFILE)
    ctx = connect("localhost", int(PORT), configuration=config)
    protocol = await ctx.__aenter__()
    reader, writer = await protocol.create_stream()
    writer.write(b"ping")
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 10)
    assert reply == b"ping", reply
    if MODE == "kill":
        held.append((ctx, protocol))
        return
    code, reason = CODES[MODE]
    protocol.close(error_code=code, reason_phrase=reason)
    await asyncio.wait_for(protocol.wait_closed(), 10)
    try:
        await ctx.__aexit__(None, None, None)
    except Exception:
        pass


async def main() -> None:
    held: list = []
    for _ in range(int(COUNT)):
        await one(held)
    if MODE == "kill":
        print("ready", flush=True)
        await asyncio.Event().wait()
    print(f"ok {COUNT}", flush=True)


asyncio.run(main())
