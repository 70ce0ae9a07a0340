# Files and paths through the ring: the requests behind aioring.open() and
# its path helpers (aioring/files.py holds the file objects; this holds the
# requests).  Each request is one FileOp whose future the completion
# resolves: the opened descriptor, the bytes read, the count written, an
# os.stat_result, or None; an error becomes the OSError os.* would raise for
# the same errno and file names.
#
# Regular-file reads and writes, opens and the path operations usually run
# in io-wq workers (the kernel cannot wait for a disk through its poll);
# that is what makes them asynchronous (docs/files.md).  Reads and writes
# use the descriptor's own position (offset -1, IORING_FEAT_RW_CUR_POS), so
# that seek()/tell() are plain lseek(2) calls and O_APPEND, pipes and
# character devices behave as with read(2)/write(2).

from libc.stdint cimport uint32_t, int64_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "fcntl.h":
    enum: AT_FDCWD
    enum: AT_EMPTY_PATH
    enum: AT_SYMLINK_NOFOLLOW
    enum: AT_REMOVEDIR

cdef extern from "<linux/stat.h>":
    struct statx_timestamp:
        int64_t tv_sec
        uint32_t tv_nsec
    struct statx:
        uint32_t stx_blksize
        uint32_t stx_nlink
        uint32_t stx_uid
        uint32_t stx_gid
        uint16_t stx_mode
        uint64_t stx_ino
        uint64_t stx_size
        uint64_t stx_blocks
        statx_timestamp stx_atime
        statx_timestamp stx_ctime
        statx_timestamp stx_mtime
        uint32_t stx_rdev_major
        uint32_t stx_rdev_minor
        uint32_t stx_dev_major
        uint32_t stx_dev_minor
    enum: STATX_BASIC_STATS

# What a FileOp's completion makes of its result.
cdef enum:
    FILE_OPEN = 1           # the new descriptor
    FILE_READ = 2           # the bytes read
    FILE_WRITE = 3          # the count written
    FILE_STATX = 4          # an os.stat_result
    FILE_NONE = 5           # close, fsync, truncate, unlink, rename, mkdir: None

# One ring request can move at most this much (the length is 32 bits).
cdef Py_ssize_t FILE_IO_MAX = 1 << 30

cdef object _stat_result = os.stat_result
cdef object _makedev = os.makedev


class FileFuture(_Future):
    """The future of a file request.  Cancelling it does not end it at
    once: the kernel is asked to cancel the request, and the future ends
    with the request's completion -- cancelled if the kernel stopped it in
    time, else with what it did (the bytes read, the descriptor opened), for
    the caller to take over (aioring.files._finish) rather than lose.  A
    task awaiting it gets its CancelledError then, one iteration later
    than from a plain future.  (Not a done callback on a plain future: that
    would be a callback per request; this costs nothing until a cancel.)"""
    __slots__ = ('_op',)

    def cancel(self, msg=None):
        cdef FileOp op = self._op
        if not self.done() and op.in_flight and op.loop != NULL:
            (<BaseLoop>op.loop)._cancel_op(op)
        return False


cdef object _future_cancel = _Future.cancel


cdef class FileOp(Operation):
    cdef:
        object fut              # a FileFuture
        object keep             # what the kernel reads or writes: paths, data, the read buffer
        object filename         # for the OSError, as os.* would name them
        object filename2
        int kind

    cdef int complete(self, int res, unsigned flags) except -1:
        fut, self.fut = self.fut, None
        keep, self.keep = self.keep, None
        gone = (fut is None or fut.done() or self.loop == NULL
                or (<BaseLoop>self.loop)._closed)
        if gone:
            if self.kind == FILE_OPEN and res >= 0:
                c_close(res)    # nobody will ever see this descriptor
            return 0
        if res < 0:
            if res == -ECANCELED:
                _future_cancel(fut)
            else:
                fut.set_exception(_file_error(-res, self.filename, self.filename2))
        elif self.kind == FILE_READ:
            if res == len(keep):
                fut.set_result(keep)
            else:
                fut.set_result(PyBytes_FromStringAndSize(PyBytes_AS_STRING(keep), res))
        elif self.kind == FILE_STATX:
            fut.set_result(_statx_to_stat_result(<statx *>PyBytes_AS_STRING(keep[0])))
        elif self.kind == FILE_NONE:
            fut.set_result(None)
        else:
            fut.set_result(res)


cdef object _file_error(int err, filename, filename2):
    # OSError picks the subclass from errno (FileNotFoundError, ...)
    if filename2 is not None:
        return OSError(err, os.strerror(err), filename, None, filename2)
    if filename is not None:
        return OSError(err, os.strerror(err), filename)
    return OSError(err, os.strerror(err))


cdef object _statx_to_stat_result(statx *st):
    # the fields os.stat() fills, computed as it computes them (the float
    # times as sec + nsec * 1e-9)
    cdef list times_int = [], times_float = [], times_ns = []
    cdef statx_timestamp *ts
    cdef statx_timestamp *times[3]
    times[0] = &st.stx_atime
    times[1] = &st.stx_mtime
    times[2] = &st.stx_ctime
    for i in range(3):
        ts = times[i]
        sec = ts.tv_sec
        nsec = ts.tv_nsec
        times_int.append(sec)
        times_float.append(sec + nsec * 1e-9)
        times_ns.append(sec * 1000000000 + nsec)
    return _stat_result((
        st.stx_mode, st.stx_ino, _makedev(st.stx_dev_major, st.stx_dev_minor),
        st.stx_nlink, st.stx_uid, st.stx_gid, st.stx_size,
        *times_int, *times_float, *times_ns,
        st.stx_blksize, st.stx_blocks, _makedev(st.stx_rdev_major, st.stx_rdev_minor)))


cdef FileOp _file_op(BaseLoop loop, int kind, filename=None, filename2=None):
    loop._check_closed_fast()
    cdef FileOp op = FileOp.__new__(FileOp)
    op.kind = kind
    op.fut = FileFuture(loop=loop)
    op.fut._op = op         # (a cycle until complete() drops op.fut)
    op.filename = filename
    op.filename2 = filename2
    return op


cdef object _file_submitted(BaseLoop loop, FileOp op):
    # op's SQE is prepared: hold op until its final completion
    loop._track_user(op)
    loop.file_requests += 1
    return op.fut


cdef inline uint64_t _file_udata(FileOp op) noexcept:
    return <uint64_t><uintptr_t><PyObject *>op


def _loop_file_openat(BaseLoop self, int dirfd, bytes path, int flags, int mode, filename):
    """A future: openat(2) of path (flags as os.open takes them), the new fd."""
    cdef FileOp op = _file_op(self, FILE_OPEN, filename)
    op.keep = path
    ar_prep_openat(acquire_sqe(&self.ring), dirfd, PyBytes_AS_STRING(path), flags,
                   <unsigned>mode, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_read(BaseLoop self, int fd, Py_ssize_t size):
    """A future: up to size bytes read at fd's position (b'' at the end)."""
    cdef FileOp op = _file_op(self, FILE_READ)
    size = min(size, FILE_IO_MAX)
    # a bytes object nobody else sees yet: the kernel fills it in place
    op.keep = PyBytes_FromStringAndSize(NULL, size)
    ar_prep_read(acquire_sqe(&self.ring), fd, PyBytes_AS_STRING(op.keep), <unsigned>size,
                 <uint64_t>-1, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_write(BaseLoop self, int fd, bytes data):
    """A future: write(2) of data at fd's position, the count written."""
    cdef FileOp op = _file_op(self, FILE_WRITE)
    op.keep = data
    ar_prep_write(acquire_sqe(&self.ring), fd, PyBytes_AS_STRING(data),
                  <unsigned>min(len(data), FILE_IO_MAX), <uint64_t>-1, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_close(BaseLoop self, int fd):
    cdef FileOp op = _file_op(self, FILE_NONE)
    ar_prep_close(acquire_sqe(&self.ring), fd, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_fsync(BaseLoop self, int fd, bint datasync):
    cdef FileOp op = _file_op(self, FILE_NONE)
    ar_prep_fsync(acquire_sqe(&self.ring), fd, IORING_FSYNC_DATASYNC if datasync else 0,
                  _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_ftruncate(BaseLoop self, int fd, uint64_t length):
    cdef FileOp op = _file_op(self, FILE_NONE)
    ar_prep_ftruncate(acquire_sqe(&self.ring), fd, length, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_statx(BaseLoop self, int dirfd, bytes path, bint follow_symlinks, filename):
    """A future: os.stat_result of path (of dirfd itself when path is b'')."""
    cdef FileOp op = _file_op(self, FILE_STATX, filename)
    cdef int flags = 0
    if not path:
        flags |= AT_EMPTY_PATH
    if not follow_symlinks:
        flags |= AT_SYMLINK_NOFOLLOW
    # the kernel's statx buffer and the path, kept until the completion
    buf = PyBytes_FromStringAndSize(NULL, sizeof(statx))
    op.keep = (buf, path)
    ar_prep_statx(acquire_sqe(&self.ring), dirfd, PyBytes_AS_STRING(path), flags,
                  STATX_BASIC_STATS, PyBytes_AS_STRING(buf), _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_unlinkat(BaseLoop self, int dirfd, bytes path, bint rmdir, filename):
    cdef FileOp op = _file_op(self, FILE_NONE, filename)
    op.keep = path
    ar_prep_unlinkat(acquire_sqe(&self.ring), dirfd, PyBytes_AS_STRING(path),
                     AT_REMOVEDIR if rmdir else 0, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_renameat(BaseLoop self, int src_dirfd, bytes src, int dst_dirfd, bytes dst,
                        src_name, dst_name):
    cdef FileOp op = _file_op(self, FILE_NONE, src_name, dst_name)
    op.keep = (src, dst)
    ar_prep_renameat(acquire_sqe(&self.ring), src_dirfd, PyBytes_AS_STRING(src),
                     dst_dirfd, PyBytes_AS_STRING(dst), 0, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_mkdirat(BaseLoop self, int dirfd, bytes path, int mode, filename):
    cdef FileOp op = _file_op(self, FILE_NONE, filename)
    op.keep = path
    ar_prep_mkdirat(acquire_sqe(&self.ring), dirfd, PyBytes_AS_STRING(path),
                    <unsigned>mode, _file_udata(op))
    return _file_submitted(self, op)


def _loop_file_ops(BaseLoop self):
    """Which file requests this kernel's ring takes (IORING_REGISTER_PROBE):
    aioring.files uses a thread for the others."""
    cdef ar_ring *ring = &self.ring
    cdef bint cur_pos = (ring.features & IORING_FEAT_RW_CUR_POS) != 0
    return {
        'openat': bool(ar_op_supported(ring, IORING_OP_OPENAT)),
        'read': bool(cur_pos and ar_op_supported(ring, IORING_OP_READ)),
        'write': bool(cur_pos and ar_op_supported(ring, IORING_OP_WRITE)),
        'close': bool(ar_op_supported(ring, IORING_OP_CLOSE)),
        'fsync': bool(ar_op_supported(ring, IORING_OP_FSYNC)),
        'ftruncate': bool(ar_op_supported(ring, AR_OP_FTRUNCATE)),
        'statx': bool(ar_op_supported(ring, IORING_OP_STATX)),
        'unlinkat': bool(ar_op_supported(ring, IORING_OP_UNLINKAT)),
        'renameat': bool(ar_op_supported(ring, IORING_OP_RENAMEAT)),
        'mkdirat': bool(ar_op_supported(ring, IORING_OP_MKDIRAT)),
    }


