"""QUIC for anyio (asyncio and trio backends), in the structured-concurrency style.

.. code-block:: python

    async with aiopquic.anyio.connect("127.0.0.1", port, configuration=config) as conn:
        stream = await conn.open_stream()
        await stream.send(b"ping")
        await stream.send_eof()
        reply = await stream.receive()

Streams are :class:`anyio.abc.ByteStream` objects; :func:`serve` runs a handler per
connection in a task group (a failing handler closes only its own connection), and
:func:`create_listener` gives the same server as an :class:`anyio.abc.Listener`.
"""

from aiopquic.anyio._connection import (
    ACCEPT_BACKLOG,
    DATAGRAM_BACKLOG,
    H3_NO_ERROR,
    Connection,
    ConnectionClosedError,
    QuicAttribute,
    QuicStream,
    StreamResetError,
    StreamStateError,
    StreamStoppedError,
)
from aiopquic.anyio.client import connect
from aiopquic.anyio.endpoint import ClientEndpoint
from aiopquic.anyio.server import (
    HANDLER_ERROR_CODE,
    ConnectionHandler,
    Server,
    create_listener,
    serve,
)

__all__ = [
    "ACCEPT_BACKLOG",
    "ClientEndpoint",
    "DATAGRAM_BACKLOG",
    "H3_NO_ERROR",
    "HANDLER_ERROR_CODE",
    "Connection",
    "ConnectionClosedError",
    "ConnectionHandler",
    "QuicAttribute",
    "QuicStream",
    "Server",
    "StreamResetError",
    "StreamStateError",
    "StreamStoppedError",
    "connect",
    "create_listener",
    "serve",
]
