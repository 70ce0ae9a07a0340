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


def is_aioring(loop=None):
    if loop is None:
        loop = asyncio.get_running_loop()
    return isinstance(loop, aioring.Loop)


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
