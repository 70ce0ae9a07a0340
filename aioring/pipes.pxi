# Pipe transports: connect_read_pipe() and connect_write_pipe() (pipes,
# FIFOs, sockets, ptys and other character devices, as asyncio allows), and
# so the pipes of subprocesses.
#
# The read side is asyncio's _UnixReadPipeTransport with its reads moved
# onto the ring (ringfile.pxi): one IORING_OP_READ stays armed while the
# transport reads.  The write side is asyncio's _UnixWritePipeTransport with
# its waiting moved onto the ring: write() tries the pipe at once, as the
# stock loop does, and what the pipe refuses is queued and written by one
# IORING_OP_WRITE / WRITEV at a time (PipeWriter), which waits in the kernel
# for room.  A file the kernel cannot wait on answers EAGAIN; such a
# transport goes back to asyncio's own reads and writes after ring polls.

cdef object _StockReadPipeTransport = _unix_events._UnixReadPipeTransport
cdef object _StockWritePipeTransport = _unix_events._UnixWritePipeTransport


cdef _pipe_read(transport, RingReader reader, int res):
    # the completion of the transport's read: res bytes, 0 at EOF, or -errno
    if transport._closing:
        return      # asyncio would not have read it
    if res >= 0:
        chunk = PyBytes_FromStringAndSize((<ReadOp>reader.op).buf, res)
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
        if self._pipe is not None and self._loop.is_closed():
            info.append('open')     # (as asyncio's, whose closed loop has no selector)
        elif self._pipe is not None:
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
            if pipe is None:
                # called again (asyncio's write_eof() and abort() both
                # schedule it): asyncio's finally raises this from its
                # pipe.close(), and the exception handler hears of it
                raise AttributeError("'NoneType' object has no attribute 'close'")
            self._protocol = None
            self._loop = None
            (<RingReader>self._reader).release(pipe)


cdef class PipeWriter(RingFile):
    # (attributes in loop.pxd)

    @staticmethod
    cdef PipeWriter new(BaseLoop loop, int fd):
        cdef PipeWriter writer = PipeWriter.__new__(PipeWriter)
        writer.loop = loop
        writer.op = WriteOp.__new__(WriteOp)
        writer.fd = fd
        writer.slot = -1
        writer.chunks = []
        return writer

    cdef submit(self, transport):
        cdef WriteOp op = <WriteOp>self.op
        if op.in_flight or not self.chunks or self.closed_file is not None:
            return
        if self.polled:
            self.loop._add_writer(self.fd, transport._write_ready)
            return
        prep_write_chunks(&self.loop.ring, op, self.fd, self.slot, self.chunks, self.offset)
        op.transport = transport
        self.loop._track_user(op)

    cdef _done(self, transport, int res):
        if self.closed_file is not None:
            self.release(None)
            return
        if res == -ECANCELED or self.loop._closed or not self.chunks:
            return      # (aborted)
        if res == -EAGAIN:
            # not a file the ring can wait on: asyncio's writes after polls
            self.polled = True
            self.submit(transport)
            return
        if res < 0:
            # as asyncio's _write_ready() on an error
            self.clear()
            transport._conn_lost += 1
            transport._fatal_error(_oserror(res), 'Fatal write error on pipe transport')
            return
        self.size -= res
        if self.size == 0:
            self.chunks.clear()
            self.offset = 0
            _pipe_written(transport)
        else:
            self.offset = _drop_written(self.chunks, self.offset, res)
            self.submit(transport)

    cdef clear(self):
        self.chunks.clear()
        self.offset = 0
        self.size = 0
        self.cancel()


cdef _pipe_written(transport):
    # all of the queue went out: as asyncio's _write_ready() then
    transport._maybe_resume_protocol()      # may write more
    if transport._writer.size == 0 and transport._closing:
        transport._loop._remove_reader(transport._fileno)
        transport._call_connection_lost(None)


class _WritePipeTransport(_StockWritePipeTransport):
    """The write end of a pipe (or pty, FIFO, socket) on an aioring loop.

    asyncio's buffer (a bytearray) is replaced by the PipeWriter's queue of
    chunks, which the kernel reads while the transport goes on queueing."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        self._writer = None
        # (refuses what is not a pipe, socket or character device; watches
        # a pipe's or socket's read side for the peer's close)
        super().__init__(loop, pipe, protocol, waiter, extra)
        writer = PipeWriter.new(loop, self._fileno)
        if stat.S_ISSOCK(os.fstat(self._fileno).st_mode):
            writer.slot = loop._fixed_slot(self._fileno)
        self._writer = writer

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._fileno}')
        if self._pipe is not None and self._loop.is_closed():
            info.append('open')
        elif self._pipe is not None:
            info.append('polling' if self.get_write_buffer_size() else 'idle')
            info.append(f'bufsize={self.get_write_buffer_size()}')
        else:
            info.append('closed')
        return '<{}>'.format(' '.join(info))

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._writer is not None:
                (<PipeWriter>self._writer).release_unclosed()
            self._pipe.close()

    def get_write_buffer_size(self):
        return 0 if self._writer is None else (<PipeWriter>self._writer).size

    def _read_ready(self):
        # the read end was closed
        if self._loop.get_debug():
            _logger.info("%r was closed by peer", self)
        if self.get_write_buffer_size():
            self._close(BrokenPipeError())
        else:
            self._close()

    def write(self, data):
        cdef PipeWriter writer = self._writer
        assert isinstance(data, (bytes, bytearray, memoryview)), repr(data)
        if isinstance(data, bytearray):
            data = memoryview(data)
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _logger.warning('pipe closed by peer or '
                                'os.write(pipe, data) raised exception.')
            self._conn_lost += 1
            return
        if not writer.size:
            # try the pipe at once, as asyncio does
            try:
                n = os.write(self._fileno, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._conn_lost += 1
                self._fatal_error(exc, 'Fatal write error on pipe transport')
                return
            if n == len(data):
                return
            elif n > 0:
                data = memoryview(data)[n:]
        chunk = bytes(data)     # the caller may change its buffer later
        writer.chunks.append(chunk)
        writer.size += len(chunk)
        writer.submit(self)
        self._maybe_pause_protocol()

    def _write_ready(self):
        # a polled file (see PipeWriter._done): writable again
        cdef PipeWriter writer = self._writer
        try:
            n = os.write(self._fileno, memoryview(writer.chunks[0])[writer.offset:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            writer.clear()
            self._conn_lost += 1
            self._loop._remove_writer(self._fileno)
            self._fatal_error(exc, 'Fatal write error on pipe transport')
            return
        writer.size -= n
        writer.offset = _drop_written(writer.chunks, writer.offset, n)
        if writer.size == 0:
            self._loop._remove_writer(self._fileno)
            _pipe_written(self)

    def write_eof(self):
        if self._closing:
            return
        assert self._pipe
        self._closing = True
        if not self.get_write_buffer_size():
            self._loop._remove_reader(self._fileno)
            self._loop.call_soon(self._call_connection_lost, None)

    def _close(self, exc=None):
        self._closing = True
        if self.get_write_buffer_size():
            self._loop._remove_writer(self._fileno)
            (<PipeWriter>self._writer).clear()
        self._loop._remove_reader(self._fileno)
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        # asyncio's, except that the pipe is closed only once the kernel has
        # let go of it
        try:
            self._protocol.connection_lost(exc)
        finally:
            pipe, self._pipe = self._pipe, None
            if pipe is None:
                # called again (asyncio's write_eof() and abort() both
                # schedule it): asyncio's finally raises this from its
                # pipe.close(), and the exception handler hears of it
                raise AttributeError("'NoneType' object has no attribute 'close'")
            self._protocol = None
            self._loop = None
            (<PipeWriter>self._writer).release(pipe)
