"""call_soon and its handles, on the stock loop and on aioring.

Every test takes `any_loop` (a fresh loop of each kind) or is async (run on
each kind by the conftest hook), so a deviation of aioring fails on
[aioring] only.  Where the expected observation is not spelled out, the
scenario is also run on a fresh stock loop (`on_stock`) and compared.
"""
import asyncio
import contextvars
import functools
import gc
import logging
import re
import sys
import weakref

import pytest

import aioring

from _loop_helpers import on_stock, run_briefly

VAR = contextvars.ContextVar("VAR", default="unset")

# From 3.13 on asyncio shows a callback's arguments only in debug mode.
ARGS_SHOWN = sys.version_info < (3, 13)
NOOP_1 = "noop(1)" if ARGS_SHOWN else "noop()"


def noop(*args):
    pass


# -- order --------------------------------------------------------------------


def test_call_soon_fifo_with_args(any_loop):
    loop = any_loop
    seen = []
    for i in range(20):
        loop.call_soon(seen.append, i)
    loop.call_soon(lambda *a: seen.append(a), 1, "two", None)
    loop.call_soon(functools.partial(seen.append, "partial"))
    run_briefly(loop)
    assert seen == list(range(20)) + [(1, "two", None), "partial"]


def test_call_soon_returns_handle_with_asyncio_api(any_loop):
    h = any_loop.call_soon(noop)
    assert callable(h.cancel) and callable(h.cancelled)
    assert h.cancelled() is False
    if hasattr(asyncio.Handle, "get_context"):          # 3.12+
        assert isinstance(h.get_context(), contextvars.Context)
    h.cancel()


def test_handle_types(any_loop):
    # Documented difference (docs/differences.md): aioring's handles are its
    # own types, not subclasses of asyncio.Handle, with the same attributes.
    h = any_loop.call_soon(noop, 1)
    t = any_loop.call_later(10, noop)
    try:
        if isinstance(any_loop, aioring.Loop):
            assert type(h) is aioring.loop.Handle
            assert type(t) is aioring.loop.TimerHandle
        else:
            assert isinstance(h, asyncio.Handle)
            assert isinstance(t, asyncio.TimerHandle)
        assert h._callback is noop and h._args == (1,) and h._loop is any_loop
        assert h._cancelled is False and isinstance(h._context, contextvars.Context)
        assert t._when == t.when() and t._scheduled is True
    finally:
        h.cancel()
        t.cancel()
    assert h._cancelled is True and h._callback is None and h._args is None


def _interleaving(loop):
    trace = []
    rec = trace.append

    def a():
        rec("a")
        loop.call_soon(rec, "a2")
        loop.call_later(0, rec, "a-later0")

    def b():
        rec("b")
        loop.call_soon(rec, "b2")
        loop.call_soon(c)

    def c():
        rec("c")
        loop.call_soon(rec, "c2")

    async def coro():
        rec("task-1")
        await asyncio.sleep(0)
        rec("task-2")
        await asyncio.sleep(0)
        rec("task-3")

    loop.call_later(0, rec, "later0")
    loop.call_soon(a)
    loop.call_at(loop.time() - 1, rec, "past")
    loop.call_soon(b)
    loop.call_later(-5, rec, "negative")
    fut = loop.create_future()
    fut.add_done_callback(lambda f: rec("fut-done"))
    loop.call_soon(fut.set_result, None)
    loop.create_task(coro())
    loop.call_soon(rec, "last")
    for _ in range(6):
        run_briefly(loop)
        rec("|")
    return trace


def test_callbacks_scheduled_by_callbacks_run_next_iteration(any_loop):
    trace = _interleaving(any_loop)
    assert trace == on_stock(_interleaving)
    # spelled out: one line per iteration
    assert trace[:trace.index("|")] == [
        "a", "b", "task-1", "last", "negative", "past", "later0"]
    it2 = trace[trace.index("|") + 1:]
    it2 = it2[:it2.index("|")]
    assert it2 == ["a2", "b2", "c", "fut-done", "task-2", "a-later0"]


def test_fut_set_result_ordering_matches_stock(any_loop):
    # the future's done callback is itself scheduled with call_soon
    def scenario(loop):
        trace = []
        fut = loop.create_future()
        fut.add_done_callback(lambda f: trace.append("done1"))
        loop.call_soon(trace.append, "x")
        fut.set_result(1)
        loop.call_soon(trace.append, "y")
        fut.add_done_callback(lambda f: trace.append("done2"))
        run_briefly(loop, 3)
        return trace
    assert scenario(any_loop) == on_stock(scenario) == ["x", "done1", "y", "done2"]


def test_stop_in_a_callback_finishes_the_batch(any_loop):
    def scenario(loop):
        trace = []
        loop.call_soon(trace.append, 1)
        loop.call_soon(loop.stop)
        loop.call_soon(trace.append, 2)
        loop.call_soon(lambda: loop.call_soon(trace.append, "next"))
        loop.run_forever()
        trace.append("|")
        run_briefly(loop)
        return trace
    assert scenario(any_loop) == on_stock(scenario) == [1, 2, "|", "next"]


def test_100k_call_soon_in_order(any_loop):
    loop = any_loop
    seen = []
    app = seen.append
    n = 100_000
    for i in range(n):
        loop.call_soon(app, i)
    run_briefly(loop)
    assert len(seen) == n
    assert seen == list(range(n))


# -- cancel -----------------------------------------------------------------


def test_cancel_before_run(any_loop):
    loop = any_loop
    seen = []
    h1 = loop.call_soon(seen.append, 1)
    h2 = loop.call_soon(seen.append, 2)
    h3 = loop.call_soon(seen.append, 3)
    h2.cancel()
    h2.cancel()                 # twice is fine
    assert h2.cancelled() and not h1.cancelled()
    run_briefly(loop)
    assert seen == [1, 3]
    assert not h1.cancelled() and not h3.cancelled()
    h1.cancel()                 # after it ran: no error
    assert h1.cancelled()


def test_cancel_by_earlier_callback_in_same_batch(any_loop):
    def scenario(loop):
        seen = []
        later = []
        loop.call_soon(lambda: later[0].cancel())
        later.append(loop.call_soon(seen.append, "cancelled"))
        loop.call_soon(seen.append, "kept")
        run_briefly(loop)
        return seen
    assert scenario(any_loop) == on_stock(scenario) == ["kept"]


def test_cancel_releases_callback_and_args(any_loop):
    class Obj:
        def __call__(self):
            pass
    obj, arg = Obj(), Obj()
    h = any_loop.call_soon(obj, arg)
    refs = [weakref.ref(obj), weakref.ref(arg)]
    del obj, arg
    h.cancel()
    gc.collect()
    assert [r() for r in refs] == [None, None]


# -- repr -------------------------------------------------------------------


def test_handle_repr_same_as_stock(any_loop):
    loop = any_loop

    class K:
        def meth(self, x):
            pass

    cases = [(noop, ()), (noop, (1, "two")), (functools.partial(noop, 3), ()),
             (K().meth, (4,)), (print, ())]
    for cb, args in cases:
        h = loop.call_soon(cb, *args)
        ref = asyncio.Handle(cb, args, loop)
        assert repr(h).startswith("<Handle ")
        assert repr(h) == repr(ref)
        h.cancel()
        ref.cancel()
        assert repr(h) == repr(ref) == "<Handle cancelled>"


def test_timer_handle_repr_same_as_stock(any_loop):
    loop = any_loop
    when = loop.time() + 100
    h = loop.call_at(when, noop, 1)
    ref = asyncio.TimerHandle(when, noop, (1,), loop)
    assert repr(h).startswith("<TimerHandle ")
    assert f"when={when}" in repr(h)
    assert NOOP_1 in repr(h)
    assert repr(h) == repr(ref)
    h.cancel()
    assert repr(h) == f"<TimerHandle cancelled when={when}>"


def test_foreign_timer_handle_cancel(any_loop):
    # An asyncio.TimerHandle made for this loop (as libraries and asyncio's
    # own tests do) can be cancelled: the loop's bookkeeping hook accepts it.
    loop = any_loop
    ref = asyncio.TimerHandle(loop.time() + 100, noop, (), loop)
    ref.cancel()
    assert ref.cancelled()
    assert repr(ref) == f"<TimerHandle cancelled when={ref.when()}>"


# -- exceptions in callbacks -------------------------------------------------


def _failing_callbacks(loop, handler=True):
    seen = []
    contexts = []
    if handler:
        loop.set_exception_handler(lambda l, ctx: contexts.append((l, ctx)))

    def boom(x):
        raise ZeroDivisionError(f"boom {x}")

    h1 = loop.call_soon(boom, 1)
    loop.call_soon(seen.append, "after")
    h2 = loop.call_later(0, boom, 2)
    loop.call_soon(lambda: loop.call_soon(seen.append, "next iteration"))
    run_briefly(loop, 2)
    out = []
    for l, ctx in contexts:
        assert l is loop
        exc = ctx["exception"]
        out.append((sorted(ctx), ctx["message"], type(exc), str(exc),
                    ctx["handle"] is h1, ctx["handle"] is h2))
    return seen, out


def test_exception_in_callback_goes_to_handler(any_loop):
    seen, out = _failing_callbacks(any_loop)
    assert seen == ["after", "next iteration"]       # the loop kept going
    assert (seen, out) == on_stock(_failing_callbacks)
    keys, msg, typ, text, is_h1, _ = out[0]
    assert keys == ["exception", "handle", "message"]
    assert msg.startswith("Exception in callback ")
    assert ("boom(1)" if ARGS_SHOWN else "boom()") in msg
    assert typ is ZeroDivisionError and text == "boom 1"
    assert is_h1
    assert out[1][5]             # the TimerHandle is the context's handle


def test_exception_in_callback_default_handler_logs(any_loop, caplog):
    def scenario(loop):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            seen, _ = _failing_callbacks(loop, handler=False)
        recs = [(r.name, r.levelname,
                 re.sub(r"when=[0-9.e+-]+", "when=T", r.getMessage()),
                 r.exc_info[0])
                for r in caplog.records]
        return seen, recs
    got = scenario(any_loop)
    assert got == on_stock(scenario)
    assert got[1][0][:2] == ("asyncio", "ERROR")
    assert got[1][0][2].startswith("Exception in callback ")


def test_noncallable_without_debug_fails_at_run(any_loop):
    def scenario(loop):
        errors = []
        loop.set_exception_handler(
            lambda l, c: errors.append((c["message"], repr(c["exception"]))))
        loop.call_soon(42)
        run_briefly(loop)
        return errors
    got = scenario(any_loop)
    assert got == on_stock(scenario)
    assert got == [("Exception in callback 42()",
                    "TypeError(\"'int' object is not callable\")")]


def test_base_exceptions_propagate_and_loop_is_reusable(any_loop):
    def scenario(loop, exc_type):
        seen = []

        def raiser():
            raise exc_type("out")

        loop.call_soon(seen.append, "a")
        loop.call_soon(raiser)
        loop.call_soon(seen.append, "c")
        with pytest.raises(exc_type):
            loop.run_forever()
        state = (loop.is_running(), list(seen))
        run_briefly(loop)
        return state, seen
    for exc_type in (SystemExit, KeyboardInterrupt):
        got = scenario(any_loop, exc_type)
        assert got == on_stock(scenario, exc_type)
        assert got == ((False, ["a"]), ["a", "c"])


# -- contexts -------------------------------------------------------------------


def test_call_soon_explicit_context(any_loop):
    loop = any_loop
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(lambda: VAR.set("changed by callback"), context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()))
    run_briefly(loop)
    assert seen == ["in ctx", "changed by callback", "unset"]
    assert ctx[VAR] == "changed by callback"
    assert VAR.get() == "unset"


def test_default_context_is_a_copy_at_scheduling_time(any_loop):
    loop = any_loop
    seen = []

    def read_and_write(tag):
        seen.append((tag, VAR.get()))
        VAR.set("set in callback " + tag)

    def main():
        VAR.set("first")
        loop.call_soon(read_and_write, "1")
        loop.call_later(0, read_and_write, "timer")
        VAR.set("second")
        loop.call_soon(read_and_write, "2")
        loop.call_soon(read_and_write, "3")
        return VAR.get()

    ctx = contextvars.copy_context()
    assert ctx.run(main) == "second"
    run_briefly(loop, 2)
    assert seen == [("1", "first"), ("2", "second"), ("3", "second"),
                    ("timer", "first")]
    assert ctx[VAR] == "second"         # callbacks ran in copies
    assert VAR.get() == "unset"


def test_handle_get_context(any_loop):
    if not hasattr(asyncio.Handle, "get_context"):
        pytest.skip("Handle.get_context() is 3.12+")
    ctx = contextvars.copy_context()
    h = any_loop.call_soon(noop, context=ctx)
    assert h.get_context() is ctx
    t = any_loop.call_later(1, noop, context=ctx)
    assert t.get_context() is ctx
    h.cancel()
    t.cancel()


def test_context_that_is_not_a_context(any_loop):
    # asyncio does not validate `context`; running the handle fails and the
    # failure goes to the exception handler.
    def scenario(loop):
        errors = []
        loop.set_exception_handler(
            lambda l, c: errors.append((c["message"], type(c["exception"]))))
        loop.call_soon(noop, context=123)
        run_briefly(loop)
        return errors
    assert scenario(any_loop) == on_stock(scenario)


async def test_task_context_propagation():
    loop = asyncio.get_running_loop()
    VAR.set("outer")

    async def child():
        before = VAR.get()
        VAR.set("child")
        await asyncio.sleep(0)
        return before, VAR.get()

    assert await loop.create_task(child()) == ("outer", "child")
    assert VAR.get() == "outer"
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "explicit")
    assert await loop.create_task(child(), context=ctx) == ("explicit", "child")
    assert ctx[VAR] == "child"
