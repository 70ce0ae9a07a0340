"""Run one module of CPython's test.test_asyncio on a chosen event loop.

Started by run.py, one process per module:

    python _worker.py --loop aioring|asyncio --module test_events --events OUT
                      [--skip-file F] [--no-exclude] [filters...]

Writes one JSON object per line to OUT as it goes ("start", "end",
"excluded", "module_error"), flushed after each, so the driver knows which
test was running if this process hangs and has to be killed.
"""
import argparse
import asyncio
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import time
import traceback
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import catalog  # noqa: E402

PKG = "test.test_asyncio."

# ------------------------------------------------------------------ loops

_created = []           # class names of the loops created by the current test


def _record(name):
    _created.append(name)


def install_loop(kind):
    """Make `kind` the loop that asyncio's default policy creates; return
    (factory, loop_class).

    Patching the default policy class (not only installing a policy object)
    survives the asyncio.set_event_loop_policy(None) that every test module
    of test_asyncio runs at tearDownModule, and that some tests run in
    between: asyncio.new_event_loop(), asyncio.run(), asyncio.Runner() and
    unittest.IsolatedAsyncioTestCase all end up in this factory."""
    base_init = asyncio.BaseEventLoop.__init__

    def traced_base_init(self, *args, **kwargs):
        _record(type(self).__name__)
        base_init(self, *args, **kwargs)
    asyncio.BaseEventLoop.__init__ = traced_base_init

    if kind == "asyncio":
        # the stock default loop, unchanged (epoll selector on Linux)
        asyncio.set_event_loop_policy(None)
        return asyncio.SelectorEventLoop, asyncio.SelectorEventLoop

    import aioring
    loop_init = aioring.Loop.__init__

    def traced_loop_init(self, *args, **kwargs):
        _record("aioring.Loop")
        loop_init(self, *args, **kwargs)
    aioring.Loop.__init__ = traced_loop_init

    policy_cls = asyncio.DefaultEventLoopPolicy
    policy_cls._loop_factory = staticmethod(aioring.new_event_loop)
    # and aioring's own policy as the current one (README: where CPython
    # still has policies); tests that reset the policy get the patched
    # default policy above.
    asyncio.set_event_loop_policy(aioring.EventLoopPolicy())
    return aioring.new_event_loop, aioring.Loop


def retarget(mod, modname, factory, loop_class):
    """Apply catalog.RETARGET to the test classes of `mod`."""
    applied = []
    for key, kind in catalog.RETARGET.items():
        m, _, clsname = key.partition(".")
        if m != modname or not hasattr(mod, clsname):
            continue
        cls = getattr(mod, clsname)
        if kind in ("create_event_loop", "new_loop"):
            setattr(cls, kind, lambda self, _f=factory: _f())
        elif kind == "SelectorEventLoop":
            orig_setup = cls.setUp

            def setUp(self, _orig=orig_setup, _cls=loop_class):
                saved = asyncio.SelectorEventLoop
                asyncio.SelectorEventLoop = _cls
                try:
                    _orig(self)
                finally:
                    asyncio.SelectorEventLoop = saved
            cls.setUp = setUp
        elif kind == "runner_policy":
            def new_loop(self, _f=factory):
                loop = _f()
                loop.shutdown_ag_run = False
                orig = loop.shutdown_asyncgens

                async def shutdown_asyncgens():
                    loop.shutdown_ag_run = True
                    await orig()
                loop.shutdown_asyncgens = shutdown_asyncgens
                return loop
            cls.new_loop = new_loop
        else:
            raise ValueError(f"unknown retarget kind {kind!r} for {key}")
        applied.append(key)
    return applied


# ------------------------------------------------------------- selection

def short_id(test):
    tid = test.id()
    return tid[len(PKG):] if tid.startswith(PKG) else tid


def _version_ok(versions):
    if versions is None:
        return True
    lo, hi = versions
    return lo <= sys.version_info[:2] <= hi


def exclusion_reason(sid):
    for pattern, reason, versions in catalog.EXCLUDE:
        if _version_ok(versions) and fnmatch.fnmatchcase(sid, pattern):
            return reason
    return None


def stock_by_design(sid):
    return any(fnmatch.fnmatchcase(sid, p) for p, _ in catalog.STOCK_BY_DESIGN)


def matches(sid, filters):
    if not filters:
        return True
    for f in filters:
        if any(c in f for c in "*?["):
            if fnmatch.fnmatchcase(sid, f) or fnmatch.fnmatchcase(sid, f + ".*"):
                return True
        elif f in sid:
            return True
    return False


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


# ---------------------------------------------------------------- result

class Emitter:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def __call__(self, **ev):
        self.f.write(json.dumps(ev) + "\n")
        self.f.flush()


def _unimplemented(exc):
    """Names of AbstractEventLoop methods whose NotImplementedError is in
    the exception's chain (the loop under test lacks them)."""
    names, seen = [], set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NotImplementedError):
            tb = e.__traceback__
            last = None
            while tb is not None:
                code = tb.tb_frame.f_code
                if code.co_filename.endswith(os.path.join("asyncio", "events.py")):
                    last = code.co_name
                tb = tb.tb_next
            if last:
                names.append(last)
        stack.extend([e.__cause__, e.__context__])
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
    return names


_NOTIMPL_TEXT = None


def _unimplemented_text(text):
    """The same, from a formatted traceback (errors logged by the loop's
    exception handler reach the test only as text)."""
    import re
    global _NOTIMPL_TEXT
    if _NOTIMPL_TEXT is None:
        _NOTIMPL_TEXT = re.compile(
            r'asyncio[/\\]events\.py", line \d+, in (\w+)\n'
            r'(?:[^\n]*\n){0,4}?NotImplementedError')
    return sorted(set(_NOTIMPL_TEXT.findall(text)))


class Result(unittest.TestResult):
    def __init__(self, emit):
        super().__init__()
        self.emit = emit
        self.cur = None

    def _begin(self, test):
        del _created[:]
        self.cur = {"id": short_id(test), "t0": time.monotonic(),
                    "outcome": None, "reason": None, "traceback": None,
                    "unimplemented": []}

    def startTest(self, test):
        super().startTest(test)
        self._begin(test)
        self.emit(event="start", id=self.cur["id"], t=time.time())

    def _err(self, outcome, test, err):
        exc = err[1]
        text = self._exc_info_to_string(err, test)
        reason = "".join(traceback.format_exception_only(err[0], exc)).strip()
        reason = reason.splitlines()[-1] if reason else outcome
        if self.cur is None or self.cur["id"] != short_id(test):
            # errors in class/module fixtures arrive without startTest
            self._begin(test)
            self.cur["fixture"] = True
        unimpl = _unimplemented(exc) or _unimplemented_text(text)
        if self.cur["outcome"] in (None, "pass"):
            self.cur.update(outcome=outcome, reason=reason[:500],
                            traceback=text[-6000:])
        self.cur["unimplemented"] = sorted(set(self.cur["unimplemented"]) | set(unimpl))
        if self.cur.get("fixture"):
            self._end()

    def addError(self, test, err):
        super().addError(test, err)
        self._err("error", test, err)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._err("fail", test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._err(kind, test, err)

    def addSuccess(self, test):
        super().addSuccess(test)
        if self.cur["outcome"] is None:
            self.cur["outcome"] = "pass"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if self.cur is None or self.cur["id"] != short_id(test):
            # a skipped class (setUpClass raising SkipTest, @skip on class)
            self._begin(test)
            self.cur.update(outcome="skip", reason=str(reason)[:500])
            self.cur["fixture"] = True
            self._end()
            return
        self.cur.update(outcome="skip", reason=str(reason)[:500])

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.cur["outcome"] = "xfail"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.cur.update(outcome="fail", reason="unexpected success")

    def stopTest(self, test):
        super().stopTest(test)
        if self.cur is not None and self.cur["id"] == short_id(test):
            self._end()

    def _end(self):
        c, self.cur = self.cur, None
        loops = sorted(set(_created))
        self.emit(event="end", id=c["id"], outcome=c["outcome"] or "error",
                  reason=c["reason"], traceback=c["traceback"],
                  unimplemented=c["unimplemented"],
                  duration=round(time.monotonic() - c["t0"], 3),
                  loops=loops, fixture=bool(c.get("fixture")),
                  stock_by_design=stock_by_design(c["id"]))


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", choices=("aioring", "asyncio"), required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--skip-file")
    ap.add_argument("--no-exclude", action="store_true")
    ap.add_argument("filters", nargs="*")
    a = ap.parse_args()

    emit = Emitter(a.events)
    # the driver sends SIGUSR1 before killing a hung test: dump all stacks
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    factory, loop_class = install_loop(a.loop)
    if a.loop == "aioring":
        emit(event="info", aioring=sys.modules["aioring"].__file__)

    try:
        mod = importlib.import_module(PKG + a.module)
    except unittest.SkipTest as e:
        emit(event="module_skip", reason=str(e))
        return
    except Exception:
        emit(event="module_error", traceback=traceback.format_exc())
        return

    applied = retarget(mod, a.module, factory, loop_class)
    emit(event="retargeted", classes=applied)

    skip_ids = set()
    if a.skip_file and os.path.exists(a.skip_file):
        with open(a.skip_file) as f:
            skip_ids = {line.strip() for line in f if line.strip()}

    loaded = unittest.defaultTestLoader.loadTestsFromModule(mod)
    selected = []
    for t in flatten(loaded):
        sid = short_id(t)
        if isinstance(t, unittest.loader._FailedTest) or not sid.startswith(a.module + "."):
            if sid in skip_ids:
                continue
            selected.append(t)      # import/load errors: report them
            continue
        if not matches(sid, a.filters) or sid in skip_ids:
            continue
        reason = None if a.no_exclude else exclusion_reason(sid)
        if reason is not None:
            emit(event="excluded", id=sid, reason=reason)
            continue
        selected.append(t)
    if not selected:
        emit(event="module_done", ran=0)
        return

    suite = unittest.TestSuite(selected)
    result = Result(emit)
    t0 = time.monotonic()
    suite.run(result)
    emit(event="module_done", ran=result.testsRun,
         duration=round(time.monotonic() - t0, 3))


if __name__ == "__main__":
    main()
