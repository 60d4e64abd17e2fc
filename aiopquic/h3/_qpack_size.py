"""Upper bounds on the decoded size of QPACK field sections (RFC 9204), computed *before*
pylsqpack decodes them.

pylsqpack has no limit on what a header block decodes to: one 4,000-byte dynamic table entry
referenced 16,000 times turns a 16 KB HEADERS frame into a 64 MB header list.  This module
follows the peer's encoder stream (only the sizes of the entries it inserts) and walks a
header block's field lines, so that a block whose decoded size (RFC 9114 section 4.2.2: name
+ value + 32 per field) may exceed the limit is refused without being decoded.

Every size here is an upper bound: a Huffman-coded string of ``n`` bytes decodes to at most
``8 * n // 5`` bytes (the shortest code is 5 bits), and an entry whose size is unknown counts
as the whole table capacity.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import pylsqpack

__all__ = ["EncoderStreamSizes", "static_sizes"]

_ENTRY_OVERHEAD = 32
_STATIC_COUNT = 99
_static: Optional[tuple[tuple[int, ...], tuple[int, ...]]] = None


def _prefix_int(buf: bytes, pos: int, bits: int) -> Optional[tuple[int, int]]:
    """RFC 7541 section 5.1 integer with a ``bits``-bit prefix at ``buf[pos]``; ``None`` if
    truncated (or absurdly long)."""
    if pos >= len(buf):
        return None
    mask = (1 << bits) - 1
    value = buf[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 62:
            raise ValueError("QPACK integer too large")
    return None


def encode_prefix_int(value: int, bits: int, first: int) -> bytes:
    """Encode ``value`` with a ``bits``-bit prefix, OR-ing ``first`` into the first byte."""
    mask = (1 << bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def static_sizes() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(name length, entry size) of each static table entry, read from pylsqpack itself."""
    global _static
    if _static is None:
        names: list[int] = []
        sizes: list[int] = []
        decoder = pylsqpack.Decoder(0, 0)
        for index in range(_STATIC_COUNT):
            block = b"\x00\x00" + encode_prefix_int(index, 6, 0xC0)
            _, headers = decoder.feed_header(index * 4, block)
            name, value = headers[0]
            names.append(len(name))
            sizes.append(len(name) + len(value) + _ENTRY_OVERHEAD)
        _static = (tuple(names), tuple(sizes))
    return _static


def _string(buf: bytes, pos: int, bits: int) -> Optional[tuple[int, int]]:
    """A string literal whose H flag is the bit just above a ``bits``-bit length prefix;
    returns (upper bound of the decoded length, position after the string)."""
    if pos >= len(buf):
        return None
    huffman = buf[pos] & (1 << bits)
    head = _prefix_int(buf, pos, bits)
    if head is None:
        return None
    length, pos = head
    if pos + length > len(buf):
        return None
    return (length * 8 // 5 if huffman else length), pos + length


class EncoderStreamSizes:
    """Follows the peer's QPACK encoder stream and keeps an upper bound of the size of every
    dynamic table entry that can still be live; bounds header blocks against it."""

    def __init__(self, max_table_capacity: int) -> None:
        self.capacity = max_table_capacity
        self.max_entries = max_table_capacity // _ENTRY_OVERHEAD
        self.inserts = 0
        # (name length, entry size) bounds of the newest entries, oldest first
        self._sizes: deque[tuple[int, int]] = deque(maxlen=max(self.max_entries, 1))
        self._buf = b""
        self._broken = False  # unparsable stream: every dynamic entry counts as the capacity
        # the largest size bound of any entry a header block can reference (static, or
        # dynamic ever inserted; small() counts the capacity once the stream is broken)
        self.largest = max(static_sizes()[1])

    def _entry(self, absolute: int) -> tuple[int, int]:
        """(name length, entry size) bounds of the entry with this absolute index."""
        age = self.inserts - 1 - absolute
        if self._broken or absolute < 0 or age < 0 or age >= len(self._sizes):
            return self.capacity, self.capacity
        return self._sizes[-1 - age]

    def _insert(self, name: int, size: int) -> None:
        cap = self.capacity
        size = min(size, cap)
        self._sizes.append((min(name, cap), size))
        self.inserts += 1
        if size > self.largest:
            self.largest = size

    def small(self, block_len: int, limit: int) -> bool:
        """True when any header block of ``block_len`` bytes decodes to at most ``limit``
        bytes (name + value + 32 per field) whatever it references: each field line takes
        at least one byte and yields at most one entry (``largest``) plus its literal bytes
        Huffman-decoded (8/5 each), so the size is at most ``block_len * (largest + 2)``."""
        largest = self.capacity if self._broken else self.largest
        return block_len * (largest + 2) <= limit

    def feed(self, data: bytes) -> None:
        """Follow encoder stream bytes (the same bytes pylsqpack's decoder gets)."""
        if self._broken:
            return
        buf = self._buf + data if self._buf else data
        pos = 0
        n = len(buf)
        names, _ = static_sizes()
        try:
            while pos < n:
                b = buf[pos]
                if b & 0x80:  # insert with name reference
                    head = _prefix_int(buf, pos, 6)
                    if head is None:
                        break
                    index, p = head
                    if b & 0x40:
                        name = names[index] if index < _STATIC_COUNT else self.capacity
                    else:
                        name = self._entry(self.inserts - 1 - index)[0]
                    value = _string(buf, p, 7)
                    if value is None:
                        break
                    self._insert(name, name + value[0] + _ENTRY_OVERHEAD)
                    pos = value[1]
                elif b & 0x40:  # insert with literal name
                    name_s = _string(buf, pos, 5)
                    if name_s is None:
                        break
                    value = _string(buf, name_s[1], 7)
                    if value is None:
                        break
                    self._insert(name_s[0], name_s[0] + value[0] + _ENTRY_OVERHEAD)
                    pos = value[1]
                else:  # set dynamic table capacity (001xxxxx) or duplicate (000xxxxx)
                    head = _prefix_int(buf, pos, 5)
                    if head is None:
                        break
                    if not b & 0x20:
                        self._insert(*self._entry(self.inserts - 1 - head[0]))
                    pos = head[1]
        except ValueError:
            self._broken = True
            return
        self._buf = buf[pos:]
        if len(self._buf) > 2 * self.capacity + 64:
            self._broken = True  # pylsqpack refuses such an instruction anyway

    def required_insert_count(self, block: bytes) -> Optional[int]:
        """The Required Insert Count of a header block (RFC 9204 section 4.5.1.1), or None
        when it cannot be decoded (pylsqpack reports that error)."""
        try:
            head = _prefix_int(block, 0, 8)
        except ValueError:
            return None
        if head is None:
            return None
        encoded = head[0]
        if encoded == 0:
            return 0
        full_range = 2 * self.max_entries
        if full_range == 0 or encoded > full_range:
            return None
        max_value = self.inserts + self.max_entries
        max_wrapped = (max_value // full_range) * full_range
        ric = max_wrapped + encoded - 1
        if ric > max_value:
            if ric <= full_range:
                return None
            ric -= full_range
        return ric if ric > 0 else None

    def bound(self, block: bytes, stop_above: int) -> Optional[int]:
        """An upper bound of the decoded size of ``block`` (its entries must be known: call
        when it is not blocked); stops counting once above ``stop_above``.  ``None`` when the
        block is malformed (pylsqpack then rejects it)."""
        ric = self.required_insert_count(block)
        if ric is None:
            return None
        names, sizes = static_sizes()
        entry = self._entry
        try:
            head = _prefix_int(block, 0, 8)
            assert head is not None
            pos = head[1]
            if pos >= len(block):
                return None
            negative = block[pos] & 0x80
            delta = _prefix_int(block, pos, 7)
            if delta is None:
                return None
            pos = delta[1]
            base = ric - delta[0] - 1 if negative else ric + delta[0]
            total = 0
            n = len(block)
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field line
                    head = _prefix_int(block, pos, 6)
                    if head is None:
                        return None
                    index, pos = head
                    if b & 0x40:
                        if index >= _STATIC_COUNT:
                            return None
                        total += sizes[index]
                    else:
                        total += entry(base - 1 - index)[1]
                elif b & 0x40:  # literal field line with name reference
                    head = _prefix_int(block, pos, 4)
                    if head is None:
                        return None
                    index, pos = head
                    if b & 0x10:
                        if index >= _STATIC_COUNT:
                            return None
                        name = names[index]
                    else:
                        name = entry(base - 1 - index)[0]
                    value = _string(block, pos, 7)
                    if value is None:
                        return None
                    total += name + value[0] + _ENTRY_OVERHEAD
                    pos = value[1]
                elif b & 0x20:  # literal field line with literal name
                    name_s = _string(block, pos, 3)
                    if name_s is None:
                        return None
                    value = _string(block, name_s[1], 7)
                    if value is None:
                        return None
                    total += name_s[0] + value[0] + _ENTRY_OVERHEAD
                    pos = value[1]
                elif b & 0x10:  # indexed field line with post-base index
                    head = _prefix_int(block, pos, 4)
                    if head is None:
                        return None
                    total += entry(base + head[0])[1]
                    pos = head[1]
                else:  # literal field line with post-base name reference
                    head = _prefix_int(block, pos, 3)
                    if head is None:
                        return None
                    name = entry(base + head[0])[0]
                    value = _string(block, head[1], 7)
                    if value is None:
                        return None
                    total += name + value[0] + _ENTRY_OVERHEAD
                    pos = value[1]
                if total > stop_above:
                    return total
        except ValueError:
            return None
        return total
