"""EAGAIN completions: a socket request the kernel would wait on may still
complete with EAGAIN and nothing transferred (seen on Linux 6.18: sends to
a full socket buffer without DEFER_TASKRUN; CI once lost a 64 MiB transfer
to it).  Every completion handler takes that as "submit it again".

The kernel does this rarely and not on demand, so these tests inject it:
with aioring.loop.set_inject_eagain(True), every other socket send and
receive goes out with MSG_DONTWAIT, and the kernel answers EAGAIN wherever
it would have waited.  Each scenario runs on aioring with injection on and
on the stock loop, and what the program sees must be the same.  (CI also
runs the socket tests with AIORING_INJECT_EAGAIN=1.)
"""
import asyncio
import hashlib
import os
import socket

import pytest

import aioring
from aioring import loop as aioring_loop
from _stream_helpers import on_stock_thread

MiB = 1 << 20


@pytest.fixture
def injected():
    """EAGAIN injection on for the test; yields a function that returns how
    many requests went out with MSG_DONTWAIT so far."""
    aioring_loop.set_inject_eagain(True)
    count = 0

    def injected_so_far():
        nonlocal count
        count += aioring_loop.set_inject_eagain(True)
        return count
    try:
        yield injected_so_far
    finally:
        aioring_loop.set_inject_eagain(False)


def nonblocking_pair(family=socket.AF_UNIX, kind=socket.SOCK_STREAM):
    a, b = socket.socketpair(family, kind)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def sock_calls():
    """sock_* calls that must wait (nothing ready when they are made), each
    with what it returned."""
    loop = asyncio.get_running_loop()
    seen = []
    a, b = nonblocking_pair()
    with a, b:
        # receives submitted before the data arrives
        loop.call_later(0.02, a.send, b"first")
        seen.append(await loop.sock_recv(b, 100))
        buf = bytearray(10)
        loop.call_later(0.02, a.send, b"second")
        seen.append((await loop.sock_recv_into(b, buf), bytes(buf)))

        # sendall of more than the socket holds, while the peer reads slowly
        payload = os.urandom(4 * MiB)

        async def read_all():
            got = bytearray()
            while len(got) < len(payload):
                await asyncio.sleep(0.001)
                got += await loop.sock_recv(b, 256 * 1024)
            return bytes(got)
        reader = asyncio.ensure_future(read_all())
        await loop.sock_sendall(a, payload)
        seen.append(hashlib.sha256(await reader).hexdigest() ==
                    hashlib.sha256(payload).hexdigest())

    # an accept submitted before the connection comes
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.setblocking(False)
    cli = socket.socket()
    cli.setblocking(False)
    with srv, cli:
        loop.call_later(0.02, cli.connect_ex, srv.getsockname())
        conn, addr = await loop.sock_accept(srv)
        with conn:
            seen.append(addr == cli.getsockname())

    # a datagram receive submitted before the datagram comes
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with u1, u2:
        for u in (u1, u2):
            u.setblocking(False)
            u.bind(("127.0.0.1", 0))
        loop.call_later(0.02, u1.sendto, b"datagram", u2.getsockname())
        data, addr = await loop.sock_recvfrom(u2, 100)
        seen.append((data, addr == u1.getsockname()))
    return seen


async def test_sock_calls_wait_through_eagain(injected):
    mine = await sock_calls()
    if isinstance(asyncio.get_running_loop(), aioring.Loop):
        assert injected() > 0
    assert mine == await on_stock_thread(sock_calls)
    assert mine == [b"first", (6, b"second\0\0\0\0"), True, True, (b"datagram", True)]


class Pump(asyncio.Protocol):
    """Sends `blob` under flow control while hashing what it receives."""

    def __init__(self, blob):
        self.blob = memoryview(blob)
        self.sent = 0
        self.paused = False
        self.hash = hashlib.sha256()
        self.received = 0
        self.events = []
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, t):
        self.t = t
        t.set_write_buffer_limits(high=256 * 1024)
        self.pump()

    def pump(self):
        while not self.paused and self.sent < len(self.blob):
            self.t.write(self.blob[self.sent:self.sent + 64 * 1024])
            self.sent += 64 * 1024
        if self.sent >= len(self.blob) and not self.t.is_closing() and self.t.can_write_eof():
            self.t.write_eof()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.pump()

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)
        if self.received % (1 * MiB) < len(data):
            # pause reading now and then: a cancelled receive, re-armed later
            self.t.pause_reading()
            asyncio.get_running_loop().call_later(0.001, self.t.resume_reading)

    def eof_received(self):
        self.events.append("eof")
        return True

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


class BufferedPump(Pump, asyncio.BufferedProtocol):
    """Pump that receives into a 64 KiB buffer of its own (aioring receives
    large chunks straight into it: a poll, then recv(), which the injection
    makes fail with EAGAIN every other time)."""

    def __init__(self, blob):
        super().__init__(blob)
        self.buf = memoryview(bytearray(64 * 1024))

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.data_received(self.buf[:n])


async def both_ways(family, protocol=Pump):
    """8 MiB each way at once over a stream connection: what each side saw."""
    loop = asyncio.get_running_loop()
    blob = os.urandom(8 * MiB)
    want = hashlib.sha256(blob).hexdigest()
    servers = []
    if family == socket.AF_UNIX:
        a, b = socket.socketpair()
        server_t, server = await loop.connect_accepted_socket(lambda: protocol(blob), a)
        client_t, client = await loop.connect_accepted_socket(lambda: protocol(blob), b)
    else:
        accepted = loop.create_future()

        def factory():
            p = protocol(blob)
            accepted.set_result(p)
            return p
        srv = await loop.create_server(factory, "127.0.0.1", 0)
        servers.append(srv)
        client_t, client = await loop.create_connection(
            lambda: protocol(blob), "127.0.0.1", srv.sockets[0].getsockname()[1])
        server = await accepted
    try:
        await asyncio.wait_for(
            asyncio.gather(_close_when_done(client), _close_when_done(server)), 60)
    finally:
        for srv in servers:
            srv.close()
            await srv.wait_closed()
    return [(p.received, p.hash.hexdigest() == want, p.events) for p in (client, server)]


async def _close_when_done(p):
    while "eof" not in p.events or p.t.get_write_buffer_size():
        await asyncio.sleep(0.005)
    p.t.close()
    await p.done


@pytest.mark.parametrize("protocol", [Pump, BufferedPump], ids=["Protocol", "BufferedProtocol"])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX], ids=["tcp", "unix"])
@pytest.mark.parametrize("switches", [
    {},
    {"AIORING_RECV_MULTISHOT": "0"},
    {"AIORING_BUFFER_RING": "0"},
], ids=["multishot", "single-shot", "no-buffer-ring"])
def test_stream_transfer_through_eagain(monkeypatch, injected, switches, family, protocol):
    for name, value in switches.items():
        monkeypatch.setenv(name, value)

    async def main():
        mine = await both_ways(family, protocol)
        stock = await on_stock_thread(both_ways, family, protocol, timeout=60)
        return mine, stock

    mine, stock = aioring.run(main())
    assert injected() > 0
    assert mine == stock
    assert mine == [(8 * MiB, True, ["eof", ("lost", None)])] * 2


class Collect(asyncio.DatagramProtocol):
    def __init__(self, want):
        self.got = []
        self.want = want
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.got.append(data)
        if len(self.got) == self.want and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        self.got.append(exc)


async def datagrams():
    """Datagrams that arrive while the endpoint's receive waits."""
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(
        lambda: Collect(20), local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        for i in range(20):
            await asyncio.sleep(0.002)
            sender.sendto(b"d%d" % i, t.get_extra_info("sockname"))
        await asyncio.wait_for(p.done, 10)
    t.close()
    return p.got


async def test_datagram_endpoint_through_eagain(injected):
    mine = await datagrams()
    if isinstance(asyncio.get_running_loop(), aioring.Loop):
        assert injected() > 0
    assert mine == await on_stock_thread(datagrams)
    assert mine == [b"d%d" % i for i in range(20)]
