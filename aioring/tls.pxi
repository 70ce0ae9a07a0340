# TLS over the stream transport.
#
# asyncio's SSLProtocol does TLS in memory (two ssl.MemoryBIOs around an
# SSLObject) and is the running Python's own code for everything that
# happens once per connection: handshake, timeouts, close_notify, shutdown,
# abort, errors.  Our SSLProtocol subclasses it and replaces only what runs per
# record, the part that dominated a profile of a TLS echo (sslproto.py was
# 59% of the server's instructions):
#
# - compiled here instead of interpreted;
# - the state that path reads kept in C fields (TLSState, a base class
#   whose fields asyncio's own methods read and write as their usual
#   attributes), instead of in the instance dict;
# - OpenSSL's _ssl object called directly instead of through ssl.SSLObject's
#   Python wrappers (only for the stock SSLObject class: a context with its
#   own sslobject_class keeps its methods);
# - a read stops when neither the incoming BIO nor OpenSSL holds a byte,
#   instead of reading once more to catch SSLWantReadError: one exception
#   built and caught per record saved.
#
# What a program can observe is asyncio's: the same calls to the protocol,
# in the same order, the same flow-control points and sizes.

cdef object _StockSSLProtocol = _sslproto.SSLProtocol
cdef object _StockSSLAppTransport = _sslproto._SSLProtocolTransport
cdef object _SSLObject = ssl.SSLObject if ssl is not None else None
cdef tuple _SSL_AGAIN = _sslproto.SSLAgainErrors
cdef object _TLS_DO_HANDSHAKE = _sslproto.SSLProtocolState.DO_HANDSHAKE
cdef object _TLS_WRAPPED = _sslproto.SSLProtocolState.WRAPPED
cdef object _TLS_FLUSHING = _sslproto.SSLProtocolState.FLUSHING
cdef object _TLS_SHUTDOWN = _sslproto.SSLProtocolState.SHUTDOWN
cdef object _TLS_UNWRAPPED = _sslproto.SSLProtocolState.UNWRAPPED
# the most one read takes from OpenSSL (asyncio's)
cdef object _TLS_MAX_READ = _sslproto.SSLProtocol.max_size


cdef class TLSState:
    """What the per-record path reads and writes, as C fields under the
    names asyncio's SSLProtocol gives these attributes."""
    cdef public object _loop, _transport, _state
    cdef public object _incoming, _outgoing, _sslobj, _write_backlog
    cdef public object _app_protocol, _app_protocol_get_buffer, _app_protocol_buffer_updated
    cdef public bint _app_protocol_is_buffer
    cdef public object _ssl_buffer_view
    cdef public Py_ssize_t _write_buffer_size, _conn_lost
    cdef public bint _app_reading_paused, _ssl_reading_paused
    cdef public bint _app_writing_paused, _ssl_writing_paused
    cdef public object _incoming_high_water, _incoming_low_water
    cdef public object _outgoing_high_water, _outgoing_low_water
    # what reads and writes records: OpenSSL's object under the stock
    # SSLObject, or the SSLObject itself when it is some other class
    cdef object engine


cdef inline bint _tls_drained(incoming, engine):
    # nothing left that a read could turn into data or an alert
    return not incoming.pending and not engine.pending()


class _SSLProtocolTransport(_StockSSLAppTransport):
    """The transport a TLS protocol's application sees (asyncio's, with a
    compiled write())."""

    def write(self, data):
        if not (PyBytes_CheckExact(data) or isinstance(data, (bytes, bytearray, memoryview))):
            raise TypeError(f"data: expecting a bytes-like instance, "
                            f"got {type(data).__name__}")
        if not data:
            return
        protocol = self._ssl_protocol
        if type(protocol) is SSLProtocol:
            _tls_write_appdata(<TLSState>protocol, (data,))
        else:
            protocol._write_appdata((data,))


class SSLProtocol(TLSState, _StockSSLProtocol):
    """asyncio's SSLProtocol with its per-record path compiled (see above).

    The methods below are asyncio's entry points into that path; the
    _tls_* functions they call are the path itself, which calls itself
    without looking methods up."""

    def __init__(self, *args, **kwargs):
        _StockSSLProtocol.__init__(self, *args, **kwargs)
        cdef TLSState fields = self
        sslobj = fields._sslobj
        fields.engine = sslobj._sslobj if type(sslobj) is _SSLObject else sslobj

    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError('Creating _SSLProtocolTransport twice')
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    def get_buffer(self, n):
        cdef TLSState fields = self
        want = n
        if want <= 0 or want > _TLS_MAX_READ:
            want = _TLS_MAX_READ
        if len(fields._ssl_buffer_view) < want:
            return _StockSSLProtocol.get_buffer(self, n)    # grows it
        return fields._ssl_buffer_view

    def buffer_updated(self, nbytes):
        cdef TLSState fields = self
        fields._incoming.write(fields._ssl_buffer_view[:nbytes])
        state = fields._state
        if state is _TLS_WRAPPED:
            _tls_do_read(fields, state)
        elif state is _TLS_DO_HANDSHAKE:
            self._do_handshake()
        elif state is _TLS_FLUSHING:
            self._do_flush()
        elif state is _TLS_SHUTDOWN:
            self._do_shutdown()

    def _do_read(self):
        _tls_do_read(self, self._state)

    def _do_read__copied(self):
        _tls_read_copied(self)

    def _do_read__buffered(self):
        _tls_read_buffered(self)

    def _write_appdata(self, list_of_data):
        _tls_write_appdata(self, list_of_data)

    def _do_write(self):
        _tls_do_write(self)

    def _process_outgoing(self):
        _tls_process_outgoing(self)

    def _control_app_writing(self):
        _tls_control_app_writing(self)

    def _control_ssl_reading(self):
        _tls_control_ssl_reading(self)


# incoming

cdef _tls_do_read(TLSState protocol, state):
    if state is not _TLS_WRAPPED and state is not _TLS_FLUSHING:
        return
    try:
        if not protocol._app_reading_paused:
            if protocol._app_protocol_is_buffer:
                _tls_read_buffered(protocol)
            else:
                _tls_read_copied(protocol)
            if protocol._write_backlog:
                _tls_do_write(protocol)
            else:
                _tls_process_outgoing(protocol)
        _tls_control_ssl_reading(protocol)
    except Exception as ex:
        protocol._fatal_error(ex, 'Fatal error on SSL protocol')


cdef _tls_read_copied(TLSState protocol):
    cdef list chunks = None
    cdef bint eof = False
    incoming = protocol._incoming
    engine = protocol.engine
    first = None
    try:
        while True:
            chunk = engine.read(_TLS_MAX_READ)
            if not chunk:
                eof = True      # close_notify
                break
            if first is None:
                first = chunk
            elif chunks is None:
                chunks = [first, chunk]
            else:
                chunks.append(chunk)
            if _tls_drained(incoming, engine):
                break
    except _SSL_AGAIN:
        pass
    if chunks is not None:
        protocol._app_protocol.data_received(b''.join(chunks))
    elif first is not None:
        protocol._app_protocol.data_received(first)
    if eof:
        protocol._call_eof_received()
        protocol._start_shutdown()


cdef _tls_read_buffered(TLSState protocol):
    cdef Py_ssize_t offset = 0, count = 1, wants
    incoming = protocol._incoming
    engine = protocol.engine
    buf = protocol._app_protocol_get_buffer(incoming.pending)
    wants = len(buf)
    try:
        count = engine.read(wants, buf)
        if count > 0:
            offset = count
            while offset < wants:
                if _tls_drained(incoming, engine):
                    break
                count = engine.read(wants - offset, buf[offset:])
                if count > 0:
                    offset += count
                else:
                    break
            else:
                # the application's buffer is full: the rest on the next
                # iteration, as asyncio does
                protocol._loop.call_soon(protocol._do_read)
    except _SSL_AGAIN:
        pass
    if offset > 0:
        protocol._app_protocol_buffer_updated(offset)
    if not count:
        protocol._call_eof_received()     # close_notify
        protocol._start_shutdown()


cdef _tls_control_ssl_reading(TLSState protocol):
    cdef Py_ssize_t size = protocol._incoming.pending
    if protocol._ssl_reading_paused:
        if size <= protocol._incoming_low_water:
            protocol._ssl_reading_paused = False
            protocol._transport.resume_reading()
    elif size >= protocol._incoming_high_water:
        protocol._ssl_reading_paused = True
        protocol._transport.pause_reading()


# outgoing

cdef _tls_write_appdata(TLSState protocol, list_of_data):
    cdef Py_ssize_t size = 0
    state = protocol._state
    if state is _TLS_FLUSHING or state is _TLS_SHUTDOWN or state is _TLS_UNWRAPPED:
        if protocol._conn_lost >= _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _sslproto.logger.warning('SSL connection is closed')
        protocol._conn_lost += 1
        return
    backlog = protocol._write_backlog
    for data in list_of_data:
        backlog.append(data)
        size += len(data)
    protocol._write_buffer_size += size
    try:
        if state is _TLS_WRAPPED:
            _tls_do_write(protocol)
    except Exception as ex:
        protocol._fatal_error(ex, 'Fatal error on SSL protocol')


cdef _tls_do_write(TLSState protocol):
    cdef Py_ssize_t count, data_len, written = 0
    backlog = protocol._write_backlog
    engine = protocol.engine
    try:
        while backlog:
            data = backlog[0]
            count = engine.write(data)
            data_len = len(data)
            if count < data_len:
                backlog[0] = data[count:]
                written += count
            else:
                backlog.popleft()
                written += data_len
    except _SSL_AGAIN:
        pass
    finally:
        protocol._write_buffer_size -= written
    _tls_process_outgoing(protocol)


cdef _tls_process_outgoing(TLSState protocol):
    if not protocol._ssl_writing_paused:
        data = protocol._outgoing.read()
        if data:
            protocol._transport.write(data)
    _tls_control_app_writing(protocol)


cdef _tls_control_app_writing(TLSState protocol):
    # asyncio's, whose calls to pause_writing()/resume_writing() and their
    # error reports stay the stock code's
    cdef Py_ssize_t size = protocol._outgoing.pending + protocol._write_buffer_size
    if protocol._app_writing_paused:
        if size <= protocol._outgoing_low_water:
            _StockSSLProtocol._control_app_writing(protocol)
    elif size >= protocol._outgoing_high_water:
        _StockSSLProtocol._control_app_writing(protocol)
