"""Streams under load, as parity tests (64 MiB both ways at once with flow
control, 1,000 concurrent connections), and aioring's own guarantees, which
have no stock counterpart (tests named test_aioring_only_*): descriptors
and fixed-file slots released after 10,000 accepted-and-closed connections,
and no io-wq worker thread for socket traffic, with fixed files on and off.
"""
import asyncio
import hashlib
import os
import socket
import threading

import pytest

import aioring
from _stream_helpers import (
    Factory, Recorder, count_fds, iou_worker_tids, nofile_at_least, open_pair,
    skip_unless_kind)

MiB = 1 << 20
CHUNK = 64 * 1024


class Pump(asyncio.Protocol):
    """Sends `blob` as fast as flow control allows, while hashing what it
    receives; half-closes when done sending, closes when both ways are done."""

    def __init__(self, blob, low, high):
        loop = asyncio.get_running_loop()
        self.blob = memoryview(blob)
        self.low, self.high = low, high
        self.sent = 0
        self.paused = False
        self.eof_sent = self.got_eof = False
        self.hash = hashlib.sha256()
        self.received = 0
        self.pauses = []
        self.resumes = []
        self.events = []
        self.done = loop.create_future()
        self.made = loop.create_future()

    def connection_made(self, t):
        self.t = t
        self.events.append("made")
        self.made.set_result(t)
        self.default_limits = t.get_write_buffer_limits()
        t.set_write_buffer_limits(high=self.high, low=self.low)
        self.limits = t.get_write_buffer_limits()
        self.pump()

    def pump(self):
        t = self.t
        while not self.paused and self.sent < len(self.blob):
            t.write(self.blob[self.sent:self.sent + CHUNK])
            self.sent += CHUNK
        if self.sent >= len(self.blob) and not self.eof_sent:
            self.eof_sent = True
            t.write_eof()
            if self.got_eof:
                t.close()

    def pause_writing(self):
        assert not self.paused
        self.pauses.append(self.t.get_write_buffer_size())
        self.paused = True

    def resume_writing(self):
        assert self.paused
        self.resumes.append(self.t.get_write_buffer_size())
        self.paused = False
        self.pump()

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)

    def eof_received(self):
        self.events.append("eof")
        self.got_eof = True
        if self.eof_sent:
            self.t.close()
        return True

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


@pytest.mark.parametrize("kind", ["tcp4", "unix"])
async def test_64mib_both_directions_with_flow_control(kind, sdir):
    skip_unless_kind(kind)
    blob = os.urandom(64 * MiB)
    want = hashlib.sha256(blob).hexdigest()
    low, high = 64 * 1024, 256 * 1024
    pair = await open_pair(kind, sdir, Factory(Pump, blob=blob, low=low, high=high),
                           Factory(Pump, blob=blob, low=low, high=high))
    try:
        client, server = pair.cp, pair.sp
        await asyncio.wait_for(asyncio.gather(client.done, server.done), 60)
        for p in (client, server):
            assert p.default_limits == (16384, 65536)
            assert p.limits == (low, high)
            assert p.received == len(blob), p.events
            assert p.hash.hexdigest() == want
            assert p.events == ["made", "eof", ("lost", None)]
            # flow control was exercised, at the limits
            assert p.pauses, "pause_writing never called"
            assert len(p.resumes) == len(p.pauses)
            assert all(size > high for size in p.pauses)
            assert all(size <= low for size in p.resumes)
            assert p.t.get_write_buffer_size() == 0
    finally:
        await pair.aclose()


class Echo(asyncio.Protocol):
    live = 0
    peak = 0

    def connection_made(self, t):
        self.t = t
        Echo.live += 1
        Echo.peak = max(Echo.peak, Echo.live)

    def data_received(self, data):
        self.t.write(data)

    def connection_lost(self, exc):
        Echo.live -= 1


async def test_1000_concurrent_connections():
    n = 1000
    loop = asyncio.get_running_loop()
    with nofile_at_least(2 * n + 512):
        Echo.live = Echo.peak = 0
        srv = await loop.create_server(Echo, "127.0.0.1", 0, backlog=n + 100)
        addr = srv.sockets[0].getsockname()
        all_echoed = loop.create_future()
        echoed = 0

        async def client(i):
            nonlocal echoed
            t, p = await loop.create_connection(Recorder, *addr)
            payload = b"%06d" % i * 50
            t.write(payload)
            await p.wait_data(len(payload), 60)
            echoed += 1
            if echoed == n:
                all_echoed.set_result(None)
            await all_echoed        # every connection is open at this point
            t.close()
            await asyncio.wait_for(asyncio.shield(p.lost), 30)
            return bytes(p.data) == payload and p.events == ["made", "data", ("lost", None)]

        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client(i) for i in range(n))), 90)
            assert results == [True] * n
            assert Echo.peak == n
            for _ in range(100):
                if Echo.live == 0:
                    break
                await asyncio.sleep(0.01)
            assert Echo.live == 0
        finally:
            srv.close()
            await srv.wait_closed()


# -- aioring's own guarantees --------------------------------------------------------

class CloseAtOnce(asyncio.Protocol):
    def connection_made(self, t):
        t.close()


def _connect_and_wait_eof(addr, count, errors):
    try:
        for _ in range(count):
            with socket.create_connection(addr, timeout=10) as c:
                while c.recv(100):
                    pass
    except Exception as exc:     # reported by the test
        errors.append(exc)


@pytest.mark.parametrize("fixed", ["1", "0"], ids=["fixed-files", "plain-fds"])
def test_aioring_only_descriptors_released_after_10000_connections(monkeypatch, fixed):
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)
    n, nthreads = 10_000, 4

    async def accept_and_close(count):
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(CloseAtOnce, "127.0.0.1", 0, backlog=512)
        addr = srv.sockets[0].getsockname()
        errors = []
        threads = [threading.Thread(target=_connect_and_wait_eof,
                                    args=(addr, count // nthreads, errors))
                   for _ in range(nthreads)]
        for th in threads:
            th.start()
        try:
            while any(th.is_alive() for th in threads):
                await asyncio.sleep(0.01)
        finally:
            for th in threads:
                th.join()
            srv.close()
            await srv.wait_closed()
        assert errors == []
        for _ in range(5):
            await asyncio.sleep(0)

    async def main():
        loop = asyncio.get_running_loop()
        await accept_and_close(40)          # warm up whatever is made lazily
        fds = count_fds()
        slots = loop._ring_info().get("fixed_files_in_use")
        await asyncio.wait_for(accept_and_close(n), 60)
        await asyncio.sleep(0.05)
        return fds, count_fds(), slots, loop._ring_info().get("fixed_files_in_use")

    fds_before, fds_after, slots_before, slots_after = aioring.run(main())
    assert fds_after == fds_before
    assert slots_after == slots_before


@pytest.mark.parametrize("fixed", ["1", "0"], ids=["fixed-files", "plain-fds"])
def test_aioring_only_no_iowq_threads_for_echo_traffic(monkeypatch, fixed):
    monkeypatch.setenv("AIORING_FIXED_FILES", fixed)
    n = 200

    async def main():
        loop = asyncio.get_running_loop()
        before = iou_worker_tids()
        srv = await loop.create_server(Echo, "127.0.0.1", 0, backlog=n + 50)
        addr = srv.sockets[0].getsockname()
        conns = []
        try:
            for _ in range(n):
                conns.append(await loop.create_connection(Recorder, *addr))
            total = 0
            for rnd in range(5):
                size = 1000 if rnd < 4 else 300_000
                payload = os.urandom(size)
                for t, p in conns:
                    t.write(payload)
                total += size
                await asyncio.wait_for(
                    asyncio.gather(*(p.wait_data(total, 30) for t, p in conns)), 60)
            during = iou_worker_tids() - before
        finally:
            for t, p in conns:
                t.close()
            srv.close()
            await srv.wait_closed()
        return during, iou_worker_tids() - before

    during, after = aioring.run(main())
    assert during == set(), "socket traffic created io-wq worker threads"
    assert after == set()
