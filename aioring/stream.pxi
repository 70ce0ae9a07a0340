# Stream transports (TCP and Unix) whose receive path runs on the ring.
#
# _RingSocketTransport is asyncio's own socket transport with its reading
# replaced: instead of a readiness poll followed by recv(), one IORING_OP_RECV
# is kept in flight while the transport reads.  Everything else (writes and
# flow control, close/abort, half close, extra info, repr, sendfile and
# start_tls compatibility) is asyncio's code, so it behaves as the stock
# loop's transport of the running Python does.

from asyncio import protocols as _protocols

# Server._detach() learned its transport argument in 3.12.
_DETACH_TAKES_TRANSPORT = len(_inspect.signature(asyncio.base_events.Server._detach).parameters) > 1

# SO_LINGER on with a zero timeout: close() resets the connection.
_LINGER_RESET = __import__('struct').pack('ii', 1, 0)

# Bytes asked of one recv.  asyncio's transport asks 256 KiB of recv(); a
# buffer that stays with the kernel while it waits is kept smaller.
cdef Py_ssize_t RECV_SIZE = 64 * 1024


class _RingSocketTransport(_selector_events._SelectorSocketTransport):

    _recv_op = None     # the RecvOp in flight, if any
    _stash = None       # chunks received after pause_reading(); b'' is EOF
    _slot = -1          # fixed-file slot of the socket, or -1
    _ring_loop = None   # the loop, kept after asyncio drops _loop
    _closed_sock = None # socket to close once the kernel is done with it
    # Bytes the kernel handed us that the protocol never got (closed while a
    # recv was in flight, a failed get_buffer, a stash left at close).  With
    # asyncio's transport they would still sit in the socket, and closing it
    # would send the peer a reset: we send the same.
    _unread = False

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        super().__init__(loop, sock, protocol, waiter, extra, server)
        self._ring_loop = loop
        self._slot = loop._fixed_slot(self._sock_fd)

    # -- asyncio's hooks that start and stop reading ------------------------

    def _add_reader(self, fd, callback, *args):
        # asyncio calls this to start reading and from resume_reading()
        if not self.is_reading():
            return
        if self._stash:
            self._loop.call_soon(self._deliver_stash)
        else:
            self._start_recv()

    def pause_reading(self):
        super().pause_reading()
        self._cancel_recv()

    def close(self):
        super().close()
        self._cancel_recv()

    def _force_close(self, exc):
        super()._force_close(exc)
        self._cancel_recv()

    def _call_connection_lost(self, exc):
        # asyncio's, except that the socket is closed only once the kernel
        # has let go of it: cancel (done by close/abort), final completion,
        # slot released, fd closed.
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._closed_sock = self._sock
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                if _DETACH_TAKES_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None
            if self._recv_op is None:
                self._release_socket()

    def _release_socket(self):
        sock, self._closed_sock = self._closed_sock, None
        slot, self._slot = self._slot, -1
        if slot >= 0:
            self._ring_loop._release_slot(slot)
        if self._unread or self._stash:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        sock.close()

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None and self._slot >= 0:
            self._ring_loop._release_slot(self._slot)
            self._slot = -1
        super().__del__(_warn)

    # -- the ring receive ----------------------------------------------------

    def _start_recv(self):
        if self._recv_op is None and self._sock is not None:
            self._recv_op = (<BaseLoop>self._loop)._submit_recv(
                self, self._sock_fd, self._slot, RECV_SIZE)

    def _cancel_recv(self):
        # The completion still comes (with data, if the kernel had some
        # already): _recv_done keeps what arrives while paused.
        op = self._recv_op
        if op is not None and self._loop is not None:
            (<BaseLoop>self._loop)._cancel_op(op)

    def _recv_done(self, data, int res):
        self._recv_op = None
        if res > 0 and (self._closing or self._sock is None):
            self._unread = True         # closed: asyncio reads no more either
        if self._closed_sock is not None:
            self._release_socket()
            return
        if self._conn_lost or self._sock is None:
            return
        if res < 0:
            if res != -ECANCELED:
                self._fatal_error(OSError(-res, os.strerror(-res)),
                                  'Fatal read error on socket transport')
            return
        chunk = data if res > 0 else b''
        if not self.is_reading():
            if not self._closing:       # paused: keep it for resume_reading()
                if self._stash is None:
                    self._stash = []
                self._stash.append(chunk)
            return
        if self._deliver(chunk) and self.is_reading():
            self._start_recv()

    def _deliver_stash(self):
        while self._stash and self.is_reading():
            if not self._deliver(self._stash.pop(0)):
                return
        if self.is_reading() and not self._stash:
            self._start_recv()

    def _deliver(self, chunk):
        """Hand one received chunk (b'' for EOF) to the protocol; False when
        reading must stop (EOF, or the transport failed)."""
        if self._conn_lost:
            return False
        if not chunk:
            self._read_ready__on_eof()
            return False
        if isinstance(self._protocol, _protocols.BufferedProtocol):
            return self._deliver_buffered(chunk)
        try:
            self._protocol.data_received(chunk)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(
                exc, 'Fatal error: protocol.data_received() call failed.')
            return False
        return True

    def _deliver_buffered(self, chunk):
        view = memoryview(chunk)
        while view:
            try:
                buf = self._protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError('get_buffer() returned an empty buffer')
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._unread = True
                self._fatal_error(
                    exc, 'Fatal error: protocol.get_buffer() call failed.')
                return False
            target = memoryview(buf).cast('B')
            n = min(len(target), len(view))
            target[:n] = view[:n]
            view = view[n:]
            try:
                self._protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(
                    exc, 'Fatal error: protocol.buffer_updated() call failed.')
                return False
            if view and not self.is_reading():
                # paused (or closed) by the protocol in the middle of a chunk
                if not self._closing:
                    if self._stash is None:
                        self._stash = []
                    self._stash.insert(0, bytes(view))
                return False
        return True
