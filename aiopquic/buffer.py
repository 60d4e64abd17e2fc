"""A byte buffer with the integer codecs QUIC and MoQT use (aiopquic 0.6.1's ``aiopquic.buffer``).

:class:`Buffer` has aioquic's ``Buffer`` API (one cursor shared by reads and writes,
``push_*``/``pull_*`` for big-endian integers, bytes and QUIC variable-length integers) plus the
draft-18 MoQT "vi64" integers that aiopquic 0.6.1 added for aiomoqt:

- ``pull_uint_var`` / ``push_uint_var``: RFC 9000 section 16 varints (2-bit length prefix,
  1/2/4/8 bytes, values below 2**62);
- ``pull_uint_vi64`` / ``push_uint_vi64``: draft-18 vi64 (the number of leading 1 bits of the
  first byte, plus one, is the length: 1 to 9 bytes, values below 2**64); encoding is minimal,
  decoding accepts non-minimal forms;
- ``pull_vint`` / ``push_vint``: whichever of the two the buffer's ``vi64`` flag selects.

``Buffer(capacity=n)`` is a write buffer that grows on demand (``capacity`` defaults to 1024);
``Buffer(data=b)`` reads a copy of ``b`` and cannot be written to.  Reading past the end raises
:class:`BufferReadError`, and so does writing to a ``data=`` buffer.

The module-level :func:`encode_uint_var` and :func:`encode_uint_vi64` return the encoding of one
integer as ``bytes``.  On CPython, :class:`Buffer` is a C class (``aiopquic._ccodecs``, built
with the package); on PyPy it is the plain-Python class below (:data:`PyBuffer` on both),
which PyPy's JIT runs faster than C behind its C-API emulation.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Optional, Union

from aiopquic._codec_base import _UNPACK_Q, _VI64_LEN, _VI64_MASK, _IntReader, c_codecs

__all__ = [
    "Buffer",
    "BufferReadError",
    "BufferWriteError",
    "UINT_VAR_MAX",
    "UINT_VAR_MAX_SIZE",
    "UINT_VI64_MAX",
    "encode_uint_var",
    "encode_uint_vi64",
    "size_uint_var",
    "PyBuffer",
]

#: Largest value a QUIC (RFC 9000) variable-length integer holds.
UINT_VAR_MAX = (1 << 62) - 1
#: Longest QUIC variable-length integer, in bytes.
UINT_VAR_MAX_SIZE = 8
#: Largest value a draft-18 vi64 integer holds.
UINT_VI64_MAX = (1 << 64) - 1

_BytesLike = Union[bytes, bytearray, memoryview]

_ONE_BYTE = tuple(bytes((i,)) for i in range(256))
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_PACK_H = _H.pack
_PACK_I = _I.pack
_PACK_Q = _Q.pack

# Length-prefix bits for an n-byte vi64 (n <= 8), already shifted into place.
_VI64_PREFIX = tuple(
    0 if n == 0 else ((0xFF00 >> (n - 1)) & 0xFF) << (8 * (n - 1)) for n in range(9)
)


class BufferReadError(ValueError):
    """A read went past the end of a :class:`Buffer` (or a write hit a read-only one).  A
    :class:`ValueError`, as in aioquic, so header parsing fails with one exception type."""


class BufferWriteError(BufferReadError):
    """A write to a read-only (``data=``) :class:`Buffer` (aioquic's name; also a
    :class:`BufferReadError`, which aiopquic 0.6.1 raised there)."""


def size_uint_var(value: int) -> int:
    """Bytes of the shortest RFC 9000 variable-length encoding of ``value``; raises
    :class:`ValueError` when ``value`` is negative or not below 2**62."""
    if value < 0 or value > UINT_VAR_MAX:
        raise ValueError(f"integer out of range for a varint: {value}")
    return 1 if value < 0x40 else 2 if value < 0x4000 else 4 if value < 0x40000000 else 8


def _negative(value: int) -> OverflowError:
    return OverflowError(f"can't encode a negative value: {value}")


def encode_uint_var(value: int) -> bytes:
    """Return the shortest RFC 9000 variable-length encoding of ``value``.

    Raises :class:`ValueError` for ``value >= 2**62`` and :class:`OverflowError` for a
    negative value (the exception types aiopquic 0.6.1 raises).
    """
    if value < 0x40:
        if value < 0:
            raise _negative(value)
        return _ONE_BYTE[value]
    if value < 0x4000:
        return _PACK_H(value | 0x4000)
    if value < 0x40000000:
        return _PACK_I(value | 0x80000000)
    if value <= UINT_VAR_MAX:
        return _PACK_Q(value | 0xC000000000000000)
    raise ValueError(f"varint value too large: {value}")


def encode_uint_vi64(value: int) -> bytes:
    """Return the minimal draft-18 vi64 encoding of ``value`` (1 to 9 bytes).

    Raises :class:`OverflowError` for a negative value or ``value >= 2**64``.
    """
    if value < 0x80:
        if value < 0:
            raise _negative(value)
        return _ONE_BYTE[value]
    if value < 0x4000:
        return _PACK_H(value | 0x8000)
    if value < 0x10000000:
        if value < 0x200000:
            return (value | 0xC00000).to_bytes(3, "big")
        return _PACK_I(value | 0xE0000000)
    if value < 0x100000000000000:
        n = (value.bit_length() + 6) // 7
        return (value | _VI64_PREFIX[n]).to_bytes(n, "big")
    if value <= UINT_VI64_MAX:
        return b"\xff" + _PACK_Q(value)
    raise OverflowError(f"vi64 value too large: {value}")


class Buffer(_IntReader):
    """A byte buffer with one cursor for reads and writes (aioquic's ``Buffer`` API).

    ``Buffer(capacity=n)`` starts empty and grows as it is written; ``Buffer(data=b)`` holds a
    copy of ``b`` for reading.  ``data`` is everything before the cursor.  ``vi64`` picks the
    integer flavour of :meth:`pull_vint` / :meth:`push_vint`.
    """

    __slots__ = ("_buf", "_pos", "_cap", "_growable", "_vi64")

    def __init__(
        self,
        capacity: Optional[int] = None,
        data: Optional[_BytesLike] = None,
        vi64: bool = False,
    ) -> None:
        self._pos = 0
        self._vi64 = bool(vi64)
        self._buf: Union[bytes, bytearray]
        if data is not None:
            self._buf = bytes(data)
            self._cap = len(self._buf)
            self._growable = False
        else:
            self._buf = bytearray()
            self._cap = capacity if capacity is not None and capacity > 0 else 1024
            self._growable = True

    # ------------------------------------------------------------------ state

    def _capacity(self) -> int:
        cap = self._cap
        size = len(self._buf)
        if size > cap:  # grown by appends since the last look: double like a realloc would
            while cap < size:
                cap *= 2
            self._cap = cap
        return cap

    @property
    def capacity(self) -> int:
        """Size of the buffer: the data length for a read buffer, the allocation for a write one."""
        return self._capacity()

    @property
    def data(self) -> bytes:
        """The bytes before the cursor."""
        buf = self._buf
        pos = self._pos
        if self._growable:
            if pos == len(buf):
                return bytes(buf)
            self._ensure(pos)
            return bytes(buf[:pos])
        return buf[:pos]  # type: ignore[return-value]

    def tell(self) -> int:
        """Return the cursor position."""
        return self._pos

    def seek(self, pos: int) -> None:
        """Move the cursor to ``pos`` (0 to ``capacity``); :class:`BufferReadError` otherwise."""
        if pos < 0 or pos > self._capacity():
            raise BufferReadError(f"seek out of bounds: {pos}")
        self._pos = pos

    def data_slice(self, start: int, end: int) -> bytes:
        """Return the bytes in ``[start, end)`` without moving the cursor."""
        if start < 0 or start > end or end > self._capacity():
            raise BufferReadError(f"data_slice out of bounds: [{start}, {end})")
        self._ensure(end)
        return bytes(self._buf[start:end])

    def eof(self) -> bool:
        """True when the cursor is at (or past) ``capacity``."""
        return self._pos >= self._capacity()

    def _ensure(self, end: int) -> None:
        """Make ``end`` bytes readable: zero-fill a write buffer up to its capacity, else raise."""
        buf = self._buf
        if end <= len(buf):
            return
        if not self._growable or end > self._capacity():
            raise BufferReadError("read out of bounds")
        buf.extend(bytes(end - len(buf)))  # type: ignore[union-attr]

    def _put(self, data: _BytesLike) -> None:
        """Write ``data`` at the cursor (the general case: a seek happened, or read-only)."""
        if not self._growable:
            raise BufferWriteError("write to fixed-capacity buffer")
        buf: bytearray = self._buf  # type: ignore[assignment]
        pos = self._pos
        size = len(buf)
        if pos > size:
            buf.extend(bytes(pos - size))
        end = pos + len(data)
        buf[pos:end] = data
        self._pos = end

    # ------------------------------------------------------------------ reads

    def pull_bytes(self, length: int) -> bytes:
        """Read ``length`` bytes."""
        if length < 0:
            raise BufferReadError("negative read length")
        buf = self._buf
        pos = self._pos
        end = pos + length
        if end > len(buf):
            self._ensure(end)
        self._pos = end
        if self._growable:
            return bytes(buf[pos:end])
        return buf[pos:end]  # type: ignore[return-value]

    # The integer reads (pull_uint8 ... pull_vint) are _IntReader's; _underflow is its
    # hook.  pull_uint_vi64 is this class's own (see aiopquic._codec_base).

    def _retry(self) -> None:
        buf = self._buf
        cap = self._capacity()
        if not self._growable or len(buf) >= cap:
            raise BufferReadError("read out of bounds")
        buf.extend(bytes(cap - len(buf)))  # type: ignore[union-attr]

    def _underflow(self, pos: int, needed: int, retry: Callable[[], int]) -> int:
        """Zero-fill a write buffer up to its capacity and return ``retry()``, else raise."""
        self._retry()
        return retry()

    def pull_uint_vi64(self) -> int:
        """Read a draft-18 vi64 integer (non-minimal encodings are accepted)."""
        pos = self._pos
        buf = self._buf
        try:
            first = buf[pos]
            if first < 0x80:
                self._pos = pos + 1
                return first
            if first < 0xC0:
                value: int = ((first & 0x3F) << 8) | buf[pos + 1]
                self._pos = pos + 2
                return value
        except IndexError:
            self._retry()
            return self.pull_uint_vi64()
        n = _VI64_LEN[first]
        end = pos + n
        if end > len(buf):
            self._ensure(end)
        self._pos = end
        if n == 9:
            return _UNPACK_Q(buf, pos + 1)[0]  # type: ignore[no-any-return]
        return int.from_bytes(buf[pos:end], "big") & _VI64_MASK[n]

    # ------------------------------------------------------------------ writes

    # Writes append when the cursor is at the end of a write buffer (the usual case).  A
    # read-only buffer holds ``bytes``, which has no append/extend: AttributeError, and _put
    # raises BufferWriteError (a BufferReadError).

    def push_bytes(self, data: _BytesLike) -> None:
        """Write ``data`` (any bytes-like object)."""
        pos = self._pos
        buf = self._buf
        if pos == len(buf):
            try:
                buf.extend(data)  # type: ignore[union-attr]
            except AttributeError:
                self._put(data)
                return
            self._pos = pos + len(data)
        else:
            self._put(data)

    def push_uint8(self, value: int) -> None:
        """Write one byte (``value & 0xFF``, as 0.6.1 does)."""
        pos = self._pos
        buf = self._buf
        if pos == len(buf):
            try:
                buf.append(value & 0xFF)  # type: ignore[union-attr]
            except AttributeError:
                self._put(b"")
            self._pos = pos + 1
        else:
            self._put(_ONE_BYTE[value & 0xFF])

    def push_uint16(self, value: int) -> None:
        """Write a big-endian 16-bit integer (``value & 0xFFFF``)."""
        self.push_bytes(_PACK_H(value & 0xFFFF))

    def push_uint32(self, value: int) -> None:
        """Write a big-endian 32-bit integer (``value & 0xFFFFFFFF``)."""
        self.push_bytes(_PACK_I(value & 0xFFFFFFFF))

    def push_uint64(self, value: int) -> None:
        """Write a big-endian 64-bit unsigned integer (:class:`OverflowError` out of range)."""
        if value < 0 or value > UINT_VI64_MAX:
            raise OverflowError(f"uint64 out of range: {value}")
        self.push_bytes(_PACK_Q(value))

    def push_uint(self, size: int, value: int) -> None:
        """Write ``value`` as a big-endian unsigned integer of ``size`` bytes."""
        self.push_bytes(value.to_bytes(size, "big"))

    def push_uint_var(self, value: int) -> None:
        """Write a QUIC (RFC 9000) variable-length integer, shortest form.

        Raises :class:`ValueError` for ``value >= 2**62``, :class:`OverflowError` if negative.
        """
        pos = self._pos
        buf = self._buf
        if pos != len(buf):
            self._put(encode_uint_var(value))
            return
        try:
            if value < 0x40:
                if value < 0:
                    raise _negative(value)
                buf.append(value)  # type: ignore[union-attr]
                self._pos = pos + 1
            elif value < 0x4000:
                buf.extend(_PACK_H(value | 0x4000))  # type: ignore[union-attr]
                self._pos = pos + 2
            elif value < 0x40000000:
                buf.extend(_PACK_I(value | 0x80000000))  # type: ignore[union-attr]
                self._pos = pos + 4
            else:
                data = encode_uint_var(value)  # a bad value fails first, as on every path
                buf.extend(data)  # type: ignore[union-attr]
                self._pos = pos + 8
        except AttributeError:
            self._put(b"")

    def push_uint_vi64(self, value: int) -> None:
        """Write a draft-18 vi64 integer, minimal length (:class:`OverflowError` out of range)."""
        pos = self._pos
        buf = self._buf
        if pos != len(buf):
            self._put(encode_uint_vi64(value))
            return
        try:
            if value < 0x80:
                if value < 0:
                    raise _negative(value)
                buf.append(value)  # type: ignore[union-attr]
                self._pos = pos + 1
            elif value < 0x4000:
                buf.extend(_PACK_H(value | 0x8000))  # type: ignore[union-attr]
                self._pos = pos + 2
            else:
                data = encode_uint_vi64(value)
                buf.extend(data)  # type: ignore[union-attr]
                self._pos = pos + len(data)
        except AttributeError:
            self._put(b"")

    def push_vint(self, value: int) -> None:
        """Write an integer in this buffer's flavour (vi64 if ``vi64`` else RFC 9000 varint)."""
        if self._vi64:
            self.push_uint_vi64(value)
        else:
            self.push_uint_var(value)


#: The pure-Python :class:`Buffer` (what PyPy runs; on CPython, :class:`Buffer` is the C
#: class of ``aiopquic._ccodecs`` when it was built, with the same behaviour).
PyBuffer = Buffer

_C = c_codecs()
if not TYPE_CHECKING and _C is not None:
    _C._set_errors(BufferReadError, BufferWriteError)
    Buffer = _C.Buffer  # noqa: F811
