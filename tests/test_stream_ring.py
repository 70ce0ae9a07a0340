"""aioring's own guarantees for stream I/O on the ring, which have no stock
counterpart (hence aioring only, run with fixed files on and off):

- receives use the loop's provided-buffer ring; when a burst of connections
  finds it empty (ENOBUFS) it grows, the receives are re-armed, and no byte
  is lost or reordered;
- a listening socket's fixed-file slot and descriptor are released when the
  server closes, and its port is free at once;
- requests of a closed transport (a receive armed, a send waiting for
  buffer space) never reach a new socket that got the same fd number.
"""
import asyncio
import gc
import os
import socket

import pytest

import aioring
from _stream_helpers import Recorder, count_fds, nofile_at_least, until, wait

FIXED = pytest.mark.parametrize("fixed", ["1", "0"], ids=["fixed-files", "plain-fds"])


class Collect(asyncio.Protocol):
    """Server side: keeps what each connection receives."""
    conns = []

    def connection_made(self, t):
        self.t = t
        self.data = bytearray()
        Collect.conns.append(self)

    def data_received(self, data):
        self.data += data


@FIXED
def test_receive_buffers_grow_under_a_burst(monkeypatch, fixed):
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)
    # one buffer to start with: the kernel runs out at the first burst
    monkeypatch.setenv("AIORING_RECV_BUFFERS", "1")
    n = 400
    nofile_at_least(2 * n + 100)

    async def main():
        loop = asyncio.get_running_loop()
        Collect.conns = []
        srv = await loop.create_server(Collect, "127.0.0.1", 0, backlog=n + 50)
        addr = srv.sockets[0].getsockname()
        clients = [socket.create_connection(addr) for _ in range(n)]
        try:
            await until(lambda: len(Collect.conns) == n)
            await asyncio.sleep(0.05)       # every receive armed
            start = loop._ring_info()
            payloads = [os.urandom(1000 + i) for i in range(n)]
            for rnd in range(3):
                # All connections receive before the loop looks again: one
                # pass over the CQ finds more chunks than buffers provided.
                for c, p in zip(clients, payloads):
                    c.sendall(p)
                await until(lambda: all(len(s.data) == (rnd + 1) * len(p)
                                        for s, p in zip(sorted_conns(clients), payloads)))
            for s, p in zip(sorted_conns(clients), payloads):
                assert bytes(s.data) == p * 3
            return start, loop._ring_info()
        finally:
            for c in clients:
                c.close()
            srv.close()
            await srv.wait_closed()

    start, end = aioring.run(main())
    assert end["recv_multishot"] is True
    assert start["recv_buffers_provided"] == 1
    assert end["recv_enobufs"] > start["recv_enobufs"]
    assert end["recv_buffers_provided"] > start["recv_buffers_provided"]
    # every buffer a recv took is back in the kernel's hands (PBUF_STATUS:
    # Linux 6.8 and newer; None before)
    if end["recv_buffers_available"] is not None:
        assert end["recv_buffers_available"] == end["recv_buffers_provided"]


def sorted_conns(clients):
    # server-side connections in the order of their clients (by port)
    by_peer = {s.t.get_extra_info("peername"): s for s in Collect.conns}
    return [by_peer[c.getsockname()] for c in clients]


@FIXED
def test_listening_socket_released_on_close(monkeypatch, fixed):
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        fds, slots = count_fds(), loop._ring_info()["fixed_files_in_use"]
        srv = await loop.create_server(Recorder, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        await asyncio.sleep(0.01)
        serving = loop._ring_info()["fixed_files_in_use"]
        srv.close()
        # the port is free as soon as close() returns, as with the stock loop
        with socket.socket() as s:
            s.bind(addr)
            s.listen()
        await srv.wait_closed()
        await asyncio.sleep(0.01)
        return fds, count_fds(), slots, serving, loop._ring_info()["fixed_files_in_use"]

    fds_before, fds_after, slots_before, slots_serving, slots_after = aioring.run(main())
    assert fds_after == fds_before
    assert slots_after == slots_before
    assert slots_serving == slots_before + (1 if fixed == "1" else 0)


class Sink(asyncio.Protocol):
    """A peer that does not read: the sender's data stays in flight."""
    conns = []

    def connection_made(self, t):
        self.t = t
        Sink.conns.append(self)
        t.pause_reading()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


@FIXED
def test_requests_of_a_closed_transport_never_reach_a_reused_fd(monkeypatch, fixed):
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)

    async def main():
        loop = asyncio.get_running_loop()
        Collect.conns = []
        Sink.conns = []
        sink = await loop.create_server(Sink, "127.0.0.1", 0)
        collect = await loop.create_server(Collect, "127.0.0.1", 0)
        sink_addr = sink.sockets[0].getsockname()
        collect_addr = collect.sockets[0].getsockname()
        reused = 0
        try:
            for rnd in range(20):
                t, p = await loop.create_connection(Recorder, *sink_addr)
                old_fd = t.get_extra_info("socket").fileno()
                t.write(b"x" * (8 << 20))       # more than the socket takes
                await asyncio.sleep(0.01)
                assert t.get_write_buffer_size() > 0    # a send is waiting
                if rnd % 2:
                    t.abort()
                else:
                    t.close()               # graceful: the send is still queued
                    t.abort()
                await wait(p.lost)
                # a fresh socket, likely with the old number, and its peer
                fresh = socket.socket()
                fresh.setblocking(False)
                reused += fresh.fileno() == old_fd
                await loop.sock_connect(fresh, collect_addr)
                await until(lambda: len(Collect.conns) == rnd + 1)
                await loop.sock_sendall(fresh, b"fresh %d" % rnd)
                await asyncio.sleep(0.02)
                got = bytes(Collect.conns[rnd].data)
                fresh.close()
                # nothing of the old transport's send reached the new socket,
                # and the new socket's bytes went nowhere else
                assert got == b"fresh %d" % rnd
                assert p.data == b""
            return reused
        finally:
            # not reading, they never see their peer go: close them here
            for s in Sink.conns:
                s.t.close()
            for s in Collect.conns:
                s.t.close()
            sink.close()
            collect.close()
            await sink.wait_closed()
            await collect.wait_closed()

    reused = aioring.run(main())
    assert reused > 0           # the scenario did reuse descriptor numbers


@FIXED
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_send_requests_of_collected_and_closed_transports(monkeypatch, fixed):
    # A stream's send request is listed in its loop once, for the stream's
    # life: one collected without close() takes itself out of the list,
    # released ones are taken out, and a loop closed with sends in flight
    # cancels them and waits for them (the ASan run checks that nothing
    # touches freed memory on the way).
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)
    loop = aioring.new_event_loop()
    try:
        async def main():
            Collect.conns = []
            Sink.conns = []
            collect = await loop.create_server(Collect, "127.0.0.1", 0)
            sink = await loop.create_server(Sink, "127.0.0.1", 0)
            for rnd in range(10):
                t, p = await loop.create_connection(Recorder, *collect.sockets[0].getsockname())
                t.write(b"x" * 100)             # its send request exists now
                await until(lambda: len(Collect.conns) == rnd + 1
                            and len(Collect.conns[rnd].data) == 100)
                if rnd % 2:
                    t.close()                   # released: taken out
                    await wait(p.lost)
                del t, p                        # the others: collected unclosed
                gc.collect()
            # sends that wait for a peer that does not read
            waiting = []
            for _ in range(3):
                t, p = await loop.create_connection(Recorder, *sink.sockets[0].getsockname())
                t.write(b"y" * (8 << 20))
                waiting.append(t)
            await asyncio.sleep(0.05)
            assert all(t.get_write_buffer_size() > 0 for t in waiting)
            return waiting

        waiting = loop.run_until_complete(main())
        assert loop.stats()["in_flight"] >= 3
    finally:
        loop.close()
    assert loop.stats()["in_flight"] == 0
    del waiting
    gc.collect()


@pytest.mark.parametrize("then", ["stop", "close"])
@pytest.mark.parametrize("factory", [asyncio.SelectorEventLoop, aioring.new_event_loop],
                         ids=["asyncio", "aioring"])
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_written_data_leaves_when_the_loop_stops(factory, then):
    # aioring sends a write with the loop's next enter; a loop that stops
    # (or closes) right after the write still sends it, as the stock loop's
    # direct send() does.
    a, b = socket.socketpair()
    loop = factory()
    t = None
    try:
        async def write():
            nonlocal t
            t, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            t.write(b"hello")

        loop.run_until_complete(write())
        if then == "close":
            loop.close()
        b.settimeout(5)
        assert b.recv(100) == b"hello"
    finally:
        if not loop.is_closed():
            t.close()
            loop.run_until_complete(asyncio.sleep(0.01))
            loop.close()
        b.close()
