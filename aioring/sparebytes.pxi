# Spare bytes objects, reused to carry received data.
#
# Every chunk a stream receives becomes a bytes object: an allocation, and
# later a free.  One of more than 512 bytes is a malloc() of its own, on a
# 1 KiB echo about 450 instructions per request, more than any part of the
# loop; a smaller one costs CPython's small-object allocator about 150.
# Most of those objects die young, in places the loop knows: data_received()
# returns without keeping the chunk, or a chunk that was written has been
# sent and the transport drops it.  There, when the loop holds the only
# reference, the object is kept here instead of going back to malloc, and
# the next chunk received that it fits is written into it.
#
# Only exact bytes objects that nothing else references (reference count 1,
# the loop's own), of SPARE_MIN_SIZE to SPARE_MAX_SIZE bytes; a spare is
# used for a chunk of at least half its size (no large block kept alive
# behind small data).  At most SPARE_COUNT are kept (one per connection of
# a busy server, whose chunks are in flight at once), holding at most
# SPARE_TOTAL bytes; when full, older spares make room for newer ones.  What the protocol gets
# is indistinguishable from a new object: its length, contents and
# (uncomputed) hash are set as PyBytes_FromStringAndSize sets them.

cdef extern from "Python.h":
    ctypedef struct PyBytesObject:
        Py_hash_t ob_shash
        char ob_sval[1]
    PyObject *_Py_TYPE "(PyObject *)Py_TYPE"(PyObject *o)
    Py_ssize_t _Py_REFCNT "Py_REFCNT"(PyObject *o)
    Py_ssize_t _Py_SIZE "Py_SIZE"(PyObject *o)
    void _Py_SET_SIZE "Py_SET_SIZE"(PyObject *o, Py_ssize_t size)
    PyObject *PyList_GET_ITEM(object list, Py_ssize_t i)

cdef PyObject *BYTES_TYPE = <PyObject *>bytes
cdef Py_ssize_t SPARE_MIN_SIZE = 2      # (b'' and 1-byte objects are shared)
cdef Py_ssize_t SPARE_MAX_SIZE = 256 * 1024
cdef Py_ssize_t SPARE_TOTAL = 1024 * 1024
cdef int SPARE_SCAN = 8                 # spares looked at per chunk, newest first


cdef class SpareBytes:
    # (attributes in loop.pxd)

    def __dealloc__(self):
        while self.count:
            self.count -= 1
            Py_DECREF(<object>self.items[self.count])

    cdef bytes make(self, const char *buf, Py_ssize_t n):
        """A bytes object holding buf[:n]."""
        cdef int i
        cdef Py_ssize_t size
        cdef PyObject *o
        cdef bytes result
        if n >= SPARE_MIN_SIZE:
            # the most recently kept that fits (a connection's chunks tend
            # to be of one size: the first looked at usually is)
            i = self.count
            while i > 0 and i > self.count - SPARE_SCAN:
                i -= 1
                size = _Py_SIZE(self.items[i])
                if n <= size <= 2 * n:
                    break
            else:
                return PyBytes_FromStringAndSize(buf, n)
            o = self.items[i]
            self.count -= 1
            self.items[i] = self.items[self.count]
            self.total -= size
            _Py_SET_SIZE(o, n)
            (<PyBytesObject *>o).ob_shash = -1
            memcpy((<PyBytesObject *>o).ob_sval, buf, n)
            (<PyBytesObject *>o).ob_sval[n] = 0
            result = <bytes>o
            Py_DECREF(result)   # the pool's reference, now `result`'s
            return result
        return PyBytes_FromStringAndSize(buf, n)

    cdef void offer(self, PyObject *o) noexcept:
        # o: a reference someone is about to drop; kept when it is the last
        cdef Py_ssize_t size
        if _Py_REFCNT(o) != 1 or _Py_TYPE(o) != BYTES_TYPE:
            return
        size = _Py_SIZE(o)
        if size < SPARE_MIN_SIZE or size > SPARE_MAX_SIZE:
            return
        if self.count == SPARE_COUNT or self.total + size > SPARE_TOTAL:
            if not self.make_room(size):
                return
        Py_INCREF(<object>o)    # (the cast's own reference is released again)
        self.items[self.count] = o
        self.count += 1
        self.total += size

    cdef bint make_room(self, Py_ssize_t size) noexcept:
        # Full: a spare kept earlier makes room, one slot after the other.
        # (Turning the newcomer away instead would keep spares of a size no
        # longer received for good, and every chunk of today's size would
        # be a new allocation.)
        cdef int k = self.evict_next % self.count
        self.evict_next = k + 1
        self.total -= _Py_SIZE(self.items[k])
        self.count -= 1
        Py_DECREF(<object>self.items[k])
        self.items[k] = self.items[self.count]
        return self.total + size <= SPARE_TOTAL

    cdef void offer_list(self, list chunks) noexcept:
        # chunks: a list about to be cleared (its references the only ones)
        cdef Py_ssize_t i
        for i in range(len(chunks)):
            self.offer(PyList_GET_ITEM(chunks, i))
