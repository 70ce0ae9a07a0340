# Operation records: one per io_uring request.  They prepare the SQE (the
# only code outside the ring layer that touches SQE fields) and receive the
# request's completions.  A cancel never frees an operation; its final
# completion does (BaseLoop._process_completions drops the loop's reference).

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memset, memcpy
from libc.stdint cimport uint16_t
from cpython.mem cimport PyMem_Malloc, PyMem_Free

cdef extern from "sys/socket.h":
    enum: MSG_NOSIGNAL
    enum: MSG_DONTWAIT
    enum: SOCK_CLOEXEC


cdef enum:
    READ_WAKEUP = 1       # the cross-thread wake-up eventfd
    READ_SIGNALS = 2      # the signal wake-up socket


cdef class Operation:
    cdef int complete(self, int res, unsigned flags) except -1:
        pass


cdef inline uint64_t op_user_data(Operation op) noexcept:
    return <uint64_t><uintptr_t><PyObject *>op


cdef class InternalRead(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        if self.loop != NULL:
            (<BaseLoop>self.loop)._internal_read_done(self, res)


cdef class RecvOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        stream = self.stream
        self.stream = None
        try:
            stream._recv_done(<char *>self.buf if res > 0 else NULL, res, True)
        finally:
            self.buf = None             # the kernel is done with it


cdef class RecvSelectOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        cdef uint16_t bid
        cdef bint final = not (flags & IORING_CQE_F_MORE)
        stream = self.stream
        if final:
            self.stream = None
        if flags & IORING_CQE_F_BUFFER:
            bid = <uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT)
            try:
                stream._recv_done(self.pool.addr(bid), res, final)
            finally:
                self.pool.recycle(bid)
        else:
            stream._recv_done(NULL, res, final)


cdef class ReadableOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        stream = self.stream
        self.stream = None
        stream._readable(res)


cdef class SendOp(Operation):
    # a stream's, resident in its loop's list while the stream lives
    # (stream.pxi); one collected with its stream takes itself out (a
    # closed loop has forgotten its list: resident is False then)
    def __dealloc__(self):
        if self.resident and self.loop != NULL:
            (<BaseLoop>self.loop)._unlist_resident(self)

    cdef int complete(self, int res, unsigned flags) except -1:
        self.keep = None
        if self.stream is not None:
            self.stream._send_done(res)


cdef class SockOp(Operation):
    # A request for one of the loop's sock_* methods: it resolves `fut`, and
    # a cancelled future cancels the request (sock.pxi).
    cdef:
        object fut
        object sock

    def _fut_done(self, fut):
        if fut.cancelled() and self.loop != NULL:
            (<BaseLoop>self.loop)._cancel_op(self)


cdef class SockRecvOp(SockOp):
    # sock_recv / sock_recv_into: one recv into `buf`, which it owns until
    # the final completion; sock.pxi decides where the bytes go.
    cdef:
        bytearray buf
        object target           # sock_recv_into's buffer, or None

    cdef int complete(self, int res, unsigned flags) except -1:
        _sock_recv_done(self, res)


cdef class SockRecvFromOp(SockOp):
    # sock_recvfrom / sock_recvfrom_into: one recvmsg into `buf`, the
    # sender's address into `name`; both owned until the final completion.
    cdef:
        bytearray buf
        object target           # sock_recvfrom_into's buffer, or None
        msghdr msg
        iovec iov
        sockaddr_storage name

    cdef int complete(self, int res, unsigned flags) except -1:
        _sock_recvfrom_done(self, res)


cdef class ReadOp(Operation):
    def __dealloc__(self):
        PyMem_Free(self.buf)

    cdef int complete(self, int res, unsigned flags) except -1:
        transport = self.transport
        self.transport = None
        (<RingReader>transport._reader)._done(transport, res)


cdef class SendToOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        transport = self.transport
        item = self.keep
        self.transport = None
        self.keep = None            # the kernel is done with the bytes
        (<DatagramSocket>transport._writer)._sent(transport, res, item)


cdef class WriteOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        transport = self.transport
        self.transport = None
        self.keep = None
        (<PipeWriter>transport._writer)._done(transport, res)


cdef class SockSendOp(SockOp):
    # sock_sendall: sends `data[sent:]` until all is sent.
    cdef:
        bytes data
        Py_ssize_t sent

    cdef int complete(self, int res, unsigned flags) except -1:
        _sock_send_done(self, res)


cdef class SockAcceptOp(SockOp):
    # sock_accept: one accept on the listening socket.

    cdef int complete(self, int res, unsigned flags) except -1:
        _sock_accept_done(self, res)


cdef class AcceptOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        cdef bint final = not (flags & IORING_CQE_F_MORE)
        listener = self.listener
        if final:
            self.listener = None
        (<Listener>listener)._accepted(res, final)


cdef class PollOp(Operation):
    cdef int complete(self, int res, unsigned flags) except -1:
        if self.loop != NULL:
            (<BaseLoop>self.loop)._poll_done(self, res)


# The next free SQE (the SQ is flushed first when it is full).
cdef inline io_uring_sqe *acquire_sqe(ar_ring *ring) except NULL:
    cdef io_uring_sqe *sqe = ar_get_sqe(ring)
    if sqe == NULL:
        if ar_ring_forked(ring):
            raise RuntimeError(
                'aioring: this event loop\'s io_uring belongs to the process that '
                'created it and cannot be used after fork(); create a new loop '
                'in the child (aioring.new_event_loop())')
        raise RuntimeError('io_uring submission queue is full and could not be flushed')
    return sqe


cdef int prep_poll(ar_ring *ring, Operation op, int fd, unsigned mask, int slot=-1) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_poll_add(sqe, target(fd, slot), mask, 0, op_user_data(op))
    use_slot(sqe, slot)
    return 0


# Socket requests name the socket's fixed-file slot when it has one
# (slot >= 0), else its fd.

cdef inline int target(int fd, int slot) noexcept:
    return slot if slot >= 0 else fd


cdef inline void use_slot(io_uring_sqe *sqe, int slot) noexcept:
    if slot >= 0:
        sqe.flags |= IOSQE_FIXED_FILE


# A socket request the kernel would wait on may still complete with EAGAIN
# and nothing transferred (see ar_prep_recv); every completion handler takes
# that as "submit it again".  Fault injection for the tests makes it common:
# with inject_eagain set (AIORING_INJECT_EAGAIN=1, or set_inject_eagain()),
# every other socket send and receive goes out with MSG_DONTWAIT, so the
# kernel answers EAGAIN wherever it would have waited.  Every other, so that
# a retry then waits and the loop does not spin.
cdef bint inject_eagain = os.environ.get('AIORING_INJECT_EAGAIN', '0') == '1'
cdef unsigned injected_requests = 0


cdef inline unsigned injected_flags() noexcept:
    global injected_requests
    if not inject_eagain:
        return 0
    injected_requests += 1
    return MSG_DONTWAIT if injected_requests & 1 else 0


def set_inject_eagain(bint on):
    """Switch EAGAIN fault injection on or off (for tests); returns how
    many requests went out with MSG_DONTWAIT since the previous call."""
    global inject_eagain, injected_requests
    done = (injected_requests + 1) // 2
    inject_eagain = on
    injected_requests = 0
    return done


cdef int prep_read(ar_ring *ring, Operation op, int fd, int slot, void *buf, unsigned n) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    # offset -1: "current position", the only one a stream descriptor has
    ar_prep_read(sqe, target(fd, slot), buf, n, <uint64_t>-1, op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_recv(ar_ring *ring, Operation op, int fd, int slot, void *buf, unsigned n) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_recv(sqe, target(fd, slot), buf, n, injected_flags(), op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_recv_select(ar_ring *ring, Operation op, int fd, int slot,
                          uint16_t bgid, bint multishot) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_recv_select(sqe, target(fd, slot), bgid, multishot, injected_flags(),
                        op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_recvmsg(ar_ring *ring, Operation op, int fd, int slot, msghdr *msg) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_recvmsg(sqe, target(fd, slot), msg, injected_flags(), op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_sendmsg(ar_ring *ring, Operation op, int fd, int slot, msghdr *msg,
                      bint dontwait) except -1:
    # dontwait: fail with EAGAIN rather than wait in the kernel, for a socket
    # whose sendmsg cannot be retried after EAGAIN (see DatagramSocket)
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_sendmsg(sqe, target(fd, slot), msg,
                    MSG_NOSIGNAL | (MSG_DONTWAIT if dontwait else injected_flags()),
                    op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_accept(ar_ring *ring, Operation op, int fd, int slot, bint multishot) except -1:
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_accept(sqe, target(fd, slot), SOCK_CLOEXEC, multishot, op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef Py_ssize_t chunks_to_iov(iovec *iov, list chunks, Py_ssize_t offset):
    # Up to SEND_IOV_MAX of `chunks` (bytes) as iovecs, without the first
    # `offset` bytes of chunks[0]; returns how many.
    cdef Py_ssize_t i, n = min(len(chunks), SEND_IOV_MAX)
    cdef bytes chunk
    for i in range(n):
        chunk = <bytes>chunks[i]
        iov[i].iov_base = PyBytes_AS_STRING(chunk)
        iov[i].iov_len = PyBytes_GET_SIZE(chunk)
    iov[0].iov_base = <char *>iov[0].iov_base + offset
    iov[0].iov_len -= offset
    return n


cdef int prep_send(ar_ring *ring, SendOp op, int fd, int slot, list chunks,
                   Py_ssize_t offset) except -1:
    # chunks: bytes objects, the first `offset` bytes of chunks[0] already sent
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    cdef Py_ssize_t n
    cdef bytes chunk
    if len(chunks) == 1:
        chunk = <bytes>chunks[0]
        op.keep = chunk
        # (one send moves at most 1 GiB: the length field is 32 bits)
        ar_prep_send(sqe, target(fd, slot), PyBytes_AS_STRING(chunk) + offset,
                     <unsigned>min(PyBytes_GET_SIZE(chunk) - offset, 1 << 30),
                     MSG_NOSIGNAL | injected_flags(), op_user_data(op))
    else:
        n = chunks_to_iov(op.iov, chunks, offset)
        op.keep = chunks[:n]
        memset(&op.msg, 0, sizeof(op.msg))
        op.msg.msg_iov = op.iov
        op.msg.msg_iovlen = n
        ar_prep_sendmsg(sqe, target(fd, slot), &op.msg, MSG_NOSIGNAL | injected_flags(),
                        op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_send_bytes(ar_ring *ring, Operation op, int fd, int slot, bytes data,
                         Py_ssize_t offset) except -1:
    # the rest of data from offset (at most 1 GiB: the length is 32 bits)
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_send(sqe, target(fd, slot), PyBytes_AS_STRING(data) + offset,
                 <unsigned>min(PyBytes_GET_SIZE(data) - offset, 1 << 30),
                 MSG_NOSIGNAL | injected_flags(), op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_write_chunks(ar_ring *ring, WriteOp op, int fd, int slot, list chunks,
                           Py_ssize_t offset) except -1:
    # prep_send's counterpart for a pipe or character device: write/writev
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    cdef Py_ssize_t n = chunks_to_iov(op.iov, chunks, offset)
    op.keep = chunks[:n]
    if n == 1:
        ar_prep_write(sqe, target(fd, slot), op.iov[0].iov_base,
                      <unsigned>min(op.iov[0].iov_len, 1 << 30), <uint64_t>-1,
                      op_user_data(op))
    else:
        ar_prep_writev(sqe, target(fd, slot), op.iov, n, <uint64_t>-1, op_user_data(op))
    use_slot(sqe, slot)
    return 0


cdef int prep_cancel(ar_ring *ring, Operation target) except -1:
    # Ask the kernel to cancel `target`; the cancel's own CQE carries
    # user_data 0, which the loop ignores.  `target` stays alive until its
    # own final completion arrives.
    cdef io_uring_sqe *sqe = acquire_sqe(ring)
    ar_prep_cancel(sqe, op_user_data(target), 0)
    return 0
