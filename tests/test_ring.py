"""Unit tests of the ring layer (aioring/_ring), driven through the
test-facing `aioring._ring.ring.Ring`: plain synchronous tests, no event loop.

They check what the kernel actually answers: completions, their res and
flags, setup flags, the fixed-file table, provided-buffer rings, and the
errors a refused io_uring_setup turns into.
"""
import errno
import gc
import json
import os
import platform
import select
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import aioring
from aioring._ring import ring as R
from aioring._ring.ring import IoUringUnavailable, Ring

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- helpers -----------------------------------------------------------------

@pytest.fixture
def ring():
    r = Ring()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def pipe():
    rfd, wfd = os.pipe()
    fds = [rfd, wfd]
    try:
        yield fds
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def wait_all(r, n, timeout=5.0):
    """Submit and reap until n completions have arrived (or fail)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f'only {len(out)} of {n} completions: {out}'
        r.submit(wait_nr=n - len(out), timeout=left)
        out += r.reap()
    return out


def by_ud(cqes):
    d = {}
    for ud, res, flags in cqes:
        assert ud not in d, f'user_data {ud} completed twice: {cqes}'
        d[ud] = (res, flags)
    return d


def io_uring_fds():
    n = 0
    for name in os.listdir('/proc/self/fd'):
        try:
            if 'io_uring' in os.readlink(f'/proc/self/fd/{name}'):
                n += 1
        except OSError:
            pass
    return n


# ---- 1. NOP round trips ------------------------------------------------------

@pytest.mark.parametrize('n', [1, 3, 8])
def test_nop_round_trip(ring, n):
    uds = [1000 + 7 * i for i in range(n)]
    enter0, submitted0 = ring.enter_calls, ring.submitted
    space0 = ring.sq_space
    assert space0 == ring.sq_entries == 8
    assert ring.pending == 0
    for ud in uds:
        assert ring.nop(ud) is True
    assert ring.pending == n
    assert ring.sq_space == space0 - n
    assert ring.reap() == []                  # nothing reached the kernel yet
    assert ring.submit(wait_nr=n) == n
    assert ring.pending == 0
    assert ring.sq_space == space0
    cqes = ring.reap()
    assert sorted(cqes) == sorted((ud, 0, 0) for ud in uds)
    assert ring.enter_calls == enter0 + 1
    assert ring.submitted == submitted0 + n
    assert ring.reap() == []


def test_nop_user_data_is_64_bit(ring):
    uds = [0, 1, 2**32, 2**63, 2**64 - 2]
    for ud in uds:
        ring.nop(ud)
    assert sorted(wait_all(ring, len(uds))) == sorted((ud, 0, 0) for ud in uds)


def test_nop_round_trips_repeat(ring):
    # the SQ and CQ indices wrap many times over
    for rnd in range(50):
        for i in range(8):
            ring.nop(rnd * 100 + i)
        assert ring.submit(wait_nr=8) == 8
        assert sorted(ring.reap()) == [(rnd * 100 + i, 0, 0) for i in range(8)]
    assert ring.submitted == 400


def test_empty_submit_does_not_enter(ring):
    enter0 = ring.enter_calls
    assert ring.submit() == 0
    assert ring.enter_calls == enter0
    assert ring.reap() == []


def test_nop_with_sq_array():
    # no_sqarray=False exercises the SQ indirection array path
    r = Ring(no_sqarray=False)
    try:
        assert not r.setup_flags & R.SETUP_NO_SQARRAY
        for rnd in range(5):
            for i in range(20):            # more than the SQ: flushes on the way
                assert r.nop(rnd * 100 + i)
            cqes = wait_all(r, 20)
            assert sorted(cqes) == [(rnd * 100 + i, 0, 0) for i in range(20)]
    finally:
        r.close()


# ---- 2. a full SQ ------------------------------------------------------------

def test_full_sq_flushes_and_loses_nothing():
    r = Ring(entries=4, cq_entries=64)
    try:
        assert r.sq_entries == 4
        for i in range(4):
            assert r.nop(i)
        assert r.sq_space == 0
        assert r.pending == 4
        assert r.submitted == 0
        # The SQ is full: the next SQE flushes the four to the kernel first.
        assert r.nop(4)
        assert r.submitted == 4
        assert r.pending == 1
        assert r.sq_space == 3
        for i in range(5, 50):
            assert r.nop(i)
            assert 1 <= r.pending <= 4
            assert r.pending + r.sq_space == 4
        cqes = wait_all(r, 50)
        assert sorted(cqes) == [(i, 0, 0) for i in range(50)]
        assert r.submitted == 50
        assert r.pending == 0 and r.sq_space == 4
    finally:
        r.close()


def test_full_sq_with_default_cq():
    # CQ of 8 (twice the SQ): the flushes also overflow the CQ; still no loss
    r = Ring(entries=4)
    try:
        assert (r.sq_entries, r.cq_entries) == (4, 8)
        for i in range(37):
            assert r.nop(i)
        cqes = wait_all(r, 37)
        assert sorted(cqes) == [(i, 0, 0) for i in range(37)]
        assert not r.cq_overflowed
    finally:
        r.close()


# ---- 3. CQ overflow ----------------------------------------------------------

def test_cq_overflow_nodrop():
    r = Ring(4, 8)
    try:
        assert r.features & R.FEAT_NODROP
        assert r.cq_entries == 8
        n = 100
        for i in range(n):
            assert r.nop(i)
        r.submit()
        assert r.submitted == n
        assert r.cq_overflowed is True
        cqes = r.reap()
        assert len(cqes) == n
        assert sorted(cqes) == [(i, 0, 0) for i in range(n)]   # each exactly once
        assert r.cq_overflowed is False
        assert r.reap() == []
        # the ring is fine afterwards, overflow again included
        for rnd in range(3):
            for i in range(30):
                r.nop(1000 * (rnd + 1) + i)
            r.submit()
            assert r.cq_overflowed
            assert sorted(r.reap()) == [(1000 * (rnd + 1) + i, 0, 0) for i in range(30)]
            assert not r.cq_overflowed
    finally:
        r.close()


def test_cq_overflow_does_not_block_submission():
    r = Ring(4, 8)
    try:
        for i in range(20):
            r.nop(i)
        r.submit()
        assert r.cq_overflowed
        # submit more while the kernel still holds overflowed completions
        for i in range(20, 40):
            assert r.nop(i)
        r.submit()
        assert sorted(r.reap()) == [(i, 0, 0) for i in range(40)]
        assert not r.cq_overflowed
    finally:
        r.close()


def test_cq_overflow_flushed_by_wait():
    r = Ring(4, 8)
    try:
        for i in range(24):
            r.nop(i)
        r.submit()
        assert r.cq_overflowed
        got = r.reap()
        assert len(got) == 24
        # nothing was lost between overflow list and CQ, and a wait with
        # nothing in flight times out cleanly
        assert r.submit(wait_nr=1, timeout=0.01) == 0
        assert r.reap() == []
    finally:
        r.close()


# ---- 4. probe ----------------------------------------------------------------

def test_probe(ring):
    ops = ring.probe()
    assert isinstance(ops, set)
    required = {R.OP_NOP, R.OP_READ, R.OP_WRITE, R.OP_POLL_ADD, R.OP_ASYNC_CANCEL,
                R.OP_RECV, R.OP_SEND, R.OP_ACCEPT, R.OP_MSG_RING}
    assert required <= ops, required - ops
    assert all(isinstance(op, int) and 0 <= op < 256 for op in ops)
    assert 255 not in ops
    assert ring.probe() == ops


def test_probe_kernel():
    flags, features, ops = R.probe_kernel()
    assert flags & R.SETUP_DEFER_TASKRUN
    assert features & R.FEAT_EXT_ARG
    assert {R.OP_NOP, R.OP_RECV} <= ops


def test_opcode_constants_are_the_abi():
    assert (R.OP_NOP, R.OP_READ, R.OP_WRITE) == (0, 22, 23)
    assert (R.OP_POLL_ADD, R.OP_ASYNC_CANCEL, R.OP_ACCEPT) == (6, 14, 13)
    assert (R.OP_SEND, R.OP_RECV, R.OP_MSG_RING) == (26, 27, 40)
    assert R.CQE_F_BUFFER == 1 and R.CQE_F_MORE == 2 and R.CQE_BUFFER_SHIFT == 16


# ---- 5. setup flags ----------------------------------------------------------

def test_default_setup_flags(ring):
    f = ring.setup_flags
    assert f & R.SETUP_SINGLE_ISSUER
    assert f & R.SETUP_DEFER_TASKRUN
    assert f & R.SETUP_TASKRUN_FLAG
    assert f & R.SETUP_SUBMIT_ALL
    assert f & R.SETUP_NO_SQARRAY
    assert not f & R.SETUP_COOP_TASKRUN
    assert not f & R.SETUP_SQPOLL
    assert not f & R.SETUP_R_DISABLED
    assert not f & R.SETUP_CQSIZE          # no cq_entries asked for
    assert ring.enabled
    assert not ring.ring_fd_registered
    assert ring.fd >= 0
    assert ring.features & R.FEAT_EXT_ARG
    assert ring.features & R.FEAT_NODROP


def test_coop_taskrun_fallback():
    r = Ring(defer_taskrun=False)
    try:
        f = r.setup_flags
        assert f & R.SETUP_COOP_TASKRUN
        assert f & R.SETUP_TASKRUN_FLAG
        assert f & R.SETUP_SUBMIT_ALL
        assert not f & R.SETUP_DEFER_TASKRUN
        assert not f & R.SETUP_SINGLE_ISSUER
        for i in range(5):
            r.nop(i)
        assert sorted(wait_all(r, 5)) == [(i, 0, 0) for i in range(5)]
    finally:
        r.close()


def test_single_issuer_is_enforced(ring):
    # SINGLE_ISSUER: another thread may not submit (the kernel says EEXIST)
    errs = []

    def other():
        try:
            ring.nop(1)
            ring.submit(wait_nr=1)
        except OSError as e:
            errs.append(e.errno)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errs == [errno.EEXIST]


def test_coop_ring_can_be_used_from_another_thread():
    r = Ring(defer_taskrun=False)
    out = []
    try:
        def other():
            r.nop(5)
            out.extend(wait_all(r, 1))
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert out == [(5, 0, 0)]
    finally:
        r.close()


def test_cq_size():
    r = Ring(4, 8)
    try:
        assert r.setup_flags & R.SETUP_CQSIZE
        assert (r.sq_entries, r.cq_entries) == (4, 8)
    finally:
        r.close()
    r = Ring(5, 6)                          # both rounded up to powers of two
    try:
        assert (r.sq_entries, r.cq_entries) == (8, 8)
    finally:
        r.close()
    r = Ring(16)
    try:
        assert (r.sq_entries, r.cq_entries) == (16, 32)
    finally:
        r.close()


@pytest.mark.parametrize('sizes', [(0,), (65536,), (8, 4), (8, 1 << 20)])
def test_invalid_sizes_are_refused(sizes):
    # not silently turned into a ring without CQSIZE/DEFER_TASKRUN, and not
    # mistaken for "io_uring unavailable"
    with pytest.raises(ValueError):
        Ring(*sizes)


def test_start_disabled():
    r = Ring(start_disabled=True)
    try:
        assert r.enabled is False
        assert r.setup_flags & R.SETUP_R_DISABLED
        assert r.setup_flags & R.SETUP_DEFER_TASKRUN
        assert r.nop(11)
        with pytest.raises(OSError) as ei:
            r.submit(wait_nr=1)
        assert ei.value.errno == errno.EBADFD
        r.enable()
        assert r.enabled is True
        r.enable()                          # idempotent
        # the NOP queued while disabled was kept, not lost
        r.nop(12)
        assert sorted(wait_all(r, 2)) == [(11, 0, 0), (12, 0, 0)]
    finally:
        r.close()


def test_register_ring_fd(ring):
    ring.register_ring_fd()
    assert ring.ring_fd_registered is True
    ring.register_ring_fd()                 # idempotent
    assert ring.ring_fd_registered is True
    enter0, sub0 = ring.enter_calls, ring.submitted
    for i in range(6):
        ring.nop(i)
    assert ring.submit(wait_nr=6) == 6
    assert sorted(ring.reap()) == [(i, 0, 0) for i in range(6)]
    assert ring.enter_calls == enter0 + 1 and ring.submitted == sub0 + 6
    assert ring.submit(wait_nr=1, timeout=0.01) == 0     # EXT_ARG through it too
    # overflow flushing goes through the registered fd as well
    for i in range(100):
        ring.nop(100 + i)
    ring.submit()
    assert ring.cq_overflowed
    assert sorted(ring.reap()) == [(100 + i, 0, 0) for i in range(100)]
    ring.unregister_ring_fd()
    assert ring.ring_fd_registered is False
    ring.unregister_ring_fd()               # idempotent
    ring.nop(7)
    assert wait_all(ring, 1) == [(7, 0, 0)]


def test_register_ring_fd_released_on_close():
    # A thread has 16 registered-ring slots; closing a ring must give its slot
    # back (and let the kernel free the ring), or the 17th registration fails.
    before = io_uring_fds()
    for i in range(40):
        r = Ring()
        r.register_ring_fd()
        r.nop(i)
        assert wait_all(r, 1) == [(i, 0, 0)]
        r.close()
    del r
    gc.collect()
    assert io_uring_fds() == before


def test_register_ring_fd_on_disabled_ring():
    r = Ring(start_disabled=True)
    try:
        r.enable()
        r.register_ring_fd()
        assert r.ring_fd_registered
        r.nop(3)
        assert wait_all(r, 1) == [(3, 0, 0)]
    finally:
        r.close()


# ---- 6. timeout wait ---------------------------------------------------------

def test_timeout_wait(ring):
    t0 = time.monotonic()
    assert ring.submit(wait_nr=1, timeout=0.05) == 0
    dt = time.monotonic() - t0
    assert 0.04 <= dt < 1.0, dt
    assert ring.reap() == []                # no stray timeout CQE


def test_zero_and_negative_timeouts_do_not_block(ring):
    for timeout in (0, 0.0, -1, -0.5):
        t0 = time.monotonic()
        assert ring.submit(wait_nr=1, timeout=timeout) == 0
        assert time.monotonic() - t0 < 0.5, timeout


def test_wait_returns_early_on_completion(ring):
    ring.nop(9)
    t0 = time.monotonic()
    assert ring.submit(wait_nr=1, timeout=5.0) == 1
    assert time.monotonic() - t0 < 1.0
    assert ring.reap() == [(9, 0, 0)]


def test_wait_returns_when_data_arrives(ring, pipe):
    rfd, wfd = pipe
    ring.read(rfd, 16, 1)
    ring.submit()
    timer = threading.Timer(0.05, os.write, (wfd, b'late'))
    timer.start()
    try:
        t0 = time.monotonic()
        ring.submit(wait_nr=1, timeout=5.0)
        dt = time.monotonic() - t0
    finally:
        timer.join()
    assert 0.03 <= dt < 2.0, dt
    cqes = ring.reap()
    assert cqes == [(1, 4, 0)]
    assert ring.read_result(1, 4) == b'late'


# ---- 7. reads, polls, cancels ------------------------------------------------

def test_eventfd_read(ring):
    efd = os.eventfd(0)
    try:
        assert ring.read(efd, 8, 77)
        assert ring.submit() == 1
        assert ring.reap() == []            # the counter is 0: the read waits
        os.eventfd_write(efd, 5)
        ring.submit(wait_nr=1, timeout=5)
        cqes = ring.reap()
        assert cqes == [(77, 8, 0)]
        assert ring.read_result(77, 8) == struct.pack('=Q', 5)
    finally:
        os.close(efd)


def test_pipe_read_data_ready(ring, pipe):
    rfd, wfd = pipe
    os.write(wfd, b'abc')
    ring.read(rfd, 16, 1)
    assert wait_all(ring, 1) == [(1, 3, 0)]
    assert ring.read_result(1, 3) == b'abc'


def test_pipe_read_partial_and_eof(ring, pipe):
    rfd, wfd = pipe
    os.write(wfd, b'0123456789')
    ring.read(rfd, 4, 1)
    assert wait_all(ring, 1) == [(1, 4, 0)]
    assert ring.read_result(1, 4) == b'0123'
    ring.read(rfd, 100, 2)
    assert wait_all(ring, 1) == [(2, 6, 0)]
    assert ring.read_result(2, 6) == b'456789'
    os.close(wfd)
    ring.read(rfd, 100, 3)
    assert wait_all(ring, 1) == [(3, 0, 0)]      # EOF
    assert ring.read_result(3, 0) == b''


def test_read_bad_fd(ring):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    ring.read(r, 8, 1)
    assert wait_all(ring, 1) == [(1, -errno.EBADF, 0)]
    ring.read_result(1, 0)


def test_read_same_user_data_refused_while_buffer_held(ring, pipe):
    rfd, wfd = pipe
    ring.read(rfd, 8, 1)
    ring.submit()
    with pytest.raises(ValueError):
        ring.read(rfd, 8, 1)                # would free the kernel's buffer
    os.write(wfd, b'x')
    assert wait_all(ring, 1) == [(1, 1, 0)]
    assert ring.read_result(1, 1) == b'x'
    ring.read(rfd, 8, 1)                    # fine once the result was taken
    ring.cancel(1, 2)
    assert by_ud(wait_all(ring, 2)) == {1: (-errno.ECANCELED, 0), 2: (0, 0)}


def test_poll_in(ring, pipe):
    rfd, wfd = pipe
    assert ring.poll(rfd, select.POLLIN, 5)
    ring.submit()
    assert ring.reap() == []
    ring.submit(wait_nr=1, timeout=0.02)    # still nothing to report
    assert ring.reap() == []
    os.write(wfd, b'z')
    cqes = wait_all(ring, 1)
    assert len(cqes) == 1
    ud, res, flags = cqes[0]
    assert ud == 5 and res & select.POLLIN
    assert not flags & R.CQE_F_MORE         # one-shot
    assert os.read(rfd, 1) == b'z'


def test_poll_out_ready_at_once(ring, pipe):
    rfd, wfd = pipe
    ring.poll(wfd, select.POLLOUT, 6)
    (ud, res, flags), = wait_all(ring, 1)
    assert ud == 6 and res & select.POLLOUT


def test_poll_multishot(ring, pipe):
    rfd, wfd = pipe
    ring.poll(rfd, select.POLLIN, 5, multishot=True)
    ring.submit()
    assert ring.reap() == []
    for i in range(3):
        os.write(wfd, b'x')
        (ud, res, flags), = wait_all(ring, 1)
        assert ud == 5 and res & select.POLLIN
        assert flags & R.CQE_F_MORE         # still armed
        os.read(rfd, 1)
    ring.cancel(5, 6)
    d = by_ud(wait_all(ring, 2))
    assert d[6] == (0, 0)
    assert d[5][0] == -errno.ECANCELED
    assert not d[5][1] & R.CQE_F_MORE       # the final CQE


def test_cancel_pending_read(ring, pipe):
    rfd, wfd = pipe
    ring.read(rfd, 16, 100)
    ring.submit()
    assert ring.reap() == []                # the pipe is empty: in flight
    assert ring.cancel(100, 101)
    d = by_ud(wait_all(ring, 2))
    assert d == {100: (-errno.ECANCELED, 0), 101: (0, 0)}
    ring.read_result(100, 0)
    # the data written afterwards was not eaten by the cancelled read
    os.write(wfd, b'kept')
    assert os.read(rfd, 10) == b'kept'


def test_cancel_poll(ring, pipe):
    rfd, wfd = pipe
    ring.poll(rfd, select.POLLIN, 1)
    ring.submit()
    ring.cancel(1, 2)
    assert by_ud(wait_all(ring, 2)) == {1: (-errno.ECANCELED, 0), 2: (0, 0)}


def test_cancel_unknown_and_completed(ring):
    ring.cancel(424242, 1)
    assert wait_all(ring, 1) == [(1, -errno.ENOENT, 0)]
    ring.nop(7)
    assert wait_all(ring, 1) == [(7, 0, 0)]
    ring.cancel(7, 8)                       # already completed
    assert wait_all(ring, 1) == [(8, -errno.ENOENT, 0)]


# ---- 8. sparse registered file table ----------------------------------------

def test_sparse_file_table(ring, pipe):
    rfd, wfd = pipe
    ring.register_files_sparse(16)
    ring.nop_fixed(3, 1)
    assert wait_all(ring, 1) == [(1, -errno.EBADF, 0)]     # empty slot
    assert ring.update_files(3, [wfd]) == 1
    ring.nop_fixed(3, 2)
    assert wait_all(ring, 1) == [(2, 0, 0)]                 # 0-byte write
    # other slots are still empty
    ring.nop_fixed(2, 3)
    ring.nop_fixed(4, 4)
    assert by_ud(wait_all(ring, 2)) == {3: (-errno.EBADF, 0), 4: (-errno.EBADF, 0)}
    assert ring.update_files(3, [-1]) == 1
    ring.nop_fixed(3, 5)
    assert wait_all(ring, 1) == [(5, -errno.EBADF, 0)]     # cleared
    ring.unregister_files()


def test_file_table_several_slots_and_bounds(ring, pipe):
    rfd, wfd = pipe
    ring.register_files_sparse(4)
    assert ring.update_files(0, [wfd, -1, wfd, wfd]) == 4
    for slot in range(4):
        ring.nop_fixed(slot, slot)
    d = by_ud(wait_all(ring, 4))
    assert d == {0: (0, 0), 1: (-errno.EBADF, 0), 2: (0, 0), 3: (0, 0)}
    ring.nop_fixed(4, 9)                    # past the end of the table
    assert wait_all(ring, 1) == [(9, -errno.EBADF, 0)]
    with pytest.raises(OSError) as ei:
        ring.update_files(4, [wfd])
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        ring.register_files_sparse(4)       # already registered
    assert ei.value.errno == errno.EBUSY
    ring.unregister_files()
    ring.nop_fixed(0, 10)
    assert wait_all(ring, 1) == [(10, -errno.EBADF, 0)]
    with pytest.raises(OSError) as ei:
        ring.unregister_files()             # nothing registered
    assert ei.value.errno == errno.ENXIO
    ring.register_files_sparse(8)           # again, after unregistering
    assert ring.update_files(7, [wfd]) == 1
    ring.nop_fixed(7, 11)
    assert wait_all(ring, 1) == [(11, 0, 0)]
    ring.unregister_files()


def test_file_table_pins_the_file(ring, pipe):
    # The slot holds its own reference: closing the fd does not close the
    # file; clearing the slot does (the reason for the strict release order).
    rfd, wfd = pipe
    ring.register_files_sparse(4)
    ring.update_files(0, [wfd])
    os.close(wfd)
    pipe.remove(wfd)
    os.set_blocking(rfd, False)
    with pytest.raises(BlockingIOError):
        os.read(rfd, 1)                     # no EOF: the write end lives on
    ring.nop_fixed(0, 1)
    assert wait_all(ring, 1) == [(1, 0, 0)]
    ring.update_files(0, [-1])
    deadline = time.monotonic() + 2
    while True:
        try:
            assert os.read(rfd, 1) == b''   # EOF now
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, 'slot still pins the file'
            time.sleep(0.01)


# ---- 9. provided-buffer rings ------------------------------------------------

@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def recv_one(ring, fd, bgid, ud):
    ring.recv_select(fd, bgid, ud)
    (got_ud, res, flags), = wait_all(ring, 1)
    assert got_ud == ud
    return res, flags


def test_buffer_ring_recv(ring, sockpair):
    a, b = sockpair
    ring.register_buffer_ring(7, 8, 64)
    a.send(b'hello')
    res, flags = recv_one(ring, b.fileno(), 7, 1)
    assert res == 5
    assert flags & R.CQE_F_BUFFER
    bid = flags >> R.CQE_BUFFER_SHIFT
    assert 0 <= bid < 8
    assert ring.buffer(7, bid, res) == b'hello'
    ring.recycle_buffer(7, bid)
    ring.unregister_buffer_ring(7)


def test_buffer_ring_exhaustion_and_recycle(ring, sockpair):
    a, b = sockpair
    ring.register_buffer_ring(3, 8, 64)
    seen = {}
    for i in range(8):
        msg = b'msg-%d' % i
        a.send(msg)
        res, flags = recv_one(ring, b.fileno(), 3, 10 + i)
        assert res == len(msg) and flags & R.CQE_F_BUFFER
        bid = flags >> R.CQE_BUFFER_SHIFT
        assert bid not in seen
        seen[bid] = msg
    assert sorted(seen) == list(range(8))   # every buffer used once
    for bid, msg in seen.items():
        assert ring.buffer(3, bid, len(msg)) == msg     # none overwritten
    # all 8 buffers are out: the next recv has nowhere to put its data
    a.send(b'late')
    res, flags = recv_one(ring, b.fileno(), 3, 20)
    assert res == -errno.ENOBUFS
    assert not flags & R.CQE_F_BUFFER
    # hand one back: the data that waited in the socket arrives in it
    ring.recycle_buffer(3, 5)
    res, flags = recv_one(ring, b.fileno(), 3, 21)
    assert res == 4 and flags & R.CQE_F_BUFFER
    assert flags >> R.CQE_BUFFER_SHIFT == 5
    assert ring.buffer(3, 5, 4) == b'late'
    ring.unregister_buffer_ring(3)


def test_buffer_ring_wraps(ring, sockpair):
    # recycle every buffer at once, many times over: the 16-bit tail wraps
    a, b = sockpair
    ring.register_buffer_ring(1, 4, 32)
    for i in range(300):
        msg = b'%d' % i
        a.send(msg)
        res, flags = recv_one(ring, b.fileno(), 1, i)
        bid = flags >> R.CQE_BUFFER_SHIFT
        assert ring.buffer(1, bid, res) == msg
        ring.recycle_buffer(1, bid)
    ring.unregister_buffer_ring(1)


def test_buffer_ring_recv_truncates_to_buffer_size(ring, sockpair):
    a, b = sockpair
    ring.register_buffer_ring(2, 4, 16)
    a.send(bytes(range(40)))
    res, flags = recv_one(ring, b.fileno(), 2, 1)
    assert res == 16
    assert ring.buffer(2, flags >> R.CQE_BUFFER_SHIFT, 16) == bytes(range(16))
    ring.unregister_buffer_ring(2)


def test_buffer_ring_two_groups(ring, sockpair):
    a, b = sockpair
    ring.register_buffer_ring(10, 2, 32)
    ring.register_buffer_ring(11, 2, 32)
    a.send(b'one')
    r1, f1 = recv_one(ring, b.fileno(), 10, 1)
    a.send(b'two')
    r2, f2 = recv_one(ring, b.fileno(), 11, 2)
    assert ring.buffer(10, f1 >> R.CQE_BUFFER_SHIFT, r1) == b'one'
    assert ring.buffer(11, f2 >> R.CQE_BUFFER_SHIFT, r2) == b'two'
    ring.unregister_buffer_ring(10)
    ring.unregister_buffer_ring(11)


def test_buffer_ring_errors(ring, sockpair):
    a, b = sockpair
    with pytest.raises(OSError) as ei:
        ring.register_buffer_ring(1, 6, 64)           # not a power of two
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        ring.register_buffer_ring(1, 8, 0)
    ring.register_buffer_ring(1, 8, 64)
    with pytest.raises(ValueError):
        ring.register_buffer_ring(1, 8, 64)           # twice
    with pytest.raises(ValueError):
        ring.buffer(1, 8, 1)                          # bid out of range
    with pytest.raises(ValueError):
        ring.buffer(1, 0, 65)                         # more than a buffer
    with pytest.raises(ValueError):
        ring.recycle_buffer(1, 8)                     # would hand out foreign memory
    with pytest.raises(ValueError):
        ring.buffer(2, 0, 1)                          # no such group
    ring.unregister_buffer_ring(1)
    with pytest.raises(ValueError):
        ring.unregister_buffer_ring(1)
    # an unknown (or unregistered) group: ENOBUFS from the kernel
    a.send(b'x')
    res, flags = recv_one(ring, b.fileno(), 1, 5)
    assert res == -errno.ENOBUFS


def test_buffer_ring_reregister(ring, sockpair):
    a, b = sockpair
    for rnd in range(3):
        ring.register_buffer_ring(4, 2, 16)
        a.send(b'r%d' % rnd)
        res, flags = recv_one(ring, b.fileno(), 4, rnd)
        assert ring.buffer(4, flags >> R.CQE_BUFFER_SHIFT, res) == b'r%d' % rnd
        ring.unregister_buffer_ring(4)


# ---- 10. refused setup -------------------------------------------------------

def test_io_uring_unavailable_is_oserror():
    assert issubclass(IoUringUnavailable, OSError)
    assert aioring.IoUringUnavailable is IoUringUnavailable


SECCOMP_CHILD = textwrap.dedent(r'''
    import ctypes, gc, json, platform, sys
    err = int(sys.argv[1])
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[platform.machine()]
    NR_IO_URING_SETUP = 425          # the same on x86_64 and aarch64

    class sock_filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class sock_fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort),
                    ("filter", ctypes.POINTER(sock_filter))]

    LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
    RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
    prog = [
        (LD_W_ABS, 0, 0, 4),                     # seccomp_data.arch
        (JEQ_K, 0, 3, arch),                     # another arch: allow
        (LD_W_ABS, 0, 0, 0),                     # seccomp_data.nr
        (JEQ_K, 0, 1, NR_IO_URING_SETUP),
        (RET_K, 0, 0, RET_ERRNO | err),
        (RET_K, 0, 0, RET_ALLOW),
    ]
    insns = (sock_filter * len(prog))(*[sock_filter(*p) for p in prog])
    fprog = sock_fprog(len(prog), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                           ctypes.c_ulong, ctypes.c_ulong]
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        sys.exit(77)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                  ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p), 0, 0) != 0:
        sys.exit(77)

    import aioring
    from aioring._ring.ring import Ring
    out = {}
    for name, make in (("loop", aioring.new_event_loop), ("ring", Ring)):
        try:
            make()
        except aioring.IoUringUnavailable as e:
            out[name] = {"type": type(e).__name__, "oserror": isinstance(e, OSError),
                         "errno": e.errno, "message": str(e)}
        else:
            out[name] = None
        gc.collect()
    print(json.dumps(out))
''')


def run_seccomp_child(err):
    if platform.machine() not in ('x86_64', 'aarch64'):
        pytest.skip(f'no io_uring_setup number for {platform.machine()}')
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, '-c', SECCOMP_CHILD, str(err)],
                          capture_output=True, text=True, env=env, timeout=60,
                          cwd=REPO)
    if proc.returncode == 77:
        pytest.skip('cannot install a seccomp filter here')
    return proc


def sysctl_io_uring_disabled():
    try:
        with open('/proc/sys/kernel/io_uring_disabled') as f:
            return f.read().strip()
    except OSError:
        return None


@pytest.mark.parametrize('err, words', [
    (errno.EPERM, ['seccomp', 'EPERM']),
    (errno.ENOSYS, ['ENOSYS', 'kernel']),
])
def test_refused_setup_names_the_cause(err, words):
    if err == errno.EPERM and sysctl_io_uring_disabled() not in (None, '0'):
        pytest.skip('kernel.io_uring_disabled is set: EPERM is explained by it')
    proc = run_seccomp_child(err)
    assert proc.returncode == 0, proc.stderr          # no crash, no signal
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ('loop', 'ring'):
        e = out[name]
        assert e is not None, f'{name}: io_uring_setup was not refused?'
        assert e['type'] == 'IoUringUnavailable' and e['oserror']
        assert e['errno'] == err
        for w in words:
            assert w in e['message'], e['message']
        assert 'aioring cannot use io_uring' in e['message']
        assert 'Fix:' in e['message']


@pytest.mark.parametrize('err', [errno.EPERM, errno.ENOSYS])
def test_refused_setup_leaves_stderr_clean(err):
    # a loop whose construction failed must not complain later (__del__)
    proc = run_seccomp_child(err)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == '', proc.stderr


# ---- 11. closing -------------------------------------------------------------

def test_close_twice():
    r = Ring()
    assert r.fd >= 0
    r.close()
    assert r.fd == -1
    r.close()
    assert r.fd == -1


CLOSED_CALLS = {
    'nop': lambda r: r.nop(1),
    'read': lambda r: r.read(0, 8, 1),
    'poll': lambda r: r.poll(0, select.POLLIN, 1),
    'cancel': lambda r: r.cancel(1, 2),
    'recv_select': lambda r: r.recv_select(0, 1, 1),
    'nop_fixed': lambda r: r.nop_fixed(0, 1),
    'submit': lambda r: r.submit(),
    'submit_wait': lambda r: r.submit(1, timeout=0.01),
    'reap': lambda r: r.reap(),
    'probe': lambda r: r.probe(),
    'enable': lambda r: r.enable(),
    'register_ring_fd': lambda r: r.register_ring_fd(),
    'unregister_ring_fd': lambda r: r.unregister_ring_fd(),
    'register_files_sparse': lambda r: r.register_files_sparse(4),
    'update_files': lambda r: r.update_files(0, [0]),
    'unregister_files': lambda r: r.unregister_files(),
    'register_buffer_ring': lambda r: r.register_buffer_ring(1, 8, 64),
    'buffer': lambda r: r.buffer(1, 0, 1),
    'recycle_buffer': lambda r: r.recycle_buffer(1, 0),
    'unregister_buffer_ring': lambda r: r.unregister_buffer_ring(1),
    'sq_space': lambda r: r.sq_space,
    'cq_overflowed': lambda r: r.cq_overflowed,
    'pending': lambda r: r.pending,
}


@pytest.mark.parametrize('name', list(CLOSED_CALLS))
def test_closed_ring_raises_value_error(name):
    r = Ring()
    r.register_buffer_ring(1, 8, 64)        # the group existed before close
    r.close()
    with pytest.raises(ValueError):
        CLOSED_CALLS[name](r)


def test_close_releases_everything():
    before = io_uring_fds()
    rfd, wfd = os.pipe()
    a, b = socket.socketpair()
    try:
        for i in range(20):
            r = Ring()
            r.register_ring_fd()
            r.register_files_sparse(8)
            r.update_files(0, [wfd])
            r.register_buffer_ring(1, 8, 64)
            r.register_buffer_ring(2, 4, 64)
            r.read(rfd, 8, 1)               # left in flight
            r.recv_select(b.fileno(), 1, 2)  # left in flight
            r.submit()
            assert io_uring_fds() == before + 1
            if i % 2:
                r.close()
            del r                           # __dealloc__ closes the rest
            gc.collect()
            assert io_uring_fds() == before
        # the in-flight reads were cancelled with their rings (the kernel does
        # that asynchronously), not left to eat data
        time.sleep(0.1)
        os.write(wfd, b'data')
        time.sleep(0.05)
        assert os.read(rfd, 10) == b'data'
    finally:
        for fd in (rfd, wfd):
            os.close(fd)
        a.close()
        b.close()


def test_counters_survive_close():
    r = Ring()
    r.nop(1)
    wait_all(r, 1)
    enter, sub = r.enter_calls, r.submitted
    r.close()
    assert (r.enter_calls, r.submitted) == (enter, sub)
    assert sub == 1
