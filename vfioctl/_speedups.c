/* vfioctl._speedups: the register and prepared-mapping hot paths as C methods (issue #14).
 *
 * An optional extension: pip builds it when a compiler and Python's headers are there, and
 * vfioctl runs the same paths in pure Python when it is missing. Two base types, which
 * vfioctl's own classes extend:
 *
 * - Registers: read(offset, width=4) and write(offset, value, width=4) of device.Region, one
 *   pread/pwrite at the region's offset, after Region's checks, from the same attributes
 *   (_fd, _base, and the per-width limits _rlim / _wlim).
 * - Prepared: map() and unmap() of iova.PreparedMapping, one ioctl each on its prebuilt
 *   structs, with its bookkeeping in the space's mapping dict.
 *
 * Python stays the authority. Anything the C path does not take as it is (a refused check, an
 * argument of another type, keywords, a closed object) goes to the class's pure-Python method
 * (_py_read, _py_write, _py_map, _py_unmap), which checks again and raises the error that
 * names the fix. A system call that failed is never issued again: its errno or short count
 * goes to a Python method that raises (_access_failed, _ioctl_failed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>

static PyObject *s_py_read, *s_py_write, *s_py_map, *s_py_unmap, *s_access_failed,
    *s_ioctl_failed, *s_fd, *s_forget, *s_space, *four;

/* self.<name>(*args, **kw): the pure-Python method's answer */
static PyObject *fallback(PyObject *self, PyObject *name, PyObject *const *av, size_t n,
                          PyObject *kwnames)
{
    PyObject *m = PyObject_GetAttr(self, name);
    if (!m) return NULL;
    PyObject *r = PyObject_Vectorcall(m, av, n, kwnames);
    Py_DECREF(m);
    return r;
}

/* a Python method that raises for a failed system call; NULL, with its error set */
static PyObject *failed(PyObject *self, PyObject *name, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    if (!args) return NULL;
    PyObject *m = PyObject_GetAttr(self, name), *r = NULL;
    if (m) r = PyObject_Call(m, args, NULL);
    Py_XDECREF(m);
    Py_DECREF(args);
    if (r) {
        Py_DECREF(r);
        PyErr_Format(PyExc_SystemError, "%U returned instead of raising", name);
    }
    return NULL;
}

static int as_ll(PyObject *o, long long *v)
{
    if (!PyLong_CheckExact(o)) return -1;
    int overflow;
    *v = PyLong_AsLongLongAndOverflow(o, &overflow);
    return overflow || (*v == -1 && PyErr_Occurred()) ? (PyErr_Clear(), -1) : 0;
}

/* ---- Registers ---- */

typedef struct {
    PyObject_HEAD
    int fd;
    long long base;
    PyObject *rlim, *wlim;  /* width -> the last offset an access of that width may start at */
} Registers;

/* Region's check, from its own dict: width allowed in this direction, in bounds, aligned.
 * 0: take it (offset and width set); -1: let Python decide. */
static int check(PyObject *lims, PyObject *o_off, PyObject *o_w, long long *off, long long *w)
{
    long long lim;
    if (!lims || !PyDict_CheckExact(lims) || as_ll(o_off, off) || as_ll(o_w, w)) return -1;
    PyObject *l = PyDict_GetItemWithError(lims, o_w);  /* borrowed */
    if (!l) { PyErr_Clear(); return -1; }
    if (as_ll(l, &lim)) return -1;
    return *w >= 1 && *w <= 8 && 0 <= *off && *off <= lim && *off % *w == 0 ? 0 : -1;
}

static PyObject *reg_read(Registers *self, PyObject *const *av, Py_ssize_t nargsf,
                          PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    long long off, w;
    if (kwnames || n < 1 || n > 2 || check(self->rlim, av[0], n == 2 ? av[1] : four, &off, &w))
        return fallback((PyObject *)self, s_py_read, av, nargsf, kwnames);
    unsigned char buf[8] = {0};
    ssize_t got;
    int fd = self->fd, err = 0;
    Py_BEGIN_ALLOW_THREADS
    got = pread(fd, buf, (size_t)w, self->base + off);
    if (got < 0) err = errno;
    Py_END_ALLOW_THREADS
    if (got != w)
        return failed((PyObject *)self, s_access_failed, "(sLLL)", "pread", off, w,
                      got < 0 ? -(long long)err : (long long)got);
    uint64_t v;
    memcpy(&v, buf, 8);  /* x86 and the other little-endian hosts: register order */
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *reg_write(Registers *self, PyObject *const *av, Py_ssize_t nargsf,
                           PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    long long off, w;
    if (kwnames || n < 2 || n > 3 || !PyLong_CheckExact(av[1])
        || check(self->wlim, av[0], n == 3 ? av[2] : four, &off, &w))
        return fallback((PyObject *)self, s_py_write, av, nargsf, kwnames);
    unsigned long long v = PyLong_AsUnsignedLongLong(av[1]);
    if ((v == (unsigned long long)-1 && PyErr_Occurred()) || (w < 8 && (v >> (8 * w)))) {
        PyErr_Clear();  /* negative or too wide: Python names the values that fit */
        return fallback((PyObject *)self, s_py_write, av, nargsf, kwnames);
    }
    ssize_t put;
    int fd = self->fd, err = 0;
    Py_BEGIN_ALLOW_THREADS
    put = pwrite(fd, &v, (size_t)w, self->base + off);
    if (put < 0) err = errno;
    Py_END_ALLOW_THREADS
    if (put != w)
        return failed((PyObject *)self, s_access_failed, "(sLLL)", "pwrite", off, w,
                      put < 0 ? -(long long)err : (long long)put);
    Py_RETURN_NONE;
}

static void reg_dealloc(Registers *self)
{
    Py_CLEAR(self->rlim);
    Py_CLEAR(self->wlim);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef reg_methods[] = {
    {"read", (PyCFunction)(void (*)(void))reg_read, METH_FASTCALL | METH_KEYWORDS,
     "read(offset, width=4): one pread of exactly width bytes at offset."},
    {"write", (PyCFunction)(void (*)(void))reg_write, METH_FASTCALL | METH_KEYWORDS,
     "write(offset, value, width=4): one pwrite of exactly width bytes at offset."},
    {NULL}
};

static PyMemberDef reg_members[] = {
    {"_fd", T_INT, offsetof(Registers, fd), 0, NULL},
    {"_base", T_LONGLONG, offsetof(Registers, base), 0, NULL},
    {"_rlim", T_OBJECT_EX, offsetof(Registers, rlim), 0, NULL},
    {"_wlim", T_OBJECT_EX, offsetof(Registers, wlim), 0, NULL},
    {NULL}
};

static PyTypeObject RegistersType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vfioctl._speedups.Registers", .tp_basicsize = sizeof(Registers),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)reg_dealloc, .tp_methods = reg_methods,
    .tp_members = reg_members,
    .tp_doc = "The register paths of vfioctl.device.Region, compiled.",
};

/* ---- Prepared ---- */

typedef struct {
    PyObject_HEAD
    PyObject *entry;    /* what the space records while it is mapped; None once closed */
    PyObject *maps;     /* the space's dict: IOVA -> entry */
    PyObject *owner;    /* the FdOwner whose _fd the ioctls take */
    PyObject *iova, *mapping;
    unsigned long long length;
    unsigned long map_req, unmap_req;
    Py_buffer map_arg, unmap_arg;
    Py_ssize_t unmap_field;  /* where the unmapped length (u64) sits in the unmap struct */
    int armed;
} Prepared;

/* the owner's fd, or -1 (closed, or not a plain int: Python's path decides) */
static int owner_fd(Prepared *self)
{
    PyObject *o = PyObject_GetAttr(self->owner, s_fd);
    long long fd = -1;
    if (!o || as_ll(o, &fd) || fd > INT32_MAX) fd = -1;
    Py_XDECREF(o);
    PyErr_Clear();
    return (int)fd;
}

static int usable(Prepared *self)
{
    return self->armed && self->entry && self->entry != Py_None && self->maps
           && PyDict_CheckExact(self->maps);
}

static PyObject *prep_map(Prepared *self, PyObject *unused)
{
    (void)unused;
    int fd;
    if (!usable(self) || (fd = owner_fd(self)) < 0)
        return fallback((PyObject *)self, s_py_map, NULL, 0, NULL);
    int r, err = 0;
    Py_BEGIN_ALLOW_THREADS
    r = ioctl(fd, self->map_req, self->map_arg.buf);
    if (r) err = errno;
    Py_END_ALLOW_THREADS
    if (r) return failed((PyObject *)self, s_ioctl_failed, "(si)", "map", err);
    if (PyDict_SetItem(self->maps, self->iova, self->entry)) return NULL;
    Py_INCREF(self->mapping);
    return self->mapping;
}

static PyObject *prep_unmap(Prepared *self, PyObject *unused)
{
    (void)unused;
    int fd;
    if (!usable(self) || (fd = owner_fd(self)) < 0)
        return fallback((PyObject *)self, s_py_unmap, NULL, 0, NULL);
    int r, err = 0;
    Py_BEGIN_ALLOW_THREADS
    r = ioctl(fd, self->unmap_req, self->unmap_arg.buf);
    if (r) err = errno;
    Py_END_ALLOW_THREADS
    /* the kernel writes back what it unmapped: the next call asks the same again */
    uint64_t done, want = self->length;
    char *field = (char *)self->unmap_arg.buf + self->unmap_field;
    memcpy(&done, field, 8);
    if (done != want) memcpy(field, &want, 8);
    if (r) return failed((PyObject *)self, s_ioctl_failed, "(si)", "unmap", err);
    /* what the space recorded at the IOVA goes; if that was not this mapping, so do the
     * records of others' mappings in the range */
    PyObject *had = PyDict_GetItemWithError(self->maps, self->iova);  /* borrowed */
    if (!had && PyErr_Occurred()) return NULL;
    int mine = had == self->entry;
    if (had && PyDict_DelItem(self->maps, self->iova)) return NULL;
    if (!mine) {
        PyObject *space = PyObject_GetAttr((PyObject *)self, s_space), *len = NULL, *r2 = NULL;
        if (space && (len = PyLong_FromUnsignedLongLong(self->length)))
            r2 = PyObject_CallMethodObjArgs(space, s_forget, self->iova, len, NULL);
        Py_XDECREF(space);
        Py_XDECREF(len);
        if (!r2) return NULL;
        Py_DECREF(r2);
    }
    return PyLong_FromUnsignedLongLong(done);
}

/* _arm(): take the prebuilt structs' buffers and the values the C path reads, once, after
 * the Python __init__ set the attributes (a second call re-arms with the current ones). */
static void disarm(Prepared *self)
{
    if (self->armed) {
        PyBuffer_Release(&self->map_arg);
        PyBuffer_Release(&self->unmap_arg);
        self->armed = 0;
    }
}

static PyObject *prep_arm(Prepared *self, PyObject *args)
{
    PyObject *marg, *uarg;
    unsigned long long length;
    if (!PyArg_ParseTuple(args, "kOkOnK", &self->map_req, &marg, &self->unmap_req, &uarg,
                          &self->unmap_field, &length))
        return NULL;
    disarm(self);
    if (PyObject_GetBuffer(marg, &self->map_arg, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS))
        return NULL;
    if (PyObject_GetBuffer(uarg, &self->unmap_arg, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) {
        PyBuffer_Release(&self->map_arg);
        return NULL;
    }
    if (self->unmap_field < 0 || self->unmap_field + 8 > self->unmap_arg.len) {
        PyBuffer_Release(&self->map_arg);
        PyBuffer_Release(&self->unmap_arg);
        PyErr_SetString(PyExc_ValueError, "the unmap length field is outside its struct");
        return NULL;
    }
    self->length = length;
    self->armed = 1;
    Py_RETURN_NONE;
}

static int prep_traverse(Prepared *self, visitproc visit, void *arg)
{
    Py_VISIT(self->entry);
    Py_VISIT(self->maps);
    Py_VISIT(self->owner);
    Py_VISIT(self->iova);
    Py_VISIT(self->mapping);
    return 0;
}

static int prep_clear(Prepared *self)
{
    Py_CLEAR(self->entry);
    Py_CLEAR(self->maps);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->iova);
    Py_CLEAR(self->mapping);
    return 0;
}

static void prep_dealloc(Prepared *self)
{
    PyObject_GC_UnTrack(self);
    disarm(self);
    prep_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef prep_methods[] = {
    {"map", (PyCFunction)prep_map, METH_NOARGS,
     "map(): map the buffer again (EEXIST from the kernel if something is mapped there)."},
    {"unmap", (PyCFunction)prep_unmap, METH_NOARGS,
     "unmap(): unmap [iova, iova + length); the number of bytes the kernel unmapped."},
    {"_arm", (PyCFunction)prep_arm, METH_VARARGS, NULL},
    {NULL}
};

static PyMemberDef prep_members[] = {
    {"_entry", T_OBJECT_EX, offsetof(Prepared, entry), 0, NULL},
    {"_maps", T_OBJECT_EX, offsetof(Prepared, maps), 0, NULL},
    {"_owner", T_OBJECT_EX, offsetof(Prepared, owner), 0, NULL},
    {"iova", T_OBJECT_EX, offsetof(Prepared, iova), 0, NULL},
    {"mapping", T_OBJECT_EX, offsetof(Prepared, mapping), 0, NULL},
    {NULL}
};

static PyTypeObject PreparedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vfioctl._speedups.Prepared", .tp_basicsize = sizeof(Prepared),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew, .tp_dealloc = (destructor)prep_dealloc,
    .tp_traverse = (traverseproc)prep_traverse, .tp_clear = (inquiry)prep_clear,
    .tp_methods = prep_methods, .tp_members = prep_members,
    .tp_doc = "The map and unmap of vfioctl.iova.PreparedMapping, compiled.",
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "vfioctl._speedups", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__speedups(void)
{
    struct { PyObject **p; const char *s; } names[] = {
        {&s_py_read, "_py_read"}, {&s_py_write, "_py_write"}, {&s_py_map, "_py_map"},
        {&s_py_unmap, "_py_unmap"}, {&s_access_failed, "_access_failed"},
        {&s_ioctl_failed, "_ioctl_failed"}, {&s_fd, "_fd"}, {&s_forget, "_forget_range"},
        {&s_space, "_space"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].p && !(*names[i].p = PyUnicode_InternFromString(names[i].s)))
            return NULL;
    if (!four && !(four = PyLong_FromLong(4))) return NULL;
    if (PyType_Ready(&RegistersType) < 0 || PyType_Ready(&PreparedType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    Py_INCREF(&RegistersType);
    Py_INCREF(&PreparedType);
    if (PyModule_AddObject(m, "Registers", (PyObject *)&RegistersType)
        || PyModule_AddObject(m, "Prepared", (PyObject *)&PreparedType)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
