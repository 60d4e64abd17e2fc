"""TLS names that aioquic programs import from ``aioquic.tls``.

aiopquic's TLS is GnuTLS inside the native engine, so there is no Python TLS state machine
here; this module gives the *types* applications use: :class:`SessionTicket`,
:class:`CipherSuite` and the callback types of ``serve()`` / ``connect()``
(:data:`SessionTicketFetcher`, :data:`SessionTicketHandler`, :data:`AlpnHandler`).

Session resumption and 0-RTT: a client's ``connect(session_ticket_handler=...)`` is called
with a :class:`SessionTicket` for each ticket the server sends; pass one as
:attr:`~aiopquic.quic.configuration.QuicConfiguration.session_ticket` on a later connection to
resume (and send 0-RTT data when the ticket allows it).  Its :attr:`SessionTicket.ticket` is
an opaque blob made by the native engine (GnuTLS session data plus the server's 0-RTT
transport parameters); the other fields describe it.  GnuTLS servers issue stateless tickets
(encrypted under a key drawn once per server configuration object), so a server needs no
ticket store: ``serve()``
accepts aioquic's ``session_ticket_fetcher`` / ``session_ticket_handler`` and never calls them
(see docs/migrating.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import struct
import tempfile
from enum import IntEnum
from typing import Any, Callable, Optional

__all__ = [
    "AlpnHandler",
    "CipherSuite",
    "SessionTicket",
    "SessionTicketFetcher",
    "SessionTicketHandler",
    "load_session_ticket",
    "save_session_ticket",
    "session_ticket_blob",
    "session_ticket_from_blob",
]


class CipherSuite(IntEnum):
    """TLS 1.3 cipher suite code points (aioquic's names)."""

    AES_128_GCM_SHA256 = 0x1301
    AES_256_GCM_SHA384 = 0x1302
    CHACHA20_POLY1305_SHA256 = 0x1303
    EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class SessionTicket:
    """A TLS 1.3 session ticket (the fields of aioquic's class, so pickled tickets of a
    program keep their shape).  Datetimes are timezone-aware UTC."""

    age_add: int
    cipher_suite: CipherSuite
    not_valid_after: datetime.datetime
    not_valid_before: datetime.datetime
    resumption_secret: bytes
    server_name: str
    ticket: bytes
    max_early_data_size: Optional[int] = None
    other_extensions: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    alpn_protocol: Optional[str] = None
    """*(aiopquic)* The ALPN protocol of the connection that received the ticket (0-RTT is
    only possible with the same protocol)."""

    @property
    def is_valid(self) -> bool:
        """True while the current time lies in [not_valid_before, not_valid_after]."""
        now = _utcnow()
        return self.not_valid_before <= now <= self.not_valid_after

    @property
    def obfuscated_age(self) -> int:
        """The ticket's age in milliseconds plus ``age_add``, modulo 2**32 (RFC 8446 4.2.11)."""
        age_ms = int((_utcnow() - self.not_valid_before).total_seconds() * 1000)
        return (age_ms + self.age_add) % (1 << 32)


AlpnHandler = Callable[[str], None]
"""Called with the negotiated ALPN protocol."""

SessionTicketFetcher = Callable[[bytes], Optional[SessionTicket]]
"""Server side: given a ticket label, return (and usually forget) the stored ticket."""

SessionTicketHandler = Callable[[SessionTicket], None]
"""Called with each new session ticket (client: to store it; server: to remember it)."""


# ------------------------------------------------------------------ the engine's ticket blob

_MAGIC = b"AQST"
_DIGEST = 32  # SHA-256 of the rest, at the end
_MAX_LIFETIME = 7 * 86400  # RFC 8446 4.6.1: no ticket lives longer
_VERSION = 1  # AQ_TICKET_VERSION in csrc/aiopquic.h
_MAX_BLOB = 1 << 20


def _parse_blob(blob: bytes) -> dict[str, Any]:
    """The fields of a ticket blob (csrc/aiopquic.h, AQ_TICKET_VERSION); ValueError naming
    ``session_ticket`` when it is not one."""
    bad = ValueError("QuicConfiguration.session_ticket is not a ticket this library issued "
                     "(session resumption needs the SessionTicket that connect()'s "
                     "session_ticket_handler received)")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise bad
    blob = bytes(blob)
    if len(blob) < 5 or len(blob) > _MAX_BLOB or blob[:4] != _MAGIC:
        raise bad
    if blob[4] != _VERSION:
        raise ValueError(f"QuicConfiguration.session_ticket has version {blob[4]} of the "
                         f"ticket format; this library reads version {_VERSION} (session "
                         f"resumption)")
    try:
        pos = 5
        (tls_len,) = struct.unpack_from("!I", blob, pos)
        pos += 4 + tls_len
        (tp_len,) = struct.unpack_from("!I", blob, pos)
        pos += 4 + tp_len
        issued, lifetime, early, suite, alpn_len = struct.unpack_from("!QIIHB", blob, pos)
        pos += 19
        alpn = blob[pos:pos + alpn_len]
        pos += alpn_len
        (sni_len,) = struct.unpack_from("!H", blob, pos)
        pos += 2
        sni = blob[pos:pos + sni_len]
        pos += sni_len
    except struct.error:
        raise bad from None
    if pos + _DIGEST != len(blob) or tls_len == 0 or len(alpn) != alpn_len or \
            len(sni) != sni_len:
        raise bad
    if hashlib.sha256(blob[:pos]).digest() != blob[pos:]:
        raise ValueError("QuicConfiguration.session_ticket is damaged: its SHA-256 digest "
                         "does not match (session resumption)")
    return {"issued": issued, "lifetime": lifetime, "early": early, "suite": suite,
            "alpn": alpn.decode("ascii", "replace") or None,
            "server_name": sni.decode("utf-8", "replace")}


def session_ticket_from_blob(blob: bytes) -> SessionTicket:
    """A :class:`SessionTicket` around a blob of the native engine (``AQ_EV_SESSION_TICKET``).

    ``ticket`` is the blob itself; ``server_name``, ``not_valid_before`` /
    ``not_valid_after`` (GnuTLS does not tell the client the ticket's lifetime, so this is
    the 7-day maximum of RFC 8446; the server may refuse an older ticket, which costs a full
    handshake, nothing more), ``max_early_data_size`` (``None``:
    the server allows no 0-RTT), ``cipher_suite`` and ``alpn_protocol`` describe it.
    ``age_add`` and ``resumption_secret`` stay inside GnuTLS's session data (0 and empty
    here).  Raises :class:`ValueError` for anything else."""
    f = _parse_blob(blob)
    start = datetime.datetime.fromtimestamp(f["issued"], datetime.timezone.utc)
    try:
        suite: Any = CipherSuite(f["suite"])
    except ValueError:
        suite = f["suite"]
    return SessionTicket(
        age_add=0, cipher_suite=suite, not_valid_before=start,
        not_valid_after=start + datetime.timedelta(seconds=f["lifetime"] or _MAX_LIFETIME),
        resumption_secret=b"", server_name=f["server_name"], ticket=bytes(blob),
        max_early_data_size=f["early"] or None, alpn_protocol=f["alpn"])


def session_ticket_blob(ticket: object) -> bytes:
    """The engine blob of ``ticket`` (a :class:`SessionTicket` this library issued), checked;
    :class:`ValueError` naming ``QuicConfiguration.session_ticket`` otherwise (an aioquic
    ticket, a forged or truncated one)."""
    blob = getattr(ticket, "ticket", None)
    if not isinstance(blob, (bytes, bytearray)):
        raise ValueError(f"QuicConfiguration.session_ticket must be a SessionTicket received "
                         f"by connect()'s session_ticket_handler (session resumption), got "
                         f"{type(ticket).__name__}")
    _parse_blob(bytes(blob))
    return bytes(blob)


_FILE_MAX_TICKETS = 64


def _read_ticket_file(path: str) -> list[SessionTicket]:
    try:
        with open(path, "rb") as fp:
            raw = fp.read(64 * _MAX_BLOB)
    except FileNotFoundError:
        return []
    out: list[SessionTicket] = []
    pos = 0
    while pos + 4 <= len(raw):
        (n,) = struct.unpack_from("!I", raw, pos)
        blob = raw[pos + 4:pos + 4 + n]
        pos += 4 + n
        try:
            out.append(session_ticket_from_blob(blob))
        except ValueError:
            continue  # a damaged entry is skipped, never fatal
    return out


def load_session_ticket(path: str, server_name: Optional[str]) -> Optional[SessionTicket]:
    """The newest valid ticket for ``server_name`` in the file ``path`` (aiopquic 0.6.1's
    ``session_ticket_file``), or None (no file, no matching ticket, damaged entries)."""
    if not server_name:
        return None
    best: Optional[SessionTicket] = None
    for t in _read_ticket_file(path):
        if t.server_name == server_name and t.is_valid and \
                (best is None or t.not_valid_before >= best.not_valid_before):
            best = t
    return best


def save_session_ticket(path: str, ticket: SessionTicket) -> None:
    """Store ``ticket`` in the file ``path``: it replaces older tickets for the same server
    name and ALPN; expired tickets are dropped; at most 64 are kept.  The file is written
    whole (a temporary file renamed over it) with mode 0600 (tickets resume sessions)."""
    keep = [t for t in _read_ticket_file(path) if t.is_valid and
            (t.server_name, t.alpn_protocol) != (ticket.server_name, ticket.alpn_protocol)]
    keep = (keep + [ticket])[-_FILE_MAX_TICKETS:]
    data = b"".join(struct.pack("!I", len(t.ticket)) + t.ticket for t in keep)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tickets-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
