"""qlog-shaped event loggers with aioquic's names: :class:`QuicLogger`,
:class:`QuicFileLogger` and :class:`QuicLoggerTrace`.

A logger set as ``QuicConfiguration.quic_logger`` gets one trace per connection holding its
connection-level events (quic/_qlog.py) and the engine's packet-level events (packets
sent and received with their frames, quic/_enginelog.py; see docs/api.md "qlog"), plus
whatever the application (or a layer such as aioquic's own ``H3Connection``) records with
:meth:`QuicLoggerTrace.log_event`.  The JSON they
produce follows qlog 0.3's outer shape (``qlog_format``, ``qlog_version``, ``traces`` with
``common_fields``, ``events`` and ``vantage_point``), so tools that read aioquic's files read
these too.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiopquic.quic.packet import QuicFrameType, QuicPacketType  # re-exported, as aioquic does

__all__ = ["PACKET_TYPE_NAMES", "QLOG_VERSION", "QuicFileLogger", "QuicFrameType", "QuicLogger",
           "QuicLoggerTrace", "QuicPacketType", "hexdump"]

PACKET_TYPE_NAMES = {
    QuicPacketType.INITIAL: "initial",
    QuicPacketType.HANDSHAKE: "handshake",
    QuicPacketType.ZERO_RTT: "0RTT",
    QuicPacketType.ONE_RTT: "1RTT",
    QuicPacketType.RETRY: "retry",
    QuicPacketType.VERSION_NEGOTIATION: "version_negotiation",
}
"""qlog's name of each packet type (aioquic's table)."""

QLOG_VERSION = "0.3"
"""The qlog schema version written in :meth:`QuicLogger.to_dict`."""

Headers = list[tuple[bytes, bytes]]


_MAX_DATA = 0x10  # RFC 9000 frame types
_MAX_STREAMS_UNI = 0x13


def hexdump(data: bytes) -> str:
    """``data`` as lowercase hex (how qlog writes connection IDs, tokens, ...)."""
    return bytes(data).hex()


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _frame(kind: str, **fields: Any) -> dict[str, Any]:
    fields["frame_type"] = kind
    return fields


class QuicLoggerTrace:
    """The events of one connection (one qlog trace).

    ``is_client`` picks the vantage point; ``odcid`` (the original destination connection ID)
    names the trace and, with :class:`QuicFileLogger`, its file.  Raises :class:`TypeError`
    when ``odcid`` is not bytes-like.
    """

    def __init__(self, *, is_client: bool, odcid: bytes) -> None:
        if not isinstance(odcid, (bytes, bytearray, memoryview)):
            raise TypeError(f"QuicLoggerTrace odcid must be bytes, got {type(odcid).__name__}")
        self._odcid = bytes(odcid)
        self._events: deque[dict[str, Any]] = deque()
        self._vantage_point = {"name": "aiopquic", "type": "client" if is_client else "server"}

    def encode_time(self, seconds: float) -> float:
        """``seconds`` as qlog's milliseconds."""
        return seconds * 1000.0

    # QUIC frames, as qlog's "frame" objects (for code that logs its own events; the engine
    # does not call these)

    def encode_ack_frame(self, ranges: Iterable[range], delay: float) -> dict[str, Any]:
        """ACK: ``ranges`` of packet numbers (``range`` objects), ``delay`` in seconds."""
        return _frame("ack", ack_delay=self.encode_time(delay),
                      acked_ranges=[[r.start, r.stop - 1] for r in ranges])

    def encode_connection_close_frame(self, error_code: int, frame_type: Any,
                                      reason_phrase: str) -> dict[str, Any]:
        """CONNECTION_CLOSE: a transport close when ``frame_type`` is not None, else an
        application close."""
        out = _frame("connection_close", error_code=error_code, raw_error_code=error_code,
                     reason=reason_phrase,
                     error_space="application" if frame_type is None else "transport")
        if frame_type is not None:
            out["trigger_frame_type"] = frame_type
        return out

    def encode_connection_limit_frame(self, frame_type: int, maximum: int) -> dict[str, Any]:
        """MAX_DATA (``frame_type`` 0x10) or MAX_STREAMS (0x12 bidirectional, 0x13
        unidirectional)."""
        if frame_type == _MAX_DATA:
            return _frame("max_data", maximum=maximum)
        kind = "unidirectional" if frame_type == _MAX_STREAMS_UNI else "bidirectional"
        return _frame("max_streams", maximum=maximum, stream_type=kind)

    def encode_crypto_frame(self, frame: Any) -> dict[str, Any]:
        """CRYPTO; ``frame`` has ``data`` and ``offset``."""
        return _frame("crypto", length=len(frame.data), offset=frame.offset)

    def encode_data_blocked_frame(self, limit: int) -> dict[str, Any]:
        """DATA_BLOCKED."""
        return _frame("data_blocked", limit=limit)

    def encode_datagram_frame(self, length: int) -> dict[str, Any]:
        """DATAGRAM of ``length`` bytes."""
        return _frame("datagram", length=length)

    def encode_handshake_done_frame(self) -> dict[str, Any]:
        """HANDSHAKE_DONE."""
        return _frame("handshake_done")

    def encode_max_stream_data_frame(self, maximum: int, stream_id: int) -> dict[str, Any]:
        """MAX_STREAM_DATA."""
        return _frame("max_stream_data", maximum=maximum, stream_id=stream_id)

    def encode_new_connection_id_frame(self, connection_id: bytes, retire_prior_to: int,
                                       sequence_number: int,
                                       stateless_reset_token: bytes) -> dict[str, Any]:
        """NEW_CONNECTION_ID."""
        return _frame("new_connection_id", connection_id=hexdump(connection_id),
                      length=len(connection_id), reset_token=hexdump(stateless_reset_token),
                      retire_prior_to=retire_prior_to, sequence_number=sequence_number)

    def encode_new_token_frame(self, token: bytes) -> dict[str, Any]:
        """NEW_TOKEN."""
        return _frame("new_token", length=len(token), token=hexdump(token))

    def encode_padding_frame(self) -> dict[str, Any]:
        """PADDING."""
        return _frame("padding")

    def encode_path_challenge_frame(self, data: bytes) -> dict[str, Any]:
        """PATH_CHALLENGE."""
        return _frame("path_challenge", data=hexdump(data))

    def encode_path_response_frame(self, data: bytes) -> dict[str, Any]:
        """PATH_RESPONSE."""
        return _frame("path_response", data=hexdump(data))

    def encode_ping_frame(self) -> dict[str, Any]:
        """PING."""
        return _frame("ping")

    def encode_reset_stream_frame(self, error_code: int, final_size: int,
                                  stream_id: int) -> dict[str, Any]:
        """RESET_STREAM."""
        return _frame("reset_stream", error_code=error_code, final_size=final_size,
                      stream_id=stream_id)

    def encode_retire_connection_id_frame(self, sequence_number: int) -> dict[str, Any]:
        """RETIRE_CONNECTION_ID."""
        return _frame("retire_connection_id", sequence_number=sequence_number)

    def encode_stream_data_blocked_frame(self, limit: int, stream_id: int) -> dict[str, Any]:
        """STREAM_DATA_BLOCKED."""
        return _frame("stream_data_blocked", limit=limit, stream_id=stream_id)

    def encode_stop_sending_frame(self, error_code: int, stream_id: int) -> dict[str, Any]:
        """STOP_SENDING."""
        return _frame("stop_sending", error_code=error_code, stream_id=stream_id)

    def encode_stream_frame(self, frame: Any, stream_id: int) -> dict[str, Any]:
        """STREAM; ``frame`` has ``data``, ``offset`` and ``fin``."""
        return _frame("stream", fin=frame.fin, length=len(frame.data), offset=frame.offset,
                      stream_id=stream_id)

    def encode_streams_blocked_frame(self, is_unidirectional: bool,
                                     limit: int) -> dict[str, Any]:
        """STREAMS_BLOCKED."""
        return _frame("streams_blocked", limit=limit,
                      stream_type="unidirectional" if is_unidirectional else "bidirectional")

    def encode_transport_parameters(self, owner: str, parameters: Any) -> dict[str, Any]:
        """Transport parameters (an object whose attributes are the parameters): bools and
        ints as they are, bytes as hex, anything else left out."""
        out: dict[str, Any] = {"owner": owner}
        for name, value in vars(parameters).items():
            if isinstance(value, (bool, int)):
                out[name] = value
            elif isinstance(value, bytes):
                out[name] = hexdump(value)
        return out

    # HTTP/3 frames

    def encode_http3_data_frame(self, length: int, stream_id: int) -> dict[str, Any]:
        """The qlog form of an HTTP/3 DATA frame of ``length`` bytes on ``stream_id``."""
        return {"frame": {"frame_type": "data"}, "length": length, "stream_id": stream_id}

    def encode_http3_headers_frame(self, length: int, headers: Headers,
                                   stream_id: int) -> dict[str, Any]:
        """The qlog form of an HTTP/3 HEADERS frame."""
        return {
            "frame": {"frame_type": "headers", "headers": self._encode_headers(headers)},
            "length": length,
            "stream_id": stream_id,
        }

    def encode_http3_push_promise_frame(self, length: int, headers: Headers, push_id: int,
                                        stream_id: int) -> dict[str, Any]:
        """The qlog form of an HTTP/3 PUSH_PROMISE frame."""
        return {
            "frame": {"frame_type": "push_promise", "headers": self._encode_headers(headers),
                      "push_id": push_id},
            "length": length,
            "stream_id": stream_id,
        }

    @staticmethod
    def _encode_headers(headers: Headers) -> list[dict[str, str]]:
        return [{"name": _text(name), "value": _text(value)} for name, value in headers]

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        """Record one event named ``category:event`` with ``data``, stamped with the current
        time."""
        self._events.append({"data": data, "name": f"{category}:{event}",
                             "time": self.encode_time(time.time())})

    def to_dict(self) -> dict[str, Any]:
        """The trace as a JSON-serialisable dict."""
        return {
            "common_fields": {"ODCID": hexdump(self._odcid)},
            "events": list(self._events),
            "vantage_point": dict(self._vantage_point),
        }


class QuicLogger:
    """Keeps traces in memory; :meth:`to_dict` gives them as one qlog document."""

    def __init__(self) -> None:
        self._traces: list[QuicLoggerTrace] = []

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        """Begin and return a trace for one connection."""
        trace = QuicLoggerTrace(is_client=is_client, odcid=odcid)
        self._traces.append(trace)
        return trace

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        """Mark ``trace`` finished (it stays in memory).  Raises :class:`ValueError` for a
        trace this logger did not start."""
        if not any(t is trace for t in self._traces):
            raise ValueError("this QuicLoggerTrace was not started by this QuicLogger")

    def to_dict(self) -> dict[str, Any]:
        """All traces as one JSON-serialisable qlog document."""
        return {
            "qlog_format": "JSON",
            "qlog_version": QLOG_VERSION,
            "traces": [trace.to_dict() for trace in self._traces],
        }


class QuicFileLogger(QuicLogger):
    """Writes each trace, when it ends, to ``<path>/<odcid hex>.qlog`` and forgets it.

    Raises :class:`ValueError` naming ``path`` when it is not an existing directory.
    """

    def __init__(self, path: str) -> None:
        if not os.path.isdir(path):
            raise ValueError(f"QUIC log output directory {path!r} does not exist")
        self.path: str = path
        super().__init__()

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        """Write ``trace`` to its file and drop it from memory.  Raises :class:`ValueError`
        for a trace this logger did not start, :class:`OSError` when the file cannot be
        written."""
        super().end_trace(trace)
        body = trace.to_dict()
        target = os.path.join(self.path, body["common_fields"]["ODCID"] + ".qlog")
        with open(target, "w") as f:
            json.dump({"qlog_format": "JSON", "qlog_version": QLOG_VERSION,
                       "traces": [body]}, f)
        self._traces = [t for t in self._traces if t is not trace]

