"""Read qlog files back: aiopquic 0.6.1's ``aiopquic.qlog`` module.

:func:`load` returns a file's events as a flat list of dicts and :func:`load_header` its
header (format, version, vantage point, common fields), for both forms qlog files take:
one JSON document (``.qlog``, what ``QuicFileLogger`` writes, events under
``traces[].events``) and JSON-SEQ (``.sqlog``, RFC 7464: records each starting with the
0x1E byte, the first one the header, then one per event; what ``qlog_dir`` writes).
"""

from __future__ import annotations

import json
import os
from typing import Any, Union

__all__ = ["load", "load_header"]

_RS = b"\x1e"

PathLike = Union[str, "os.PathLike[str]"]


def _read(path: PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _records(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for chunk in raw.split(_RS):
        chunk = chunk.strip()
        if chunk:
            out.append(json.loads(chunk))
    return out


def _is_seq(raw: bytes) -> bool:
    return raw.lstrip()[:1] == _RS


def _is_event(record: dict[str, Any]) -> bool:
    return "name" in record or "time" in record


def load(path: PathLike) -> list[dict[str, Any]]:
    """Every event of the qlog file at ``path``, in file order, as dicts (``time``,
    ``name``, ``data``).  Events stored as arrays with a trace's ``event_fields`` legend
    (older qlog) are turned into dicts.  Raises :class:`OSError` when the file cannot be
    read and :class:`ValueError` (``json.JSONDecodeError``) when it is not qlog JSON."""
    raw = _read(path)
    if _is_seq(raw):
        return [r for r in _records(raw) if _is_event(r)]
    doc = json.loads(raw)
    events: list[dict[str, Any]] = []
    for trace in doc.get("traces", []):
        legend = trace.get("event_fields")
        for ev in trace.get("events", []):
            events.append(dict(zip(legend, ev)) if legend and isinstance(ev, list) else ev)
    return events


def load_header(path: PathLike) -> dict[str, Any]:
    """The header of the qlog file at ``path``: for JSON-SEQ its first record, for a JSON
    document everything but ``traces``.  ``{}`` for a JSON-SEQ file that starts with an
    event.  Raises as :func:`load`."""
    raw = _read(path)
    if not _is_seq(raw):
        doc = json.loads(raw)
        return {key: value for key, value in doc.items() if key != "traces"}
    records = _records(raw)
    if records and not _is_event(records[0]):
        return records[0]
    return {}
