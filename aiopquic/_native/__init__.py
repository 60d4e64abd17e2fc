"""Thin binding layer over the compiled shim (``aiopquic._native._aiopquic``).

Nothing above this package touches cffi directly.  :class:`Endpoint` owns one native endpoint
(socket + network thread) and turns its event ring into :class:`NativeEvent` tuples.
:class:`SansioEngine` drives one connection synchronously on the caller's thread (no socket,
no thread, no clock): the second driver of the same native connection core.
"""

from __future__ import annotations

import errno
import os
from typing import Any, NamedTuple, Optional

from aiopquic._native._aiopquic import ffi, lib

__all__ = ["ffi", "lib", "native_versions", "make_self_signed", "Endpoint", "NativeEvent",
           "NativeError", "SansioEngine"]

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
EV_PATH = lib.AQ_EV_PATH
EV_ERROR = lib.AQ_EV_ERROR
EV_NEW_TOKEN = lib.AQ_EV_NEW_TOKEN
EV_CONN_INFO = lib.AQ_EV_CONN_INFO
EV_SESSION_TICKET = lib.AQ_EV_SESSION_TICKET
EV_MIGRATED = lib.AQ_EV_MIGRATED
EV_PEER_ADDRESS = lib.AQ_EV_PEER_ADDRESS
EV_ENGINE_LOG = lib.AQ_EV_ENGINE_LOG
EV_DGRAM_SPACE = lib.AQ_EV_DGRAM_SPACE
EV_CID_ISSUED = lib.AQ_EV_CID_ISSUED
EV_CID_RETIRED = lib.AQ_EV_CID_RETIRED

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


def _make_config(config: dict[str, Any], keep: list[Any]) -> Any:
    """An ``aq_config *`` from a dict of its fields; cffi buffers it points to go in keep."""
    cfg = ffi.new("aq_config *")
    for key, value in config.items():
        if isinstance(value, (bytes, str)):
            raw = value.encode() if isinstance(value, str) else value
            buf = ffi.new("char[]", raw + b"\0")
            keep.append(buf)
            setattr(cfg, key, ffi.cast(ffi.typeof(getattr(cfg, key)), buf))
            if key + "_len" in _LEN_FIELDS:
                setattr(cfg, key + "_len", len(raw))
        elif value is None:
            continue
        else:
            setattr(cfg, key, value)
    return cfg


def _poll(ptr: Any, evs: Any) -> list[NativeEvent]:
    out: list[NativeEvent] = []
    unpack = ffi.unpack
    free = lib.aq_free
    while True:
        n = lib.aq_poll_events(ptr, evs, 256)
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


_BIND_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EAFNOSUPPORT)


def _with_errno(text: str) -> NativeError:
    """A :class:`NativeError` whose ``errno`` is set (``strerror`` is ``text``) when it ends with
    the message of a socket error (the shim reports bind failures as ``"...: <strerror>"``),
    so ``exc.errno == errno.EADDRINUSE`` works as for Python's own sockets (dropin helper's
    hunk)."""
    for code in _BIND_ERRNOS:
        if text.endswith(": " + os.strerror(code)):
            return NativeError(code, text)  # str(): "[Errno 98] cannot bind UDP ...: ..."
    return NativeError(text)


MALLOC_TRIM_THRESHOLD = 16 << 20
MALLOC_MMAP_THRESHOLD = 32 << 20
_malloc_tuned = False


def tune_malloc() -> bool:
    """Once per process, before the first endpoint: raise glibc's mmap threshold (32 MiB,
    glibc's own ceiling) and trim threshold (16 MiB), so that the ~256 KiB blocks received
    stream data moves in, and every stream's send ring (4 MiB by default), are reused from
    the heap instead of being mapped, faulted in page by page and unmapped again for every
    chunk and every stream (a 60% higher single-stream rate at MTU 1500 here; a ring mapped
    and unmapped per stream cost ~11 us, a quarter of a small HTTP/3 request).  glibc reaches
    the same mmap threshold by itself after the first large free, but only for sizes seen
    freed so far.  The process may keep up to 16 MiB of freed heap per malloc arena instead
    of returning it at once.

    Skipped when the environment sets ``AIOPQUIC_MALLOC_TUNING=0``, or tunes malloc itself
    (``GLIBC_TUNABLES`` with ``glibc.malloc.``, ``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``), and off glibc.  Returns True when applied now."""
    global _malloc_tuned
    if _malloc_tuned:
        return False
    _malloc_tuned = True
    env = os.environ
    if env.get("AIOPQUIC_MALLOC_TUNING", "1") == "0" or "glibc.malloc." in env.get(
            "GLIBC_TUNABLES", "") or "MALLOC_MMAP_THRESHOLD_" in env or \
            "MALLOC_TRIM_THRESHOLD_" in env:
        return False
    return bool(lib.aq_tune_malloc(MALLOC_TRIM_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 0)


class Endpoint:
    """One native endpoint: a bound UDP socket and its network thread.

    ``config`` is a dict of :c:type:`aq_config` fields.  Raises :class:`NativeError` naming
    the cause when the socket cannot be bound or the TLS material is rejected.
    """

    def __init__(self, config: dict[str, Any], host: str, port: int) -> None:
        tune_malloc()
        self._keep: list[Any] = []  # cffi buffers referenced by the config struct
        cfg = _make_config(config, self._keep)
        err = _errbuf()
        ptr = lib.aq_endpoint_new(cfg, host.encode(), port, err, _ERRLEN)
        self._keep.clear()
        if ptr == ffi.NULL:
            raise _with_errno(_errtext(err))
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

    def admit_stats(self) -> dict[str, int]:
        """The server's admission counters (:c:type:`aq_admit_stats`) as a dict."""
        st = ffi.new("aq_admit_stats *")
        lib.aq_endpoint_admit_stats(self._ptr, st)
        return {name: int(getattr(st, name)) for name in _ADMIT_FIELDS}

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
        return _poll(self._ptr, self._events)

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


NO_EXPIRY = (1 << 64) - 1
"""What :meth:`SansioEngine.expiry` returns when no timer is needed."""

_TX_ENTRIES = 64  # packets per aq_sansio_transmit call (the C queue holds 64)


class Credentials:
    """TLS credentials (certificate and key, trust anchors) loaded once from the TLS fields
    of ``config`` and lent to many :class:`SansioEngine` objects: a server that makes one
    sans-IO connection per client then parses its key once, not per handshake.  Raises
    :class:`NativeError` naming the cause, as :class:`SansioEngine` does.  Freed when the
    last engine that borrowed it is gone (each engine keeps a reference)."""

    def __init__(self, config: dict[str, Any]) -> None:
        keep: list[Any] = []
        cfg = _make_config(config, keep)
        err = _errbuf()
        ptr = lib.aq_creds_new(cfg, err, _ERRLEN)
        keep.clear()
        if ptr == ffi.NULL:
            raise NativeError(_errtext(err))
        self.ptr: Any = ffi.gc(ptr, lib.aq_creds_free)


class SansioEngine:
    """One connection driven synchronously on the caller's thread: no socket, no thread,
    no clock.  Times are integer nanoseconds on the caller's clock; addresses are opaque
    32-bit ids the caller maps to its own address objects.

    The command functions of ``lib`` (``aq_stream_write``, ``aq_conn_close``, ...) take
    :attr:`ptr` and the connection's handle and apply at once.  ``host_cid`` is the
    connection ID the connection gives out first (``None``: random, ``cid_len`` bytes from
    ``config``).  Raises :class:`NativeError` naming the cause (bad TLS material, bad
    connection ID length).  ``creds``: :class:`Credentials` made from the same TLS fields
    to borrow instead of loading ``config``'s own.
    """

    def __init__(self, config: dict[str, Any], host_cid: Optional[bytes] = None,
                 creds: Optional[Credentials] = None) -> None:
        keep: list[Any] = []
        cfg = _make_config(config, keep)
        err = _errbuf()
        cid = host_cid if host_cid is not None else ffi.NULL
        self._creds = creds  # outlives the engine's native side, which borrows it
        ptr = lib.aq_sansio_new(cfg, cid, len(host_cid or b""),
                                creds.ptr if creds is not None else ffi.NULL, err, _ERRLEN)
        keep.clear()
        if ptr == ffi.NULL:
            raise NativeError(_errtext(err))
        self._ptr: Any = ptr
        self._events = ffi.new("aq_event[]", 64)
        self._pkts = ffi.new("aq_sio_pkt[]", _TX_ENTRIES)
        self._more = ffi.new("int *")

    @property
    def ptr(self) -> Any:
        """The native driver (``aq_endpoint *``), valid until :meth:`close`."""
        return self._ptr

    def connect(self, addr: int, server_name: Optional[str], dcid: Optional[bytes],
                now_ns: int) -> int:
        """Client: create the connection and queue its first Initial; returns its handle."""
        err = _errbuf()
        handle = lib.aq_sansio_connect(self._ptr, addr, (server_name or "").encode(),
                                       dcid if dcid is not None else ffi.NULL,
                                       len(dcid or b""), now_ns, err, _ERRLEN)
        if handle == 0:
            raise NativeError(_errtext(err))
        return int(handle)

    def receive(self, data: bytes, addr: int, ecn: int, now_ns: int) -> bool:
        """Feed one datagram; False when it was dropped (no connection and not an Initial
        that can start one)."""
        return bool(lib.aq_sansio_receive(self._ptr, data, len(data), addr, ecn, now_ns) == 0)

    def transmit(self, now_ns: int) -> list[tuple[bytes, int]]:
        """Every datagram to send now, as (payload, address id)."""
        out: list[tuple[bytes, int]] = []
        pkts = self._pkts
        more = self._more
        buffer = ffi.buffer
        while True:
            n = lib.aq_sansio_transmit(self._ptr, now_ns, pkts, _TX_ENTRIES, more)
            for i in range(n):
                p = pkts[i]
                raw = buffer(p.data, p.len)[:]
                seg = p.seg
                addr = p.addr
                if seg >= len(raw):
                    out.append((raw, addr))
                else:
                    for off in range(0, len(raw), seg):
                        out.append((raw[off:off + seg], addr))
            if not more[0] or n == 0:
                return out

    def expiry(self) -> int:
        """When :meth:`expire` must run next (ns), :data:`NO_EXPIRY` for never."""
        return int(lib.aq_sansio_expiry(self._ptr))

    def expire(self, now_ns: int) -> None:
        """Run the connection's timers that are due at ``now_ns``."""
        lib.aq_sansio_expire(self._ptr, now_ns)

    def state(self) -> int:
        """-1 before the connection exists; 0 handshake, 1 open, 2 closing, 3 draining,
        4 ended."""
        return int(lib.aq_sansio_state(self._ptr))

    def poll(self) -> list[NativeEvent]:
        """Pop every waiting event (the payload is copied into ``bytes`` and freed)."""
        return _poll(self._ptr, self._events)

    def close(self) -> None:
        """Free the connection and everything it holds (idempotent; nothing is sent)."""
        if self._ptr is not None:
            lib.aq_endpoint_free(self._ptr)
            self._ptr = None

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass



_LEN_FIELDS = {"cert_pem_len", "key_pem_len", "ca_pem_len", "alpn_len", "token_len",
               "session_ticket_len", "ticket_key_len"}
_ADMIT_FIELDS = ("retries", "tokens_ok", "tokens_bad", "dropped_full", "rate_limited",
                 "half_open", "stateless_dropped", "prio_applied", "prio_rejected", "stray")
