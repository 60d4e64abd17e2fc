"""Connection-level qlog: what :class:`QuicConnection` records into a ``quic_logger`` trace.

aioquic's ``QuicConfiguration(quic_logger=...)`` (and 0.6.1's ``qlog_dir``) get one trace per
connection, started when the connection is created and ended (a :class:`QuicFileLogger` writes
its file then) when it closes.  The trace holds the events the Python side of the connection
sees -- handshake and ALPN, path MTU changes, stream data and datagrams moving between the
application and the transport, stream resets and STOP_SENDING, connection IDs, the close and
who closed -- in qlog 0.3's names -- and the engine's packet-level events
(``packet_sent`` / ``packet_received`` with their frames, quic/_enginelog.py), built from
ngtcp2's text log; ngtcp2's own qlog writer stays off because in ngtcp2 before 1.22.1 a
peer's transport parameters can overflow its stack (CVE-2026-40170; see docs/install.md).

A trace keeps at most :data:`MAX_TRACE_EVENTS` events (a long transfer would otherwise grow it
without bound); past that it counts what it dropped and says so in a last
``aiopquic:events_dropped`` event.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import IO, Any, Optional

from .logger import QLOG_VERSION

_log = logging.getLogger("aiopquic.quic")

MAX_TRACE_EVENTS = 65536
"""Events kept per connection trace; later ones are counted, not stored."""

_dir_loggers: dict[str, SeqDirLogger] = {}


def _record(data: dict[str, Any]) -> bytes:
    return b"\x1e" + json.dumps(data, separators=(",", ":")).encode() + b"\n"


class SeqTrace:
    """One connection's trace written as JSON-SEQ (RFC 7464, qlog's ``.sqlog`` form) into
    ``<directory>/<odcid hex>.sqlog`` while the connection runs.  Events wait in memory
    until :meth:`open` names the file (once the handshake has told the original destination
    connection ID) or :meth:`close`; from then on they are appended as they come.  Raises
    :class:`OSError` from :meth:`open` / :meth:`close` when the file cannot be written."""

    def __init__(self, directory: str, is_client: bool, odcid: bytes) -> None:
        self._directory = directory
        self._odcid = bytes(odcid)
        self._vantage = {"name": "aiopquic", "type": "client" if is_client else "server"}
        self._pending: list[bytes] = []
        self._file: Optional[IO[bytes]] = None
        self.path: Optional[str] = None

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        """Record ``category:event`` with ``data``, stamped with the current time (ms)."""
        line = _record({"time": time.time() * 1000.0, "name": f"{category}:{event}",
                        "data": data})
        if self._file is None:
            self._pending.append(line)
        else:
            self._file.write(line)

    def open(self, odcid: Optional[bytes] = None) -> None:
        """Name the file by ``odcid`` (default: the one given at start), write the header
        and what waited, and keep the file open for the next events."""
        if self._file is not None:
            return
        if odcid:
            self._odcid = bytes(odcid)
        self.path = os.path.join(self._directory, self._odcid.hex() + ".sqlog")
        f = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        f.write(_record({"qlog_version": QLOG_VERSION, "qlog_format": "JSON-SEQ",
                         "trace": {"vantage_point": self._vantage,
                                   "common_fields": {"ODCID": self._odcid.hex()}}}))
        f.writelines(self._pending)
        f.flush()
        self._pending = []
        self._file = f

    def close(self) -> None:
        """Write what is left and close the file (opening it first if it never was)."""
        self.open()
        assert self._file is not None
        self._file.close()


class SeqDirLogger:
    """``qlog_dir``'s logger: one :class:`SeqTrace` file per connection in ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def start_trace(self, is_client: bool, odcid: bytes) -> SeqTrace:
        """Begin a trace for one connection."""
        return SeqTrace(self.path, is_client, odcid)

    def end_trace(self, trace: SeqTrace) -> None:
        """Finish ``trace``'s file."""
        trace.close()


def _env_dir() -> Optional[str]:
    return os.environ.get("AIOPQUIC_QLOG_DIR") or None


def logging_wanted(configuration: Any) -> bool:
    """True when connections made with ``configuration`` get a trace (what
    :func:`logger_for` decides, without creating anything)."""
    return configuration.quic_logger is not None or configuration.qlog_dir is not None or \
        _env_dir() is not None


def logger_for(configuration: Any) -> Any:
    """The logger a connection made with ``configuration`` records into, or None:
    ``quic_logger`` when set, else one :class:`SeqDirLogger` per ``qlog_dir`` (or, when
    that is None too, per ``$AIOPQUIC_QLOG_DIR``, created if missing).  Raises
    :class:`OSError` when the environment's directory cannot be created."""
    logger = configuration.quic_logger
    if logger is not None:
        return logger
    qlog_dir = configuration.qlog_dir
    if qlog_dir is None:
        qlog_dir = _env_dir()
        if qlog_dir is None:
            return None
        os.makedirs(qlog_dir, exist_ok=True)
    path = os.path.abspath(qlog_dir)
    found = _dir_loggers.get(path)
    if found is None:
        found = _dir_loggers[path] = SeqDirLogger(path)
    return found


class ConnectionTrace:
    """One connection's trace in a ``quic_logger``, with the event cap and the end call.

    The trace's ODCID field is a random 8-byte id (the engine keeps the real original
    destination connection ID to itself); it only has to name the trace and its file.
    """

    __slots__ = ("logger", "trace", "count", "dropped", "ended")

    def __init__(self, logger: Any, is_client: bool) -> None:
        self.logger = logger
        self.trace = logger.start_trace(is_client=is_client, odcid=os.urandom(8))
        self.count = 0
        self.dropped = 0
        self.ended = False

    def log(self, category: str, event: str, data: dict[str, Any]) -> None:
        """Record ``category:event`` unless the trace is full (then count it)."""
        if self.ended:
            return
        if self.count >= MAX_TRACE_EVENTS:
            self.dropped += 1
            return
        self.count += 1
        self.trace.log_event(category=category, event=event, data=data)

    def name(self, odcid: bytes) -> None:
        """The handshake told the original destination connection ID: name the trace (and
        its file) by it, as aioquic does.  A ``qlog_dir`` trace opens its file now; when it
        cannot, the error is logged and this trace records nothing more."""
        trace = self.trace
        if isinstance(trace, SeqTrace):
            try:
                trace.open(odcid)
            except OSError as exc:
                _log.warning("qlog: cannot write %s: %s", trace.path, exc)
                self.ended = True
        elif hasattr(trace, "_odcid"):  # QuicLoggerTrace, ours or aioquic's
            trace._odcid = odcid

    def end(self, closing: Optional[dict[str, Any]] = None) -> None:
        """Log the close (``closing``: the ``connectivity:connection_closed`` data) and end
        the trace; later calls do nothing.  An exception from the logger's ``end_trace``
        (a file that cannot be written) propagates to the caller."""
        if self.ended:
            return
        if closing is not None:
            self.trace.log_event(category="connectivity", event="connection_closed",
                                 data=closing)
        if self.dropped:
            self.trace.log_event(category="aiopquic", event="events_dropped",
                                 data={"count": self.dropped, "kept": self.count})
        self.ended = True
        self.logger.end_trace(self.trace)
