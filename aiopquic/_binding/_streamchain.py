"""MoQT subgroup-object codecs (aiopquic 0.6.1's ``aiopquic._binding._streamchain``).

:func:`encode_object_subgroup` and :func:`encode_object_subgroup_vi64` build the wire bytes of
one object on a subgroup stream, the inverse of
:meth:`~aiopquic.streamchain.StreamChain.parse_object_subgroup` and its vi64 twin.  The bytes
are the same as 0.6.1's for every valid input.  :class:`~aiopquic.streamchain.StreamChain` is
re-exported from here as it was in 0.6.1.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from aiopquic._codec_base import c_codecs
from aiopquic.buffer import _ONE_BYTE, encode_uint_var, encode_uint_vi64
from aiopquic.streamchain import StreamChain

__all__ = ["StreamChain", "encode_object_subgroup", "encode_object_subgroup_vi64"]

_BytesLike = Union[bytes, bytearray, memoryview]
_PACK_H = struct.Struct(">H").pack
# An extension value: int for an even type, bytes-like for an odd one (TypeError otherwise).
_ExtValue = Any


def _encode_extensions(
    exts: Mapping[int, _ExtValue], kvp_delta: bool, enc: Callable[[int], bytes]
) -> bytes:
    """The (type, value) pairs of an extension block, without the block length."""
    parts: list[_BytesLike] = []
    append = parts.append
    prev = 0
    items = sorted(exts.items()) if kvp_delta else exts.items()
    for ext_id, value in items:
        if kvp_delta:
            append(enc(ext_id - prev))
            prev = ext_id
        else:
            append(enc(ext_id))
        if ext_id & 1:
            append(enc(len(value)))
            append(value)
        else:
            append(enc(value))
    return b"".join(parts)


def _encode(
    enc: Callable[[int], bytes],
    delta: int,
    exts: Optional[Mapping[int, _ExtValue]],
    status: int,
    payload: _BytesLike,
    extensions_present: bool,
    kvp_delta: bool,
    one: int,
    two_prefix: int,
) -> bytes:
    # ``one``: values below it are one byte in this codec; ``two_prefix``: the prefix of the
    # 2-byte form (both codecs hold 14 bits in 2 bytes).
    head = _ONE_BYTE[delta] if 0 <= delta < one else enc(delta)
    if extensions_present:
        if status == 0 and exts:
            block = _encode_extensions(exts, kvp_delta, enc)
            head += enc(len(block)) + block
        else:
            head += b"\x00"
    length = len(payload)
    if status == 0 and length:
        if length < one:
            return head + _ONE_BYTE[length] + payload
        if length < 0x4000:
            return head + _PACK_H(length | two_prefix) + payload
        return head + enc(length) + payload
    return head + b"\x00" + enc(status)


def encode_object_subgroup(
    delta: int,
    exts: Optional[Mapping[int, _ExtValue]],
    status: int,
    payload: _BytesLike,
    extensions_present: bool,
    kvp_delta: bool = False,
) -> bytes:
    """Encode one subgroup-stream object body with RFC 9000 varints.

    ``delta`` is the object id minus the previous one minus 1 (the object id for the first
    object).  If ``extensions_present``, an extension block follows: its length, then each
    ``(type, value)`` of ``exts`` (even type: varint value; odd type: length-prefixed bytes;
    sorted and delta-coded types with ``kvp_delta``, for draft 16 and later); it is empty
    unless ``status`` is 0 (NORMAL).  Then the payload length and payload, or for an empty
    payload or a non-zero status, a length of 0 and the status.
    """
    return _encode(
        encode_uint_var, delta, exts, status, payload, extensions_present, kvp_delta, 0x40, 0x4000
    )


def encode_object_subgroup_vi64(
    delta: int,
    exts: Optional[Mapping[int, _ExtValue]],
    status: int,
    payload: _BytesLike,
    extensions_present: bool,
    kvp_delta: bool = False,
) -> bytes:
    """Same as :func:`encode_object_subgroup` with draft-18 vi64 integers."""
    return _encode(
        encode_uint_vi64, delta, exts, status, payload, extensions_present, kvp_delta, 0x80, 0x8000
    )



#: The pure-Python encoders (what PyPy runs; on CPython the two names above are the C
#: functions of ``aiopquic._ccodecs`` when it was built, giving the same bytes and errors).
py_encode_object_subgroup = encode_object_subgroup
py_encode_object_subgroup_vi64 = encode_object_subgroup_vi64

_C = c_codecs()
if not TYPE_CHECKING and _C is not None:
    encode_object_subgroup = _C.encode_object_subgroup  # noqa: F811
    encode_object_subgroup_vi64 = _C.encode_object_subgroup_vi64  # noqa: F811
