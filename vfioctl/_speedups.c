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
 * - Space: map(buf, iova) and unmap(iova) of iova.DmaSpace (an IOAS, a container) with an
 *   explicit IOVA: the buffer's export (an Export, which holds it as a ctypes object would),
 *   the page checks, the Mapping record and the ioctl's struct (from a template the backend
 *   gives once, filled on the stack: no struct is shared between threads).
 *
 * Python stays the authority. Anything the C path does not take as it is (a refused check, an
 * argument of another type, keywords, a closed object) goes to the class's pure-Python method
 * (_py_read, _py_write, _py_map, _py_unmap), which checks again and raises the error that
 * names the fix. A system call that failed is never issued again: its errno or short count
 * goes to a Python method that raises (_access_failed, _ioctl_failed, _map_failed,
 * _unmap_failed).
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
    *s_ioctl_failed, *s_fd, *s_forget, *s_space, *s_map_failed, *s_unmap_failed, *s_arm_space,
    *s_length, *s_iova, *s_readable, *s_writable, *s_limit, *s_align, *four, *empty;
static long long page_mask;

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

/* an FdOwner's fd, or -1 (closed, or not a plain int: Python's path decides) */
static int fd_of(PyObject *owner)
{
    PyObject *o = PyObject_GetAttr(owner, s_fd);
    long long fd = -1;
    if (!o || as_ll(o, &fd) || fd > INT32_MAX) fd = -1;
    Py_XDECREF(o);
    if (fd < 0) PyErr_Clear();
    return (int)fd;
}

static int owner_fd(Prepared *self) { return fd_of(self->owner); }

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

/* ---- Export: a buffer held for the IOMMU ---- */

/* What a mapping made by Space.map keeps: the buffer's export (a bytearray cannot be resized
 * nor an mmap closed while it lives), released when the mapping's record goes. */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int held;
} Export;

static void export_dealloc(Export *self)
{
    if (self->held) PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *export_address(Export *self, void *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong((uintptr_t)self->view.buf);
}

static PyGetSetDef export_getset[] = {
    {"address", (getter)export_address, NULL, "The buffer's address.", NULL},
    {NULL}
};

static PyTypeObject ExportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vfioctl._speedups.Export", .tp_basicsize = sizeof(Export),
    .tp_flags = Py_TPFLAGS_DEFAULT, .tp_dealloc = (destructor)export_dealloc,
    .tp_getset = export_getset,
    .tp_doc = "A buffer's export, held while the IOMMU maps the buffer.",
};

/* ---- Space ---- */

#define TEMPLATE_MAX 64

typedef struct {
    PyObject_HEAD
    PyObject *maps;         /* _maps: IOVA -> (Mapping, keepalive) */
    PyObject *owner;        /* the FdOwner whose _fd the ioctls take; NULL: the space itself */
    PyObject *mapping_cls;  /* iova.Mapping */
    Py_ssize_t slot[4];     /* where its iova, length, readable and writable slots sit */
    unsigned long map_req, unmap_req;
    unsigned char mt[TEMPLATE_MAX], ut[TEMPLATE_MAX];  /* the structs, constant fields filled */
    Py_ssize_t mlen, ulen, m_flags, m_va, m_iova, m_len, u_iova, u_len;
    unsigned long f_base, f_r, f_w;
    int armed;
} Space;

static int space_traverse(Space *self, visitproc visit, void *arg)
{
    Py_VISIT(self->maps);
    Py_VISIT(self->owner);
    Py_VISIT(self->mapping_cls);
    return 0;
}

static int space_clear(Space *self)
{
    Py_CLEAR(self->maps);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->mapping_cls);
    self->armed = 0;
    return 0;
}

static void space_dealloc(Space *self)
{
    PyObject_GC_UnTrack(self);
    space_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Armed on the first call: the backend's _arm_space() gives the templates (False while the
 * space cannot map: Python's path then). 1: armed; 0: not; -1: its error is set. */
static int space_armed(Space *self)
{
    if (self->armed) return 1;
    PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, s_arm_space);
    if (!r) return -1;
    Py_DECREF(r);
    return self->armed;
}

static int space_fd(Space *self)
{
    return fd_of(self->owner ? self->owner : (PyObject *)self);
}

static int kw_is(PyObject *name, PyObject *want)
{
    return name == want || PyUnicode_Compare(name, want) == 0;
}

static void put64(unsigned char *at, uint64_t v) { memcpy(at, &v, 8); }

/* A Mapping(iova, length, readable, writable), as its own __init__ fills it: its four slots */
static PyObject *new_mapping(Space *self, PyObject *iova, PyObject *len, PyObject *r,
                             PyObject *w)
{
    PyTypeObject *cls = (PyTypeObject *)self->mapping_cls;
    PyObject *m = cls->tp_alloc(cls, 0), *v[4] = {iova, len, r, w};
    if (!m) return NULL;
    for (int i = 0; i < 4; i++)
        *(PyObject **)((char *)m + self->slot[i]) = Py_NewRef(v[i]);
    return m;
}

static PyObject *space_map(Space *self, PyObject *const *av, Py_ssize_t nargsf,
                           PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *o_iova = n == 2 ? av[1] : NULL, *rd = Py_True, *wr = Py_True;
    long long iova;
    int r, w, fd, armed;
    if (n < 1 || n > 2) goto slow;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *v = av[n + i];
        if (kw_is(name, s_readable)) rd = v;
        else if (kw_is(name, s_writable)) wr = v;
        else if (kw_is(name, s_iova) && !o_iova) o_iova = v;
        else if (!kw_is(name, s_limit) && !kw_is(name, s_align)) goto slow;
        /* limit and align choose an IOVA: with one given, Python ignores them too */
    }
    if (!o_iova || as_ll(o_iova, &iova) || iova < 0 || (iova & page_mask)) goto slow;
    if ((r = PyObject_IsTrue(rd)) < 0 || (w = PyObject_IsTrue(wr)) < 0) {
        PyErr_Clear();
        goto slow;
    }
    if (!r && !w) goto slow;
    if ((armed = space_armed(self)) < 0) return NULL;
    if (!armed || !self->maps || !PyDict_CheckExact(self->maps) || (fd = space_fd(self)) < 0)
        goto slow;

    Export *keep = PyObject_New(Export, &ExportType);
    if (!keep) return NULL;
    keep->held = 0;
    if (PyObject_GetBuffer(av[0], &keep->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)) {
        Py_DECREF(keep);
        PyErr_Clear();
        goto slow;
    }
    keep->held = 1;
    uint64_t addr = (uintptr_t)keep->view.buf;
    Py_ssize_t len = keep->view.len;
    if (len <= 0 || ((addr | (uint64_t)len) & (uint64_t)page_mask)) {
        Py_DECREF(keep);
        goto slow;
    }
    /* the record first: after the kernel mapped, nothing may fail but the dict's insert */
    PyObject *o_len = PyLong_FromSsize_t(len), *m = NULL, *entry = NULL;
    if (o_len && (m = new_mapping(self, o_iova, o_len, rd, wr)))
        entry = PyTuple_Pack(2, m, (PyObject *)keep);
    Py_XDECREF(o_len);
    Py_DECREF(keep);  /* the entry holds it */
    if (!entry) {
        Py_XDECREF(m);
        return NULL;
    }
    unsigned char a[TEMPLATE_MAX];
    memcpy(a, self->mt, (size_t)self->mlen);
    uint32_t flags = (uint32_t)(self->f_base | (r ? self->f_r : 0) | (w ? self->f_w : 0));
    memcpy(a + self->m_flags, &flags, 4);
    put64(a + self->m_va, addr);
    put64(a + self->m_iova, (uint64_t)iova);
    put64(a + self->m_len, (uint64_t)len);
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = ioctl(fd, self->map_req, a);
    if (rc) err = errno;
    Py_END_ALLOW_THREADS
    if (rc) {  /* the export goes before the error is raised: the caller may close its mmap */
        Py_DECREF(entry);
        Py_DECREF(m);
        return failed((PyObject *)self, s_map_failed, "(iLn)", err, iova, len);
    }
    if (PyDict_SetItem(self->maps, o_iova, entry)) {
        Py_DECREF(entry);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(entry);
    return m;
slow:
    return fallback((PyObject *)self, s_py_map, av, nargsf, kwnames);
}

static PyObject *space_unmap(Space *self, PyObject *const *av, Py_ssize_t nargsf,
                             PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    long long iova, length;
    int fd, armed;
    if (kwnames || n < 1 || n > 2 || (n == 2 && av[1] != Py_None) || as_ll(av[0], &iova))
        goto slow;
    if ((armed = space_armed(self)) < 0) return NULL;
    if (!armed || !self->maps || !PyDict_CheckExact(self->maps)) goto slow;
    PyObject *entry = PyDict_GetItemWithError(self->maps, av[0]);  /* borrowed */
    if (!entry) {
        PyErr_Clear();
        goto slow;  /* nothing mapped there: Python says so */
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) goto slow;
    PyObject *keep = PyTuple_GET_ITEM(entry, 1);
    if (Py_IS_TYPE(keep, &ExportType)) {  /* this map's: the buffer's length is the mapping's */
        length = ((Export *)keep)->view.len;
    } else {  /* Python's map: the record says */
        PyObject *o_len = PyObject_GetAttr(PyTuple_GET_ITEM(entry, 0), s_length);
        int bad = !o_len || as_ll(o_len, &length);
        Py_XDECREF(o_len);
        if (bad) {
            PyErr_Clear();
            goto slow;
        }
    }
    if (length <= 0 || (fd = space_fd(self)) < 0) goto slow;
    unsigned char a[TEMPLATE_MAX];
    memcpy(a, self->ut, (size_t)self->ulen);
    put64(a + self->u_iova, (uint64_t)iova);
    put64(a + self->u_len, (uint64_t)length);
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = ioctl(fd, self->unmap_req, a);
    if (rc) err = errno;
    Py_END_ALLOW_THREADS
    if (rc) return failed((PyObject *)self, s_unmap_failed, "(iLL)", err, iova, length);
    uint64_t done;
    memcpy(&done, a + self->u_len, 8);  /* what the kernel unmapped */
    /* exactly one mapping: what map() recorded at this IOVA (its export goes with it) */
    if (PyDict_DelItem(self->maps, av[0])) return NULL;
    return PyLong_FromUnsignedLongLong(done);
slow:
    return fallback((PyObject *)self, s_py_unmap, av, nargsf, kwnames);
}

/* _arm(owner, Mapping, map request, map struct bytes, its flags/va/iova/length offsets, the
 * fixed/read/write flags, unmap request, unmap struct bytes, its iova/length offsets) */
static PyObject *space_arm(Space *self, PyObject *args)
{
    PyObject *owner, *cls;
    const char *mt, *ut;
    Py_ssize_t mlen, ulen, off[6];
    unsigned long map_req, unmap_req, f_base, f_r, f_w;
    if (!PyArg_ParseTuple(args, "OOky#nnnnkkkky#nn", &owner, &cls, &map_req, &mt, &mlen,
                          &off[0], &off[1], &off[2], &off[3], &f_base, &f_r, &f_w, &unmap_req,
                          &ut, &ulen, &off[4], &off[5]))
        return NULL;
    if (!PyType_Check(cls) || mlen > TEMPLATE_MAX || ulen > TEMPLATE_MAX) {
        PyErr_SetString(PyExc_ValueError, "a struct template does not fit");
        return NULL;
    }
    for (int i = 0; i < 6; i++) {
        Py_ssize_t end = i < 4 ? mlen : ulen, size = i == 0 ? 4 : 8;
        if (off[i] < 0 || off[i] + size > end) {
            PyErr_SetString(PyExc_ValueError, "a field is outside its struct");
            return NULL;
        }
    }
    PyObject *names[4] = {s_iova, s_length, s_readable, s_writable};
    Py_ssize_t slot[4];
    for (int i = 0; i < 4; i++) {  /* the class's slot descriptors, as __slots__ made them */
        PyObject *d = PyDict_GetItemWithError(((PyTypeObject *)cls)->tp_dict, names[i]);
        if (!d || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "the Mapping class has no such slots");
            return NULL;
        }
        slot[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    self->armed = 0;
    memcpy(self->slot, slot, sizeof slot);
    Py_XSETREF(self->owner, owner == (PyObject *)self ? NULL : Py_NewRef(owner));
    Py_XSETREF(self->mapping_cls, Py_NewRef(cls));
    self->map_req = map_req;
    self->unmap_req = unmap_req;
    memcpy(self->mt, mt, (size_t)mlen);
    memcpy(self->ut, ut, (size_t)ulen);
    self->mlen = mlen;
    self->ulen = ulen;
    self->m_flags = off[0];
    self->m_va = off[1];
    self->m_iova = off[2];
    self->m_len = off[3];
    self->u_iova = off[4];
    self->u_len = off[5];
    self->f_base = f_base;
    self->f_r = f_r;
    self->f_w = f_w;
    self->armed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef space_methods[] = {
    {"map", (PyCFunction)(void (*)(void))space_map, METH_FASTCALL | METH_KEYWORDS,
     "map(buf, iova=None, *, readable=True, writable=True, limit=None, align=None): as _py_map."},
    {"unmap", (PyCFunction)(void (*)(void))space_unmap, METH_FASTCALL | METH_KEYWORDS,
     "unmap(iova, length=None): as _py_unmap."},
    {"_arm", (PyCFunction)space_arm, METH_VARARGS, NULL},
    {NULL}
};

static PyMemberDef space_members[] = {
    {"_maps", T_OBJECT_EX, offsetof(Space, maps), 0, NULL},
    {"_armed", T_INT, offsetof(Space, armed), READONLY, NULL},
    {NULL}
};

static PyTypeObject SpaceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vfioctl._speedups.Space", .tp_basicsize = sizeof(Space),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew, .tp_dealloc = (destructor)space_dealloc,
    .tp_traverse = (traverseproc)space_traverse, .tp_clear = (inquiry)space_clear,
    .tp_methods = space_methods, .tp_members = space_members,
    .tp_doc = "The map and unmap of vfioctl.iova.DmaSpace at an explicit IOVA, compiled.",
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "vfioctl._speedups", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__speedups(void)
{
    struct { PyObject **p; const char *s; } names[] = {
        {&s_py_read, "_py_read"}, {&s_py_write, "_py_write"}, {&s_py_map, "_py_map"},
        {&s_py_unmap, "_py_unmap"}, {&s_access_failed, "_access_failed"},
        {&s_ioctl_failed, "_ioctl_failed"}, {&s_fd, "_fd"}, {&s_forget, "_forget_range"},
        {&s_space, "_space"}, {&s_map_failed, "_map_failed"},
        {&s_unmap_failed, "_unmap_failed"}, {&s_arm_space, "_arm_space"},
        {&s_length, "length"}, {&s_iova, "iova"}, {&s_readable, "readable"},
        {&s_writable, "writable"}, {&s_limit, "limit"}, {&s_align, "align"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].p && !(*names[i].p = PyUnicode_InternFromString(names[i].s)))
            return NULL;
    if (!four && !(four = PyLong_FromLong(4))) return NULL;
    if (!empty && !(empty = PyTuple_New(0))) return NULL;
    page_mask = sysconf(_SC_PAGESIZE) - 1;
    if (PyType_Ready(&RegistersType) < 0 || PyType_Ready(&PreparedType) < 0
        || PyType_Ready(&ExportType) < 0 || PyType_Ready(&SpaceType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    Py_INCREF(&RegistersType);
    Py_INCREF(&PreparedType);
    Py_INCREF(&ExportType);
    Py_INCREF(&SpaceType);
    if (PyModule_AddObject(m, "Registers", (PyObject *)&RegistersType)
        || PyModule_AddObject(m, "Prepared", (PyObject *)&PreparedType)
        || PyModule_AddObject(m, "Export", (PyObject *)&ExportType)
        || PyModule_AddObject(m, "Space", (PyObject *)&SpaceType)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
