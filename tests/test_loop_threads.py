"""Threads and the loop: call_soon_threadsafe, the cross-thread wake-up,
the debug-mode thread check, loops run outside the main thread.  Same
scenario on the stock loop and on aioring."""
import asyncio
import concurrent.futures
import contextvars
import random
import threading
import time

import pytest

import aioring
from _loop_helpers import call_soon_threadsafe_from_threads, kick_after, run_briefly

FACTORIES = {"asyncio": asyncio.SelectorEventLoop,
             "aioring": aioring.new_event_loop}

VAR = contextvars.ContextVar("VAR", default="unset")


def noop(*args):
    pass


async def test_threadsafe_from_8_threads():
    loop = asyncio.get_running_loop()
    nthreads, per_thread = 8, 1000
    got = await call_soon_threadsafe_from_threads(loop, nthreads, per_thread)
    assert sum(len(calls) for calls in got.values()) == nthreads * per_thread
    for t in range(nthreads):
        assert got[t] == list(range(per_thread))


async def test_threadsafe_wakes_idle_loop():
    # No timer is pending: the loop sleeps until woken.
    loop = asyncio.get_running_loop()
    for delay in (0.2, 0.0, 0.001, 0.05, 0.01):
        fut = loop.create_future()

        def worker():
            time.sleep(delay)
            loop.call_soon_threadsafe(fut.set_result, time.monotonic())

        th = threading.Thread(target=worker)
        t0 = time.monotonic()
        th.start()
        with kick_after(loop, fut, 3):
            try:
                sent = await fut
            except asyncio.CancelledError:
                pytest.fail(f"the loop did not wake up (delay {delay})")
        th.join()
        woke = time.monotonic()
        assert woke - t0 < delay + 1
        assert woke - sent < 0.5


async def test_threadsafe_ping_pong():
    # Many round trips: a lost wake-up stalls one of them.
    loop = asyncio.get_running_loop()
    rounds = 2000
    done = loop.create_future()
    replies = []
    stalls = []

    def worker():
        rnd = random.Random(3)
        ev = threading.Event()
        for i in range(rounds):
            ev.clear()
            if rnd.random() < 0.1:
                time.sleep(rnd.choice((0, 0.0001, 0.001)))
            loop.call_soon_threadsafe(lambda i=i: (replies.append(i), ev.set()))
            if not ev.wait(2):
                stalls.append(i)
                ev.wait(10)
        loop.call_soon_threadsafe(done.set_result, None)

    th = threading.Thread(target=worker)
    th.start()
    try:
        with kick_after(loop, done, 30):
            await done
    finally:
        th.join()
    assert stalls == []
    assert replies == list(range(rounds))


async def test_threadsafe_context():
    loop = asyncio.get_running_loop()
    seen = []
    done = loop.create_future()

    def worker():
        VAR.set("thread")
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()))
        ctx = contextvars.copy_context()
        ctx.run(VAR.set, "explicit")
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()), context=ctx)
        loop.call_soon_threadsafe(done.set_result, None)

    th = threading.Thread(target=worker)
    th.start()
    with kick_after(loop, done, 5):
        await done
    th.join()
    assert seen == ["thread", "explicit"]


async def test_threadsafe_handle_cancel():
    loop = asyncio.get_running_loop()
    seen = []
    done = loop.create_future()
    gate = threading.Event()

    def worker():
        h = loop.call_soon_threadsafe(seen.append, "cancelled")
        h.cancel()
        loop.call_soon_threadsafe(seen.append, "kept")
        loop.call_soon_threadsafe(done.set_result, None)
        gate.set()

    # block the loop while the thread schedules and cancels
    th = threading.Thread(target=worker)
    th.start()
    gate.wait(5)
    with kick_after(loop, done, 5):
        await done
    th.join()
    assert seen == ["kept"]


async def test_run_coroutine_threadsafe():
    loop = asyncio.get_running_loop()

    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    def worker():
        return asyncio.run_coroutine_threadsafe(add(2, 3), loop).result(5)

    assert await loop.run_in_executor(None, worker) == 5


# -- debug mode: the thread check -------------------------------------------------


async def test_debug_rejects_foreign_thread_calls():
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        results = {}

        def worker():
            for name, call in (("call_soon", lambda: loop.call_soon(noop)),
                               ("call_later", lambda: loop.call_later(1, noop)),
                               ("call_at", lambda: loop.call_at(loop.time() + 1, noop))):
                try:
                    h = call()
                except RuntimeError as exc:
                    results[name] = str(exc)
                else:
                    h.cancel()
                    results[name] = None
            h = loop.call_soon_threadsafe(noop)     # this one is allowed
            results["call_soon_threadsafe"] = type(h).__name__

        th = threading.Thread(target=worker)
        th.start()
        th.join()
        msg = ("Non-thread-safe operation invoked on an event loop other "
               "than the current one")
        assert results == {"call_soon": msg, "call_later": msg, "call_at": msg,
                           "call_soon_threadsafe": "Handle"}
    finally:
        loop.set_debug(False)


def test_no_thread_check_without_debug_or_when_not_running(any_loop):
    loop = any_loop
    seen = []

    def worker():
        loop.call_soon(seen.append, 1)      # not running: allowed
        loop.set_debug(True)
        loop.call_soon(seen.append, 2)      # debug but not running: allowed
        loop.set_debug(False)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    run_briefly(loop)
    assert seen == [1, 2]


def test_threadsafe_on_closed_loop(any_loop):
    any_loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.call_soon_threadsafe(noop)
    errors = []

    def worker():
        try:
            any_loop.call_soon_threadsafe(noop)
        except RuntimeError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert errors == ["Event loop is closed"]


def test_threadsafe_before_the_loop_runs(any_loop):
    loop = any_loop
    seen = []
    th = threading.Thread(target=lambda: loop.call_soon_threadsafe(seen.append, "early"))
    th.start()
    th.join()
    run_briefly(loop)
    assert seen == ["early"]


# -- loops outside the main thread -------------------------------------------------


def test_loop_created_in_main_run_in_thread(any_loop):
    loop = any_loop
    box = {}

    def runner():
        try:
            asyncio.set_event_loop(loop)
            loop.run_forever()
        except BaseException as exc:       # report, do not hide
            box["error"] = exc
        finally:
            asyncio.set_event_loop(None)

    th = threading.Thread(target=runner)
    th.start()
    try:
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01, "slept"), loop)
        assert fut.result(5) == "slept"
        ident = concurrent.futures.Future()
        loop.call_soon_threadsafe(lambda: ident.set_result(threading.get_ident()))
        assert ident.result(5) == th.ident
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        th.join(10)
    assert not th.is_alive()
    assert "error" not in box, box


def test_loop_run_in_two_threads_one_after_the_other(any_loop):
    # asyncio lets a stopped loop be run again from another thread.
    loop = any_loop
    results = []

    async def where():
        await asyncio.sleep(0.001)
        return threading.get_ident()

    def runner():
        try:
            results.append(loop.run_until_complete(where()) == threading.get_ident())
        except BaseException as exc:
            results.append(exc)

    for _ in range(2):
        th = threading.Thread(target=runner)
        th.start()
        th.join(10)
    runner()                    # and back in this thread
    assert results == [True, True, True]


def test_loops_in_many_threads(loop_name):
    def runner(i):
        loop = FACTORIES[loop_name]()
        try:
            async def main():
                await asyncio.gather(*(asyncio.sleep(0.001 * (k % 5)) for k in range(50)))
                return i, asyncio.get_running_loop() is loop
            return loop.run_until_complete(main())
        finally:
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(runner, range(16)))
    assert results == [(i, True) for i in range(16)]


def test_loop_created_and_closed_in_thread(loop_name):
    box = []

    def runner():
        loop = FACTORIES[loop_name]()
        box.append(loop.run_until_complete(asyncio.sleep(0, "ok")))
        loop.close()
        box.append(loop.is_closed())

    th = threading.Thread(target=runner)
    th.start()
    th.join(10)
    assert box == ["ok", True]
