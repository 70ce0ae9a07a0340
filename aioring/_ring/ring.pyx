# cython: language_level=3
"""The Python face of the ring layer.

`Ring` drives one io_uring directly; the test-suite uses it to check the ring
layer on its own (NOP round trips, a full SQ, CQ overflow, probing, the file
table, provided-buffer rings), and `setup_error` turns a refused
io_uring_setup into the exception that `aioring.new_event_loop()` raises.
Nothing here knows about asyncio.
"""
from libc.errno cimport EPERM, ENOSYS, ENOMEM, EINVAL, EINTR
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize
import errno as _errno
import os


class IoUringUnavailable(OSError):
    """io_uring cannot be used in this process: the message names the cause
    (seccomp, kernel.io_uring_disabled, an old kernel, memory limits) and the
    fix.  A subclass of OSError; its errno is the one io_uring_setup gave."""


def _read_sysctl(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


cdef object setup_error(int err):
    cdef str why
    disabled = _read_sysctl('/proc/sys/kernel/io_uring_disabled')
    if err == EPERM:
        if disabled == '2':
            why = ('io_uring is disabled on this system (kernel.io_uring_disabled=2). '
                   'Fix: `sysctl -w kernel.io_uring_disabled=0` (as root), or run on '
                   'the stock asyncio loop.')
        elif disabled == '1':
            why = ('io_uring is limited to privileged processes here '
                   '(kernel.io_uring_disabled=1) and this process is neither '
                   'CAP_SYS_ADMIN nor in kernel.io_uring_group. Fix: add the user '
                   'to that group, or set kernel.io_uring_disabled=0.')
        else:
            why = ('io_uring_setup was refused (EPERM), most likely by a seccomp '
                   'filter (the default profile of Docker or Podman, systemd '
                   'SystemCallFilter=). Fix: allow io_uring_setup, io_uring_enter '
                   'and io_uring_register in the profile.')
    elif err == ENOSYS:
        why = ('io_uring_setup does not exist here (ENOSYS): the kernel is older '
               'than 5.1 or built without CONFIG_IO_URING, or a seccomp filter '
               'hides it. Fix: run on a kernel with io_uring (5.19 or newer is '
               'recommended) or allow the io_uring syscalls.')
    elif err == ENOMEM:
        why = ('io_uring_setup could not allocate the ring (ENOMEM). On kernels '
               'before 5.12 rings count against RLIMIT_MEMLOCK. Fix: raise '
               '`ulimit -l`, or use a newer kernel.')
    elif err == EINVAL:
        why = ('the kernel rejected every io_uring setup aioring knows (EINVAL): it '
               'is too old. Fix: run on Linux 5.19 or newer.')
    else:
        why = f'io_uring_setup failed: {os.strerror(err)}'
    return IoUringUnavailable(err, 'aioring cannot use io_uring: ' + why)


cdef class Ring:
    """One io_uring, driven by hand."""
    cdef ar_ring r
    cdef bint live
    cdef dict buffers       # user_data -> bytearray the kernel reads into
    cdef dict bufrings      # bgid -> capsule-free pointer kept as int

    def __cinit__(self, unsigned entries=8, unsigned cq_entries=0, *,
                  bint defer_taskrun=True, bint no_sqarray=True,
                  bint start_disabled=False):
        cdef unsigned want = 0
        cdef int ret
        self.live = False
        self.buffers = {}
        self.bufrings = {}
        if not ar_ring_sizes_valid(entries, cq_entries):
            raise ValueError(f'invalid ring sizes: entries={entries}, cq_entries={cq_entries}')
        if defer_taskrun:
            want |= AR_WANT_DEFER_TASKRUN
        if no_sqarray:
            want |= AR_WANT_NO_SQARRAY
        if start_disabled:
            want |= AR_WANT_DISABLED
        ret = ar_ring_init(&self.r, entries, cq_entries, want)
        if ret < 0:
            raise setup_error(-ret)
        self.live = True

    def __dealloc__(self):
        self._close()

    cdef _close(self):
        cdef ar_bufring *b
        if not self.live:
            return
        for addr in self.bufrings.values():
            b = <ar_bufring *><size_t>addr
            ar_bufring_free(&self.r, b)
            free(b)
        self.bufrings.clear()
        ar_ring_exit(&self.r)
        self.live = False

    def close(self):
        self._close()

    cdef _check(self):
        if not self.live:
            raise ValueError('ring is closed')

    @property
    def fd(self):
        return self.r.ring_fd if self.live else -1

    @property
    def setup_flags(self):
        return self.r.setup_flags

    @property
    def features(self):
        return self.r.features

    @property
    def sq_entries(self):
        return self.r.sq_entries

    @property
    def cq_entries(self):
        return self.r.cq_entries

    @property
    def enabled(self):
        return bool(self.r.enabled)

    @property
    def ring_fd_registered(self):
        return bool(self.r.enter_flags & IORING_ENTER_REGISTERED_RING)

    @property
    def enter_calls(self):
        return self.r.n_enter

    @property
    def submitted(self):
        return self.r.n_submitted

    @property
    def sq_space(self):
        self._check()
        return ar_sq_space(&self.r)

    @property
    def cq_overflowed(self):
        self._check()
        return bool(ar_cq_overflowed(&self.r))

    def enable(self):
        self._check()
        _raise_on(ar_ring_enable(&self.r))

    def register_ring_fd(self):
        self._check()
        _raise_on(ar_ring_register_ring_fd(&self.r))

    def unregister_ring_fd(self):
        self._check()
        _raise_on(ar_ring_unregister_ring_fd(&self.r))

    def probe(self):
        """The set of opcodes this kernel supports."""
        self._check()
        _raise_on(ar_ring_probe(&self.r))
        return {op for op in range(AR_OP_MAX) if self.r.ops[op]}

    def nop(self, uint64_t user_data):
        """Queue a NOP; False when the SQ is full and flushing made no room."""
        self._check()
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        ar_prep_nop(sqe, user_data)
        return True

    def read(self, int fd, unsigned nbytes, uint64_t user_data):
        """Queue a read of fd into a buffer kept until `result(user_data)`."""
        self._check()
        if user_data in self.buffers:
            # the kernel may still write into that buffer: never drop it here
            raise ValueError(f'user_data {user_data} already has a read buffer; '
                             f'call read_result() first')
        buf = bytearray(nbytes)
        cdef char *p = buf
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        self.buffers[user_data] = buf
        ar_prep_read(sqe, fd, p, nbytes, <uint64_t>-1, user_data)
        return True

    def read_result(self, uint64_t user_data, int n):
        return bytes(self.buffers.pop(user_data)[:n])

    def poll(self, int fd, unsigned mask, uint64_t user_data, bint multishot=False):
        self._check()
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        ar_prep_poll_add(sqe, fd, mask, multishot, user_data)
        return True

    def cancel(self, uint64_t target, uint64_t user_data):
        self._check()
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        ar_prep_cancel(sqe, target, user_data)
        return True

    def recv_select(self, int fd, uint16_t bgid, uint64_t user_data):
        """Queue a recv that picks its buffer from provided-buffer group bgid."""
        self._check()
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        sqe.opcode = IORING_OP_RECV
        sqe.fd = fd
        sqe.flags = IOSQE_BUFFER_SELECT
        sqe.buf_group = bgid
        sqe.user_data = user_data
        return True

    @property
    def pending(self):
        """SQEs prepared and not yet handed to the kernel."""
        self._check()
        return ar_sq_pending(&self.r)

    def submit(self, unsigned wait_nr=0, timeout=None):
        """Submit; wait for wait_nr completions or `timeout` seconds."""
        self._check()
        cdef int64_t ns = -1 if timeout is None else <int64_t>(max(timeout, 0) * 1e9)
        cdef int ret
        with nogil:
            ret = ar_ring_submit_and_wait(&self.r, wait_nr, ns)
        _raise_on(ret)
        return ret

    def reap(self):
        """Every completion now available, as (user_data, res, flags), including
        those the kernel kept on its overflow list."""
        self._check()
        cdef list out = []
        cdef unsigned head, tail
        cdef io_uring_cqe *cqe
        while True:
            head = ar_cq_head(&self.r)
            tail = ar_cq_tail(&self.r)
            while head != tail:
                cqe = ar_cq_at(&self.r, head)
                if cqe.user_data != AR_UDATA_RING_TIMEOUT:
                    out.append((cqe.user_data, cqe.res, cqe.flags))
                head += 1
                ar_cq_release(&self.r, head)
            if not ar_cq_overflowed(&self.r):
                return out
            _raise_on(ar_ring_get_events(&self.r))

    # -- registered file table --------------------------------------------

    def register_files_sparse(self, unsigned nr):
        self._check()
        _raise_on(ar_ring_register_files_sparse(&self.r, nr))

    def update_files(self, unsigned offset, fds):
        self._check()
        cdef unsigned n = len(fds), i
        cdef int *arr = <int *>malloc(max(n, 1) * sizeof(int))
        cdef int ret
        for i in range(n):
            arr[i] = fds[i]
        ret = ar_ring_update_files(&self.r, offset, arr, n)
        free(arr)
        _raise_on(ret)
        return ret

    def unregister_files(self):
        self._check()
        _raise_on(ar_ring_unregister_files(&self.r))

    def nop_fixed(self, unsigned slot, uint64_t user_data):
        """A NOP that names fixed-file `slot` (fails with EBADF when the slot
        is empty): shows which slots hold a file."""
        self._check()
        cdef io_uring_sqe *sqe = ar_get_sqe(&self.r)
        if sqe == NULL:
            return False
        # A 0-byte write through the slot: EBADF when empty.
        ar_prep_write(sqe, slot, NULL, 0, 0, user_data)
        sqe.flags = IOSQE_FIXED_FILE
        return True

    # -- provided-buffer rings --------------------------------------------

    def register_buffer_ring(self, uint16_t bgid, unsigned entries, unsigned buf_size):
        self._check()
        if bgid in self.bufrings:
            raise ValueError(f'buffer group {bgid} already registered')
        cdef ar_bufring *b = <ar_bufring *>malloc(sizeof(ar_bufring))
        cdef int ret = ar_bufring_setup(&self.r, b, bgid, entries, buf_size, entries)
        if ret < 0:
            free(b)
            _raise_on(ret)
        self.bufrings[bgid] = <size_t>b

    cdef ar_bufring *_bufring(self, uint16_t bgid) except NULL:
        self._check()
        addr = self.bufrings.get(bgid)
        if addr is None:
            raise ValueError(f'buffer group {bgid} is not registered')
        return <ar_bufring *><size_t>addr

    def buffer(self, uint16_t bgid, uint16_t bid, unsigned n):
        cdef ar_bufring *b = self._bufring(bgid)
        if bid >= b.entries or n > b.buf_size:
            raise ValueError(f'buffer {bid}, {n} bytes: out of range')
        return PyBytes_FromStringAndSize(<char *>ar_bufring_addr(b, bid), n)

    def recycle_buffer(self, uint16_t bgid, uint16_t bid):
        cdef ar_bufring *b = self._bufring(bgid)
        if bid >= b.entries:
            raise ValueError(f'buffer {bid} out of range')
        ar_bufring_recycle(b, bid)
        ar_bufring_publish(b)

    def unregister_buffer_ring(self, uint16_t bgid):
        cdef ar_bufring *b = self._bufring(bgid)
        del self.bufrings[bgid]
        ar_bufring_free(&self.r, b)
        free(b)


cdef _raise_on(int ret):
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))


def probe_kernel():
    """(setup_flags, features, supported opcodes) of a ring set up the way the
    loop sets up its own; raises IoUringUnavailable when io_uring is refused."""
    ring = Ring(8)
    try:
        return ring.setup_flags, ring.features, ring.probe()
    finally:
        ring.close()


# Constants for tests and for the loop's introspection.
SETUP_SQPOLL = IORING_SETUP_SQPOLL
SETUP_CQSIZE = IORING_SETUP_CQSIZE
SETUP_SUBMIT_ALL = IORING_SETUP_SUBMIT_ALL
SETUP_R_DISABLED = IORING_SETUP_R_DISABLED
SETUP_COOP_TASKRUN = IORING_SETUP_COOP_TASKRUN
SETUP_TASKRUN_FLAG = IORING_SETUP_TASKRUN_FLAG
SETUP_SINGLE_ISSUER = IORING_SETUP_SINGLE_ISSUER
SETUP_DEFER_TASKRUN = IORING_SETUP_DEFER_TASKRUN
SETUP_NO_SQARRAY = IORING_SETUP_NO_SQARRAY
FEAT_NODROP = IORING_FEAT_NODROP
FEAT_EXT_ARG = IORING_FEAT_EXT_ARG
CQE_F_MORE = IORING_CQE_F_MORE
CQE_F_BUFFER = IORING_CQE_F_BUFFER
CQE_BUFFER_SHIFT = IORING_CQE_BUFFER_SHIFT
OP_NOP = IORING_OP_NOP
OP_READ = IORING_OP_READ
OP_WRITE = IORING_OP_WRITE
OP_POLL_ADD = IORING_OP_POLL_ADD
OP_ASYNC_CANCEL = IORING_OP_ASYNC_CANCEL
OP_RECV = IORING_OP_RECV
OP_SEND = IORING_OP_SEND
OP_ACCEPT = IORING_OP_ACCEPT
OP_MSG_RING = IORING_OP_MSG_RING
