"""add_reader / add_writer / remove_reader / remove_writer, on the stock loop
and on aioring, with real descriptors (socket pairs, pipes, files).

Every test takes `any_loop` (a fresh loop of each kind) or is async (run on
each kind by the conftest hook): a deviation of aioring fails on [aioring]
only.  Where the expected observation is not spelled out, the scenario also
runs on a fresh stock loop (`on_stock`) and the two are compared.  Tests
named `*_aioring_only` / `*_stock_only` show a documented difference
(docs/differences.md) and are skipped on the other loop.
"""
import asyncio
import errno
import os
import socket
import tempfile

import pytest

import aioring

from _loop_helpers import is_aioring, on_stock, run_briefly
from _stream_helpers import fill


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def noop(*args):
    pass


class FileLike:
    """Not a socket: anything with fileno() is accepted."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def closed_fd():
    """A descriptor number that is not open (was open a moment ago)."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def drain(sock):
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


# -- level-triggered ----------------------------------------------------------


def test_reader_called_once_per_iteration_until_drained(any_loop, pair):
    loop = any_loop
    a, b = pair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(1)))
    b.send(b"abcde")
    counts = []
    for _ in range(8):
        run_briefly(loop)
        counts.append(len(got))
    assert counts == [1, 2, 3, 4, 5, 5, 5, 5]
    assert got == [b"a", b"b", b"c", b"d", b"e"]
    assert loop.remove_reader(a) is True


def test_reader_woken_by_data_that_arrives_while_the_loop_sleeps(any_loop, pair):
    loop = any_loop
    a, b = pair

    async def main():
        got = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(100)))
        loop.call_later(0.05, b.send, b"late")
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            loop.remove_reader(a)

    assert loop.run_until_complete(main()) == b"late"


def test_writer_called_every_iteration_until_removed(any_loop, pair):
    loop = any_loop
    a, b = pair
    trace = []

    def tick(n):
        trace.append("t")
        if n:
            loop.call_soon(tick, n - 1)
        else:
            # the writer's event of this iteration is queued behind us: it
            # must not run once removed
            trace.append(loop.remove_writer(a))
            loop.stop()

    assert loop.add_writer(a, trace.append, "w") is None
    loop.call_soon(tick, 5)
    loop.run_forever()
    assert trace == ["t", "w"] * 5 + ["t", True]
    run_briefly(loop, 3)
    assert trace == ["t", "w"] * 5 + ["t", True]


def test_writer_on_full_pipe_waits_for_room(any_loop):
    loop = any_loop
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        try:
            while True:
                os.write(w, b"x" * 65536)
        except BlockingIOError:
            pass
        calls = []
        loop.add_writer(w, calls.append, 1)
        run_briefly(loop, 3)
        assert calls == []
        while True:
            try:
                if not os.read(r, 1 << 20):
                    break
            except BlockingIOError:
                break
        run_briefly(loop, 2)
        assert calls == [1, 1]
        assert loop.remove_writer(w) is True
    finally:
        os.close(r)
        os.close(w)


def test_reader_on_pipe_and_eof(any_loop):
    loop = any_loop
    r, w = os.pipe()
    os.set_blocking(r, False)
    got = []
    try:
        loop.add_reader(r, lambda: got.append(os.read(r, 2)))
        os.write(w, b"abc")
        os.close(w)
        w = -1
        run_briefly(loop, 4)
        # then EOF: readable for ever (level-triggered), reads b''
        assert got == [b"ab", b"c", b"", b""]
        assert loop.remove_reader(r) is True
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# -- return values ------------------------------------------------------------------


def test_return_values(any_loop, pair):
    loop = any_loop
    a, b = pair
    assert loop.add_reader(a, noop) is None
    assert loop.add_writer(a, noop) is None
    assert loop.add_reader(a, noop) is None          # replacing: None too
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(b) is False              # never added
    assert loop.remove_writer(b.fileno()) is False


# -- replacing, reader and writer on one descriptor ----------------------------------


def test_replacing_a_reader_never_calls_the_old_callback(any_loop, pair):
    loop = any_loop
    a, b = pair
    trace = []

    def replace():
        trace.append("replace")
        loop.add_reader(a, new)

    def old():
        trace.append("old")
        if trace.count("old") == 1:
            # runs next iteration, ahead of that iteration's reader event
            loop.call_soon(replace)

    def new():
        trace.append("new")

    b.send(b"x")                        # stays unread: ready every iteration
    loop.add_reader(a, old)
    run_briefly(loop, 4)
    assert trace == ["old", "replace", "new", "new"]
    assert loop.remove_reader(a) is True


def test_replacing_before_the_loop_runs(any_loop, pair):
    loop = any_loop
    a, b = pair
    trace = []
    b.send(b"x")
    loop.add_reader(a, trace.append, "old")
    loop.add_reader(a.fileno(), trace.append, "new")
    loop.add_writer(a, trace.append, "w-old")
    loop.add_writer(FileLike(a.fileno()), trace.append, "w-new")
    run_briefly(loop, 2)
    assert sorted(trace) == ["new", "new", "w-new", "w-new"]
    loop.remove_reader(a)
    loop.remove_writer(a)


def test_reader_and_writer_on_one_fd_are_independent(any_loop, pair):
    loop = any_loop
    a, b = pair
    trace = []
    b.send(b"x")
    loop.add_reader(a, trace.append, "r")
    loop.add_writer(a, trace.append, "w")
    run_briefly(loop)
    assert sorted(trace) == ["r", "w"]
    del trace[:]
    assert loop.remove_reader(a) is True
    run_briefly(loop, 2)
    assert trace == ["w", "w"]
    del trace[:]
    loop.add_reader(a, trace.append, "r")
    assert loop.remove_writer(a) is True
    run_briefly(loop, 2)
    assert trace == ["r", "r"]
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True


def test_reader_runs_before_writer_of_the_same_fd(any_loop, pair):
    # The stock loop turns one selector event into the fd's reader, then its
    # writer: whichever was added first, the reader runs first.
    loop = any_loop
    a, b = pair
    trace = []
    b.send(b"x")
    loop.add_writer(a, trace.append, "w")
    loop.add_reader(a, trace.append, "r")
    run_briefly(loop, 3)
    assert trace == ["r", "w"] * 3
    loop.remove_reader(a)
    loop.remove_writer(a)


# -- what a descriptor may be ------------------------------------------------------------


def test_file_objects_with_fileno_accepted(any_loop, pair):
    loop = any_loop
    a, b = pair
    got = []
    b.send(b"x")
    loop.add_reader(a, got.append, "sock")                 # a socket object
    loop.add_writer(FileLike(b.fileno()), got.append, "obj")   # any fileno()
    run_briefly(loop)
    assert sorted(got) == ["obj", "sock"]
    # registered under the descriptor number: removable by number or object
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_writer(b) is True
    assert loop.remove_reader(FileLike(a.fileno())) is False


@pytest.mark.parametrize("add", ["add_reader", "add_writer"])
def test_invalid_descriptors(any_loop, add):
    loop = any_loop
    remove = add.replace("add", "remove")
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        getattr(loop, add)(-1, noop)
    with pytest.raises(ValueError, match="Invalid file descriptor: -5"):
        getattr(loop, add)(-5, noop)
    with pytest.raises(ValueError, match="Invalid file object"):
        getattr(loop, add)(object(), noop)
    with pytest.raises(ValueError, match="Invalid file object"):
        getattr(loop, add)(3.0, noop)
    with pytest.raises(ValueError, match="Invalid file object"):
        getattr(loop, remove)(object())
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        getattr(loop, remove)(-1)


@pytest.mark.parametrize("add", ["add_reader", "add_writer"])
def test_closed_or_never_opened_fd_is_ebadf(any_loop, add):
    loop = any_loop
    remove = add.replace("add", "remove")
    for fd in (closed_fd(), 19_999, 1 << 24):
        with pytest.raises(OSError) as ei:
            getattr(loop, add)(fd, noop)
        assert ei.value.errno == errno.EBADF
        assert getattr(loop, remove)(fd) is False        # nothing registered
    s = socket.socket()
    s.close()
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        getattr(loop, add)(s, noop)                    # closed socket object


@pytest.mark.parametrize("add", ["add_reader", "add_writer"])
def test_regular_file_and_directory_refused_with_eperm(any_loop, add):
    loop = any_loop
    remove = add.replace("add", "remove")
    with tempfile.TemporaryFile() as f:
        with pytest.raises(PermissionError) as ei:
            getattr(loop, add)(f, noop)
        assert ei.value.errno == errno.EPERM
        assert getattr(loop, remove)(f) is False
    d = os.open(tempfile.gettempdir(), os.O_RDONLY)
    try:
        with pytest.raises(PermissionError) as ei:
            getattr(loop, add)(d, noop)
        assert ei.value.errno == errno.EPERM
        assert getattr(loop, remove)(d) is False
    finally:
        os.close(d)


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
def test_unpollable_device_refused_with_eperm(any_loop, path):
    # epoll refuses any file without a poll method (character devices such
    # as /dev/null, not only regular files and directories)
    loop = any_loop
    calls = []
    with open(path, "rb") as f:
        with pytest.raises(PermissionError) as ei:
            loop.add_reader(f, calls.append, 1)
        assert ei.value.errno == errno.EPERM
        run_briefly(loop, 2)
        assert calls == []
        assert loop.remove_reader(f) is False


def test_pollable_proc_file_accepted(any_loop):
    # a regular file that has a poll method (procfs' mounts) is accepted by
    # epoll, and reported readable
    loop = any_loop
    calls = []
    with open("/proc/self/mounts", "rb") as f:
        loop.add_reader(f, calls.append, 1)
        run_briefly(loop, 2)
        assert calls == [1, 1]
        assert loop.remove_reader(f) is True


def test_remove_by_closed_socket_object(any_loop, pair):
    # The stock selector finds a registration by the object it was added
    # with, even once that socket is closed (fileno() == -1).
    loop = any_loop
    a, b = pair
    loop.add_reader(a, noop)
    a.close()
    assert loop.remove_reader(a) is True
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        loop.remove_reader(a)                  # no longer registered


# -- closed loop ----------------------------------------------------------------------------


def test_closed_loop(any_loop, pair):
    loop = any_loop
    a, b = pair
    loop.add_reader(a, noop)
    loop.close()
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(b) is False
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_reader(a, noop)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_writer(b, noop)
    # checked after the descriptor's type, as in asyncio
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.add_reader(object(), noop)


# -- callbacks ----------------------------------------------------------------------------------


def raising_reader(sock, calls):
    calls.append(sock.recv(1))
    if len(calls) == 1:
        raise ZeroDivisionError("from the reader")


def _raising_reader_scenario(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    contexts = []
    calls = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.add_reader(a, raising_reader, a, calls)
    b.send(b"abc")
    ticks = []
    loop.call_soon(ticks.append, 1)
    run_briefly(loop, 5)
    loop.remove_reader(a)
    a.close()
    b.close()
    return {
        "calls": calls,
        "ticks": ticks,
        "n_contexts": len(contexts),
        "message": contexts[0]["message"],
        "exception": repr(contexts[0]["exception"]),
        "keys": sorted(contexts[0]),
    }


def test_reader_exception_goes_to_handler_and_loop_goes_on(any_loop):
    got = _raising_reader_scenario(any_loop)
    assert got["calls"] == [b"a", b"b", b"c"]       # still registered after it
    assert got["n_contexts"] == 1
    assert got["exception"] == "ZeroDivisionError('from the reader')"
    assert got["message"].startswith("Exception in callback raising_reader(")
    assert got == on_stock(_raising_reader_scenario)


def test_remove_reader_inside_its_callback(any_loop, pair):
    loop = any_loop
    a, b = pair
    calls = []

    def cb():
        calls.append(loop.remove_reader(a))

    b.send(b"unread")
    loop.add_reader(a, cb)
    run_briefly(loop, 4)
    assert calls == [True]
    assert a.recv(100) == b"unread"


def test_remove_writer_inside_its_callback_then_add_again(any_loop, pair):
    loop = any_loop
    a, b = pair
    calls = []

    def cb(n):
        calls.append(n)
        loop.remove_writer(a)
        if n < 3:
            loop.add_writer(a, cb, n + 1)

    loop.add_writer(a, cb, 1)
    run_briefly(loop, 5)
    assert calls == [1, 2, 3]


def test_removing_a_reader_whose_event_is_queued(any_loop):
    # two readers ready in one iteration; whichever runs first removes the
    # other, whose event is already queued: it must not run
    loop = any_loop
    (a1, b1), (a2, b2) = socket.socketpair(), socket.socketpair()
    calls = []
    try:
        def cb(name, other):
            calls.append((name, loop.remove_reader(other)))

        b1.send(b"x")
        b2.send(b"x")
        loop.add_reader(a1, cb, "a1", a2)
        loop.add_reader(a2, cb, "a2", a1)
        run_briefly(loop, 3)
        # one reader ran (each iteration: it stays registered and ready),
        # the other never did
        assert calls in ([("a1", True), ("a1", False), ("a1", False)],
                         [("a2", True), ("a2", False), ("a2", False)])
        survivor = a1 if calls[0][0] == "a1" else a2
        assert loop.remove_reader(survivor) is True
    finally:
        for s in (a1, b1, a2, b2):
            s.close()


def test_removing_a_reader_from_an_earlier_callback_of_the_iteration(any_loop, pair):
    loop = any_loop
    a, b = pair
    calls = []
    b.send(b"x")
    loop.add_reader(a, calls.append, "reader")
    # queued before the iteration's I/O events, so it runs ahead of them
    loop.call_soon(lambda: calls.append(("removed", loop.remove_reader(a))))
    run_briefly(loop, 3)
    assert calls == [("removed", True)]


def test_args_passed_through(any_loop, pair):
    loop = any_loop
    a, b = pair
    got = []
    marker = object()
    b.send(b"x")
    loop.add_reader(a, lambda *args: got.append(("r", args)), 1, "two", None, marker)
    loop.add_writer(b, lambda *args: got.append(("w", args)), marker)
    run_briefly(loop)
    assert sorted(got, key=lambda x: x[0]) == [
        ("r", (1, "two", None, marker)), ("w", (marker,))]
    loop.remove_reader(a)
    loop.remove_writer(b)


def _many_ready_readers(loop, n, run_first):
    """n socket pairs with 3 bytes each; each reader reads one byte per
    call.  Returns (sorted distinct call counts, callback errors)."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    if run_first:
        run_briefly(loop)
    pairs = [socket.socketpair() for _ in range(n)]
    calls = [0] * n

    def cb(i, sock):
        calls[i] += 1
        sock.recv(1)            # raises BlockingIOError if called spuriously

    try:
        for i, (a, b) in enumerate(pairs):
            a.setblocking(False)
            b.send(b"xyz")
            loop.add_reader(a, cb, i, a)
        run_briefly(loop, 5)
        for a, b in pairs:
            assert loop.remove_reader(a) is True
        return sorted(set(calls)), [repr(c.get("exception")) for c in errors[:3]]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_many_ready_readers_stay_level_triggered(any_loop):
    # more ready readers in one iteration than a ring's submission queue
    # holds: each still runs once per iteration while readable, never after
    assert _many_ready_readers(any_loop, 1000, run_first=True) == ([3], [])


def test_many_readers_added_before_the_loop_first_runs(any_loop):
    assert _many_ready_readers(any_loop, 1000, run_first=False) == ([3], [])


def test_remove_then_add_again_in_one_iteration(any_loop, pair):
    loop = any_loop
    a, b = pair
    trace = []
    b.send(b"x")
    loop.add_reader(a, trace.append, "old")
    run_briefly(loop)

    def swap():
        trace.append(loop.remove_reader(a))
        loop.add_reader(a, trace.append, "new")

    loop.call_soon(swap)
    run_briefly(loop, 2)
    assert trace == ["old", True, "new"]
    assert loop.remove_reader(a) is True


# -- closed without remove_*() ---------------------------------------------------------


def test_reader_of_socket_closed_without_remove_is_never_called(any_loop, pair):
    # (the misuse asyncio's documentation warns about; the stock loop's
    # epoll forgets a closed socket: its callback never runs again)
    loop = any_loop
    a, b = pair
    calls = []
    loop.add_reader(a, calls.append, "r")
    run_briefly(loop)                     # armed, not ready
    a.close()
    b.close()                             # would make a readable (EOF)
    run_briefly(loop, 3)
    assert calls == []


def test_writer_of_socket_closed_without_remove_never_watches_a_new_socket(any_loop, pair):
    # The number of a socket closed without remove_writer() is reused by a
    # new socket that nobody registered: the old callback must not run for
    # it (the stock loop's registration is stale and silent).
    loop = any_loop
    a, b = pair
    fill(a)
    calls = []
    loop.add_writer(a, calls.append, "w")
    run_briefly(loop)                     # armed, not ready
    fd = a.fileno()
    a.close()
    c, d = socket.socketpair()            # writable, and likely under fd
    try:
        if c.fileno() != fd:
            os.dup2(c.fileno(), fd)
        drain(b)
        run_briefly(loop, 3)
        assert calls == []
    finally:
        if c.fileno() != fd:
            os.close(fd)
        c.close()
        d.close()


# -- closing after remove ------------------------------------------------------------------


def test_peer_sees_eof_once_removed_and_closed(any_loop, pair):
    # asyncio asks programs to remove a reader before closing its socket;
    # then the socket is gone at close(): the peer reads EOF at once.
    loop = any_loop
    a, b = pair
    loop.add_reader(a, noop)
    run_briefly(loop)
    assert loop.remove_reader(a) is True
    a.close()
    assert b.recv(10) == b""


async def test_peers_see_eof_after_many_removed_and_closed():
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(200)]
    try:
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
            loop.add_reader(a, noop)
            loop.add_writer(a, noop)
            loop.remove_writer(a)
        await asyncio.sleep(0)
        for a, b in pairs:
            assert loop.remove_reader(a) is True
            a.close()
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        assert [b.recv(10) for a, b in pairs] == [b""] * len(pairs)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# -- a descriptor number reused without remove_*() (docs/differences.md) ---------------


def _reuse_number(loop):
    """Add a reader, close its socket without remove_reader(), put another
    socket under the same number, add a reader for it, make it readable.
    Returns (the number, old calls, new calls, the sockets to close)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    old, new = [], []
    loop.add_reader(a, old.append, 1)
    run_briefly(loop)
    fd = a.fileno()
    a.close()                             # no remove_reader(): the misuse
    c, d = socket.socketpair()
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)           # the number now names c's socket
        c.close()
    else:
        c.detach()                        # the lowest number was reused
    loop.add_reader(fd, lambda: new.append(os.read(fd, 100)))
    d.send(b"to the new socket")
    run_briefly(loop, 3)
    return fd, old, new, (b, d)


def test_reused_fd_number_is_watched_anew_aioring_only(any_loop):
    if not is_aioring(any_loop):
        pytest.skip("documented difference: aioring only")
    loop = any_loop
    fd, old, new, socks = _reuse_number(loop)
    try:
        assert old == []
        assert new == [b"to the new socket"]
        assert loop.remove_reader(fd) is True
    finally:
        os.close(fd)
        for s in socks:
            s.close()


def test_reused_fd_number_keeps_stale_registration_stock_only(any_loop):
    if is_aioring(any_loop):
        pytest.skip("documented difference: the stock loop only")
    loop = any_loop
    fd, old, new, socks = _reuse_number(loop)
    try:
        assert old == []
        assert new == []                  # never called: stale registration
        assert loop.remove_reader(fd) is True
    finally:
        os.close(fd)
        for s in socks:
            s.close()


# -- aioring only: no descriptor left behind -------------------------------------------------


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


async def test_fd_count_back_after_1000_sockets_aioring_only():
    loop = asyncio.get_running_loop()
    if not is_aioring(loop):
        pytest.skip("aioring's own resource guarantee")
    await asyncio.sleep(0)
    before = _open_fds()
    socks = []
    for _ in range(500):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        socks += [a, b]
    for s in socks:
        loop.add_reader(s, noop)
        loop.add_writer(s, noop)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for s in socks:
        assert loop.remove_reader(s) is True
        assert loop.remove_writer(s) is True
        s.close()
    await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    assert _open_fds() == before
