"""TLS names that aioquic programs import from ``aioquic.tls``.

aiopquic's TLS is GnuTLS inside the native engine, so there is no Python TLS state machine
here; this module gives the *types* applications use: :class:`SessionTicket`,
:class:`CipherSuite` and the callback types of ``serve()`` / ``connect()``
(:data:`SessionTicketFetcher`, :data:`SessionTicketHandler`, :data:`AlpnHandler`).

Session resumption and 0-RTT are not wired to the engine yet: ``connect()`` and ``serve()``
accept the ticket callbacks and never call them, and
:attr:`~aiopquic.quic.configuration.QuicConfiguration.session_ticket` is rejected by
``validate()`` when set (see docs/migrating.md).
"""

from __future__ import annotations

import dataclasses
import datetime
from enum import IntEnum
from typing import Callable, Optional

__all__ = [
    "AlpnHandler",
    "CipherSuite",
    "SessionTicket",
    "SessionTicketFetcher",
    "SessionTicketHandler",
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
