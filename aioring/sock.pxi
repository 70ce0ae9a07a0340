# sock_recv, sock_recv_into, sock_sendall and sock_accept on the ring.
#
# As asyncio's: the socket is tried at once (a plain recv/send), and only
# when it would block does the loop wait, here with a ring request
# (IORING_OP_RECV / IORING_OP_SEND on the fd) instead of a readiness poll
# and a second syscall.  A receive cancelled after the kernel already took
# bytes from the socket keeps them: the next sock_recv/sock_recv_into on
# that socket returns them first, so cancelling never loses data; likewise a
# connection accepted for a cancelled sock_accept goes to the next one.

cdef object _check_ssl_socket = _base_events._check_ssl_socket


cdef _check_sock(BaseLoop loop, object sock):
    # asyncio's checks at the top of every sock_* method
    _check_ssl_socket(sock)
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


cdef int _begin(BaseLoop loop, SockOp op, object sock, object fut) except -1:
    # asyncio's steps before it waits (the fd is no transport's, the loop is
    # open), then op takes the future (a new one when fut is None); the fd
    cdef int fd = sock.fileno()
    loop._ensure_fd_no_transport(fd)
    loop._check_closed_fast()       # as asyncio's _add_reader() / _add_writer()
    op.fut = loop.create_future() if fut is None else fut
    op.sock = sock
    return fd


cdef inline bint _still_waiting(SockOp op):
    # op's caller still waits for it, on an open loop
    return (op.loop != NULL and not (<BaseLoop>op.loop)._closed
            and op.fut is not None and not op.fut.done())


cdef object _waiting(BaseLoop loop, SockOp op):
    # op's request is prepared: hold op until its final completion, and let
    # a cancelled future cancel the request
    loop._track_user(op)
    op.fut.add_done_callback(op._fut_done)
    return op.fut


cdef bytes _take_stashed(BaseLoop loop, object sock, Py_ssize_t n):
    # bytes a cancelled receive left for this socket, at most n
    cdef bytes data = loop.sock_stash.pop(sock, None)
    if data is not None and PyBytes_GET_SIZE(data) > n:
        loop.sock_stash[sock] = data[n:]
        data = data[:n]
    return data


cdef _raise_kept_error(BaseLoop loop, object sock):
    # an error a cancelled receive took from the socket (after its bytes)
    if loop.sock_errors:
        exc = loop.sock_errors.pop(sock, None)
        if exc is not None:
            raise exc


cdef _submit_sock_recv(BaseLoop loop, object sock, Py_ssize_t n, object target):
    cdef SockRecvOp op = SockRecvOp.__new__(SockRecvOp)
    cdef int fd = _begin(loop, op, sock, None)
    op.buf = bytearray(n)
    op.target = target
    prep_recv(&loop.ring, op, fd, -1, <char *>op.buf, <unsigned>n)
    loop.sock_receiving[sock] = op
    return _waiting(loop, op)


cdef _resolve_recv(SockRecvOp op, fut, object data):
    # data: bytes received for op's caller
    if op.target is None:
        fut.set_result(data)
    else:
        memoryview(op.target).cast('B')[:len(data)] = data
        fut.set_result(len(data))


cdef _keep_for_next(BaseLoop loop, object sock, bytes data, SockRecvOp done):
    # Bytes the kernel took for a receive that was cancelled: they go to the
    # receive waiting on this socket now, if any, else to the next one.
    cdef SockRecvOp waiting
    data = loop.sock_stash.pop(sock, b'') + data
    waiting = loop.sock_receiving.get(sock)
    if waiting is not None and waiting is not done and waiting.fut is not None \
            and not waiting.fut.done():
        n = len(waiting.buf)
        waiting_fut, waiting.fut = waiting.fut, None
        _resolve_recv(waiting, waiting_fut, data[:n])
        data = data[n:]
        # its own request may take bytes too: they will follow these
        loop._cancel_op(waiting)
    if data:
        loop.sock_stash[sock] = data


def _finish_recv(SockRecvOp op, fut, sock, bytes data):
    # As asyncio completes a receive in a callback after those already
    # queued, a task cancelled by one of them gets CancelledError and the
    # data stays for the next receive instead of being lost with the result.
    if fut.done():
        _keep_for_next(<BaseLoop>op.loop, sock, data, op)
    else:
        _resolve_recv(op, fut, data)


def _finish_recv_error(SockRecvOp op, fut, sock, exc):
    if fut.done():
        (<BaseLoop>op.loop).sock_errors[sock] = exc
    else:
        fut.set_exception(exc)


cdef _sock_recv_done(SockRecvOp op, int res):
    cdef BaseLoop loop
    if res == -EAGAIN and _still_waiting(op):
        # nothing received (see ar_prep_recv): receive again
        prep_recv(&(<BaseLoop>op.loop).ring, op, op.sock.fileno(), -1,
                  <char *>op.buf, <unsigned>len(op.buf))
        (<BaseLoop>op.loop)._track_user(op)
        return
    fut, op.fut = op.fut, None
    sock = op.sock
    if op.loop == NULL or (<BaseLoop>op.loop)._closed:
        pass                    # the loop closed under it: as the stock loop, the future stays pending
    elif fut is None or fut.done():
        # cancelled, or resolved early with bytes an older receive took
        if res > 0:
            _keep_for_next(<BaseLoop>op.loop, sock,
                           PyBytes_FromStringAndSize(<char *>op.buf, res), op)
    elif res >= 0:
        (<BaseLoop>op.loop)._call_soon(
            _finish_recv, (op, fut, sock, PyBytes_FromStringAndSize(<char *>op.buf, res)), None)
    elif res == -ECANCELED:
        fut.cancel()
    else:
        # queued as data is: an error the kernel took for a receive that is
        # cancelled meanwhile is raised by the next one, as the socket would
        (<BaseLoop>op.loop)._call_soon(_finish_recv_error, (op, fut, sock, _oserror(res)), None)
    if op.loop != NULL:
        loop = <BaseLoop>op.loop
        if sock is not None and loop.sock_receiving.get(sock) is op:
            del loop.sock_receiving[sock]
    op.buf = None
    op.sock = None


async def _loop_sock_recv(self, sock, n):
    """Receive up to n bytes from the socket."""
    _check_sock(self, sock)
    if self.sock_stash:
        data = _take_stashed(self, sock, n)
        if data is not None:
            return data
    _raise_kept_error(self, sock)
    try:
        return sock.recv(n)
    except (BlockingIOError, InterruptedError):
        pass
    return await _submit_sock_recv(self, sock, n, None)


async def _loop_sock_recv_into(self, sock, buf):
    """Receive into the writable buffer buf; returns the bytes written."""
    _check_sock(self, sock)
    if self.sock_stash:
        view = memoryview(buf).cast('B')
        data = _take_stashed(self, sock, len(view))
        if data is not None:
            view[:len(data)] = data
            return len(data)
    _raise_kept_error(self, sock)
    try:
        return sock.recv_into(buf)
    except (BlockingIOError, InterruptedError):
        pass
    return await _submit_sock_recv(self, sock, memoryview(buf).nbytes, buf)


cdef _submit_sock_send(SockSendOp op, BaseLoop loop):
    prep_send_bytes(&loop.ring, op, op.sock.fileno(), -1, op.data, op.sent)
    loop._track_user(op)


cdef _sock_send_done(SockSendOp op, int res):
    fut = op.fut
    if fut.done() or op.loop == NULL or (<BaseLoop>op.loop)._closed:
        op.fut = op.sock = op.data = None
        return
    if res == -EAGAIN:
        # nothing sent (see ar_prep_recv): the rest goes again
        _submit_sock_send(op, <BaseLoop>op.loop)
        return
    if res < 0:
        op.fut = op.sock = op.data = None
        if res == -ECANCELED:
            fut.cancel()
        else:
            fut.set_exception(_oserror(res))
        return
    op.sent += res
    if op.sent >= PyBytes_GET_SIZE(op.data):
        op.fut = op.sock = op.data = None
        fut.set_result(None)
        return
    _submit_sock_send(op, <BaseLoop>op.loop)


async def _loop_sock_sendall(self, sock, data):
    """Send all of data to the socket."""
    cdef SockSendOp op
    _check_sock(self, sock)
    try:
        n = sock.send(data)
    except (BlockingIOError, InterruptedError):
        n = 0
    view = memoryview(data)
    if n == view.nbytes:
        return
    op = SockSendOp.__new__(SockSendOp)
    _begin(self, op, sock, None)
    op.data = view.cast('B')[n:].tobytes()      # the rest, as it is now
    _submit_sock_send(op, self)
    op.fut.add_done_callback(op._fut_done)
    return await op.fut


cdef _sock_accept_done(SockAcceptOp op, int res):
    cdef BaseLoop loop
    if res == -EAGAIN and _still_waiting(op):
        # no connection after all (see ar_prep_recv): accept again
        prep_accept(&(<BaseLoop>op.loop).ring, op, op.sock.fileno(), -1, False)
        (<BaseLoop>op.loop)._track_user(op)
        return
    fut, sock = op.fut, op.sock
    op.fut = op.sock = None
    if op.loop == NULL or (<BaseLoop>op.loop)._closed:
        if res >= 0:
            c_close(res)
        return
    loop = <BaseLoop>op.loop
    if res >= 0:
        try:
            conn = socket.socket(fileno=res)
        except BaseException:
            c_close(res)
            raise
        conn.setblocking(False)
        try:
            addr = conn.getpeername()
        except OSError:
            addr = None
        # handed over in a queued callback, as asyncio's reader callback
        loop._call_soon(_finish_accept, (loop, fut, sock, conn, addr), None)
    elif fut.done():
        pass
    elif res == -ECANCELED:
        fut.cancel()
    else:
        fut.set_exception(_oserror(res))


def _finish_accept(BaseLoop loop, fut, sock, conn, addr):
    if fut.done():
        # cancelled meanwhile: the connection waits for the next sock_accept
        loop.accept_stash.setdefault(sock, []).append((conn, addr))
    else:
        fut.set_result((conn, addr))


async def _loop_sock_accept(self, sock):
    """Accept a connection: returns (conn, address)."""
    cdef SockAcceptOp op
    cdef BaseLoop loop = self
    _check_sock(self, sock)
    if loop.accept_stash:
        waiting = loop.accept_stash.get(sock)
        if waiting:
            pair = waiting.pop(0)
            if not waiting:
                del loop.accept_stash[sock]
            return pair
    fut = self.create_future()
    fd = sock.fileno()
    try:
        conn, address = sock.accept()
        conn.setblocking(False)
    except (BlockingIOError, InterruptedError):
        op = SockAcceptOp.__new__(SockAcceptOp)
        _begin(loop, op, sock, fut)
        prep_accept(&loop.ring, op, fd, -1, False)
        _waiting(loop, op)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        fut.set_result((conn, address))
    return await fut


# -- sock_recvfrom / sock_recvfrom_into: one recvmsg -------------------------------

cdef extern from "netinet/in.h":
    ctypedef struct in_addr:
        pass
    ctypedef struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t ntohs(uint16_t)
    uint32_t ntohl(uint32_t)
    uint16_t htons(uint16_t)
    uint32_t htonl(uint32_t)

cdef extern from "arpa/inet.h":
    const char *inet_ntop(int af, const void *src, char *dst, unsigned size)
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "sys/un.h":
    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]

from libc.stdint cimport uint32_t

cdef extern from "string.h":
    size_t strnlen(const char *s, size_t maxlen)

cdef int _AF_INET = socket.AF_INET
cdef int _AF_INET6 = socket.AF_INET6
cdef int _AF_UNIX = socket.AF_UNIX
# families whose addresses _sockaddr_to_py builds; others take asyncio's path
cdef frozenset _RECVMSG_FAMILIES = frozenset((socket.AF_INET, socket.AF_INET6, socket.AF_UNIX))
_stock_sock_recvfrom = _selector_events.BaseSelectorEventLoop.sock_recvfrom
_stock_sock_recvfrom_into = _selector_events.BaseSelectorEventLoop.sock_recvfrom_into


cdef object _sockaddr_to_py(sockaddr_storage *sa, unsigned namelen):
    # the address as socket.recvfrom() gives it (CPython's makesockaddr)
    cdef char text[64]
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef Py_ssize_t pathlen
    if namelen == 0:
        return None
    if sa.ss_family == _AF_INET:
        sin = <sockaddr_in *>sa
        inet_ntop(_AF_INET, &sin.sin_addr, text, sizeof(text))
        return (text.decode('ascii'), ntohs(sin.sin_port))
    if sa.ss_family == _AF_INET6:
        sin6 = <sockaddr_in6 *>sa
        inet_ntop(_AF_INET6, &sin6.sin6_addr, text, sizeof(text))
        host = text.decode('ascii')
        if sin6.sin6_scope_id:
            # scoped: "fe80::1%eth0", as getnameinfo() writes it
            host = socket.getnameinfo((host, 0, 0, sin6.sin6_scope_id),
                                      socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
        return (host, ntohs(sin6.sin6_port), ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    # AF_UNIX
    sun = <sockaddr_un *>sa
    pathlen = <Py_ssize_t>namelen - 2      # after sun_family
    if pathlen > 0 and sun.sun_path[0] == 0:
        return PyBytes_FromStringAndSize(sun.sun_path, pathlen)   # abstract
    return os.fsdecode(PyBytes_FromStringAndSize(
        sun.sun_path, strnlen(sun.sun_path, max(0, min(pathlen, 108)))))


cdef int _sockaddr_from_py(int family, object addr, sockaddr_storage *sa) except -2:
    # The inverse of _sockaddr_to_py: `addr` as socket.sendto() takes it,
    # written into `sa` as CPython's getsockaddrarg() writes it; returns its
    # length.  Only the forms that need no name resolution and cannot fail:
    # a numeric (host, port[, flowinfo[, scope_id]]) tuple, an AF_UNIX path
    # (str or bytes).  Anything else (a host name, '' or '<broadcast>', a
    # malformed address, another family) returns -1: the caller leaves it to
    # socket.sendto(), whose resolution and errors are then the stock ones.
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef bytes text
    cdef Py_ssize_t n
    memset(sa, 0, sizeof(sockaddr_storage))
    if family == _AF_UNIX:
        if type(addr) is str:
            try:
                text = os.fsencode(addr)
            except UnicodeError:
                return -1
        elif type(addr) is bytes:
            text = <bytes>addr
        else:
            return -1
        n = PyBytes_GET_SIZE(text)
        sun = <sockaddr_un *>sa
        sun.sun_family = <unsigned short>family
        if n == 0 or PyBytes_AS_STRING(text)[0] == 0:
            # Linux's abstract namespace: no terminating NUL
            if n > sizeof(sun.sun_path):
                return -1
            memcpy(sun.sun_path, PyBytes_AS_STRING(text), n)
            return <int>(n + 2)         # 2: offsetof(sockaddr_un, sun_path)
        if n >= sizeof(sun.sun_path):
            return -1
        memcpy(sun.sun_path, PyBytes_AS_STRING(text), n)
        return <int>(n + 3)             # with the terminating NUL
    if family != _AF_INET and family != _AF_INET6:
        return -1
    if type(addr) is not tuple:
        return -1
    n = len(<tuple>addr)
    if n < 2 or n > (2 if family == _AF_INET else 4):
        return -1
    host, port = (<tuple>addr)[0], (<tuple>addr)[1]
    if type(host) is not str or not (<str>host).isascii() or '\0' in <str>host:
        return -1
    if type(port) is not int or not 0 <= port <= 0xffff:
        return -1
    text = (<str>host).encode('ascii')
    if family == _AF_INET:
        sin = <sockaddr_in *>sa
        if inet_pton(_AF_INET, PyBytes_AS_STRING(text), &sin.sin_addr) != 1:
            return -1
        sin.sin_family = <unsigned short>family
        sin.sin_port = htons(<uint16_t>port)
        return sizeof(sockaddr_in)
    flowinfo = (<tuple>addr)[2] if n > 2 else 0
    scope_id = (<tuple>addr)[3] if n > 3 else 0
    if type(flowinfo) is not int or not 0 <= flowinfo <= 0xfffff:
        return -1
    if type(scope_id) is not int or not 0 <= scope_id <= 0xffffffff:
        return -1
    sin6 = <sockaddr_in6 *>sa
    if inet_pton(_AF_INET6, PyBytes_AS_STRING(text), &sin6.sin6_addr) != 1:
        return -1
    sin6.sin6_family = <unsigned short>family
    sin6.sin6_port = htons(<uint16_t>port)
    sin6.sin6_flowinfo = htonl(<uint32_t>flowinfo)
    sin6.sin6_scope_id = <uint32_t>scope_id
    return sizeof(sockaddr_in6)


def _finish_recvfrom(SockRecvFromOp op, fut, sock, bytes data, addr):
    # a queued callback, as for sock_recv (see _finish_recv)
    cdef BaseLoop loop = <BaseLoop>op.loop
    if fut.done():
        loop.dgram_stash.setdefault(sock, []).append((data, addr))
    elif op.target is None:
        fut.set_result((data, addr))
    else:
        memoryview(op.target).cast('B')[:len(data)] = data
        fut.set_result((len(data), addr))


cdef _sock_recvfrom_done(SockRecvFromOp op, int res):
    if res == -EAGAIN and _still_waiting(op):
        # nothing received (see ar_prep_recv): receive again
        op.msg.msg_namelen = sizeof(op.name)
        prep_recvmsg(&(<BaseLoop>op.loop).ring, op, op.sock.fileno(), -1, &op.msg)
        (<BaseLoop>op.loop)._track_user(op)
        return
    fut, sock = op.fut, op.sock
    op.fut = op.sock = None
    if op.loop == NULL or (<BaseLoop>op.loop)._closed:
        return
    if res >= 0:
        data = PyBytes_FromStringAndSize(<char *>op.buf, res)
        addr = _sockaddr_to_py(&op.name, op.msg.msg_namelen)
        if fut.done():
            # cancelled: the datagram goes to the next receive
            (<BaseLoop>op.loop).dgram_stash.setdefault(sock, []).append((data, addr))
        else:
            (<BaseLoop>op.loop)._call_soon(_finish_recvfrom, (op, fut, sock, data, addr), None)
    elif fut.done():
        pass
    elif res == -ECANCELED:
        fut.cancel()
    else:
        fut.set_exception(_oserror(res))


cdef object _take_datagram(BaseLoop loop, object sock):
    waiting = loop.dgram_stash.get(sock)
    if not waiting:
        return None
    item = waiting.pop(0)
    if not waiting:
        del loop.dgram_stash[sock]
    return item


cdef _submit_sock_recvfrom(BaseLoop loop, object sock, Py_ssize_t n, object target):
    cdef SockRecvFromOp op = SockRecvFromOp.__new__(SockRecvFromOp)
    cdef int fd = _begin(loop, op, sock, None)
    op.buf = bytearray(n)
    op.target = target
    op.iov.iov_base = <char *>op.buf
    op.iov.iov_len = n
    memset(&op.msg, 0, sizeof(op.msg))
    memset(&op.name, 0, sizeof(op.name))
    op.msg.msg_name = &op.name
    op.msg.msg_namelen = sizeof(op.name)
    op.msg.msg_iov = &op.iov
    op.msg.msg_iovlen = 1
    prep_recvmsg(&loop.ring, op, fd, -1, &op.msg)
    return _waiting(loop, op)


async def _loop_sock_recvfrom(self, sock, bufsize):
    """Receive a datagram of up to bufsize bytes: returns (data, address)."""
    cdef BaseLoop loop = self
    if sock.family not in _RECVMSG_FAMILIES:
        return await _stock_sock_recvfrom(self, sock, bufsize)
    _check_sock(self, sock)
    if loop.dgram_stash:
        item = _take_datagram(loop, sock)
        if item is not None:
            data, addr = item
            return data[:bufsize], addr
    try:
        return sock.recvfrom(bufsize)
    except (BlockingIOError, InterruptedError):
        pass
    return await _submit_sock_recvfrom(loop, sock, bufsize, None)


async def _loop_sock_recvfrom_into(self, sock, buf, nbytes=0):
    """Receive a datagram into buf: returns (nbytes, address)."""
    cdef BaseLoop loop = self
    if sock.family not in _RECVMSG_FAMILIES:
        return await _stock_sock_recvfrom_into(self, sock, buf, nbytes)
    _check_sock(self, sock)
    if not nbytes:
        nbytes = len(buf)
    if loop.dgram_stash:
        item = _take_datagram(loop, sock)
        if item is not None:
            data, addr = item
            data = data[:nbytes]
            memoryview(buf).cast('B')[:len(data)] = data
            return len(data), addr
    try:
        return sock.recvfrom_into(buf, nbytes)
    except (BlockingIOError, InterruptedError):
        pass
    return await _submit_sock_recvfrom(loop, sock, nbytes, buf)
