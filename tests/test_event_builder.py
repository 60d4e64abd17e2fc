"""QuicEndpoint._poll's loop in C (``aiopquic._ccodecs._events_from``, CPython only): the
same items the Python loop builds, every payload freed, also when building fails half-way.

The transfer tests run it on every received chunk (on CPython; PyPy runs the Python loop);
these tests feed it crafted events whose payloads come from libc's malloc, as the network
thread's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import cffi
import pytest

from aiopquic import _native
from aiopquic._codec_base import c_codecs
from aiopquic._native import ffi
from aiopquic.quic import connection, events

pytestmark = pytest.mark.skipif(connection._events_from is None,
                                reason="no C event builder here (PyPy, or not compiled)")

_libc_ffi = cffi.FFI()
_libc_ffi.cdef("void *malloc(size_t);")
_libc = _libc_ffi.dlopen(None)


def _payload(data: bytes) -> Any:
    p = _libc.malloc(max(len(data), 1))
    assert p != _libc_ffi.NULL
    _libc_ffi.memmove(p, data, len(data))
    return ffi.cast("uint8_t *", int(_libc_ffi.cast("uintptr_t", p)))


def _events(specs: Sequence[tuple[int, int, int, int, int, int, Optional[bytes]]]) -> Any:
    evs = ffi.new("aq_event[]", max(len(specs), 1))
    for i, (t, flags, conn, sid, code, code2, data) in enumerate(specs):
        ev = evs[i]
        ev.type, ev.flags, ev.conn, ev.stream_id, ev.code, ev.code2 = (
            t, flags, conn, sid, code, code2)
        if data is None:
            ev.data, ev.len = ffi.NULL, 0
        else:
            ev.data, ev.len = _payload(data), len(data)
    return evs


def _addr(evs: Any) -> int:
    return int(ffi.cast("uintptr_t", evs))


def _build(*args: Any) -> Any:
    fn = connection._events_from
    assert fn is not None
    return fn(*args)


def test_builds_what_the_python_loop_builds() -> None:
    sd, dg, fin = _native.EV_STREAM_DATA, _native.EV_DATAGRAM, _native.FLAG_FIN
    other = _native.EV_WRITABLE
    specs = [
        (sd, 0, 7, 4, 0, 0, b"hello"),
        (sd, fin, 7, 8, 0, 0, b"x" * 70_000),
        (sd, fin, 2**64 - 1, 2**62 - 1, 0, 0, None),  # FIN alone: no payload
        (dg, 0, 9, -1, 0, 0, b"\x00\xff"),
        (dg, 0, 9, -1, 0, 0, b""),
        (other, 3, 5, 12, 2**62, 2**64 - 1, b"native"),
        (other, 0, 5, -1, 0, 0, None),
    ]
    evs = _events(specs)
    out = _build(_addr(evs), len(specs))
    assert out == [
        (7, events.StreamDataReceived(b"hello", False, 4)),
        (7, events.StreamDataReceived(b"x" * 70_000, True, 8)),
        (2**64 - 1, events.StreamDataReceived(b"", True, 2**62 - 1)),
        (9, events.DatagramFrameReceived(b"\x00\xff")),
        (9, events.DatagramFrameReceived(b"")),
        _native.NativeEvent(other, 3, 5, 12, 2**62, 2**64 - 1, b"native"),
        _native.NativeEvent(other, 0, 5, -1, 0, 0, b""),
    ]
    for conn, ev in out[:5]:
        assert type(conn) is int and type(ev.data) is bytes
    assert type(out[1][1].end_stream) is bool
    assert all(evs[i].data == ffi.NULL for i in range(len(specs)))  # freed and cleared
    assert _build(_addr(evs), 0) == []


def test_a_failure_half_way_frees_every_payload() -> None:
    """An item that cannot be built raises out of _events_from after every payload of the
    batch (built or not) was freed: nothing leaks, nothing is freed twice."""
    sd, other = _native.EV_STREAM_DATA, _native.EV_WRITABLE

    def broken(*args: Any) -> Any:
        raise MemoryError("no room for this event")

    mod = c_codecs()
    assert mod is not None
    specs = [(sd, 0, 1, 0, 0, 0, b"a"), (other, 0, 1, 0, 0, 0, b"b"),
             (sd, 0, 1, 0, 0, 0, b"c"), (sd, 0, 1, 4, 0, 0, b"d")]
    evs = _events(specs)
    mod._set_event_types(events.StreamDataReceived, events.DatagramFrameReceived, broken,
                         _native.EV_STREAM_DATA, _native.EV_DATAGRAM, _native.FLAG_FIN)
    try:
        with pytest.raises(MemoryError, match="no room"):
            _build(_addr(evs), len(specs))
    finally:
        connection._c_event_builder()  # the real classes again
    assert all(evs[i].data == ffi.NULL for i in range(len(specs)))


def test_bad_arguments_are_refused() -> None:
    mod = c_codecs()
    assert mod is not None
    with pytest.raises(TypeError):
        _build(0)
    with pytest.raises(ValueError, match="negative"):
        _build(0, -1)
    with pytest.raises(ValueError, match="NULL"):
        _build(0, 1)
    with pytest.raises(TypeError, match="heap types"):
        mod._set_event_types(int, events.DatagramFrameReceived, _native.NativeEvent, 1, 2, 1)
