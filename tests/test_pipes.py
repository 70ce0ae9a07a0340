"""Pipe transports (connect_read_pipe / connect_write_pipe) over os.pipe(),
ptys, FIFOs, socket pairs and character devices: parity with the stock loop
for what the program and the far end observe.

Every test runs on the stock loop and on aioring (conftest hook); the
assertions are the stock loop's behaviour, and where a record is compared
it is with a run on a fresh stock loop in a worker thread (`same_as_stock`).
The far end of a pipe is read or written with plain os.read()/os.write()
(in a daemon thread where it must block), so what is checked is what
crosses the pipe.
"""
import asyncio
import errno
import functools
import os
import socket
import stat
import tempfile
import threading
import tty

import pytest

from _stream_helpers import (
    Recorder, exc_record, same_as_stock, sha, until, wait)

MiB = 1 << 20


class Drainer:
    """Reads a (blocking) descriptor to EOF in a daemon thread, then closes
    it.  `await d.done` gives the bytes.  `delay` holds the first read."""

    def __init__(self, fd, start=True):
        self.loop = asyncio.get_running_loop()
        self.fd = fd
        self.data = bytearray()
        self.done = self.loop.create_future()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if start:
            self.go.set()

    def start(self):
        self.go.set()

    def _run(self):
        self.go.wait()
        exc = None
        try:
            while True:
                b = os.read(self.fd, MiB)
                if not b:
                    break
                self.data += b
        except OSError as e:
            exc = e
        finally:
            os.close(self.fd)
        try:
            self.loop.call_soon_threadsafe(self._finish, exc)
        except RuntimeError:        # the loop is closed: the test is over
            pass

    def _finish(self, exc):
        if not self.done.done():
            if exc is not None and exc.errno != errno.EIO:
                self.done.set_exception(exc)
            else:
                self.done.set_result(bytes(self.data))


async def read_pipe(fileobj, factory=Recorder):
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.connect_read_pipe(factory, fileobj), 10)


async def write_pipe(fileobj, factory=Recorder):
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.connect_write_pipe(factory, fileobj), 10)


async def shut(t):
    """Abort a transport that a failed test left open, and let it go."""
    if t is not None and not t.is_closing():
        (t.abort if hasattr(t, "abort") else t.close)()
    await asyncio.sleep(0.01)


def close_quietly(*fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def writer_events(events):
    """The events without the flow-control pair (whether a write fills the
    pipe depends on its capacity)."""
    return [e for e in events if e not in ("pause_writing", "resume_writing")]


# -- read pipes ----------------------------------------------------------------------


async def test_read_pipe_data_then_eof():
    r, w = os.pipe()
    rf = open(r, "rb", buffering=0)
    order = []

    class P(Recorder):
        def connection_made(self, t):
            order.append("made")
            super().connection_made(t)

    t = None
    try:
        t, p = await read_pipe(rf, P)
        order.append("returned")
        assert order == ["made", "returned"]
        assert os.get_blocking(r) is False          # the loop made it non-blocking
        assert t.get_extra_info("pipe") is rf
        assert t.get_extra_info("no-such-key", 3) == 3
        assert t.get_protocol() is p
        assert t.is_reading() is True and t.is_closing() is False
        os.write(w, b"hello")
        await p.wait_data(5)
        os.write(w, b" world")
        os.close(w)
        w = None
        assert await wait(p.lost) is None
        assert bytes(p.data) == b"hello world"
        assert p.events == ["made", "data", "eof", ("lost", None)]
        assert p.data_types == {"bytes"}
        assert t.is_closing() is True and t.is_reading() is False
        assert rf.closed                            # the transport closed the pipe
    finally:
        if w is not None:
            close_quietly(w)
        await shut(t)


async def test_read_pipe_eof_closes_even_if_eof_received_returns_true():
    # For pipes the stock loop ignores eof_received()'s result: EOF closes.
    r, w = os.pipe()
    t = None
    try:
        t, p = await read_pipe(open(r, "rb", buffering=0),
                               functools.partial(Recorder, eof_result=True))
        os.write(w, b"x")
        os.close(w)
        await wait(p.lost)
        assert p.events == ["made", "data", "eof", ("lost", None)]
        assert t.is_closing()
    finally:
        await shut(t)


async def test_read_pipe_pause_resume():
    r, w = os.pipe()
    t = None
    try:
        t, p = await read_pipe(open(r, "rb", buffering=0))
        t.pause_reading()
        assert t.is_reading() is False
        t.pause_reading()                       # twice: no error
        os.write(w, b"while paused")
        os.close(w)
        await asyncio.sleep(0.1)
        assert p.events == ["made"]             # neither data nor EOF while paused
        t.resume_reading()
        assert t.is_reading() is True
        t.resume_reading()                      # twice: no error
        await wait(p.lost)
        assert bytes(p.data) == b"while paused"
        assert p.events == ["made", "data", "eof", ("lost", None)]
        t.pause_reading()                       # after the end: no-ops
        t.resume_reading()
        assert t.is_reading() is False
    finally:
        await shut(t)


async def test_read_pipe_pause_inside_data_received_16_mib():
    # A slow reader that pauses in every data_received: nothing lost, nothing
    # delivered while paused.
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    blob = os.urandom(16 * MiB)
    paused_deliveries = []

    class Slow(Recorder):
        def data_received(self, data):
            if not self.transport.is_reading():
                paused_deliveries.append(len(data))
            super().data_received(data)
            self.transport.pause_reading()
            loop.call_later(0.0005, self.transport.resume_reading)

    t = None
    writer = threading.Thread(target=_write_all, args=(w, blob), daemon=True)
    try:
        t, p = await read_pipe(open(r, "rb", buffering=0), Slow)
        writer.start()
        await wait(p.lost, 60)
        assert sha(p.data) == sha(blob)
        assert p.events == ["made", "data", "eof", ("lost", None)]
        assert paused_deliveries == []
    finally:
        await shut(t)


def _write_all(fd, data):
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view[:MiB])
            view = view[n:]
    finally:
        os.close(fd)


async def test_read_pipe_close():
    r, w = os.pipe()
    rf = open(r, "rb", buffering=0)
    t = None
    try:
        t, p = await read_pipe(rf)
        t.close()
        assert t.is_closing() is True and t.is_reading() is False
        assert p.events == ["made"]             # connection_lost comes later
        t.close()                               # twice: a no-op
        assert await wait(p.lost) is None
        await asyncio.sleep(0.02)
        assert p.events == ["made", ("lost", None)]
        assert rf.closed
        # the read end is gone: the writer gets EPIPE
        with pytest.raises(BrokenPipeError):
            os.write(w, b"nobody reads")
    finally:
        close_quietly(w)
        await shut(t)


async def test_read_pipe_set_protocol():
    r, w = os.pipe()
    t = None
    try:
        t, p = await read_pipe(open(r, "rb", buffering=0))
        os.write(w, b"first")
        await p.wait_data(5)
        second = Recorder()
        t.set_protocol(second)
        assert t.get_protocol() is second
        os.write(w, b"second")
        os.close(w)
        await wait(second.lost)
        assert bytes(p.data) == b"first" and p.events == ["made", "data"]
        assert bytes(second.data) == b"second"
        assert second.events == ["data", "eof", ("lost", None)]
    finally:
        await shut(t)


async def _read_pipe_read_error():
    # A read error other than EIO (here a reset on a socket used as a pipe)
    # is a fatal error: reported to the exception handler, then
    # connection_lost(exc), no eof_received.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(
        (ctx["message"], exc_record(ctx.get("exception")))))
    a, b = socket.socketpair()
    t = None
    try:
        a.send(b"never read by b")
        t, p = await read_pipe(a)
        b.close()                   # closed with unread data: a reset for `a`
        exc = await wait(p.lost)
        await asyncio.sleep(0.01)
        return {"events": p.events, "exc": exc_record(exc), "contexts": contexts,
                "closed": a.fileno() == -1}
    finally:
        loop.set_exception_handler(None)
        b.close()
        await shut(t)


async def test_read_pipe_read_error_same_as_stock():
    rec = await same_as_stock(_read_pipe_read_error)
    assert rec["events"] == ["made", ("lost", "ConnectionResetError")]
    assert rec["closed"] is True


# -- write pipes -------------------------------------------------------------------------


async def test_write_pipe_write_and_write_eof():
    r, w = os.pipe()
    wf = open(w, "wb", buffering=0)
    order = []

    class P(Recorder):
        def connection_made(self, t):
            order.append("made")
            super().connection_made(t)

    t = None
    drain = Drainer(r)
    try:
        t, p = await write_pipe(wf, P)
        order.append("returned")
        assert order == ["made", "returned"]
        assert os.get_blocking(w) is False
        assert t.get_extra_info("pipe") is wf
        assert t.can_write_eof() is True
        assert t.get_write_buffer_size() == 0
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.write(b"abc")
        t.write(bytearray(b"def"))
        t.write(memoryview(b"xxghixx")[2:5])
        t.write(b"")
        t.writelines([b"j", bytearray(b"k"), memoryview(b"l")])
        t.write_eof()
        assert t.is_closing() is True
        t.write(b"after write_eof")             # dropped silently
        t.write_eof()                           # twice: a no-op
        t.close()                               # after write_eof: a no-op
        assert await wait(drain.done) == b"abcdefghijkl"
        assert await wait(p.lost) is None
        assert p.events == ["made", ("lost", None)]
        assert wf.closed
    finally:
        await shut(t)


async def _write_pipe_misuse():
    r, w = os.pipe()
    t = None
    rec = {}
    drain = Drainer(r)

    def attempt(name, fn, *args, **kw):
        try:
            rec[name] = ("ok", fn(*args, **kw))
        except Exception as exc:
            rec[name] = exc_record(exc)

    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        attempt("write_empty", t.write, b"")
        attempt("limits_bad", t.set_write_buffer_limits, high=1, low=2)
        attempt("limits_neg", t.set_write_buffer_limits, high=-1)
        for kw in ({"high": 100}, {"low": 10}, {"high": 0}, {}):
            t.set_write_buffer_limits(**kw)
            rec[f"limits_{sorted(kw.items())}"] = t.get_write_buffer_limits()
        attempt("write_ok", t.write, b"payload")
        t.close()
        attempt("write_after_close", t.write, b"dropped")
        attempt("write_eof_after_close", t.write_eof)
        attempt("close_twice", t.close)
        attempt("is_closing", t.is_closing)
        await wait(p.lost)
        attempt("write_after_lost", t.write, b"dropped")
        attempt("size_after_lost", t.get_write_buffer_size)
        rec["received"] = await wait(drain.done)
        rec["events"] = p.events
    finally:
        await shut(t)
    return rec


async def test_write_pipe_misuse_same_as_stock():
    rec = await same_as_stock(_write_pipe_misuse)
    assert rec["received"] == b"payload"
    assert rec["limits_bad"][0] == "ValueError"
    assert rec["write_after_close"] == ("ok", None)


async def _write_eof_then_abort():
    # asyncio's write_eof() (nothing buffered) and abort() both schedule
    # connection_lost(): the protocol hears of it once, and the second call
    # reaches the exception handler with the AttributeError its finally
    # raises.  Found by tests/test_properties.py (aioring's second call
    # raised another AttributeError).
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda loop, ctx: seen.append(
        (ctx["message"].split(".")[-1], type(ctx.get("exception")).__name__,
         str(ctx.get("exception")))))
    r, w = os.pipe()
    drain = Drainer(r)
    t, p = await write_pipe(open(w, "wb", buffering=0))
    t.write(b"data")
    t.write_eof()
    t.abort()
    await wait(p.lost)
    received = await wait(drain.done)
    await asyncio.sleep(0.01)
    return {"events": p.events, "handler": seen, "received": received}


async def test_write_pipe_write_eof_then_abort_same_as_stock():
    rec = await same_as_stock(_write_eof_then_abort)
    assert rec["events"] == ["made", ("lost", None)]
    assert rec["received"] == b"data"
    assert [h[1] for h in rec["handler"]] == ["AttributeError"]


async def test_write_pipe_write_not_bytes_raises():
    # The stock transport refuses anything but bytes-like objects (with an
    # assert, so AssertionError; TypeError is what the rest of asyncio
    # raises), and writes nothing.
    r, w = os.pipe()
    t = None
    drain = Drainer(r)
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        for bad in ("text", 42, None):
            with pytest.raises((AssertionError, TypeError)):
                t.write(bad)
        t.write(b"ok")
        t.close()
        assert await wait(drain.done) == b"ok"
        await wait(p.lost)
        assert p.events == ["made", ("lost", None)]
    finally:
        await shut(t)


async def test_write_pipe_flow_control():
    r, w = os.pipe()
    seen = []

    class P(Recorder):
        def pause_writing(self):
            seen.append(("pause", self.transport.get_write_buffer_size()))
            super().pause_writing()

        def resume_writing(self):
            seen.append(("resume", self.transport.get_write_buffer_size()))
            super().resume_writing()

    t = None
    drain = Drainer(r, start=False)
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0), P)
        low, high = 20_000, 50_000
        t.set_write_buffer_limits(high=high, low=low)
        assert t.get_write_buffer_limits() == (low, high)
        small = os.urandom(40_000)
        t.write(small)                          # below the high-water mark
        await asyncio.sleep(0.02)
        assert p.events == ["made"]
        assert t.get_write_buffer_size() == 0   # the pipe took it all
        blob = os.urandom(MiB)
        t.write(blob)                           # nobody reads: the pipe fills up
        sent = small + blob
        await asyncio.sleep(0.05)
        assert t.get_write_buffer_size() > high
        assert p.events == ["made", "pause_writing"]
        drain.start()
        await until(lambda: "resume_writing" in p.events)
        assert t.get_write_buffer_size() <= low
        big = os.urandom(3 * MiB)
        t.write(big)                            # one big write: paused again
        sent += big
        await until(lambda: p.events.count("resume_writing") == 2)
        t.write_eof()
        got = await wait(drain.done, 30)
        assert sha(got) == sha(sent)
        await wait(p.lost)
        assert p.events == ["made", "pause_writing", "resume_writing",
                            "pause_writing", "resume_writing", ("lost", None)]
        assert [k for k, _ in seen] == ["pause", "resume", "pause", "resume"]
        assert all(s > high for k, s in seen if k == "pause")
        assert all(s <= low for k, s in seen if k == "resume")
    finally:
        await shut(t)


async def test_write_pipe_close_flushes_buffered_data():
    r, w = os.pipe()
    wf = open(w, "wb", buffering=0)
    t = None
    drain = Drainer(r, start=False)
    try:
        t, p = await write_pipe(wf)
        blob = os.urandom(MiB)
        t.write(blob)
        assert 0 < t.get_write_buffer_size() <= len(blob)
        t.close()
        assert t.is_closing() is True
        t.write(b"after close")                 # dropped
        await asyncio.sleep(0.05)
        assert p.events == ["made", "pause_writing"]
        assert not wf.closed
        drain.start()
        got = await wait(drain.done)
        assert sha(got) == sha(blob)
        await wait(p.lost)
        assert p.events == ["made", "pause_writing", "resume_writing", ("lost", None)]
        assert t.get_write_buffer_size() == 0
        assert wf.closed
    finally:
        await shut(t)


async def test_write_pipe_abort_drops_buffered_data():
    r, w = os.pipe()
    t = None
    drain = Drainer(r, start=False)
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        blob = os.urandom(MiB)
        t.write(blob)
        assert t.get_write_buffer_size() > 0
        t.abort()
        assert t.is_closing() is True
        assert t.get_write_buffer_size() == 0
        assert p.events == ["made", "pause_writing"]    # lost comes later
        assert await wait(p.lost) is None
        assert p.events == ["made", "pause_writing", ("lost", None)]
        drain.start()
        got = await wait(drain.done)
        # only what the pipe held when the transport let go
        assert 0 < len(got) < len(blob)
        assert got == blob[:len(got)]
    finally:
        await shut(t)


async def test_write_pipe_read_end_closed_while_idle():
    # The stock transport watches a pipe's write end for the read end going
    # away: with nothing buffered that is a plain connection_lost(None).
    r, w = os.pipe()
    t = None
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        t.write(b"read by nobody")
        os.close(r)
        assert await wait(p.lost) is None
        assert p.events == ["made", ("lost", None)]
        assert t.is_closing()
        t.write(b"after")                       # dropped silently
    finally:
        await shut(t)


async def test_write_pipe_read_end_closed_with_buffered_data():
    r, w = os.pipe()
    t = None
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        t.write(os.urandom(MiB))
        assert t.get_write_buffer_size() > 0
        os.close(r)
        exc = await wait(p.lost)
        assert isinstance(exc, BrokenPipeError)
        assert p.events == ["made", "pause_writing", ("lost", "BrokenPipeError")]
        assert t.get_write_buffer_size() == 0
    finally:
        await shut(t)


async def _write_after_read_end_closed():
    # The read end goes away and the program writes before the loop had a
    # chance to notice: the write fails with EPIPE, a fatal error for the
    # transport (no exception handler call for an OSError).
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx["message"]))
    r, w = os.pipe()
    t = None
    try:
        t, p = await write_pipe(open(w, "wb", buffering=0))
        os.close(r)
        try:
            t.write(b"into a broken pipe")
            raised = None
        except Exception as exc:
            raised = exc_record(exc)
        exc = await wait(p.lost)
        await asyncio.sleep(0.01)
        return {"raised": raised, "exc": exc_record(exc), "events": p.events,
                "contexts": contexts, "size": t.get_write_buffer_size()}
    finally:
        loop.set_exception_handler(None)
        await shut(t)


async def test_write_after_read_end_closed_same_as_stock():
    rec = await same_as_stock(_write_after_read_end_closed)
    assert rec["raised"] is None
    assert rec["events"] == ["made", ("lost", "BrokenPipeError")]
    assert rec["contexts"] == []


# -- both ends on the loop: a large transfer ------------------------------------------------


@pytest.mark.timeout(120)
async def test_16_mib_through_a_pipe_both_ends_on_the_loop():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    blob = os.urandom(16 * MiB)
    rt = wt = None

    def slow(p, data):
        if len(p.data) % (3 * MiB) < len(data):     # now and then, pause a little
            p.transport.pause_reading()
            loop.call_later(0.005, p.transport.resume_reading)

    try:
        rt, rp = await read_pipe(open(r, "rb", buffering=0),
                                 functools.partial(Recorder, on_data=slow))
        wt, wp = await write_pipe(open(w, "wb", buffering=0))
        view = memoryview(blob)
        for i in range(0, len(blob), 256 * 1024):
            wt.write(view[i:i + 256 * 1024])
        wt.write_eof()
        await wait(rp.lost, 60)
        await wait(wp.lost, 10)
        assert sha(rp.data) == sha(blob)
        assert rp.events == ["made", "data", "eof", ("lost", None)]
        assert wp.events == ["made", "pause_writing", "resume_writing", ("lost", None)]
    finally:
        await shut(rt)
        await shut(wt)


# -- ptys, FIFOs, sockets, character devices, regular files ------------------------------------


async def test_pty_read_end():
    # A pty is a character device; the stock loop reads its master like a
    # pipe.  When the slave side is closed, the master reads EIO: a
    # connection_lost(OSError(EIO)) without eof_received, and (EIO being
    # the pty's normal end) no exception handler call.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    master, slave = os.openpty()
    tty.setraw(slave)
    mf = open(master, "rb", buffering=0)
    assert stat.S_ISCHR(os.fstat(master).st_mode)
    t = None
    try:
        t, p = await read_pipe(mf)
        os.write(slave, b"hello\n")
        await p.wait_data(6)
        os.write(slave, b"last words")
        os.close(slave)
        slave = None
        exc = await wait(p.lost)
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert bytes(p.data) == b"hello\nlast words"
        assert p.events == ["made", "data", ("lost", "OSError")]
        assert contexts == []
        assert mf.closed
    finally:
        loop.set_exception_handler(None)
        if slave is not None:
            close_quietly(slave)
        await shut(t)


async def test_pty_write_end_and_both_directions():
    master, slave = os.openpty()
    tty.setraw(slave)
    mw = open(os.dup(master), "wb", buffering=0)
    mr = open(master, "rb", buffering=0)
    sw = open(os.dup(slave), "wb", buffering=0)
    sr = open(slave, "rb", buffering=0)
    ts = []
    try:
        wt, wp = await write_pipe(mw)
        rt, rp = await read_pipe(sr)
        ts += [wt, rt]
        wt.write(b"master -> slave")
        await rp.wait_data(15)
        assert bytes(rp.data) == b"master -> slave"
        wt2, wp2 = await write_pipe(sw)
        rt2, rp2 = await read_pipe(mr)
        ts += [wt2, rt2]
        wt2.write(b"slave -> master")
        await rp2.wait_data(15)
        assert bytes(rp2.data) == b"slave -> master"
        # a character device has no reader to watch: closing is plain
        wt.close()
        assert await wait(wp.lost) is None
        assert wp.events == ["made", ("lost", None)]
        assert mw.closed
        for t in (wt2, rt, rt2):
            t.close()
        await wait(wp2.lost)
        await wait(rp.lost)
        await wait(rp2.lost)
        assert rp.events == ["made", "data", ("lost", None)]
    finally:
        for t in ts:
            await shut(t)


async def test_fifo(sdir):
    path = os.path.join(sdir, "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(path, os.O_WRONLY)
    rt = wt = None
    try:
        rt, rp = await read_pipe(open(rfd, "rb", buffering=0))
        wt, wp = await write_pipe(open(wfd, "wb", buffering=0))
        blob = os.urandom(2 * MiB)
        wt.write(blob)
        wt.write_eof()
        await wait(rp.lost, 20)
        await wait(wp.lost)
        assert sha(rp.data) == sha(blob)
        assert rp.events == ["made", "data", "eof", ("lost", None)]
        assert writer_events(wp.events) == ["made", ("lost", None)]
    finally:
        await shut(rt)
        await shut(wt)


async def test_fifo_reader_goes_away(sdir):
    # A FIFO's write end is watched like a pipe's: the reader closing is
    # connection_lost(None) when nothing is buffered.
    path = os.path.join(sdir, "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(path, os.O_WRONLY)
    wt = None
    try:
        wt, wp = await write_pipe(open(wfd, "wb", buffering=0))
        os.close(rfd)
        assert await wait(wp.lost) is None
        assert wp.events == ["made", ("lost", None)]
    finally:
        await shut(wt)


async def test_socketpair_as_pipes():
    a, b = socket.socketpair()
    rt = wt = None
    try:
        rt, rp = await read_pipe(a)
        wt, wp = await write_pipe(b)
        wt.write(b"over a socket")
        await rp.wait_data(13)
        wt.write_eof()
        await wait(rp.lost)
        await wait(wp.lost)
        assert bytes(rp.data) == b"over a socket"
        assert rp.events == ["made", "data", "eof", ("lost", None)]
        assert wp.events == ["made", ("lost", None)]
        assert a.fileno() == -1 and b.fileno() == -1
    finally:
        await shut(rt)
        await shut(wt)
        a.close()
        b.close()


async def test_socket_write_pipe_peer_closes():
    a, b = socket.socketpair()
    wt = None
    try:
        wt, wp = await write_pipe(a)
        wt.write(b"x")
        b.close()
        assert await wait(wp.lost) is None
        assert wp.events == ["made", ("lost", None)]
    finally:
        await shut(wt)
        a.close()


async def test_write_pipe_on_dev_null():
    f = open("/dev/null", "wb", buffering=0)
    t = None
    try:
        t, p = await write_pipe(f)
        t.write(os.urandom(MiB))
        t.write(b"more")
        t.close()
        assert await wait(p.lost) is None
        assert writer_events(p.events) == ["made", ("lost", None)]
        assert f.closed
    finally:
        await shut(t)


async def _regular_file_rejected(sdir):
    loop = asyncio.get_running_loop()
    sub = tempfile.mkdtemp(dir=sdir)
    path = os.path.join(sub, "regular")
    with open(path, "wb") as f:
        f.write(b"data")
    rec = {}
    made = []

    def factory():
        p = Recorder()
        made.append(p)
        return p

    for name, mode, method in (("read", "rb", loop.connect_read_pipe),
                               ("write", "ab", loop.connect_write_pipe)):
        f = open(path, mode, buffering=0)
        try:
            await asyncio.wait_for(method(factory, f), 10)
            rec[name] = "accepted"
        except Exception as exc:
            rec[name] = exc_record(exc, sub)
        rec[name + "_file_closed"] = f.closed
        rec[name + "_blocking"] = os.get_blocking(f.fileno()) if not f.closed else None
        f.close()
    await asyncio.sleep(0.01)
    rec["factory_calls"] = len(made)
    rec["events"] = [p.events for p in made]
    return rec


async def test_regular_file_rejected_same_as_stock(sdir):
    rec = await same_as_stock(_regular_file_rejected, sdir)
    assert rec["read"][0] == "ValueError"
    assert rec["write"][0] == "ValueError"
    assert rec["read_file_closed"] is False
