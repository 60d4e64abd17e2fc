"""Capsules (RFC 9297 section 3) on a WebTransport session's CONNECT stream.

The capsules travel as the body (DATA frames) of the extended CONNECT stream.  WebTransport
uses CLOSE_WEBTRANSPORT_SESSION (an unsigned 32-bit error code and a UTF-8 reason of at most
1024 bytes) and DRAIN_WEBTRANSPORT_SESSION (empty); other capsule types are ignored.
"""

from __future__ import annotations

from typing import Optional

from aiopquic.h3._wire import decode_capsule, decode_varint, encode_capsule

__all__ = ["CLOSE_WEBTRANSPORT_SESSION", "DRAIN_WEBTRANSPORT_SESSION", "CapsuleBuffer",
           "encode_close_session", "decode_close_session", "MAX_CLOSE_REASON"]

CLOSE_WEBTRANSPORT_SESSION = 0x2843
DRAIN_WEBTRANSPORT_SESSION = 0x78AE
MAX_CLOSE_REASON = 1024
_MAX_CAPSULE = 64 * 1024


def encode_close_session(code: int, reason: str) -> bytes:
    """A CLOSE_WEBTRANSPORT_SESSION capsule.

    Raises :class:`ValueError` if ``code`` is not a 32-bit unsigned integer or ``reason`` is
    longer than 1024 bytes in UTF-8."""
    if not isinstance(code, int) or not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"session close code must be 0 .. 2**32-1, got {code!r}")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CLOSE_REASON:
        raise ValueError(f"session close reason is {len(raw)} bytes in UTF-8 "
                         f"(at most {MAX_CLOSE_REASON})")
    return encode_capsule(CLOSE_WEBTRANSPORT_SESSION, code.to_bytes(4, "big") + raw)


def decode_close_session(value: bytes) -> Optional[tuple[int, str]]:
    """(code, reason) from a CLOSE_WEBTRANSPORT_SESSION capsule value, ``None`` if the value
    is malformed."""
    if len(value) < 4 or len(value) - 4 > MAX_CLOSE_REASON:
        return None
    return int.from_bytes(value[:4], "big"), value[4:].decode("utf-8", "replace")


class CapsuleBuffer:
    """Reassembles capsules from the body bytes of a CONNECT stream."""

    def __init__(self) -> None:
        self._buf = bytearray()  # grows in place: tiny DATA frames cost no re-copying

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add body bytes; return the complete capsules ``(type, value)`` found.  Raises
        :class:`ValueError` for a capsule over 64 KiB (a misbehaving peer), as soon as its
        length is known."""
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        while True:
            capsule = decode_capsule(buf, pos)
            if capsule is None:
                break
            out.append((capsule[0], capsule[1]))
            pos = capsule[2]
        if pos:
            del buf[:pos]
        head = decode_varint(buf, 0)
        length = decode_varint(buf, head[1]) if head is not None else None
        if len(buf) > _MAX_CAPSULE or (length is not None and length[0] > _MAX_CAPSULE):
            raise ValueError("capsule larger than 64 KiB")
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete capsule held."""
        return len(self._buf)
