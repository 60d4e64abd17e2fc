"""Raw QUIC and HTTP/3 + WebTransport on one UDP port: :func:`serve_dispatch`
(aiopquic 0.6.1's API).

One endpoint advertises the union of the raw ALPN list and ``h3``; each connection is
handed, once its handshake has chosen the ALPN, either to the raw protocol factory or to the
WebTransport stack of :mod:`aiopquic.asyncio.webtransport`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional

from aiopquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aiopquic.asyncio.server import QuicServer, serve
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection

__all__ = ["DualStackServer", "serve_dispatch"]

_H3 = "h3"
_H3_INTERNAL_ERROR = 0x102
_logger = logging.getLogger("aiopquic.dispatch")
_DEFAULT_DATAGRAM_FRAME = 65536


class DualStackServer:
    """What :func:`serve_dispatch` returns: one listening endpoint serving both stacks."""

    def __init__(self, server: QuicServer) -> None:
        self._server = server

    @property
    def local_port(self) -> int:
        """The UDP port both stacks share (useful with port 0)."""
        return self._server.local_port

    @property
    def _transport(self) -> Any:
        """The shared endpoint's diagnostics (see ``QuicServer._transport``)."""
        return self._server._transport

    @property
    def protocols(self) -> list[QuicConnectionProtocol]:
        """Protocols of the open connections, raw and HTTP/3 alike."""
        return self._server.protocols

    def close(self) -> None:
        """Stop listening and close every connection of both stacks (idempotent); see
        :meth:`QuicServer.close`."""
        self._server.close()

    async def aclose(self) -> None:
        """:meth:`close`, as a coroutine (0.6.1's ``WebTransportServer.aclose`` shape)."""
        self.close()


def _wt_factory(wt_path: str, wt_handler: Callable[..., Any],
                wt_session_factory: Optional[Callable[..., Any]],
                wt_supported_protocols: Optional[list[str]]
                ) -> Callable[..., QuicConnectionProtocol]:
    """The per-connection factory of the WebTransport stack.

    Uses ``aiopquic.asyncio.webtransport.dispatch_protocol_factory(handler=, path=,
    session_factory=, supported_protocols=)`` when that module provides it (the 0.6.1-shaped
    WebTransport server), else :class:`WebTransportProtocol` with ``handler`` and ``path``;
    without that hook, ``session_factory`` / ``supported_protocols`` cannot be honoured, so
    each HTTP/3 connection is closed at once with H3_INTERNAL_ERROR and a reason saying so
    (raw QUIC is unaffected; a warning is logged when the server starts)."""
    from aiopquic.asyncio import webtransport

    hook = getattr(webtransport, "dispatch_protocol_factory", None)
    if hook is not None:
        factory: Callable[..., QuicConnectionProtocol] = hook(
            handler=wt_handler, path=wt_path, session_factory=wt_session_factory,
            supported_protocols=wt_supported_protocols)
        return factory
    if wt_session_factory is not None or wt_supported_protocols:
        # Raw QUIC still works on this server; the h3 connections are refused (see make()).
        why = ("serve_dispatch: wt_session_factory / wt_supported_protocols need the "
               "0.6.1-style WebTransport server (aiopquic.asyncio.webtransport."
               "dispatch_protocol_factory), which this build lacks")
        _logger.warning("%s: HTTP/3 connections will be refused", why)

        def refuse(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
                   ) -> QuicConnectionProtocol:
            protocol = QuicConnectionProtocol(quic, stream_handler)
            quic.close(_H3_INTERNAL_ERROR, reason_phrase=why[:200])
            return protocol

        return refuse

    def make(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
             ) -> QuicConnectionProtocol:
        return webtransport.WebTransportProtocol(quic, stream_handler, handler=wt_handler,
                                                 path=wt_path)

    return make


async def serve_dispatch(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    create_protocol: Optional[Callable[..., QuicConnectionProtocol]] = None,
    wt_path: str,
    wt_handler: Callable[..., Any],
    wt_session_factory: Optional[Callable[..., Any]] = None,
    wt_supported_protocols: Optional[list[str]] = None,
) -> DualStackServer:
    """Serve raw QUIC and HTTP/3 + WebTransport on one UDP port, routed by ALPN.

    ``configuration.alpn_protocols`` is the raw ALPN list (e.g. ``["moqt-16"]``); ``h3`` is
    added to what the server offers (the object passed in is not modified), and so are QUIC
    datagrams when ``max_datagram_frame_size`` is unset.  A connection that negotiates
    ``h3`` runs the WebTransport stack: ``wt_handler(session)`` for each session at
    ``wt_path`` (``wt_session_factory`` and ``wt_supported_protocols`` as in 0.6.1's
    ``serve_webtransport``); any other ALPN gets ``create_protocol(quic,
    stream_handler=None)`` (default :class:`QuicConnectionProtocol`), as :func:`serve`.

    Unlike 0.6.1, ``host`` is bound as given (use ``"::"`` or ``"0.0.0.0"`` for every
    interface).  Raises :class:`ValueError` when ``wt_path`` does not start with ``/``, the
    raw list already holds ``h3`` or is empty, and what :func:`serve` raises (no
    certificate, a port outside 0..65535, an address that cannot be bound)."""
    if not isinstance(wt_path, str) or not wt_path.startswith("/"):
        raise ValueError(f"serve_dispatch: wt_path must start with '/', got {wt_path!r}")
    raw = list(configuration.alpn_protocols or [])
    if not raw:
        raise ValueError("serve_dispatch: configuration.alpn_protocols must list the raw "
                         "QUIC ALPN protocols ('h3' is added here)")
    if _H3 in raw:
        raise ValueError("serve_dispatch: configuration.alpn_protocols is the raw QUIC list; "
                         "'h3' is added here and must not be in it")
    cfg = dataclasses.replace(
        configuration, alpn_protocols=raw + [_H3],
        max_datagram_frame_size=configuration.max_datagram_frame_size
        or _DEFAULT_DATAGRAM_FRAME)
    raw_factory = create_protocol or QuicConnectionProtocol
    wt_factory = _wt_factory(wt_path, wt_handler, wt_session_factory, wt_supported_protocols)

    def route(quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None
              ) -> QuicConnectionProtocol:
        if quic.alpn_protocol == _H3:
            return wt_factory(quic, stream_handler)
        return raw_factory(quic, stream_handler=stream_handler)

    server = await serve(host, port, configuration=cfg, create_protocol=route)
    return DualStackServer(server)
