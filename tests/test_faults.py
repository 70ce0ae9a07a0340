"""Fault tests: what a program observes when things go wrong.

Each scenario runs on both loops where the stock loop has the same scenario,
and compares what the program observes; the aioring-only guarantees (the
provided-buffer ring running dry, a CQ overflow) are `test_aioring_only_*`.

- EMFILE on accept: the exception handler gets asyncio's report, and the
  server accepts the waiting connections once descriptors are free;
- the provided-buffer ring runs dry under paused and slow readers: every
  byte still arrives, in order;
- a CQ overflow forced by a tiny ring (AIORING_RING_ENTRIES): no completion
  lost;
- 10,000 cancelled sock_recv / sock_sendall calls: no byte lost or
  duplicated (asyncio's own guarantees, exactly);
- loop.close() with requests in flight: no crash, no descriptor left, the
  stock loop's warnings;
- transports collected without close(): the stock loop's ResourceWarning;
- exceptions in protocol callbacks reach the exception handler, and the loop
  keeps running.
"""
import asyncio
import errno
import fcntl
import os
import random
import re
import socket
import struct
import termios
import threading

import pytest

import aioring
from _stream_helpers import is_aioring, count_fds, nofile_at_least, same_as_stock, until


# ---- CQ overflow at the loop level (aioring only) ---------------------------

TINY_RING = [("4,8", "1"), ("4,8", "0"), ("2,4", "1")]


@pytest.mark.parametrize("entries,defer", TINY_RING,
                         ids=["sq4-cq8", "sq4-cq8-coop", "sq2-cq4"])
def test_aioring_only_cq_overflow_loses_no_completion(monkeypatch, entries, defer):
    # A ring whose CQ holds 8 (or 4) completions, and hundreds completing at
    # once: sock_recv on socket pairs all made ready by one thread, timers
    # due together, call_soon_threadsafe from another thread, and stream
    # transports echoing.  Every future gets its own bytes, every callback
    # runs once.
    monkeypatch.setenv("AIORING_RING_ENTRIES", entries)
    monkeypatch.setenv("AIORING_DEFER_TASKRUN", defer)
    n = 300
    nofile_at_least(2 * n + 200)

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.t.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        pairs = [socket.socketpair() for _ in range(n)]
        srv = await loop.create_server(Echo, "127.0.0.1", 0, backlog=100)
        streams = [await asyncio.open_connection(*srv.sockets[0].getsockname())
                   for _ in range(40)]
        try:
            for a, b in pairs:
                a.setblocking(False)
            for rnd in range(3):
                tasks = [asyncio.ensure_future(loop.sock_recv(a, 100)) for a, b in pairs]
                await asyncio.sleep(0.02)           # every recv in the kernel
                fired = []
                for i in range(200):
                    loop.call_later(0.01, fired.append, i)

                def peer():
                    for i, (a, b) in enumerate(pairs):
                        b.send(b"%d-%d" % (rnd, i))
                    for i in range(200):
                        loop.call_soon_threadsafe(fired.append, -i - 1)
                th = threading.Thread(target=peer)
                th.start()
                for i, (r, w) in enumerate(streams):
                    w.write(b"echo %d %d\n" % (rnd, i) * 50)
                got = await asyncio.wait_for(asyncio.gather(*tasks), 20)
                echoed = await asyncio.wait_for(asyncio.gather(
                    *(r.readexactly(len(b"echo %d %d\n" % (rnd, i)) * 50)
                      for i, (r, w) in enumerate(streams))), 20)
                th.join()
                await until(lambda: len(fired) == 400)
                assert got == [b"%d-%d" % (rnd, i) for i in range(n)]
                assert echoed == [b"echo %d %d\n" % (rnd, i) * 50 for i in range(len(streams))]
                assert sorted(fired) == list(range(-200, 200))
            return loop._ring_info()
        finally:
            for a, b in pairs:
                a.close()
                b.close()
            for r, w in streams:
                w.close()
            srv.close()

    info = aioring.run(main())
    assert info["cq_entries"] == int(entries.split(",")[1])
    assert info["cq_overflows"] > 0


# ---- the provided-buffer ring runs dry (aioring only) ----------------------

class Reader(asyncio.Protocol):
    """Keeps what it receives; `kind` 'paused' starts paused and resumes a
    while later, 'slow' pauses after each chunk for a millisecond or two."""
    conns = []

    def __init__(self):
        self.data = bytearray()
        self.kind = ("normal", "paused", "slow")[len(Reader.conns) % 3]
        Reader.conns.append(self)

    def connection_made(self, t):
        self.t = t
        if self.kind == "paused":
            t.pause_reading()
            asyncio.get_running_loop().call_later(0.3, t.resume_reading)

    def data_received(self, data):
        self.data += data
        if self.kind == "slow":
            self.t.pause_reading()
            asyncio.get_running_loop().call_later(
                random.uniform(0.001, 0.002), self.t.resume_reading)


def unread(transport):
    # Bytes waiting in the transport's socket (FIONREAD).
    fd = transport.get_extra_info("socket").fileno()
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


@pytest.mark.parametrize("multishot", ["1", "0"], ids=["multishot", "single-shot"])
def test_aioring_only_exhausted_buffer_ring_loses_nothing(monkeypatch, multishot):
    # A pool of one buffer that may grow to four, 150 connections receiving
    # at once, a third of them paused and a third pausing after each chunk:
    # receives end with ENOBUFS over and over, and every connection still
    # gets every byte, in order.
    monkeypatch.setenv("AIORING_RECV_BUFFERS", "1")
    monkeypatch.setenv("AIORING_RECV_BUFFERS_MAX", "4")
    monkeypatch.setenv("AIORING_RECV_MULTISHOT", multishot)
    n = 150
    nofile_at_least(2 * n + 100)
    rnd = random.Random(8)
    payloads = [b"".join(rnd.randbytes(rnd.randrange(1, 64 * 1024)) for _ in range(3))
                for _ in range(n)]

    async def main():
        loop = asyncio.get_running_loop()
        Reader.conns = []
        srv = await loop.create_server(Reader, "127.0.0.1", 0, backlog=n + 50)
        addr = srv.sockets[0].getsockname()
        clients = [socket.create_connection(addr) for _ in range(n)]
        try:
            await until(lambda: len(Reader.conns) == n)
            by_peer = {r.t.get_extra_info("peername"): r for r in Reader.conns}
            readers = [by_peer[c.getsockname()] for c in clients]

            def send_all():
                for c, p in zip(clients, payloads):
                    c.sendall(p)
            sender = threading.Thread(target=send_all)
            sender.start()
            await until(lambda: all(len(r.data) == len(p) for r, p in zip(readers, payloads)),
                        timeout=60)
            sender.join()
            same = [bytes(r.data) == p for r, p in zip(readers, payloads)]
            grew_to = loop.stats()["recv_buffers_provided"]

            # How far the pool grows above depends on how the sender's
            # chunks and the readers' pauses happened to interleave.  Now
            # make it certain: every connection holds unread data when all
            # of them resume at once, so a single submission asks for 150
            # buffers; the pool grows once per iteration until it is full.
            await asyncio.sleep(0.05)           # the slow readers' resumes
            for r in readers:
                r.kind = "normal"
                r.t.pause_reading()
            tail = [bytes([i % 251]) * 1000 for i in range(n)]
            for c, t in zip(clients, tail):
                c.sendall(t)
            await until(lambda: all(unread(r.t) == 1000 for r in readers))
            for r in readers:
                r.t.resume_reading()
            await until(lambda: all(len(r.data) == len(p) + 1000 for r, p in zip(readers, payloads)))
            same += [bytes(r.data[len(p):]) == t for r, p, t in zip(readers, payloads, tail)]
            return same, grew_to, loop._ring_info()
        finally:
            for c in clients:
                c.close()
            srv.close()
            await srv.wait_closed()

    same, grew_to, info = aioring.run(main())
    assert all(same)
    assert 1 <= grew_to <= 4
    assert info["recv_buffer_ring"] and info["recv_buffers_provided"] == 4
    assert info["recv_enobufs"] > 0
    assert info["recv_multishot"] is (multishot == "1")


def test_aioring_only_ring_entries_checked(monkeypatch):
    monkeypatch.setenv("AIORING_RING_ENTRIES", "8,2")     # CQ smaller than SQ
    with pytest.raises(ValueError, match="AIORING_RING_ENTRIES"):
        aioring.new_event_loop()


# ---- 10,000 cancelled sock_recv / sock_sendall --------------------------------

CALLS = 10_000


def _cancel_at_random(task, rnd):
    # Cancels the task unless the future it waits for is already done: then
    # the task has its result and only waits for its turn to run, and a
    # cancellation would throw that result away on either loop (asyncio's
    # own race, not the loop's; a program cannot tell this moment apart).
    waiter = getattr(task, "_fut_waiter", None)
    if not task.done() and not (waiter is not None and waiter.done()):
        task.cancel()


async def test_cancelled_sock_recv_lose_and_duplicate_nothing():
    # A peer streams numbered data; 10,000 sock_recv calls, most cancelled
    # at a random moment.  What the calls returned is the stream, exactly.
    loop = asyncio.get_running_loop()
    rnd = random.Random(8)
    a, b = socket.socketpair()
    a.setblocking(False)
    block = bytes(random.Random(9).getrandbits(8) for _ in range(1 << 16))
    stop = threading.Event()
    sent = []

    def writer():
        r = random.Random(10)
        i = 0
        while not stop.is_set():
            n = r.randint(1, 3000)
            chunk = (block[i % len(block):] + block)[:n]
            b.sendall(chunk)
            i += n
        sent.append(i)
        b.close()

    th = threading.Thread(target=writer)
    th.start()
    got = bytearray()
    cancelled = calls = 0
    try:
        while True:
            calls += 1
            if calls == CALLS:
                stop.set()
            t = asyncio.ensure_future(loop.sock_recv(a, rnd.randint(1, 4000)))
            for _ in range(rnd.randint(0, 3)):
                await asyncio.sleep(0)
            _cancel_at_random(t, rnd)
            try:
                data = await t
            except asyncio.CancelledError:
                cancelled += 1
                continue
            if not data:
                break
            got += data
    finally:
        stop.set()
        await loop.run_in_executor(None, th.join)
        a.close()
    assert calls >= CALLS and cancelled > CALLS // 10
    total = sent[0]
    assert len(got) == total
    assert got == (block * (total // len(block) + 1))[:total]


def _check_prefixes(received, payloads, finished):
    """That `received` is p[0][:s0] + p[1][:s1] + ..., with s = len(p) for
    every finished call.  Each payload is one byte value (its call's index
    modulo 251, plus 1): runs of one value in `received` belong to calls of
    that value, several of them only when every call between sent nothing.

    Which call of its value a run starts with can be ambiguous (calls that
    were cancelled before they sent anything may be many), so every reading
    is followed: `states` holds each call index the next run may start from."""
    period = 251
    n = len(payloads)
    # first_finished[k]: the first finished call from k on (n if none)
    first_finished = [n] * (n + 1)
    for k in range(n - 1, -1, -1):
        first_finished[k] = k if finished[k] else first_finished[k + 1]
    states = {0}
    for m in re.finditer(rb"(.)\1*", bytes(received), re.S):
        color, length = m.group(1)[0], len(m.group(0))
        after = set()
        for k in states:
            # the run's first call: one of that value from k on, with no
            # finished call before it (those would have sent bytes first)
            for first in range(k, min(first_finished[k], n - 1) + 1):
                if payloads[first][0] != color:
                    continue
                least = most = 0
                last = first
                while last < n:
                    # calls first, first + 251, ..., last make up the run,
                    # every call between them sent nothing
                    least += len(payloads[last]) if finished[last] else 0
                    most += len(payloads[last])
                    if least > length:
                        break
                    if most >= length:
                        after.add(last + 1)
                    nxt = last + period
                    if nxt >= n or first_finished[last + 1] < nxt:
                        break
                    last = nxt
        assert after, ("bytes out of order, missing or duplicated", m.start(), sorted(states)[:5])
        states = after
    assert any(first_finished[k] == n for k in states), "a finished call's bytes are missing"


async def test_cancelled_sock_sendall_send_prefixes_in_order():
    # 10,000 sock_sendall calls, most cancelled at a random moment, while
    # the peer reads (slowly at times).  asyncio's guarantee: a cancelled
    # sock_sendall may have sent part of its data, never anything after
    # a later call's; a finished one sent all of it.  So the peer receives
    # a prefix of each call's data, in call order.
    loop = asyncio.get_running_loop()
    rnd = random.Random(18)
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    a.setblocking(False)
    received = bytearray()

    def reader():
        r = random.Random(19)
        while True:
            d = b.recv(1 << 16)
            if not d:
                break
            received.extend(d)
            if r.random() < 0.02:
                stop.wait(0.0005)

    stop = threading.Event()
    th = threading.Thread(target=reader)
    th.start()
    payloads, finished = [], []
    try:
        for k in range(CALLS):
            p = bytes([k % 251 + 1]) * rnd.randint(1, 6000)
            payloads.append(p)
            t = asyncio.ensure_future(loop.sock_sendall(a, p))
            for _ in range(rnd.randint(0, 3)):
                await asyncio.sleep(0)
            _cancel_at_random(t, rnd)
            try:
                await t
                finished.append(True)
            except asyncio.CancelledError:
                finished.append(False)
        await asyncio.sleep(0.05)       # a cancelled request's last completion
    finally:
        a.close()
        await loop.run_in_executor(None, th.join)
        b.close()
    assert finished.count(False) > CALLS // 10
    _check_prefixes(received, payloads, finished)


def test_check_prefixes_itself():
    p = [bytes([k % 251 + 1]) * 3 for k in range(600)]
    fin = [True] * 600
    _check_prefixes(b"".join(p), p, fin)
    fin[1] = fin[260] = False
    _check_prefixes(b"".join(p[:1] + p[2:260] + [p[260][:1]] + p[261:]), p, fin)
    # calls 2..252 cancelled before sending: call 1's and 252's bytes merge
    fin = [True] + [False] * 252 + [True] * 347
    _check_prefixes(b"".join([p[0], p[1][:2], p[252]] + p[253:]), p, fin)
    # calls 1..260 cancelled, only 252 sending (part of) its bytes: the run
    # of call 252's value is not call 1's (a reading CI once tripped on)
    fin = [True] + [False] * 260 + [True] * 339
    _check_prefixes(b"".join([p[0], p[252][:2]] + p[261:]), p, fin)
    with pytest.raises(AssertionError):     # a finished call's bytes twice
        _check_prefixes(b"".join(p[:5] + p[4:]), p, [True] * 600)
    with pytest.raises(AssertionError):
        _check_prefixes(b"".join(p[:1] + p[2:]), p, [True] * 600)
    with pytest.raises(AssertionError):        # out of order
        _check_prefixes(b"".join([p[0], p[2], p[1]] + p[3:]), p, [True, False, False] + [True] * 597)


# ---- EMFILE on accept -------------------------------------------------------------

class EchoProto(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.t.write(data)


def _context_record(ctx):
    exc = ctx.get("exception")
    return (ctx["message"], type(exc).__name__, getattr(exc, "errno", None),
            sorted(ctx))


async def test_emfile_on_accept_then_serves_again():
    import resource
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
    srv = await loop.create_server(EchoProto, "127.0.0.1", 0, backlog=10)
    addr = srv.sockets[0].getsockname()
    await asyncio.sleep(0.01)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = [socket.socket() for _ in range(3)]
    fillers = []
    try:
        # descriptors run out: the lowest free numbers are taken up to a
        # limit just above the highest in use
        highest = max(map(int, os.listdir("/proc/self/fd")))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
        while True:
            try:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as e:
                assert e.errno == errno.EMFILE
                break
        for c in clients:
            c.connect(addr)         # completes in the backlog; accept() fails
        await until(lambda: reports, timeout=5)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        for i, c in enumerate(clients):
            c.setblocking(False)
            msg = b"hello %d" % i
            await loop.sock_sendall(c, msg)
            got = b""
            while len(got) < len(msg):
                got += await asyncio.wait_for(loop.sock_recv(c, 100), 5)
            assert got == msg
    finally:
        for c in clients:
            c.close()
        srv.close()
        await srv.wait_closed()
    records = {_context_record(ctx)[:3] for ctx in reports}
    assert records == {("socket.accept() out of system resource", "OSError", errno.EMFILE)}
    assert all(sorted(ctx) == ["exception", "message", "socket"] for ctx in reports)
    assert all(ctx["socket"].fileno() == -1 or isinstance(ctx["socket"], asyncio.trsock.TransportSocket)
               for ctx in reports)
    assert str(reports[0]["exception"]) == "[Errno 24] Too many open files"


# ---- exceptions in protocol callbacks --------------------------------------------

class Boom(Exception):
    pass


def _norm(text):
    # reprs name each loop's own classes and addresses
    text = re.sub(r"0x[0-9a-f]+", "0x", text)
    text = re.sub(r"<[^<>]*(<[^<>]*>[^<>]*)*>", "<>", text)
    # the handle's callback is a method of each loop's own transport class
    return re.sub(r"callback \w+\.(\w+)", r"callback <transport>.\1", text)


def _ctx(ctx):
    exc = ctx.get("exception")
    return (_norm(ctx["message"]).split("(")[0], type(exc).__name__,
            tuple(sorted(k for k in ctx if k not in ("handle", "transport", "protocol"))),
            "protocol" in ctx or "handle" in ctx)


def _raising(base, name):
    def method(self, *args):
        if name in ("get_buffer",):
            if self.raised:
                return bytearray(100)
        self.raised = True
        raise Boom(name)
    return type("Raising_" + name, (base,), {name: method, "raised": False})


STREAM_CALLBACKS = [
    (asyncio.Protocol, "connection_made"),
    (asyncio.Protocol, "data_received"),
    (asyncio.Protocol, "eof_received"),
    (asyncio.Protocol, "connection_lost"),
    (asyncio.BufferedProtocol, "get_buffer"),
    (asyncio.BufferedProtocol, "buffer_updated"),
]


async def _stream_callback_raises(base, name):
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(_ctx(ctx)))
    cls = _raising(base, name)
    if base is asyncio.BufferedProtocol and name != "get_buffer":
        cls.get_buffer = lambda self, n: bytearray(100)
    srv = await loop.create_server(cls, "127.0.0.1", 0)
    addr = srv.sockets[0].getsockname()
    r, w = await asyncio.open_connection(*addr)
    w.write(b"x")
    await asyncio.sleep(0.05)
    w.write_eof()
    await asyncio.sleep(0.05)
    w.close()
    await asyncio.sleep(0.05)
    # the loop goes on: an echo on a new server
    srv2 = await loop.create_server(EchoProto, "127.0.0.1", 0)
    r2, w2 = await asyncio.open_connection(*srv2.sockets[0].getsockname())
    w2.write(b"ping")
    echoed = await asyncio.wait_for(r2.readexactly(4), 5)
    w2.close()
    srv.close()
    srv2.close()
    await asyncio.sleep(0.05)
    return reports, echoed


@pytest.mark.parametrize("base,name", STREAM_CALLBACKS,
                         ids=[f"{b.__name__}.{n}" for b, n in STREAM_CALLBACKS])
async def test_exception_in_stream_callback(base, name):
    reports, echoed = await same_as_stock(_stream_callback_raises, base, name)
    assert echoed == b"ping"
    assert reports and all(r[1] == "Boom" for r in reports)


async def _echo_still_works():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(EchoProto, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
    w.write(b"ping")
    echoed = await asyncio.wait_for(r.readexactly(4), 5)
    w.close()
    srv.close()
    await asyncio.sleep(0.02)
    return echoed


async def _other_callback_raises(kind, name):
    loop = asyncio.get_running_loop()
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(_ctx(ctx)))
    if kind == "datagram":
        cls = _raising(asyncio.DatagramProtocol, name)
        if name == "datagram_received":
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            t, p = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
            for i in range(2):
                peer.sendto(b"d%d" % i, t.get_extra_info("sockname"))
                await asyncio.sleep(0.05)
            peer.close()
        else:
            # a connected socket whose peer is gone: ECONNREFUSED
            gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            gone.bind(("127.0.0.1", 0))
            addr = gone.getsockname()
            gone.close()
            t, p = await loop.create_datagram_endpoint(cls, remote_addr=addr)
            for i in range(2):
                t.sendto(b"x")
                await asyncio.sleep(0.05)
        t.close()
    elif kind == "pipe":
        cls = _raising(asyncio.Protocol, name)
        rfd, wfd = os.pipe()
        t, p = await loop.connect_read_pipe(cls, os.fdopen(rfd, "rb", 0))
        for i in range(2):
            os.write(wfd, b"x")
            await asyncio.sleep(0.05)
        os.close(wfd)
        await asyncio.sleep(0.05)
        t.close()
    else:
        import sys
        cls = _raising(asyncio.SubprocessProtocol, name)
        t, p = await loop.subprocess_exec(
            cls, sys.executable, "-c", "import sys; sys.stdout.write('out'); sys.stdout.flush()",
            stdin=None, stderr=None)
        for _ in range(100):
            if t.get_returncode() is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        t.close()
    await asyncio.sleep(0.05)
    return reports, await _echo_still_works()


OTHER_CALLBACKS = [
    ("datagram", "datagram_received"),
    ("datagram", "error_received"),
    ("pipe", "data_received"),
    ("pipe", "eof_received"),
    ("subprocess", "pipe_data_received"),
    ("subprocess", "pipe_connection_lost"),
    ("subprocess", "process_exited"),
]


@pytest.mark.parametrize("kind,name", OTHER_CALLBACKS, ids=[f"{k}.{n}" for k, n in OTHER_CALLBACKS])
async def test_exception_in_other_callback(kind, name):
    reports, echoed = await same_as_stock(_other_callback_raises, kind, name)
    assert echoed == b"ping"
    assert reports and all(r[1] == "Boom" for r in reports)


# ---- transports collected without close() ---------------------------------------------

def _warning_texts(caught):
    return sorted((w.category.__name__, str(w.message).split("<")[0].strip(),
                   str(w.message).split("<")[1].split()[0] if "<" in str(w.message) else "")
                  for w in caught)


def test_transport_collected_without_close_warns(any_loop):
    # A transport nobody holds is garbage once the loop no longer reads from
    # it (paused): it warns as the stock transport does (asyncio's own
    # __del__: "unclosed transport <...>", and the socket's own warning) and
    # its descriptor is closed.  One that reads is held by the loop on both
    # (the stock loop's selector, aioring's receive) and keeps working.
    import gc
    import warnings
    loop = any_loop
    srv_side = []
    got = []

    class Keep(asyncio.Protocol):
        def connection_made(self, t):
            srv_side.append(t)

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            got.append(data)

    async def open_some():
        srv = await loop.create_server(Keep, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        for _ in range(3):
            t, _ = await loop.create_connection(asyncio.Protocol, *addr)
            t.pause_reading()
        await loop.create_connection(Reader, *addr)
        await until(lambda: len(srv_side) == 4)
        await asyncio.sleep(0.02)
        return srv

    gc.collect()        # earlier tests' garbage
    srv = loop.run_until_complete(open_some())
    fds = count_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        loop.run_until_complete(asyncio.sleep(0.05))
        gc.collect()
    texts = _warning_texts(caught)
    transport_class = "_SocketTransport" if is_aioring(loop) else "_SelectorSocketTransport"
    assert texts == ([("ResourceWarning", "unclosed", "socket.socket")] * 3 +
                     [("ResourceWarning", "unclosed transport", transport_class)] * 3), texts
    loop.run_until_complete(asyncio.sleep(0.05))
    # the three sockets, and their server sides, which saw the EOF and closed
    assert count_fds() == fds - 6
    # the reading one still receives
    srv_side[3].write(b"still here")
    loop.run_until_complete(until(lambda: b"".join(got) == b"still here"))
    for t in srv_side:
        t.close()
    srv.close()
    loop.run_until_complete(srv.wait_closed())
    loop.run_until_complete(asyncio.sleep(0.02))


# ---- loop.close() with requests in flight ------------------------------------------

def _close_with_requests_in_flight(make):
    import concurrent.futures
    import gc
    import logging
    import time
    import warnings

    class Catch(logging.Handler):
        def emit(self, record):
            logged.append(_norm(record.getMessage()).split(" <")[0].split("\n")[0])

    logged = []
    handler = Catch()
    logging.getLogger("asyncio").addHandler(handler)
    gc.collect()
    fds = count_fds()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop = make()
            executor = concurrent.futures.ThreadPoolExecutor(1)
            loop.set_default_executor(executor)
            keep = []

            async def main():
                srv = await loop.create_server(EchoProto, "127.0.0.1", 0)
                addr = srv.sockets[0].getsockname()
                r, w = await asyncio.open_connection(*addr)     # a read pending
                a, b = socket.socketpair()
                a.setblocking(False)
                lsock = socket.socket()
                lsock.bind(("127.0.0.1", 0))
                lsock.listen()
                lsock.setblocking(False)
                # a send in flight: a peer that does not read
                sink = socket.socket()
                sink.bind(("127.0.0.1", 0))
                sink.listen()
                t, p = await loop.create_connection(asyncio.Protocol, *sink.getsockname())
                t.write(b"x" * (8 << 20))
                keep.extend([srv, r, w, a, b, lsock, sink, t,
                             loop.create_task(loop.sock_recv(a, 100)),
                             loop.create_task(loop.sock_accept(lsock)),
                             loop.create_task(r.read(100)),
                             loop.run_in_executor(None, time.sleep, 0.2),
                             loop.call_later(100, print)])
                await asyncio.sleep(0.05)
                loop.call_soon(loop.stop)
                await loop.create_future()              # never

            keep.append(loop.create_task(main()))
            loop.run_forever()
            loop.close()
            executor.shutdown(wait=True)
            for x in keep:
                if isinstance(x, socket.socket):
                    x.close()
            del keep, loop, main
            gc.collect()
            gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    warned = sorted({(w.category.__name__, str(w.message).split("<")[0].strip()) for w in caught})
    return warned, sorted(set(logged)), count_fds() - fds


def test_close_with_requests_in_flight():
    # Descriptors are counted while the recorded warnings still hold their
    # sources (the unclosed transports, and through them the closed loop):
    # aioring's closed loop held the server's listening socket then (its
    # listener table), the stock loop's does not.
    stock = _close_with_requests_in_flight(asyncio.SelectorEventLoop)
    mine = _close_with_requests_in_flight(aioring.new_event_loop)
    assert mine == stock
    assert stock[2] == 0
