"""QUIC for anyio (asyncio and trio backends), in the structured-concurrency style.

.. code-block:: python

    async with aiopquic.anyio.connect("127.0.0.1", port, configuration=config) as conn:
        stream = await conn.open_stream()
        await stream.send(b"ping")
        await stream.send_eof()
        reply = await stream.receive()

Streams are :class:`anyio.abc.ByteStream` objects; :func:`serve` runs a handler per
connection in a task group.
"""

from aiopquic.anyio._connection import (
    ACCEPT_BACKLOG,
    DATAGRAM_BACKLOG,
    Connection,
    ConnectionClosedError,
    QuicStream,
    StreamResetError,
    StreamStateError,
    StreamStoppedError,
)
from aiopquic.anyio.client import connect
from aiopquic.anyio.server import ConnectionHandler, Server, serve

__all__ = [
    "ACCEPT_BACKLOG",
    "DATAGRAM_BACKLOG",
    "Connection",
    "ConnectionClosedError",
    "ConnectionHandler",
    "QuicStream",
    "Server",
    "StreamResetError",
    "StreamStateError",
    "StreamStoppedError",
    "connect",
    "serve",
]
