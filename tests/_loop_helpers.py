"""Helpers shared by the loop-core parity tests (tests/test_loop_*.py).

Not a test module (the leading underscore keeps pytest from collecting it).
A parity test runs one scenario on the loop under test and, where the
observable result is not obvious, on a fresh stock loop too, and compares.
"""
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import aioring

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The loops every test runs on (tests/conftest.py); tests that make loops
# themselves import it from here (`from conftest import` may find
# tests/integration/conftest.py first).
LOOP_FACTORIES = {
    "asyncio": asyncio.SelectorEventLoop,
    "aioring": aioring.new_event_loop,
}


def is_aioring(loop=None):
    if loop is None:
        loop = asyncio.get_running_loop()
    return isinstance(loop, aioring.Loop)


def iou_worker_tids():
    """The process's io-wq worker threads (io_uring's punted requests)."""
    tids = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().startswith("iou-wrk"):
                    tids.add(tid)
        except FileNotFoundError:       # a thread that just exited
            pass
    return tids


def on_stock(scenario, *args, **kwargs):
    """Run `scenario(loop, ...)` on a fresh stock loop and return its result:
    what the loop under test must reproduce."""
    loop = asyncio.SelectorEventLoop()
    try:
        return scenario(loop, *args, **kwargs)
    finally:
        loop.close()


def run_briefly(loop, n=1):
    """Run `n` iterations of a loop that is not running."""
    for _ in range(n):
        loop.call_soon(loop.stop)
        loop.run_forever()


@contextlib.contextmanager
def kick_after(loop, fut, seconds):
    """Bound a wait on `fut` that relies on the loop waking up: if `fut` is
    still pending after `seconds`, cancel it from another thread and also
    interrupt the main thread with a signal, so that a loop that failed to
    wake on its own still returns (and the test fails instead of hanging)."""
    main_ident = threading.main_thread().ident
    in_main = threading.get_ident() == main_ident
    old = None
    if in_main:
        old = signal.signal(signal.SIGUSR2, lambda *a: None)
    done = threading.Event()

    def watchdog():
        if done.wait(seconds):
            return
        if not fut.done():
            try:
                loop.call_soon_threadsafe(fut.cancel)
            except RuntimeError:
                pass
            if in_main:
                for _ in range(20):
                    if fut.done() or done.is_set():
                        break
                    signal.pthread_kill(main_ident, signal.SIGUSR2)
                    time.sleep(0.1)

    t = threading.Thread(target=watchdog, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        if in_main:
            signal.signal(signal.SIGUSR2, old)


async def call_soon_threadsafe_from_threads(loop, nthreads, per_thread, timeout=10):
    """`nthreads` threads start together and each calls
    loop.call_soon_threadsafe(record, t, i) for i in range(per_thread).
    Returns {t: [i, ...]} in the order the callbacks ran, once all have run."""
    got = {t: [] for t in range(nthreads)}
    done = loop.create_future()
    count = 0

    def record(t, i):
        nonlocal count
        got[t].append(i)
        count += 1
        if count == nthreads * per_thread:
            done.set_result(None)

    barrier = threading.Barrier(nthreads)

    def worker(t):
        barrier.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    try:
        with kick_after(loop, done, timeout):
            await done
    finally:
        for th in threads:
            th.join()
    return got


def python_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    env.update(extra)
    return env


def run_python(code, *args, flags=(), env=None, timeout=30):
    """Run `code` in a fresh interpreter (this one's executable) with the
    repository importable; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        cwd=REPO, env=env or python_env(), capture_output=True, text=True,
        timeout=timeout)
