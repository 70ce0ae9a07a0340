# Datagram transports (UDP and Unix datagram sockets).
#
# asyncio's own _SelectorDatagramTransport, with its receiving moved onto the
# ring (ringfile.pxi): one IORING_OP_RECVMSG through the socket's
# fixed-file slot stays armed while the transport reads, and its completion
# hands the datagram, or the error (an ICMP port unreachable, ...), to the
# protocol.  Sending is asyncio's: sendto() tries the socket at once, as the
# stock loop does (its errors reach error_received() before sendto()
# returns), and what the socket refuses waits, in order, for a ring poll
# (_add_writer).

cdef object _StockDatagramTransport = _selector_events._SelectorDatagramTransport


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
    elif res != -ECANCELED:     # (cancelled: by pause_reading(), maybe resumed since)
        _call_protocol(transport, 'error_received', (_oserror(res),))
    if transport.is_reading() and not reader.stash:
        reader.arm(transport)


cdef _call_protocol(transport, str method, tuple args):
    # asyncio calls the protocol from a reader callback: what it raises goes
    # to the exception handler as that callback's error, and reading goes on
    try:
        getattr(transport._protocol, method)(*args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        transport._loop.call_exception_handler({
            'message': f'Exception in callback {type(transport).__name__}._read_ready()',
            'exception': exc,
            'transport': transport,
            'protocol': transport._protocol,
        })


class _DatagramTransport(_StockDatagramTransport):
    """A UDP or Unix datagram transport of an aioring loop."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        cdef RingReader reader = RingReader.new(loop, sock, self.max_size, True)
        self._reader = reader
        # asyncio's: reading starts one callback after connection_made(),
        # through _add_reader() below
        super().__init__(loop, sock, protocol, address, waiter, extra)
        reader.slot = loop._fixed_slot(reader.fd)

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

    def close(self):
        super().close()
        (<RingReader>self._reader).cancel()

    def _force_close(self, exc):
        super()._force_close(exc)
        (<RingReader>self._reader).cancel()

    def _call_connection_lost(self, exc):
        # asyncio's, except that the socket is closed only once the kernel
        # has let go of it
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            self._protocol = None
            self._loop = None
            (<RingReader>self._reader).release(sock)
