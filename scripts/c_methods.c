/* Issue #14's question, measured: what the register and mapping paths cost as C methods (a
 * CPython extension type), with Region.read/write's checks (width, direction, bounds,
 * alignment, the value's range, a short transfer) and a PreparedMapping's (closed). Failures
 * call back into Python (``slow``), which raises. An experiment that scripts/c_methods.py
 * compiles and times; not part of vfioctl. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>

typedef struct {
    PyObject_HEAD
    int fd;
    long long base;
    long long rlim[9], wlim[9];  /* by width; -1: not allowed */
    PyObject *slow;              /* slow(op, offset, width, errno_or_n): raises */
} Acc;

static PyObject *fail_with(PyObject *slow, const char *op, long long off, long long w,
                           long long e)
{
    PyObject *r = PyObject_CallFunction(slow, "sLLL", op, off, w, e);
    Py_XDECREF(r);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "slow path did not raise");
    return NULL;
}

#define fail(a, op, off, w, e) fail_with((a)->slow, op, off, w, e)

/* (offset, ..., [width]): the offset first, the width at av[want] if given (default 4) */
static int args(PyObject *const *av, Py_ssize_t n, Py_ssize_t want, long long *off,
                long long *w)
{
    if (n < want || n > want + 1) {
        PyErr_SetString(PyExc_TypeError, "wrong number of arguments");
        return -1;
    }
    *off = PyLong_AsLongLong(av[0]);
    if (*off == -1 && PyErr_Occurred()) return -1;
    *w = 4;
    if (n == want + 1) {
        *w = PyLong_AsLongLong(av[want]);
        if (*w == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* Region's check: a width the region allows in this direction, in bounds, aligned */
static int refused(const long long *lim, long long off, long long w)
{
    return w < 1 || w > 8 || lim[w] < 0 || off < 0 || off > lim[w] || off % w;
}

static PyObject *acc_read(Acc *a, PyObject *const *av, Py_ssize_t n)
{
    long long off, w;
    if (args(av, n, 1, &off, &w)) return NULL;
    if (refused(a->rlim, off, w)) return fail(a, "check-read", off, w, 0);
    unsigned char buf[8] = {0};
    ssize_t got = pread(a->fd, buf, w, a->base + off);
    if (got != w) return fail(a, "pread", off, w, got < 0 ? -errno : got);
    uint64_t v = 0;
    memcpy(&v, buf, 8);  /* little-endian host */
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *acc_write(Acc *a, PyObject *const *av, Py_ssize_t n)
{
    long long off, w;
    if (args(av, n, 2, &off, &w)) return NULL;
    if (refused(a->wlim, off, w)) return fail(a, "check-write", off, w, 0);
    unsigned long long v = PyLong_AsUnsignedLongLong(av[1]);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return fail(a, "value", off, w, 0);
    }
    if (w < 8 && (v >> (8 * w))) return fail(a, "value", off, w, 0);
    ssize_t put = pwrite(a->fd, &v, w, a->base + off);
    if (put != w) return fail(a, "pwrite", off, w, put < 0 ? -errno : put);
    Py_RETURN_NONE;
}

static int acc_init(Acc *a, PyObject *args_, PyObject *kw)
{
    long long size; int r, wr; PyObject *slow;
    if (!PyArg_ParseTuple(args_, "iLLppO", &a->fd, &a->base, &size, &r, &wr, &slow)) return -1;
    for (int w = 0; w < 9; w++) {
        int ok = w == 1 || w == 2 || w == 4 || w == 8;
        a->rlim[w] = ok && r ? size - w : -1;
        a->wlim[w] = ok && wr ? size - w : -1;
    }
    Py_INCREF(slow);
    Py_XSETREF(a->slow, slow);
    return 0;
}

static void acc_dealloc(Acc *a) { Py_XDECREF(a->slow); Py_TYPE(a)->tp_free((PyObject *)a); }

static PyMethodDef acc_methods[] = {
    {"read", (PyCFunction)(void (*)(void))acc_read, METH_FASTCALL, NULL},
    {"write", (PyCFunction)(void (*)(void))acc_write, METH_FASTCALL, NULL},
    {NULL}
};

static PyTypeObject AccType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "c_methods.Accessor", .tp_basicsize = sizeof(Acc),
    .tp_flags = Py_TPFLAGS_DEFAULT, .tp_new = PyType_GenericNew,
    .tp_init = (initproc)acc_init, .tp_dealloc = (destructor)acc_dealloc,
    .tp_methods = acc_methods,
};

/* A prepared mapping as a C object: map() and unmap() are one ioctl each on structs built
 * once (as vfioctl's PreparedMapping); unmap() returns the length the kernel unmapped. */
typedef struct {
    PyObject_HEAD
    int fd;
    unsigned long rmap, runmap;
    Py_buffer mp, un;
    Py_ssize_t ret_off;   /* where the unmapped length (u64) is in the unmap struct */
    PyObject *slow;
} Pair;

static PyObject *pair_map(Pair *p, PyObject *unused)
{
    if (p->fd < 0) return fail(p, "closed", 0, 0, 0);
    if (ioctl(p->fd, p->rmap, p->mp.buf)) return fail(p, "map", 0, 0, -errno);
    Py_RETURN_NONE;
}

static PyObject *pair_unmap(Pair *p, PyObject *unused)
{
    if (p->fd < 0) return fail(p, "closed", 0, 0, 0);
    if (ioctl(p->fd, p->runmap, p->un.buf)) return fail(p, "unmap", 0, 0, -errno);
    uint64_t n;
    memcpy(&n, (char *)p->un.buf + p->ret_off, 8);
    return PyLong_FromUnsignedLongLong(n);
}

static int pair_init(Pair *p, PyObject *a, PyObject *kw)
{
    PyObject *slow;
    if (!PyArg_ParseTuple(a, "ikw*kw*nO", &p->fd, &p->rmap, &p->mp, &p->runmap, &p->un,
                          &p->ret_off, &slow)) return -1;
    Py_INCREF(slow);
    Py_XSETREF(p->slow, slow);
    return 0;
}

static void pair_dealloc(Pair *p)
{
    PyBuffer_Release(&p->mp);
    PyBuffer_Release(&p->un);
    Py_XDECREF(p->slow);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef pair_methods[] = {
    {"map", (PyCFunction)pair_map, METH_NOARGS, NULL},
    {"unmap", (PyCFunction)pair_unmap, METH_NOARGS, NULL},
    {NULL}
};

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "c_methods.Pair", .tp_basicsize = sizeof(Pair),
    .tp_flags = Py_TPFLAGS_DEFAULT, .tp_new = PyType_GenericNew, .tp_init = (initproc)pair_init,
    .tp_dealloc = (destructor)pair_dealloc, .tp_methods = pair_methods,
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "c_methods", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_c_methods(void)
{
    if (PyType_Ready(&AccType) < 0 || PyType_Ready(&PairType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    Py_INCREF(&AccType);
    PyModule_AddObject(m, "Accessor", (PyObject *)&AccType);
    Py_INCREF(&PairType);
    PyModule_AddObject(m, "Pair", (PyObject *)&PairType);
    return m;
}
