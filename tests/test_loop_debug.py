"""Debug mode, on the stock loop and on aioring."""
import _thread
import asyncio
import logging
import re
import sys
import threading
import time

import pytest

from _loop_helpers import REPO, python_env, run_briefly, run_python

SELF = __file__


def noop(*args):
    pass


def lineno():
    return sys._getframe(1).f_lineno


# -- switching it on ------------------------------------------------------------


def test_set_get_debug(any_loop):
    loop = any_loop
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_enables_coroutine_origin_tracking(any_loop):
    loop = any_loop
    loop.set_debug(True)
    depths = []

    async def main():
        depths.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(False)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        depths.append(sys.get_coroutine_origin_tracking_depth())

    loop.run_until_complete(main())
    depths.append(sys.get_coroutine_origin_tracking_depth())
    assert depths == [10, 0, 0]


_DEBUG_PROBE = r"""
import asyncio, sys, aioring
factory = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}[sys.argv[1]]
loop = factory()
print(loop.get_debug())
loop.close()
async def main():
    return asyncio.get_running_loop().get_debug()
with asyncio.Runner(loop_factory=factory) as r:
    print(r.run(main()))
if sys.argv[1] == "aioring":
    print(aioring.run(main()))
else:
    print(asyncio.run(main()))
"""


@pytest.mark.parametrize("how, expected", [
    ("default", False),
    ("PYTHONASYNCIODEBUG=1", True),
    ("-X dev", True),
    ("-E with PYTHONASYNCIODEBUG=1", False),
])
def test_debug_from_environment(loop_name, how, expected):
    flags, env = (), python_env()
    if "PYTHONASYNCIODEBUG" in how:
        env["PYTHONASYNCIODEBUG"] = "1"
    if how == "-X dev":
        flags = ("-X", "dev")
    if how.startswith("-E"):
        flags = ("-E",)
        env.pop("PYTHONPATH")
        code = "import sys; sys.path.insert(0, %r)\n" % REPO + _DEBUG_PROBE
    else:
        code = _DEBUG_PROBE
    proc = run_python(code, loop_name, flags=flags, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(expected)] * 3


# -- argument checks ------------------------------------------------------------


async def coro_func():
    pass


def test_debug_rejects_coroutines_and_non_callables(any_loop):
    loop = any_loop
    loop.set_debug(True)
    calls = {
        "call_soon": lambda cb: loop.call_soon(cb),
        "call_soon_threadsafe": lambda cb: loop.call_soon_threadsafe(cb),
        "call_at": lambda cb: loop.call_at(loop.time() + 1, cb),
        "call_later": lambda cb: loop.call_later(1, cb),
        "run_in_executor": lambda cb: loop.run_in_executor(None, cb),
    }
    for name, call in calls.items():
        method = "call_at" if name == "call_later" else name
        coro = coro_func()
        for bad in (coro, coro_func):
            with pytest.raises(TypeError) as info:
                call(bad)
            assert str(info.value) == f"coroutines cannot be used with {method}()"
        coro.close()
        with pytest.raises(TypeError) as info:
            call(42)
        assert str(info.value) == f"a callable object was expected by {method}(), got 42"


def test_no_argument_checks_without_debug(any_loop):
    loop = any_loop
    h = loop.call_soon(42)
    t = loop.call_later(1, 42)
    h.cancel()
    t.cancel()


# -- slow callbacks ------------------------------------------------------------------


def test_slow_callback_warning(any_loop, caplog):
    loop = any_loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    def slow_callback():
        time.sleep(0.07)

    def fast_callback():
        pass

    loop.call_soon(slow_callback)
    loop.call_soon(fast_callback)
    loop.call_later(0, slow_callback)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(msgs) == 2, msgs
    assert re.fullmatch(
        r"Executing <Handle \S*slow_callback\(\) at .+:\d+ created at .+:\d+> "
        r"took 0\.\d{3} seconds", msgs[0]), msgs[0]
    assert re.fullmatch(
        r"Executing <TimerHandle when=[0-9.]+ \S*slow_callback\(\) at .+:\d+ "
        r"created at .+:\d+> took 0\.\d{3} seconds", msgs[1]), msgs[1]
    took = float(msgs[0].rsplit(" ", 2)[1])
    assert 0.07 <= took < 1


def test_slow_task_step_warning(any_loop, caplog):
    loop = any_loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05

    async def slow_coro():
        time.sleep(0.07)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(loop.create_task(slow_coro(), name="slowtask"))
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(msgs) == 1, msgs
    assert re.match(r"Executing <Task .*name='slowtask' coro=<.*slow_coro\(\).*> "
                    r".*took 0\.\d{3} seconds$", msgs[0], re.S), msgs[0]


def test_no_slow_callback_warning_without_debug(any_loop, caplog):
    loop = any_loop
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.02)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    assert [r for r in caplog.records if r.name == "asyncio"] == []


def test_close_logs_in_debug(any_loop, caplog):
    any_loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        any_loop.close()
    assert [r.getMessage() for r in caplog.records] == [f"Close {any_loop!r}"]


# -- where a handle was created ------------------------------------------------


def test_debug_handle_remembers_where_it_was_created(any_loop):
    loop = any_loop
    loop.set_debug(True)
    handles = [
        (loop.call_soon(noop), lineno()),
        (loop.call_later(10, noop), lineno()),
        (loop.call_at(loop.time() + 10, noop), lineno()),
        (loop.call_soon_threadsafe(noop), lineno()),
    ]
    for h, line in handles:
        assert f"created at {SELF}:{line}>" in repr(h), (repr(h), line)
        frame = h._source_traceback[-1]
        assert (frame.filename, frame.lineno) == (SELF, line)
        h.cancel()


def test_debug_exception_context_has_source_traceback(any_loop):
    loop = any_loop
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda l, c: contexts.append(c))

    def boom():
        raise RuntimeError("boom")

    def schedule():
        loop.call_soon(boom); return lineno()    # noqa: E702

    line = schedule()
    run_briefly(loop)
    (ctx,) = contexts
    assert sorted(ctx) == ["exception", "handle", "message", "source_traceback"]
    last = ctx["source_traceback"][-1]
    assert (last.filename, last.lineno, last.name) == (SELF, line, "schedule")


def test_debug_call_soon_from_shallow_stack(any_loop):
    # The only Python frame is the thread's function: asyncio takes the
    # stack from there; scheduling must work.
    loop = any_loop
    loop.set_debug(True)
    box = []
    done = threading.Event()

    def top():
        try:
            box.append(loop.call_soon(noop))
        except BaseException as exc:
            box.append(exc)
        finally:
            done.set()

    _thread.start_new_thread(top, ())
    assert done.wait(5)
    (h,) = box
    assert not isinstance(h, BaseException), repr(h)
    assert h._source_traceback[-1].name == "top"
    h.cancel()


def test_debug_call_soon_at_module_level(loop_name):
    code = r"""
import asyncio, sys, aioring
loop = {"asyncio": asyncio.SelectorEventLoop, "aioring": aioring.new_event_loop}[sys.argv[1]]()
loop.set_debug(True)
loop.call_soon(print, "called")
loop.call_later(0, print, "timer")
loop.call_soon(loop.stop)
loop.run_forever()
loop.close()
"""
    proc = run_python(code, loop_name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["called", "timer"]
