/* What the C files of aiopquic._ccodecs share (CPython, stable ABI >= 3.9). */
#ifndef AQ_PYCOMMON_H
#define AQ_PYCOMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* METH_FASTCALL (positional arguments as a C array, no tuple per call) is in the stable ABI
 * from 3.10 on; CPython has called it the same way since 3.7, so the 3.9 ABI build uses it
 * too.  The calls that take several arguments (the object encoders and parsers above all,
 * one per MoQT object) use it. */
#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080
#endif

/* Py_RETURN_NONE as CPython 3.12.0-3.12.1's headers define it does not take a reference (None
 * is immortal there), which under 3.11 and older frees None after a while: an abi3 module built
 * with those headers must take it itself. */
#define RETURN_NONE     \
  do {                  \
    Py_INCREF(Py_None); \
    return Py_None;     \
  } while (0)

/* events.c: the application events of a batch popped from the network thread's ring */
PyObject *aqpy_set_event_types(PyObject *mod, PyObject *args);
PyObject *aqpy_events_from(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);

#endif
