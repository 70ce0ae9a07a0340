"""Signals: add_signal_handler / remove_signal_handler, wake-ups by a signal,
and Ctrl-C, on the stock loop and on aioring."""
import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import aioring
from _loop_helpers import REPO, kick_after, python_env, run_briefly, run_python

FACTORIES = {"asyncio": asyncio.SelectorEventLoop,
             "aioring": aioring.new_event_loop}


def noop(*args):
    pass


async def test_signal_handler_called_with_args():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    calls = []

    def handler(*args):
        calls.append(args)
        if not got.done():
            got.set_result(asyncio.get_running_loop() is loop)

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        with kick_after(loop, got, 5):
            assert await got is True
        assert calls == [("a", 2)]
        # a second signal: called again
        got = loop.create_future()
        os.kill(os.getpid(), signal.SIGUSR1)
        with kick_after(loop, got, 5):
            await got
        assert calls == [("a", 2)] * 2
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


async def test_signal_handler_replaced():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, got.set_result, "first")
    loop.add_signal_handler(signal.SIGUSR1, got.set_result, "second")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        with kick_after(loop, got, 5):
            assert await got == "second"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


async def test_signal_wakes_idle_loop():
    # No timer is pending: only the signal can wake the loop.
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, lambda: got.set_result(time.monotonic()))

    def sender():
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR1)

    th = threading.Thread(target=sender)
    t0 = time.monotonic()
    th.start()
    try:
        with kick_after(loop, got, 3):
            try:
                fired = await got
            except asyncio.CancelledError:
                pytest.fail("the signal did not wake the loop")
        assert fired - t0 < 1.2
    finally:
        th.join()
        loop.remove_signal_handler(signal.SIGUSR1)


async def test_sigint_handler_replaces_keyboard_interrupt():
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    loop.add_signal_handler(signal.SIGINT, got.set_result, "sigint")
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with kick_after(loop, got, 5):
            assert await got == "sigint"
    finally:
        assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_signal_handler_errors(any_loop):
    loop = any_loop
    with pytest.raises(TypeError, match="sig must be an int, not 'x'"):
        loop.add_signal_handler("x", noop)
    with pytest.raises(ValueError, match="invalid signal number 4242"):
        loop.add_signal_handler(4242, noop)
    with pytest.raises(ValueError):
        loop.add_signal_handler(0, noop)
    with pytest.raises(RuntimeError, match=f"sig {int(signal.SIGKILL)} cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, noop)
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.remove_signal_handler("x")
    with pytest.raises(ValueError, match="invalid signal number"):
        loop.remove_signal_handler(4242)
    assert loop.remove_signal_handler(signal.SIGUSR2) is False


def test_signal_handler_rejects_coroutines(any_loop):
    async def coro_func():
        pass
    coro = coro_func()
    for bad in (coro, coro_func):
        with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler\(\)"):
            any_loop.add_signal_handler(signal.SIGUSR1, bad)
    coro.close()
    assert any_loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_handler_on_closed_loop(any_loop):
    any_loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.add_signal_handler(signal.SIGUSR1, noop)


def test_signal_handler_from_other_thread(loop_name):
    box = []

    def worker():
        loop = FACTORIES[loop_name]()
        try:
            loop.add_signal_handler(signal.SIGUSR1, noop)
        except BaseException as exc:
            box.append(exc)
        finally:
            loop.close()

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    (exc,) = box
    assert type(exc) is RuntimeError
    assert "main thread" in str(exc)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_received_before_run(any_loop):
    loop = any_loop
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "sig")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == []
        for _ in range(20):
            run_briefly(loop)
            if calls:
                break
            time.sleep(0.01)
        assert calls == ["sig"]
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_close_removes_signal_handlers(any_loop):
    loop = any_loop
    loop.add_signal_handler(signal.SIGUSR1, noop)
    loop.add_signal_handler(signal.SIGUSR2, noop)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_wakeup_fd_left_as_found(any_loop):
    # The stock loop touches signal.set_wakeup_fd only in add_signal_handler:
    # while it runs without signal handlers the program's own setting stays.
    loop = any_loop
    inside = []

    def peek():
        fd = signal.set_wakeup_fd(-1)
        inside.append(fd)
        signal.set_wakeup_fd(fd)

    assert signal.set_wakeup_fd(-1) == -1
    loop.call_soon(peek)
    run_briefly(loop)
    assert signal.set_wakeup_fd(-1) == -1
    assert inside == [-1]


def test_program_wakeup_fd_keeps_working_while_running(any_loop):
    # A program (or a GUI toolkit integration) that set its own wake-up fd
    # keeps getting signal numbers on it while the loop runs.
    loop = any_loop
    rsock, wsock = socket.socketpair()
    wsock.setblocking(False)
    rsock.setblocking(False)
    old_handler = signal.signal(signal.SIGUSR1, lambda *a: None)
    old_fd = signal.set_wakeup_fd(wsock.fileno())
    try:
        inside = []

        def cb():
            fd = signal.set_wakeup_fd(wsock.fileno())
            inside.append(fd == wsock.fileno())
            os.kill(os.getpid(), signal.SIGUSR1)

        loop.call_soon(cb)
        run_briefly(loop, 3)
        assert signal.set_wakeup_fd(-1) == wsock.fileno()
        try:
            data = rsock.recv(100)
        except BlockingIOError:
            data = b""
        assert inside == [True]
        assert data == bytes([signal.SIGUSR1])
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGUSR1, old_handler)
        rsock.close()
        wsock.close()


def test_wakeup_fd_cleared_when_last_handler_removed_while_running(any_loop):
    # The stock loop resets signal.set_wakeup_fd to -1 when its last signal
    # handler goes; after close() no wake-up fd may point at the loop's
    # (closed) socket.
    loop = any_loop
    loop.add_signal_handler(signal.SIGUSR1, noop)
    loop.call_soon(loop.remove_signal_handler, signal.SIGUSR1)
    run_briefly(loop)
    after_run = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(after_run)
    loop.close()
    after_close = signal.set_wakeup_fd(-1)
    assert (after_run, after_close) == (-1, -1)


async def test_signal_seen_by_busy_loop():
    # The loop always has ready callbacks (never sleeps): signal handlers
    # still run.
    loop = asyncio.get_running_loop()
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        t0 = time.monotonic()
        while not got and time.monotonic() - t0 < 2:
            await asyncio.sleep(0)
        assert got == ["usr1"]
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


_AFTER_KBI = r"""
import asyncio, faulthandler, os, signal, sys, threading, aioring
faulthandler.dump_traceback_later(8, exit=True)     # never hang
factory = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}[sys.argv[1]]
how = sys.argv[2]
loop = factory()
got = []

def on_usr1():
    got.append("usr1")
    loop.stop()

def sigint_later():
    if how == "other-thread":
        # the C-level handler runs in that thread while the loop sleeps
        threading.Timer(0.1, lambda: signal.pthread_kill(threading.get_ident(),
                                                         signal.SIGINT)).start()
    else:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

if how != "no-handler":
    loop.add_signal_handler(signal.SIGUSR1, on_usr1)
for i in range(3):
    sigint_later()
    try:
        loop.run_forever()              # asleep: no callbacks, no timers
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    if how == "no-handler":
        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    h = loop.call_later(2, loop.stop)
    loop.run_forever()
    h.cancel()
    print(got.pop() if got else "no-handler-call", flush=True)
    if how == "no-handler":
        loop.remove_signal_handler(signal.SIGUSR1)
loop.close()
"""


@pytest.mark.parametrize("how", ["no-handler", "process", "other-thread"])
def test_signal_handlers_work_after_keyboard_interrupt(loop_name, how):
    # Ctrl-C interrupts run_forever(); a program that catches it and goes on
    # (a REPL, a supervisor) still gets its signal handlers called, and
    # the next Ctrl-C still wakes the loop.
    proc = run_python(_AFTER_KBI, loop_name, how)
    assert proc.stdout.split() == ["KeyboardInterrupt", "usr1"] * 3, proc.stderr
    assert proc.returncode == 0, proc.stderr


# -- Ctrl-C ------------------------------------------------------------------------

_CTRL_C = r"""
import asyncio, sys, aioring
kind, how = sys.argv[1], sys.argv[2]

async def main():
    loop = asyncio.get_running_loop()
    print(type(loop).__name__, flush=True)
    try:
        if how == "sleep":
            await asyncio.sleep(3600)
        else:
            await loop.create_future()      # no timer at all
    except asyncio.CancelledError:
        print("cancelled", flush=True)
        raise

if how == "run_forever":
    loop = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}[kind]()
    loop.call_soon(lambda: print(type(loop).__name__, flush=True))
    try:
        loop.run_forever()
    finally:
        print("finally", flush=True)
        loop.close()
elif kind == "aioring":
    aioring.run(main())
else:
    asyncio.run(main())
"""


def _ctrl_c(kind, how):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C, kind, how], cwd=REPO, env=python_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "the child did not start"
        first = proc.stdout.readline().strip()
        time.sleep(0.2)                         # let it fall asleep
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, first, out.split(), err


@pytest.mark.parametrize("how", ["sleep", "future", "run_forever"])
def test_ctrl_c(loop_name, how):
    rc, first, out, err = _ctrl_c(loop_name, how)
    assert first == ("Loop" if loop_name == "aioring" else "_UnixSelectorEventLoop")
    expected_out = ["finally"] if how == "run_forever" else ["cancelled"]
    assert out == expected_out, err
    assert "KeyboardInterrupt" in err
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt"
    assert rc == -signal.SIGINT
    if loop_name == "aioring":
        ref = _ctrl_c("asyncio", how)
        assert (rc, out) == (ref[0], ref[2])
