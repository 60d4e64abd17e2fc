"""asyncio API: :func:`connect`, :func:`serve` and :class:`QuicConnectionProtocol`
(aioquic's names and semantics)."""

from aiopquic.asyncio.client import connect
from aiopquic.asyncio.dispatch import DualStackServer, serve_dispatch
from aiopquic.asyncio.endpoint import ClientEndpoint
from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.asyncio.server import QuicServer, serve

__all__ = ["ClientEndpoint", "connect", "serve", "serve_dispatch", "DualStackServer",
           "QuicConnectionProtocol", "QuicServer", "QuicStreamHandler"]
