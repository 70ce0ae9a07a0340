# Operation records: one per io_uring request.  They prepare the SQE (the
# only code outside the ring layer that touches SQE fields) and receive the
# request's completions.  A cancel never frees an operation; its final
# completion does (BaseLoop._process_completions drops the loop's reference).

from cpython.bytes cimport PyBytes_FromStringAndSize

cdef enum:
    READ_WAKEUP = 1       # the cross-thread wake-up eventfd
    READ_SIGNALS = 2      # the signal wake-up socket


cdef class Operation:
    cdef complete(self, int res, unsigned flags):
        pass


cdef inline uint64_t op_user_data(Operation op):
    return <uint64_t><uintptr_t><PyObject *>op


cdef class InternalRead(Operation):
    cdef complete(self, int res, unsigned flags):
        if self.loop != NULL:
            (<BaseLoop>self.loop)._internal_read_done(self, res)


cdef class RecvOp(Operation):
    cdef complete(self, int res, unsigned flags):
        transport = self.transport
        data = None
        if res > 0:
            data = PyBytes_FromStringAndSize(<char *>self.buf, res)
        self.transport = None
        self.buf = None             # the kernel is done with it
        if self.loop != NULL:
            transport._recv_done(data, res)


cdef class PollOp(Operation):
    cdef complete(self, int res, unsigned flags):
        if self.loop != NULL:
            (<BaseLoop>self.loop)._poll_done(self, res)


cdef int prep_read(ar_ring *ring, Operation op, int fd, void *buf, unsigned n) except -1:
    cdef io_uring_sqe *sqe = ar_get_sqe(ring)
    if sqe == NULL:
        raise RuntimeError('io_uring submission queue is full and could not be flushed')
    # offset -1: "current position", the only one a stream descriptor has
    ar_prep_read(sqe, fd, buf, n, <uint64_t>-1, op_user_data(op))
    return 0


cdef int prep_poll(ar_ring *ring, Operation op, int fd, unsigned mask) except -1:
    cdef io_uring_sqe *sqe = ar_get_sqe(ring)
    if sqe == NULL:
        raise RuntimeError('io_uring submission queue is full and could not be flushed')
    ar_prep_poll_add(sqe, fd, mask, 0, op_user_data(op))
    return 0


cdef int prep_recv(ar_ring *ring, Operation op, int fd, int slot, void *buf, unsigned n) except -1:
    # through the fixed-file slot when the socket has one
    cdef io_uring_sqe *sqe = ar_get_sqe(ring)
    if sqe == NULL:
        raise RuntimeError('io_uring submission queue is full and could not be flushed')
    if slot >= 0:
        ar_prep_recv(sqe, slot, buf, n, op_user_data(op))
        sqe.flags |= IOSQE_FIXED_FILE
    else:
        ar_prep_recv(sqe, fd, buf, n, op_user_data(op))
    return 0


cdef int prep_cancel(ar_ring *ring, Operation target) except -1:
    # Ask the kernel to cancel `target`; the cancel's own CQE carries
    # user_data 0, which the loop ignores.  `target` stays alive until its
    # own final completion arrives.
    cdef io_uring_sqe *sqe = ar_get_sqe(ring)
    if sqe == NULL:
        raise RuntimeError('io_uring submission queue is full and could not be flushed')
    ar_prep_cancel(sqe, op_user_data(target), 0)
    return 0
