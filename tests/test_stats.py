"""loop.stats() (docs/stats.md): each counter moves when, and only when, the
event it counts happens.  aioring's own API (the stock loop has none), so
each test sets up a warm loop (its own reads armed, nothing else in flight),
makes one kind of event happen a known number of times and compares the
counters before and after: the counter of that event moves by that number,
and the others by what the event itself implies (a request that waits is a
submission and, later, a completion) and nothing else.

The io_uring_enter count is checked against the system calls themselves,
counted by strace on a child process."""
import asyncio
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

import aioring
import aioring.files
from _loop_helpers import python_env, run_briefly, run_python, REPO
from _stream_helpers import until

COUNTERS = {
    "iterations", "enter_calls", "submissions", "completions", "in_flight",
    "cq_overflows", "wakeups", "fixed_files_in_use", "fixed_files_free",
    "fd_fallbacks", "recv_buffers_provided", "recv_buffers_used", "recv_enobufs",
    "slow_callbacks", "file_requests",
}


def moved(before, after):
    """{counter: change} for the counters that changed."""
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def warm_loop(**kwargs):
    loop = aioring.Loop(**kwargs)
    run_briefly(loop, 3)        # its own reads are armed and submitted
    return loop


def test_stats_is_a_new_dict_of_counters_and_reading_it_moves_nothing():
    loop = warm_loop()
    try:
        a = loop.stats()
        b = loop.stats()
        assert set(a) == COUNTERS
        assert all(type(v) is int and v >= 0 for v in a.values())
        assert a == b and a is not b
        a["iterations"] = -1            # the caller's copy
        assert loop.stats() == b
    finally:
        loop.close()
    # still readable once closed (a program logs them at shutdown)
    closed = loop.stats()
    assert closed["iterations"] == b["iterations"]
    assert closed["fixed_files_in_use"] == 0 and closed["fixed_files_free"] == 0


def test_running_loop_has_stats_through_asyncio():
    async def main():
        return asyncio.get_running_loop().stats()
    stats = aioring.run(main())
    assert stats["iterations"] >= 1 and stats["enter_calls"] >= 1


def test_idle_iterations_move_only_the_iteration_count():
    loop = warm_loop()
    try:
        before = loop.stats()
        run_briefly(loop, 20)
        # nothing to submit and nothing to wait for: not even an enter
        assert moved(before, loop.stats()) == {"iterations": 20}
    finally:
        loop.close()


def test_a_request_that_waits_is_one_submission_then_one_completion():
    loop = warm_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        before = loop.stats()
        task = loop.create_task(loop.sock_recv(a, 100))
        run_briefly(loop, 2)        # EAGAIN at once; the ring's recv submitted
        waiting = loop.stats()
        b.send(b"hello")
        assert loop.run_until_complete(task) == b"hello"
        after = loop.stats()
    finally:
        a.close()
        b.close()
        loop.close()
    d = moved(before, waiting)
    assert d.pop("iterations") == 2
    assert d.pop("enter_calls") >= 1
    assert d == {"submissions": 1, "in_flight": 1}
    d = moved(waiting, after)
    assert d.pop("iterations") >= 1
    assert d.pop("enter_calls") >= 1
    assert d == {"completions": 1, "in_flight": -1}


def receives_at_once(n):
    """n sock_recv() calls that wait, then whose data all come at once, on
    a new warm loop: their results and how the counters moved."""
    loop = warm_loop()
    pairs = [socket.socketpair() for _ in range(n)]
    for a, _ in pairs:
        a.setblocking(False)
    try:
        before = loop.stats()
        tasks = [loop.create_task(loop.sock_recv(a, 10)) for a, _ in pairs]
        run_briefly(loop, 2)
        for _, b in pairs:
            b.send(b"x")
        got = loop.run_until_complete(asyncio.gather(*tasks))
        return got, moved(before, loop.stats())
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        loop.close()


def test_many_requests_count_one_each():
    got, d = receives_at_once(40)
    assert got == [b"x"] * 40
    assert d["submissions"] == 40 and d["completions"] == 40
    assert "in_flight" not in d and "wakeups" not in d and "slow_callbacks" not in d


IO_URING_ENTER = 426        # the system call's number (the same on every architecture)


def wait_until_blocked_in_enter(tid, timeout=10):
    """Until thread tid waits in io_uring_enter (its loop is asleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            if f.read().split()[0] == str(IO_URING_ENTER):
                return
        time.sleep(0.001)
    raise TimeoutError("the loop never waited")


def test_wakeups_count_only_the_sleeping_loop_woken_from_another_thread():
    loop = warm_loop()
    try:
        # from the loop's own thread: the loop is awake, nothing is written
        before = loop.stats()
        for _ in range(50):
            loop.call_soon_threadsafe(lambda: None)
        run_briefly(loop)
        assert "wakeups" not in moved(before, loop.stats())

        # from another thread while the loop waits: one wake-up each time,
        # however many calls came in while it slept
        woken = 5
        main_tid = threading.get_native_id()
        before = loop.stats()
        for _ in range(woken):
            fut = loop.create_future()

            def poke(fut=fut):
                wait_until_blocked_in_enter(main_tid)
                for _ in range(10):
                    loop.call_soon_threadsafe(lambda: None)
                loop.call_soon_threadsafe(fut.set_result, None)

            th = threading.Thread(target=poke)
            th.start()
            loop.run_until_complete(asyncio.wait_for(fut, 10))
            th.join()
        d = moved(before, loop.stats())
        assert d["wakeups"] == woken
        # each wake-up is the eventfd read's completion, and its re-arm
        assert d["completions"] == woken and d["submissions"] == woken
    finally:
        loop.close()


async def _connected_pair(loop, server_protocol, count=1):
    server = await loop.create_server(server_protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
               for _ in range(count)]
    return server, clients


class Collect(asyncio.Protocol):
    instances = []

    def connection_made(self, transport):
        self.transport = transport
        self.data = bytearray()
        Collect.instances.append(self)

    def data_received(self, data):
        self.data += data


def one_connection(loop, protocol=Collect):
    """A server, a client transport and the server side's protocol."""
    Collect.instances = []
    server, clients = loop.run_until_complete(_connected_pair(loop, protocol))
    loop.run_until_complete(until(lambda: len(Collect.instances) == 1))
    return server, clients[0][0], Collect.instances[0]


def close_connection(loop, server, transport, peer):
    transport.close()
    peer.transport.close()
    server.close()
    loop.run_until_complete(server.wait_closed())


def test_fixed_file_slots_follow_the_sockets():
    loop = warm_loop()
    try:
        size = loop._ring_info()["fixed_files_size"]
        before = loop.stats()
        assert before["fixed_files_in_use"] + before["fixed_files_free"] == size

        Collect.instances = []
        server, clients = loop.run_until_complete(_connected_pair(loop, Collect, 3))
        loop.run_until_complete(until(lambda: len(Collect.instances) == 3))
        during = loop.stats()
        # the listening socket, three client and three accepted transports
        assert during["fixed_files_in_use"] - before["fixed_files_in_use"] == 7
        assert during["fixed_files_free"] - before["fixed_files_free"] == -7
        assert during["fd_fallbacks"] == before["fd_fallbacks"]

        for transport, _ in clients:
            transport.close()
        for p in Collect.instances:
            p.transport.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.run_until_complete(until(
            lambda: loop.stats()["fixed_files_in_use"] == before["fixed_files_in_use"]))
        after = loop.stats()
        assert after["fixed_files_free"] == before["fixed_files_free"]
        assert after["fd_fallbacks"] == before["fd_fallbacks"]
    finally:
        loop.close()


def test_fd_fallbacks_count_sockets_left_on_plain_descriptors():
    # with the table off every socket is one
    loop = warm_loop(fixed_files=False)
    try:
        before = loop.stats()
        assert before["fixed_files_in_use"] == before["fixed_files_free"] == 0
        Collect.instances = []
        server, clients = loop.run_until_complete(_connected_pair(loop, Collect, 2))
        loop.run_until_complete(until(lambda: len(Collect.instances) == 2))
        d = moved(before, loop.stats())
        assert d["fd_fallbacks"] == 5
        assert "fixed_files_in_use" not in d and "fixed_files_free" not in d
        for transport, _ in clients:
            transport.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        loop.close()


FULL_TABLE_CHILD = r"""
import asyncio, json, resource, socket
import aioring

# the table has as many slots as RLIMIT_NOFILE allowed when the loop was
# made: 64 here; then the limit goes back up and 40 connections (81 sockets
# with the listener) need more slots than there are
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
loop = aioring.new_event_loop()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
size = loop._ring_info()["fixed_files_size"]

async def main():
    got = []

    class P(asyncio.Protocol):
        def connection_made(self, t):
            got.append(bytearray())
            self.data = got[-1]
        def data_received(self, data):
            self.data += data

    before = loop.stats()
    server = await loop.create_server(P, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
               for _ in range(40)]
    while len(got) < 40:
        await asyncio.sleep(0.01)
    after = loop.stats()
    for t, _ in clients:            # every connection works either way
        t.write(b"ping")
    while not all(d == b"ping" for d in got):
        await asyncio.sleep(0.01)
    for t, _ in clients:
        t.close()
    server.close()
    return before, after

before, after = loop.run_until_complete(main())
loop.close()
print(json.dumps([size, before, after]))
"""


def test_fd_fallbacks_count_sockets_beyond_a_full_table():
    proc = run_python(FULL_TABLE_CHILD, timeout=60)
    assert proc.returncode == 0, proc.stderr
    size, before, after = json.loads(proc.stdout)
    assert size == 64
    assert before["fixed_files_in_use"] == 0 and before["fd_fallbacks"] == 0
    assert after["fixed_files_in_use"] == 64 and after["fixed_files_free"] == 0
    assert after["fd_fallbacks"] == 81 - 64


def test_recv_buffers_used_counts_received_chunks():
    loop = warm_loop()
    try:
        server, transport, peer = one_connection(loop)
        before = loop.stats()
        assert before["recv_buffers_provided"] > 0     # the pool exists now
        chunks = 10
        for i in range(chunks):
            # one chunk at a time: each arrives alone, in one buffer
            transport.write(b"x" * 100)
            loop.run_until_complete(until(lambda: len(peer.data) == 100 * (i + 1)))
        d = moved(before, loop.stats())
        assert d["recv_buffers_used"] == chunks
        assert "recv_enobufs" not in d and "recv_buffers_provided" not in d
        close_connection(loop, server, transport, peer)
    finally:
        loop.close()


ENOBUFS_CHILD = r"""
import asyncio, json, socket, sys
import aioring

async def main():
    loop = asyncio.get_running_loop()
    got = {}

    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.key = len(got)
            got[self.key] = bytearray()
        def data_received(self, data):
            got[self.key] += data

    server = await loop.create_server(P, "127.0.0.1", 0)
    addr = server.sockets[0].getsockname()
    clients = [socket.create_connection(addr) for _ in range(8)]
    while len(got) < 8:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    before = loop.stats()
    # all eight send while the loop sleeps: their receives race for the pool
    for c in clients:
        c.sendall(b"y" * 1000)
    while sum(map(len, got.values())) < 8000:
        await asyncio.sleep(0.01)
    after = loop.stats()
    for c in clients:
        c.close()
    server.close()
    print(json.dumps([before, after, sorted(map(bytes.decode, map(bytes, got.values())))]))

aioring.run(main())
"""


@pytest.mark.parametrize("pool", ["1", "64"])
def test_recv_enobufs_moves_when_the_pool_runs_dry(pool):
    env = python_env(AIORING_RECV_BUFFERS=pool, AIORING_RECV_BUFFERS_MAX=pool)
    proc = run_python(ENOBUFS_CHILD, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, after, got = json.loads(proc.stdout)
    assert got == ["y" * 1000] * 8          # nothing lost either way
    d = moved(before, after)
    if pool == "1":
        assert d["recv_enobufs"] >= 1
    else:
        assert "recv_enobufs" not in d
    assert "recv_buffers_provided" not in d     # (the most there may be)


def test_cq_overflows_count_completions_the_ring_had_no_room_for(monkeypatch):
    got, d = receives_at_once(64)
    assert got == [b"x"] * 64 and "cq_overflows" not in d
    monkeypatch.setenv("AIORING_RING_ENTRIES", "8,16")
    got, d = receives_at_once(64)
    assert got == [b"x"] * 64
    assert d["cq_overflows"] >= 1
    assert d["completions"] == 64           # none lost


def _slow(seconds):
    time.sleep(seconds)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_slow_callbacks_count_handles_that_take_the_threshold(debug):
    loop = warm_loop()
    loop.set_debug(debug)
    loop.slow_callback_duration = 0.05
    try:
        before = loop.stats()
        for _ in range(1000):
            loop.call_soon(lambda: None)
        run_briefly(loop, 2)
        assert "slow_callbacks" not in moved(before, loop.stats())

        before = loop.stats()
        loop.call_soon(_slow, 0.06)
        loop.call_soon(_slow, 0.001)
        loop.call_later(0.01, _slow, 0.07)
        loop.run_until_complete(asyncio.sleep(0.1))
        assert moved(before, loop.stats())["slow_callbacks"] == 2

        # the threshold is read at each callback: raised, they are not slow
        loop.slow_callback_duration = 0.5
        before = loop.stats()
        loop.call_soon(_slow, 0.06)
        run_briefly(loop, 2)
        assert "slow_callbacks" not in moved(before, loop.stats())

        # a task step is a callback too
        loop.slow_callback_duration = 0.05

        async def blocks():
            time.sleep(0.06)
        before = loop.stats()
        loop.run_until_complete(blocks())
        assert moved(before, loop.stats())["slow_callbacks"] == 1
    finally:
        loop.close()


def test_slow_callbacks_count_protocol_callbacks_run_from_completions():
    loop = warm_loop()
    loop.slow_callback_duration = 0.05

    class Slow(Collect):
        def data_received(self, data):
            super().data_received(data)
            if data.startswith(b"slow"):
                time.sleep(0.06)

    try:
        server, transport, peer = one_connection(loop, Slow)
        before = loop.stats()
        transport.write(b"fast")
        loop.run_until_complete(until(lambda: len(peer.data) == 4))
        assert "slow_callbacks" not in moved(before, loop.stats())
        transport.write(b"slow")
        loop.run_until_complete(until(lambda: len(peer.data) == 8))
        assert moved(before, loop.stats())["slow_callbacks"] == 1
        close_connection(loop, server, transport, peer)
    finally:
        loop.close()


@pytest.mark.parametrize("duration, slow", [(-1.0, True), (0.0, True), (math.inf, False),
                                            (math.nan, False)])
def test_slow_callback_threshold_edges(duration, slow):
    # as asyncio's debug check `dt >= slow_callback_duration`: at or below
    # zero every callback is slow, at infinity or NaN none
    loop = warm_loop()
    loop.slow_callback_duration = duration
    try:
        assert loop.slow_callback_duration == duration or math.isnan(duration)
        before = loop.stats()
        for _ in range(10):
            loop.call_soon(lambda: None)
        run_briefly(loop)
        count = moved(before, loop.stats()).get("slow_callbacks", 0)
        # (10 callbacks, the stop callback, and the completions the
        # iteration ran, if any)
        assert count >= 11 if slow else count == 0
    finally:
        loop.close()


@pytest.mark.parametrize("clock, counted", [("monotonic", 1), ("0", 0)])
def test_callback_clock_setting(monkeypatch, clock, counted):
    # =monotonic: the clock of machines whose tick counter the loop does not
    # trust; =0: no timing, no slow callback counted
    monkeypatch.setenv("AIORING_CALLBACK_CLOCK", clock)
    loop = warm_loop()
    loop.slow_callback_duration = 0.05
    try:
        assert loop._ring_info()["callback_clock"] is (clock != "0")
        before = loop.stats()
        for _ in range(100):
            loop.call_soon(lambda: None)
        loop.call_soon(_slow, 0.06)
        loop.call_soon(_slow, 0.001)
        run_briefly(loop, 2)
        d = moved(before, loop.stats())
        assert d.get("slow_callbacks", 0) == counted and d["iterations"] == 2
    finally:
        loop.close()


def test_slow_callback_duration_behaves_as_asyncio_attribute():
    stock = asyncio.SelectorEventLoop()
    loop = aioring.Loop()
    try:
        assert loop.slow_callback_duration == stock.slow_callback_duration == 0.1
        for value in (0.25, 2, True):
            stock.slow_callback_duration = value
            loop.slow_callback_duration = value
            assert loop.slow_callback_duration == stock.slow_callback_duration
    finally:
        stock.close()
        loop.close()


def test_file_requests_count_ring_file_operations(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"0123456789")

    async def main():
        loop = asyncio.get_running_loop()
        before = loop.stats()
        st = await aioring.files.stat(path)
        after_stat = loop.stats()
        async with aioring.open(path, "rb") as f:
            data = await f.read(4)
            data += await f.read(6)
        after_file = loop.stats()
        return st.st_size, data, moved(before, after_stat), moved(after_stat, after_file)

    size, data, d_stat, d_file = aioring.run(main())
    assert (size, data) == (10, b"0123456789")
    assert d_stat["file_requests"] == 1
    # open, one read (its read-ahead holds the rest), close
    assert d_file["file_requests"] == 3
    assert d_file["submissions"] >= 3 and d_file["completions"] >= 3


def test_file_requests_do_not_count_executor_fallbacks(tmp_path, monkeypatch):
    # (AIORING_FILE_OPS_OFF=statx, as read at import)
    monkeypatch.setattr(aioring.files, "_OPS_OFF", frozenset({"statx"}))
    path = tmp_path / "f"
    path.write_bytes(b"x")

    async def main():
        loop = asyncio.get_running_loop()
        before = loop.stats()
        assert not aioring.files.uses_ring("statx")
        await aioring.files.stat(path)
        return moved(before, loop.stats())

    assert "file_requests" not in aioring.run(main())


STRACE_CHILD = r"""
import asyncio, json, os, socket, threading, time
import aioring

def mark():
    try:
        os.write(-1, b"stats-mark")     # shows in strace's log: write(-1, ...)
    except OSError:
        pass

async def main():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    a, b = socket.socketpair()
    a.setblocking(False)
    mark()
    before = loop.stats()
    for i in range(20):
        threading.Timer(0.002, b.send, (b"x",)).start()
        await loop.sock_recv(a, 10)
        await asyncio.sleep(0.001)
        loop.call_soon(lambda: None)
        await asyncio.sleep(0)
    after = loop.stats()
    mark()
    print(json.dumps([before, after]))

aioring.run(main())
"""


def test_enter_calls_and_submissions_are_the_system_calls_made(tmp_path):
    log = tmp_path / "strace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=io_uring_enter,write", "-o", str(log),
         sys.executable, "-c", STRACE_CHILD],
        env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = json.loads(proc.stdout.splitlines()[-1])
    lines = log.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if '"stats-mark"' in line]
    assert len(marks) == 2, lines[:20]
    window = lines[marks[0] + 1:marks[1]]
    enters = submitted = 0
    for line in window:
        if "io_uring_enter(" in line:
            enters += 1
        if "io_uring_enter" in line and "unfinished" not in line:
            m = re.search(r"= (-?\d+)", line)
            if m and int(m.group(1)) > 0:
                submitted += int(m.group(1))
    d = moved(before, after)
    assert enters > 0
    assert d["enter_calls"] == enters
    assert d["submissions"] == submitted
