"""Thin binding layer over the compiled shim (``aiopquic._native._aiopquic``).

Nothing above this package touches cffi directly.  :class:`Endpoint` owns one native endpoint
(socket + network thread) and turns its event ring into :class:`NativeEvent` tuples.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from aiopquic._native._aiopquic import ffi, lib

__all__ = ["ffi", "lib", "native_versions", "make_self_signed", "Endpoint", "NativeEvent",
           "NativeError"]

_ERRLEN = 512

EV_HANDSHAKE_DONE = lib.AQ_EV_HANDSHAKE_DONE
EV_ACCEPTED = lib.AQ_EV_ACCEPTED
EV_STREAM_DATA = lib.AQ_EV_STREAM_DATA
EV_STREAM_RESET = lib.AQ_EV_STREAM_RESET
EV_STOP_SENDING = lib.AQ_EV_STOP_SENDING
EV_DATAGRAM = lib.AQ_EV_DATAGRAM
EV_WRITABLE = lib.AQ_EV_WRITABLE
EV_CLOSED = lib.AQ_EV_CLOSED
EV_KEYLOG = lib.AQ_EV_KEYLOG
EV_PING_ACK = lib.AQ_EV_PING_ACK
EV_STREAM_CLOSED = lib.AQ_EV_STREAM_CLOSED
EV_CMD_SPACE = lib.AQ_EV_CMD_SPACE
EV_STATS = lib.AQ_EV_STATS

FLAG_FIN = lib.AQ_FLAG_FIN
CLOSE_APP = lib.AQ_CLOSE_APP
CLOSE_LOCAL = lib.AQ_CLOSE_LOCAL
CLOSE_IDLE = lib.AQ_CLOSE_IDLE
CLOSE_HANDSHAKE_TIMEOUT = lib.AQ_CLOSE_HANDSHAKE_TIMEOUT
CLOSE_REFUSED = lib.AQ_CLOSE_REFUSED
CLOSE_TLS = lib.AQ_CLOSE_TLS
CLOSE_RESET = lib.AQ_CLOSE_RESET


class NativeError(OSError):
    """The native layer refused an operation (bind failure, bad credentials, ...)."""


class NativeEvent(NamedTuple):
    """One event popped from the network thread's ring."""

    type: int
    flags: int
    conn: int
    stream_id: int
    code: int
    code2: int
    data: bytes


def native_versions() -> dict[str, str]:
    """Versions of the ngtcp2 and GnuTLS libraries actually loaded in this process."""
    return {
        "ngtcp2": ffi.string(lib.aq_ngtcp2_version()).decode(),
        "gnutls": ffi.string(lib.aq_gnutls_version()).decode(),
    }


def make_self_signed(names: str = "localhost,127.0.0.1,::1", days: int = 10) -> tuple[bytes, bytes]:
    """Create a self-signed ECDSA P-256 certificate (PEM certificate, PEM PKCS#8 key).

    ``names`` is a comma-separated list of DNS names and IP addresses (the first is also the
    common name).  ``days`` < 14 keeps it acceptable to browsers' ``serverCertificateHashes``.
    """
    cert = ffi.new("char[]", 8192)
    key = ffi.new("char[]", 8192)
    cert_len = ffi.new("size_t *", 8192)
    key_len = ffi.new("size_t *", 8192)
    err = _errbuf()
    if lib.aq_selfsigned(names.encode(), days, cert, cert_len, key, key_len, err, _ERRLEN) != 0:
        raise NativeError(_errtext(err))
    return ffi.unpack(cert, cert_len[0]), ffi.unpack(key, key_len[0])


def _errbuf() -> Any:
    return ffi.new("char[]", _ERRLEN)


def _errtext(buf: Any) -> str:
    return str(ffi.string(buf).decode("utf-8", "replace"))


class Endpoint:
    """One native endpoint: a bound UDP socket and its network thread.

    ``config`` is a dict of :c:type:`aq_config` fields.  Raises :class:`NativeError` naming
    the cause when the socket cannot be bound or the TLS material is rejected.
    """

    def __init__(self, config: dict[str, Any], host: str, port: int) -> None:
        self._keep: list[Any] = []  # cffi buffers referenced by the config struct
        cfg = ffi.new("aq_config *")
        for key, value in config.items():
            if isinstance(value, (bytes, str)):
                raw = value.encode() if isinstance(value, str) else value
                buf = ffi.new("char[]", raw + b"\0")
                self._keep.append(buf)
                setattr(cfg, key, ffi.cast(ffi.typeof(getattr(cfg, key)), buf))
                if key + "_len" in _LEN_FIELDS:
                    setattr(cfg, key + "_len", len(raw))
            elif value is None:
                continue
            else:
                setattr(cfg, key, value)
        err = _errbuf()
        ptr = lib.aq_endpoint_new(cfg, host.encode(), port, err, _ERRLEN)
        self._keep.clear()
        if ptr == ffi.NULL:
            raise NativeError(_errtext(err))
        self._ptr: Any = ptr
        self._events = ffi.new("aq_event[]", 256)
        self.started = False

    @property
    def ptr(self) -> Any:
        """The native ``aq_endpoint *`` (valid until :meth:`close`)."""
        return self._ptr

    @property
    def fileno(self) -> int:
        """The eventfd that becomes readable when events are waiting."""
        return int(lib.aq_endpoint_event_fd(self._ptr))

    @property
    def local_port(self) -> int:
        """The UDP port the socket is bound to."""
        return int(lib.aq_endpoint_local_port(self._ptr))

    def connect(self, host: str, port: int, server_name: Optional[str]) -> int:
        """Create the client connection (before :meth:`start`); returns its handle."""
        err = _errbuf()
        handle = lib.aq_connect(self._ptr, host.encode(), port,
                                (server_name or "").encode(), err, _ERRLEN)
        if handle == 0:
            raise NativeError(_errtext(err))
        return int(handle)

    def start(self) -> None:
        """Start the network thread."""
        err = _errbuf()
        if lib.aq_endpoint_start(self._ptr, err, _ERRLEN) != 0:
            raise NativeError(_errtext(err))
        self.started = True

    def poll(self) -> list[NativeEvent]:
        """Pop every waiting event (the payload is copied into ``bytes`` and freed)."""
        out: list[NativeEvent] = []
        evs = self._events
        unpack = ffi.unpack
        free = lib.aq_free
        while True:
            n = lib.aq_poll_events(self._ptr, evs, 256)
            for i in range(n):
                ev = evs[i]
                data = b""
                if ev.data != ffi.NULL:
                    data = unpack(ffi.cast("char *", ev.data), ev.len)
                    free(ev.data)
                out.append(NativeEvent(ev.type, ev.flags, ev.conn, ev.stream_id, ev.code,
                                       ev.code2, data))
            if n < 256:
                return out

    def close(self) -> None:
        """Stop the thread and free everything (idempotent)."""
        if self._ptr is not None:
            lib.aq_endpoint_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass


_LEN_FIELDS = {"cert_pem_len", "key_pem_len", "ca_pem_len", "alpn_len"}
