"""Reassembly of a received stream for incremental parsing (aiopquic 0.6.1's ``StreamChain``).

A :class:`StreamChain` collects the chunks of one stream as they arrive (:meth:`extend`) and
reads them with the same ``pull_*`` methods as :class:`~aiopquic.buffer.Buffer`.  A read that
needs bytes not yet received raises :class:`~aiopquic.exceptions.StreamUnderflow`; the parser
pattern is::

    chain.extend(event.data)
    while chain.capacity > 0:
        chain.save()
        try:
            message = parse(chain)
        except StreamUnderflow:
            chain.rollback()  # wait for the next chunk
            break
        chain.commit()        # drop the parsed bytes; tell() is 0 again

Positions (``tell``, ``seek``, ``data_slice``, ``save``) count from the last :meth:`commit`;
``capacity`` is the number of bytes held since then and ``len(chain)`` those not yet read.
:meth:`StreamChain.parse_object_subgroup` and :meth:`StreamChain.parse_object_subgroup_vi64`
decode one MoQT subgroup-stream object in one call.  Received chunks are copied in, so the
caller may reuse or release them (``StreamDataReceived.data`` may be a memoryview).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NoReturn, Optional, Union

from aiopquic._codec_base import _UNPACK_Q, _VI64_LEN, _VI64_MASK, _IntReader, c_codecs
from aiopquic.exceptions import StreamUnderflow

__all__ = ["StreamChain", "ObjectFields", "PyStreamChain"]

_BytesLike = Union[bytes, bytearray, memoryview]
#: ``(object_id_delta, extensions or None, status, payload)`` from ``parse_object_subgroup``.
ObjectFields = tuple[int, Optional[dict[int, Union[int, bytes]]], int, bytes]

_SSIZE_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
_COPY_VIA_VIEW = 16384  # from this size on, copy once through a memoryview (measured)


class StreamChain(_IntReader):
    """Received bytes of one stream, read with a cursor that can be saved and rolled back."""

    __slots__ = ("_buf", "_pos", "_save", "_vi64")

    _buf: bytearray

    def __init__(self, vi64: bool = False) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._save = 0
        self._vi64 = bool(vi64)

    # ------------------------------------------------------------------ ingest

    def extend(self, data: Optional[_BytesLike]) -> None:
        """Append a received chunk (any bytes-like object; ``None`` is ignored)."""
        if data is None:
            return
        try:
            self._buf += data
        except TypeError:
            raise BufferError(
                f"StreamChain: cannot extend with {type(data).__name__} (not bytes-like)"
            ) from None

    def push_bytes(self, data: Optional[_BytesLike]) -> None:
        """Same as :meth:`extend` (the name ``Buffer`` writers use)."""
        self.extend(data)

    # ------------------------------------------------------------------ state

    @property
    def capacity(self) -> int:
        """Bytes held since the last :meth:`commit` (read or not)."""
        return len(self._buf)

    def __len__(self) -> int:
        """Bytes held and not yet read."""
        return len(self._buf) - self._pos

    def tell(self) -> int:
        """Return the cursor, counted from the last :meth:`commit`."""
        return self._pos

    def seek(self, pos: int) -> None:
        """Move the cursor to ``pos`` (0 to ``capacity``); :class:`ValueError` otherwise."""
        total = len(self._buf)
        if pos < 0 or pos > total:
            raise ValueError(f"StreamChain.seek out of range: {pos} not in [0, {total}]")
        self._pos = pos

    def data_slice(self, start: int, end: int) -> bytes:
        """Return the held bytes ``[start, end)`` without moving the cursor."""
        total = len(self._buf)
        if start < 0 or start > end or end > total:
            raise ValueError(f"StreamChain.data_slice [{start}, {end}) in [0, {total})")
        return bytes(self._buf[start:end])

    def save(self) -> None:
        """Remember the cursor for :meth:`rollback`."""
        self._save = self._pos

    def rollback(self) -> None:
        """Move the cursor back to the last :meth:`save` (0 after a :meth:`commit`)."""
        self._pos = self._save

    def commit(self) -> None:
        """Drop the bytes before the cursor; the cursor and the saved position become 0."""
        pos = self._pos
        if pos:
            if pos == len(self._buf):
                self._buf = bytearray()
            else:
                del self._buf[:pos]
            self._pos = 0
        self._save = 0

    # ------------------------------------------------------------------ reads

    def pull_bytes(self, length: int) -> bytes:
        """Read ``length`` bytes; :class:`ValueError` if negative."""
        if length < 0:
            raise ValueError("StreamChain.pull_bytes negative")
        buf = self._buf
        pos = self._pos
        end = pos + length
        if end > len(buf):
            raise StreamUnderflow(pos, end)
        self._pos = end
        if length < _COPY_VIA_VIEW:
            return bytes(buf[pos:end])
        with memoryview(buf) as view:
            return view[pos:end].tobytes()

    # The integer reads (pull_uint8 ... pull_vint) are _IntReader's; _underflow is its
    # hook.  pull_uint_vi64 is this class's own (see aiopquic._codec_base).

    def _underflow(self, pos: int, needed: int, retry: Callable[[], int]) -> NoReturn:
        """Raise :class:`~aiopquic.exceptions.StreamUnderflow` ``(pos, needed)``."""
        raise StreamUnderflow(pos, needed) from None

    def pull_uint_vi64(self) -> int:
        """Read a draft-18 vi64 integer (non-minimal encodings are accepted)."""
        pos = self._pos
        buf = self._buf
        try:
            first = buf[pos]
        except IndexError:
            raise StreamUnderflow(pos, pos + 1) from None
        if first < 0x80:
            self._pos = pos + 1
            return first
        n = _VI64_LEN[first]
        end = pos + n
        if end > len(buf):
            raise StreamUnderflow(pos, end)
        self._pos = end
        if n == 2:
            return ((first & 0x3F) << 8) | buf[pos + 1]
        if n == 9:
            return _UNPACK_Q(buf, pos + 1)[0]  # type: ignore[no-any-return]
        return int.from_bytes(buf[pos:end], "big") & _VI64_MASK[n]

    # ------------------------------------------------------------------ MoQT objects

    def parse_object_subgroup(
        self, extensions_present: bool, exts_len_limit: int, kvp_delta: bool = False
    ) -> ObjectFields:
        """Read one MoQT subgroup-stream object body with RFC 9000 varints.

        Layout: object id delta; if ``extensions_present``, the extension block length and
        the ``(type, value)`` pairs (even type: integer value; odd type: length-prefixed bytes,
        at most 0xFFFF; with ``kvp_delta`` each type is a delta from the previous one); the
        payload length; then the payload, or the object status when the length is 0.

        Returns ``(delta, extensions or None, status, payload)`` (status 0 with a payload).
        Raises :class:`~aiopquic.exceptions.StreamUnderflow` when the object is incomplete
        (roll back and wait), :class:`RuntimeError` for a block over ``exts_len_limit`` or an
        extension overrunning its block, and :class:`OverflowError` for a type beyond 64 bits
        or a value length beyond its block.
        """
        return self._parse_object(self.pull_uint_var, 0x40, 0x80, extensions_present,
                                  exts_len_limit, kvp_delta)

    def parse_object_subgroup_vi64(
        self, extensions_present: bool, exts_len_limit: int, kvp_delta: bool = False
    ) -> ObjectFields:
        """Same as :meth:`parse_object_subgroup` with draft-18 vi64 integers."""
        return self._parse_object(self.pull_uint_vi64, 0x80, 0xC0, extensions_present,
                                  exts_len_limit, kvp_delta)

    def _parse_object(
        self,
        pull_int: Callable[[], int],
        one: int,
        two: int,
        extensions_present: bool,
        exts_len_limit: int,
        kvp_delta: bool,
    ) -> ObjectFields:
        # Integers of one or two bytes are decoded inline (first byte < ``one``: the value;
        # < ``two``: 6 bits + the next byte, in both codecs); anything else, and every case
        # short of bytes, goes through ``pull_int`` so errors carry 0.6.1's positions.
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos < size and buf[pos] < one:
            delta = buf[pos]
            pos += 1
        else:
            delta = pull_int()
            pos = self._pos
        exts: Optional[dict[int, Union[int, bytes]]] = None
        if extensions_present:
            if pos < size and buf[pos] == 0 and exts_len_limit >= 0:
                pos += 1  # empty extension block
            else:
                self._pos = pos
                exts = self._parse_extensions(pull_int, exts_len_limit, kvp_delta)
                pos = self._pos
        first = buf[pos] if pos < size else two
        if first < one:
            length = first
            pos += 1
        elif first < two and pos + 2 <= size:
            length = ((first & 0x3F) << 8) | buf[pos + 1]
            pos += 2
        else:
            self._pos = pos
            length = pull_int()
            pos = self._pos
        if length == 0:
            self._pos = pos
            return (delta, exts, pull_int(), b"")
        end = pos + length
        if end > size:
            self._pos = pos
            if length > _SSIZE_MAX:
                raise OverflowError("Python int too large to convert to C ssize_t")
            raise StreamUnderflow(pos, end)
        self._pos = end
        if length < _COPY_VIA_VIEW:
            return (delta, exts, 0, bytes(buf[pos:end]))
        with memoryview(buf) as view:
            return (delta, exts, 0, view[pos:end].tobytes())

    def _parse_extensions(
        self, pull_int: Callable[[], int], exts_len_limit: int, kvp_delta: bool
    ) -> Optional[dict[int, Union[int, bytes]]]:
        exts_len = pull_int()
        if exts_len > _SSIZE_MAX:
            raise OverflowError("Python int too large to convert to C ssize_t")
        if exts_len > exts_len_limit:
            raise RuntimeError(f"framer desync: ext_len={exts_len} exceeds limit {exts_len_limit}")
        if exts_len == 0:
            return None
        exts_end = self._pos + exts_len
        exts: dict[int, Union[int, bytes]] = {}
        prev_id = 0
        while self._pos < exts_end:
            ext_id = pull_int()
            if kvp_delta:
                ext_id += prev_id
                if ext_id > _UINT64_MAX:
                    raise OverflowError(f"KVP delta type overflow: {ext_id}")
                prev_id = ext_id
            value: Union[int, bytes]
            if ext_id & 1:
                value_len = pull_int()
                if value_len > exts_end - self._pos or value_len > 0xFFFF:
                    raise OverflowError(
                        f"KVP value length {value_len} exceeds its block at type 0x{ext_id:x}"
                    )
                value = self.pull_bytes(value_len)
            else:
                value = pull_int()
            if self._pos > exts_end:
                raise RuntimeError(
                    f"extensions decode overrun: pos={self._pos} exts_end={exts_end} "
                    f"ext_id=0x{ext_id:x}"
                )
            exts[ext_id] = value
        return exts


#: The pure-Python :class:`StreamChain` (what PyPy runs; on CPython, :class:`StreamChain` is
#: the C class of ``aiopquic._ccodecs`` when it was built, with the same behaviour).
PyStreamChain = StreamChain

_C = c_codecs()
if not TYPE_CHECKING and _C is not None:
    _C._set_underflow(StreamUnderflow)
    StreamChain = _C.StreamChain  # noqa: F811
