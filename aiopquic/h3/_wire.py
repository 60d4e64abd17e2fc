"""Wire helpers shared by the HTTP/3 and WebTransport code: QUIC variable-length integers
(RFC 9000 section 16), HTTP/3 frames (RFC 9114 section 7.1) and capsules (RFC 9297
section 3.2)."""

from __future__ import annotations

from typing import Optional, Union

__all__ = ["VARINT_MAX", "encode_varint", "decode_varint", "encode_frame", "encode_capsule",
           "decode_capsule"]

VARINT_MAX = (1 << 62) - 1

Buf = Union[bytes, bytearray, memoryview]


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (0 .. 2**62-1) as a QUIC variable-length integer.

    Raises :class:`ValueError` for a value out of range."""
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint cannot encode a negative value ({value})")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError(f"varint cannot encode {value} (maximum 2**62-1)")


def decode_varint(buf: Buf, pos: int = 0) -> Optional[tuple[int, int]]:
    """Decode the varint at ``buf[pos:]``; returns ``(value, next_pos)`` or ``None`` when
    ``buf`` ends before the integer does."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    size = 1 << (first >> 6)
    if size == 1:
        return first, pos + 1
    end = pos + size
    if end > len(buf):
        return None
    value = int.from_bytes(bytes(buf[pos:end]), "big") & ((1 << (8 * size - 2)) - 1)
    return value, end


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """An HTTP/3 frame: type, length, payload."""
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def encode_capsule(capsule_type: int, value: bytes) -> bytes:
    """A capsule (RFC 9297): type, length, value."""
    return encode_varint(capsule_type) + encode_varint(len(value)) + value


def decode_capsule(buf: Buf, pos: int = 0) -> Optional[tuple[int, bytes, int]]:
    """Decode the capsule at ``buf[pos:]``: ``(type, value, next_pos)``, or ``None`` if it is
    not complete yet."""
    head = decode_varint(buf, pos)
    if head is None:
        return None
    ctype, p = head
    length = decode_varint(buf, p)
    if length is None:
        return None
    size, p = length
    if p + size > len(buf):
        return None
    return ctype, bytes(buf[p:p + size]), p + size
