# Listening sockets: a server's accept loop on the ring.
#
# One accept stays armed per listening socket (through its fixed-file slot
# when it has one); each completion is a new connection, handed to asyncio's
# own _accept_connection2 as the stock loop does.  The accept is re-armed
# when a completion ends it (no IORING_CQE_F_MORE).
#
# The accept is single-shot unless AIORING_ACCEPT_MULTISHOT=1.  io_uring
# waits for a connection with an exclusive wait entry on the listening
# socket, and the kernel wakes the first exclusive waiter in its queue.  A
# multishot accept's entry stays where it is, at the head, so of several
# processes sharing the socket (gunicorn -w N, uvicorn --workers N, any
# fork-after-listen server) the first to arm took every connection, even
# while busy.  A single-shot accept's entry goes away with its completion
# and the re-armed one queues behind the other processes': they take turns,
# and a process only takes a connection when its loop comes round, as with
# the stock loop's accept on readiness.
# When descriptors run out (EMFILE and friends) the listener reports it to
# the exception handler and tries again ACCEPT_RETRY_DELAY later, as asyncio.

cdef extern from "errno.h":
    enum: ECONNABORTED
    enum: EMFILE
    enum: ENFILE
    enum: ENOMEM

cdef object _TransportSocket = _trsock.TransportSocket
cdef double ACCEPT_RETRY_DELAY = _constants.ACCEPT_RETRY_DELAY
cdef tuple _OUT_OF_RESOURCES = (-EMFILE, -ENFILE, -ENOBUFS, -ENOMEM)


cdef class Listener:
    cdef:
        BaseLoop loop
        object sock
        int fd
        int slot                # fixed-file slot, or -1
        tuple accept_args       # what _accept_connection2 takes after conn, extra
        object server
        AcceptOp op             # in flight, or None
        object retry            # TimerHandle of a retry after EMFILE, or None
        bint stopped

    cdef start(self):
        self.slot = self.loop.files.alloc(self.fd) if self.loop.ring_live else -1
        self._arm()

    def _arm(self):
        cdef AcceptOp op
        self.retry = None
        if self.stopped or self.op is not None or not self.loop.ring_live:
            return
        op = AcceptOp.__new__(AcceptOp)
        op.listener = self
        prep_accept(&self.loop.ring, op, self.fd, self.slot, self.loop.accept_multishot)
        self.loop._track_user(op)
        self.op = op

    cdef stop(self):
        # Synchronous, as asyncio's: once server.close() returns, the socket
        # is closed and its port free.
        self.stopped = True
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.op is not None:
            self.loop._cancel_now(self.op)
        if self.slot >= 0:
            # the accept resolved the file when it was issued and holds its
            # own reference: clearing the slot now cannot affect it
            self.loop.files.release(self.slot)
            self.slot = -1
        self.sock.close()

    cdef _accepted(self, int res, bint final):
        if final:
            self.op = None
        if self.stopped or self.loop._closed:
            if res >= 0:
                c_close(res)        # came in after close(): not ours to serve
            return
        if res >= 0:
            try:
                self._serve(res)
            finally:
                if final and self.retry is None:
                    self._arm()     # keep accepting whatever became of this one
            return
        elif res in _OUT_OF_RESOURCES:
            exc = _oserror(res)
            self.loop.call_exception_handler({
                'message': 'socket.accept() out of system resource',
                'exception': exc,
                'socket': _TransportSocket(self.sock),
            })
            if self.op is not None:
                self.loop._cancel_op(self.op)
            self.retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._arm)
            return
        elif res == -EINVAL and self.loop.accept_multishot:
            self.loop.accept_multishot = False     # kernel older than 5.19
        elif res != -ECONNABORTED and res != -ECANCELED and res != -EINTR and res != -EAGAIN:
            self.loop.call_exception_handler({
                'message': 'socket.accept() failed',
                'exception': _oserror(res),
                'socket': _TransportSocket(self.sock),
            })
        if final and self.retry is None:
            self._arm()

    cdef _serve(self, int fd):
        try:
            conn = socket.socket(fileno=fd)
        except BaseException:
            c_close(fd)
            raise
        conn.setblocking(False)
        try:
            addr = conn.getpeername()
        except OSError:
            addr = None         # reset by the peer already: the protocol sees it
        if self.loop._debug:
            _logger.debug("%r got a new connection from %r: %r", self.server, addr, conn)
        protocol_factory, sslcontext, server, handshake_timeout, shutdown_timeout = self.accept_args
        self.loop.create_task(self.loop._accept_connection2(
            protocol_factory, conn, {'peername': addr}, sslcontext, server,
            handshake_timeout, shutdown_timeout))
