"""Argument checks at the Python boundary, shared by the QUIC, asyncio and anyio faces.

Every integer and buffer a caller hands to the library is checked here before it reaches the
native engine, where an out-of-range value would trip an ngtcp2 assertion (and abort the
process), be silently truncated by cffi, or wrap around (a port of 70000 becoming 4464).

The checks raise :class:`TypeError` for a value of the wrong type and :class:`ValueError` for
one out of range; the message names the argument and shows the value, e.g.
``error_code must be an integer in [0, 2**62): got 4611686018427387904``.
"""

from __future__ import annotations

import operator
from typing import Union

__all__ = [
    "VARINT_LIMIT",
    "check_buffer",
    "check_error_code",
    "check_int",
    "check_optional_varint",
    "check_port",
    "check_reason",
    "check_stream_id",
    "check_varint",
]

VARINT_LIMIT = 1 << 62
"""QUIC variable-length integers (error codes, stream ids, frame types) are below 2**62."""

_BytesLike = Union[bytes, bytearray, memoryview]


def check_int(name: str, value: object, low: int, high: int, *, high_text: str = "") -> int:
    """Return ``value`` as an :class:`int` if ``low <= value < high``.

    Accepts :class:`int` and anything with ``__index__`` (``IntEnum`` codes, numpy integers);
    :class:`bool` is refused.  Raises :class:`TypeError` / :class:`ValueError` naming
    ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool: {value!r}")
    if type(value) is not int:
        try:
            value = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}: "
                            f"{value!r}") from None
    assert isinstance(value, int)
    if not low <= value < high:
        raise ValueError(f"{name} must be an integer in [{low}, {high_text or high}): "
                         f"got {value}")
    return int(value)


def check_varint(name: str, value: object) -> int:
    """A QUIC variable-length integer: ``0 <= value < 2**62``."""
    if type(value) is int and 0 <= value < VARINT_LIMIT:
        return value
    return check_int(name, value, 0, VARINT_LIMIT, high_text="2**62")


def check_error_code(value: object, name: str = "error_code") -> int:
    """An application or transport error code: ``0 <= code < 2**62``."""
    return check_varint(name, value)


def check_stream_id(value: object, name: str = "stream_id") -> int:
    """A stream id: ``0 <= id < 2**62``."""
    return check_varint(name, value)


def check_optional_varint(name: str, value: object) -> object:
    """``None`` or a QUIC variable-length integer (e.g. a CONNECTION_CLOSE frame type)."""
    if value is None:
        return None
    return check_varint(name, value)


def check_port(value: object, name: str = "port", *, allow_zero: bool = True) -> int:
    """A UDP port: 0..65535 (1..65535 with ``allow_zero=False``, for a port to send to)."""
    return check_int(name, value, 0 if allow_zero else 1, 65536)


def check_buffer(name: str, value: object) -> _BytesLike:
    """A bytes-like object (:class:`bytes`, :class:`bytearray`, :class:`memoryview`,
    ``array.array``, ...), returned as :class:`bytes` or as a flat byte
    :class:`memoryview` whose ``len()`` is its size in bytes.  :class:`str` and other
    objects raise :class:`TypeError` naming ``name``; the empty buffer is accepted."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        raise TypeError(f"{name} must be a bytes-like object, got str "
                        f"(encode it first, e.g. {name}.encode())")
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object (bytes, bytearray, "
                        f"memoryview), got {type(value).__name__}") from None
    if not view.c_contiguous:
        return view.tobytes()
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    return view


def check_reason(value: object, name: str = "reason_phrase", limit: int = 1024) -> bytes:
    """A close reason: a :class:`str`, returned UTF-8 encoded and cut to at most ``limit``
    bytes (at a character boundary) so that the CONNECTION_CLOSE frame fits in a packet."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raw = raw[:limit].decode("utf-8", "ignore").encode("utf-8")
    return raw
