/* aiopquic._ccodecs: aiomoqt's codecs for CPython, in C (stable ABI, CPython >= 3.9):
 * aiopquic.buffer.Buffer, aiopquic.streamchain.StreamChain and
 * aiopquic._binding._streamchain.encode_object_subgroup[_vi64].  (The module also holds the
 * event builder of QuicEndpoint._poll: events.c.)
 *
 * Each is the same as its pure-Python twin in aiopquic/ (which PyPy uses: its JIT runs that
 * faster than a C extension through cpyext), which documents the behaviour;
 * tests/test_codecs.py runs both on random inputs and requires the same results and
 * exceptions.
 *
 * Buffer: one cursor for reads and writes, big-endian integers, RFC 9000 varints and draft-18
 * vi64 integers.
 * State: `mem` holds `len` valid bytes (a write buffer: what was written or zero-filled; a
 * read buffer: the data); `cap` is the capacity the Python API reports (a write buffer's
 * grows by doubling once writes pass it, as the Python class's does); `alloc` is what `mem`
 * can hold.  A read buffer keeps the bytes object it was given (or a copy) in `owner` and
 * points `mem` into it; it is never written.
 *
 * Errors: reads past the end raise BufferReadError and leave the cursor; writes to a read
 * buffer raise BufferWriteError; integers out of range raise OverflowError / ValueError as
 * the Python class does.  The two exception classes are handed in by aiopquic/buffer.py
 * (_set_errors) before the type is used.
 */
#include "pycommon.h"
#include <stdint.h>
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static int nargs_ok(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi) {
  if (nargs >= lo && nargs <= hi) return 1;
  if (lo == hi)
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, lo,
                 nargs);
  else
    PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)", name, lo, hi,
                 nargs);
  return 0;
}

static PyObject *read_error;  /* aiopquic.buffer.BufferReadError (process-wide constants) */
static PyObject *write_error; /* aiopquic.buffer.BufferWriteError */

/* What Buffer and StreamChain share, first in both: the cursor and the integer flavour. */
typedef struct {
  PyObject_HEAD
  Py_ssize_t pos;
  int vi64;
} Cursor;

typedef struct {
  Cursor cur;
  char *mem;
  Py_ssize_t len, cap, alloc;
  PyObject *owner; /* read buffer: the bytes `mem` points into; NULL for a write buffer */
} Buf;

#define UINT_VAR_MAX ((UINT64_C(1) << 62) - 1)

static void free_instance(PyObject *self);

static int raise_read(const char *msg) {
  PyErr_SetString(read_error ? read_error : PyExc_ValueError, msg);
  return -1;
}

/* ------------------------------------------------------------------ memory */

static Py_ssize_t capacity(Buf *b) {
  if (!b->owner && b->len > b->cap) { /* grown by writes since the last look */
    while (b->cap < b->len) b->cap *= 2;
  }
  return b->cap;
}

static int reserve(Buf *b, Py_ssize_t need) {
  if (need <= b->alloc) return 0;
  /* the first write allocates the whole capacity (one allocation for a buffer sized right),
   * up to 1 MiB: a larger capacity is a hint, as for the Python class, not an allocation */
  Py_ssize_t first = b->cap < 64 ? 64 : b->cap > (1 << 20) ? (1 << 20) : b->cap;
  Py_ssize_t n = b->alloc ? b->alloc * 2 : first;
  while (n < need) n *= 2;
  char *m = realloc(b->mem, (size_t)n);
  if (!m) {
    PyErr_NoMemory();
    return -1;
  }
  b->mem = m;
  b->alloc = n;
  return 0;
}

/* Make `end` bytes readable: a write buffer is zero-filled up to `end` when that is within its
 * capacity; otherwise (or a read buffer) BufferReadError. */
static int ensure(Buf *b, Py_ssize_t end) {
  if (end <= b->len) return 0;
  if (b->owner || end > capacity(b)) return raise_read("read out of bounds");
  if (reserve(b, end) != 0) return -1;
  memset(b->mem + b->len, 0, (size_t)(end - b->len));
  b->len = end;
  return 0;
}

/* A fixed-width read of n bytes at the cursor: a write buffer short of them is zero-filled up
 * to its capacity first (as the Python class's integer reads do). */
static const unsigned char *take(Buf *b, Py_ssize_t n) {
  Py_ssize_t end = b->cur.pos + n;
  if (end > b->len) {
    if (b->owner || b->len >= capacity(b)) {
      raise_read("read out of bounds");
      return NULL;
    }
    if (ensure(b, capacity(b)) != 0) return NULL;
    if (end > b->len) {
      raise_read("read out of bounds");
      return NULL;
    }
  }
  return (const unsigned char *)b->mem + b->cur.pos;
}

static int put(Buf *b, const void *data, Py_ssize_t n) {
  if (b->owner) {
    PyErr_SetString(write_error ? write_error : PyExc_ValueError,
                    "write to fixed-capacity buffer");
    return -1;
  }
  Py_ssize_t end = b->cur.pos + n;
  if (reserve(b, end) != 0) return -1;
  if (b->cur.pos > b->len) memset(b->mem + b->len, 0, (size_t)(b->cur.pos - b->len));
  if (n) memcpy(b->mem + b->cur.pos, data, (size_t)n);
  if (end > b->len) b->len = end;
  b->cur.pos = end;
  return 0;
}

static uint64_t be_read(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

static void be_write(unsigned char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--) {
    p[i] = (unsigned char)(v & 0xFF);
    v >>= 8;
  }
}

/* ------------------------------------------------------------------ integer arguments */

/* value as uint64; *neg set when negative, *big when >= 2**64 (both: no value). */
static int as_u64(PyObject *value, uint64_t *out, int *neg, int *big) {
  *neg = *big = 0;
  if (!PyLong_Check(value)) {
    PyErr_Format(PyExc_TypeError, "an integer is required, got %R", (PyObject *)Py_TYPE(value));
    return -1;
  }
  unsigned long long v = PyLong_AsUnsignedLongLong(value);
  if (v == (unsigned long long)-1 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
    PyErr_Clear();
    PyObject *zero = PyLong_FromLong(0);
    if (!zero) return -1;
    int lt = PyObject_RichCompareBool(value, zero, Py_LT);
    Py_DECREF(zero);
    if (lt < 0) return -1;
    if (lt)
      *neg = 1;
    else
      *big = 1;
    return 0;
  }
  *out = (uint64_t)v;
  return 0;
}

/* value & mask for any int (negative ones included, as Python's & gives). */
static int masked(PyObject *value, uint64_t mask, uint64_t *out) {
  if (!PyLong_Check(value)) {
    PyErr_Format(PyExc_TypeError, "an integer is required, got %R", (PyObject *)Py_TYPE(value));
    return -1;
  }
  long long v = PyLong_AsLongLong(value);
  if (v == -1 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
    PyErr_Clear();
    PyObject *m = PyLong_FromUnsignedLongLong(mask);
    if (!m) return -1;
    PyObject *r = PyNumber_And(value, m);
    Py_DECREF(m);
    if (!r) return -1;
    *out = (uint64_t)PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 0;
  }
  *out = (uint64_t)v & mask;
  return 0;
}

static void negative(PyObject *value) {
  PyErr_Format(PyExc_OverflowError, "can't encode a negative value: %S", value);
}

/* ------------------------------------------------------------------ encoders */

static int enc_var(PyObject *value, unsigned char *out) {
  uint64_t v;
  int neg, big;
  if (as_u64(value, &v, &neg, &big) != 0) return -1;
  if (neg) {
    negative(value);
    return -1;
  }
  if (big || v > UINT_VAR_MAX) {
    PyErr_Format(PyExc_ValueError, "varint value too large: %S", value);
    return -1;
  }
  if (v < 0x40) {
    out[0] = (unsigned char)v;
    return 1;
  }
  if (v < 0x4000) {
    be_write(out, v | 0x4000, 2);
    return 2;
  }
  if (v < 0x40000000) {
    be_write(out, v | 0x80000000u, 4);
    return 4;
  }
  be_write(out, v | UINT64_C(0xC000000000000000), 8);
  return 8;
}

static int enc_vi64(PyObject *value, unsigned char *out) {
  uint64_t v;
  int neg, big;
  if (as_u64(value, &v, &neg, &big) != 0) return -1;
  if (neg) {
    negative(value);
    return -1;
  }
  if (big) {
    PyErr_Format(PyExc_OverflowError, "vi64 value too large: %S", value);
    return -1;
  }
  if (v < 0x80) {
    out[0] = (unsigned char)v;
    return 1;
  }
  if (v >= (UINT64_C(1) << 56)) {
    out[0] = 0xFF;
    be_write(out + 1, v, 8);
    return 9;
  }
  int n = 1;
  while (n < 8 && v >= (UINT64_C(1) << (7 * n))) n++;
  /* n leading one bits minus the terminating zero: prefix (0xFF00 >> (n-1)) & 0xFF */
  uint64_t prefix = (uint64_t)((0xFF00u >> (n - 1)) & 0xFF) << (8 * (n - 1));
  be_write(out, v | prefix, n);
  return n;
}

/* ------------------------------------------------------------------ type: lifecycle */

/* Buffer(capacity=None, data=None, vi64=False), parsed by hand: PyArg_ParseTupleAndKeywords
 * costs as much as the rest of a small message's encoding. */
static int parse_init(PyObject *args, PyObject *kwds, PyObject **out) {
  static const char *const names[3] = {"capacity", "data", "vi64"};
  Py_ssize_t n = PyTuple_Size(args);
  if (n < 0) return -1;
  if (n > 3) {
    PyErr_Format(PyExc_TypeError, "Buffer() takes at most 3 arguments (%zd given)", n);
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) out[i] = PyTuple_GetItem(args, i);
  if (!kwds) return 0;
  Py_ssize_t at = 0;
  PyObject *key, *value;
  while (PyDict_Next(kwds, &at, &key, &value)) {
    int i = 0;
    while (i < 3 && !(PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, names[i]) == 0))
      i++;
    if (i == 3) {
      PyErr_Format(PyExc_TypeError, "Buffer() got an unexpected keyword argument %R", key);
      return -1;
    }
    if (i < n) {
      PyErr_Format(PyExc_TypeError, "Buffer() got multiple values for argument '%s'", names[i]);
      return -1;
    }
    out[i] = value;
  }
  return 0;
}

static int Buf_init(Buf *self, PyObject *args, PyObject *kwds) {
  PyObject *parsed[3] = {Py_None, Py_None, Py_False};
  if (parse_init(args, kwds, parsed) != 0) return -1;
  PyObject *capacity_o = parsed[0], *data = parsed[1], *vi64 = parsed[2];
  int flag = PyObject_IsTrue(vi64);
  if (flag < 0) return -1;
  free(self->mem);
  self->mem = NULL;
  Py_CLEAR(self->owner);
  self->len = self->alloc = self->cur.pos = 0;
  self->cur.vi64 = flag;
  if (data != Py_None) {
    PyObject *owner;
    if (PyBytes_CheckExact(data)) {
      owner = data;
      Py_INCREF(owner);
    } else {
      owner = PyObject_Bytes(data);
      if (!owner) return -1;
    }
    self->owner = owner;
    self->mem = NULL;
    self->len = self->cap = PyBytes_Size(owner);
    return 0;
  }
  Py_ssize_t cap = 0;
  if (capacity_o != Py_None) {
    cap = PyLong_AsSsize_t(capacity_o);
    if (cap == -1 && PyErr_Occurred()) return -1;
  }
  self->cap = cap > 0 ? cap : 1024;
  return 0;
}

static void Buf_dealloc(Buf *self) {
  free(self->mem);
  Py_XDECREF(self->owner);
  free_instance((PyObject *)self);
}

/* The readable bytes: a read buffer's live in its bytes object. */
static inline const unsigned char *bytes_of(Buf *b) {
  return (const unsigned char *)(b->owner ? PyBytes_AsString(b->owner) : b->mem);
}

/* ------------------------------------------------------------------ state */

static PyObject *Buf_get_capacity(Buf *self, void *c) {
  (void)c;
  return PyLong_FromSsize_t(capacity(self));
}

static PyObject *Buf_get_data(Buf *self, void *c) {
  (void)c;
  if (self->owner) {
    if (self->cur.pos == self->len) {
      Py_INCREF(self->owner);
      return self->owner;
    }
    return PyBytes_FromStringAndSize(PyBytes_AsString(self->owner), self->cur.pos);
  }
  if (ensure(self, self->cur.pos) != 0) return NULL;
  return PyBytes_FromStringAndSize(self->mem ? self->mem : "", self->cur.pos);
}

/* vi64 and tell(), shared by Buffer and StreamChain (both start with a Cursor). */
static PyObject *Cursor_get_vi64(PyObject *self, void *c) {
  (void)c;
  return PyBool_FromLong(((Cursor *)self)->vi64);
}

static int Cursor_set_vi64(PyObject *self, PyObject *value, void *c) {
  (void)c;
  if (!value) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete vi64");
    return -1;
  }
  int flag = PyObject_IsTrue(value);
  if (flag < 0) return -1;
  ((Cursor *)self)->vi64 = flag;
  return 0;
}

static PyObject *Cursor_tell(PyObject *self, PyObject *unused) {
  (void)unused;
  return PyLong_FromSsize_t(((Cursor *)self)->pos);
}

/* The end of a dealloc: the memory, then the reference every heap type's instance holds. */
static void free_instance(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
  tp_free(self);
  Py_DECREF(tp);
}

/* RFC 9000 varint and draft-18 vi64 lengths from the first byte, and values from the whole
 * encoding (Buffer and StreamChain differ only in what a short read does). */
static inline int var_len(unsigned first) { return 1 << (first >> 6); }

static inline uint64_t var_value(const unsigned char *p, int n) {
  return be_read(p, n) & (n == 1 ? 0x3F : n == 2 ? 0x3FFF : n == 4 ? 0x3FFFFFFF : UINT_VAR_MAX);
}

static inline int vi64_len(unsigned first) {
  int n = 1;
  while (n < 9 && (first & (0x80u >> (n - 1)))) n++; /* leading ones + 1 */
  return n;
}

static inline uint64_t vi64_value(const unsigned char *p, int n) {
  return n == 9 ? be_read(p + 1, 8) : be_read(p, n) & ((UINT64_C(1) << (7 * n)) - 1);
}

static PyObject *Buf_seek(Buf *self, PyObject *arg) {
  Py_ssize_t pos = PyLong_AsSsize_t(arg);
  if (pos == -1 && PyErr_Occurred()) return NULL;
  if (pos < 0 || pos > capacity(self)) {
    PyErr_Format(read_error, "seek out of bounds: %zd", pos);
    return NULL;
  }
  self->cur.pos = pos;
  RETURN_NONE;
}

static PyObject *Buf_data_slice(Buf *self, PyObject *args) {
  Py_ssize_t start, end;
  if (!PyArg_ParseTuple(args, "nn:data_slice", &start, &end)) return NULL;
  if (start < 0 || start > end || end > capacity(self)) {
    PyErr_Format(read_error, "data_slice out of bounds: [%zd, %zd)", start, end);
    return NULL;
  }
  if (ensure(self, end) != 0) return NULL;
  return PyBytes_FromStringAndSize((const char *)bytes_of(self) + start, end - start);
}

static PyObject *Buf_eof(Buf *self, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(self->cur.pos >= capacity(self));
}

/* ------------------------------------------------------------------ reads */

static PyObject *Buf_pull_bytes(Buf *self, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 0) {
    raise_read("negative read length");
    return NULL;
  }
  Py_ssize_t pos = self->cur.pos;
  if (n > PY_SSIZE_T_MAX - pos) { /* pos + n would overflow */
    raise_read("read out of bounds");
    return NULL;
  }
  Py_ssize_t end = pos + n;
  if (end > self->len && ensure(self, end) != 0) return NULL;
  self->cur.pos = end;
  if (self->owner && pos == 0 && end == self->len) {
    Py_INCREF(self->owner);
    return self->owner;
  }
  return PyBytes_FromStringAndSize((const char *)bytes_of(self) + pos, n);
}

static const unsigned char *take_fixed(Buf *self, Py_ssize_t n) {
  if (self->owner) {
    if (self->cur.pos + n > self->len) {
      raise_read("read out of bounds");
      return NULL;
    }
    return (const unsigned char *)PyBytes_AsString(self->owner) + self->cur.pos;
  }
  return take(self, n);
}

#define PULL_FIXED(NAME, N)                                          \
  static PyObject *NAME(Buf *self, PyObject *unused) {               \
    (void)unused;                                                    \
    const unsigned char *p = take_fixed(self, N);                    \
    if (!p) return NULL;                                             \
    uint64_t v = be_read(p, N);                                      \
    self->cur.pos += N;                                                  \
    return PyLong_FromUnsignedLongLong((unsigned long long)v);       \
  }
PULL_FIXED(Buf_pull_uint8, 1)
PULL_FIXED(Buf_pull_uint16, 2)
PULL_FIXED(Buf_pull_uint32, 4)
PULL_FIXED(Buf_pull_uint64, 8)

static PyObject *Buf_pull_uint(Buf *self, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n >= 0 && n <= 8) {
    if (ensure(self, self->cur.pos + n) != 0) return NULL;
    uint64_t v = be_read(bytes_of(self) + self->cur.pos, (int)n);
    self->cur.pos += n;
    return PyLong_FromUnsignedLongLong((unsigned long long)v);
  }
  PyObject *raw = Buf_pull_bytes(self, arg); /* longer (or negative: its error) */
  if (!raw) return NULL;
  PyObject *r = PyObject_CallMethod((PyObject *)&PyLong_Type, "from_bytes", "Os", raw, "big");
  Py_DECREF(raw);
  return r;
}

static PyObject *pull_var(Buf *self) {
  Py_ssize_t pos = self->cur.pos;
  int n = pos < self->len ? var_len(bytes_of(self)[pos]) : 1;
  const unsigned char *p = take_fixed(self, n);
  if (!p) return NULL;
  uint64_t v = var_value(p, n);
  self->cur.pos = pos + n;
  return PyLong_FromUnsignedLongLong((unsigned long long)v);
}

static PyObject *pull_vi64(Buf *self) {
  Py_ssize_t pos = self->cur.pos;
  const unsigned char *p = take_fixed(self, 1);
  if (!p) return NULL;
  unsigned first = p[0];
  int n = vi64_len(first);
  if (first < 0x80) {
    self->cur.pos = pos + 1;
    return PyLong_FromUnsignedLong(first);
  }
  if (n <= 2) {
    p = take_fixed(self, 2);
  } else if (self->owner || pos + n <= self->len) {
    p = take_fixed(self, n);
  } else { /* a write buffer: zero-fill only up to the end of this integer */
    if (ensure(self, pos + n) != 0) return NULL;
    p = (const unsigned char *)self->mem + pos;
  }
  if (!p) return NULL;
  uint64_t v = vi64_value(p, n);
  self->cur.pos = pos + n;
  return PyLong_FromUnsignedLongLong((unsigned long long)v);
}

static PyObject *Buf_pull_uint_var(Buf *self, PyObject *unused) {
  (void)unused;
  return pull_var(self);
}

static PyObject *Buf_pull_uint_vi64(Buf *self, PyObject *unused) {
  (void)unused;
  return pull_vi64(self);
}

static PyObject *Buf_pull_vint(Buf *self, PyObject *unused) {
  (void)unused;
  return self->cur.vi64 ? pull_vi64(self) : pull_var(self);
}

/* ------------------------------------------------------------------ writes */

static PyObject *Buf_push_bytes(Buf *self, PyObject *data) {
  if (PyBytes_Check(data)) {
    if (put(self, PyBytes_AsString(data), PyBytes_Size(data)) != 0) return NULL;
    RETURN_NONE;
  }
  if (PyByteArray_Check(data)) {
    if (put(self, PyByteArray_AsString(data), PyByteArray_Size(data)) != 0) return NULL;
    RETURN_NONE;
  }
  PyObject *raw = PyObject_Bytes(data); /* memoryview, array.array, ... */
  if (!raw) return NULL;
  int rv = put(self, PyBytes_AsString(raw), PyBytes_Size(raw));
  Py_DECREF(raw);
  if (rv != 0) return NULL;
  RETURN_NONE;
}

#define PUSH_MASKED(NAME, N, MASK)                                   \
  static PyObject *NAME(Buf *self, PyObject *value) {                \
    uint64_t v;                                                      \
    unsigned char out[8];                                            \
    if (masked(value, MASK, &v) != 0) return NULL;                   \
    be_write(out, v, N);                                             \
    if (put(self, out, N) != 0) return NULL;                         \
    RETURN_NONE;                                                  \
  }
PUSH_MASKED(Buf_push_uint8, 1, 0xFF)
PUSH_MASKED(Buf_push_uint16, 2, 0xFFFF)
PUSH_MASKED(Buf_push_uint32, 4, 0xFFFFFFFFu)

static PyObject *Buf_push_uint64(Buf *self, PyObject *value) {
  uint64_t v;
  int neg, big;
  unsigned char out[8];
  if (as_u64(value, &v, &neg, &big) != 0) return NULL;
  if (neg || big) {
    PyErr_Format(PyExc_OverflowError, "uint64 out of range: %S", value);
    return NULL;
  }
  be_write(out, v, 8);
  if (put(self, out, 8) != 0) return NULL;
  RETURN_NONE;
}

static PyObject *Buf_push_uint(Buf *self, PyObject *args) {
  PyObject *size, *value;
  if (!PyArg_ParseTuple(args, "OO:push_uint", &size, &value)) return NULL;
  PyObject *raw = PyObject_CallMethod(value, "to_bytes", "Os", size, "big");
  if (!raw) return NULL;
  PyObject *r = Buf_push_bytes(self, raw);
  Py_DECREF(raw);
  return r;
}

static PyObject *Buf_push_uint_var(Buf *self, PyObject *value) {
  unsigned char out[8];
  int n = enc_var(value, out);
  if (n < 0 || put(self, out, n) != 0) return NULL;
  RETURN_NONE;
}

static PyObject *Buf_push_uint_vi64(Buf *self, PyObject *value) {
  unsigned char out[9];
  int n = enc_vi64(value, out);
  if (n < 0 || put(self, out, n) != 0) return NULL;
  RETURN_NONE;
}

static PyObject *Buf_push_vint(Buf *self, PyObject *value) {
  unsigned char out[9];
  int n = self->cur.vi64 ? enc_vi64(value, out) : enc_var(value, out);
  if (n < 0 || put(self, out, n) != 0) return NULL;
  RETURN_NONE;
}

/* ------------------------------------------------------------------ type */

static PyMethodDef Buf_methods[] = {
    {"tell", (PyCFunction)Cursor_tell, METH_NOARGS, "Return the cursor position."},
    {"seek", (PyCFunction)Buf_seek, METH_O,
     "Move the cursor to ``pos`` (0 to ``capacity``); BufferReadError otherwise."},
    {"data_slice", (PyCFunction)Buf_data_slice, METH_VARARGS,
     "Return the bytes in ``[start, end)`` without moving the cursor."},
    {"eof", (PyCFunction)Buf_eof, METH_NOARGS, "True when the cursor is at (or past) capacity."},
    {"pull_bytes", (PyCFunction)Buf_pull_bytes, METH_O, "Read ``length`` bytes."},
    {"pull_uint8", (PyCFunction)Buf_pull_uint8, METH_NOARGS, "Read one byte."},
    {"pull_uint16", (PyCFunction)Buf_pull_uint16, METH_NOARGS,
     "Read a big-endian 16-bit unsigned integer."},
    {"pull_uint32", (PyCFunction)Buf_pull_uint32, METH_NOARGS,
     "Read a big-endian 32-bit unsigned integer."},
    {"pull_uint64", (PyCFunction)Buf_pull_uint64, METH_NOARGS,
     "Read a big-endian 64-bit unsigned integer."},
    {"pull_uint", (PyCFunction)Buf_pull_uint, METH_O,
     "Read a big-endian unsigned integer of ``size`` bytes."},
    {"pull_uint_var", (PyCFunction)Buf_pull_uint_var, METH_NOARGS,
     "Read a QUIC (RFC 9000) variable-length integer."},
    {"pull_uint_vi64", (PyCFunction)Buf_pull_uint_vi64, METH_NOARGS,
     "Read a draft-18 vi64 integer (non-minimal encodings are accepted)."},
    {"pull_vint", (PyCFunction)Buf_pull_vint, METH_NOARGS,
     "Read an integer in this buffer's flavour (vi64 if ``vi64`` else RFC 9000 varint)."},
    {"push_bytes", (PyCFunction)Buf_push_bytes, METH_O, "Write ``data`` (any bytes-like object)."},
    {"push_uint8", (PyCFunction)Buf_push_uint8, METH_O, "Write one byte (``value & 0xFF``)."},
    {"push_uint16", (PyCFunction)Buf_push_uint16, METH_O,
     "Write a big-endian 16-bit integer (``value & 0xFFFF``)."},
    {"push_uint32", (PyCFunction)Buf_push_uint32, METH_O,
     "Write a big-endian 32-bit integer (``value & 0xFFFFFFFF``)."},
    {"push_uint64", (PyCFunction)Buf_push_uint64, METH_O,
     "Write a big-endian 64-bit unsigned integer (OverflowError out of range)."},
    {"push_uint", (PyCFunction)Buf_push_uint, METH_VARARGS,
     "Write ``value`` as a big-endian unsigned integer of ``size`` bytes."},
    {"push_uint_var", (PyCFunction)Buf_push_uint_var, METH_O,
     "Write a QUIC (RFC 9000) variable-length integer, shortest form (ValueError for "
     "values >= 2**62, OverflowError if negative)."},
    {"push_uint_vi64", (PyCFunction)Buf_push_uint_vi64, METH_O,
     "Write a draft-18 vi64 integer, minimal length (OverflowError out of range)."},
    {"push_vint", (PyCFunction)Buf_push_vint, METH_O,
     "Write an integer in this buffer's flavour (vi64 if ``vi64`` else RFC 9000 varint)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Buf_getset[] = {
    {"capacity", (getter)Buf_get_capacity, NULL,
     "Size of the buffer: the data length for a read buffer, the allocation for a write one.",
     NULL},
    {"data", (getter)Buf_get_data, NULL, "The bytes before the cursor.", NULL},
    {"vi64", (getter)Cursor_get_vi64, (setter)Cursor_set_vi64,
     "True: the ``*_vint`` methods use vi64; False: RFC 9000 varints.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Buf_slots[] = {
    {Py_tp_doc, "A byte buffer with one cursor for reads and writes (aioquic's Buffer API), "
                "in C.  Buffer(capacity=n) starts empty and grows as it is written; "
                "Buffer(data=b) reads b and cannot be written to."},
    {Py_tp_init, (void *)Buf_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_dealloc, (void *)Buf_dealloc},
    {Py_tp_methods, Buf_methods},
    {Py_tp_getset, Buf_getset},
    {0, NULL},
};

static PyType_Spec Buf_spec = {
    "aiopquic.buffer.Buffer",
    sizeof(Buf),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    Buf_slots,
};

/* ------------------------------------------------------------------ object encoders */

/* A growing byte string for the encoders. */
typedef struct {
  char *p;
  Py_ssize_t n, cap;
} Out;

static int out_put(Out *o, const void *data, Py_ssize_t n) {
  if (o->n + n > o->cap) {
    Py_ssize_t cap = o->cap ? o->cap * 2 : 256;
    while (cap < o->n + n) cap *= 2;
    char *p = realloc(o->p, (size_t)cap);
    if (!p) {
      PyErr_NoMemory();
      return -1;
    }
    o->p = p;
    o->cap = cap;
  }
  if (n) memcpy(o->p + o->n, data, (size_t)n);
  o->n += n;
  return 0;
}

typedef int (*encfn)(PyObject *, unsigned char *);

static int out_int(Out *o, encfn enc, PyObject *value) {
  unsigned char tmp[9];
  int n = enc(value, tmp);
  return n < 0 ? -1 : out_put(o, tmp, n);
}

static int out_size(Out *o, encfn enc, Py_ssize_t size) {
  PyObject *v = PyLong_FromSsize_t(size);
  if (!v) return -1;
  int rv = out_int(o, enc, v);
  Py_DECREF(v);
  return rv;
}

/* The bytes of a bytes-like object: *tmp holds a copy when one was needed (memoryview, ...). */
static const char *bytes_like(PyObject *obj, Py_ssize_t *len, PyObject **tmp) {
  *tmp = NULL;
  if (PyBytes_Check(obj)) {
    *len = PyBytes_Size(obj);
    return PyBytes_AsString(obj);
  }
  if (PyByteArray_Check(obj)) {
    *len = PyByteArray_Size(obj);
    return PyByteArray_AsString(obj);
  }
  PyObject *view = PyMemoryView_FromObject(obj); /* TypeError unless it is bytes-like */
  if (!view) return NULL;
  *tmp = PyObject_Bytes(view);
  Py_DECREF(view);
  if (!*tmp) return NULL;
  *len = PyBytes_Size(*tmp);
  return PyBytes_AsString(*tmp);
}

/* The (type, value) pairs of an extension block, without the block length. */
static int encode_extensions(Out *o, encfn enc, PyObject *exts, int kvp_delta) {
  PyObject *items = PyMapping_Items(exts);
  if (!items) return -1;
  if (kvp_delta && PyList_Sort(items) != 0) {
    Py_DECREF(items);
    return -1;
  }
  int rv = -1;
  PyObject *bad = NULL; /* borrowed from items: the first odd-type value that is not bytes */
  PyObject *prev = PyLong_FromLong(0);
  if (!prev) goto done;
  Py_ssize_t n = PyList_Size(items);
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *item = PyList_GetItem(items, i); /* borrowed */
    PyObject *id = PyTuple_GetItem(item, 0), *value = PyTuple_GetItem(item, 1);
    if (!id || !value) goto done;
    if (kvp_delta) {
      PyObject *d = PyNumber_Subtract(id, prev);
      if (!d) goto done;
      int e = out_int(o, enc, d);
      Py_DECREF(d);
      if (e != 0) goto done;
      Py_INCREF(id);
      Py_DECREF(prev);
      prev = id;
    } else if (out_int(o, enc, id) != 0) {
      goto done;
    }
    uint64_t idv;
    int neg, big;
    if (as_u64(id, &idv, &neg, &big) != 0) goto done;
    if ((neg || big ? 0 : idv) & 1) { /* odd type: length-prefixed bytes */
      PyObject *tmp;
      Py_ssize_t len;
      const char *b = bytes_like(value, &len, &tmp);
      if (!b) {
        /* as the Python twin: a value with a len() but no bytes fails only once the whole
         * block is built (an integer out of range later in it wins) */
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) goto done;
        PyErr_Clear();
        if ((len = PyObject_Size(value)) < 0 || out_size(o, enc, len) != 0) goto done;
        if (!bad) bad = value;
        continue;
      }
      int e = out_size(o, enc, len) != 0 || out_put(o, b, len) != 0;
      Py_XDECREF(tmp);
      if (e) goto done;
    } else if (out_int(o, enc, value) != 0) {
      goto done;
    }
  }
  if (bad) {
    PyErr_Format(PyExc_TypeError, "extension value: a bytes-like object is required, not %R",
                 (PyObject *)Py_TYPE(bad));
    goto done;
  }
  rv = 0;
done:
  Py_XDECREF(prev);
  Py_DECREF(items);
  return rv;
}

/* encode_object_subgroup[_vi64](delta, exts, status, payload, extensions_present,
 * kvp_delta=False): see aiopquic/_binding/_streamchain.py, whose Python twin gives the same
 * bytes and exceptions. */
/* A size as an integer of the codec (never out of range: sizes are below 2**62). */
static int enc_size(encfn enc, Py_ssize_t size, unsigned char *out) {
  PyObject *v = PyLong_FromSsize_t(size);
  if (!v) return -1;
  int n = enc(v, out);
  Py_DECREF(v);
  return n;
}

static int is_zero(PyObject *status) {
  if (PyLong_Check(status)) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(status, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    return !overflow && v == 0;
  }
  PyObject *zero = PyLong_FromLong(0);
  if (!zero) return -1;
  int r = PyObject_RichCompareBool(status, zero, Py_EQ);
  Py_DECREF(zero);
  return r;
}

/* The object is head (delta, the extension block or its 0), tail (the payload length, or 0
 * and the status) and the payload, built straight into one bytes object. */
static PyObject *encode_object(PyObject *const *args, Py_ssize_t nargs, encfn enc, unsigned one,
                               unsigned two_prefix) {
  if (!nargs_ok("encode_object_subgroup", nargs, 5, 6)) return NULL;
  PyObject *delta = args[0], *exts = args[1], *status = args[2], *payload = args[3];
  int present = PyObject_IsTrue(args[4]);
  int kvp = nargs == 6 ? PyObject_IsTrue(args[5]) : 0;
  if (present < 0 || kvp < 0) return NULL;
  unsigned char head[24], tail[16];
  Py_ssize_t nhead, ntail = 0, plen;
  PyObject *tmp = NULL, *result = NULL;
  Out block = {NULL, 0, 0};
  int status_zero = is_zero(status);
  if (status_zero < 0 || (nhead = enc(delta, head)) < 0) return NULL;
  if (present) {
    int nonempty = status_zero && exts != Py_None ? PyObject_IsTrue(exts) : 0;
    if (nonempty < 0) return NULL;
    if (nonempty) {
      int n;
      if (encode_extensions(&block, enc, exts, kvp) != 0 ||
          (n = enc_size(enc, block.n, head + nhead)) < 0)
        goto done;
      nhead += n;
    } else {
      head[nhead++] = 0;
    }
  }
  const char *pay = NULL;
  if (status_zero) {
    pay = bytes_like(payload, &plen, &tmp);
    if (!pay) goto done;
  } else if ((plen = PyObject_Size(payload)) < 0) { /* unused, but len() must work */
    goto done;
  }
  if (status_zero && plen) {
    if ((Py_ssize_t)one > plen) {
      tail[ntail++] = (unsigned char)plen;
    } else if (plen < 0x4000) {
      be_write(tail, (uint64_t)plen | two_prefix, 2);
      ntail = 2;
    } else if ((ntail = enc_size(enc, plen, tail)) < 0) {
      goto done;
    }
  } else {
    int n;
    tail[0] = 0;
    if ((n = enc(status, tail + 1)) < 0) goto done;
    ntail = 1 + n;
    plen = 0;
  }
  result = PyBytes_FromStringAndSize(NULL, nhead + block.n + ntail + plen);
  if (!result) goto done;
  char *p = PyBytes_AsString(result); /* a new object: filled before anyone sees it */
  memcpy(p, head, (size_t)nhead);
  p += nhead;
  if (block.n) memcpy(p, block.p, (size_t)block.n);
  p += block.n;
  memcpy(p, tail, (size_t)ntail);
  if (plen) memcpy(p + ntail, pay, (size_t)plen);
done:
  free(block.p);
  Py_XDECREF(tmp);
  return result;
}

static PyObject *encode_object_subgroup(PyObject *mod, PyObject *const *args,
                                        Py_ssize_t nargs) {
  (void)mod;
  return encode_object(args, nargs, enc_var, 0x40, 0x4000);
}

static PyObject *encode_object_subgroup_vi64(PyObject *mod, PyObject *const *args,
                                             Py_ssize_t nargs) {
  (void)mod;
  return encode_object(args, nargs, enc_vi64, 0x80, 0x8000);
}

/* ------------------------------------------------------------------ StreamChain */

/* aiopquic.streamchain.StreamChain in C: the received bytes of one stream, read with a cursor
 * that can be saved and rolled back; see aiopquic/streamchain.py, whose Python twin (PyPy's)
 * behaves the same.  Logical byte i is mem[start + i]; `len` bytes are held since the last
 * commit; a commit moves `start` (and compacts when the front grows past the held bytes). */
typedef struct {
  Cursor cur;
  char *mem;
  Py_ssize_t start, len, alloc, save;
} Chain;

static PyObject *underflow_cls; /* aiopquic.exceptions.StreamUnderflow */

#define SSIZE_MAX_U ((uint64_t)PY_SSIZE_T_MAX)

static int underflow(Py_ssize_t pos, Py_ssize_t needed) {
  PyObject *exc = PyObject_CallFunction(underflow_cls, "nn", pos, needed);
  if (exc) {
    PyErr_SetObject(underflow_cls, exc);
    Py_DECREF(exc);
  }
  return -1;
}

static inline const unsigned char *chain_at(Chain *c, Py_ssize_t i) {
  return (const unsigned char *)c->mem + c->start + i;
}

static int Chain_init(Chain *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"vi64", NULL};
  PyObject *vi64 = Py_False;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:StreamChain", kwlist, &vi64)) return -1;
  int flag = PyObject_IsTrue(vi64);
  if (flag < 0) return -1;
  free(self->mem);
  self->mem = NULL;
  self->start = self->len = self->alloc = self->cur.pos = self->save = 0;
  self->cur.vi64 = flag;
  return 0;
}

static void Chain_dealloc(Chain *self) {
  free(self->mem);
  free_instance((PyObject *)self);
}

static int chain_append(Chain *c, const char *data, Py_ssize_t n) {
  if (c->start + c->len + n > c->alloc) {
    if (c->start) { /* committed bytes at the front: move the held ones down first */
      memmove(c->mem, c->mem + c->start, (size_t)c->len);
      c->start = 0;
    }
    if (c->len + n > c->alloc) {
      Py_ssize_t a = c->alloc ? c->alloc * 2 : 4096;
      while (a < c->len + n) a *= 2;
      char *m = realloc(c->mem, (size_t)a);
      if (!m) {
        PyErr_NoMemory();
        return -1;
      }
      c->mem = m;
      c->alloc = a;
    }
  }
  if (n) memcpy(c->mem + c->start + c->len, data, (size_t)n);
  c->len += n;
  return 0;
}

static PyObject *Chain_extend(Chain *self, PyObject *data) {
  if (data == Py_None) RETURN_NONE;
  int rv;
  if (PyBytes_Check(data)) {
    rv = chain_append(self, PyBytes_AsString(data), PyBytes_Size(data));
  } else if (PyByteArray_Check(data)) {
    rv = chain_append(self, PyByteArray_AsString(data), PyByteArray_Size(data));
  } else {
    PyObject *view = PyMemoryView_FromObject(data);
    PyObject *raw = view ? PyObject_Bytes(view) : NULL;
    Py_XDECREF(view);
    if (!raw) {
      if (!PyErr_ExceptionMatches(PyExc_TypeError)) return NULL;
      PyErr_Clear();
      PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(data), "__name__");
      if (name) {
        PyErr_Format(PyExc_BufferError, "StreamChain: cannot extend with %U (not bytes-like)",
                     name);
        Py_DECREF(name);
      }
      return NULL;
    }
    rv = chain_append(self, PyBytes_AsString(raw), PyBytes_Size(raw));
    Py_DECREF(raw);
  }
  if (rv != 0) return NULL;
  RETURN_NONE;
}

static PyObject *Chain_get_capacity(Chain *self, void *c) {
  (void)c;
  return PyLong_FromSsize_t(self->len);
}

static Py_ssize_t Chain_length(Chain *self) { return self->len - self->cur.pos; }

static PyObject *Chain_seek(Chain *self, PyObject *arg) {
  Py_ssize_t pos = PyLong_AsSsize_t(arg);
  if (pos == -1 && PyErr_Occurred()) return NULL;
  if (pos < 0 || pos > self->len) {
    PyErr_Format(PyExc_ValueError, "StreamChain.seek out of range: %zd not in [0, %zd]", pos,
                 self->len);
    return NULL;
  }
  self->cur.pos = pos;
  RETURN_NONE;
}

static PyObject *Chain_data_slice(Chain *self, PyObject *args) {
  Py_ssize_t start, end;
  if (!PyArg_ParseTuple(args, "nn:data_slice", &start, &end)) return NULL;
  if (start < 0 || start > end || end > self->len) {
    PyErr_Format(PyExc_ValueError, "StreamChain.data_slice [%zd, %zd) in [0, %zd)", start, end,
                 self->len);
    return NULL;
  }
  return PyBytes_FromStringAndSize((const char *)chain_at(self, start), end - start);
}

static PyObject *Chain_save(Chain *self, PyObject *unused) {
  (void)unused;
  self->save = self->cur.pos;
  RETURN_NONE;
}

static PyObject *Chain_rollback(Chain *self, PyObject *unused) {
  (void)unused;
  self->cur.pos = self->save;
  RETURN_NONE;
}

static PyObject *Chain_commit(Chain *self, PyObject *unused) {
  (void)unused;
  Py_ssize_t pos = self->cur.pos;
  if (pos) {
    if (pos == self->len) {
      self->start = self->len = 0;
      if (self->alloc > (1 << 20)) { /* a large burst is over: give the memory back */
        free(self->mem);
        self->mem = NULL;
        self->alloc = 0;
      }
    } else {
      self->start += pos;
      self->len -= pos;
    }
    self->cur.pos = 0;
  }
  self->save = 0;
  RETURN_NONE;
}

/* Reads: 0 and the value, or -1 with StreamUnderflow(pos, needed) set and the cursor kept. */
static int chain_fixed(Chain *c, int n, uint64_t *out) {
  if (c->cur.pos + n > c->len) return underflow(c->cur.pos, c->cur.pos + n);
  *out = be_read(chain_at(c, c->cur.pos), n);
  c->cur.pos += n;
  return 0;
}

static int chain_var(Chain *c, uint64_t *out) {
  Py_ssize_t pos = c->cur.pos;
  if (pos >= c->len) return underflow(pos, pos + 1);
  int n = var_len(chain_at(c, pos)[0]);
  if (pos + n > c->len) return underflow(pos, pos + n);
  *out = var_value(chain_at(c, pos), n);
  c->cur.pos = pos + n;
  return 0;
}

static int chain_vi64(Chain *c, uint64_t *out) {
  Py_ssize_t pos = c->cur.pos;
  if (pos >= c->len) return underflow(pos, pos + 1);
  const unsigned char *p = chain_at(c, pos);
  int n = vi64_len(p[0]);
  if (pos + n > c->len) return underflow(pos, pos + n);
  *out = vi64_value(p, n);
  c->cur.pos = pos + n;
  return 0;
}

static PyObject *u64(int rv, uint64_t v) {
  return rv != 0 ? NULL : PyLong_FromUnsignedLongLong((unsigned long long)v);
}

#define CHAIN_FIXED(NAME, N)                             \
  static PyObject *NAME(Chain *self, PyObject *unused) { \
    (void)unused;                                        \
    uint64_t v = 0;                                      \
    int rv = chain_fixed(self, N, &v);                   \
    return u64(rv, v);                                   \
  }
CHAIN_FIXED(Chain_pull_uint8, 1)
CHAIN_FIXED(Chain_pull_uint16, 2)
CHAIN_FIXED(Chain_pull_uint32, 4)
CHAIN_FIXED(Chain_pull_uint64, 8)

static PyObject *Chain_pull_uint_var(Chain *self, PyObject *unused) {
  (void)unused;
  uint64_t v = 0;
  int rv = chain_var(self, &v);
  return u64(rv, v);
}

static PyObject *Chain_pull_uint_vi64(Chain *self, PyObject *unused) {
  (void)unused;
  uint64_t v = 0;
  int rv = chain_vi64(self, &v);
  return u64(rv, v);
}

static PyObject *Chain_pull_vint(Chain *self, PyObject *unused) {
  (void)unused;
  uint64_t v = 0;
  int rv = self->cur.vi64 ? chain_vi64(self, &v) : chain_var(self, &v);
  return u64(rv, v);
}

static PyObject *chain_bytes(Chain *c, Py_ssize_t n) {
  if (n > c->len - c->cur.pos) {
    if (n > PY_SSIZE_T_MAX - c->cur.pos) { /* the Python twin's needed position: pos + n */
      PyObject *pos = PyLong_FromSsize_t(c->cur.pos), *len = PyLong_FromSsize_t(n);
      PyObject *needed = pos && len ? PyNumber_Add(pos, len) : NULL;
      if (needed) {
        PyObject *exc = PyObject_CallFunction(underflow_cls, "OO", pos, needed);
        if (exc) {
          PyErr_SetObject(underflow_cls, exc);
          Py_DECREF(exc);
        }
      }
      Py_XDECREF(pos);
      Py_XDECREF(len);
      Py_XDECREF(needed);
      return NULL;
    }
    underflow(c->cur.pos, c->cur.pos + n);
    return NULL;
  }
  PyObject *r = PyBytes_FromStringAndSize((const char *)chain_at(c, c->cur.pos), n);
  if (r) c->cur.pos += n;
  return r;
}

static PyObject *Chain_pull_bytes(Chain *self, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred()) return NULL;
  if (n < 0) {
    PyErr_SetString(PyExc_ValueError, "StreamChain.pull_bytes negative");
    return NULL;
  }
  return chain_bytes(self, n);
}

static PyObject *Chain_pull_uint(Chain *self, PyObject *arg) {
  PyObject *raw = Chain_pull_bytes(self, arg);
  if (!raw) return NULL;
  PyObject *r = PyObject_CallMethod((PyObject *)&PyLong_Type, "from_bytes", "Os", raw, "big");
  Py_DECREF(raw);
  return r;
}

typedef int (*pullfn)(Chain *, uint64_t *);

static PyObject *parse_extensions(Chain *c, pullfn pull, long long limit, PyObject *limit_o,
                                  int kvp) {
  uint64_t exts_len, prev = 0;
  if (pull(c, &exts_len) != 0) return NULL;
  if (exts_len > SSIZE_MAX_U) {
    PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C ssize_t");
    return NULL;
  }
  if (limit < 0 || exts_len > (uint64_t)limit) {
    PyErr_Format(PyExc_RuntimeError, "framer desync: ext_len=%llu exceeds limit %S",
                 (unsigned long long)exts_len, limit_o);
    return NULL;
  }
  if (exts_len == 0) RETURN_NONE;
  Py_ssize_t exts_end = c->cur.pos + (Py_ssize_t)exts_len;
  PyObject *exts = PyDict_New();
  if (!exts) return NULL;
  while (c->cur.pos < exts_end) {
    uint64_t id, raw;
    if (pull(c, &raw) != 0) goto fail;
    id = raw;
    if (kvp) {
      if (raw > UINT64_MAX - prev) {
        PyObject *a = PyLong_FromUnsignedLongLong(raw), *b = PyLong_FromUnsignedLongLong(prev);
        PyObject *sum = a && b ? PyNumber_Add(a, b) : NULL;
        if (sum) PyErr_Format(PyExc_OverflowError, "KVP delta type overflow: %S", sum);
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(sum);
        goto fail;
      }
      id = raw + prev;
      prev = id;
    }
    PyObject *value;
    if (id & 1) {
      uint64_t vlen;
      if (pull(c, &vlen) != 0) goto fail;
      Py_ssize_t room = exts_end - c->cur.pos; /* negative once the length ran past the block */
      if (room < 0 || vlen > (uint64_t)room || vlen > 0xFFFF) {
        char hex[24];
        snprintf(hex, sizeof(hex), "%llx", (unsigned long long)id);
        PyErr_Format(PyExc_OverflowError, "KVP value length %llu exceeds its block at type 0x%s",
                     (unsigned long long)vlen, hex);
        goto fail;
      }
      value = chain_bytes(c, (Py_ssize_t)vlen);
    } else {
      uint64_t v;
      value = pull(c, &v) != 0 ? NULL : PyLong_FromUnsignedLongLong((unsigned long long)v);
    }
    if (!value) goto fail;
    if (c->cur.pos > exts_end) {
      char hex[24];
      snprintf(hex, sizeof(hex), "%llx", (unsigned long long)id);
      PyErr_Format(PyExc_RuntimeError, "extensions decode overrun: pos=%zd exts_end=%zd ext_id=0x%s",
                   c->cur.pos, exts_end, hex);
      Py_DECREF(value);
      goto fail;
    }
    PyObject *key = PyLong_FromUnsignedLongLong((unsigned long long)id);
    int e = key ? PyDict_SetItem(exts, key, value) : -1;
    Py_XDECREF(key);
    Py_DECREF(value);
    if (e != 0) goto fail;
  }
  return exts;
fail:
  Py_DECREF(exts);
  return NULL;
}

/* parse_object_subgroup[_vi64](extensions_present, exts_len_limit, kvp_delta=False) ->
 * (delta, extensions or None, status, payload): see aiopquic/streamchain.py. */
static PyObject *parse_object(Chain *c, PyObject *const *args, Py_ssize_t nargs, pullfn pull,
                              unsigned one, unsigned two) {
  if (!nargs_ok("parse_object_subgroup", nargs, 2, 3)) return NULL;
  PyObject *present_o = args[0], *limit_o = args[1], *kvp_o = nargs == 3 ? args[2] : Py_False;
  int present = PyObject_IsTrue(present_o), kvp = PyObject_IsTrue(kvp_o), ovf = 0;
  if (present < 0 || kvp < 0) return NULL;
  long long limit = PyLong_AsLongLongAndOverflow(limit_o, &ovf);
  if (limit == -1 && PyErr_Occurred()) return NULL;
  if (ovf) limit = ovf > 0 ? LLONG_MAX : -1;
  Py_ssize_t pos = c->cur.pos, size = c->len;
  uint64_t delta, length;
  if (pos < size && *chain_at(c, pos) < one) {
    delta = *chain_at(c, pos);
    pos += 1;
  } else {
    if (pull(c, &delta) != 0) return NULL;
    pos = c->cur.pos;
  }
  PyObject *exts = Py_None;
  Py_INCREF(exts);
  PyObject *payload = NULL, *result = NULL;
  if (present) {
    if (pos < size && *chain_at(c, pos) == 0 && limit >= 0) {
      pos += 1; /* empty extension block */
    } else {
      c->cur.pos = pos;
      Py_DECREF(exts);
      exts = parse_extensions(c, pull, limit, limit_o, kvp);
      if (!exts) return NULL;
      pos = c->cur.pos;
    }
  }
  unsigned first = pos < size ? *chain_at(c, pos) : two;
  if (first < one) {
    length = first;
    pos += 1;
  } else if (first < two && pos + 2 <= size) {
    length = ((uint64_t)(first & 0x3F) << 8) | chain_at(c, pos)[1];
    pos += 2;
  } else {
    c->cur.pos = pos;
    if (pull(c, &length) != 0) goto done;
    pos = c->cur.pos;
  }
  if (length == 0) {
    c->cur.pos = pos;
    uint64_t status;
    if (pull(c, &status) != 0) goto done;
    result = Py_BuildValue("(KOKy#)", (unsigned long long)delta, exts, (unsigned long long)status,
                           "", (Py_ssize_t)0);
    goto done;
  }
  if (length > (uint64_t)(size - pos)) {
    c->cur.pos = pos;
    if (length > SSIZE_MAX_U)
      PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C ssize_t");
    else
      underflow(pos, pos + (Py_ssize_t)length);
    goto done;
  }
  payload = PyBytes_FromStringAndSize((const char *)chain_at(c, pos), (Py_ssize_t)length);
  if (!payload) goto done;
  c->cur.pos = pos + (Py_ssize_t)length;
  result = Py_BuildValue("(KOiO)", (unsigned long long)delta, exts, 0, payload);
done:
  Py_XDECREF(payload);
  Py_DECREF(exts);
  return result;
}

static PyObject *Chain_parse_object_subgroup(Chain *self, PyObject *const *args,
                                             Py_ssize_t nargs) {
  return parse_object(self, args, nargs, chain_var, 0x40, 0x80);
}

static PyObject *Chain_parse_object_subgroup_vi64(Chain *self, PyObject *const *args,
                                                  Py_ssize_t nargs) {
  return parse_object(self, args, nargs, chain_vi64, 0x80, 0xC0);
}

static PyMethodDef Chain_methods[] = {
    {"extend", (PyCFunction)Chain_extend, METH_O,
     "Append a received chunk (any bytes-like object; None is ignored)."},
    {"push_bytes", (PyCFunction)Chain_extend, METH_O, "Same as extend."},
    {"tell", (PyCFunction)Cursor_tell, METH_NOARGS,
     "Return the cursor, counted from the last commit."},
    {"seek", (PyCFunction)Chain_seek, METH_O,
     "Move the cursor to ``pos`` (0 to ``capacity``); ValueError otherwise."},
    {"data_slice", (PyCFunction)Chain_data_slice, METH_VARARGS,
     "Return the held bytes ``[start, end)`` without moving the cursor."},
    {"save", (PyCFunction)Chain_save, METH_NOARGS, "Remember the cursor for rollback."},
    {"rollback", (PyCFunction)Chain_rollback, METH_NOARGS,
     "Move the cursor back to the last save (0 after a commit)."},
    {"commit", (PyCFunction)Chain_commit, METH_NOARGS,
     "Drop the bytes before the cursor; the cursor and the saved position become 0."},
    {"pull_bytes", (PyCFunction)Chain_pull_bytes, METH_O,
     "Read ``length`` bytes; ValueError if negative."},
    {"pull_uint8", (PyCFunction)Chain_pull_uint8, METH_NOARGS, "Read one byte."},
    {"pull_uint16", (PyCFunction)Chain_pull_uint16, METH_NOARGS,
     "Read a big-endian 16-bit unsigned integer."},
    {"pull_uint32", (PyCFunction)Chain_pull_uint32, METH_NOARGS,
     "Read a big-endian 32-bit unsigned integer."},
    {"pull_uint64", (PyCFunction)Chain_pull_uint64, METH_NOARGS,
     "Read a big-endian 64-bit unsigned integer."},
    {"pull_uint", (PyCFunction)Chain_pull_uint, METH_O,
     "Read a big-endian unsigned integer of ``size`` bytes."},
    {"pull_uint_var", (PyCFunction)Chain_pull_uint_var, METH_NOARGS,
     "Read a QUIC (RFC 9000) variable-length integer."},
    {"pull_uint_vi64", (PyCFunction)Chain_pull_uint_vi64, METH_NOARGS,
     "Read a draft-18 vi64 integer (non-minimal encodings are accepted)."},
    {"pull_vint", (PyCFunction)Chain_pull_vint, METH_NOARGS,
     "Read an integer in this object's flavour (vi64 if ``vi64`` else RFC 9000 varint)."},
    {"parse_object_subgroup", (PyCFunction)(void (*)(void))Chain_parse_object_subgroup,
     METH_FASTCALL,
     "Read one MoQT subgroup-stream object body with RFC 9000 varints: (delta, extensions "
     "or None, status, payload)."},
    {"parse_object_subgroup_vi64",
     (PyCFunction)(void (*)(void))Chain_parse_object_subgroup_vi64, METH_FASTCALL,
     "Same as parse_object_subgroup with draft-18 vi64 integers."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Chain_getset[] = {
    {"capacity", (getter)Chain_get_capacity, NULL, "Bytes held since the last commit.", NULL},
    {"vi64", (getter)Cursor_get_vi64, (setter)Cursor_set_vi64,
     "True: the ``*_vint`` methods use vi64; False: RFC 9000 varints.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Chain_slots[] = {
    {Py_tp_doc, "Received bytes of one stream, read with a cursor that can be saved and "
                "rolled back (C; see aiopquic.streamchain)."},
    {Py_tp_init, (void *)Chain_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_dealloc, (void *)Chain_dealloc},
    {Py_tp_methods, Chain_methods},
    {Py_tp_getset, Chain_getset},
    {Py_sq_length, (void *)Chain_length},
    {0, NULL},
};

static PyType_Spec Chain_spec = {
    "aiopquic.streamchain.StreamChain",
    sizeof(Chain),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    Chain_slots,
};

static PyObject *set_underflow(PyObject *mod, PyObject *cls) {
  (void)mod;
  PyObject *old = underflow_cls;
  Py_INCREF(cls);
  underflow_cls = cls;
  Py_XDECREF(old);
  RETURN_NONE;
}

/* ------------------------------------------------------------------ module */

static PyObject *set_errors(PyObject *mod, PyObject *args) {
  (void)mod;
  PyObject *r, *w;
  if (!PyArg_ParseTuple(args, "OO:_set_errors", &r, &w)) return NULL;
  PyObject *old_r = read_error, *old_w = write_error;
  Py_INCREF(r);
  Py_INCREF(w);
  read_error = r;
  write_error = w;
  Py_XDECREF(old_r);
  Py_XDECREF(old_w);
  RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_underflow", set_underflow, METH_O,
     "Set the exception class StreamChain raises for a short read (StreamUnderflow)."},
    {"encode_object_subgroup", (PyCFunction)(void (*)(void))encode_object_subgroup,
     METH_FASTCALL,
     "Encode one subgroup-stream object body with RFC 9000 varints (see "
     "aiopquic._binding._streamchain)."},
    {"encode_object_subgroup_vi64", (PyCFunction)(void (*)(void))encode_object_subgroup_vi64,
     METH_FASTCALL,
     "Same as encode_object_subgroup with draft-18 vi64 integers."},
    {"_set_errors", set_errors, METH_VARARGS,
     "Set the exception classes to raise: (BufferReadError, BufferWriteError)."},
    {"_set_event_types", aqpy_set_event_types, METH_VARARGS,
     "Set the event classes and type codes _events_from builds (see events.c)."},
    {"_events_from", (PyCFunction)(void (*)(void))aqpy_events_from, METH_FASTCALL,
     "(address of an aq_event array, count) -> list of application events; frees the "
     "payloads (private: QuicEndpoint._poll)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "aiopquic._ccodecs",
    "aiopquic.buffer.Buffer and the hot event paths in C (CPython); see aiopquic/buffer.py.",
    -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ccodecs(void) {
  PyObject *m = PyModule_Create(&module_def);
  if (!m) return NULL;
  PyObject *tp = PyType_FromSpec(&Buf_spec);
  if (!tp || PyModule_AddObject(m, "Buffer", tp) != 0) {
    Py_XDECREF(tp);
    Py_DECREF(m);
    return NULL;
  }
  tp = PyType_FromSpec(&Chain_spec);
  if (!tp || PyModule_AddObject(m, "StreamChain", tp) != 0) {
    Py_XDECREF(tp);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
