"""Subprocesses (asyncio.create_subprocess_exec/_shell, loop.subprocess_exec/
_shell and the SubprocessTransport): parity with the stock loop for what the
program and the child observe.

Every test runs on the stock loop and on aioring (conftest hook); the
assertions are the stock loop's behaviour.  Where the stock loop's
behaviour depends on the Python version (messages, signals sent to a child
that has exited, when wait() returns) the scenario is run again on a fresh
stock loop in a worker thread and the two records are compared
(`same_as_stock`).  Children are real processes (/bin/sh, coreutils, this
Python); zombies are looked for in /proc.
"""
import asyncio
import hashlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

import aioring
from _loop_helpers import is_aioring
from _stream_helpers import (
    count_fds, exc_record, nofile_at_least, on_stock_thread, same_as_stock, until, wait)

MiB = 1 << 20
PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
SH = "/bin/sh"
PY = sys.executable


def zombie_children():
    """pids of this process's children that are zombies."""
    me = os.getpid()
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            out.add(int(name))
    return out


def is_child_alive_or_zombie(pid):
    """True if `pid` is still one of our children (running or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]) == os.getpid()


class SRec(asyncio.SubprocessProtocol):
    """Records the callbacks it gets, in order; consecutive data on one fd
    collapses into one ("data", fd) entry."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def pipe_data_received(self, fd, data):
        if not self.events or self.events[-1] != ("data", fd):
            self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, type(exc).__name__ if exc else None))

    def process_exited(self):
        self.events.append("exited")
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")


def before(events, a, b):
    return events.index(a) < events.index(b)


async def exec_(*args, **kw):
    return await asyncio.wait_for(asyncio.create_subprocess_exec(*args, **kw), 10)


async def shell(cmd, **kw):
    return await asyncio.wait_for(asyncio.create_subprocess_shell(cmd, **kw), 10)


async def reap(proc):
    """Kill a child a failed test left running, and wait for it."""
    if proc is not None and proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except Exception:
            pass


# -- create_subprocess_exec / _shell, communicate, wait ------------------------------


async def test_exec_communicate_all_pipes():
    proc = await exec_(SH, "-c", "tr a-z A-Z; printf err >&2; exit 3",
                       stdin=PIPE, stdout=PIPE, stderr=PIPE)
    try:
        assert isinstance(proc.pid, int) and proc.pid > 0
        assert proc.returncode is None
        out, err = await wait(proc.communicate(b"hello"))
        assert (out, err) == (b"HELLO", b"err")
        assert proc.returncode == 3
        assert await wait(proc.wait()) == 3         # again: the same code
    finally:
        await reap(proc)


async def test_shell_str_and_bytes():
    proc = await shell("echo $((6*7)); echo to-stderr >&2; exit 5",
                       stdout=PIPE, stderr=PIPE)
    out, err = await wait(proc.communicate())
    assert (out, err, proc.returncode) == (b"42\n", b"to-stderr\n", 5)
    proc = await shell(b"printf '%s' bytes-command", stdout=PIPE)
    out, err = await wait(proc.communicate())
    assert (out, err, proc.returncode) == (b"bytes-command", None, 0)


async def test_stream_reader_api_on_stdout():
    proc = await exec_(SH, "-c", "printf 'one\\ntwo\\nthree'", stdout=PIPE)
    try:
        assert await wait(proc.stdout.readline()) == b"one\n"
        assert await wait(proc.stdout.readexactly(4)) == b"two\n"
        assert await wait(proc.stdout.read()) == b"three"
        assert proc.stdout.at_eof()
        assert await wait(proc.wait()) == 0
    finally:
        await reap(proc)


async def test_stdin_stream_writer():
    proc = await exec_(SH, "-c", "wc -c", stdin=PIPE, stdout=PIPE)
    try:
        proc.stdin.write(b"x" * 1000)
        proc.stdin.writelines([b"y" * 500, b"z" * 500])
        await wait(proc.stdin.drain())
        assert proc.stdin.can_write_eof()
        proc.stdin.close()
        await wait(proc.stdin.wait_closed())
        out = await wait(proc.stdout.read())
        assert out.strip() == b"2000"
        assert await wait(proc.wait()) == 0
    finally:
        await reap(proc)


async def test_devnull():
    proc = await exec_(SH, "-c", "cat; echo out; echo err >&2",
                       stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    assert (proc.stdin, proc.stdout, proc.stderr) == (None, None, None)
    assert await wait(proc.communicate()) == (None, None)
    assert proc.returncode == 0
    # stdin from /dev/null: the child reads EOF at once
    proc = await exec_(SH, "-c", "cat; echo done", stdin=DEVNULL, stdout=PIPE)
    assert await wait(proc.communicate()) == (b"done\n", None)


async def test_stderr_to_stdout():
    proc = await exec_(SH, "-c", "echo out; echo err >&2; echo out2",
                       stdout=PIPE, stderr=STDOUT)
    assert proc.stderr is None
    out, err = await wait(proc.communicate())
    assert (out, err) == (b"out\nerr\nout2\n", None)


async def test_file_objects_and_fds(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"from a file\n")
    dst = tmp_path / "out"
    errf = tmp_path / "err"
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        errfd = os.open(errf, os.O_WRONLY | os.O_CREAT)
        try:
            proc = await exec_(SH, "-c", "cat; echo oops >&2",
                               stdin=fin, stdout=fout, stderr=errfd)
            assert await wait(proc.communicate()) == (None, None)
        finally:
            os.close(errfd)
    assert proc.returncode == 0
    assert dst.read_bytes() == b"from a file\n"
    assert errf.read_bytes() == b"oops\n"
    # a raw pipe descriptor as stdin, written by us
    r, w = os.pipe()
    try:
        proc = await exec_(SH, "-c", "cat", stdin=r, stdout=PIPE)
    finally:
        os.close(r)
    os.write(w, b"through a raw fd")
    os.close(w)
    assert await wait(proc.communicate()) == (b"through a raw fd", None)


async def test_env_cwd_pass_fds_new_session(tmp_path):
    r, w = os.pipe()
    try:
        code = ("import os, sys; "
                "print(os.environ.get('AIORING_T'), os.getcwd(), "
                "os.getsid(0) == os.getpid()); "
                f"os.write({w}, b'via pass_fds')")
        proc = await exec_(PY, "-c", code, stdout=PIPE,
                           env={"AIORING_T": "yes", "PATH": os.environ.get("PATH", "")},
                           cwd=str(tmp_path), pass_fds=(w,), start_new_session=True)
        out, _ = await wait(proc.communicate())
    finally:
        os.close(w)
    try:
        assert os.read(r, 100) == b"via pass_fds"
    finally:
        os.close(r)
    assert out.decode().split() == ["yes", str(tmp_path), "True"]
    # a pathlib.Path as the program
    proc = await exec_(pathlib.Path(SH), "-c", "exit 4")
    assert await wait(proc.wait()) == 4


@pytest.mark.parametrize("code", [0, 1, 42, 255])
async def test_exit_codes(code):
    proc = await exec_(SH, "-c", f"exit {code}")
    assert await wait(proc.wait()) == code
    assert proc.returncode == code


@pytest.mark.parametrize("how", ["kill", "terminate", "send_signal_usr1",
                                 "send_signal_int", "self_kill"])
async def test_killed_by_a_signal_gives_negative_code(how):
    expected = {"kill": -signal.SIGKILL, "terminate": -signal.SIGTERM,
                "send_signal_usr1": -signal.SIGUSR1, "send_signal_int": -signal.SIGINT,
                "self_kill": -signal.SIGTERM}[how]
    if how == "self_kill":
        proc = await exec_(SH, "-c", "kill -TERM $$; sleep 10")
    else:
        # exec: the signal goes to `sleep` itself, not to a shell
        proc = await exec_(SH, "-c", "echo ready; exec sleep 30", stdout=PIPE)
        assert await wait(proc.stdout.readline()) == b"ready\n"
        if how == "kill":
            proc.kill()
        elif how == "terminate":
            proc.terminate()
        elif how == "send_signal_usr1":
            proc.send_signal(signal.SIGUSR1)
        else:
            proc.send_signal(signal.SIGINT)
    try:
        assert await wait(proc.wait()) == expected
        assert proc.returncode == expected
    finally:
        await reap(proc)


async def _signals_after_exit():
    # Signalling a child that has exited and been waited for.
    rec = {}
    proc = await exec_(SH, "-c", "exit 0")
    await wait(proc.wait())
    for name, call in (("send_signal", lambda: proc.send_signal(signal.SIGTERM)),
                       ("terminate", proc.terminate), ("kill", proc.kill)):
        try:
            call()
            rec[name] = "ok"
        except Exception as exc:
            rec[name] = exc_record(exc)
    rec["returncode"] = proc.returncode
    return rec


async def test_signals_after_exit_same_as_stock():
    rec = await same_as_stock(_signals_after_exit)
    assert rec["returncode"] == 0


async def test_wait_concurrently_from_several_tasks():
    proc = await exec_(SH, "-c", "sleep 0.1; exit 9")
    results = await wait(asyncio.gather(proc.wait(), proc.wait(), proc.wait()))
    assert results == [9, 9, 9]


async def _wait_with_grandchild_holding_stdout():
    # The shell exits (once told to) but leaves a background child that
    # holds its stdout for 0.5 s more.  Is the exit seen (returncode) while
    # the pipe is open; does a wait() that started before the exit return
    # before the pipe closes; does one that starts after the exit?
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    proc = await exec_(SH, "-c", "(sleep 0.5; echo late) & read go; echo early",
                       stdin=PIPE, stdout=PIPE)
    early_waiter = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0.05)
    rec = {"early_waiter_done_before_exit": early_waiter.done()}
    proc.stdin.write(b"go\n")
    first = await wait(proc.stdout.readline())
    await until(lambda: proc.returncode is not None)
    late_waiter = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0.2)
    rec.update({"first": first,
                "returncode_while_pipe_open": proc.returncode,
                "early_waiter_done_while_pipe_open": early_waiter.done(),
                "late_waiter_done_while_pipe_open": late_waiter.done()})
    rec["rest"] = await wait(proc.stdout.read())
    rec["waits"] = await wait(asyncio.gather(early_waiter, late_waiter))
    rec["slow"] = loop.time() - t0 >= 0.45
    return rec


async def test_wait_with_grandchild_holding_stdout_same_as_stock():
    rec = await same_as_stock(_wait_with_grandchild_holding_stdout)
    assert rec["first"] == b"early\n" and rec["rest"] == b"late\n"
    assert rec["waits"] == [0, 0]
    assert rec["returncode_while_pipe_open"] == 0


async def test_communicate_with_child_that_does_not_read_stdin():
    # The child exits without reading: the broken pipe is not an error for
    # communicate().
    proc = await exec_(SH, "-c", "exit 0", stdin=PIPE, stdout=PIPE)
    out, err = await wait(proc.communicate(os.urandom(4 * MiB)))
    assert (out, err, proc.returncode) == (b"", None, 0)


async def _stdin_write_after_child_exited():
    proc = await exec_(SH, "-c", "exit 0", stdin=PIPE)
    await wait(proc.wait())
    await until(lambda: proc.stdin.transport.is_closing())     # the child closed it
    rec = {}
    try:
        proc.stdin.write(b"too late")
        rec["write"] = "ok"
    except Exception as exc:
        rec["write"] = exc_record(exc)
    try:
        await wait(proc.stdin.drain())
        rec["drain"] = "ok"
    except Exception as exc:
        rec["drain"] = exc_record(exc)
    rec["is_closing"] = proc.stdin.is_closing()
    proc.stdin.close()
    return rec


async def test_stdin_write_after_child_exited_same_as_stock():
    await same_as_stock(_stdin_write_after_child_exited)


async def test_no_sigchld_handler_is_installed():
    before = signal.getsignal(signal.SIGCHLD)
    proc = await exec_(SH, "-c", "exit 0")
    await wait(proc.wait())
    assert signal.getsignal(signal.SIGCHLD) == before == signal.SIG_DFL


async def test_subprocess_from_a_loop_in_another_thread():
    new_loop = aioring.new_event_loop if is_aioring() else asyncio.SelectorEventLoop

    def run_in_thread():
        loop = new_loop()
        try:
            async def main():
                proc = await asyncio.create_subprocess_exec(
                    SH, "-c", "echo from a thread; exit 6", stdout=PIPE)
                out, _ = await proc.communicate()
                return out, proc.returncode
            return loop.run_until_complete(asyncio.wait_for(main(), 10))
        finally:
            loop.close()

    assert await wait(asyncio.to_thread(run_in_thread), 20) == (b"from a thread\n", 6)


# -- loop.subprocess_exec / subprocess_shell and the SubprocessTransport ---------------------


async def test_subprocess_transport_api_and_callback_order():
    loop = asyncio.get_running_loop()
    t, p = await wait(loop.subprocess_exec(
        SRec, SH, "-c", "cat >/dev/null; printf out; printf err >&2; exit 7"))
    try:
        assert p.events == ["made"]             # before subprocess_exec returned
        assert p.transport is t
        pid = t.get_pid()
        assert isinstance(pid, int) and pid > 0
        assert t.get_extra_info("subprocess").pid == pid
        assert t.get_returncode() is None       # the child waits for stdin's EOF
        assert t.get_protocol() is p
        assert t.is_closing() is False
        stdin, stdout, stderr = (t.get_pipe_transport(i) for i in (0, 1, 2))
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(stdout, asyncio.ReadTransport)
        assert isinstance(stderr, asyncio.ReadTransport)
        assert t.get_pipe_transport(3) is None
        stdin.write(b"swallowed by cat")
        stdin.close()
        assert await wait(p.exited) == 7
        await wait(p.lost)
        assert t.get_returncode() == 7
        assert bytes(p.data[1]) == b"out" and bytes(p.data[2]) == b"err"
        ev = p.events
        assert ev[0] == "made" and ev[-1] == ("lost", None)
        for fd in (0, 1, 2):
            assert ev.count(("pipe_lost", fd, None)) == 1
        assert ev.count("exited") == 1
        assert before(ev, ("data", 1), ("pipe_lost", 1, None))
        assert before(ev, ("data", 2), ("pipe_lost", 2, None))
        assert before(ev, ("pipe_lost", 0, None), "exited")     # stdin closed first
        assert len(ev) == 8
        assert t.get_pid() == pid               # still known after the end
        t.close()
        assert t.is_closing() is True
        t.close()                               # twice: a no-op
    finally:
        t.close()


async def test_subprocess_shell_protocol_without_pipes():
    loop = asyncio.get_running_loop()
    t, p = await wait(loop.subprocess_shell(
        SRec, "exit 2", stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL))
    try:
        assert await wait(p.exited) == 2
        await wait(p.lost)
        assert p.events == ["made", "exited", ("lost", None)]
        assert all(t.get_pipe_transport(i) is None for i in (0, 1, 2))
    finally:
        t.close()


async def test_transport_close_kills_the_running_child():
    loop = asyncio.get_running_loop()
    t, p = await wait(loop.subprocess_exec(SRec, SH, "-c", "exec sleep 30"))
    pid = t.get_pid()
    try:
        assert t.get_returncode() is None
        t.close()
        assert t.is_closing() is True
        assert await wait(p.exited) == -signal.SIGKILL
        await wait(p.lost)
        assert t.get_returncode() == -signal.SIGKILL
        ev = p.events
        assert ev[0] == "made" and ev[-1] == ("lost", None)
        assert sorted(e for e in ev if e[0] == "pipe_lost") == [
            ("pipe_lost", 0, None), ("pipe_lost", 1, None), ("pipe_lost", 2, None)]
        assert "exited" in ev
        await until(lambda: not is_child_alive_or_zombie(pid))
    finally:
        t.close()


async def _transport_calls_after_close():
    loop = asyncio.get_running_loop()
    t, p = await wait(loop.subprocess_exec(SRec, SH, "-c", "exec sleep 30",
                                           stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL))
    t.close()
    await wait(p.lost)
    rec = {"events": p.events, "returncode": t.get_returncode()}
    for name, call in (("send_signal", lambda: t.send_signal(signal.SIGTERM)),
                       ("terminate", t.terminate), ("kill", t.kill),
                       ("get_pid", lambda: isinstance(t.get_pid(), int)),
                       ("pipe", lambda: t.get_pipe_transport(1))):
        try:
            rec[name] = ("ok", call())
        except Exception as exc:
            rec[name] = exc_record(exc)
    return rec


async def test_transport_calls_after_close_same_as_stock():
    rec = await same_as_stock(_transport_calls_after_close)
    assert rec["returncode"] == -signal.SIGKILL
    assert rec["kill"][0] == "ProcessLookupError"


async def test_transport_send_signal_terminate_kill():
    loop = asyncio.get_running_loop()
    for method, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL),
                        # (SIGUSR1, not SIGHUP: under nohup the child
                        # would inherit SIGHUP ignored)
                        ("send_signal", signal.SIGUSR1)):
        t, p = await wait(loop.subprocess_exec(
            SRec, SH, "-c", "echo ready; exec sleep 30", stdin=DEVNULL, stderr=DEVNULL))
        try:
            await until(lambda: bytes(p.data[1]) == b"ready\n")
            if method == "send_signal":
                t.send_signal(sig)
            else:
                getattr(t, method)()
            assert await wait(p.exited) == -sig
            await wait(p.lost)
            ev = p.events
            assert ev[0] == "made" and ev[-1] == ("lost", None)
            assert sorted(map(str, ev[1:-1])) == sorted(
                map(str, [("data", 1), ("pipe_lost", 1, None), "exited"]))
            assert before(ev, ("data", 1), ("pipe_lost", 1, None))
            assert t.get_returncode() == -sig
        finally:
            t.close()


async def test_pipe_transport_pause_resume_reading():
    loop = asyncio.get_running_loop()
    t, p = await wait(loop.subprocess_exec(
        SRec, SH, "-c", "read x; printf \"got $x\"", stderr=DEVNULL))
    try:
        stdout = t.get_pipe_transport(1)
        stdout.pause_reading()
        assert stdout.is_reading() is False
        t.get_pipe_transport(0).write(b"line\n")
        await wait(p.exited)
        await asyncio.sleep(0.1)
        assert p.data[1] == b""                 # nothing while paused
        assert ("pipe_lost", 1, None) not in p.events
        assert not p.lost.done()                # the pipe is still open
        stdout.resume_reading()
        await wait(p.lost)
        assert bytes(p.data[1]) == b"got line"
    finally:
        t.close()


async def test_stdin_flow_control_reaches_the_subprocess_protocol():
    # The child reads nothing until told to (through a second pipe), so the
    # stdin pipe fills up and the transport buffers.
    loop = asyncio.get_running_loop()
    gr, gw = os.pipe()
    try:
        code = f"import os, sys; os.read({gr}, 1); print(len(sys.stdin.buffer.read()))"
        t, p = await wait(loop.subprocess_exec(
            SRec, PY, "-c", code, stderr=DEVNULL, pass_fds=(gr,)))
    finally:
        os.close(gr)
    try:
        stdin = t.get_pipe_transport(0)
        blob = os.urandom(2 * MiB)
        stdin.write(blob)
        await asyncio.sleep(0.05)
        assert stdin.get_write_buffer_size() > 0
        assert p.events == ["made", "pause_writing"]
        os.write(gw, b"go\n")
        await until(lambda: "resume_writing" in p.events)
        assert stdin.get_write_buffer_size() == 0
        stdin.close()
        await wait(p.lost)
        assert int(bytes(p.data[1])) == len(blob)
        assert p.events[:3] == ["made", "pause_writing", "resume_writing"]
    finally:
        os.close(gw)
        t.close()


# -- volume: 50 MiB each way, 100 children -----------------------------------------------------


CHILD_50_MIB = r"""
import hashlib, random, sys
n = int(sys.argv[1])
rnd = random.Random(1234)
h = hashlib.sha256()
got = 0
inp, out = sys.stdin.buffer, sys.stdout.buffer
sent = 0
while got < n or sent < n:
    if sent < n:
        k = min(65536, n - sent)
        out.write(rnd.randbytes(k))
        out.flush()
        sent += k
    if got < n:
        chunk = inp.read1(65536)
        if not chunk:
            break
        h.update(chunk)
        got += len(chunk)
sys.stderr.write("%d %s" % (got, h.hexdigest()))
"""


@pytest.mark.timeout(180)
async def test_child_writes_50_mib_while_reading_50_mib():
    n = 50 * MiB
    expected_out = hashlib.sha256()
    rnd = __import__("random").Random(1234)
    left = n
    while left:
        k = min(65536, left)
        expected_out.update(rnd.randbytes(k))
        left -= k
    blob = os.urandom(n)
    proc = await exec_(PY, "-c", CHILD_50_MIB, str(n), stdin=PIPE, stdout=PIPE, stderr=PIPE)
    try:
        async def feed():
            view = memoryview(blob)
            for i in range(0, n, MiB):
                proc.stdin.write(view[i:i + MiB])
                await proc.stdin.drain()
            proc.stdin.close()

        async def collect():
            h = hashlib.sha256()
            total = 0
            while True:
                chunk = await proc.stdout.read(MiB)
                if not chunk:
                    return total, h.hexdigest()
                total += len(chunk)
                h.update(chunk)

        _, (total, digest), err = await wait(
            asyncio.gather(feed(), collect(), proc.stderr.read()), 150)
        assert await wait(proc.wait()) == 0
        assert total == n and digest == expected_out.hexdigest()
        assert err.decode() == "%d %s" % (n, hashlib.sha256(blob).hexdigest())
    finally:
        await reap(proc)


@pytest.mark.timeout(180)
async def test_cat_50_mib_through_communicate():
    blob = os.urandom(50 * MiB)
    proc = await exec_("cat", stdin=PIPE, stdout=PIPE)
    try:
        out, err = await wait(proc.communicate(blob), 150)
        assert err is None and proc.returncode == 0
        assert len(out) == len(blob)
        assert hashlib.sha256(out).digest() == hashlib.sha256(blob).digest()
    finally:
        await reap(proc)


@pytest.mark.timeout(120)
async def test_100_concurrent_children_no_zombie_no_leaked_fd():
    with nofile_at_least(4096):
        zombies_before = zombie_children()
        fds_before = count_fds()

        async def one(i):
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", f"echo child {i}; exit {i % 7}", stdout=PIPE)
            out, _ = await proc.communicate()
            return proc.pid, out, proc.returncode

        results = await wait(asyncio.gather(*(one(i) for i in range(100))), 60)
        pids = [pid for pid, _, _ in results]
        assert len(set(pids)) == 100
        for i, (pid, out, code) in enumerate(results):
            assert out == b"child %d\n" % i
            assert code == i % 7
        # every child has been reaped: none of ours is left as a zombie
        await until(lambda: not any(is_child_alive_or_zombie(pid) for pid in pids))
        assert zombie_children() <= zombies_before
        await until(lambda: count_fds() <= fds_before)
        assert count_fds() <= fds_before  # (others may close meanwhile)


async def test_children_killed_by_transport_close_are_reaped():
    loop = asyncio.get_running_loop()
    fds_before = count_fds()
    pairs = [await wait(loop.subprocess_exec(SRec, SH, "-c", "exec sleep 30"))
             for _ in range(10)]
    pids = [t.get_pid() for t, _ in pairs]
    for t, _ in pairs:
        t.close()
    for _, p in pairs:
        await wait(p.lost)
    await until(lambda: not any(is_child_alive_or_zombie(pid) for pid in pids))
    await until(lambda: count_fds() <= fds_before)


# -- errors -------------------------------------------------------------------------------------


def _norm(exc, *strip):
    if exc is None:
        return None
    name, err, text = exc_record(exc, *strip)
    # a missing-argument TypeError names the function (the loop's class)
    text = re.sub(r"^[\w.]+\(\) (missing|got|takes)", r"<f>() \1", text)
    return name, err, text


async def _errors(tmpdir):
    loop = asyncio.get_running_loop()
    noexec = os.path.join(tmpdir, "not-executable")
    with open(noexec, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(noexec, 0o644)

    def bad_preexec():
        raise RuntimeError("from preexec_fn")

    cx = asyncio.create_subprocess_exec
    cs = asyncio.create_subprocess_shell
    cases = {
        "missing_program": lambda: cx("/nonexistent/program"),
        "missing_program_in_path": lambda: cx("aioring-no-such-program"),
        "not_executable": lambda: cx(noexec),
        "directory": lambda: cx(tmpdir),
        "bad_cwd": lambda: cx(SH, "-c", "exit 0", cwd=os.path.join(tmpdir, "nope")),
        "exec_universal_newlines": lambda: cx(SH, universal_newlines=True),
        "exec_text": lambda: cx(SH, text=True),
        "exec_encoding": lambda: cx(SH, encoding="utf-8"),
        "exec_errors": lambda: cx(SH, errors="strict"),
        "exec_bufsize": lambda: cx(SH, bufsize=1),
        "exec_shell_true": lambda: loop.subprocess_exec(SRec, SH, shell=True),
        "shell_universal_newlines": lambda: cs("exit 0", universal_newlines=True),
        "shell_text": lambda: cs("exit 0", text=True),
        "shell_encoding": lambda: cs("exit 0", encoding="utf-8"),
        "shell_bufsize": lambda: cs("exit 0", bufsize=1),
        "shell_list": lambda: cs(["echo", "x"]),
        "shell_none": lambda: cs(None),
        "shell_shell_false": lambda: loop.subprocess_shell(SRec, "exit 0", shell=False),
        "exec_no_program": lambda: cx(),
        "exec_int_program": lambda: cx(123),
        "exec_bad_stdin": lambda: cx(SH, "-c", "exit 0", stdin="bogus"),
        "exec_bad_kwarg": lambda: cx(SH, "-c", "exit 0", no_such_option=1),
        "preexec_fn_raises": lambda: cx(SH, "-c", "exit 0", preexec_fn=bad_preexec),
        "exec_ok_for_reference": lambda: cx(SH, "-c", "exit 0"),
    }
    rec = {}
    for name, make in cases.items():
        try:
            res = await asyncio.wait_for(make(), 10)
        except Exception as exc:
            rec[name] = _norm(exc, tmpdir)
        else:
            proc = res[0] if isinstance(res, tuple) else res
            if isinstance(res, tuple):
                proc.close()
                rec[name] = "ok"
            else:
                rec[name] = ("ok", await wait(proc.wait()))
    return rec


async def test_errors_same_as_stock(tmp_path):
    fds_before = count_fds()
    zombies_before = zombie_children()
    sub = tempfile.mkdtemp(dir=tmp_path)
    rec = await wait(_errors(sub), 60)
    stock = await on_stock_thread(_errors, sub, timeout=60)
    assert rec == stock
    assert rec["missing_program"][:2] == ("FileNotFoundError", 2)
    assert rec["not_executable"][0] == "PermissionError"
    assert rec["bad_cwd"][0] == "FileNotFoundError"
    for k in ("exec_universal_newlines", "exec_text", "exec_encoding", "exec_errors",
              "exec_bufsize", "exec_shell_true", "shell_universal_newlines",
              "shell_text", "shell_encoding", "shell_bufsize", "shell_list",
              "shell_shell_false"):
        assert rec[k][0] == "ValueError", k
    assert rec["shell_list"] == ("ValueError", None, "cmd must be a string")
    assert rec["exec_ok_for_reference"] == ("ok", 0)
    # no descriptor and no child left behind by the failures
    await until(lambda: count_fds() <= fds_before)
    assert zombie_children() <= zombies_before


# -- starting the child -------------------------------------------------------------------


def _slow_exec():
    # runs in the child before exec: the parent's Popen waits for the exec
    import time
    time.sleep(0.4)


async def test_the_loop_runs_while_a_child_starts():
    # Popen waits until the child has exec'd (here 0.4 s later).  The stock
    # loop makes that call on its own thread and stops meanwhile; aioring
    # makes it in a thread of its own and goes on running callbacks.
    loop = asyncio.get_running_loop()
    ticks = []
    stop = False

    async def ticker():
        while not stop:
            await asyncio.sleep(0.02)
            ticks.append(loop.time())

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    t0 = loop.time()
    proc = await asyncio.create_subprocess_exec(
        PY, "-c", "print('started')", stdout=PIPE, preexec_fn=_slow_exec)
    t1 = loop.time()
    out, _ = await proc.communicate()
    stop = True
    await task
    assert out == b"started\n" and proc.returncode == 0
    assert t1 - t0 >= 0.35
    during = [t for t in ticks if t0 < t < t1]
    if is_aioring(loop):
        assert len(during) >= 5, during
    else:
        assert len(during) <= 1


async def _cancelled_while_starting():
    loop = asyncio.get_running_loop()
    zombies_before = zombie_children()
    fds_before = count_fds()
    pids = []

    class Proto(asyncio.SubprocessProtocol):
        def connection_made(self, transport):
            pids.append(transport.get_pid())

    task = asyncio.ensure_future(loop.subprocess_exec(
        Proto, PY, "-c", "import time; time.sleep(30)",
        stdin=PIPE, stdout=PIPE, stderr=PIPE, preexec_fn=_slow_exec))
    loop.call_later(0.1, task.cancel)   # on aioring: while Popen is waiting
    try:
        await task
        outcome = "created"
    except asyncio.CancelledError:
        outcome = "cancelled"
    # no child left running or unreaped, no descriptor left open
    await until(lambda: not any(is_child_alive_or_zombie(p) for p in pids), 10)
    await until(lambda: count_fds() <= fds_before, 10)
    return {"outcome": outcome,
            "zombies": sorted(zombie_children() - zombies_before),
            "fds_back": count_fds() <= fds_before}


async def test_cancelled_while_the_child_starts_same_as_stock():
    rec = await same_as_stock(_cancelled_while_starting, timeout=30)
    assert rec == {"outcome": "cancelled", "zombies": [], "fds_back": True}


async def test_a_child_that_cannot_start_leaks_nothing(tmp_path):
    fds_before = count_fds()
    for _ in range(20):
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(
                str(tmp_path / "missing"), stdin=PIPE, stdout=PIPE, stderr=PIPE)
    await until(lambda: count_fds() <= fds_before, 10)
    assert not [t for t in threading.enumerate()
                if t.name == "aioring-spawn"]
