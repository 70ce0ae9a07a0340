# The files of the datagram and pipe transports (datagram.pxi, pipes.pxi) as
# the ring uses them.
#
# RingFile: a file's fixed-file slot (sockets), its one request in flight at
# a time, and its close, which waits for the request's final completion:
# cancel, final completion, slot cleared, file closed, in that order.  A
# file that the ring both reads and writes (a datagram socket: its
# DatagramSocket, datagram.pxi, adds the sends) has a request per direction;
# busy() and cancel_all() then cover both, so that the close waits for both.
#
# RingReader: where asyncio registers a reader and reads once the file is
# readable, one ring request (IORING_OP_RECVMSG for a datagram socket,
# IORING_OP_READ for a pipe or character device) stays armed while the
# transport reads, and its completion is the read, handed to the protocol
# in a queued callback as asyncio's reader callback would be.  Pausing or closing
# cancels it; what it took anyway is kept for resume_reading() (or dropped
# after close(), as asyncio would never have read it).

cdef class RingFile:
    # (attributes in loop.pxd)

    cdef cancel(self):
        if self.op.in_flight:
            self.loop._cancel_op(self.op)

    cdef bint busy(self):
        # a request the kernel has not finished with (overridden by a file
        # with more than one)
        return self.op.in_flight

    cdef cancel_all(self):
        self.cancel()

    cdef release(self, file):
        # file: the transport's socket or pipe (None: handed over before)
        cdef int slot
        if file is not None:
            self.closed_file = file
        if self.closed_file is None:
            return
        if self.busy():
            self.cancel_all()
            if not self.counted_release:
                # the loop finishes it before it stops running
                self.counted_release = True
                self.loop.pending_releases += 1
            return
        file, self.closed_file = self.closed_file, None
        if self.counted_release:
            self.counted_release = False
            self.loop.pending_releases -= 1
        slot, self.slot = self.slot, -1
        if slot >= 0:
            self.loop._release_slot(slot)
        file.close()

    cdef release_unclosed(self):
        # the transport was collected without close(): nothing in flight (a
        # request would have kept it alive)
        if self.slot >= 0:
            self.loop._release_slot(self.slot)
            self.slot = -1


cdef class RingReader(RingFile):

    @staticmethod
    cdef RingReader new(BaseLoop loop, object file, Py_ssize_t size, bint datagrams):
        cdef RingReader reader = RingReader.__new__(RingReader)
        reader.setup(loop, file, size, datagrams)
        return reader

    cdef int setup(self, BaseLoop loop, object file, Py_ssize_t size, bint datagrams) except -1:
        cdef ReadOp op = ReadOp.__new__(ReadOp)
        op.size = size
        op.buf = <char *>PyMem_Malloc(size)
        if op.buf == NULL:
            raise MemoryError
        self.loop = loop
        self.op = op
        self.fd = file.fileno()
        self.slot = -1
        self.datagrams = datagrams
        return 0

    cdef arm(self, transport):
        cdef ReadOp op = <ReadOp>self.op
        if op.in_flight or self.delivering or self.closed_file is not None:
            return
        if self.datagrams:
            op.iov.iov_base = op.buf
            op.iov.iov_len = op.size
            memset(&op.msg, 0, sizeof(op.msg))
            op.msg.msg_name = &op.name
            op.msg.msg_namelen = sizeof(op.name)
            op.msg.msg_iov = &op.iov
            op.msg.msg_iovlen = 1
            prep_recvmsg(&self.loop.ring, op, self.fd, self.slot, &op.msg)
        else:
            prep_read(&self.loop.ring, op, self.fd, self.slot, op.buf, <unsigned>op.size)
        op.transport = transport
        self.loop._track_user(op)

    cdef _done(self, transport, int res):
        if self.closed_file is not None:
            self.stash = None
            self.release(None)
        elif not self.loop._closed:
            # handed over in a callback queued behind those already ready,
            # where asyncio's reader callback would run (the request is
            # re-armed after it, so op.buf holds the data until then)
            self.delivering = True
            self.loop._call_soon(_ring_read_ready, (transport, self, res), None)

    cdef keep(self, object item):
        if self.stash is None:
            self.stash = []
        self.stash.append(item)


def _ring_read_ready(transport, RingReader reader, int res):
    reader.delivering = False
    if reader.closed_file is not None or reader.loop._closed or transport._closing:
        return      # closed meanwhile: asyncio would not have read it
    if reader.datagrams:
        _datagram_read(transport, reader, res)
    else:
        _pipe_read(transport, reader, res)
