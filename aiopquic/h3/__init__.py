"""HTTP/3 and WebTransport framing, sans-IO (aioquic's ``aioquic.h3`` API).

- :class:`aiopquic.h3.connection.H3Connection`: the HTTP/3 connection.
- :mod:`aiopquic.h3.events`: the events it returns.
- :class:`aiopquic.h3.webtransport.WebTransportConnection`: WebTransport sessions and their
  streams (sans-IO, over H3Connection); the asyncio and 0.6.1-style APIs adapt it.
- :mod:`aiopquic.h3.capsule`: WebTransport session capsules (close, drain).
"""
