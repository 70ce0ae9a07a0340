# Stream transports (TCP and Unix sockets) driven by ring completions.
#
# SocketStream holds a connection's state and does its I/O:
# - receiving: one multishot recv into the loop's receive buffers stays armed
#   while the transport reads; each completion's chunk is copied out to the
#   protocol (data_received(bytes), or get_buffer()/buffer_updated()) and the
#   buffer goes straight back.  pause_reading() cancels the recv; chunks that
#   were already on their way are kept for resume_reading().
# - direct receive: a BufferedProtocol stream that gets large chunks stops
#   copying them.  Its recv is cancelled (the chunks still on their way are
#   delivered first, in order) and it waits with a poll instead; once the
#   socket is readable it calls get_buffer(-1) and recv()s straight into that
#   buffer, as asyncio does (the kernel never holds the protocol's buffer).
#   Small receives in a row bring it back to the ring's recv.
# - sending: write() queues bytes; at most one send is in flight, and what
#   was queued meanwhile goes out together in the next one (one sendmsg).
#   Sends are submitted with the loop's next io_uring_enter, so the writes
#   of one loop iteration cost no system call of their own.
# - closing: the socket's requests are cancelled, and the socket (its
#   fixed-file slot, then its fd) is released only after their final
#   completions.
#
# asyncio.Transport lays out its instances itself (__slots__), so an
# extension type cannot also be one.  _SocketTransport is the object the
# protocol and the program see: an asyncio.Transport whose methods hand over
# to its SocketStream.  Behaviour follows asyncio's _SelectorSocketTransport
# of the running Python, message for message.

from asyncio import constants as _constants
from asyncio import futures as _futures
from asyncio import protocols as _protocols
from asyncio import transports as _transports
from asyncio import trsock as _trsock
from cpython.buffer cimport PyBuffer_Release, PyBUF_WRITABLE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred, PyErr_SetObject, PyErr_SetString

cdef extern from "Python.h":
    # as cpython's, with their errors left set for the caller (-1)
    Py_ssize_t _object_length "PyObject_Length"(object o) noexcept
    int _get_buffer "PyObject_GetBuffer"(object o, Py_buffer *view, int flags) noexcept
from cpython.bytes cimport PyBytes_GET_SIZE

cdef extern from "errno.h":
    enum: ENOBUFS
    enum: EINVAL

# Server._attach()/_detach() learned their transport argument in 3.12.
cdef bint _SERVER_TAKES_TRANSPORT = len(
    _inspect.signature(asyncio.base_events.Server._detach).parameters) > 1


cdef _server_attach(server, transport):
    if _SERVER_TAKES_TRANSPORT:
        server._attach(transport)
    else:
        server._attach()


cdef _server_detach(server, transport):
    if _SERVER_TAKES_TRANSPORT:
        server._detach(transport)
    else:
        server._detach()
cdef bint _WRITELINES_OWN = sys.version_info >= (3, 12)

# SO_LINGER on with a zero timeout: close() resets the connection.
_LINGER_RESET = __import__('struct').pack('ii', 1, 0)

# The private-buffer recv (no provided-buffer ring) asks this much at once.
cdef Py_ssize_t RECV_SIZE = 64 * 1024

# Direct receive (BufferedProtocol streams): a chunk of DIRECT_ENTER bytes or
# more switches it on; DIRECT_LEAVE_AFTER receives in a row of fewer than
# DIRECT_SMALL bytes switch it off.  (Copying a large chunk out of a
# receive buffer that is cold in the cache costs more than the poll and
# the recv() call; for small chunks the ring's multishot recv is cheaper.)
cdef Py_ssize_t DIRECT_ENTER = 32 * 1024
cdef Py_ssize_t DIRECT_SMALL = 8 * 1024
cdef int DIRECT_LEAVE_AFTER = 8

cdef extern from "sys/socket.h":
    ssize_t _recv "recv"(int fd, void *buf, size_t n, int flags) nogil

cdef object _BufferedProtocol = _protocols.BufferedProtocol
cdef object _set_nodelay = _base_events._set_nodelay
cdef int LOG_THRESHOLD_FOR_CONNLOST_WRITES = _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


cdef inline object _oserror(int res):
    # OSError(errno, ...) picks the subclass (ConnectionResetError, ...)
    return OSError(-res, os.strerror(-res))


cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject **ob_item
        Py_ssize_t allocated


cdef inline void _empty_keeping_room(list chunks) noexcept:
    # chunks.clear(), but the list keeps its array (list.clear() frees it,
    # and the next write()'s append allocates it again): a stream's write
    # queue is emptied and filled once per request.  (Chunks are bytes,
    # whose release runs no Python code.)
    cdef PyListObject *lst = <PyListObject *>chunks
    cdef Py_ssize_t i, n = len(chunks)
    if lst.allocated > 16:
        chunks.clear()          # (a long queue's array is given back)
        return
    _Py_SET_SIZE(<PyObject *>chunks, 0)
    for i in range(n):
        Py_XDECREF(lst.ob_item[i])
        lst.ob_item[i] = NULL


cdef Py_ssize_t _drop_written(list chunks, Py_ssize_t offset, Py_ssize_t n):
    # n more bytes of the queued chunks went out (the first `offset` bytes
    # of chunks[0] had gone before): drop the chunks that are done; returns
    # the new offset into chunks[0]
    cdef Py_ssize_t left = n + offset, size
    while chunks:
        size = PyBytes_GET_SIZE(<bytes>chunks[0])
        if left < size:
            break
        left -= size
        del chunks[0]
    return left


cdef inline bint _buffer_updated(SocketStream stream, Py_ssize_t n) except -1:
    # stream.protocol.buffer_updated(n); False when it raised (the transport
    # is closed with the error, as asyncio's read would).  (A C function,
    # not a method: inlined into both receive paths, where a method call
    # cost 25 instructions per request.)
    cdef PyObject *result = NULL
    if stream.buffer_updated is not None:
        result = _call_with_raw(stream.buffer_updated, n)
    if result == NULL:
        return stream._callback_failed(stream.buffer_updated is None, 'buffer_updated',
                                       'Fatal error: protocol.buffer_updated() call failed.')
    Py_DECREF(<object>result)
    return True


cdef class SocketStream:

    def __cinit__(self):
        self.slot = -1
        self.wbuf = []
        self.high_water = 64 * 1024
        self.low_water = 16 * 1024

    # -- receiving -------------------------------------------------------

    def _start_reading(self):
        # after connection_made() (asyncio starts reading one callback later)
        if self.closing or self.paused:
            return
        if self.stash:
            self._deliver_stash()
        else:
            self._arm_recv()

    cdef _arm_recv(self):
        if self.recv_op is None and self.sock is not None and self.loop is not None:
            self.loop._check_closed_fast()      # as asyncio's _add_reader()
            self.loop._submit_recv(self)

    cdef _cancel_recv(self):
        # The final completion still comes (maybe with data the kernel had
        # already taken): _recv_done keeps what arrives while paused.
        if self.recv_op is not None and self.ring_loop is not None:
            self.ring_loop._cancel_op(self.recv_op)

    cdef int _recv_done(self, char *buf, int res, bint final) except -1:
        # One completion of the recv: res bytes at buf (valid only during
        # this call), 0 for EOF, or -errno.
        if final:
            self.recv_op = None
        if self.sock is None or self.conn_lost or self.closing:
            # closed: asyncio would not have read these bytes
            if res > 0:
                self.unread = True
            if final:
                self._maybe_release()
            return 0
        if self.loop._closed:
            return 0
        if res > 0:
            if self.stash is not None or self.paused:
                self._keep(PyBytes_FromStringAndSize(buf, res))
            elif not self._deliver(buf, res):
                return 0
            if final and not self.paused and not self.closing:
                self._arm_recv()
        elif res == 0:
            if self.stash is not None or self.paused:
                self._keep(b'')
            else:
                self._on_eof()
        elif res == -ECANCELED or res == -EAGAIN:
            # cancelled by pause_reading() (resumed since?), or nothing
            # received after all (see ar_prep_recv): receive again
            if final and not self.paused and self.stash is None:
                self._arm_recv()
        elif res == -ENOBUFS:
            self.loop.recv_buffers.exhausted(self.loop.iteration)
            if not self.paused:
                self._arm_recv()
        elif res == -EINVAL and self.loop.recv_multishot:
            # a kernel older than 6.0 refuses multishot recv: single shots
            self.loop.recv_multishot = False
            self._arm_recv()
        else:
            self._fatal_error(_oserror(res), 'Fatal read error on socket transport')

    cdef _keep(self, object chunk):
        # received while paused (or behind such chunks): for resume_reading()
        if self.stash is None:
            self.stash = []
        self.stash.append(chunk)

    def _deliver_stash(self):
        cdef bytes chunk
        while self.stash and not self.paused and not self.closing:
            chunk = self.stash.pop(0)
            if not chunk:
                if not self.stash:
                    self.stash = None
                self._on_eof()
                return
            if not self._deliver(PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk)):
                return
        if not self.stash:
            self.stash = None
            if not self.paused and not self.closing:
                self._arm_recv()

    cdef bint _deliver(self, char *buf, Py_ssize_t n) except -1:
        """Hand n received bytes to the protocol; False when reading must
        stop (the transport failed)."""
        if self.buffered:
            return self._deliver_buffered(buf, n)
        cdef SpareBytes spare = self.ring_loop.spare_bytes
        cdef PyObject *result = NULL
        data = spare.make(buf, n)
        # (the protocol's callbacks are called with no try block on the way:
        # its save of the exception state would be paid per chunk)
        if self.data_received is not None:
            result = _call_with_raw(self.data_received, data)
        if result == NULL:
            return self._callback_failed(self.data_received is None, 'data_received',
                                         'Fatal error: protocol.data_received() call failed.')
        Py_DECREF(<object>result)
        spare.offer(<PyObject *>data)   # not kept by the protocol: reused
        return True

    cdef bint _callback_failed(self, bint missing, str name, str message) except -1:
        # A protocol callback raised (its exception is still set, see
        # _raised), or the protocol lacks it (missing: looked up again, which
        # raises as asyncio's call would).  False: reading stops.
        if not missing and PyErr_Occurred() == NULL:
            # (a C callable's NULL without an exception: what the check
            # PyObject_Vectorcall makes would have raised)
            PyErr_SetString(SystemError, 'error return without exception set')
        try:
            if missing:
                getattr(self.protocol, name)
                raise TypeError("'NoneType' object is not callable")
            _raised()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, message)
        return False

    cdef bint _take_buffer(self, Py_buffer *view) except -1:
        """get_buffer(-1), as a writable view in *view (the caller releases
        it); False when that failed as asyncio's read would fail (the
        transport is closed with the error)."""
        cdef Py_ssize_t k
        cdef PyObject *result = NULL
        if self.get_buffer is not None:
            result = _call_with_raw(self.get_buffer, -1)
        if result != NULL:
            target = <object>result
            Py_DECREF(target)   # (the call's reference, now target's)
            k = _object_length(target)
            if k <= 0:
                if k == 0:
                    PyErr_SetString(RuntimeError, 'get_buffer() returned an empty buffer')
                result = NULL
        if result == NULL:
            return self._callback_failed(self.get_buffer is None, 'get_buffer',
                                         'Fatal error: protocol.get_buffer() call failed.')
        if _get_buffer(target, view, PyBUF_WRITABLE) < 0:
            # the error asyncio's sock.recv_into(target) raises instead
            # (the message is built with no exception set)
            PyErr_Clear()
            PyErr_SetObject(TypeError, f'recv_into() argument 1 must be read-write '
                                       f'bytes-like object, not {type(target).__name__}')
            return self._callback_failed(False, None, 'Fatal read error on socket transport')
        return True

    cdef bint _deliver_buffered(self, char *buf, Py_ssize_t n) except -1:
        # asyncio reads straight into get_buffer(); here the chunk is copied
        # into it, as many times as the protocol's buffers need.
        cdef Py_buffer view
        cdef Py_ssize_t k
        # a large chunk, and a protocol buffer that takes it whole: receive
        # straight into the protocol's buffer from the next recv on
        cdef bint large = n >= DIRECT_ENTER and not self.direct and self.loop.direct_recv
        while n > 0:
            if not self._take_buffer(&view):
                self.unread = True
                return False
            if large and view.len < n:
                large = False
            k = view.len if view.len < n else n
            memcpy(view.buf, buf, k)
            PyBuffer_Release(&view)
            buf += k
            n -= k
            if not _buffer_updated(self, k):
                return False
            if n and (self.paused or self.closing or self.conn_lost):
                # paused (or closed) by the protocol in the middle of a chunk
                if self.closing or self.conn_lost:
                    self.unread = True
                else:
                    if self.stash is None:
                        self.stash = []
                    self.stash.insert(0, PyBytes_FromStringAndSize(buf, n))
                return False
        if large:
            self._go_direct()
        return True

    cdef _go_direct(self):
        # Direct receive from now on.  A multishot recv still armed is
        # cancelled: the chunks it still brings are delivered first, and
        # its final completion arms the poll (_recv_done).
        self.direct = True
        self.small_reads = 0
        if self.recv_op is not None and type(self.recv_op) is not ReadableOp:
            self._cancel_recv()

    cdef int _readable(self, int res) except -1:
        # Direct receive: the poll completed (res: its events, or -errno).
        # From here on asyncio's _read_ready__get_buffer(), step for step.
        cdef Py_buffer view
        cdef ssize_t n
        cdef int err
        self.recv_op = None
        if self.sock is None or self.conn_lost or self.closing:
            self._maybe_release()
            return 0
        if self.loop._closed or self.paused:
            return 0        # (resume_reading() polls again)
        if self.stash is not None:
            return 0        # (_deliver_stash() polls again once they are out)
        if res < 0 and res != -ECANCELED:
            self._fatal_error(_oserror(res), 'Fatal read error on socket transport')
            return 0
        if res == -ECANCELED or not self.direct:
            # cancelled by pause_reading() and resumed since, or the protocol
            # is no longer a BufferedProtocol: wait again, as now wanted
            self._arm_recv()
            return 0
        if not self._take_buffer(&view):
            return 0
        if inject_eagain and injected_flags():
            n = -1              # (tests: the EAGAIN a spurious wake-up gets)
            err = EAGAIN
        else:
            n = _recv(self.fd, view.buf, view.len, MSG_DONTWAIT)
            err = errno
        PyBuffer_Release(&view)
        if n < 0:
            if err == EAGAIN or err == EINTR:
                self._arm_recv()        # (readable no more)
            else:
                self._fatal_error(_oserror(-err), 'Fatal read error on socket transport')
            return 0
        if n == 0:
            self._on_eof()
            return 0
        if not _buffer_updated(self, n):
            return 0
        if n >= DIRECT_SMALL:
            self.small_reads = 0
        else:
            self.small_reads += 1
            if self.small_reads >= DIRECT_LEAVE_AFTER:
                self.direct = False     # back to the ring's recv
        if not self.paused and not self.closing:
            self._arm_recv()

    cdef _on_eof(self):
        if self.loop._debug:
            _logger.debug("%r received EOF", self.transport)
        try:
            keep_open = self.protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return
        if not keep_open:
            self.close()
        # else: reading stops here (no recv is armed after EOF)

    def pause_reading(self):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if self.closing or self.paused:
            return
        self.paused = True
        self._cancel_recv()
        if self.loop._debug:
            _logger.debug("%r pauses reading", self.transport)

    def resume_reading(self):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if self.closing or not self.paused:
            return
        self.paused = False
        if self.stash:
            self.loop._call_soon(self._deliver_stash, (), None)
        else:
            self._arm_recv()
        if self.loop._debug:
            _logger.debug("%r resumes reading", self.transport)

    # -- sending -----------------------------------------------------------

    cdef int _write(self, object data) except -1:
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f'data argument must be a bytes-like object, '
                                f'not {type(data).__name__!r}')
        if self.eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self.empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        if (PyBytes_GET_SIZE(data) == 0) if type(data) is bytes else not data:
            return 0
        if self.conn_lost or self.closed_fresh:
            self._drop_write()
            return 0
        if type(data) is not bytes:
            data = bytes(data)      # the caller may change its buffer later
        self.wbuf.append(data)
        self.wsize += PyBytes_GET_SIZE(data)
        if self.wsize > self.high_water:
            self._send_now()
        self._queue_send()
        if self.wsize > self.high_water:
            self._maybe_pause_protocol()
        return 0

    cdef _drop_write(self):
        # asyncio's write() once its connection counts as lost: ignored,
        # with a warning from the fifth time on
        if (self.conn_lost or self.closed_fresh) >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning('socket.send() raised exception.')
        if self.conn_lost:
            self.conn_lost += 1
        else:
            self.closed_fresh += 1

    cdef _send_now(self):
        # Past the high-water mark: give the socket what it takes at once,
        # as asyncio's write() does, so that pause_writing() is called only
        # when the socket is really full (not because the send was deferred
        # to the end of the iteration).  Only while no send is in flight:
        # the order of the bytes must hold.
        cdef Py_ssize_t n
        if self.sock is None or (self.send_op is not None and self.send_op.in_flight):
            return
        if len(self.wbuf) == 1:
            pending = memoryview(self.wbuf[0])[self.woff:]
        else:
            pending = memoryview(b''.join(self.wbuf))[self.woff:]
        try:
            n = self.sock.send(pending)
        except OSError:
            self.send_backlog = True
            return      # (full, or an error the ring's send will report)
        if n < len(pending):
            self.send_backlog = True
        self.wsize -= n
        if self.wsize == 0:
            self.wbuf.clear()
            self.woff = 0
        else:
            self.woff = _drop_written(self.wbuf, self.woff, n)

    cdef int _queue_send(self) except -1:
        # the loop submits it before its next wait
        if self.loop is None:
            return 0
        if self.wbuf and not self.send_queued and (
                self.send_op is None or not self.send_op.in_flight):
            self.loop._queue_stream_send(self)

    def writelines(self, list_of_data):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if not _WRITELINES_OWN:
            # 3.11: asyncio.WriteTransport's
            self._write(b''.join(list_of_data))
            return
        # 3.12+: the selector transport's own, which takes the chunks as
        # they are (memoryview() decides what is accepted)
        if self.eof:
            raise RuntimeError('Cannot call writelines() after write_eof()')
        if self.empty_waiter is not None:
            raise RuntimeError('unable to writelines; sendfile is in progress')
        if not list_of_data:
            return
        views = [memoryview(data) for data in list_of_data]
        if self.conn_lost or self.closed_fresh:
            return
        for view in views:
            if view.nbytes:
                chunk = view.tobytes()
                self.wbuf.append(chunk)
                self.wsize += PyBytes_GET_SIZE(chunk)
        self._queue_send()
        # (the running Python's writelines() never calls pause_writing())

    cdef int _submit_send(self) except -1:
        # called by the loop before it enters the kernel
        self.send_queued = False
        if self.sock is None or not self.wbuf or self.conn_lost:
            return 0
        if self.send_op is None:
            self.send_op = SendOp.__new__(SendOp)
            self.send_op.stream = self
            # listed once, not per send (close() finds it there)
            self.ring_loop._list_resident(self.send_op)
        elif self.send_op.in_flight:
            return 0
        prep_send(&self.ring_loop.ring, self.send_op, self.fd, self.slot, self.wbuf, self.woff)
        self.ring_loop._track(self.send_op)

    cdef int _send_done(self, int res) except -1:
        cdef list wbuf = self.wbuf
        if self.sock is None or self.conn_lost:
            self._maybe_release()
            return 0
        if res == -ECANCELED or self.loop._closed:
            return 0
        if res == -EAGAIN:
            # nothing sent (see ar_prep_recv): the same bytes go again
            self.send_backlog = True
            self._queue_send()
            return 0
        if res < 0:
            exc = _oserror(res)
            wbuf.clear()
            self.wsize = 0
            self.woff = 0
            self._fatal_error(exc, 'Fatal write error on socket transport')
            if self.empty_waiter is not None:
                self.empty_waiter.set_exception(exc)
            return 0
        # drop what went out
        self.wsize -= res
        if self.wsize == 0:
            self.ring_loop.spare_bytes.offer_list(wbuf)
            _empty_keeping_room(wbuf)       # all of it (the common case)
            self.woff = 0
            self.send_backlog = False
        else:
            self.woff = _drop_written(wbuf, self.woff, res)
            self.send_backlog = True
        if self.protocol_paused:
            self._maybe_resume_protocol()   # may write more
        if wbuf:
            self._queue_send()              # goes out with the next enter
            return 0
        if self.empty_waiter is not None:
            self.empty_waiter.set_result(None)
        if self.closing:
            self._call_connection_lost(None)
        elif self.eof:
            self.sock.shutdown(socket.SHUT_WR)

    def write_eof(self):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if self.closing or self.eof:
            return
        self.eof = True
        if not self.wbuf:
            self.sock.shutdown(socket.SHUT_WR)

    cdef _maybe_pause_protocol(self):
        if self.wsize <= self.high_water or self.protocol_paused:
            return
        self.protocol_paused = True
        try:
            self.protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.loop.call_exception_handler({
                'message': 'protocol.pause_writing() failed',
                'exception': exc,
                'transport': self.transport,
                'protocol': self.protocol,
            })

    cdef _maybe_resume_protocol(self):
        if self.protocol_paused and self.wsize <= self.low_water:
            self.protocol_paused = False
            try:
                self.protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.loop.call_exception_handler({
                    'message': 'protocol.resume_writing() failed',
                    'exception': exc,
                    'transport': self.transport,
                    'protocol': self.protocol,
                })

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            if low is None:
                high = 64 * 1024
            else:
                high = 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
        self.high_water = high
        self.low_water = low
        self._maybe_pause_protocol()

    # -- closing -------------------------------------------------------------

    def close(self):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if self.closing:
            return
        self.closing = True
        self._cancel_recv()
        if not self.wbuf:
            self.conn_lost += 1
            # (asyncio's call_soon: a closed loop raises RuntimeError)
            self.loop.call_soon(self._call_connection_lost, None)
        elif not self.send_backlog and not (
                self.send_op is not None and self.send_op.in_flight):
            # Only bytes written since the last send, which the socket took
            # whole: asyncio's write() would have sent these too, so its
            # close() found an empty buffer, counted the connection lost and
            # drops what is written next.  Do the same; these bytes still
            # go out before connection_lost().  (Sending them right here
            # instead made CPython's test_ssl
            # test_remote_shutdown_receives_trailing_data hang.)
            self.closed_fresh = 1

    def abort(self):
        if self.ring_loop is not None:
            self.ring_loop._check_fork()    # (a forked child: RuntimeError)
        if self.wbuf and self.sock is not None and not self.conn_lost and not (
                self.send_op is not None and self.send_op.in_flight):
            # Written in this iteration and not yet handed to the kernel:
            # asyncio's write() would have sent what the socket takes, and
            # the peer would get it before the abort.  Send it now.
            try:
                self.sock.send(memoryview(b''.join(self.wbuf))[self.woff:])
            except OSError:
                pass
        self._force_close(None)

    cdef _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self.loop._debug:
                _logger.debug("%r: %s", self.transport, message, exc_info=True)
        else:
            self.loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self.transport,
                'protocol': self.protocol,
            })
        self._force_close(exc)

    cdef _force_close(self, exc):
        if self.conn_lost:
            return
        if self.wbuf:
            self.wbuf.clear()
            self.wsize = 0
            self.woff = 0
            if self.send_op is not None and self.send_op.in_flight:
                self.ring_loop._cancel_op(self.send_op)
        if not self.closing:
            self.closing = True
            self._cancel_recv()
        self.conn_lost += 1
        self.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        # asyncio's, except that the socket is released only once the kernel
        # has let go of it (_maybe_release)
        try:
            if self.protocol_connected:
                self.protocol.connection_lost(exc)
        finally:
            if not self.conn_lost:
                # closed after a drained queue: as asyncio's
                self.conn_lost = self.closed_fresh or 1
            if self.empty_waiter is not None:
                self.empty_waiter.set_exception(
                    ConnectionError("Connection is closed by peer"))
            self.closed_sock = self.sock
            self.sock = None
            self.protocol = None
            self.data_received = None
            self.loop = None
            server = self.server
            if server is not None:
                self.server = None
                _server_detach(server, self.transport)
            self._maybe_release()
            if self.closed_sock is not None:
                # waiting for the kernel: the loop finishes this before it
                # stops running (_run_forever_cleanup)
                self.counted_release = True
                self.ring_loop.pending_releases += 1

    cdef _maybe_release(self):
        # Cancel, final completions, slot cleared, fd closed: in that order.
        cdef int slot
        if self.closed_sock is None or self.recv_op is not None:
            return
        if self.send_op is not None and self.send_op.in_flight:
            return
        sock, self.closed_sock = self.closed_sock, None
        slot, self.slot = self.slot, -1
        if self.counted_release:
            self.counted_release = False
            self.ring_loop.pending_releases -= 1
        if slot >= 0 and self.ring_loop is not None:
            self.ring_loop._release_slot(slot)
        if self.unread or (self.stash and any(self.stash)):   # (b'' is an EOF)
            # With asyncio these bytes would still sit in the socket, and
            # closing it would reset the connection: the peer sees the same.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        self.stash = None
        sock.close()
        # no cycles left for the garbage collector
        if self.send_op is not None:
            if self.ring_loop is not None:
                self.ring_loop._unlist_resident(self.send_op)
            self.send_op.stream = None
            self.send_op = None
        self.transport = None
        self.ring_loop = None

    def _release_unclosed(self):
        # the transport was collected without close(): no request is in
        # flight (one would have kept it alive)
        if self.slot >= 0 and self.ring_loop is not None:
            self.ring_loop._release_slot(self.slot)
            self.slot = -1
        self.sock.close()

    # -- the rest of the transport API ----------------------------------------

    def set_protocol(self, protocol):
        self.buffered = isinstance(protocol, _BufferedProtocol)
        if not self.buffered:
            self.direct = False     # (a poll in flight receives the ring's way)
        # looked up once, as uvloop does: not per chunk (None: missing, and
        # looked up again at the call, to raise as asyncio's call would)
        self.data_received = None if self.buffered else getattr(protocol, 'data_received', None)
        self.get_buffer = getattr(protocol, 'get_buffer', None) if self.buffered else None
        self.buffer_updated = getattr(protocol, 'buffer_updated', None) if self.buffered else None
        self.protocol = protocol
        self.protocol_connected = True

    def _make_empty_waiter(self):
        if self.empty_waiter is not None:
            raise RuntimeError('Empty waiter is already set')
        self.empty_waiter = self.loop.create_future()
        if not self.wbuf:
            self.empty_waiter.set_result(None)
        return self.empty_waiter

    def _reset_empty_waiter(self):
        self.empty_waiter = None


cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member

cdef Py_ssize_t _STREAM_SLOT_OFFSET = -1    # set once the class exists
cdef PyObject *_SOCKET_TRANSPORT_TYPE = NULL  # _SocketTransport, then (held by the module)


cdef inline SocketStream _transport_stream(transport):
    # transport._stream, read from its slot: the attribute lookup cost more
    # than the rest of a small write()
    cdef PyObject *stream
    if _STREAM_SLOT_OFFSET > 0 and _Py_TYPE(<PyObject *>transport) == _SOCKET_TRANSPORT_TYPE:
        stream = (<PyObject **>(<char *><PyObject *>transport + _STREAM_SLOT_OFFSET))[0]
        if stream != NULL:
            return <SocketStream>stream
    return <SocketStream>transport._stream


class _SocketTransport(_transports._FlowControlMixin):
    """A TCP or Unix stream transport of an aioring loop.

    A _FlowControlMixin as asyncio's own socket transport is (loop.sendfile's
    fallback insists on it); its slots are unused, the stream keeps that
    state."""

    __slots__ = ('_stream', '__weakref__')

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        cdef SocketStream stream = SocketStream.__new__(SocketStream)
        cdef BaseLoop ring_loop = loop
        _transports.Transport.__init__(self, extra)
        self._stream = stream
        self._extra['socket'] = _trsock.TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except socket.error:
                self._extra['peername'] = None
        stream.loop = stream.ring_loop = ring_loop
        stream.transport = self
        stream.sock = sock
        stream.fd = sock.fileno()
        stream.set_protocol(protocol)
        stream.protocol_connected = False
        stream.server = server
        if server is not None:
            _server_attach(server, self)
        loop._transports[stream.fd] = self
        _set_nodelay(sock)
        ring_loop._check_closed_fast()      # asyncio's call_soon() below would raise
        stream.slot = ring_loop._fixed_slot(stream.fd)
        stream.protocol_connected = True
        ring_loop._call_soon(protocol.connection_made, (self,), None)
        # reading starts after connection_made(), as in asyncio
        ring_loop._call_soon(stream._start_reading, (), None)
        if waiter is not None:
            ring_loop._call_soon(_futures._set_result_unless_cancelled, (waiter, None), None)

    def __repr__(self):
        cdef SocketStream s = self._stream
        info = [self.__class__.__name__]
        if s.sock is None:
            info.append('closed')
        elif s.closing:
            info.append('closing')
        info.append(f'fd={s.fd}')
        if s.loop is not None and not s.loop.is_closed():
            info.append('read=polling' if s.recv_op is not None else 'read=idle')
            state = 'polling' if s.send_op is not None and s.send_op.in_flight else 'idle'
            info.append(f'write=<{state}, bufsize={s.wsize}>')
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=warnings.warn):
        cdef SocketStream s = self._stream
        if s.sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            s._release_unclosed()
            if s.server is not None:
                _server_detach(s.server, self)
                s.server = None

    # the protocol's view

    def get_protocol(self):
        return (<SocketStream>self._stream).protocol

    def set_protocol(self, protocol):
        (<SocketStream>self._stream).set_protocol(protocol)

    def is_closing(self):
        return (<SocketStream>self._stream).closing

    def close(self):
        (<SocketStream>self._stream).close()

    def abort(self):
        (<SocketStream>self._stream).abort()

    # reading

    def is_reading(self):
        cdef SocketStream s = self._stream
        return not s.paused and not s.closing

    def pause_reading(self):
        (<SocketStream>self._stream).pause_reading()

    def resume_reading(self):
        (<SocketStream>self._stream).resume_reading()

    # writing

    def write(self, data):
        _transport_stream(self)._write(data)

    def writelines(self, list_of_data):
        (<SocketStream>self._stream).writelines(list_of_data)

    def write_eof(self):
        (<SocketStream>self._stream).write_eof()

    def can_write_eof(self):
        return True

    def get_write_buffer_size(self):
        return (<SocketStream>self._stream).wsize

    def get_write_buffer_limits(self):
        cdef SocketStream s = self._stream
        return (s.low_water, s.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        (<SocketStream>self._stream).set_write_buffer_limits(high, low)

    # what asyncio's own helpers (sendfile, start_tls) read of a transport

    _sendfile_compatible = _constants._SendfileMode.TRY_NATIVE
    _start_tls_compatible = True

    def _force_close(self, exc):
        # asyncio's TLS layer closes its transport this way on fatal errors
        (<SocketStream>self._stream)._force_close(exc)

    @property
    def _protocol_paused(self):
        return (<SocketStream>self._stream).protocol_paused

    @property
    def _sock(self):
        return (<SocketStream>self._stream).sock

    @property
    def _sock_fd(self):
        return (<SocketStream>self._stream).fd

    @property
    def _loop(self):
        return (<SocketStream>self._stream).loop

    @property
    def _protocol(self):
        return (<SocketStream>self._stream).protocol

    def _make_empty_waiter(self):
        return (<SocketStream>self._stream)._make_empty_waiter()

    def _reset_empty_waiter(self):
        (<SocketStream>self._stream)._reset_empty_waiter()


_stream_slot = _SocketTransport.__dict__['_stream']
if type(_stream_slot) is type(_transports.BaseTransport.__dict__['_extra']):   # a member descriptor
    _STREAM_SLOT_OFFSET = (<PyMemberDescrObject *><PyObject *>_stream_slot).d_member.offset
    _SOCKET_TRANSPORT_TYPE = <PyObject *>_SocketTransport
del _stream_slot
