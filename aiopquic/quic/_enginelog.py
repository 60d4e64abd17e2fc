"""Packet-level qlog events from the engine's own log.

With a ``quic_logger`` (or ``qlog_dir``) set, the C driver installs ngtcp2's ``log_printf``
hook and hands its packet and frame lines to Python in batches (``AQ_EV_ENGINE_LOG``).
:func:`packet_events` turns one batch into qlog ``transport:packet_received`` /
``transport:packet_sent`` events, with the frames of each packet, in aioquic's shapes (so
tools written for aioquic's traces -- its ``examples/interop.py`` looks for Version
Negotiation and Retry packets and PATH_CHALLENGE frames -- read ours).

ngtcp2's separate qlog writer is not used: in ngtcp2 before 1.22.1 it can overflow its
stack on a peer's transport parameters (CVE-2026-40170, docs/install.md); its text log has
no such fixed buffer.

The lines look like (ngtcp2 1.11, lib/ngtcp2_log.c)::

    I00000012 0x<scid> pkt rx pkn=3 dcid=0x... type=1RTT k=0
    I00000012 0x<scid> pkt tx pkn=0 dcid=0x... scid=0x... version=0x00000001 type=Initial len=0
    I00000012 0x<scid> frm rx 3 1RTT PATH_CHALLENGE(0x1a) data=0x0011223344556677
    I00000012 0x<scid> pkt rx 0 VN v=0x00000001

A line this parser does not understand is skipped, never raised: the log is a debugging
aid and its text may change between engine versions.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["packet_events"]

_PACKET_TYPES = {
    "Initial": "initial",
    "Handshake": "handshake",
    "0RTT": "0RTT",
    "1RTT": "1RTT",
    "Retry": "retry",
    "VN": "version_negotiation",
    "SR": "stateless_reset",
}

_INT_FIELDS = {  # ngtcp2's field name -> (qlog's name, base)
    "offset": ("offset", 10),
    "len": ("length", 10),
    "seq": ("sequence_number", 10),
    "retire_prior_to": ("retire_prior_to", 10),
    "max_data": ("maximum", 10),
    "max_stream_data": ("maximum", 10),
    "max_streams": ("maximum", 10),
    "final_size": ("final_size", 10),
}


def _fields(tokens: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if sep:
            out[key] = value
    return out


def _hex(value: str) -> str:
    return value[2:] if value.startswith("0x") else value


def _code(value: str) -> Optional[int]:
    """``NAME(0x1a)`` or ``(unknown)(0x1a)`` -> 0x1a."""
    start = value.rfind("(0x")
    if start < 0 or not value.endswith(")"):
        return None
    try:
        return int(value[start + 3:-1], 16)
    except ValueError:
        return None


def _frame(name: str, ftype: int, rest: list[str], line: str) -> dict[str, Any]:
    kind = name.lower()
    f = _fields(rest)
    frame: dict[str, Any] = {"frame_type": kind}
    if "id" in f:
        frame["stream_id"] = int(f["id"], 16)
    for key, (qname, base) in _INT_FIELDS.items():
        if key in f:
            try:
                frame[qname] = int(f[key], base)
            except ValueError:
                pass
    if kind == "stream":
        frame["fin"] = f.get("fin") == "1"
    elif kind in ("path_challenge", "path_response"):
        frame["data"] = _hex(f.get("data", ""))
    elif kind == "new_connection_id":
        frame["connection_id"] = _hex(f.get("cid", ""))
        frame["stateless_reset_token"] = _hex(f.get("stateless_reset_token", ""))
    elif kind == "new_token":
        frame["token"] = {"data": _hex(f.get("token", ""))}
    elif kind == "max_streams":
        frame["stream_type"] = "unidirectional" if ftype & 1 else "bidirectional"
    elif kind in ("reset_stream", "stop_sending"):
        code = _code(f.get("app_error_code", ""))
        if code is not None:
            frame["error_code"] = code
    elif kind == "connection_close":
        frame["error_space"] = "transport" if ftype == 0x1C else "application"
        code = _code(f.get("error_code", ""))
        if code is not None:
            frame["error_code"] = code
        if "frame_type" in f:
            try:
                frame["trigger_frame_type"] = int(f["frame_type"], 16)
            except ValueError:
                pass
        start = line.find(" reason=[")
        if start >= 0 and line.endswith("]"):
            frame["reason"] = line[start + 9:-1]
    elif kind in ("data_blocked", "stream_data_blocked", "streams_blocked"):
        if "offset" in f:
            frame["limit"] = frame.pop("offset")
        elif "maximum" in frame:
            frame["limit"] = frame.pop("maximum")
    return frame


def packet_events(text: bytes, dropped: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """One batch of engine log lines as ``(event, data)`` pairs for the ``transport``
    category: ``packet_received`` / ``packet_sent`` in the order packets first appear in
    the batch, each with ``header`` (``packet_type``, ``packet_number``, connection IDs and
    version when logged), ``frames`` and, for long-header packets, ``raw.length``; a Version
    Negotiation packet carries ``supported_versions``.  ``dropped`` (lines the driver could
    not hold) adds a last ``packets_dropped`` event with that count."""
    packets: dict[tuple[str, str, int], dict[str, Any]] = {}
    for raw in text.decode("ascii", "replace").split("\n"):
        tokens = raw.split(" ")
        if len(tokens) < 6 or tokens[3] not in ("rx", "tx"):
            continue
        kind, direction = tokens[2], tokens[3]
        try:
            if kind == "pkt" and tokens[4].startswith("pkn="):
                f = _fields(tokens[4:])
                ptype = f.get("type", "")
                pkn = int(f["pkn"])
                pkt = _packet(packets, direction, ptype, pkn)
                header = pkt["header"]
                if "dcid" in f:
                    header["dcid"] = _hex(f["dcid"])
                if "scid" in f:
                    header["scid"] = _hex(f["scid"])
                if "version" in f:
                    header["version"] = _hex(f["version"])
                if f.get("len", "0") != "0" and ptype != "1RTT":
                    pkt["raw"] = {"length": int(f["len"])}
                if "k" in f:
                    header["key_phase"] = int(f["k"])
            elif kind == "pkt" and tokens[5] in ("VN", "SR"):
                pkt = _packet(packets, direction, tokens[5], int(tokens[4]))
                f = _fields(tokens[6:])
                if tokens[5] == "VN" and "v" in f:
                    pkt.setdefault("supported_versions", []).append(_hex(f["v"]))
                elif "token" in f:
                    pkt["stateless_reset_token"] = _hex(f["token"])
            elif kind == "frm" and len(tokens) >= 7:
                pkt = _packet(packets, direction, tokens[5], int(tokens[4]))
                head = tokens[6]
                name, _, _ = head.partition("(")
                ftype = _code(head)
                if ftype is None or not name:
                    continue
                frames = pkt["frames"]
                continued = len(tokens) > 7 and not tokens[7].startswith("largest_ack=")
                if name == "ACK" and continued and frames and \
                        frames[-1]["frame_type"] == "ack":
                    _ack_detail(frames[-1], _fields(tokens[7:]))
                elif name == "ACK":
                    f = _fields(tokens[7:])
                    ack: dict[str, Any] = {"frame_type": "ack", "acked_ranges": []}
                    delay = f.get("ack_delay", "")
                    if delay:
                        ack["ack_delay"] = float(delay.partition("(")[0])
                    frames.append(ack)
                else:
                    frames.append(_frame(name, ftype, tokens[7:], raw))
        except (ValueError, IndexError, KeyError):
            continue
    out: list[tuple[str, dict[str, Any]]] = [
        ("packet_received" if key[0] == "rx" else "packet_sent", pkt)
        for key, pkt in packets.items()]
    if dropped:
        out.append(("packets_dropped", {"trigger": "aiopquic_log_full", "count": dropped}))
    return out


def _packet(packets: dict[tuple[str, str, int], dict[str, Any]], direction: str, ptype: str,
            pkn: int) -> dict[str, Any]:
    key = (direction, ptype, pkn)
    pkt = packets.get(key)
    if pkt is None:
        header: dict[str, Any] = {"packet_type": _PACKET_TYPES.get(ptype, ptype.lower())}
        if ptype not in ("VN", "SR", "Retry"):
            header["packet_number"] = pkn
        pkt = packets[key] = {"header": header, "frames": []}
    return pkt


def _ack_detail(ack: dict[str, Any], f: dict[str, str]) -> None:
    """A continuation line of an ACK frame: one range, or the ECN counts."""
    rng = f.get("range")
    if rng and rng.startswith("[") and rng.endswith("]"):
        high, _, low = rng[1:-1].partition("..")
        ack["acked_ranges"].append([int(low), int(high)])
    elif "ect0" in f:
        ack["ect0"] = int(f["ect0"])
        ack["ect1"] = int(f.get("ect1", "0"))
        ack["ce"] = int(f.get("ce", "0"))
