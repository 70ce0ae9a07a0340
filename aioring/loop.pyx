# cython: language_level=3
"""The event loop: callbacks, timers, run/stop/close, debug mode, the
exception handler, the executor, signals and the thread-safe wake-up.

Every wait of the loop is one io_uring_enter() on its ring.  The ring layer
(aioring/_ring) knows nothing of asyncio; operation records (ops.pxi) are the
only code that prepares SQEs; this module drives them.

Cold-path methods whose behaviour is pure Python bookkeeping (the exception
handler, the executor, async generator shutdown, task creation, signal
handler registration) are taken from the running CPython's own asyncio at
import time, so they behave exactly as the stock loop of that version does;
the hot paths are written here in Cython.
"""
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.exc cimport PyErr_CheckSignals
from cpython.bytes cimport PyBytes_CheckExact
from libc.stdint cimport uint64_t, int64_t, uintptr_t
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from libc.errno cimport errno, EINTR, EBUSY, EAGAIN, ENOSYS, EPERM, EOPNOTSUPP
cdef extern from "errno.h":
    enum: ECANCELED
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport write, close as c_close, getpid
from posix.stat cimport struct_stat, fstat

from aioring._ring.ring cimport *
from aioring._ring.ring import IoUringUnavailable

import asyncio
import collections
import os
import resource
import signal
import select
import socket
import stat
import subprocess
import sys
import threading
import time as _time_mod
import warnings
import weakref

from asyncio import base_events as _base_events
from asyncio import coroutines as _coroutines
from asyncio import events as _events
from asyncio import selector_events as _selector_events
from asyncio import sslproto as _sslproto
from asyncio import unix_events as _unix_events
from asyncio.log import logger as _logger
try:
    import ssl
except ImportError:     # a Python built without OpenSSL
    ssl = None

cdef extern from "sys/eventfd.h" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC

cdef object _Future = asyncio.Future
import selectors as _selectors
cdef object _fileobj_to_fd = _selectors._fileobj_to_fd
cdef unsigned POLLIN = select.POLLIN
cdef unsigned POLLOUT = select.POLLOUT
cdef object _get_ident = threading.get_ident
cdef object _get_native_id = threading.get_native_id
cdef double MAXIMUM_TIMEOUT = _base_events.MAXIMUM_SELECT_TIMEOUT
# asyncio purges cancelled timers when there are more than this many timers
# and more than this fraction of them are cancelled.
cdef Py_ssize_t MIN_SCHEDULED_TIMER_HANDLES = _base_events._MIN_SCHEDULED_TIMER_HANDLES
cdef double MIN_CANCELLED_TIMER_HANDLES_FRACTION = _base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION

# Ring sizes: the CQ is larger than the SQ so that bursts of multishot
# completions do not overflow it.
cdef unsigned SQ_ENTRIES = 512
cdef unsigned CQ_ENTRIES = 4096

# Slots of the fixed-file table, at most (fewer when RLIMIT_NOFILE is lower).
cdef unsigned FIXED_FILES_MAX = 32768

# Operations whose kernel side could not be drained (loop closed from a
# thread that cannot drive the ring): kept alive for the process's lifetime
# rather than freed while the kernel might still write into them.
cdef list _orphaned_operations = []

# What the loop cannot work without; a kernel that lacks one is "too old".
_REQUIRED_OPS = (
    (IORING_OP_NOP, 'IORING_OP_NOP'),
    (IORING_OP_READ, 'IORING_OP_READ'),
    (IORING_OP_POLL_ADD, 'IORING_OP_POLL_ADD'),
    (IORING_OP_ASYNC_CANCEL, 'IORING_OP_ASYNC_CANCEL'),
)

include "allocator.pxi"
include "handles.pxi"
include "ops.pxi"
include "filetable.pxi"
include "recvbuffers.pxi"
include "sparebytes.pxi"
include "stream.pxi"
include "listener.pxi"
include "sock.pxi"
include "ringfile.pxi"
include "datagram.pxi"
include "pipes.pxi"
include "subprocess.pxi"
include "tls.pxi"
include "files.pxi"
include "stats.pxi"


def _ring_entries():
    # AIORING_RING_ENTRIES=SQ[,CQ] (tests: a tiny ring makes the CQ overflow;
    # the CQ defaults to 8x the SQ, as without the variable)
    value = os.environ.get('AIORING_RING_ENTRIES')
    if not value:
        return SQ_ENTRIES, CQ_ENTRIES
    parts = [int(v) for v in value.split(',')]
    sq = parts[0]
    cq = parts[1] if len(parts) > 1 else 8 * sq
    if not ar_ring_sizes_valid(sq, cq):
        raise ValueError(f'AIORING_RING_ENTRIES={value!r}: not sizes io_uring takes')
    return sq, cq


cdef bint _feature_on(str variable):
    # AIORING_FIXED_FILES, AIORING_RECV_MULTISHOT, AIORING_BUFFER_RING,
    # AIORING_DEFER_TASKRUN: =0 makes the loop take the path it takes on a
    # kernel without the feature (tests of those paths; the benchmarks'
    # feature table).  AIORING_DIRECT_RECV=0 keeps BufferedProtocol streams
    # on the copy from the receive buffers (stream.pxi).
    return os.environ.get(variable, '1') != '0'


cdef class BaseLoop:
    """The Cython core of aioring.Loop; use aioring.Loop."""

    def __cinit__(self, *args, **kwargs):
        # (its length is read with Py_SIZE: a deque keeps it there, and
        # len() costs a call through the type three times an iteration)
        self.ready = collections.deque()
        self.ready_append = self.ready.append
        self.ready_popleft = self.ready.popleft
        self.timers = []
        self.timer_seq = 0
        self.timer_cancelled_count = 0
        self.clock_resolution = _time_mod.get_clock_info('monotonic').resolution
        self._debug = _coroutines._is_debug_mode()
        self._stopping = False
        # closed until fully built: a loop whose setup failed is never used,
        # and asyncio's __del__ / close() then leave it alone
        self._closed = True
        self._thread_id = None
        self._current_handle = None
        self.callback_clock = _callback_clock()
        self.slow_callback_duration = 0.1
        self._signal_handlers = {}
        self.readers = {}
        self.writers = {}
        self.poll_batch = {}
        self.poll_queue = []
        self.epoll_probe = select.epoll()
        self.user_ops = NULL
        self.resident_ops = NULL
        self.send_head = self.send_tail = NULL
        self.recv_buffers = RecvBuffers.__new__(RecvBuffers)
        self.spare_bytes = SpareBytes.__new__(SpareBytes)
        self.recv_multishot = _feature_on('AIORING_RECV_MULTISHOT')
        self.direct_recv = _feature_on('AIORING_DIRECT_RECV')
        # Single-shot accepts by default: a multishot accept keeps its wait
        # entry at the head of the listening socket's queue, and with
        # exclusive wakeups one process sharing the socket (gunicorn -w N,
        # uvicorn --workers N) took every connection (listener.pxi)
        self.accept_multishot = os.environ.get('AIORING_ACCEPT_MULTISHOT', '0') == '1'
        self.sock_stash = weakref.WeakKeyDictionary()
        self.sock_receiving = weakref.WeakKeyDictionary()
        self.accept_stash = weakref.WeakKeyDictionary()
        self.dgram_stash = weakref.WeakKeyDictionary()
        self.sock_errors = weakref.WeakKeyDictionary()
        self.listeners = {}

        self.ring_live = False
        self.wakeup_fd = -1
        self.signal_rfd = -1
        self.signal_wfd = -1
        self.pid = getpid()
        fixed = kwargs.get('fixed_files')
        if fixed is None:
            fixed = _feature_on('AIORING_FIXED_FILES')
        self.want_fixed_files = bool(fixed)
        self.files = FileTable.__new__(FileTable)
        self._open_ring()
        tune_malloc_once()

        # The cross-thread wake-up: an eventfd with a read always pending in
        # the ring.  Blocking on purpose: io_uring then waits on it through
        # its internal poll instead of failing the read with EAGAIN.
        self.wakeup_fd = eventfd(0, EFD_CLOEXEC)
        if self.wakeup_fd < 0:
            raise OSError(errno, os.strerror(errno))
        # The signal wake-up socket (asyncio's self-pipe): what
        # signal.set_wakeup_fd writes signal numbers into.
        rsock, wsock = socket.socketpair()
        wsock.setblocking(False)       # signal.set_wakeup_fd requires it
        self._ssock = rsock
        self._csock = wsock
        self.signal_rfd = rsock.fileno()
        self.signal_wfd = wsock.fileno()
        self._arm_internal_reads()
        self._closed = False

    def __init__(self):
        pass

    cdef _open_ring(self):
        # Disabled at first: the thread that first runs the loop, not the one
        # that creates it, becomes the ring's single issuer.
        cdef int ret
        cdef unsigned want = AR_WANT_NO_SQARRAY | AR_WANT_DISABLED
        if _feature_on('AIORING_DEFER_TASKRUN'):
            want |= AR_WANT_DEFER_TASKRUN
        sq, cq = _ring_entries()
        ret = ar_ring_init(&self.ring, sq, cq, want)
        if ret < 0:
            raise setup_error(-ret)
        self.ring_live = True
        ret = ar_ring_probe(&self.ring)
        missing = [name for op, name in _REQUIRED_OPS if ret < 0 or not ar_op_supported(&self.ring, op)]
        if missing:
            ar_ring_exit(&self.ring)
            self.ring_live = False
            raise IoUringUnavailable(
                ENOSYS, 'aioring cannot use io_uring: this kernel is too old (it lacks '
                + ('IORING_REGISTER_PROBE' if ret < 0 else ', '.join(missing))
                + '). Fix: run on Linux 5.19 or newer.')
        self.files.open(&self.ring, self.want_fixed_files)

    def __dealloc__(self):
        if self.ring_live:
            # Never closed (close() is the normal path: Loop.__del__ calls
            # it).  Completions drained here must not run loop code.
            self._closed = True
            self._shutdown_ring()

    # -- time -------------------------------------------------------------

    cdef double _time(self) noexcept:
        cdef timespec ts
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return ts.tv_sec + ts.tv_nsec * 1e-9

    def time(self):
        """The loop's clock: time.monotonic()."""
        return self._time()

    # -- state checks -------------------------------------------------------

    cdef _check_closed_fast(self):
        if self._closed:
            raise RuntimeError('Event loop is closed')
        if ar_ring_forked(&self.ring):
            raise _forked_error(self.pid)

    cdef inline int _check_fork(self) except -1:
        # After fork() the ring (and its queues, mapped shared) is the
        # parent's: a child that uses this loop gets an error, never a write
        # into the parent's ring (docs/differences.md).
        if ar_ring_forked(&self.ring):
            raise _forked_error(self.pid)
        return 0

    def _check_closed(self):
        self._check_closed_fast()

    cdef _check_thread_fast(self):
        if self._thread_id is None:
            return
        if _get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other "
                "than the current one")

    def _check_thread(self):
        self._check_thread_fast()

    def _check_callback(self, callback, method):
        if (_coroutines.iscoroutine(callback) or
                _coroutines.iscoroutinefunction(callback)):
            raise TypeError(
                f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(
                f'a callable object was expected by {method}(), '
                f'got {callback!r}')

    def _check_running(self):
        if self.is_running():
            raise RuntimeError('This event loop is already running')
        # (looked up at each call, as asyncio does: tests and tools swap them)
        if _events._get_running_loop() is not None:
            raise RuntimeError(
                'Cannot run the event loop while another loop is running')

    def is_running(self):
        return self._thread_id is not None

    def is_closed(self):
        return self._closed

    def get_debug(self):
        return self._debug

    def set_debug(self, enabled):
        self._debug = enabled
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    # -- scheduling ---------------------------------------------------------

    cdef Handle _call_soon(self, object callback, object args, object context):
        cdef Handle handle = Handle.__new__(Handle)
        handle._setup(callback, args, self, context)
        self.ready_append(handle)
        return handle

    def call_soon(self, callback, *args, context=None):
        self._check_closed_fast()
        if self._debug:
            self._check_thread_fast()
            self._check_callback(callback, 'call_soon')
        return self._call_soon(callback, args, context)

    def call_soon_threadsafe(self, callback, *args, context=None):
        self._check_closed_fast()
        if self._debug:
            self._check_callback(callback, 'call_soon_threadsafe')
        handle = self._call_soon(callback, args, context)
        self._wake()
        return handle

    cdef TimerHandle _call_at(self, double when, object callback, object args, object context):
        cdef TimerHandle timer = TimerHandle.__new__(TimerHandle)
        timer._setup(callback, args, self, context)
        timer.due = when
        self._timer_push(timer)
        return timer

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed_fast()
        if self._debug:
            self._check_thread_fast()
            self._check_callback(callback, 'call_at')
        timer = self._call_at(when, callback, args, context)
        timer.when_given = when
        return timer

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError('delay must not be None')
        cdef double when = self._time() + delay
        self._check_closed_fast()
        if self._debug:
            self._check_thread_fast()
            self._check_callback(callback, 'call_at')
        return self._call_at(when, callback, args, context)

    def _add_callback(self, handle):
        if not handle._cancelled:
            self.ready_append(handle)

    def _add_callback_signalsafe(self, handle):
        self._add_callback(handle)
        self._wake()

    def _write_to_self(self):
        self._wake()

    def _timer_handle_cancelled(self, handle):
        if handle._scheduled:
            self.timer_cancelled_count += 1

    def create_future(self):
        return _Future(loop=self)

    # -- the timer heap: a binary heap ordered by (when, seq) ----------------

    cdef _timer_push(self, TimerHandle timer):
        cdef list heap = self.timers
        cdef Py_ssize_t pos, parent
        cdef TimerHandle p
        timer.seq = self.timer_seq
        self.timer_seq += 1
        timer.scheduled = True
        heap.append(timer)
        pos = len(heap) - 1
        while pos > 0:
            parent = (pos - 1) >> 1
            p = <TimerHandle>heap[parent]
            if p.due < timer.due or (p.due == timer.due and p.seq < timer.seq):
                break
            heap[pos] = p
            pos = parent
        heap[pos] = timer

    cdef TimerHandle _timer_pop(self):
        cdef list heap = self.timers
        cdef TimerHandle top = <TimerHandle>heap[0]
        cdef TimerHandle last = <TimerHandle>heap.pop()
        cdef Py_ssize_t n = len(heap), pos = 0, child
        cdef TimerHandle c, r
        if n == 0:
            return top
        while True:
            child = 2 * pos + 1
            if child >= n:
                break
            c = <TimerHandle>heap[child]
            if child + 1 < n:
                r = <TimerHandle>heap[child + 1]
                if r.due < c.due or (r.due == c.due and r.seq < c.seq):
                    child += 1
                    c = r
            if last.due < c.due or (last.due == c.due and last.seq < c.seq):
                break
            heap[pos] = c
            pos = child
        heap[pos] = last
        return top

    cdef _timers_purge(self):
        cdef Py_ssize_t n = len(self.timers)
        cdef TimerHandle t
        cdef list keep
        if (n > MIN_SCHEDULED_TIMER_HANDLES and
                self.timer_cancelled_count > n * MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            keep = []
            for t in self.timers:
                if t.is_cancelled:
                    t.scheduled = False
                else:
                    keep.append(t)
            self.timers = []
            keep.sort(key=_timer_key)
            self.timers = keep      # a sorted list is a valid heap
            self.timer_cancelled_count = 0
        else:
            while self.timers:
                t = <TimerHandle>self.timers[0]
                if not t.is_cancelled:
                    break
                self.timer_cancelled_count -= 1
                self._timer_pop()
                t.scheduled = False

    # -- one iteration --------------------------------------------------------

    cdef _run_once(self):
        cdef int64_t timeout_ns = -1
        cdef double timeout, end_time
        cdef TimerHandle t
        cdef Py_ssize_t ntodo, i
        cdef object handle
        cdef bint own
        cdef uint64_t last, now

        if self.timer_cancelled_count:
            # (never below the number of cancelled timers in the heap)
            self._timers_purge()
        if self._stopping or _Py_SIZE(<PyObject *>self.ready):
            timeout_ns = 0
        elif self.timers:
            timeout = (<TimerHandle>self.timers[0]).due - self._time()
            if timeout > MAXIMUM_TIMEOUT:
                timeout = MAXIMUM_TIMEOUT
            elif timeout < 0:
                timeout = 0
            # round up: waking a hair early would cost an extra iteration
            timeout_ns = <int64_t>(timeout * 1e9) + 1 if timeout > 0 else 0

        self._poll(timeout_ns)

        if self.timers:
            end_time = self._time() + self.clock_resolution
        while self.timers:
            t = <TimerHandle>self.timers[0]
            if t.due >= end_time:
                break
            self._timer_pop()
            t.scheduled = False
            self.ready_append(t)

        # Run what is ready now; what these callbacks schedule waits for the
        # next iteration (after another poll), as in asyncio.
        ntodo = _Py_SIZE(<PyObject *>self.ready)
        last = callback_ticks(self.callback_clock)
        for i in range(ntodo):
            handle = self.ready_popleft()
            own = isinstance(handle, Handle)
            # (a foreign asyncio.Handle may come in through _add_callback)
            if (<Handle>handle).is_cancelled if own else handle._cancelled:
                continue
            if self._debug:
                self._run_debug(handle)
            elif own:
                (<Handle>handle).run()
            else:
                handle._run()
            now = callback_ticks(self.callback_clock)
            if now - last >= self.slow_ticks:
                _count_if_slow(self, now - last)
            last = now
        handle = None

    def _run_debug(self, handle):
        try:
            self._current_handle = handle
            t0 = self._time()
            handle._run()
            dt = self._time() - t0
            if dt >= self.slow_duration:
                _logger.warning('Executing %s took %.3f seconds',
                                _base_events._format_handle(handle), dt)
        finally:
            self._current_handle = None

    cdef _poll(self, int64_t timeout_ns):
        cdef int ret
        self.iteration += 1
        if self.send_head != NULL:
            self._flush_send_queue()
        if self.poll_queue:
            self._flush_poll_queue()
        if timeout_ns != 0:
            # From here on call_soon_threadsafe() writes the eventfd; a
            # callback queued before this point is seen by the check below.
            self.sleeping = True
            if _Py_SIZE(<PyObject *>self.ready):
                timeout_ns = 0
            elif ar_sq_pending(&self.ring):
                # Requests to hand over first, GIL held: sends mostly
                # complete as they are submitted, and then there is nothing
                # to wait for (and no GIL to give up and take back).
                ret = ar_ring_submit_and_wait(&self.ring, 0, -1)
                if ret >= 0 and ar_cq_head(&self.ring) != ar_cq_tail(&self.ring):
                    timeout_ns = 0
        if timeout_ns == 0:
            self.sleeping = False
            ret = ar_ring_submit_and_wait(&self.ring, 0, -1)
        else:
            with nogil:
                ret = ar_ring_submit_and_wait(&self.ring, 1, timeout_ns)
            self.sleeping = False
        if ret < 0 and ret != -EINTR and ret != -EBUSY and ret != -EAGAIN:
            raise OSError(-ret, 'io_uring_enter: ' + os.strerror(-ret))
        # EBUSY/EAGAIN: the kernel wants its completions reaped first; the
        # SQEs stay queued and go with the next enter.
        self._process_completions()
        if self.poll_batch:
            self._queue_poll_batch()
        if timeout_ns != 0:
            # A signal may have cut the wait short (io_uring_enter reports
            # EINTR only when it submitted nothing): run Python's handlers
            # now, as the stock loop's select() does.  KeyboardInterrupt
            # propagates from here.  Cheap: a flag check outside the main
            # thread or when no signal is pending.
            PyErr_CheckSignals()

    cdef _process_completions(self):
        # An exception from one completion goes to the exception handler
        # and the rest are processed all the same.  (The try is set up once
        # per exception, not once per completion.)
        while True:
            try:
                self._drain_completions()
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler({
                    'message': 'Unhandled exception in an io_uring completion',
                    'exception': exc,
                })

    cdef int _drain_completions(self) except -1:
        # every completion in the CQ, each handed to its operation
        cdef ar_ring *ring = &self.ring
        cdef unsigned head, tail
        cdef io_uring_cqe *cqe
        cdef uint64_t user_data
        cdef int res
        cdef unsigned flags
        cdef Operation op
        cdef uint64_t last, now
        last = callback_ticks(self.callback_clock)
        while True:
            head = ar_cq_head(ring)
            tail = ar_cq_tail(ring)
            self.completions += tail - head
            if head == tail:
                if ar_cq_overflowed(ring):
                    # completions the CQ had no room for: have the kernel
                    # move them in, then go on
                    self.cq_overflows += 1
                    ar_ring_get_events(ring)
                    if ar_cq_head(ring) != ar_cq_tail(ring):
                        continue
                return 0
            while head != tail:
                cqe = ar_cq_at(ring, head)
                user_data = cqe.user_data
                res = cqe.res
                flags = cqe.flags
                head += 1
                # Give the entry back before running Python code, which may
                # itself submit or re-enter.
                ar_cq_release(ring, head)
                if user_data == 0 or user_data == AR_UDATA_RING_TIMEOUT:
                    continue
                op = <Operation><PyObject *><uintptr_t>user_data
                if not (flags & IORING_CQE_F_MORE):
                    # final completion: drop the reference taken at submission
                    op.in_flight = False
                    self.inflight -= 1
                    if op.listed:
                        self._unlist(op)
                    Py_DECREF(op)
                op.complete(res, flags)
                # (a completion runs protocol callbacks: timed as asyncio
                # times the handle that would run them; written out as in
                # _run_once: an inline function for both cost 10 Ir/req)
                now = callback_ticks(self.callback_clock)
                if now - last >= self.slow_ticks:
                    _count_if_slow(self, now - last)
                last = now

    # -- the loop's own descriptors -----------------------------------------------

    cdef inline void _track(self, Operation op) noexcept:
        # The request is in the SQ: hold the operation until its final CQE.
        Py_INCREF(op)
        op.in_flight = True
        op.loop = <PyObject *>self
        self.inflight += 1

    cdef inline void _track_user(self, Operation op) noexcept:
        # _track, and list it among the program's operations (which close()
        # cancels and drains)
        self._track(op)
        op.listed = True
        _link(&self.user_ops, op)

    cdef inline void _unlist(self, Operation op) noexcept:
        _unlink(&self.user_ops, op)
        op.listed = False

    cdef void _list_resident(self, Operation op) noexcept:
        # An operation its owner reuses for request after request (a
        # stream's send): listed once for the owner's lifetime rather than
        # at each submission.  The owner (or the operation's dealloc)
        # takes it out: the list holds no reference.
        op.loop = <PyObject *>self
        op.resident = True
        _link(&self.resident_ops, op)

    cdef void _unlist_resident(self, Operation op) noexcept:
        if op.resident:
            _unlink(&self.resident_ops, op)
            op.resident = False

    cdef list _user_ops(self):
        # the program's operations in flight
        cdef list ops = []
        cdef PyObject *p = self.user_ops
        while p != NULL:
            ops.append(<object>p)
            p = (<Operation>p).next_op
        p = self.resident_ops
        while p != NULL:
            if (<Operation>p).in_flight:
                ops.append(<object>p)
            p = (<Operation>p).next_op
        return ops

    cdef _forget_user_ops(self):
        _forget(&self.user_ops)
        _forget(&self.resident_ops)

    cdef _submit_internal_read(self, InternalRead op):
        prep_read(&self.ring, op, op.fd, -1, op.buf, sizeof(op.buf) if op.kind == READ_SIGNALS else 8)
        self._track(op)

    cdef _internal_read_done(self, InternalRead op, int res):
        cdef bytes data = None
        if self._closed or not self.ring_live:
            return
        if op.kind == READ_WAKEUP:
            self.wakeup_written = False
        elif res > 0:
            data = op.buf[:res]     # copied before the buffer goes back to the kernel
        if res < 0 and res != -EINTR and res != -EAGAIN:
            if res != -ECANCELED:
                self.call_exception_handler({
                    'message': f'aioring: internal read on fd {op.fd} failed',
                    'exception': OSError(-res, os.strerror(-res)),
                })
            return
        # Re-arm first: a signal handler below may raise (KeyboardInterrupt),
        # and the descriptor must stay watched all the same.
        self._submit_internal_read(op)
        if data is not None:
            self._process_self_data(data)
            PyErr_CheckSignals()

    cdef _wake(self):
        cdef uint64_t one = 1
        if self.sleeping and not self.wakeup_written:
            self.wakeup_written = True
            self.wakeup_writes += 1
            write(self.wakeup_fd, &one, sizeof(one))

    cdef _arm_internal_reads(self):
        self.wakeup_op = InternalRead.__new__(InternalRead)
        self.wakeup_op.fd = self.wakeup_fd
        self.wakeup_op.kind = READ_WAKEUP
        self._submit_internal_read(self.wakeup_op)
        self.signal_op = InternalRead.__new__(InternalRead)
        self.signal_op.fd = self.signal_rfd
        self.signal_op.kind = READ_SIGNALS
        self._submit_internal_read(self.signal_op)

    cdef list _ops_in_flight(self):
        cdef list ops = [op for op in (self.wakeup_op, self.signal_op)
                         if op is not None and (<Operation>op).in_flight]
        ops.extend(self._user_ops())
        return ops

    cdef _orphan_operations(self):
        # For a ring that goes away while the kernel may still hold these
        # requests: keep their buffers alive for good rather than free them.
        for op in self._ops_in_flight():
            (<Operation>op).loop = NULL
            (<Operation>op).in_flight = False
            self.inflight -= 1
            _orphaned_operations.append(op)   # keeps the submission's reference
        self._forget_user_ops()
        self.wakeup_op = self.signal_op = None

    cdef _move_ring_to_this_thread(self):
        # A single-issuer ring cannot change threads.  While nothing but the
        # loop's own reads is in flight, a new ring for this thread replaces
        # it; with user I/O in flight that would lose data, so refuse.
        cdef int internal = 0
        for op in (self.wakeup_op, self.signal_op):
            if op is not None and (<Operation>op).in_flight:
                internal += 1
        if self.inflight != internal or self.files.in_use:
            raise RuntimeError(
                'aioring: this event loop has I/O in flight on the io_uring of the '
                'thread that ran it last (a single-issuer ring); run it from that '
                'thread, or close its transports first')
        self._orphan_operations()
        self.recv_buffers.free(&self.ring)
        self.files.close()
        ar_ring_exit(&self.ring)
        self.ring_live = False
        self.wakeup_written = False
        self._open_ring()
        self._arm_internal_reads()

    # -- readiness: add_reader / add_writer -----------------------------------

    cdef _queue_poll(self, PollOp op):
        # Polls reach the kernel with the next enter, after the callbacks of
        # this iteration have run: a poll armed earlier (a full SQ flushed
        # mid-iteration) could see data a callback is about to read.  The
        # queue also holds polls added before the ring is enabled.
        if not op.queued and not op.in_flight:
            op.queued = True
            self.poll_queue.append(op)

    cdef _flush_poll_queue(self):
        cdef PollOp op
        cdef list queue = self.poll_queue
        self.poll_queue = []
        for item in queue:
            op = <PollOp>item
            op.queued = False
            if op.handle is None:
                continue            # removed meanwhile
            prep_poll(&self.ring, op, op.fd, op.mask)
            self._track_user(op)

    cdef bint _same_file(self, PollOp op):
        # Does op's fd still name the file it was registered for?  (Closed,
        # or closed and its number reused, it does not.)
        cdef struct_stat st
        return (fstat(op.fd, &st) == 0 and <unsigned long long>st.st_dev == op.dev
                and <unsigned long long>st.st_ino == op.ino)

    cdef _poll_done(self, PollOp op, int res):
        cdef list pair
        if self._closed or op.handle is None:
            return                  # removed, or the loop is going away
        if res < 0:
            # the descriptor went bad under us: like epoll with a closed fd,
            # stay registered and silent
            return
        # Collected, and queued after the whole CQ is drained: asyncio runs
        # a descriptor's reader before its writer, whatever order the two
        # polls completed in.
        pair = self.poll_batch.get(op.fd)
        if pair is None:
            pair = self.poll_batch[op.fd] = [None, None]
        pair[0 if op.mask == POLLIN else 1] = op

    cdef _queue_poll_batch(self):
        cdef PollOp op
        for pair in self.poll_batch.values():
            for item in pair:
                if item is None:
                    continue
                op = <PollOp>item
                if op.handle is None:
                    continue        # removed by a completion processed later
                if not self._same_file(op):
                    # closed without remove_*(): epoll forgets such a file,
                    # so its callback never runs again; the registration
                    # stays until removed, as in the stock loop
                    continue
                if not op.handle.is_cancelled:
                    self.ready_append(op.handle)
                # level-triggered: poll again (after the callbacks); if the
                # descriptor is still ready the callback runs again
                self._queue_poll(op)
        self.poll_batch.clear()

    # -- stream I/O (stream.pxi) --------------------------------------------------

    cdef _submit_recv(self, SocketStream stream):
        cdef RecvSelectOp sop
        cdef RecvOp op
        cdef ReadableOp rop
        if stream.direct:
            # a poll: the stream receives into the protocol's buffer itself
            rop = ReadableOp.__new__(ReadableOp)
            rop.stream = stream
            prep_poll(&self.ring, rop, stream.fd, POLLIN, stream.slot)
            stream.recv_op = rop
        elif self.recv_buffers.ready or self.recv_buffers.setup(&self.ring) == 0:
            sop = RecvSelectOp.__new__(RecvSelectOp)
            sop.stream = stream
            sop.pool = self.recv_buffers
            prep_recv_select(&self.ring, sop, stream.fd, stream.slot,
                             RECV_BUFFER_GROUP, self.recv_multishot)
            stream.recv_op = sop
        else:
            # no provided-buffer ring: one recv at a time into a buffer of
            # the stream's own
            op = RecvOp.__new__(RecvOp)
            op.stream = stream
            # (not zero-filled: only the bytes received are ever read)
            op.buf = PyByteArray_FromStringAndSize(NULL, RECV_SIZE)
            prep_recv(&self.ring, op, stream.fd, stream.slot, <char *>op.buf, RECV_SIZE)
            stream.recv_op = op
        self._track_user(stream.recv_op)

    cdef int _queue_stream_send(self, SocketStream stream) except -1:
        # at the tail: streams send in the order they wrote
        Py_INCREF(stream)
        stream.send_queued = True
        stream.send_next = NULL
        if self.send_tail == NULL:
            self.send_head = <PyObject *>stream
        else:
            (<SocketStream>self.send_tail).send_next = <PyObject *>stream
        self.send_tail = <PyObject *>stream

    cdef int _flush_send_queue(self) except -1:
        # each queued stream's writes, one send per stream
        cdef SocketStream stream
        while self.send_head != NULL:
            stream = <SocketStream>self.send_head
            self.send_head = stream.send_next
            if self.send_head == NULL:
                self.send_tail = NULL
            stream.send_next = NULL
            Py_DECREF(stream)       # the queue's reference (`stream` holds one)
            try:
                stream._submit_send()
            except BaseException:
                # (a ring that refuses submissions) it and the rest wait
                # for the next try, in their order
                if not stream.send_queued:
                    Py_INCREF(stream)
                    stream.send_queued = True
                    stream.send_next = self.send_head
                    self.send_head = <PyObject *>stream
                    if self.send_tail == NULL:
                        self.send_tail = <PyObject *>stream
                raise

    cdef _drop_send_queue(self):
        # the loop closes: nothing more is sent
        cdef SocketStream stream
        while self.send_head != NULL:
            stream = <SocketStream>self.send_head
            self.send_head = stream.send_next
            stream.send_next = NULL
            stream.send_queued = False
            Py_DECREF(stream)
        self.send_tail = NULL

    cdef _send_written(self):
        # Hand this iteration's writes to the kernel without waiting: when
        # the loop stops (or closes) after a write(), the peer still gets
        # it, as with asyncio's direct send().
        if self.send_head != NULL and self.ring_live and self.ring.enabled:
            self._flush_send_queue()
            ar_ring_submit_and_wait(&self.ring, 0, -1)

    cdef _finish_releases(self):
        # Transports closed in the loop's last iteration: have the kernel
        # finish their cancels and close their sockets now, as asyncio's
        # close() would have, rather than when the loop next runs.
        if self.pending_releases and self.ring_live and self.ring.enabled:
            ar_ring_submit_and_wait(&self.ring, 0, -1)
            ar_ring_get_events(&self.ring)
            self._process_completions()

    def _fixed_slot(self, int fd):
        """A fixed-file slot for fd, or -1 (table off or full)."""
        if not self.ring_live:
            return -1
        return self.files.alloc(fd)

    def _release_slot(self, int slot):
        if self.ring_live:
            self.files.release(slot)

    cdef _cancel_op(self, Operation op):
        if op.in_flight and self.ring_live:
            prep_cancel(&self.ring, op)     # its final completion frees it

    cdef _cancel_now(self, Operation op):
        # Cancel, and have the kernel carry the cancel out before returning
        # (the request lets go of its file); its completion is processed
        # with the others, later.
        if op.in_flight and self.ring_live:
            prep_cancel(&self.ring, op)
            if self.ring.enabled and self.ring_thread == _get_native_id():
                ar_ring_submit_and_wait(&self.ring, 0, -1)
                ar_ring_get_events(&self.ring)

    # -- listening sockets (listener.pxi) -----------------------------------------

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None,
                       backlog=100, ssl_handshake_timeout=_constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=_constants.SSL_SHUTDOWN_TIMEOUT):
        # backlog: asyncio accepts at most this many per readiness event;
        # aioring's accept takes one connection per completion
        cdef Listener listener
        self._check_closed_fast()       # as asyncio's _add_reader()
        listener = Listener.__new__(Listener)
        listener.loop = self
        listener.sock = sock
        listener.fd = sock.fileno()
        listener.server = server
        listener.accept_args = (protocol_factory, sslcontext, server,
                                ssl_handshake_timeout, ssl_shutdown_timeout)
        old = self.listeners.pop(listener.fd, None)
        if old is not None:
            (<Listener>old).stopped = True
        self.listeners[listener.fd] = listener
        listener.start()

    def _stop_listening(self, sock):
        self._check_fork()
        fd = sock.fileno()
        listener = self.listeners.pop(fd, None) if fd >= 0 else None
        if listener is None:
            for key, item in self.listeners.items():
                if (<Listener>item).sock is sock:
                    listener = self.listeners.pop(key)
                    break
        if listener is not None:
            (<Listener>listener).stop()
        else:
            sock.close()

    cdef object _add_poll(self, dict table, unsigned mask, object fileobj, object callback, object args):
        cdef PollOp op
        cdef Handle handle
        cdef struct_stat st
        self._check_closed_fast()
        handle = Handle.__new__(Handle)
        handle._setup(callback, args, self, None)
        fd = _fileobj_to_fd(fileobj)
        if fstat(fd, &st) != 0:
            raise OSError(errno, os.strerror(errno))
        op = table.get(fd)
        if op is not None:
            if <unsigned long long>st.st_dev == op.dev and <unsigned long long>st.st_ino == op.ino:
                op.handle._cancel()
                op.handle = handle
                op.fileobj = fileobj
                self._queue_poll(op)
                return handle
            # The fd was closed without remove_*() and its number reused: the
            # old poll still holds the old file.  Drop it, watch the new one.
            self._remove_poll(table, fd)
        # What epoll_ctl(EPOLL_CTL_ADD) refuses (regular files, /dev/null...)
        # is refused here too, with its error: a ring poll would take anything.
        self.epoll_probe.register(fd, select.EPOLLIN)
        self.epoll_probe.unregister(fd)
        op = PollOp.__new__(PollOp)
        op.fd = fd
        op.mask = mask
        op.handle = handle
        op.fileobj = fileobj
        op.dev = st.st_dev
        op.ino = st.st_ino
        table[fd] = op
        self._queue_poll(op)
        return handle

    cdef bint _remove_poll(self, dict table, object fileobj):
        cdef PollOp op
        if self._closed:
            return False
        try:
            fd = _fileobj_to_fd(fileobj)
        except ValueError:
            # a closed socket object: find it by identity, as selectors do
            for registered in (self.readers, self.writers):
                for key, item in registered.items():
                    if (<PollOp>item).fileobj is fileobj:
                        fd = key
                        break
                else:
                    continue
                break
            else:
                raise
        op = table.pop(fd, None)
        if op is None:
            return False
        op.handle._cancel()
        op.handle = None
        # Cancel now, not at the next enter: the poll holds the file, and a
        # program that closes the fd next expects the peer to see the close
        # at once, as with epoll.
        self._cancel_now(op)
        return True

    def _add_reader(self, fd, callback, *args):
        return self._add_poll(self.readers, POLLIN, fd, callback, args)

    def _remove_reader(self, fd):
        return self._remove_poll(self.readers, fd)

    def _add_writer(self, fd, callback, *args):
        return self._add_poll(self.writers, POLLOUT, fd, callback, args)

    def _remove_writer(self, fd):
        return self._remove_poll(self.writers, fd)

    # -- running ----------------------------------------------------------------

    cdef _prepare_ring_for_thread(self):
        if getpid() != self.pid or ar_ring_forked(&self.ring):
            raise _forked_error(self.pid)
        # The kernel's thread id, not threading.get_ident(): a new thread may
        # get an exited thread's get_ident(), but not its task.
        ident = _get_native_id()
        if not self.ring.enabled:
            # The ring starts disabled so that the thread that runs the loop,
            # not the one that created it, becomes its single issuer.
            ret = ar_ring_enable(&self.ring)
            if ret < 0:
                raise OSError(-ret, 'io_uring enable: ' + os.strerror(-ret))
            ar_ring_register_ring_fd(&self.ring)   # an optimisation; fine without
            self.ring_thread = ident
        elif self.ring_thread is None:
            self.ring_thread = ident
        elif self.ring_thread != ident:
            if self.ring.setup_flags & IORING_SETUP_SINGLE_ISSUER:
                self._move_ring_to_this_thread()
                self._prepare_ring_for_thread()
                return
            # the registered ring descriptor belongs to the old thread
            ar_ring_release_ring_fd(&self.ring)
            self.ring_thread = ident

    def _run_forever_setup(self):
        self._check_closed_fast()
        self._check_running()
        self._prepare_ring_for_thread()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = _get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook,
            finalizer=self._asyncgen_finalizer_hook)
        _events._set_running_loop(self)

    def _run_forever_cleanup(self):
        self._send_written()
        self._finish_releases()
        self._stopping = False
        self._thread_id = None
        _events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_forever(self):
        """Run until stop() is called."""
        self._run_forever_setup()
        try:
            while True:
                self._run_once()
                if self._stopping:
                    break
        finally:
            self._run_forever_cleanup()

    def stop(self):
        self._stopping = True

    # -- closing --------------------------------------------------------------------

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            _logger.debug("Close %r", self)
        self._closed = True
        self.ready.clear()
        for t in self.timers:
            (<TimerHandle>t).scheduled = False
        self.timers = []
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        # as asyncio's Unix loop does
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(f"Closing the loop {self!r} "
                          f"on interpreter shutdown "
                          f"stage, skipping signal handlers removal",
                          ResourceWarning,
                          source=self)
            self._signal_handlers.clear()
        self._shutdown_ring()

    cdef _shutdown_ring(self):
        cdef int rounds = 0
        if not self.ring_live:
            return
        forked = getpid() != self.pid or ar_ring_forked(&self.ring)
        can_drive = (not forked and
                     (not self.ring.enabled or self.ring_thread is None or
                      self.ring_thread == _get_native_id()))
        if not self.ring.enabled:
            # nothing reached the kernel: the queued requests are ours to drop
            ops = self._ops_in_flight()
            self._forget_user_ops()
            for op in ops:
                (<Operation>op).in_flight = False
                self.inflight -= 1
                Py_DECREF(op)
            ops = None
        elif can_drive:
            self._send_written()
        if self.ring.enabled and can_drive and self.inflight > 0:
            # Cancel, then wait for the final completions: the kernel must be
            # done with a buffer before it is freed.
            for op in self._ops_in_flight():
                prep_cancel(&self.ring, <Operation>op)
            while self.inflight > 0 and rounds < 100:
                ar_ring_submit_and_wait(&self.ring, 1, 10000000)
                self._process_completions()
                rounds += 1
        # whatever is still in flight (forked child, foreign thread, a stuck
        # request) keeps its buffer for good
        # (a forked child leaves the buffer ring registered: it is the
        # parent's)
        if forked or any(isinstance(op, RecvSelectOp) for op in self._user_ops()):
            self.recv_buffers.forget()
        else:
            self.recv_buffers.free(&self.ring)
        self._orphan_operations()
        self._drop_send_queue()
        self.readers.clear()
        self.writers.clear()
        # A closed loop holds no server's listening socket (the stock loop's
        # closed selector holds none either): a transport kept alive (by a
        # ResourceWarning's source, say) must not keep the port open.
        self.listeners.clear()
        self.poll_queue = []
        if self.epoll_probe is not None:
            self.epoll_probe.close()
        self.files.close()
        ar_ring_exit(&self.ring)
        self.ring_live = False
        if self.wakeup_fd >= 0:
            c_close(self.wakeup_fd)
            self.wakeup_fd = -1
        if self._ssock is not None:
            self._ssock.close()
            self._csock.close()
            self.signal_rfd = self.signal_wfd = -1

    # -- introspection ------------------------------------------------------

    @property
    def slow_callback_duration(self):
        """A callback that runs this long (seconds) or longer is slow:
        debug mode logs it, and loop.stats() counts it (as asyncio's loop:
        a plain attribute, default 0.1)."""
        return self.slow_duration

    @slow_callback_duration.setter
    def slow_callback_duration(self, double value):
        self.slow_duration = value
        self.slow_ticks = _slow_ticks_floor(self.callback_clock, value)

    def _ring_info(self):
        """What the ring was set up with (for tests and diagnostics)."""
        return {
            'fd': self.ring.ring_fd if self.ring_live else -1,
            'setup_flags': self.ring.setup_flags,
            'features': self.ring.features,
            'sq_entries': self.ring.sq_entries,
            'cq_entries': self.ring.cq_entries,
            'enabled': bool(self.ring.enabled),
            'ring_fd_registered': bool(self.ring.enter_flags & IORING_ENTER_REGISTERED_RING),
            'fixed_files': self.files.enabled,
            'fixed_files_size': self.files.size,
            'recv_multishot': self.recv_multishot,
            'direct_recv': self.direct_recv,
            'callback_clock': self.callback_clock != CLOCK_OFF,
            'spare_bytes_kept': self.spare_bytes.count,
            'spare_bytes_total': self.spare_bytes.total,
            **self.recv_buffers.info(&self.ring),
            **_loop_stats(self),    # (stats.pxi)
        }


cdef inline void _link(PyObject **head, Operation op) noexcept:
    # op first in the list at head (borrowed links)
    op.prev_op = NULL
    op.next_op = head[0]
    if head[0] != NULL:
        (<Operation>head[0]).prev_op = <PyObject *>op
    head[0] = <PyObject *>op


cdef inline void _unlink(PyObject **head, Operation op) noexcept:
    if op.prev_op != NULL:
        (<Operation>op.prev_op).next_op = op.next_op
    else:
        head[0] = op.next_op
    if op.next_op != NULL:
        (<Operation>op.next_op).prev_op = op.prev_op
    op.prev_op = op.next_op = NULL


cdef void _forget(PyObject **head) noexcept:
    # empty the list at head (its operations are in no list afterwards)
    cdef PyObject *p = head[0]
    cdef Operation op
    while p != NULL:
        op = <Operation>p
        p = op.next_op
        op.prev_op = op.next_op = NULL
        op.listed = op.resident = False
    head[0] = NULL


def _forked_error(pid):
    return RuntimeError(
        f'aioring: this event loop was created in process {pid} and '
        f'cannot be used after fork(); create a new loop in the child '
        f'(aioring.new_event_loop())')


def _timer_key(TimerHandle t):
    return (t.due, t.seq)


# Methods taken from the running CPython's asyncio: pure bookkeeping whose
# exact behaviour (messages, warnings, version differences) we want to match.
_FROM_BASE_EVENT_LOOP = (
    '__repr__', '__del__',
    'create_task', 'set_task_factory', 'get_task_factory',
    'run_until_complete',
    '_asyncgen_finalizer_hook', '_asyncgen_firstiter_hook', 'shutdown_asyncgens',
    'shutdown_default_executor', '_do_shutdown', '_check_default_executor',
    'run_in_executor', 'set_default_executor',
    '_getaddrinfo_debug', 'getaddrinfo', 'getnameinfo',
    'get_exception_handler', 'set_exception_handler',
    'default_exception_handler', 'call_exception_handler',
    '_set_coroutine_origin_tracking', '_ensure_resolved',
    'sock_sendfile', '_sock_sendfile_fallback', '_check_sendfile_params',
    # TCP: connections and servers (happy eyeballs, all_errors, ...)
    'create_connection', '_connect_sock', '_create_connection_transport',
    'create_server', '_create_server_getaddrinfo', 'connect_accepted_socket',
    'create_datagram_endpoint', 'connect_read_pipe', 'connect_write_pipe',
    'subprocess_exec', 'subprocess_shell', '_log_subprocess',
    'sendfile', '_sendfile_fallback',
)
# The stock sock_* methods, on top of our _add_reader/_add_writer (ring
# polls): the same checks, exceptions and cancellation behaviour.
_FROM_SELECTOR_LOOP = (
    '_ensure_fd_no_transport',
    # loop.sendfile()'s native path: sock_sendfile() with reading paused
    '_sendfile_native',
    'add_reader', 'remove_reader', 'add_writer', 'remove_writer',
    '_sock_read_done',
    'sock_recvfrom', '_sock_recvfrom',
    'sock_recvfrom_into', '_sock_recvfrom_into',
    'sock_sendto', '_sock_sendto',
    'sock_connect', '_sock_connect', '_sock_write_done', '_sock_connect_cb',
    # a connection accepted by a Listener (listener.pxi) becomes a transport
    '_accept_connection2',
)
_FROM_UNIX_LOOP = (
    'add_signal_handler', 'remove_signal_handler', '_handle_signal',
    '_check_signal', '_process_self_data',
    'create_unix_connection', 'create_unix_server',
    # sock_sendfile's native path: os.sendfile() paced by add_writer
    '_sock_sendfile_native', '_sock_sendfile_native_impl',
    '_sock_sendfile_update_filepos', '_sock_add_cancellation_callback',
)


def _stock_checks_transport_fd():
    # Newer stock loops (3.12 on) refuse a new transport on a descriptor
    # that already has one; as the running Python's does.
    try:
        return '_ensure_fd_no_transport' in _inspect.getsource(
            _selector_events.BaseSelectorEventLoop._make_socket_transport)
    except (OSError, TypeError):
        return sys.version_info >= (3, 12)


_CHECK_NEW_TRANSPORT_FD = _stock_checks_transport_fd()


class Loop(BaseLoop, asyncio.AbstractEventLoop):
    """An asyncio event loop whose I/O runs on io_uring."""

    def __init__(self, *, fixed_files=None):
        # fixed_files: put sockets in the ring's fixed-file table (default:
        # on, unless AIORING_FIXED_FILES=0); read by BaseLoop.__cinit__
        BaseLoop.__init__(self)
        # state read by the methods taken from asyncio (see above)
        self._default_executor = None
        self._exception_handler = None
        self._task_factory = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._executor_shutdown_called = False
        self._old_agen_hooks = None
        # transports by fd: add_reader & co. refuse a transport's descriptor
        self._transports = weakref.WeakValueDictionary()
        self._unix_server_sockets = {}      # create_unix_server's cleanup
        self._file_requests = None          # aioring.files' requests on this loop (files.py)

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        if _CHECK_NEW_TRANSPORT_FD:
            self._ensure_fd_no_transport(sock)
        return _SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None,
                            extra=None, server=None,
                            ssl_handshake_timeout=_constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=_constants.SSL_SHUTDOWN_TIMEOUT):
        # asyncio's TLS (tls.pxi) over our stream transport
        if _CHECK_NEW_TRANSPORT_FD:
            self._ensure_fd_no_transport(rawsock)
        ssl_protocol = SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        _SocketTransport(self, rawsock, ssl_protocol, None, extra, server)
        return ssl_protocol._app_transport

    async def start_tls(self, transport, protocol, sslcontext, *,
                        server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        """Upgrade transport to TLS; return the transport protocol now uses."""
        # asyncio's steps and checks, with our TLS protocol (tls.pxi)
        if ssl is None:
            raise RuntimeError('Python ssl module is not available')
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f'sslcontext is expected to be an instance of ssl.SSLContext, '
                f'got {sslcontext!r}')
        if not getattr(transport, '_start_tls_compatible', False):
            raise TypeError(
                f'transport {transport!r} is not supported by start_tls()')
        waiter = self.create_future()
        ssl_protocol = SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False)
        # no byte may reach the TLS protocol before its connection_made()
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        if _CHECK_NEW_TRANSPORT_FD:
            self._ensure_fd_no_transport(sock)
        return _DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _WritePipeTransport(self, pipe, protocol, waiter, extra)


def _borrow(target, source, names):
    for name in names:
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))


_borrow(Loop, asyncio.BaseEventLoop, _FROM_BASE_EVENT_LOOP)
_borrow(Loop, _selector_events.BaseSelectorEventLoop, _FROM_SELECTOR_LOOP)
_borrow(Loop, _unix_events._UnixSelectorEventLoop, _FROM_UNIX_LOOP)
Loop.sock_recv = _loop_sock_recv
Loop.sock_recv_into = _loop_sock_recv_into
Loop.sock_sendall = _loop_sock_sendall
Loop.sock_accept = _loop_sock_accept
Loop.sock_recvfrom = _loop_sock_recvfrom
Loop.sock_recvfrom_into = _loop_sock_recvfrom_into
Loop._make_subprocess_transport = _loop_make_subprocess_transport
Loop.stats = _loop_stats
# the requests behind aioring.open() and its path helpers (files.pxi)
for _name, _method in list(globals().items()):
    if _name.startswith('_loop_file_'):
        setattr(Loop, _name[len('_loop'):], _method)


def _unix_stop_serving(self, sock):
    # 3.13+: a closed Unix server removes its socket file.  asyncio's method
    # reaches the selector loop's through super(), which only works on its
    # own subclasses, so the two steps are spelled out here.
    path = sock.getsockname() if sock in self._unix_server_sockets else None
    self._stop_listening(sock)
    if path is not None:
        prev_ino = self._unix_server_sockets.pop(sock)
        try:
            if os.stat(path).st_ino == prev_ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            _logger.error('Unable to clean up listening UNIX socket '
                          '%r: %r', sock, err)


if '_stop_serving' in vars(_unix_events._UnixSelectorEventLoop):
    Loop._stop_serving = _unix_stop_serving
else:
    Loop._stop_serving = Loop._stop_listening
