"""The loop's sock_* methods with real sockets (socket pairs, TCP on
127.0.0.1 and ::1, AF_UNIX paths, UDP), on the stock loop and on aioring.

Every async test runs on each loop (the conftest hook), so a deviation of
aioring fails on [aioring] only.  Tests named `*_aioring_only` check
aioring's own guarantees and are skipped on the stock loop.  Every wait is
bounded (asyncio.wait_for), so a loop that fails to wake fails the test
instead of hanging it.
"""
import asyncio
import errno
import io
import os
import shutil
import socket
import ssl
import struct
import tempfile

import pytest

import aioring

from _loop_helpers import is_aioring
from _stream_helpers import HAS_IPV6, fill, iou_worker_tids, needs_ipv6  # noqa: F401

T = 10          # seconds: the bound on every wait



INET = [
    pytest.param((socket.AF_INET, "127.0.0.1"), id="ipv4"),
    pytest.param((socket.AF_INET6, "::1"), id="ipv6", marks=needs_ipv6),
]
STREAM_KINDS = [
    "socketpair", "tcp4",
    pytest.param("tcp6", marks=needs_ipv6),
    "unix",
]


@pytest.fixture
def sockdir():
    # short: an AF_UNIX path has at most 107 bytes
    d = tempfile.mkdtemp(prefix="ar-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def listener(kind, sockdir=None):
    """A listening socket (blocking) and the address to connect to."""
    if kind == "unix":
        path = os.path.join(sockdir, f"l{len(os.listdir(sockdir))}")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
    else:
        family, host = {"tcp4": (socket.AF_INET, "127.0.0.1"),
                        "tcp6": (socket.AF_INET6, "::1")}[kind]
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.bind((host, 0))
    lsock.listen(16)
    return lsock, lsock.getsockname()


def make_stream_pair(kind, sockdir):
    """Two connected non-blocking stream sockets of `kind`."""
    if kind == "socketpair":
        a, b = socket.socketpair()
    else:
        lsock, addr = listener(kind, sockdir)
        with lsock:
            a = socket.socket(lsock.family, socket.SOCK_STREAM)
            a.connect(addr)
            b, _ = lsock.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.fixture(params=STREAM_KINDS)
def stream(request, sockdir):
    a, b = make_stream_pair(request.param, sockdir)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tcp(sockdir):
    a, b = make_stream_pair("tcp4", sockdir)
    yield a, b
    a.close()
    b.close()


def make_udp_pair(family=socket.AF_INET, host="127.0.0.1"):
    """A receiving and a sending non-blocking UDP socket, both bound."""
    r = socket.socket(family, socket.SOCK_DGRAM)
    s = socket.socket(family, socket.SOCK_DGRAM)
    for x in (r, s):
        x.bind((host, 0))
        x.setblocking(False)
    return r, s


@pytest.fixture(params=INET)
def udp(request):
    r, s = make_udp_pair(*request.param)
    yield r, s
    r.close()
    s.close()


@pytest.fixture
def udp4():
    r, s = make_udp_pair()
    yield r, s
    r.close()
    s.close()


def free_port(family, host):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def recv_exactly(sock, n):
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, min(n - len(buf), 1 << 18))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def wait(aw):
    return asyncio.wait_for(aw, T)


def same_kind_loop():
    """A fresh loop of the kind the test runs on."""
    if is_aioring():
        return aioring.new_event_loop()
    return asyncio.SelectorEventLoop()


# -- sock_recv / sock_recv_into / sock_sendall ---------------------------------


async def test_sendall_and_recv_both_ways(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    assert await wait(loop.sock_sendall(a, b"hello world")) is None
    assert await wait(recv_exactly(b, 11)) == b"hello world"
    assert await wait(loop.sock_sendall(b, bytearray(b"back"))) is None
    assert await wait(recv_exactly(a, 4)) == b"back"
    assert await wait(loop.sock_sendall(a, memoryview(b"xxviewxx")[2:6])) is None
    assert await wait(recv_exactly(b, 4)) == b"view"
    assert await wait(loop.sock_sendall(a, b"")) is None


async def test_recv_waits_for_data(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    task = asyncio.ensure_future(loop.sock_recv(b, 100))
    await asyncio.sleep(0.02)
    assert not task.done()
    loop.call_later(0.01, a.send, b"late")
    assert await wait(task) == b"late"


async def test_recv_returns_at_most_n(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    a.send(b"abcdef")
    await asyncio.sleep(0.01)
    assert await wait(loop.sock_recv(b, 4)) == b"abcd"
    assert await wait(loop.sock_recv(b, 4)) == b"ef"


async def test_recv_into(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    buf = bytearray(10)
    task = asyncio.ensure_future(loop.sock_recv_into(b, buf))
    await asyncio.sleep(0.01)
    assert not task.done()
    a.send(b"abc")
    assert await wait(task) == 3
    assert buf == b"abc" + bytes(7)
    a.send(b"0123456789")
    await asyncio.sleep(0.01)
    view = memoryview(buf)[5:8]
    assert await wait(loop.sock_recv_into(b, view)) == 3
    assert buf == b"abc" + bytes(2) + b"012" + bytes(2)


async def test_eof(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    pending = asyncio.ensure_future(loop.sock_recv(b, 100))
    await asyncio.sleep(0.01)
    a.send(b"last")
    a.shutdown(socket.SHUT_WR)
    assert await wait(pending) == b"last"
    assert await wait(loop.sock_recv(b, 100)) == b""
    assert await wait(loop.sock_recv(b, 100)) == b""
    assert await wait(loop.sock_recv_into(b, bytearray(5))) == 0


async def test_eof_while_waiting(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    pending = asyncio.ensure_future(loop.sock_recv(b, 100))
    into = asyncio.ensure_future(loop.sock_recv_into(a, bytearray(5)))
    await asyncio.sleep(0.01)
    a.shutdown(socket.SHUT_WR)
    b.shutdown(socket.SHUT_WR)
    assert await wait(pending) == b""
    assert await wait(into) == 0


async def test_sendall_16_mib_with_concurrent_reader(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    data = os.urandom(16 << 20)
    sent, got = await wait(asyncio.gather(
        loop.sock_sendall(a, data), recv_exactly(b, len(data))))
    assert sent is None
    assert len(got) == len(data) and got == data


async def test_sendall_partial_sends_wait_for_the_reader(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    data = os.urandom(4 << 20)
    task = asyncio.ensure_future(loop.sock_sendall(a, data))
    await asyncio.sleep(0.05)
    assert not task.done()               # the buffers are full: it waits
    got = bytearray()
    while len(got) < len(data):
        chunk = await wait(loop.sock_recv(b, 30000))
        assert chunk
        got += chunk
        if len(got) % 7 == 0:
            await asyncio.sleep(0)
    assert await wait(task) is None
    assert got == data


async def test_cancelled_receives_lose_no_byte(stream):
    # Cancel receives at every point: before data comes, as it comes, after
    # it came.  Whatever the kernel handed over is returned by a later
    # receive: the concatenation is exactly what was sent.
    loop = asyncio.get_running_loop()
    a, b = stream
    sent = bytearray()
    got = bytearray()
    for i in range(2000):
        chunk = b"%05d." % i
        task = asyncio.ensure_future(
            loop.sock_recv(b, 7) if i % 3 else recv_into(loop, b, 7))
        if i % 4 == 0:
            await asyncio.sleep(0)          # the receive is waiting
        a.send(chunk)
        sent += chunk
        if i % 5 == 0:
            await asyncio.sleep(0)          # and maybe done
        task.cancel()
        try:
            got += await task
        except asyncio.CancelledError:
            pass
        if i % 100 == 99:       # catch up, so that the sender never blocks
            while len(got) < len(sent):
                got += await wait(loop.sock_recv(b, 1 << 16))
    while len(got) < len(sent):
        got += await wait(loop.sock_recv(b, 1 << 16))
    assert bytes(got) == bytes(sent)


@pytest.mark.parametrize("reader", ["sock_recv", "sock_recv_into"])
async def test_cancelled_receive_keeps_a_reset_for_the_next(reader):
    # The peer resets while a receive waits, and the receive is cancelled in
    # the iteration that sees it: the next receive still raises the reset.
    loop = asyncio.get_running_loop()
    ls = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    ls.close()
    a.setblocking(False)
    try:
        recv = (lambda: loop.sock_recv(a, 10)) if reader == "sock_recv" else (
            lambda: loop.sock_recv_into(a, bytearray(10)))
        task = asyncio.ensure_future(recv())
        await asyncio.sleep(0.01)           # it waits
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()                        # reset
        loop.call_soon(task.cancel)         # queued before the loop sees the reset
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ConnectionResetError):
            await wait(recv())
    finally:
        a.close()


async def recv_into(loop, sock, n):
    buf = bytearray(n)
    k = await loop.sock_recv_into(sock, buf)
    return bytes(buf[:k])


async def test_cancelled_sendall_sends_a_prefix(stream):
    # A cancelled sock_sendall has sent a prefix of its data, nothing else;
    # what is sent next follows it.
    loop = asyncio.get_running_loop()
    a, b = stream
    data = os.urandom(8 << 20)
    task = asyncio.ensure_future(loop.sock_sendall(a, data))
    await asyncio.sleep(0.02)
    assert not task.done()              # nobody reads: it waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def finish():
        await loop.sock_sendall(a, b"END")
        a.shutdown(socket.SHUT_WR)

    async def read_all():
        got = bytearray()
        while True:
            chunk = await loop.sock_recv(b, 1 << 18)
            if not chunk:
                return got
            got += chunk

    _, got = await wait(asyncio.gather(finish(), read_all()))
    assert got.endswith(b"END")
    prefix = bytes(got[:-3])
    assert 0 < len(prefix) < len(data)
    assert data.startswith(prefix)


async def test_cancelled_accepts_lose_no_connection_aioring_only():
    # Cancel sock_accept at every point: no connection is lost, each is
    # accepted exactly once.  (The stock loop can lose one here: its reader
    # callback may accept for a future cancelled in the same iteration.)
    loop = asyncio.get_running_loop()
    if not is_aioring(loop):
        pytest.skip("aioring's own guarantee")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(300)
    lsock.setblocking(False)
    addr = lsock.getsockname()
    clients, accepted = [], []
    try:
        for i in range(200):
            task = asyncio.ensure_future(loop.sock_accept(lsock))
            if i % 3 == 0:
                await asyncio.sleep(0)      # the accept is waiting
            c = socket.create_connection(addr)
            c.sendall(struct.pack("!H", i))
            clients.append(c)
            if i % 4 == 0:
                await asyncio.sleep(0)      # and maybe done
            task.cancel()
            try:
                accepted.append(await task)
            except asyncio.CancelledError:
                pass
        while len(accepted) < len(clients):
            accepted.append(await wait(loop.sock_accept(lsock)))
        seen = sorted([struct.unpack("!H", await wait(loop.sock_recv(conn, 2)))[0]
                       for conn, _ in accepted])
        assert seen == list(range(200))
        assert all(conn.gettimeout() == 0 for conn, _ in accepted)
        assert {peer for _, peer in accepted} == {c.getsockname() for c in clients}
    finally:
        for c in clients:
            c.close()
        for conn, _ in accepted:
            conn.close()
        lsock.close()


# -- UDP --------------------------------------------------------------------------


async def test_udp_sendto_recvfrom(udp):
    loop = asyncio.get_running_loop()
    r, s = udp
    assert await wait(loop.sock_sendto(s, b"dgram", r.getsockname())) == 5
    data, addr = await wait(loop.sock_recvfrom(r, 100))
    assert data == b"dgram"
    assert addr[:2] == s.getsockname()[:2]
    # datagrams keep their boundaries and order; a short buffer truncates
    for i in range(5):
        await wait(loop.sock_sendto(s, b"%d" % i * 10, r.getsockname()))
    got = [(await wait(loop.sock_recvfrom(r, 3)))[0] for _ in range(5)]
    assert got == [b"000", b"111", b"222", b"333", b"444"]


async def test_udp_recvfrom_waits(udp):
    loop = asyncio.get_running_loop()
    r, s = udp
    task = asyncio.ensure_future(loop.sock_recvfrom(r, 100))
    await asyncio.sleep(0.02)
    assert not task.done()
    loop.call_later(0.01, s.sendto, b"late", r.getsockname())
    data, addr = await wait(task)
    assert (data, addr[:2]) == (b"late", s.getsockname()[:2])


async def test_udp_recvfrom_into(udp):
    loop = asyncio.get_running_loop()
    r, s = udp
    buf = bytearray(8)
    task = asyncio.ensure_future(loop.sock_recvfrom_into(r, buf))
    await asyncio.sleep(0.01)
    assert not task.done()
    s.sendto(b"abc", r.getsockname())
    n, addr = await wait(task)
    assert (n, bytes(buf), addr[:2]) == (3, b"abc" + bytes(5), s.getsockname()[:2])
    s.sendto(b"0123456789", r.getsockname())
    n, addr = await wait(loop.sock_recvfrom_into(r, buf, 4))
    assert (n, bytes(buf)) == (4, b"0123" + bytes(4))
    s.sendto(b"XYZ", r.getsockname())
    n, addr = await wait(loop.sock_recvfrom_into(r, memoryview(buf)[6:]))
    assert (n, bytes(buf)) == (2, b"0123\0\0XY")


def _dgram_pair(kind, sockdir):
    if kind in ("udp4", "udp6"):
        return make_udp_pair(*((socket.AF_INET, "127.0.0.1") if kind == "udp4"
                               else (socket.AF_INET6, "::1")))
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    r.bind(os.path.join(sockdir, "r.sock"))
    if kind == "unix-named":
        s.bind(os.path.join(sockdir, "s.sock"))
    elif kind == "unix-abstract":
        s.bind(b"\0aioring-test-%d" % os.getpid())
    for x in (r, s):
        x.setblocking(False)
    return r, s


@pytest.mark.parametrize("kind", ["udp4", pytest.param("udp6", marks=needs_ipv6),
                                  "unix-named", "unix-abstract", "unix-unbound"])
async def test_recvfrom_address_as_socket_recvfrom(kind, sockdir):
    # The sender's address from a receive that waited equals the one
    # socket.recvfrom() gives for the same sender.
    loop = asyncio.get_running_loop()
    r, s = _dgram_pair(kind, sockdir)
    try:
        task = asyncio.ensure_future(loop.sock_recvfrom(r, 100))
        await asyncio.sleep(0.01)
        assert not task.done()              # it waits
        s.sendto(b"one", r.getsockname())
        data, addr = await wait(task)
        buf = bytearray(10)
        task = asyncio.ensure_future(loop.sock_recvfrom_into(r, buf))
        await asyncio.sleep(0.01)
        assert not task.done()
        s.sendto(b"two", r.getsockname())
        n, addr_into = await wait(task)
        s.sendto(b"three", r.getsockname())
        plain_data, plain_addr = r.recvfrom(100)
        assert (data, bytes(buf[:n])) == (b"one", b"two")
        assert addr == addr_into == plain_addr
        assert type(addr) is type(plain_addr)
    finally:
        r.close()
        s.close()


# -- sock_connect / sock_accept -------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp4", pytest.param("tcp6", marks=needs_ipv6), "unix"])
async def test_connect_and_accept(kind, sockdir):
    loop = asyncio.get_running_loop()
    lsock, addr = listener(kind, sockdir)
    lsock.setblocking(False)
    client = socket.socket(lsock.family, socket.SOCK_STREAM)
    client.setblocking(False)
    conn = None
    try:
        accepting = asyncio.ensure_future(loop.sock_accept(lsock))
        await asyncio.sleep(0.01)
        assert not accepting.done()
        assert await wait(loop.sock_connect(client, addr)) is None
        conn, peer = await wait(accepting)
        assert conn.gettimeout() == 0           # non-blocking, as asyncio sets it
        assert peer == client.getsockname()
        assert client.getpeername() == addr
        await wait(loop.sock_sendall(client, b"ping"))
        assert await wait(recv_exactly(conn, 4)) == b"ping"
        await wait(loop.sock_sendall(conn, b"pong"))
        assert await wait(recv_exactly(client, 4)) == b"pong"
    finally:
        client.close()
        lsock.close()
        if conn is not None:
            conn.close()


async def test_accept_already_pending_connections(sockdir):
    loop = asyncio.get_running_loop()
    lsock, addr = listener("tcp4")
    lsock.setblocking(False)
    clients = [socket.create_connection(addr) for _ in range(3)]
    conns = []
    try:
        for c in clients:
            conn, peer = await wait(loop.sock_accept(lsock))
            conns.append(conn)
            assert peer == c.getsockname()
    finally:
        for s in clients + conns + [lsock]:
            s.close()


async def test_connect_resolves_a_hostname():
    loop = asyncio.get_running_loop()
    lsock, (host, port) = listener("tcp4")
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        await wait(loop.sock_connect(client, ("localhost", port)))
        assert client.getpeername() == ("127.0.0.1", port)
    finally:
        client.close()
        lsock.close()


@pytest.mark.parametrize("family_host", INET)
async def test_connect_refused(family_host):
    loop = asyncio.get_running_loop()
    family, host = family_host
    port = free_port(family, host)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        with pytest.raises(ConnectionRefusedError) as ei:
            await wait(loop.sock_connect(client, (host, port)))
        assert ei.value.errno == errno.ECONNREFUSED
    finally:
        client.close()


async def test_unix_connect_errors(sockdir):
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(sockdir, "notlistening")
    bound.bind(path)
    try:
        with pytest.raises(FileNotFoundError):
            await wait(loop.sock_connect(client, os.path.join(sockdir, "none")))
        with pytest.raises(ConnectionRefusedError):
            await wait(loop.sock_connect(client, path))
    finally:
        client.close()
        bound.close()


# -- peer reset -------------------------------------------------------------------------------


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_peer_reset_while_waiting(tcp):
    loop = asyncio.get_running_loop()
    a, b = tcp
    pending = asyncio.ensure_future(loop.sock_recv(a, 100))
    await asyncio.sleep(0.01)
    assert not pending.done()
    reset(b)
    with pytest.raises(ConnectionResetError):
        await wait(pending)


async def test_peer_reset_before_recv(tcp):
    loop = asyncio.get_running_loop()
    a, b = tcp
    reset(b)
    await asyncio.sleep(0.01)
    with pytest.raises(ConnectionResetError):
        await wait(loop.sock_recv_into(a, bytearray(10)))
    # reported once; then the connection reads as closed
    assert await wait(loop.sock_recv(a, 10)) == b""


async def test_peer_reset_during_sendall(tcp):
    loop = asyncio.get_running_loop()
    a, b = tcp
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    task = asyncio.ensure_future(loop.sock_sendall(a, b"x" * (8 << 20)))
    await asyncio.sleep(0.02)
    assert not task.done()
    reset(b)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        await wait(task)


# -- misuse --------------------------------------------------------------------------------------


def _calls(s, u, lsock, buf, f):
    """Every sock_* method, as (name, zero-argument coroutine factory)."""
    return [
        ("sock_recv", lambda loop: loop.sock_recv(s, 1)),
        ("sock_recv_into", lambda loop: loop.sock_recv_into(s, buf)),
        ("sock_sendall", lambda loop: loop.sock_sendall(s, b"x")),
        ("sock_connect", lambda loop: loop.sock_connect(s, ("127.0.0.1", 1))),
        ("sock_accept", lambda loop: loop.sock_accept(lsock)),
        ("sock_recvfrom", lambda loop: loop.sock_recvfrom(u, 1)),
        ("sock_recvfrom_into", lambda loop: loop.sock_recvfrom_into(u, buf)),
        ("sock_sendto", lambda loop: loop.sock_sendto(u, b"x", ("127.0.0.1", 1))),
        ("sock_sendfile", lambda loop: loop.sock_sendfile(s, f)),
    ]


async def test_debug_mode_refuses_blocking_sockets():
    loop = asyncio.get_running_loop()
    s = socket.socket()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lsock, _ = listener("tcp4")
    f = tempfile.TemporaryFile()
    loop.set_debug(True)
    try:
        for name, call in _calls(s, u, lsock, bytearray(4), f):
            with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
                await wait(call(loop))
    finally:
        loop.set_debug(False)
        for x in (s, u, lsock, f):
            x.close()


async def test_blocking_socket_accepted_outside_debug_mode():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    try:
        b.send(b"ready")
        assert await wait(loop.sock_recv(a, 10)) == b"ready"
    finally:
        a.close()
        b.close()


async def test_ssl_socket_refused():
    loop = asyncio.get_running_loop()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False)
    u = ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False)
    lsock = ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False)
    for x in (s, u, lsock):
        x.setblocking(False)
    f = tempfile.TemporaryFile()
    try:
        for name, call in _calls(s, u, lsock, bytearray(4), f):
            with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
                await wait(call(loop))
    finally:
        for x in (s, u, lsock, f):
            x.close()


async def test_closed_loop(stream, udp4):
    other = same_kind_loop()
    other.close()
    a, b = stream
    r, s = udp4
    lsock, _ = listener("tcp4")
    lsock.setblocking(False)
    try:
        for call in (lambda: other.sock_recv(b, 10),
                     lambda: other.sock_recv_into(b, bytearray(10)),
                     lambda: other.sock_recvfrom(r, 10),
                     lambda: other.sock_recvfrom_into(r, bytearray(10)),
                     lambda: other.sock_accept(lsock)):
            with pytest.raises(RuntimeError, match="^Event loop is closed$"):
                await wait(call())
        fill(a)
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            await wait(other.sock_sendall(a, b"more" * 100000))
        # what needs no waiting is done all the same, as asyncio does
        b.send(b"there")
        await asyncio.sleep(0.01)
        assert await wait(other.sock_recv(a, 5)) == b"there"
    finally:
        lsock.close()


# -- cancellation --------------------------------------------------------------------------------


async def test_cancelled_recv_loses_no_data(stream):
    loop = asyncio.get_running_loop()
    a, b = stream
    task = asyncio.ensure_future(loop.sock_recv(b, 100))
    await asyncio.sleep(0.01)
    task.cancel()
    a.send(b"after the cancel")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait(loop.sock_recv(b, 100)) == b"after the cancel"


async def test_thousand_cancelled_recvs_lose_nothing():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        for i in range(1000):
            task = asyncio.ensure_future(loop.sock_recv(b, 100))
            await asyncio.sleep(0)          # now waiting in the loop
            assert not task.done()
            task.cancel()
            piece = b"%d," % i
            if i % 10 == 9:
                a.send(piece)               # arrives as the cancel does
            with pytest.raises(asyncio.CancelledError):
                await task
            if i % 10 == 9:
                assert await wait(loop.sock_recv(b, 100)) == piece
        a.send(b"the end")
        assert await wait(loop.sock_recv(b, 100)) == b"the end"
    finally:
        a.close()
        b.close()


async def test_cancelled_recv_into_and_recvfrom_lose_no_data(stream, udp4):
    loop = asyncio.get_running_loop()
    a, b = stream
    r, s = udp4
    buf = bytearray(100)
    t1 = asyncio.ensure_future(loop.sock_recv_into(b, buf))
    t2 = asyncio.ensure_future(loop.sock_recvfrom(r, 100))
    await asyncio.sleep(0.01)
    t1.cancel()
    t2.cancel()
    a.send(b"stream")
    s.sendto(b"dgram", r.getsockname())
    for t in (t1, t2):
        with pytest.raises(asyncio.CancelledError):
            await t
    assert buf == bytes(100)                 # untouched by the cancelled call
    assert await wait(loop.sock_recv(b, 100)) == b"stream"
    assert (await wait(loop.sock_recvfrom(r, 100)))[0] == b"dgram"


async def test_cancelled_accept_loses_no_connection():
    loop = asyncio.get_running_loop()
    lsock, addr = listener("tcp4")
    lsock.setblocking(False)
    task = asyncio.ensure_future(loop.sock_accept(lsock))
    await asyncio.sleep(0.01)
    task.cancel()
    client = socket.create_connection(addr)
    conn = None
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
        conn, peer = await wait(loop.sock_accept(lsock))
        assert peer == client.getsockname()
    finally:
        client.close()
        lsock.close()
        if conn is not None:
            conn.close()


async def test_concurrent_recv_on_two_sockets(sockdir):
    loop = asyncio.get_running_loop()
    (a1, b1) = make_stream_pair("socketpair", sockdir)
    (a2, b2) = make_stream_pair("tcp4", sockdir)
    try:
        t1 = asyncio.ensure_future(loop.sock_recv(b1, 100))
        t2 = asyncio.ensure_future(loop.sock_recv(b2, 100))
        await asyncio.sleep(0.01)
        a2.send(b"second first")
        assert await wait(t2) == b"second first"
        assert not t1.done()
        a1.send(b"then the first")
        assert await wait(t1) == b"then the first"
        # and both at once, many times
        for i in range(50):
            t1 = asyncio.ensure_future(loop.sock_recv(b1, 100))
            t2 = asyncio.ensure_future(loop.sock_recv(b2, 100))
            await asyncio.sleep(0)
            a1.send(b"1-%d" % i)
            a2.send(b"2-%d" % i)
            assert await wait(asyncio.gather(t1, t2)) == [b"1-%d" % i, b"2-%d" % i]
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


# -- sock_sendfile -------------------------------------------------------------------------------


@pytest.fixture
def datafile():
    data = os.urandom((2 << 20) + 123)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        yield f, data


@pytest.mark.parametrize("fallback", [True, False])
async def test_sendfile_regular_file(stream, datafile, fallback):
    loop = asyncio.get_running_loop()
    a, b = stream
    f, data = datafile
    sent, got = await wait(asyncio.gather(
        loop.sock_sendfile(a, f, fallback=fallback), recv_exactly(b, len(data))))
    assert sent == len(data)
    assert got == data
    assert f.tell() == len(data)


async def test_sendfile_offset_and_count(stream, datafile):
    loop = asyncio.get_running_loop()
    a, b = stream
    f, data = datafile
    sent, got = await wait(asyncio.gather(
        loop.sock_sendfile(a, f, 1000, 70000), recv_exactly(b, 70000)))
    assert sent == 70000
    assert got == data[1000:71000]
    assert f.tell() == 71000


async def test_sendfile_fallback_path_with_file_object(stream):
    # not a file the kernel can send from: the read-and-send fallback
    loop = asyncio.get_running_loop()
    a, b = stream
    data = os.urandom(300_000)
    f = io.BytesIO(data)
    sent, got = await wait(asyncio.gather(
        loop.sock_sendfile(a, f), recv_exactly(b, len(data))))
    assert (sent, got, f.tell()) == (len(data), data, len(data))
    f.seek(0)
    with pytest.raises(asyncio.SendfileNotAvailableError):
        await wait(loop.sock_sendfile(a, f, fallback=False))


async def test_sendfile_refuses_datagram_socket(udp4, datafile):
    loop = asyncio.get_running_loop()
    r, s = udp4
    f, data = datafile
    with pytest.raises(ValueError, match="only SOCK_STREAM type sockets are supported"):
        await wait(loop.sock_sendfile(s, f))


# -- aioring only: no io-wq worker for socket work -----------------------------------------------


async def test_socket_echo_creates_no_iou_worker_aioring_only():
    loop = asyncio.get_running_loop()
    if not is_aioring(loop):
        pytest.skip("aioring's own guarantee: socket requests never go to io-wq")
    before = iou_worker_tids()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def echo():
        while True:
            data = await loop.sock_recv(b, 65536)
            if not data:
                return
            await loop.sock_sendall(b, data)

    server = asyncio.ensure_future(echo())
    try:
        for i in range(200):
            msg = b"round trip %d " % i * (1 + i % 50)
            await wait(loop.sock_sendall(a, msg))
            assert await wait(recv_exactly(a, len(msg))) == msg
        a.shutdown(socket.SHUT_WR)
        await wait(server)
    finally:
        server.cancel()
        a.close()
        b.close()
    assert iou_worker_tids() - before == set()
