"""The integer readers :class:`~aiopquic.buffer.Buffer` and
:class:`~aiopquic.streamchain.StreamChain` share (private).

:class:`_IntReader` holds ``pull_uint8/16/32/64``, ``pull_uint``, ``pull_uint_var``,
``pull_vint`` and the ``vi64`` property once.  The two classes differ only in what a read does
when it runs out of bytes, and that is the hook ``_underflow(pos, needed, retry)``, called from
the ``except`` branch only (a successful read makes no extra call): ``Buffer`` zero-fills a write
buffer up to its capacity (or raises ``BufferReadError``) and returns ``retry()``;
``StreamChain`` raises ``StreamUnderflow(pos, needed)``.  ``pos`` is the cursor when the read
started, ``needed`` the position it would have reached (``pos + 1`` when not even the first
byte is there).

``pull_uint_vi64`` stays in each class: the two check a short read in different places (in
an ``except`` branch or before reading), which shows in the exceptions' ``__context__``.
"""

from __future__ import annotations

import importlib
import platform
import struct
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Optional, Union


def c_codecs() -> Optional[ModuleType]:
    """``aiopquic._ccodecs`` (the codecs in C) on CPython when it was built, else None: PyPy
    runs the Python classes and functions (its JIT makes them faster than C behind cpyext),
    and so does a source tree without the compiled module."""
    if platform.python_implementation() != "CPython":
        return None
    try:
        return importlib.import_module("aiopquic._ccodecs")
    except ImportError:
        return None


_UNPACK_H = struct.Struct(">H").unpack_from
_UNPACK_I = struct.Struct(">I").unpack_from
_UNPACK_Q = struct.Struct(">Q").unpack_from

# vi64: total length from the first byte (leading one bits + 1).
_VI64_LEN = tuple(min(9, 8 - (i ^ 0xFF).bit_length() + 1) for i in range(256))
# Value mask for an n-byte vi64 read as one big-endian integer (n <= 8; n == 9 reads 8 bytes).
_VI64_MASK = tuple(0 if n == 0 else (1 << (7 * n)) - 1 for n in range(9))


class _IntReader:
    """Big-endian integer, RFC 9000 varint and draft-18 vi64 reads over ``_buf`` at ``_pos``."""

    if not TYPE_CHECKING:  # no __dict__ for the subclasses; mypy checks their own __slots__
        __slots__ = ()

    _buf: Union[bytes, bytearray]
    _pos: int
    _vi64: bool

    # ------------------------------------------------------------------ hooks

    def _underflow(self, pos: int, needed: int, retry: Callable[[], int]) -> int:
        """A read from ``pos`` ran out of bytes before ``needed``: raise, or return ``retry()``."""
        raise NotImplementedError

    def pull_bytes(self, length: int) -> bytes:
        """Read ``length`` bytes."""
        raise NotImplementedError

    def pull_uint_vi64(self) -> int:
        """Read a draft-18 vi64 integer."""
        raise NotImplementedError

    # ------------------------------------------------------------------ flavour

    @property
    def vi64(self) -> bool:
        """True: the ``*_vint`` methods use vi64; False: RFC 9000 varints."""
        return self._vi64

    @vi64.setter
    def vi64(self, value: bool) -> None:
        self._vi64 = bool(value)

    # ------------------------------------------------------------------ reads

    # The integer reads index or unpack first and check afterwards: IndexError/struct.error
    # on a short read goes to _underflow.  Cheaper on CPython than comparing with len() up
    # front; the cursor moves only on success.

    def pull_uint8(self) -> int:
        """Read one byte."""
        pos = self._pos
        try:
            value = self._buf[pos]
        except IndexError:
            return self._underflow(pos, pos + 1, self.pull_uint8)
        self._pos = pos + 1
        return value

    def pull_uint16(self) -> int:
        """Read a big-endian 16-bit unsigned integer."""
        pos = self._pos
        try:
            value: int = _UNPACK_H(self._buf, pos)[0]
        except struct.error:
            return self._underflow(pos, pos + 2, self.pull_uint16)
        self._pos = pos + 2
        return value

    def pull_uint32(self) -> int:
        """Read a big-endian 32-bit unsigned integer."""
        pos = self._pos
        try:
            value: int = _UNPACK_I(self._buf, pos)[0]
        except struct.error:
            return self._underflow(pos, pos + 4, self.pull_uint32)
        self._pos = pos + 4
        return value

    def pull_uint64(self) -> int:
        """Read a big-endian 64-bit unsigned integer."""
        pos = self._pos
        try:
            value: int = _UNPACK_Q(self._buf, pos)[0]
        except struct.error:
            return self._underflow(pos, pos + 8, self.pull_uint64)
        self._pos = pos + 8
        return value

    def pull_uint(self, size: int) -> int:
        """Read a big-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self.pull_bytes(size), "big")

    def pull_uint_var(self) -> int:
        """Read a QUIC (RFC 9000) variable-length integer."""
        pos = self._pos
        buf = self._buf
        try:
            first = buf[pos]
            if first < 0x40:
                self._pos = pos + 1
                return first
            if first < 0x80:
                value: int = ((first & 0x3F) << 8) | buf[pos + 1]
                self._pos = pos + 2
                return value
            if first < 0xC0:
                value = _UNPACK_I(buf, pos)[0] & 0x3FFFFFFF
                self._pos = pos + 4
                return value
            value = _UNPACK_Q(buf, pos)[0] & 0x3FFFFFFFFFFFFFFF
            self._pos = pos + 8
            return value
        except (IndexError, struct.error):
            size = 1 << (buf[pos] >> 6) if pos < len(buf) else 1
            return self._underflow(pos, pos + size, self.pull_uint_var)

    def pull_vint(self) -> int:
        """Read an integer in this object's flavour (vi64 if ``vi64`` else RFC 9000 varint)."""
        if self._vi64:
            return self.pull_uint_vi64()
        return self.pull_uint_var()
