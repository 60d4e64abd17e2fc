"""aiopquic: fast QUIC for Python's asyncio.

Every packet is handled in native code (ngtcp2 with GnuTLS, through a small C shim) on a
network thread of its own; Python sees only stream bytes, datagrams and events.  The API
follows aioquic's names and semantics:

- :mod:`aiopquic.quic.configuration` -- :class:`~aiopquic.quic.configuration.QuicConfiguration`
- :mod:`aiopquic.quic.events` -- the connection events (``StreamDataReceived`` and friends)
- :mod:`aiopquic.asyncio` -- ``connect()``, ``serve()`` and ``QuicConnectionProtocol``

``python -m aiopquic.versions`` prints the versions of aiopquic and of the native libraries
actually loaded.
"""

__all__ = ["__version__"]


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8 has no importlib.metadata
        return "0.7.0"
    try:
        return version("aiopquic")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.7.0"


__version__: str = _version()
