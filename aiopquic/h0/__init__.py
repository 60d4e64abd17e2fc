"""HTTP/0.9 over QUIC (ALPN ``hq-interop``), the protocol of the QUIC interop runner:
:class:`aiopquic.h0.connection.H0Connection`."""
