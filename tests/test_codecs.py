"""The codec modules of aiopquic 0.6.1's face: Buffer, StreamChain, the subgroup-object codecs.

Byte vectors marked "0.6.1" were produced once by aiopquic 0.6.1 (the picoquic-based wheel from
PyPI, CPython 3.12) and pasted here; ours must give the same bytes and the same errors.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import pytest

from aiopquic._binding import _streamchain
from aiopquic._binding._streamchain import (
    encode_object_subgroup,
    encode_object_subgroup_vi64,
    py_encode_object_subgroup,
    py_encode_object_subgroup_vi64,
)
from aiopquic.buffer import (
    Buffer,
    BufferReadError,
    BufferWriteError,
    PyBuffer,
    encode_uint_var,
    encode_uint_vi64,
)
from aiopquic.exceptions import StreamUnderflow
from aiopquic.streamchain import PyStreamChain, StreamChain

# (value, encoding) from 0.6.1's Buffer.push_uint_var.
VARINT_VECTORS = [
    (0, "00"), (1, "01"), (37, "25"), (63, "3f"), (64, "4040"), (15293, "7bbd"),
    (16383, "7fff"), (16384, "80004000"), (494878333, "9d7f3e7d"), (2**30 - 1, "bfffffff"),
    (2**30, "c000000040000000"), (151288809941952652, "c2197c5eff14e88c"),
    (2**62 - 1, "ffffffffffffffff"),
]
# (value, encoding) from 0.6.1's Buffer.push_uint_vi64.
VI64_VECTORS = [
    (0, "00"), (37, "25"), (127, "7f"), (128, "8080"), (16383, "bfff"), (16384, "c04000"),
    (2097151, "dfffff"), (2097152, "e0200000"), (268435455, "efffffff"),
    (268435456, "f010000000"), (34359738367, "f7ffffffff"), (34359738368, "f80800000000"),
    (4398046511103, "fbffffffffff"), (4398046511104, "fc040000000000"),
    (562949953421311, "fdffffffffffff"), (562949953421312, "fe02000000000000"),
    (2**56 - 1, "feffffffffffffff"), (2**56, "ff0100000000000000"),
    (2**64 - 1, "ffffffffffffffffff"),
]

# encode_object_subgroup(_vi64) arguments, and 0.6.1's output (varint, vi64) without the
# trailing payload, which follows when status is 0 and the payload is not empty.
OBJECT_VECTORS: list[tuple[tuple[Any, ...], str, str]] = [
    ((0, None, 0, b"hello", False, False), "0005", "0005"),
    ((0, None, 0, b"hello", True, False), "000005", "000005"),
    ((5, None, 3, b"", False, False), "050003", "050003"),
    ((5, None, 3, b"ignored", True, False), "05000003", "05000003"),
    ((0, None, 0, b"", True, False), "00000000", "00000000"),
    ((1, {2: 5, 3: b"ab"}, 0, b"payload", True, False), "010602050302616207",
     "010602050302616207"),
    ((1, {0x3C: 1000, 0x0B: b"\x01\x02\x03", 4: 70000}, 0, b"x" * 100, True, False),
     "010d3c43e80b0301020304800111704064", "010c3c83e80b0301020304c1117064"),
    ((1, {0x3C: 1000, 0x0B: b"\x01\x02\x03", 4: 70000}, 0, b"x" * 100, True, True),
     "010d048001117007030102033143e84064", "010c04c1117007030102033183e864"),
    ((2, {2: 5}, 4, b"", True, True), "02000004", "02000004"),
    ((200, {}, 0, b"y" * 20000, True, True), "40c80080004e20", "80c800c04e20"),
    ((2**20, {7: b"z" * 70, 2**40: 2**33}, 0, b"q", True, True),
     "801000004059074046" + "7a" * 70 + "c00000fffffffff9c00000020000000001",
     "d00000530746" + "7a" * 70 + "f8fffffffff9f20000000001"),
    ((0, {2: 1}, 0, b"", True, False), "000202010000", "000202010000"),
]


# every Buffer test runs on the pure-Python class and (CPython) on the C one
BUFFERS = pytest.mark.parametrize(
    "Buf", [PyBuffer] + ([Buffer] if Buffer is not PyBuffer else []),
    ids=["python"] + (["c"] if Buffer is not PyBuffer else []))


def _expected(args: tuple[Any, ...], head: str) -> bytes:
    payload: bytes = args[3]
    return bytes.fromhex(head) + (payload if args[2] == 0 and payload else b"")


def _chain(data: bytes, split: Optional[int] = None) -> StreamChain:
    chain = StreamChain()
    if split is None:
        chain.extend(data)
    else:
        chain.extend(data[:split])
        chain.extend(memoryview(bytearray(data[split:])))
    return chain


# ---------------------------------------------------------------------------- varints


@pytest.mark.parametrize(("value", "wire"), VARINT_VECTORS)
@BUFFERS
def test_varint_encoding_and_round_trip(Buf: Any, value: int, wire: str) -> None:
    buf = Buf(capacity=1)
    buf.push_uint_var(value)
    assert buf.data.hex() == wire
    assert encode_uint_var(value).hex() == wire
    assert Buf(data=bytes.fromhex(wire)).pull_uint_var() == value
    chain = _chain(bytes.fromhex(wire), split=1 if len(wire) > 2 else None)
    assert chain.pull_uint_var() == value
    assert chain.tell() == len(wire) // 2
    vint = Buf(capacity=4, vi64=False)
    vint.push_vint(value)
    assert vint.data.hex() == wire


@pytest.mark.parametrize(("value", "wire"), VI64_VECTORS)
@BUFFERS
def test_vi64_encoding_and_round_trip(Buf: Any, value: int, wire: str) -> None:
    buf = Buf(capacity=1)
    buf.push_uint_vi64(value)
    assert buf.data.hex() == wire
    assert encode_uint_vi64(value).hex() == wire
    reader = Buf(data=bytes.fromhex(wire), vi64=True)
    assert reader.pull_vint() == value and reader.eof()
    chain = StreamChain(vi64=True)
    for i in range(len(wire) // 2):  # one byte per chunk
        chain.extend(bytes.fromhex(wire)[i : i + 1])
    assert chain.pull_vint() == value


@BUFFERS
def test_varint_errors(Buf: Any) -> None:
    buf = Buf(capacity=8)
    with pytest.raises(ValueError):
        buf.push_uint_var(2**62)
    with pytest.raises(OverflowError):
        buf.push_uint_var(-1)
    with pytest.raises(OverflowError):
        buf.push_uint_vi64(2**64)
    with pytest.raises(OverflowError):
        buf.push_uint_vi64(-1)
    with pytest.raises(OverflowError):
        encode_object_subgroup(-1, None, 0, b"x", False)
    assert buf.tell() == 0 and buf.data == b""


@BUFFERS
def test_vi64_accepts_non_minimal_encodings(Buf: Any) -> None:
    for wire in ("8025", "c00025", "ff0000000000000025"):
        assert Buf(data=bytes.fromhex(wire)).pull_uint_vi64() == 37
        assert _chain(bytes.fromhex(wire)).pull_uint_vi64() == 37


# ---------------------------------------------------------------------------- Buffer


@BUFFERS
def test_buffer_fixed_width_integers_and_bytes(Buf: Any) -> None:
    buf = Buf(capacity=4)
    buf.push_uint8(0xAB)
    buf.push_uint16(0x1234)
    buf.push_uint32(0xDEADBEEF)
    buf.push_uint64(2**64 - 1)
    buf.push_bytes(b"xyz")
    buf.push_uint(3, 0x010203)
    assert buf.tell() == 21 and buf.capacity >= 21
    data = buf.data
    assert data.hex() == "ab1234deadbeefffffffffffffffff78797a010203"
    reader = Buf(data=data)
    assert reader.pull_uint8() == 0xAB
    assert reader.pull_uint16() == 0x1234
    assert reader.pull_uint32() == 0xDEADBEEF
    assert reader.pull_uint64() == 2**64 - 1
    assert reader.pull_bytes(3) == b"xyz"
    assert reader.pull_uint(3) == 0x010203
    assert reader.eof()
    assert reader.data_slice(1, 3) == b"\x12\x34"


@BUFFERS
def test_buffer_masks_small_ints_like_061(Buf: Any) -> None:
    buf = Buf(capacity=4)
    buf.push_uint8(300)
    buf.push_uint16(-1)
    assert buf.data.hex() == "2cffff"


@BUFFERS
def test_buffer_capacity_defaults_and_growth(Buf: Any) -> None:
    assert Buf().capacity == 1024
    assert Buf(capacity=0).capacity == 1024
    buf = Buf(capacity=2)
    assert buf.capacity == 2 and not buf.eof()
    buf.push_bytes(b"12345")
    assert buf.data == b"12345" and buf.capacity >= 5


@BUFFERS
def test_buffer_seek_and_overwrite(Buf: Any) -> None:
    buf = Buf(capacity=16)
    buf.push_uint32(0)
    buf.push_bytes(b"tail")
    end = buf.tell()
    buf.seek(0)
    buf.push_uint_var(16383)  # patch a length in place
    assert buf.tell() == 2
    buf.seek(end)
    assert buf.data == b"\x7f\xff\x00\x00tail"
    buf.seek(16)  # up to capacity is allowed; unwritten bytes read as zeros
    with pytest.raises(BufferReadError):
        buf.seek(17)
    with pytest.raises(BufferReadError):
        buf.seek(-1)
    buf.seek(10)
    assert buf.pull_uint16() == 0


@BUFFERS
def test_buffer_read_errors_leave_cursor(Buf: Any) -> None:
    buf = Buf(data=b"\x40")  # a 2-byte varint cut short
    for pull in (buf.pull_uint_var, buf.pull_uint16, buf.pull_uint32, buf.pull_uint64,
                 lambda: buf.pull_bytes(2)):
        with pytest.raises(BufferReadError):
            pull()
        assert buf.tell() == 0
    with pytest.raises(BufferReadError):
        Buf(data=b"\xc0").pull_uint_vi64()
    with pytest.raises(BufferReadError):
        buf.pull_bytes(-1)
    with pytest.raises(BufferReadError):
        buf.data_slice(0, 2)
    assert buf.pull_uint8() == 0x40
    with pytest.raises(BufferReadError):
        buf.pull_uint8()
    with pytest.raises(BufferReadError):
        Buf(capacity=4).pull_bytes(5)


@BUFFERS
def test_buffer_from_data_is_read_only_copy(Buf: Any) -> None:
    source = bytearray(b"abc")
    buf = Buf(data=memoryview(source))
    source[0] = 0x7A
    assert buf.pull_bytes(3) == b"abc"
    assert buf.data == b"abc"
    for push in (lambda: buf.push_uint8(1), lambda: buf.push_bytes(b"z"),
                 lambda: buf.push_uint_var(1)):
        with pytest.raises(BufferReadError):
            push()


@BUFFERS
def test_buffer_vi64_flag_switches_vint(Buf: Any) -> None:
    buf = Buf(capacity=8, vi64=True)
    assert buf.vi64
    buf.push_vint(128)
    buf.vi64 = False
    buf.push_vint(128)
    assert buf.data.hex() == "80804080"


@BUFFERS
def test_buffer_huge_capacity_is_a_hint(Buf: Any) -> None:
    """A capacity far beyond what is written allocates only what is written."""
    buf = Buf(capacity=2**45)
    buf.push_uint8(1)
    buf.push_bytes(b"x" * (3 << 20))
    assert buf.capacity == 2**45 and buf.tell() == 1 + (3 << 20)


@BUFFERS
def test_buffer_huge_read_lengths(Buf: Any) -> None:
    """A length near 2**63 fails cleanly (no overflow in the C class's arithmetic)."""
    for buf in (Buf(data=b"abc"), Buf(capacity=8)):
        buf.push_uint8(1) if buf.capacity == 8 else buf.pull_uint8()
        with pytest.raises(BufferReadError):
            buf.pull_bytes(2**63 - 1)
        assert buf.tell() == 1


@pytest.mark.parametrize("cls", [StreamChain, PyStreamChain])
def test_streamchain_huge_read_length(cls: Any) -> None:
    chain = cls()
    chain.extend(b"abc")
    chain.pull_uint8()
    with pytest.raises(StreamUnderflow) as info:
        chain.pull_bytes(2**63 - 1)
    assert (info.value.pos, info.value.needed) == (1, 2**63)
    assert chain.tell() == 1


def _run_ops(cls: Any, seed: int) -> list[Any]:
    """A random sequence of Buffer calls; each result (or exception type) is recorded."""
    import random

    rng = random.Random(seed)
    values = [0, 1, 0x3F, 0x40, 0x3FFF, 0x4000, 2**21, 2**28, 2**30, 2**56, 2**62 - 1, 2**62,
              2**64 - 1, 2**64, -1, 300, -300, 2**70]
    if rng.random() < 0.5:
        buf = cls(data=bytes(rng.randrange(256) for _ in range(rng.randrange(24))),
                  vi64=rng.random() < 0.5)
    else:
        buf = cls(capacity=rng.choice([None, 0, 1, 3, 16]), vi64=rng.random() < 0.5)
    log: list[Any] = []
    for _ in range(40):
        name = rng.choice(["push_uint8", "push_uint16", "push_uint32", "push_uint64",
                           "push_uint_var", "push_uint_vi64", "push_vint", "push_bytes",
                           "pull_uint8", "pull_uint16", "pull_uint32", "pull_uint64",
                           "pull_uint_var", "pull_uint_vi64", "pull_vint", "pull_bytes",
                           "pull_uint", "push_uint", "seek", "data_slice", "flip"])
        try:
            if name.startswith("push_uint") and name != "push_uint" or name == "push_vint":
                result = getattr(buf, name)(rng.choice(values))
            elif name == "push_bytes":
                result = buf.push_bytes(rng.choice([b"", b"ab", bytearray(b"xyz"),
                                                    memoryview(b"12345")]))
            elif name == "pull_bytes":
                result = buf.pull_bytes(rng.randrange(-1, 6))
            elif name == "pull_uint":
                result = buf.pull_uint(rng.randrange(0, 10))
            elif name == "push_uint":
                result = buf.push_uint(rng.randrange(1, 10), rng.choice(values))
            elif name == "seek":
                result = buf.seek(rng.randrange(-1, 40))
            elif name == "data_slice":
                a = rng.randrange(-1, 30)
                result = buf.data_slice(a, a + rng.randrange(-1, 8))
            elif name == "flip":
                buf.vi64 = not buf.vi64
                result = buf.vi64
            else:
                result = getattr(buf, name)()
        except (BufferReadError, OverflowError, ValueError, TypeError) as exc:
            result = type(exc)
        log.append((name, result, buf.tell(), buf.capacity, buf.eof(), buf.data))
    return log


@pytest.mark.skipif(Buffer is PyBuffer, reason="no C Buffer here (PyPy, or not built)")
def test_c_buffer_behaves_like_python_buffer() -> None:
    for seed in range(400):
        assert _run_ops(Buffer, seed) == _run_ops(PyBuffer, seed), f"seed {seed}"


@pytest.mark.skipif(Buffer is PyBuffer, reason="no C codecs here (PyPy, or not built)")
def test_codec_calls_keep_none_alive() -> None:
    """The C methods that return None give the caller a reference (None is immortal only from
    CPython 3.12 on; a module built with 3.12.0-3.12.1's headers once returned it without one,
    and 3.11 then freed None and aborted)."""
    import gc
    import sys

    buf, chain = Buffer(capacity=16), StreamChain()
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(1000):
        buf.push_uint8(1)
        buf.seek(0)
        chain.extend(b"x")
        chain.extend(None)
        chain.save()
        chain.rollback()
        chain.commit()
    gc.collect()
    assert sys.getrefcount(None) >= before - 50


def test_buffer_is_the_c_class_on_cpython() -> None:
    import platform

    if platform.python_implementation() != "CPython":
        assert Buffer is PyBuffer
        return
    assert Buffer is not PyBuffer, "aiopquic._ccodecs was not built"
    assert Buffer.__name__ == "Buffer" and Buffer.__module__ == "aiopquic.buffer"
    with pytest.raises(BufferWriteError):
        Buffer(data=b"x").push_uint8(1)


def _encode_both(args: tuple[Any, ...], vi64: bool) -> tuple[Any, Any]:
    """(C result or exception type, Python result or exception type) for one encoder call."""
    out = []
    sc = _streamchain
    for fn in ((sc.encode_object_subgroup_vi64, sc.py_encode_object_subgroup_vi64) if vi64
               else (sc.encode_object_subgroup, sc.py_encode_object_subgroup)):
        try:
            out.append(fn(*args))
        except (OverflowError, ValueError, TypeError) as exc:
            out.append(type(exc))
    return out[0], out[1]


@pytest.mark.skipif(_streamchain.encode_object_subgroup
                    is _streamchain.py_encode_object_subgroup,
                    reason="no C encoders here (PyPy, or not built)")
def test_c_object_encoders_match_python() -> None:
    import random

    rng = random.Random(7)
    ints = [0, 1, 0x3F, 0x40, 0x7F, 0x80, 0x3FFF, 0x4000, 2**21, 2**30, 2**56, 2**62 - 1,
            2**62, 2**64 - 1, 2**64, -1]
    payloads: list[Any] = [b"", b"x", b"y" * 63, b"z" * 64, b"w" * 127, b"v" * 128,
                           b"u" * 0x4000, bytearray(b"ab"), memoryview(b"mv"), "str", 5, None]
    values: list[Any] = ints + [b"", b"odd", bytearray(b"ba"), "s", None]
    for _ in range(3000):
        exts: Any = rng.choice([None, {}, {rng.choice(ints): rng.choice(values)
                                           for _ in range(rng.randrange(1, 4))}])
        args = (rng.choice(ints), exts, rng.choice([0, 0, 1, 3, 2**62, -1]),
                rng.choice(payloads), rng.random() < 0.7, rng.random() < 0.5)
        for vi64 in (False, True):
            c, py = _encode_both(args, vi64)
            assert c == py, (args, vi64)


# ---------------------------------------------------------------------------- StreamChain


def test_streamchain_underflow_reports_pos_and_needed() -> None:
    chain = _chain(b"\x01\x80\x00")
    assert chain.pull_uint8() == 1
    with pytest.raises(StreamUnderflow) as info:
        chain.pull_uint_var()  # 4-byte varint, 2 bytes held
    assert (info.value.pos, info.value.needed) == (1, 5)
    assert info.value.args == (1, 5)
    with pytest.raises(StreamUnderflow) as info:
        chain.pull_bytes(10)
    assert (info.value.pos, info.value.needed) == (1, 11)
    with pytest.raises(StreamUnderflow) as info:
        chain.pull_uint64()
    assert (info.value.pos, info.value.needed) == (1, 9)
    assert chain.pull_uint_vi64() == 0  # 0x80 0x00: a 2-byte vi64, non-minimal
    with pytest.raises(StreamUnderflow) as info:
        chain.pull_uint16()
    assert (info.value.pos, info.value.needed) == (3, 5)
    with pytest.raises(ValueError):
        chain.pull_bytes(-1)


def test_streamchain_save_rollback_commit() -> None:
    chain = StreamChain()
    chain.extend(b"\x05hel")
    assert chain.capacity == 4 and len(chain) == 4
    chain.save()
    length = chain.pull_uint_var()
    with pytest.raises(StreamUnderflow):
        chain.pull_bytes(length)
    chain.rollback()
    assert chain.tell() == 0
    chain.extend(bytearray(b"lo\x01"))
    chain.save()
    assert chain.pull_bytes(chain.pull_uint_var()) == b"hello"
    assert chain.tell() == 6 and len(chain) == 1
    chain.commit()
    assert chain.tell() == 0 and chain.capacity == 1 and chain.data_slice(0, 1) == b"\x01"
    chain.rollback()  # the saved position is 0 after a commit
    assert chain.tell() == 0
    chain.extend(None)
    chain.push_bytes(b"\x02")
    chain.save()
    chain.seek(2)
    chain.rollback()
    assert chain.pull_uint8() == 1
    chain.commit()
    assert chain.pull_uint8() == 2
    chain.commit()
    assert chain.capacity == 0 and len(chain) == 0


def test_streamchain_seek_slice_bounds_and_types() -> None:
    chain = _chain(b"abcdef", split=2)
    assert chain.data_slice(1, 5) == b"bcde" and chain.tell() == 0
    chain.seek(6)
    with pytest.raises(ValueError):
        chain.seek(7)
    with pytest.raises(ValueError):
        chain.data_slice(3, 7)
    with pytest.raises(ValueError):
        chain.data_slice(4, 3)
    with pytest.raises(BufferError):
        chain.extend("text")  # type: ignore[arg-type]


def test_streamchain_keeps_its_own_copy() -> None:
    source = bytearray(b"\x03abc")
    chain = StreamChain()
    chain.extend(memoryview(source))
    source[:] = b"\x00\x00\x00\x00"  # the sender reuses its buffer
    assert chain.pull_bytes(chain.pull_uint_var()) == b"abc"


def test_streamchain_fixed_width_and_large_reads() -> None:
    data = bytes(range(256)) * 20
    chain = _chain(b"\x00\x01\x00\x00\x00\x02" + b"\x00" * 7 + b"\x03" + data, split=3)
    assert chain.pull_uint16() == 1
    assert chain.pull_uint32() == 2
    assert chain.pull_uint64() == 3
    assert chain.pull_bytes(len(data)) == data
    assert len(chain) == 0


def _chain_ops(cls: Any, seed: int) -> list[Any]:
    """Random StreamChain use on random (often truncated or corrupted) object wires, fed in
    random chunks; each result (or exception type and arguments) is recorded."""
    import random

    rng = random.Random(seed)
    ints = [0, 1, 63, 64, 127, 128, 16383, 16384, 2**30, 2**56, 2**62 - 1]
    wire = b""
    for _ in range(rng.randrange(1, 4)):
        exts = rng.choice([None, {}, {rng.choice(ints[:8]) * 2 + rng.randrange(2): None
                                      for _ in range(rng.randrange(1, 3))}])
        if exts:
            exts = {k: (bytes(rng.randrange(40)) if k & 1 else rng.choice(ints))
                    for k in exts}
        enc = rng.choice([py_encode_object_subgroup, py_encode_object_subgroup_vi64])
        wire += enc(rng.choice(ints[:6]), exts, rng.choice([0, 0, 3]),
                    bytes(rng.randrange(300)), rng.random() < 0.8, rng.random() < 0.5)
    data = bytearray(wire)
    for _ in range(rng.randrange(3)):  # corrupt a few bytes
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data
    chain = cls(vi64=rng.random() < 0.5)
    log: list[Any] = []
    fed = 0
    for _ in range(30):
        if fed < len(data) and rng.random() < 0.4:
            step = rng.randrange(1, 64)
            chain.extend(rng.choice([bytes, bytearray, memoryview])(data[fed:fed + step]))
            fed += step
        op = rng.choice(["parse", "parse_vi64", "pull_uint_var", "pull_uint_vi64", "pull_vint",
                         "pull_uint8", "pull_uint16", "pull_uint32", "pull_uint64",
                         "pull_bytes", "pull_uint", "save", "rollback", "commit", "seek",
                         "data_slice"])
        try:
            if op.startswith("parse"):
                fn = (chain.parse_object_subgroup_vi64 if op == "parse_vi64"
                      else chain.parse_object_subgroup)
                result = fn(rng.random() < 0.8, rng.choice([-1, 0, 8, 100, 1 << 16]),
                            rng.random() < 0.5)
            elif op in ("pull_bytes", "pull_uint"):
                result = getattr(chain, op)(rng.randrange(-1, 12))
            elif op == "seek":
                result = chain.seek(rng.randrange(-1, 40))
            elif op == "data_slice":
                a = rng.randrange(-1, 20)
                result = chain.data_slice(a, a + rng.randrange(-1, 10))
            else:
                result = getattr(chain, op)()
        except (StreamUnderflow, ValueError, OverflowError, RuntimeError) as exc:
            result = (type(exc), exc.args)
        log.append((op, result, chain.tell(), chain.capacity, len(chain)))
    return log


@pytest.mark.skipif(StreamChain is PyStreamChain,
                    reason="no C StreamChain here (PyPy, or not built)")
def test_c_streamchain_behaves_like_python_streamchain() -> None:
    for seed in range(600):
        assert _chain_ops(StreamChain, seed) == _chain_ops(PyStreamChain, seed), f"seed {seed}"


# ---------------------------------------------------------------------------- objects


@pytest.mark.parametrize(("args", "head", "head_vi64"), OBJECT_VECTORS)
def test_object_encoding_matches_061(args: tuple[Any, ...], head: str, head_vi64: str) -> None:
    assert encode_object_subgroup(*args) == _expected(args, head)
    assert encode_object_subgroup_vi64(*args) == _expected(args, head_vi64)


@pytest.mark.parametrize(("args", "head", "head_vi64"), OBJECT_VECTORS)
def test_object_round_trip(args: tuple[Any, ...], head: str, head_vi64: str) -> None:
    delta, exts, status, payload, present, kvp_delta = args
    want_exts = exts if present and status == 0 and exts else None
    want = (delta, want_exts, status, payload if status == 0 else b"")
    for wire, parse_name in ((_expected(args, head), "parse_object_subgroup"),
                             (_expected(args, head_vi64), "parse_object_subgroup_vi64")):
        for split in (None, 1, len(wire) // 2):
            chain = _chain(wire + b"\xff", split=split)  # plus the next object's first byte
            assert getattr(chain, parse_name)(present, 1 << 16, kvp_delta) == want
            assert chain.tell() == len(wire) and len(chain) == 1


def test_object_underflow_positions_match_061() -> None:
    # (bytes held, pos, needed) for every truncation, from 0.6.1.
    args = (1, {2: 5, 3: b"ab"}, 0, b"payload", True, False)
    wire = encode_object_subgroup(*args)
    expected = [(0, 0, 1), (1, 1, 2), (2, 2, 3), (3, 3, 4), (4, 4, 5), (5, 5, 6), (6, 6, 8),
                (7, 6, 8), (8, 8, 9), (9, 9, 16), (12, 9, 16), (15, 9, 16)]
    for held, pos, needed in expected:
        chain = _chain(wire[:held])
        chain.save()
        with pytest.raises(StreamUnderflow) as info:
            chain.parse_object_subgroup(True, 1 << 16, False)
        assert (info.value.pos, info.value.needed) == (pos, needed)
        chain.rollback()
        assert chain.tell() == 0
    wire = encode_object_subgroup_vi64(*OBJECT_VECTORS[6][0])
    expected = [(0, 0, 1), (4, 3, 5), (7, 7, 10), (9, 7, 10), (12, 11, 14), (15, 15, 115),
                (114, 15, 115)]
    for held, pos, needed in expected:
        chain = _chain(wire[:held], split=1 if held > 1 else None)
        with pytest.raises(StreamUnderflow) as info:
            chain.parse_object_subgroup_vi64(True, 1 << 16, False)
        assert (info.value.pos, info.value.needed) == (pos, needed)


@pytest.mark.parametrize(
    ("wire", "limit", "kvp_delta", "exc", "vi64_exc"),
    [  # outcomes from 0.6.1
        ("0005", 4, False, RuntimeError, RuntimeError),  # block longer than the limit
        ("0002010500", 100, False, OverflowError, OverflowError),  # value beyond its block
        ("000302400500", 100, False, StreamUnderflow, OverflowError),
        ("0011c000000000000001c0ffffffffffffff00", 100, True, OverflowError, StreamUnderflow),
    ],
)
def test_object_malformed_extensions(
    wire: str, limit: int, kvp_delta: bool, exc: type[Exception], vi64_exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        _chain(bytes.fromhex(wire)).parse_object_subgroup(True, limit, kvp_delta)
    with pytest.raises(vi64_exc):
        _chain(bytes.fromhex(wire)).parse_object_subgroup_vi64(True, limit, kvp_delta)


def test_object_extension_overrun_and_type_overflow() -> None:
    # even type 2 whose 2-byte value runs past a 2-byte block
    with pytest.raises(RuntimeError, match="overrun"):
        _chain(bytes.fromhex("0002024005" "00" "00")).parse_object_subgroup(True, 100)
    # kvp_delta: 2**64 - 1 then +1 leaves the 64-bit type space
    block = encode_uint_vi64(2**64 - 1) + b"\x00" + b"\x01\x00"
    wire = b"\x00" + encode_uint_vi64(len(block)) + block + b"\x00\x00"
    with pytest.raises(OverflowError, match="overflow"):
        _chain(wire).parse_object_subgroup_vi64(True, 100, True)


def test_parse_loop_like_aiomoqt() -> None:
    """Objects arriving in odd-sized chunks, drained with save/rollback/commit."""
    objects = [(i & 3, {2: i} if i % 3 == 0 else None, 0, bytes([i]) * (i * 37 % 500 + 1))
               for i in range(60)]
    wire = b"".join(encode_object_subgroup_vi64(d, e, s, p, True, True)
                    for d, e, s, p in objects)
    chain = StreamChain()
    got = []
    for start in range(0, len(wire), 97):
        chain.extend(memoryview(wire)[start : start + 97])
        while chain.capacity > 0:
            chain.save()
            try:
                got.append(chain.parse_object_subgroup_vi64(True, 1 << 16, True))
            except StreamUnderflow:
                chain.rollback()
                break
            chain.commit()
    assert got == objects
    assert chain.capacity == 0


# ---------------------------------------------------------------------------- versions


def test_print_versions_layout() -> None:
    from aiopquic import __version__
    from aiopquic.versions import print_versions

    out = io.StringIO()
    print_versions(file=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{'aiopquic:':<11}{__version__}"
    assert all(len(line) > 11 and line[:11].rstrip().endswith(":") for line in lines)
