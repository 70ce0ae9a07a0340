"""Stream transports (TCP over 127.0.0.1 and ::1, Unix sockets): parity with
the stock loop for what the program and the peer observe.

Each test runs on the stock loop and on aioring (conftest hook); the
assertions are the stock loop's behaviour.  Version-dependent details
(messages, 3.12+ writelines) are compared with a run on a fresh stock loop
in a worker thread (`same_as_stock`).
"""
import asyncio
import functools
import os
import socket
import struct
import tempfile

import pytest

from _stream_helpers import (
    until,
    KINDS, Factory, Recorder, exc_record, open_pair, same_as_stock, sha,
    skip_unless_kind, wait)

MiB = 1 << 20


@pytest.fixture(params=KINDS)
def kind(request):
    skip_unless_kind(request.param)
    return request.param


def lost_name(exc):
    return ("lost", type(exc).__name__ if exc else None)


def no_flow(events):
    """The events without pause_writing/resume_writing (whether a write
    fills the kernel buffer depends on the socket kind)."""
    out = []
    for e in events:
        if e in ("pause_writing", "resume_writing"):
            continue
        if out and e == "data" and out[-1] == "data":
            continue
        out.append(e)
    return out


def pause_on_made(p, t):
    t.pause_reading()


def echo(p, data):
    p.transport.write(data)


# -- echo and callback order --------------------------------------------------

async def test_echo_callback_order(kind, sdir):
    pair = await open_pair(kind, sdir, Factory(on_data=echo))
    try:
        payload = os.urandom(300_000)
        for i in range(0, len(payload), 10_000):
            pair.ct.write(payload[i:i + 10_000])
        pair.ct.write_eof()
        await wait(pair.cp.lost)
        await wait(pair.sp.lost)
        assert sha(pair.cp.data) == sha(payload)
        assert sha(pair.sp.data) == sha(payload)
        # the peer closes after its EOF (eof_received returned None), its
        # close flushes the echo first
        assert no_flow(pair.sp.events) == ["made", "data", "eof", ("lost", None)]
        assert no_flow(pair.cp.events) == ["made", "data", "eof", ("lost", None)]
        assert pair.cp.data_types == pair.sp.data_types == {"bytes"}
        assert pair.ct.is_closing() and pair.st.is_closing()
    finally:
        await pair.aclose()


async def test_connection_made_runs_before_create_connection_returns(kind, sdir):
    order = []

    class P(Recorder):
        def connection_made(self, t):
            order.append("made")
            super().connection_made(t)

    pair = await open_pair(kind, sdir, client_factory=P)
    order.append("returned")
    try:
        assert order == ["made", "returned"]
        assert pair.ct.get_protocol() is pair.cp
    finally:
        await pair.aclose()


# -- half close ------------------------------------------------------------------

async def test_write_eof_half_close(kind, sdir):
    def reply_then_close(p):
        p.transport.write(b"reply:" + bytes(p.data))
        p.transport.close()

    pair = await open_pair(kind, sdir, Factory(eof_result=True, on_eof=reply_then_close))
    try:
        ct = pair.ct
        assert ct.can_write_eof() is True
        assert pair.st.can_write_eof() is True
        ct.write(b"request")
        ct.write_eof()
        assert not ct.is_closing()
        assert ct.is_reading()
        with pytest.raises(RuntimeError, match="write_eof"):
            ct.write(b"more")
        ct.write_eof()              # a second write_eof() is a no-op
        await wait(pair.cp.lost)
        await wait(pair.sp.lost)
        # the peer got EOF and could still send back
        assert bytes(pair.cp.data) == b"reply:request"
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
        assert pair.cp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        await pair.aclose()


async def test_peer_half_close_keep_open(kind, sdir):
    # Our eof_received returns True: the transport stays open for writing.
    def answer(p):
        p.transport.write(b"after-eof")
        p.transport.write_eof()

    pair = await open_pair(
        kind, sdir, Factory(on_eof=lambda p: None),
        client_factory=functools.partial(Recorder, eof_result=True, on_eof=answer))
    try:
        pair.st.write(b"hello")
        pair.st.write_eof()
        await wait(pair.sp.lost)
        await wait(pair.cp.eof)
        assert bytes(pair.cp.data) == b"hello"
        assert bytes(pair.sp.data) == b"after-eof"
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
        # keep_open: the transport is not closed by the EOF
        assert pair.cp.events == ["made", "data", "eof"]
        assert not pair.ct.is_closing()
        pair.ct.close()
        await wait(pair.cp.lost)
        assert pair.cp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        await pair.aclose()


# -- writelines, write misuse, buffer limits ---------------------------------------

async def test_writelines(kind, sdir):
    pair = await open_pair(kind, sdir)
    try:
        big = os.urandom(2 * MiB)
        parts = [b"a", bytearray(b"bc"), memoryview(b"def"), b"", big]
        pair.ct.writelines(parts)
        pair.ct.writelines(iter([b"x", b"yz"]))
        pair.ct.writelines([])
        pair.ct.write(b"end")
        pair.ct.write_eof()
        expected = b"abcdef" + big + b"xyzend"
        await wait(pair.sp.lost)
        assert sha(pair.sp.data) == sha(expected)
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        await pair.aclose()


async def _transport_misuse(kind, sdir):
    sub = tempfile.mkdtemp(dir=sdir)
    pair = await open_pair(kind, sub)
    rec = {}
    ct = pair.ct

    def attempt(name, fn, *args, **kw):
        try:
            rec[name] = ("ok", fn(*args, **kw))
        except Exception as exc:
            rec[name] = exc_record(exc)

    try:
        rec["limits_default"] = ct.get_write_buffer_limits()
        attempt("write_str", ct.write, "text")
        attempt("write_int", ct.write, 42)
        attempt("write_none", ct.write, None)
        attempt("writelines_str", ct.writelines, ["text"])
        attempt("writelines_notiter", ct.writelines, 42)
        attempt("write_empty", ct.write, b"")
        attempt("limits_bad", ct.set_write_buffer_limits, high=1, low=2)
        attempt("limits_neg", ct.set_write_buffer_limits, high=-1)
        attempt("limits_neg_low", ct.set_write_buffer_limits, low=-1)
        rec["limits_after_errors"] = ct.get_write_buffer_limits()
        for kw in ({"high": 100}, {"low": 10}, {"high": 0}, {"high": 8, "low": 8}, {}):
            ct.set_write_buffer_limits(**kw)
            rec[f"limits_{sorted(kw.items())}"] = ct.get_write_buffer_limits()
        rec["size"] = ct.get_write_buffer_size()
        rec["extra_default"] = ct.get_extra_info("no-such-key", "dflt")
        rec["extra_none"] = ct.get_extra_info("no-such-key")
        rec["peercert"] = ct.get_extra_info("peercert")
        ct.write_eof()
        attempt("write_after_eof", ct.write, b"x")
        attempt("write_empty_after_eof", ct.write, b"")
        attempt("writelines_after_eof", ct.writelines, [b"x"])
        attempt("write_eof_twice", ct.write_eof)
        attempt("can_write_eof", ct.can_write_eof)
        ct.close()
        attempt("write_after_close", ct.write, b"x")
        attempt("close_twice", ct.close)
        attempt("abort_after_close", ct.abort)
        attempt("pause_after_close", ct.pause_reading)
        attempt("resume_after_close", ct.resume_reading)
        attempt("is_reading_after_close", ct.is_reading)
        attempt("write_eof_after_close", ct.write_eof)
        await wait(pair.cp.lost)
        rec["events"] = pair.cp.events
        attempt("write_after_lost", ct.write, b"x")
        attempt("size_after_lost", ct.get_write_buffer_size)
    finally:
        await pair.aclose()
    return rec


async def test_transport_misuse_same_as_stock(kind, sdir):
    rec = await same_as_stock(_transport_misuse, kind, sdir)
    assert rec["limits_default"] == (16384, 65536)
    assert rec["write_str"][0] == "TypeError"
    assert rec["write_after_eof"][0] == "RuntimeError"
    assert rec["limits_bad"][0] == "ValueError"


# -- partial sends, flow control -----------------------------------------------------

async def test_partial_sends_to_slow_reader(kind, sdir):
    loop = asyncio.get_running_loop()

    def slow(p, data):
        p.transport.pause_reading()
        loop.call_later(0.001, p.transport.resume_reading)

    pair = await open_pair(kind, sdir, Factory(on_data=slow))
    try:
        blob = os.urandom(8 * MiB)
        ct = pair.ct
        ct.write(blob[:6 * MiB])
        first = ct.get_write_buffer_size()
        assert 0 < first <= 6 * MiB        # the kernel took what it could
        assert pair.cp.events == ["made", "pause_writing"]
        ct.write(blob[6 * MiB:7 * MiB])
        ct.writelines([blob[7 * MiB:7 * MiB + 10], blob[7 * MiB + 10:]])
        assert ct.get_write_buffer_size() >= 2 * MiB
        await pair.sp.wait_data(len(blob), 30)
        await until(lambda: ct.get_write_buffer_size() == 0)
        assert sha(pair.sp.data) == sha(blob)
        assert pair.cp.events == ["made", "pause_writing", "resume_writing"]
    finally:
        await pair.aclose()


async def test_flow_control_at_the_limits(kind, sdir):
    # pause_writing is called when the buffer goes above `high`, and
    # resume_writing when it comes back to `low` or below.
    seen = []

    class P(Recorder):
        def pause_writing(self):
            seen.append(("pause", self.transport.get_write_buffer_size()))
            super().pause_writing()

        def resume_writing(self):
            seen.append(("resume", self.transport.get_write_buffer_size()))
            super().resume_writing()

    loop = asyncio.get_running_loop()

    def slow(p, data):
        p.transport.pause_reading()
        loop.call_later(0.001, p.transport.resume_reading)

    pair = await open_pair(kind, sdir, Factory(on_data=slow), client_factory=P)
    try:
        ct = pair.ct
        low, high = 50_000, 200_000
        ct.set_write_buffer_limits(high=high, low=low)
        assert ct.get_write_buffer_limits() == (low, high)
        chunk = os.urandom(64 * 1024)
        sent = 0
        while sent < 12 * MiB:
            # write until the transport asks us to stop, then wait for resume
            while pair.cp.events[-1] != "pause_writing" and sent < 12 * MiB:
                ct.write(chunk)
                sent += len(chunk)
            if pair.cp.events[-1] == "pause_writing":
                await until(lambda: pair.cp.events[-1] == "resume_writing")
        await pair.sp.wait_data(sent, 30)
        await until(lambda: ct.get_write_buffer_size() == 0)
        assert len(pair.sp.data) == sent
        pauses = [s for k, s in seen if k == "pause"]
        resumes = [s for k, s in seen if k == "resume"]
        assert pauses and len(pauses) - len(resumes) in (0, 1)
        assert all(s > high for s in pauses)
        assert all(s <= low for s in resumes)
        kinds_seen = [k for k, _ in seen]
        assert kinds_seen == ["pause", "resume"] * (len(kinds_seen) // 2) + ["pause"] * (len(kinds_seen) % 2)
    finally:
        await pair.aclose()


# -- abort, close ---------------------------------------------------------------------

async def test_abort_with_data_queued(kind, sdir):
    pair = await open_pair(kind, sdir, Factory(on_made=pause_on_made))
    try:
        blob = os.urandom(8 * MiB)
        ct = pair.ct
        ct.write(blob)
        assert ct.get_write_buffer_size() > 0
        ct.abort()
        assert ct.is_closing()
        assert ct.get_write_buffer_size() == 0      # the queue is dropped
        assert pair.cp.events == ["made", "pause_writing"]   # lost comes later
        assert await wait(pair.cp.lost) is None
        assert pair.cp.events == ["made", "pause_writing", ("lost", None)]
        # the peer reads what reached its kernel, then sees EOF
        pair.st.resume_reading()
        await wait(pair.sp.lost)
        got = bytes(pair.sp.data)
        assert 0 < len(got) < len(blob)
        assert got == blob[:len(got)]
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
    finally:
        await pair.aclose()


async def test_abort_with_unread_data_resets_peer(kind, sdir):
    pair = await open_pair(
        kind, sdir, client_factory=functools.partial(Recorder, on_made=pause_on_made))
    try:
        pair.st.write(b"x" * 10_000)
        await asyncio.sleep(0.05)
        assert pair.cp.events == ["made"]
        pair.ct.abort()
        assert await wait(pair.cp.lost) is None
        await wait(pair.sp.lost)
        assert pair.cp.events == ["made", ("lost", None)]
        assert pair.sp.events == ["made", ("lost", "ConnectionResetError")]
    finally:
        await pair.aclose()


async def test_close_while_receive_pending(kind, sdir):
    pair = await open_pair(kind, sdir)
    try:
        ct = pair.ct
        assert ct.is_reading()
        ct.close()
        assert ct.is_closing()
        assert not ct.is_reading()
        assert pair.cp.events == ["made"]
        assert await wait(pair.cp.lost) is None
        await wait(pair.sp.lost)
        assert pair.cp.events == ["made", ("lost", None)]
        assert pair.sp.events == ["made", "eof", ("lost", None)]
    finally:
        await pair.aclose()


async def test_close_right_after_peer_sent(kind, sdir):
    # The peer's bytes are in our kernel buffer (loopback delivers within
    # the send) when we close: they are not delivered to the protocol, and
    # the peer sees what closing with unread data gives on the stock loop.
    pair = await open_pair(kind, sdir)
    try:
        await asyncio.sleep(0.01)
        pair.st.write(b"late data")
        pair.ct.close()
        assert await wait(pair.cp.lost) is None
        await wait(pair.sp.lost)
        await asyncio.sleep(0.02)
        assert pair.cp.events == ["made", ("lost", None)]
        assert pair.cp.data == b""
        assert pair.sp.events == ["made", ("lost", "ConnectionResetError")]
    finally:
        await pair.aclose()


async def test_close_flushes_queued_data(kind, sdir):
    pair = await open_pair(kind, sdir, Factory(on_made=pause_on_made))
    try:
        blob = os.urandom(4 * MiB)
        ct = pair.ct
        ct.write(blob)
        ct.close()
        assert ct.is_closing()
        # the stock transport still queues a write made after close() while
        # its buffer is not empty (close() only stops reading)
        ct.write(b"queued after close")
        await asyncio.sleep(0.05)
        assert pair.cp.events == ["made", "pause_writing"]
        pair.st.resume_reading()
        await wait(pair.sp.lost)
        assert sha(pair.sp.data) == sha(blob + b"queued after close")
        assert pair.sp.events == ["made", "data", "eof", ("lost", None)]
        assert await wait(pair.cp.lost) is None
        assert pair.cp.events == ["made", "pause_writing", "resume_writing", ("lost", None)]
    finally:
        await pair.aclose()


# -- reading control, protocol switch, extra info ------------------------------------

async def test_pause_resume_reading(kind, sdir):
    pair = await open_pair(kind, sdir)
    try:
        ct = pair.ct
        assert ct.is_reading() is True
        ct.pause_reading()
        assert ct.is_reading() is False
        ct.pause_reading()          # twice: no error
        pair.st.write(b"abc")
        pair.st.write_eof()
        await asyncio.sleep(0.1)
        assert pair.cp.events == ["made"]     # neither data nor EOF while paused
        ct.resume_reading()
        assert ct.is_reading() is True
        ct.resume_reading()         # twice: no error
        await wait(pair.cp.lost)
        assert bytes(pair.cp.data) == b"abc"
        assert pair.cp.events == ["made", "data", "eof", ("lost", None)]
        assert ct.is_reading() is False
        ct.pause_reading()
        ct.resume_reading()
        assert ct.is_reading() is False
    finally:
        await pair.aclose()


async def test_pause_reading_inside_data_received(kind, sdir):
    def pause_each(p, data):
        p.transport.pause_reading()

    pair = await open_pair(kind, sdir, client_factory=functools.partial(Recorder, on_data=pause_each))
    try:
        pair.st.write(b"one")
        await pair.cp.wait_data(3)
        pair.st.write(b"two")
        await asyncio.sleep(0.05)
        assert bytes(pair.cp.data) == b"one"
        pair.ct.resume_reading()
        await pair.cp.wait_data(6)
        assert bytes(pair.cp.data) == b"onetwo"
    finally:
        await pair.aclose()


async def test_set_protocol_get_protocol(kind, sdir):
    pair = await open_pair(kind, sdir)
    try:
        ct = pair.ct
        assert ct.get_protocol() is pair.cp
        pair.st.write(b"first")
        await pair.cp.wait_data(5)
        second = Recorder()
        ct.set_protocol(second)
        assert ct.get_protocol() is second
        pair.st.write(b"second")
        pair.st.write_eof()
        await wait(second.lost)
        assert bytes(pair.cp.data) == b"first"
        assert pair.cp.events == ["made", "data"]
        # connection_made is not called on the new protocol
        assert second.events == ["data", "eof", ("lost", None)]
        assert bytes(second.data) == b"second"
    finally:
        await pair.aclose()


async def test_get_extra_info(kind, sdir):
    pair = await open_pair(kind, sdir)
    try:
        for t, side in ((pair.ct, "client"), (pair.st, "server")):
            s = t.get_extra_info("socket")
            assert s is not None
            assert s.fileno() >= 0
            assert s.type == socket.SOCK_STREAM
            assert s.getsockname() == t.get_extra_info("sockname")
            assert s.getpeername() == t.get_extra_info("peername")
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert t.get_extra_info("no-such-key") is None
            assert t.get_extra_info("no-such-key", 7) == 7
            assert t.get_extra_info("peercert") is None
            if kind == "unix":
                assert s.family == socket.AF_UNIX
                if side == "client":
                    assert t.get_extra_info("peername") == pair.path
                    assert t.get_extra_info("sockname") == ""
                else:
                    assert t.get_extra_info("sockname") == pair.path
                    assert t.get_extra_info("peername") == ""
            else:
                fam = socket.AF_INET if kind == "tcp4" else socket.AF_INET6
                host = "127.0.0.1" if kind == "tcp4" else "::1"
                assert s.family == fam
                # asyncio sets TCP_NODELAY on every TCP transport
                assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                peer = t.get_extra_info("peername")
                me = t.get_extra_info("sockname")
                assert peer[0] == me[0] == host
                assert len(peer) == (2 if kind == "tcp4" else 4)
                if side == "client":
                    assert peer[1] == pair.addr[1]
                else:
                    assert me[1] == pair.addr[1]
        assert (pair.ct.get_extra_info("sockname") ==
                pair.st.get_extra_info("peername")) or kind == "unix"
    finally:
        await pair.aclose()


# -- peer reset during a write ---------------------------------------------------------

async def test_peer_reset_during_write(kind, sdir):
    loop = asyncio.get_running_loop()
    handler_calls = []
    loop.set_exception_handler(lambda l, ctx: handler_calls.append(ctx))
    pair = await open_pair(kind, sdir, Factory(on_made=pause_on_made))
    try:
        ct = pair.ct
        ct.write(os.urandom(4 * MiB))
        assert ct.get_write_buffer_size() > 0
        await asyncio.sleep(0.01)
        if kind != "unix":
            pair.st.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        pair.st.abort()         # with unread data: the peer resets
        exc = await wait(pair.cp.lost)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError))
        assert pair.cp.events[:2] == ["made", "pause_writing"]
        assert pair.cp.events[2:] == [lost_name(exc)]
        assert ct.is_closing()
        assert ct.get_write_buffer_size() == 0
        for _ in range(6):
            ct.write(b"after the reset")     # no exception, nothing queued
        assert ct.get_write_buffer_size() == 0
        await asyncio.sleep(0.02)
        assert handler_calls == []
        assert pair.cp.events.count(lost_name(exc)) == 1
    finally:
        loop.set_exception_handler(None)
        await pair.aclose()


# -- BufferedProtocol ----------------------------------------------------------------------

class BufRecorder(asyncio.BufferedProtocol):
    def __init__(self, size=7):
        loop = asyncio.get_running_loop()
        self.buf = bytearray(size)
        self.got = bytearray()
        self.events = []
        self.sizehints = set()
        self.max_n = 0
        self.lost = loop.create_future()

    def connection_made(self, t):
        self.events.append("made")
        self.transport = t

    def get_buffer(self, sizehint):
        self.sizehints.add(sizehint)
        return self.buf

    def buffer_updated(self, n):
        if self.events[-1] != "data":
            self.events.append("data")
        self.max_n = max(self.max_n, n)
        self.got += self.buf[:n]

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(lost_name(exc))
        self.lost.set_result(exc)


@pytest.mark.parametrize("bkind", ["tcp4", "unix"])
async def test_buffered_protocol_small_buffer(bkind, sdir):
    blob = os.urandom(MiB)

    def send_all(p, t):
        t.write(blob)
        t.write_eof()

    pair = await open_pair(bkind, sdir, Factory(on_made=send_all),
                           client_factory=BufRecorder)
    try:
        await wait(pair.cp.lost, 30)
        assert sha(pair.cp.got) == sha(blob)
        assert pair.cp.max_n == 7
        assert pair.cp.events == ["made", "data", "eof", ("lost", None)]
        assert pair.cp.sizehints == {-1}
    finally:
        await pair.aclose()


async def _protocol_callback_raises(kind, sdir, which):
    sub = tempfile.mkdtemp(dir=sdir)
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))

    class P(BufRecorder):
        def get_buffer(self, n):
            if which == "get_buffer_empty":
                return bytearray()
            if which == "get_buffer_no_len":
                return 42
            if which == "get_buffer_no_buffer":
                return [0] * 16
            if which == "get_buffer_read_only":
                return b"x" * 16
            if which == "get_buffer":
                raise ZeroDivisionError("boom")
            return super().get_buffer(n)

        def buffer_updated(self, n):
            if which == "buffer_updated":
                raise ZeroDivisionError("boom")
            super().buffer_updated(n)

    class R(Recorder):
        def data_received(self, data):
            if which == "data_received":
                raise ZeroDivisionError("boom")
            super().data_received(data)

        def eof_received(self):
            if which == "eof_received":
                raise ZeroDivisionError("boom")
            return super().eof_received()

    cls = R if which in ("data_received", "eof_received") else P
    pair = await open_pair(kind, sub, client_factory=cls)
    try:
        pair.st.write(b"payload")
        pair.st.write_eof()
        exc = await wait(pair.cp.lost)
        await wait(pair.sp.lost)
        await asyncio.sleep(0.01)
        return {
            "client": pair.cp.events,
            "server": pair.sp.events,
            "exc": exc_record(exc),
            "contexts": [(c["message"], sorted(c), exc_record(c.get("exception")))
                         for c in contexts],
        }
    finally:
        loop.set_exception_handler(None)
        await pair.aclose()


@pytest.mark.parametrize("which", ["get_buffer_empty", "get_buffer_no_len",
                                   "get_buffer_no_buffer", "get_buffer_read_only",
                                   "get_buffer", "buffer_updated",
                                   "data_received", "eof_received"])
async def test_protocol_callback_raises_same_as_stock(which, sdir):
    rec = await same_as_stock(_protocol_callback_raises, "tcp4", sdir, which)
    assert rec["contexts"], "the stock loop reports it to the exception handler"


# -- a reused descriptor number -----------------------------------------------------------------

async def test_reused_fd_number_gets_only_its_own_data(kind, sdir):
    pair = await open_pair(kind, sdir, Factory(on_data=echo))
    try:
        loop = asyncio.get_running_loop()
        old_fd = pair.ct.get_extra_info("socket").fileno()
        pair.ct.close()
        await wait(pair.cp.lost)
        # the next socket most likely gets the same descriptor number
        if kind == "unix":
            ct2, cp2 = await loop.create_unix_connection(Recorder, pair.path)
        else:
            host = "127.0.0.1" if kind == "tcp4" else "::1"
            ct2, cp2 = await loop.create_connection(Recorder, host, pair.addr[1])
        try:
            new_fd = ct2.get_extra_info("socket").fileno()
            ct2.write(b"ping")
            await cp2.wait_data(4)
            await asyncio.sleep(0.02)
            assert bytes(cp2.data) == b"ping"
            assert pair.cp.events == ["made", ("lost", None)]
            assert pair.cp.data == b""
            assert isinstance(new_fd, int) and isinstance(old_fd, int)
        finally:
            ct2.close()
            await wait(cp2.lost)
    finally:
        await pair.aclose()
