"""QUIC layer of aiopquic, shaped like ``aioquic.quic``.

- :mod:`aiopquic.quic.configuration`: :class:`QuicConfiguration`, the settings of one endpoint
  (ALPN, certificates, verification, flow control limits, timeouts, datagrams, congestion control).
- :mod:`aiopquic.quic.events`: the events a connection reports (``HandshakeCompleted``,
  ``StreamDataReceived``, ``ConnectionTerminated``, ...), with aioquic's names and fields.
- :mod:`aiopquic.quic.connection`: :class:`QuicConnection`, the object at ``protocol._quic``.
"""
