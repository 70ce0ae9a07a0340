"""Running, stopping and closing a loop; futures, tasks, runners and the
public entry points, on the stock loop and on aioring."""
import asyncio
import contextvars
import gc
import sys
import warnings

import pytest

import aioring
from _loop_helpers import is_aioring, on_stock, run_briefly

FACTORIES = {"asyncio": asyncio.SelectorEventLoop,
             "aioring": aioring.new_event_loop}


def noop(*args):
    pass


async def answer(x=42):
    await asyncio.sleep(0)
    return x


async def fail():
    await asyncio.sleep(0)
    raise ValueError("failed")


# -- run_until_complete ---------------------------------------------------------


def test_run_until_complete_coroutine(any_loop):
    assert any_loop.run_until_complete(answer(7)) == 7
    assert not any_loop.is_running()


def test_run_until_complete_future(any_loop):
    loop = any_loop
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, "fut")
    assert loop.run_until_complete(fut) == "fut"
    task = loop.create_task(answer("task"))
    assert loop.run_until_complete(task) == "task"
    # an awaitable that is neither
    class Awaitable:
        def __await__(self):
            return answer("awaitable").__await__()
    assert loop.run_until_complete(Awaitable()) == "awaitable"


def test_run_until_complete_non_future(any_loop):
    with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable is required"):
        any_loop.run_until_complete(5)


def test_run_until_complete_future_of_other_loop(any_loop, loop_name):
    other = FACTORIES[loop_name]()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="different loop"):
            any_loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_propagates_exception(any_loop):
    loop = any_loop
    with pytest.raises(ValueError, match="failed"):
        loop.run_until_complete(fail())
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        loop.run_until_complete(fut)
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)
    assert loop.run_until_complete(answer(1)) == 1     # still usable


def test_run_until_complete_stopped_early(any_loop):
    loop = any_loop
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)


def test_base_exception_from_coroutine(any_loop):
    async def exit_():
        await asyncio.sleep(0)
        raise SystemExit(3)
    with pytest.raises(SystemExit):
        any_loop.run_until_complete(exit_())
    assert not any_loop.is_running()
    assert any_loop.run_until_complete(answer(2)) == 2


# -- run_forever / stop -------------------------------------------------------


def test_run_forever_twice(any_loop):
    def scenario(loop):
        trace = []
        loop.call_soon(trace.append, 1)
        loop.call_soon(loop.stop)
        loop.call_soon(lambda: loop.call_soon(trace.append, 2))
        loop.run_forever()
        trace.append("|")
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
        trace.append("|")
        loop.call_soon(loop.stop)
        loop.run_forever()
        return trace
    assert scenario(any_loop) == on_stock(scenario) == [1, "|", 2, "|"]


def test_stop_before_run_forever_runs_one_iteration(any_loop):
    def scenario(loop):
        trace = []
        loop.call_soon(trace.append, "x")
        loop.call_soon(lambda: loop.call_soon(trace.append, "y"))
        loop.stop()
        loop.run_forever()
        return trace
    assert scenario(any_loop) == on_stock(scenario) == ["x"]


def test_stop_twice_and_stop_outside(any_loop):
    loop = any_loop
    loop.stop()
    loop.stop()
    loop.run_forever()          # one iteration
    run_briefly(loop)           # the flag was reset


def test_is_running(any_loop):
    loop = any_loop
    seen = []
    assert not loop.is_running()
    loop.call_soon(lambda: seen.append(loop.is_running()))
    run_briefly(loop)
    assert seen == [True]
    assert not loop.is_running()


# CPython 3.13.0-3.13.2: a run_forever() refused because a loop is running
# still runs its cleanup, which unsets the running loop (gh-130145).  The
# stock loop is then not a reference for what follows.
STOCK_RUN_FOREVER_BUG = (3, 13, 0) <= sys.version_info[:3] < (3, 13, 3)


def test_already_running(any_loop, loop_name):
    loop = any_loop
    errors = []
    calls = [lambda: loop.run_until_complete(fut), loop.run_forever]
    if STOCK_RUN_FOREVER_BUG and loop_name == "asyncio":
        calls.pop()

    async def main():
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))
        fut.cancel()
        return loop.is_running()

    fut = loop.create_future()
    assert loop.run_until_complete(main()) is True
    assert errors == ["This event loop is already running"] * len(calls)


@pytest.mark.parametrize("inner", list(FACTORIES))
def test_another_loop_running(any_loop, inner):
    loop = any_loop
    errors = []

    def cb():
        other = FACTORIES[inner]()
        try:
            fut = other.create_future()
            calls = [lambda: other.run_until_complete(fut), other.run_forever]
            if STOCK_RUN_FOREVER_BUG and inner == "asyncio":
                calls.pop()
            for call in calls:
                try:
                    call()
                except RuntimeError as exc:
                    errors.append(str(exc))
            errors.append((other.is_running(), asyncio.get_running_loop() is loop))
        finally:
            other.close()

    loop.call_soon(cb)
    run_briefly(loop)
    n = 1 if STOCK_RUN_FOREVER_BUG and inner == "asyncio" else 2
    assert errors == ["Cannot run the event loop while another loop is running"] * n + [(False, True)]


def test_get_running_loop(any_loop, loop_name):
    loop = any_loop

    async def main():
        return (asyncio.get_running_loop(), asyncio.get_event_loop(),
                asyncio.current_task() is not None)

    running, current, has_task = loop.run_until_complete(main())
    assert running is loop and current is loop and has_task
    if loop_name == "aioring":
        assert type(running) is aioring.Loop
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


async def test_running_loop_type():
    loop = asyncio.get_running_loop()
    if is_aioring(loop):
        assert type(loop) is aioring.Loop
    else:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert loop.is_running() and not loop.is_closed()


# -- close ----------------------------------------------------------------------


def test_close_running_loop(any_loop):
    loop = any_loop
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))

    loop.call_soon(cb)
    run_briefly(loop)
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_twice_and_is_closed(any_loop):
    loop = any_loop
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


def test_closed_loop_refuses_work(any_loop):
    loop = any_loop
    seen = []
    loop.call_soon(seen.append, "dropped")
    loop.call_later(0, seen.append, "dropped timer")
    loop.close()
    msg = "Event loop is closed"
    with pytest.raises(RuntimeError, match=msg):
        loop.call_soon(noop)
    with pytest.raises(RuntimeError, match=msg):
        loop.call_later(1, noop)
    with pytest.raises(RuntimeError, match=msg):
        loop.call_at(loop.time() + 1, noop)
    with pytest.raises(RuntimeError, match=msg):
        loop.call_soon_threadsafe(noop)
    with pytest.raises(RuntimeError, match=msg):
        loop.run_forever()
    coro = answer()
    with pytest.raises(RuntimeError, match=msg):
        loop.run_until_complete(coro)
    coro.close()
    coro = answer()
    with pytest.raises(RuntimeError, match=msg):
        loop.create_task(coro)
    coro.close()
    with pytest.raises(RuntimeError, match=msg):
        loop.run_in_executor(None, noop)
    assert seen == []
    # time() and create_future() do not check, as in asyncio
    assert isinstance(loop.time(), float)
    assert isinstance(loop.create_future(), asyncio.Future)


def test_close_drops_pending_callbacks(any_loop):
    loop = any_loop
    h = loop.call_soon(noop)
    t = loop.call_later(10, noop)
    loop.close()
    assert not h.cancelled() and not t.cancelled()


# -- futures and tasks ------------------------------------------------------------


def test_create_future(any_loop):
    fut = any_loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is any_loop
    assert not fut.done()
    fut.cancel()


def test_create_task_name_and_context(any_loop):
    loop = any_loop
    var = contextvars.ContextVar("var", default="default")

    async def main():
        t1 = loop.create_task(answer(1), name="first")
        t2 = loop.create_task(answer(2))
        ctx = contextvars.copy_context()
        ctx.run(var.set, "from ctx")

        async def read():
            return var.get()

        t3 = loop.create_task(read(), context=ctx)
        t4 = loop.create_task(read())
        assert t1.get_name() == "first"
        assert t2.get_name().startswith("Task-")
        assert t1.get_loop() is loop
        return await asyncio.gather(t1, t2, t3, t4)

    assert loop.run_until_complete(main()) == [1, 2, "from ctx", "default"]


def test_task_factory(any_loop):
    loop = any_loop
    made = []

    def factory(loop_, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop_, **kwargs)
        made.append((loop_ is loop, sorted(kwargs)))
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    t = loop.create_task(answer(3), name="named")
    assert t.get_name() == "named"
    assert loop.run_until_complete(t) == 3
    loop.run_until_complete(answer())
    ctx = contextvars.copy_context()
    loop.run_until_complete(loop.create_task(answer(), context=ctx))
    assert made[0][0] and len(made) == 3
    assert ("context" in made[2][1])
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_factory(any_loop):
    loop = any_loop
    trace = []

    async def sync_body(x):
        trace.append(("ran", x))
        return x

    async def suspends():
        trace.append("before")
        await asyncio.sleep(0)
        trace.append("after")
        return "s"

    async def main():
        t1 = loop.create_task(sync_body(1))
        # ran to completion inside create_task, without an iteration
        assert trace == [("ran", 1)]
        assert t1.done() and t1.result() == 1
        t2 = loop.create_task(suspends())
        assert trace[-1] == "before" and not t2.done()
        t3 = asyncio.create_task(sync_body(3))
        assert t3.done()
        assert await t2 == "s"
        return asyncio.current_task() is not None

    loop.set_task_factory(asyncio.eager_task_factory)
    assert loop.run_until_complete(main()) is True
    assert trace == [("ran", 1), "before", ("ran", 3), "after"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_current_task(any_loop):
    loop = any_loop
    seen = []

    async def inner():
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)
        seen.append(asyncio.current_task())

    async def main():
        t = asyncio.eager_task_factory(loop, inner())
        assert seen == [t]
        await t
        assert seen == [t, t]

    loop.run_until_complete(main())


def test_create_task_outside_running_loop(any_loop):
    t = any_loop.create_task(answer(5))
    assert not t.done()
    assert any_loop.run_until_complete(t) == 5


# -- async generators ------------------------------------------------------------


def test_shutdown_asyncgens(any_loop):
    loop = any_loop
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append("closed")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        assert await g.__anext__() == 1

    loop.run_until_complete(main())
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["closed"]


def test_asyncgen_finalized_on_gc(any_loop):
    loop = any_loop
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            finalized.append("closed")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert finalized == ["closed"]


def test_asyncgen_hooks_restored(any_loop):
    before = sys.get_asyncgen_hooks()
    inside = []

    async def main():
        inside.append(sys.get_asyncgen_hooks())

    any_loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == before
    assert inside[0].firstiter is not None and inside[0] != before


# -- runners and public entry points -------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory():
    async def main():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop())
    assert asyncio.run(main(), loop_factory=aioring.new_event_loop) is aioring.Loop


def test_asyncio_runner_with_loop_factory(loop_name):
    async def main(x):
        await asyncio.sleep(0.001)
        return asyncio.get_running_loop(), x

    with asyncio.Runner(loop_factory=FACTORIES[loop_name]) as runner:
        loop = runner.get_loop()
        assert runner.run(main(1)) == (loop, 1)
        assert runner.run(main(2)) == (loop, 2)
        with pytest.raises(ValueError, match="failed"):
            runner.run(fail())
    assert loop.is_closed()
    if loop_name == "aioring":
        assert type(loop) is aioring.Loop


def test_asyncio_runner_debug(loop_name):
    async def main():
        return asyncio.get_running_loop().get_debug()
    with asyncio.Runner(loop_factory=FACTORIES[loop_name], debug=True) as runner:
        assert runner.run(main()) is True


def test_aioring_run_returns_and_raises():
    async def main():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop()), "result"

    assert aioring.run(main()) == (aioring.Loop, "result")
    with pytest.raises(ValueError, match="failed"):
        aioring.run(fail())

    async def dbg():
        return asyncio.get_running_loop().get_debug()
    assert aioring.run(dbg(), debug=True) is True
    assert aioring.run(dbg(), debug=False) is False


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_aioring_run_rejects_other_loops():
    async def main():
        return 1
    coro = main()
    with pytest.raises(TypeError, match="aioring.run\\(\\) uses a non-aioring event loop"):
        aioring.run(coro, loop_factory=asyncio.SelectorEventLoop)
    coro.close()
    # a subclass of aioring.Loop is fine
    class MyLoop(aioring.Loop):
        pass
    assert aioring.run(main(), loop_factory=MyLoop) == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
async def test_run_inside_running_loop():
    run = aioring.run if is_aioring() else asyncio.run
    coro = answer()
    with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
        run(coro)
    coro.close()


@pytest.mark.skipif(not hasattr(aioring, "EventLoopPolicy"), reason="no policies")
def test_event_loop_policy():
    old = asyncio.get_event_loop_policy()
    try:
        asyncio.set_event_loop_policy(aioring.EventLoopPolicy())
        loop = asyncio.new_event_loop()
        try:
            assert type(loop) is aioring.Loop
        finally:
            loop.close()

        async def main():
            return type(asyncio.get_running_loop())
        assert asyncio.run(main()) is aioring.Loop
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.mark.skipif(not hasattr(aioring, "install"), reason="no policies")
def test_install():
    old = asyncio.get_event_loop_policy()
    try:
        if sys.version_info >= (3, 12):
            with pytest.warns(DeprecationWarning):
                aioring.install()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                aioring.install()
        assert isinstance(asyncio.get_event_loop_policy(), aioring.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        assert type(loop) is aioring.Loop
        loop.close()
    finally:
        asyncio.set_event_loop_policy(old)


def test_loop_is_abstract_event_loop_subclass():
    loop = aioring.new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert repr(loop).startswith("<Loop running=False closed=False debug=")
    finally:
        loop.close()


def test_unclosed_loop_warns_and_is_freed(loop_name):
    # An event loop nobody closed is garbage: asyncio warns (ResourceWarning,
    # from __del__), closes it, and its descriptors go.
    import os
    import weakref
    gc.collect()
    fds_before = set(os.listdir("/proc/self/fd"))
    loop = FACTORIES[loop_name]()
    ref = weakref.ref(loop)
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()
    assert ref() is None
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()
