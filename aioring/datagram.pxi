# Datagram transports (UDP and Unix datagram sockets).
#
# asyncio's own _SelectorDatagramTransport, with its I/O moved onto the ring
# (ringfile.pxi).  DatagramSocket is the transport's socket as the ring uses
# it, through its fixed-file slot:
#
# - receiving: RingReader's IORING_OP_RECVMSG stays armed while the transport
#   reads, and its completion hands the datagram, or the error (an ICMP port
#   unreachable, ...), to the protocol;
# - sending: sendto() tries the socket at once, as the stock loop does (its
#   errors reach error_received() before sendto() returns).  What the socket
#   refuses, and whatever is sent while anything waits, is queued in
#   asyncio's own buffer (a deque of (bytes, address), counted in
#   _buffer_size as the running Python counts it) and sent in order by one
#   IORING_OP_SENDMSG at a time, through the socket's slot, to the address
#   sock.pxi's _sockaddr_from_py builds (none for a connected socket).  It
#   waits for room in the kernel, or, where the kernel cannot retry it, in
#   a ring poll (see DatagramSocket).  Its completion is handled where
#   asyncio's writer callback would run: the datagram leaves the queue, an
#   error goes to error_received() (the datagram is dropped, as asyncio
#   drops it), and resume_writing(), the next datagram or the
#   connection_lost() of a close() that waited for the queue follow as in
#   asyncio's _sendto_ready().  An address only the socket module builds (a
#   host name, anything not numeric, anything malformed) is left to
#   asyncio's own _sendto_ready() after a ring poll, so that its resolution
#   and its errors are the stock ones.
#
# The socket is closed only once neither request is in flight (RingFile's
# release, with DatagramSocket's busy() and cancel_all()); abort() cancels
# the send, close() lets the queue go out first.

cdef object _StockDatagramTransport = _selector_events._SelectorDatagramTransport


class _Accepts:
    # a socket and a loop that take everything and do nothing (_stock_queueing)
    def send(self, data):
        pass

    def sendto(self, data, addr):
        pass

    def _add_writer(self, *args):
        pass

    def _remove_writer(self, *args):
        pass


cdef tuple _stock_queueing():
    # How the running Python's transport queues datagrams, measured on its
    # own sendto() and _sendto_ready() (with a socket and loop that do
    # nothing), since versions differ and get_write_buffer_size() must be
    # the stock one at every point: (bytes counted per queued datagram
    # beyond len(data), bytes taken off per sent datagram beyond len(data),
    # whether empty datagrams are sent).  3.11 and 3.12: 0, 0, no; 3.13.0:
    # 8 (a UDP header), 0, yes.
    t = _StockDatagramTransport.__new__(_StockDatagramTransport)
    t._sock = None
    try:
        t._sock = t._loop = _Accepts()
        t._sock_fd = -1
        t._protocol = None
        t._extra = {'peername': None}
        t._address = None
        t._conn_lost = 0
        t._closing = False
        t._protocol_paused = False
        t._high_water = 1 << 60
        t._low_water = 0
        t._buffer = collections.deque([(b'.', None)])   # not empty: sendto() queues
        t._buffer_size = 0
        t.sendto(b'12345', None)
        queued = t._buffer_size - 5
        t.sendto(b'', None)
        empty = len(t._buffer) == 3
        t._buffer = collections.deque([(b'12345', None)])
        t._buffer_size = 100
        t._sendto_ready()
        sent = 100 - t._buffer_size - 5
        return queued, sent, empty
    except Exception:
        header = getattr(_StockDatagramTransport, '_header_size', 0)
        return header, header, sys.version_info >= (3, 13)
    finally:
        t._sock = None          # (asyncio's __del__ closes a socket it still has)


cdef Py_ssize_t _QUEUED_HEADER, _SENT_HEADER
cdef bint _SENDS_EMPTY
_QUEUED_HEADER, _SENT_HEADER, _SENDS_EMPTY = _stock_queueing()


cdef _datagram_read(transport, RingReader reader, int res):
    # the completion of the transport's recvmsg
    cdef ReadOp op = <ReadOp>reader.op
    if transport._closing:
        return      # asyncio would not have read it
    if res >= 0:
        item = (PyBytes_FromStringAndSize(op.buf, res),
                _sockaddr_to_py(&op.name, op.msg.msg_namelen))
        if transport._paused or reader.stash:
            reader.keep(item)
            return
        _call_protocol(transport, 'datagram_received', item)
    elif res != -ECANCELED and res != -EAGAIN:
        # (cancelled: by pause_reading(), maybe resumed since; EAGAIN:
        # nothing received after all, see ar_prep_recv)
        _call_protocol(transport, 'error_received', (_oserror(res),))
    if transport.is_reading() and not reader.stash:
        reader.arm(transport)


cdef _call_protocol(transport, str method, tuple args, str callback='_read_ready'):
    # asyncio calls the protocol from a reader (or writer) callback: what it
    # raises goes to the exception handler as that callback's error, and
    # reading (sending) goes on
    try:
        getattr(transport._protocol, method)(*args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        transport._loop.call_exception_handler({
            'message': f'Exception in callback {type(transport).__name__}.{callback}()',
            'exception': exc,
            'transport': transport,
            'protocol': transport._protocol,
        })


cdef class DatagramSocket(RingReader):
    # (attributes in loop.pxd)
    #
    # A UDP socket's send waits in the kernel when the socket is full (the
    # kernel arms its internal poll and retries).  Other datagram sockets
    # send with MSG_DONTWAIT, and on EAGAIN the same request record polls
    # the ring for room and then sends again: an AF_UNIX datagram socket
    # copies the data out of the message before it finds the peer's queue
    # full, so the kernel's own retry would send an empty datagram.  Either
    # kind may still complete with EAGAIN (the kernel stops retrying after
    # a while); the poll covers that too.

    @staticmethod
    cdef DatagramSocket create(BaseLoop loop, object sock, Py_ssize_t size):
        cdef DatagramSocket dsock = DatagramSocket.__new__(DatagramSocket)
        dsock.setup(loop, sock, size, True)
        dsock.send_op = SendToOp.__new__(SendToOp)
        dsock.family = sock.family
        dsock.dontwait = dsock.family != _AF_INET and dsock.family != _AF_INET6
        return dsock

    cdef bint busy(self):
        return self.op.in_flight or self.send_op.in_flight

    cdef cancel_all(self):
        self.cancel()
        self.cancel_send()

    cdef cancel_send(self):
        if self.send_op.in_flight:
            self.loop._cancel_op(self.send_op)

    cdef submit(self, transport):
        # Send the datagram at the head of the transport's queue, unless one
        # is on its way already; it stays queued (and counted) until its
        # completion is handled (_ring_sent).
        cdef SendToOp op = self.send_op
        cdef int namelen = 0
        cdef bytes data
        if (op.in_flight or self.send_delivering or self.closed_file is not None
                or transport._sock is None or not transport._buffer or self.loop._closed):
            return
        if self.fd in self.loop.writers:
            return      # asyncio's _sendto_ready() has the queue until it empties it
        item = transport._buffer[0]
        if not self.connected:
            namelen = _sockaddr_from_py(self.family, item[1], &op.name)
            if namelen < 0:
                # an address only the socket module builds (its name
                # resolution, its errors): asyncio's own sendto() after a
                # ring poll, until the queue is empty
                self.loop._add_writer(self.fd, transport._sendto_ready)
                return
        data = <bytes>item[0]
        op.iov.iov_base = PyBytes_AS_STRING(data)
        op.iov.iov_len = PyBytes_GET_SIZE(data)
        memset(&op.msg, 0, sizeof(op.msg))
        if not self.connected:
            op.msg.msg_name = &op.name
            op.msg.msg_namelen = namelen
        op.msg.msg_iov = &op.iov
        op.msg.msg_iovlen = 1
        prep_sendmsg(&self.loop.ring, op, self.fd, self.slot, &op.msg, self.dontwait)
        op.keep = item
        op.transport = transport
        self.loop._track_user(op)

    cdef _wait_for_room(self, transport):
        # the socket was full: poll for room, then send again
        cdef SendToOp op = self.send_op
        prep_poll(&self.loop.ring, op, self.fd, POLLOUT, self.slot)
        self.polling = True
        op.transport = transport
        self.loop._track_user(op)

    cdef _sent(self, transport, int res, object item):
        # the final completion of the send of `item`, or of the poll for room
        cdef bint polled = self.polling
        self.polling = False
        if self.closed_file is not None:
            self.release(None)
        elif self.loop._closed:
            pass
        elif polled:
            self.submit(transport)  # (an error of the poll's is the send's to report)
        elif res == -EAGAIN:
            self._wait_for_room(transport)
        else:
            # handed over in a callback queued behind those already ready,
            # where asyncio's writer callback would run (the next send waits
            # for it: the datagram leaves the queue there)
            self.send_delivering = True
            self.loop._call_soon(_ring_sent, (transport, self, res, item), None)


def _ring_sent(transport, DatagramSocket dsock, int res, tuple item):
    dsock.send_delivering = False
    if transport._sock is None or dsock.loop._closed:
        return      # connection_lost() came first
    queue = transport._buffer
    if not queue or queue[0] is not item or res == -ECANCELED:
        # abort() dropped it (what was queued since goes on)
        dsock.submit(transport)
        return
    queue.popleft()
    transport._buffer_size -= PyBytes_GET_SIZE(item[0]) + _SENT_HEADER
    if res < 0:
        # as asyncio's _sendto_ready(): the datagram is dropped, the protocol
        # told, and the queue goes on at the writer's next callback
        dsock.loop._call_soon(_send_more, (transport, dsock), None)
        _call_protocol(transport, 'error_received', (_oserror(res),), '_sendto_ready')
        return
    _send_more(transport, dsock)


def _send_more(transport, DatagramSocket dsock):
    # what asyncio's _sendto_ready() does once the socket has taken what it
    # could: resume_writing(), then the next datagram, or the connection_lost()
    # that a close() left waiting for the queue
    if transport._sock is None:
        return
    if transport._conn_lost:
        # abort(), or close() with nothing queued: asyncio's writer is gone
        # (what was queued since still goes, until connection_lost())
        dsock.submit(transport)
        return
    transport._maybe_resume_protocol()      # (may queue more)
    if transport._buffer:
        dsock.submit(transport)
    elif transport._closing and transport._sock is not None:
        transport._call_connection_lost(None)   # close() waited for the queue


class _DatagramTransport(_StockDatagramTransport):
    """A UDP or Unix datagram transport of an aioring loop."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        cdef DatagramSocket dsock = DatagramSocket.create(loop, sock, self.max_size)
        # one object for both directions: ReadOp completions find it as
        # _reader, SendToOp completions as _writer
        self._reader = self._writer = dsock
        # asyncio's: reading starts one callback after connection_made(),
        # through _add_reader() below
        super().__init__(loop, sock, protocol, address, waiter, extra)
        dsock.slot = loop._fixed_slot(dsock.fd)
        dsock.connected = bool(self._extra['peername'])     # as asyncio's sends decide

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        if self._loop is not None and not self._loop.is_closed():
            reading = (<RingReader>self._reader).op.in_flight
            info.append('read=polling' if reading else 'read=idle')
            state = 'polling' if self._buffer else 'idle'
            info.append(f'write=<{state}, bufsize={self.get_write_buffer_size()}>')
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            (<RingReader>self._reader).release_unclosed()
            self._sock.close()

    def _add_reader(self, fd, callback, *args):
        # the only reader asyncio's transport adds is its _read_ready
        if self.is_reading():
            (<RingReader>self._reader).arm(self)

    def pause_reading(self):
        if not self.is_reading():
            return
        super().pause_reading()
        (<RingReader>self._reader).cancel()

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        if not (<RingReader>self._reader).stash:
            super().resume_reading()
            return
        self._paused = False
        self._loop.call_soon(self._deliver_stash)
        if self._loop.get_debug():
            _logger.debug("%r resumes reading", self)

    def _deliver_stash(self):
        # what came while paused, then the socket again
        cdef RingReader reader = self._reader
        while reader.stash and self.is_reading():
            _call_protocol(self, 'datagram_received', reader.stash.pop(0))
        if not reader.stash:
            reader.stash = None
            if self.is_reading():
                reader.arm(self)

    def sendto(self, data, addr=None):
        # asyncio's, except that a datagram that must wait is sent by the
        # ring (DatagramSocket.submit) rather than after a writer poll
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if not data and not _SENDS_EMPTY:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(
                    f'Invalid address: must be None or {self._address}')
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            return
        if not self._buffer:
            # try the socket at once, as asyncio does
            try:
                if self._extra['peername']:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                (<BaseLoop>self._loop)._check_closed_fast()    # as asyncio's _add_writer()
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(
                    exc, 'Fatal write error on datagram transport')
                return
        # bytes: what the kernel reads must not change (and it is asyncio's item)
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + _QUEUED_HEADER
        (<DatagramSocket>self._writer).submit(self)
        self._maybe_pause_protocol()

    def close(self):
        # asyncio's: the queue still goes out, then connection_lost()
        super().close()
        (<RingReader>self._reader).cancel()

    def _force_close(self, exc):
        super()._force_close(exc)
        (<RingReader>self._reader).cancel()
        if not self._buffer:
            # asyncio dropped the queue: the datagram on its way too
            (<DatagramSocket>self._writer).cancel_send()

    def _call_connection_lost(self, exc):
        # asyncio's, except that the socket is closed only once the kernel
        # has let go of it (its receive and its send)
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            self._protocol = None
            self._loop = None
            (<RingReader>self._reader).release(sock)
