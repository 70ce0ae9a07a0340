"""A BufferedProtocol that receives large chunks: aioring then receives
straight into the protocol's buffer (a poll, then get_buffer(-1) and a recv()
into it, asyncio's own order) instead of copying out of its receive buffers,
and goes back to the ring's recv when the chunks get small (stream.pxi).

Every scenario runs on both loops and asserts the same outcome on each: the
bytes, the order of the protocol's callbacks (get_buffer() before every
buffer_updated(), and before eof_received() once the connection ends in the
direct mode, as with the stock loop), pause/resume at random, errors raised
by the protocol, a peer's reset, set_protocol() to a plain Protocol.  On
aioring, loop.stats() also shows which way the bytes came (receive buffers
used, or not) and that closing releases every descriptor and slot.
"""
import asyncio
import hashlib
import os
import random
import socket

import pytest

import aioring
from _stream_helpers import count_fds, exc_record, is_aioring, until, wait

MiB = 1 << 20
KINDS = ["tcp", "unix"]


def connected_pair(kind):
    """(ours, peer): two connected non-blocking stream sockets."""
    if kind == "unix":
        a, b = socket.socketpair()
    else:
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen()
            b = socket.create_connection(lsock.getsockname())
            a, _ = lsock.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def buffers_used(loop):
    return loop.stats()["recv_buffers_used"] if is_aioring(loop) else 0


class Receiver(asyncio.BufferedProtocol):
    """Records its callbacks: 'get' for get_buffer() calls in a row (a
    recv that found nothing after all gives one without buffer_updated()),
    get_buffer() + buffer_updated() runs collapsed into 'data'; checks that
    each buffer_updated(n) follows a get_buffer() and fits its buffer."""

    def __init__(self, size=64 * 1024):
        self.loop = asyncio.get_running_loop()
        self.size = size
        self.buf = bytearray(size)
        self.got = bytearray()
        self.events = []
        self.given = None           # the buffer get_buffer() returned last
        self.bad = []               # broken callback-order rules
        self.lost = self.loop.create_future()
        self.on_update = None

    def connection_made(self, t):
        self.events.append("made")
        self.t = t

    def get_buffer(self, sizehint):
        if sizehint != -1:
            self.bad.append(("sizehint", sizehint))
        self.given = memoryview(self.buf)[:self.size]
        if self.events[-1] != "get":    # (again after a recv found nothing)
            self.events.append("get")
        return self.given

    def buffer_updated(self, n):
        if self.given is None or not 0 < n <= len(self.given):
            self.bad.append(("updated", n))
        self.got += self.given[:n]
        self.given = None
        if self.events[-1] == "get":
            self.events.pop()
        if self.events[-1] != "data":
            self.events.append("data")
        if self.on_update:
            self.on_update(self, n)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)


async def send_and_wait(loop, peer, proto, data, piece=None):
    """Send data, by pieces if given (each received before the next goes:
    sent all at once, the kernel may have taken every chunk into aioring's
    receive buffers before the first completion is seen)."""
    piece = piece or len(data)
    for i in range(0, len(data), piece):
        want = len(proto.got) + len(data[i:i + piece])
        await loop.sock_sendall(peer, data[i:i + piece])
        await until(lambda: len(proto.got) >= want or proto.lost.done(), 30)


@pytest.mark.parametrize("kind", KINDS)
async def test_large_small_large_then_eof(kind):
    # 4 MiB, 200 small messages one at a time, 4 MiB, EOF: every byte in
    # order, and at EOF get_buffer() is called before eof_received(), as the
    # stock loop does (its recv_into finds the EOF).
    loop = asyncio.get_running_loop()
    ours, peer = connected_pair(kind)
    t, p = await loop.connect_accepted_socket(Receiver, ours)
    rnd = random.Random(1)
    first, second = rnd.randbytes(4 * MiB), rnd.randbytes(4 * MiB)
    with peer:
        used = [buffers_used(loop)]
        await send_and_wait(loop, peer, p, first, 256 * 1024)
        used.append(buffers_used(loop))
        for i in range(200):
            await send_and_wait(loop, peer, p, b"%03d" % i * 33)
        used.append(buffers_used(loop))
        await send_and_wait(loop, peer, p, second, 256 * 1024)
        used.append(buffers_used(loop))
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: "eof" in p.events)
        t.close()
        await wait(p.lost)
    small = b"".join(b"%03d" % i * 33 for i in range(200))
    assert bytes(p.got) == first + small + second
    assert p.bad == []
    # "get" just before "eof": the stock loop's recv_into found the EOF
    assert p.events == ["made", "data", "get", "eof", ("lost", None)]
    info = loop._ring_info() if is_aioring(loop) else {}
    if info.get("direct_recv") and info["recv_buffer_ring"]:
        # 64 chunks or more of up to 64 KiB in each large part: the first
        # piece's come through the receive buffers, the rest straight into
        # the protocol's buffer; the small messages go back to the receive
        # buffers.
        large1, smalls, large2 = (b - a for a, b in zip(used, used[1:]))
        assert large1 <= 8 and large2 <= 8
        assert smalls >= 200 - 16


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
async def test_random_sizes_and_pauses(kind, seed):
    # Messages from 1 byte to 200 KiB, protocol buffers from 1 KiB to
    # 256 KiB chosen per connection phase, pause_reading() in buffer_updated
    # at random with resume_reading() soon or a little later: the bytes
    # arrive whole and in order, no callback while paused.
    loop = asyncio.get_running_loop()
    rnd = random.Random(seed)
    ours, peer = connected_pair(kind)
    t, p = await loop.connect_accepted_socket(lambda: Receiver(256 * 1024), ours)
    paused_calls = []

    def on_update(proto, n):
        if proto.t.is_reading() is False:
            paused_calls.append(n)
        if rnd.random() < 0.3:
            proto.t.pause_reading()
            delay = rnd.choice([0, 0, 0.001, 0.005])
            loop.call_later(delay, proto.t.resume_reading)
        if rnd.random() < 0.05:
            proto.size = rnd.choice([1024, 8 * 1024, 64 * 1024, 256 * 1024])

    p.on_update = on_update
    sent = bytearray()
    with peer:
        for _ in range(60):
            size = rnd.choice([1, 100, 3000, 40 * 1024, 70 * 1024, 200 * 1024])
            chunk = rnd.randbytes(size)
            sent += chunk
            await loop.sock_sendall(peer, chunk)
            if rnd.random() < 0.3:
                await until(lambda: len(p.got) == len(sent), 30)
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: "eof" in p.events, 30)
        t.close()
        await wait(p.lost)
    assert hashlib.sha256(p.got).hexdigest() == hashlib.sha256(sent).hexdigest()
    assert p.bad == [] and paused_calls == []
    assert p.events in (["made", "data", "eof", ("lost", None)],
                        ["made", "data", "get", "eof", ("lost", None)])


@pytest.mark.parametrize("kind", KINDS)
async def test_peer_reset(kind):
    # the peer resets the connection after a large transfer: connection_lost
    # gets ConnectionResetError (nothing the peer sent before is lost)
    loop = asyncio.get_running_loop()
    ours, peer = connected_pair(kind)
    t, p = await loop.connect_accepted_socket(Receiver, ours)
    blob = os.urandom(2 * MiB)
    await send_and_wait(loop, peer, p, blob)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    peer.close()
    exc = await wait(p.lost)
    assert bytes(p.got) == blob
    if kind == "tcp":
        assert exc_record(exc)[:2] == ("ConnectionResetError", 104)
        assert p.events[-1] == ("lost", "ConnectionResetError")
    else:
        # (SO_LINGER means nothing to a Unix socket: a plain EOF)
        assert exc is None and p.events[-3:] == ["get", "eof", ("lost", None)]


@pytest.mark.parametrize("which", ["raises", "empty", "read_only", "not_a_buffer",
                                   "buffer_updated"])
async def test_protocol_errors_in_direct_mode(which):
    # After 1 MiB (aioring receives directly by then), the protocol fails:
    # the same exception-handler report and connection_lost() as stock.
    loop = asyncio.get_running_loop()
    contexts = []
    loop.set_exception_handler(lambda l, ctx: contexts.append(ctx))
    fail = False

    class Failing(Receiver):
        def get_buffer(self, sizehint):
            if fail and which == "raises":
                raise ZeroDivisionError("boom")
            if fail and which == "empty":
                return bytearray()
            if fail and which == "read_only":
                return b"x" * 100
            if fail and which == "not_a_buffer":
                return [0] * 100
            return super().get_buffer(sizehint)

        def buffer_updated(self, n):
            super().buffer_updated(n)
            if fail and which == "buffer_updated":
                raise ZeroDivisionError("boom")

    ours, peer = connected_pair("tcp")
    try:
        t, p = await loop.connect_accepted_socket(Failing, ours)
        with peer:
            blob = os.urandom(MiB)
            await send_and_wait(loop, peer, p, blob)
            fail = True
            await loop.sock_sendall(peer, b"payload")
            exc = await wait(p.lost)
            await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)
    want_message = {
        "raises": "Fatal error: protocol.get_buffer() call failed.",
        "empty": "Fatal error: protocol.get_buffer() call failed.",
        "read_only": "Fatal read error on socket transport",
        "not_a_buffer": "Fatal read error on socket transport",
        "buffer_updated": "Fatal error: protocol.buffer_updated() call failed.",
    }[which]
    want_exc = {"raises": "ZeroDivisionError", "empty": "RuntimeError",
                "read_only": "TypeError", "not_a_buffer": "TypeError",
                "buffer_updated": "ZeroDivisionError"}[which]
    assert [c["message"] for c in contexts] == [want_message]
    assert type(contexts[0]["exception"]).__name__ == want_exc
    assert type(exc).__name__ == want_exc
    if which in ("read_only", "not_a_buffer"):
        assert str(exc).startswith("recv_into() argument 1 must be read-write bytes-like object")
    want_got = blob + (b"payload" if which == "buffer_updated" else b"")
    assert bytes(p.got) == want_got


class Plain(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.events = []

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))


@pytest.mark.parametrize("kind", KINDS)
async def test_set_protocol_to_a_plain_protocol(kind):
    # in the middle of large transfers the BufferedProtocol hands the
    # transport to a plain Protocol: it gets the rest through data_received()
    loop = asyncio.get_running_loop()
    ours, peer = connected_pair(kind)
    t, p = await loop.connect_accepted_socket(Receiver, ours)
    first, second = os.urandom(2 * MiB), os.urandom(2 * MiB)
    plain = Plain()
    with peer:
        await send_and_wait(loop, peer, p, first)
        t.set_protocol(plain)
        await loop.sock_sendall(peer, second)
        peer.shutdown(socket.SHUT_WR)
        await until(lambda: "eof" in plain.events, 30)
        t.close()
        await until(lambda: plain.events[-1] == ("lost", None))
    assert bytes(p.got) == first and bytes(plain.data) == second
    assert plain.events == ["data", "eof", ("lost", None)]


# -- aioring only: the switches, and what closing releases -----------------------------------------

@pytest.mark.parametrize("switches", [
    {},
    {"AIORING_FIXED_FILES": "0"},
    {"AIORING_RECV_MULTISHOT": "0"},
    {"AIORING_BUFFER_RING": "0"},
    {"AIORING_DIRECT_RECV": "0"},
], ids=["default", "plain-fds", "single-shot", "no-buffer-ring", "direct-off"])
def test_aioring_only_closing_in_direct_mode_releases_everything(monkeypatch, switches):
    # 20 connections receive 1 MiB each (direct receive, unless switched
    # off), then wait in their poll; half are closed, half aborted, with the
    # peers sending more meanwhile: every descriptor and fixed-file slot
    # comes back, and each connection got exactly what was sent before.
    for name, value in switches.items():
        monkeypatch.setenv(name, value)

    async def main():
        loop = asyncio.get_running_loop()
        fds, slots = count_fds(), loop.stats()["fixed_files_in_use"]
        pairs = [connected_pair("tcp") for _ in range(20)]
        conns = [await loop.connect_accepted_socket(Receiver, ours) for ours, _ in pairs]
        blob = os.urandom(MiB)
        used = buffers_used(loop)
        await asyncio.gather(*(send_and_wait(loop, peer, p, blob, 128 * 1024)
                               for (_, peer), (_, p) in zip(pairs, conns)))
        used = buffers_used(loop) - used
        for i, ((_, peer), (t, p)) in enumerate(zip(pairs, conns)):
            peer.send(b"late")
            t.close() if i % 2 else t.abort()
        await asyncio.gather(*(wait(p.lost) for _, p in conns))
        for _, peer in pairs:
            peer.close()
        await asyncio.sleep(0.05)
        got = [bytes(p.got) in (blob, blob + b"late") for _, p in conns]
        return got, used, count_fds() - fds, loop.stats()["fixed_files_in_use"] - slots

    got, used, fds_left, slots_left = aioring.run(main())
    assert all(got)
    assert fds_left == 0 and slots_left == 0
    if switches.get("AIORING_DIRECT_RECV") == "0":
        assert used >= 20 * 16      # every chunk through the receive buffers
    elif switches.get("AIORING_BUFFER_RING") != "0":
        assert used <= 20 * 6
