/* aiopquic._ccodecs._events_from: the loop of QuicEndpoint._poll (aiopquic/quic/connection.py)
 * in C, for CPython.  The Python loop stays for PyPy and is the reference for what this does.
 *
 * Input: the address of an aq_event array that aq_poll_events just filled, and its count.
 * Each event's payload (malloc'd by the network thread, owned by us now) becomes a `bytes`
 * and is freed -- every one of them, also when building the list fails half-way (then the
 * exception propagates and the remaining payloads are freed unread, as a MemoryError in the
 * Python loop would leave them leaked: here they are not).
 *
 * Output, one item per event, in order:
 * - stream data: (connection handle, StreamDataReceived(data, end_stream, stream_id));
 * - a datagram: (connection handle, DatagramFrameReceived(data));
 * - anything else: NativeEvent(type, flags, conn, stream_id, code, code2, data).
 * The two event classes (slotted dataclasses, heap types) are instantiated without running
 * their __init__ and their fields set directly: the same object the constructor makes.
 *
 * The classes and type codes are handed in once by connection.py (_set_event_types). */
#include "pycommon.h"
#include <stdlib.h>

#include "../aiopquic.h"

/* process-wide constants, set once at import (no per-endpoint state) */
static PyObject *sd_cls, *dg_cls, *native_cls;
static allocfunc sd_alloc, dg_alloc;
static uint32_t sd_type, dg_type, fin_flag;
static PyObject *name_data, *name_end_stream, *name_stream_id;

static allocfunc heap_alloc(PyObject *cls) {
  if (!(PyType_GetFlags((PyTypeObject *)cls) & Py_TPFLAGS_HEAPTYPE)) {
    PyErr_SetString(PyExc_TypeError, "_set_event_types: the event classes must be heap types");
    return NULL;
  }
  allocfunc f = (allocfunc)PyType_GetSlot((PyTypeObject *)cls, Py_tp_alloc);
  if (!f) PyErr_SetString(PyExc_TypeError, "_set_event_types: a class without tp_alloc");
  return f;
}

PyObject *aqpy_set_event_types(PyObject *mod, PyObject *args) {
  (void)mod;
  PyObject *sd, *dg, *nat;
  unsigned int tsd, tdg, fin;
  if (!PyArg_ParseTuple(args, "O!O!OIII:_set_event_types", &PyType_Type, &sd, &PyType_Type,
                        &dg, &nat, &tsd, &tdg, &fin))
    return NULL;
  allocfunc a1 = heap_alloc(sd), a2 = a1 ? heap_alloc(dg) : NULL;
  if (!a2) return NULL;
  if (!name_data) {
    name_data = PyUnicode_InternFromString("data");
    name_end_stream = PyUnicode_InternFromString("end_stream");
    name_stream_id = PyUnicode_InternFromString("stream_id");
    if (!name_data || !name_end_stream || !name_stream_id) {
      Py_CLEAR(name_data);
      Py_CLEAR(name_end_stream);
      Py_CLEAR(name_stream_id);
      return NULL;
    }
  }
  PyObject *old[3] = {sd_cls, dg_cls, native_cls};
  Py_INCREF(sd);
  Py_INCREF(dg);
  Py_INCREF(nat);
  sd_cls = sd;
  dg_cls = dg;
  native_cls = nat;
  sd_alloc = a1;
  dg_alloc = a2;
  sd_type = tsd;
  dg_type = tdg;
  fin_flag = fin;
  for (int i = 0; i < 3; i++) Py_XDECREF(old[i]);
  RETURN_NONE;
}

/* A new instance of a slotted event class with `data` set (and the stream fields when
 * `stream` is set); NULL with an exception on failure. */
static PyObject *new_event(PyObject *cls, allocfunc alloc, PyObject *data, const aq_event *ev,
                           int stream) {
  PyObject *obj = alloc((PyTypeObject *)cls, 0);
  if (!obj) return NULL;
  if (PyObject_SetAttr(obj, name_data, data) != 0) goto fail;
  if (stream) {
    PyObject *fin = (ev->flags & fin_flag) == fin_flag ? Py_True : Py_False;
    if (PyObject_SetAttr(obj, name_end_stream, fin) != 0) goto fail;
    PyObject *sid = PyLong_FromLongLong((long long)ev->stream_id);
    if (!sid) goto fail;
    int r = PyObject_SetAttr(obj, name_stream_id, sid);
    Py_DECREF(sid);
    if (r != 0) goto fail;
  }
  return obj;
fail:
  Py_DECREF(obj);
  return NULL;
}

/* One list item for `ev`, whose payload is already in `data` (a new reference, consumed). */
static PyObject *item_for(const aq_event *ev, PyObject *data) {
  PyObject *obj;
  if (ev->type != sd_type && ev->type != dg_type) {
    obj = PyObject_CallFunction(native_cls, "IIKLKKO", (unsigned int)ev->type,
                                (unsigned int)ev->flags, (unsigned long long)ev->conn,
                                (long long)ev->stream_id, (unsigned long long)ev->code,
                                (unsigned long long)ev->code2, data);
    Py_DECREF(data);
    return obj;
  }
  if (ev->type == sd_type)
    obj = new_event(sd_cls, sd_alloc, data, ev, 1);
  else
    obj = new_event(dg_cls, dg_alloc, data, ev, 0);
  Py_DECREF(data);
  if (!obj) return NULL;
  PyObject *conn = PyLong_FromUnsignedLongLong((unsigned long long)ev->conn);
  if (!conn) {
    Py_DECREF(obj);
    return NULL;
  }
  PyObject *pair = PyTuple_Pack(2, conn, obj);
  Py_DECREF(conn);
  Py_DECREF(obj);
  return pair;
}

PyObject *aqpy_events_from(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  (void)mod;
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "_events_from() takes exactly 2 arguments (%zd given)",
                 nargs);
    return NULL;
  }
  if (!sd_cls) {
    PyErr_SetString(PyExc_RuntimeError, "_events_from: _set_event_types was not called");
    return NULL;
  }
  aq_event *evs = (aq_event *)PyLong_AsVoidPtr(args[0]);
  if (!evs && PyErr_Occurred()) return NULL;
  Py_ssize_t n = PyLong_AsSsize_t(args[1]);
  if (n < 0) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "_events_from: negative count");
    return NULL;
  }
  if (n > 0 && !evs) {
    PyErr_SetString(PyExc_ValueError, "_events_from: NULL event array");
    return NULL;
  }
  PyObject *out = PyList_New(n);
  Py_ssize_t i = 0;
  if (!out) goto fail;
  for (; i < n; i++) {
    aq_event *ev = &evs[i];
    PyObject *data = ev->data ? PyBytes_FromStringAndSize((const char *)ev->data,
                                                          (Py_ssize_t)ev->len)
                              : PyBytes_FromStringAndSize(NULL, 0);
    free(ev->data);
    ev->data = NULL;
    if (!data) {
      i++;
      goto fail;
    }
    PyObject *item = item_for(ev, data);
    if (!item) {
      i++;
      goto fail;
    }
    PyList_SetItem(out, i, item); /* steals `item`; cannot fail: i < n */
  }
  return out;
fail:
  for (; i < n; i++) { /* the payloads not turned into bytes are still ours to free */
    free(evs[i].data);
    evs[i].data = NULL;
  }
  Py_XDECREF(out);
  return NULL;
}
