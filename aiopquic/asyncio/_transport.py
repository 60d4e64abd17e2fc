"""``server._transport`` and ``protocol._transport``: the asyncio transport aioquic programs
reach for (mostly ``get_extra_info("sockname")`` to learn the bound port).

aiopquic's UDP socket belongs to the native engine's thread, so this transport only answers
questions about it; sending raw datagrams through it is not possible.
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
from typing import Any, Optional

from aiopquic.asyncio import _loop
from aiopquic.quic.connection import QuicEndpoint

__all__ = ["EndpointTransport", "remember_host", "transport_for"]

_HOSTS: weakref.WeakKeyDictionary[QuicEndpoint, str] = weakref.WeakKeyDictionary()


def remember_host(endpoint: QuicEndpoint, host: str) -> None:
    """Record the numeric address ``endpoint`` was bound to (its sockname's host)."""
    _HOSTS[endpoint] = host


class EndpointTransport(asyncio.DatagramTransport):
    """A read-only view of one endpoint's UDP socket.

    ``get_extra_info("sockname")`` gives the bound address (a 4-tuple for IPv6, as asyncio's
    datagram transports do); ``"peername"`` the peer of the connection it was obtained from
    (None on a server).  :meth:`close` closes the endpoint (all its connections), except
    the transport of a client's protocol while its connection is open: as with aioquic,
    closing that socket does not end the connection (aioquic's interop.py closes it and
    attaches the protocol to a new socket to test NAT rebinding, see
    :meth:`QuicConnectionProtocol.connection_made`); the endpoint then closes with the
    connection.  :meth:`sendto` raises :class:`NotImplementedError`: the socket belongs to
    the network thread."""

    def __init__(self, endpoint: QuicEndpoint, peer: Optional[tuple[str, int]] = None,
                 connection: Any = None) -> None:
        super().__init__()
        self._aq_endpoint = endpoint
        self._aq_peer = peer
        self._aq_connection = connection
        self._aq_released = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            host = _HOSTS.get(self._aq_endpoint, "0.0.0.0")
            port = self._aq_endpoint.local_port
            if ipaddress.ip_address(host.split("%", 1)[0]).version == 6:
                return (host, port, 0, 0)
            return (host, port)
        if name == "peername":
            return self._aq_peer if self._aq_peer is not None else default
        return default

    def is_closing(self) -> bool:
        return self._aq_released or bool(self._aq_endpoint._closed)

    @property
    def counters(self) -> dict[str, int]:
        """aiopquic 0.6.1's ``TransportContext.counters`` for this endpoint
        (:attr:`QuicEndpoint.counters`; empty once it is closed)."""
        return {} if self._aq_endpoint._closed else self._aq_endpoint.counters

    def close(self) -> None:
        conn = self._aq_connection
        if conn is not None and not conn.closed:
            self._aq_released = True  # the connection lives on; connect() closes the endpoint
            return
        _loop.detach(self._aq_endpoint)

    def abort(self) -> None:
        self.close()

    def sendto(self, data: Any, addr: Any = None) -> None:
        raise NotImplementedError(
            "the UDP socket belongs to aiopquic's network thread: send through the "
            "QuicConnection (send_stream_data / send_datagram_frame)")


def transport_for(endpoint: QuicEndpoint, peer: Optional[tuple[str, int]] = None,
                  connection: Any = None) -> EndpointTransport:
    """A transport view of ``endpoint`` (``connection``: the client connection whose
    protocol holds it; see :meth:`EndpointTransport.close`)."""
    return EndpointTransport(endpoint, peer, connection)
