# Pipe transports: connect_read_pipe() and connect_write_pipe() (pipes,
# FIFOs, sockets, ptys and other character devices, as asyncio allows), and
# so the pipes of subprocesses.
#
# The read side is asyncio's _UnixReadPipeTransport with its reads moved
# onto the ring (ringreader.pxi): one IORING_OP_READ stays armed while the
# transport reads.  A file the kernel cannot wait on without a worker thread
# answers EAGAIN; such a transport goes back to asyncio's own reads after a
# ring poll.  The write side is asyncio's _UnixWritePipeTransport: write()
# tries the pipe at once and what it refuses waits for a ring poll.

cdef object _StockReadPipeTransport = _unix_events._UnixReadPipeTransport
cdef object _StockWritePipeTransport = _unix_events._UnixWritePipeTransport


cdef _pipe_read(transport, RingReader reader, int res):
    # the completion of the transport's read: res bytes, 0 at EOF, or -errno
    if transport._closing:
        return      # asyncio would not have read it
    if res >= 0:
        chunk = PyBytes_FromStringAndSize(reader.op.buf, res)
        if transport._paused or reader.stash:
            reader.keep(chunk)
            return
        _pipe_deliver(transport, chunk)
    elif res == -EAGAIN:
        # not a file the ring can wait on: asyncio's reads after ring polls
        transport._polled = True
        transport._add_reader(transport._fileno, transport._read_ready)
        return
    elif res != -ECANCELED:     # (cancelled: by pause_reading(), maybe resumed since)
        transport._fatal_error(_oserror(res), 'Fatal read error on pipe transport')
        return
    if transport.is_reading() and not reader.stash:
        reader.arm(transport)


cdef _pipe_deliver(transport, bytes chunk):
    if chunk:
        _call_protocol(transport, 'data_received', (chunk,))
        return
    # end of file, as asyncio's _read_ready() handles it
    if transport._loop.get_debug():
        _logger.info("%r was closed by peer", transport)
    transport._closing = True
    transport._loop.call_soon(transport._protocol.eof_received)
    transport._loop.call_soon(transport._call_connection_lost, None)


class _ReadPipeTransport(_StockReadPipeTransport):
    """The read end of a pipe (or pty, FIFO, socket) on an aioring loop."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._reader = None
        self._polled = False        # reads go through asyncio's _read_ready
        # (refuses what is not a pipe, socket or character device)
        super().__init__(loop, pipe, protocol, waiter, extra)
        reader = RingReader.new(loop, pipe, self.max_size, False)
        if stat.S_ISSOCK(os.fstat(reader.fd).st_mode):
            reader.slot = loop._fixed_slot(reader.fd)
        self._reader = reader

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._fileno}')
        if self._pipe is not None:
            reading = (<RingReader>self._reader).op.in_flight or (
                self._polled and self._fileno in (<BaseLoop>self._loop).readers)
            info.append('polling' if reading else 'idle')
        else:
            info.append('closed')
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._reader is not None:
                (<RingReader>self._reader).release_unclosed()
            self._pipe.close()

    def _add_reader(self, fd, callback):
        # the only reader asyncio's transport adds is its _read_ready
        if not self.is_reading():
            return
        if self._polled:
            self._loop._add_reader(fd, callback)
        else:
            (<RingReader>self._reader).arm(self)

    def pause_reading(self):
        if not self.is_reading():
            return
        super().pause_reading()
        (<RingReader>self._reader).cancel()

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        if self._polled:
            super().resume_reading()
            return
        self._paused = False
        if (<RingReader>self._reader).stash:
            self._loop.call_soon(self._deliver_stash)
        else:
            (<RingReader>self._reader).arm(self)
        if self._loop.get_debug():
            _logger.debug("%r resumes reading", self)

    def _deliver_stash(self):
        # what came while paused (an EOF last), then the pipe again
        cdef RingReader reader = self._reader
        while reader.stash and self.is_reading():
            _pipe_deliver(self, reader.stash.pop(0))
        if not reader.stash:
            reader.stash = None
            if self.is_reading():
                self._add_reader(self._fileno, self._read_ready)

    def _close(self, exc):
        super()._close(exc)
        (<RingReader>self._reader).cancel()

    def _call_connection_lost(self, exc):
        # asyncio's, except that the pipe is closed only once the kernel has
        # let go of it
        try:
            self._protocol.connection_lost(exc)
        finally:
            pipe, self._pipe = self._pipe, None
            self._protocol = None
            self._loop = None
            (<RingReader>self._reader).release(pipe)
