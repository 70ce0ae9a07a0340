#!/usr/bin/env python
"""Run CPython's own asyncio test suite (the running interpreter's
test.test_asyncio) with aioring, or the stock loop, as "the" event loop.

    python tests/cpython_suite/run.py [--loop aioring|asyncio] [--compare]
                                      [--json OUT] [-j N] [filters...]

Each test module runs in its own process (_worker.py).  A test that runs
longer than --test-timeout is killed (its stacks are dumped to the module's
log first), recorded as "timeout", and the module resumes after it in a new
process.  See README.md in this directory for what runs on which loop and
what is excluded and why (catalog.py).

filters: a module name (test_streams), a test id or part of one
(test_events.EPollEventLoopTests.test_create_server, "create_server"), or an
fnmatch pattern ("test_events.*unix*").  Ids are "module.Class.test".
"""
import argparse
import collections
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "_worker.py")

BAD = ("fail", "error", "timeout", "crash")


def discover_modules():
    import test.test_asyncio as pkg
    d = os.path.dirname(pkg.__file__)
    return sorted(f[:-3] for f in os.listdir(d)
                  if f.startswith("test_") and f.endswith(".py"))


def modules_for(filters, all_modules):
    """Modules a filter list can select from (all, unless every filter
    names a module)."""
    if not filters:
        return list(all_modules)
    chosen = []
    for f in filters:
        head = f.split(".", 1)[0]
        if head in all_modules:
            if head not in chosen:
                chosen.append(head)
        else:
            return list(all_modules)
    return chosen


def worker_filters(filters, module):
    """The filters relevant to one module (all of them when some filter is
    not tied to a module)."""
    out = []
    for f in filters:
        head = f.split(".", 1)[0]
        if head == module:
            out.append(f)
        elif head.startswith("test_") and "*" not in head:
            continue
        else:
            out.append(f)
    return out


class ModuleRun:
    """One module on one loop: one or more worker processes."""

    def __init__(self, module, loop, opts, logdir):
        self.module, self.loop, self.opts = module, loop, opts
        self.tests = {}            # id -> result dict
        self.excluded = {}         # id -> reason
        self.retargeted = []
        self.notes = []            # module-level problems
        self.restarts = 0
        self.aioring_file = None
        self.log = os.path.join(logdir, f"{loop}.{module}.log")
        self.duration = 0.0

    def run(self):
        t0 = time.monotonic()
        tmp = tempfile.mkdtemp(prefix=f"aioring-cpy-{self.loop}-{self.module}-")
        try:
            skip = set()
            while True:
                done = self._one_process(tmp, skip)
                if done:
                    break
                skip = set(self.tests)
                self.restarts += 1
                if time.monotonic() - t0 > self.opts.module_timeout:
                    self.notes.append(f"module timeout ({self.opts.module_timeout}s): "
                                      "remaining tests not run")
                    break
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.duration = time.monotonic() - t0
        return self

    def _one_process(self, tmp, skip):
        """Run a worker; return True when the module is finished."""
        events = os.path.join(tmp, f"events.{self.restarts}.jsonl")
        skipfile = os.path.join(tmp, "skip.txt")
        with open(skipfile, "w") as f:
            f.write("\n".join(sorted(skip)))
        cmd = [sys.executable, WORKER, "--loop", self.loop, "--module", self.module,
               "--events", events, "--skip-file", skipfile]
        if self.opts.no_exclude:
            cmd.append("--no-exclude")
        cmd += worker_filters(self.opts.filters, self.module)
        env = dict(os.environ)
        env["PYTHONPATH"] = self.opts.aioring_path + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONFAULTHANDLER", "1")
        with open(self.log, "a") as log:
            log.write(f"\n=== {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            pos = 0
            current = None          # (id, start monotonic)
            finished = False
            buf = ""
            while True:
                rc = proc.poll()
                if os.path.exists(events):
                    with open(events) as f:
                        f.seek(pos)
                        chunk = f.read()
                        pos = f.tell()
                    buf += chunk
                    lines = buf.split("\n")
                    buf = lines.pop()
                    for line in lines:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        kind = ev["event"]
                        if kind == "start":
                            current = (ev["id"], time.monotonic())
                        elif kind == "end":
                            ev.pop("event")
                            self.tests[ev["id"]] = ev
                            current = None
                        elif kind == "excluded":
                            self.excluded[ev["id"]] = ev["reason"]
                        elif kind == "info":
                            self.aioring_file = ev["aioring"]
                        elif kind == "retargeted":
                            self.retargeted = ev["classes"]
                        elif kind == "module_done":
                            finished = True
                        elif kind == "module_skip":
                            self.notes.append("module skipped: " + ev["reason"])
                            finished = True
                        elif kind == "module_error":
                            self.notes.append("module import error:\n" + ev["traceback"])
                            finished = True
                if rc is not None:
                    break
                if current is not None and \
                        time.monotonic() - current[1] > self.opts.test_timeout:
                    self._kill(proc, log, f"test {current[0]} ran longer than "
                                          f"{self.opts.test_timeout}s")
                    self.tests[current[0]] = dict(
                        id=current[0], outcome="timeout",
                        reason=f"timed out after {self.opts.test_timeout}s "
                               f"(stacks in {self.log})",
                        traceback=None, unimplemented=[], loops=[],
                        duration=self.opts.test_timeout, fixture=False)
                    return False
                time.sleep(0.2)
            if finished:
                return True
            # the process died mid-module
            if current is not None:
                self.tests[current[0]] = dict(
                    id=current[0], outcome="crash",
                    reason=f"worker exited with status {rc} during this test "
                           f"(see {self.log})",
                    traceback=None, unimplemented=[], loops=[], duration=0,
                    fixture=False)
                return False
            self.notes.append(f"worker exited with status {rc} outside a test "
                              f"(see {self.log})")
            return True

    def _kill(self, proc, log, why):
        log.write(f"\n=== harness: {why}; dumping stacks, then killing\n")
        log.flush()
        try:
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def counts(self):
        c = collections.Counter(t["outcome"] for t in self.tests.values())
        c["run"] = len(self.tests)
        c["excluded"] = len(self.excluded)
        c["on_aioring"] = sum(1 for t in self.tests.values()
                              if "aioring.Loop" in t.get("loops", ()))
        c["stock_leak"] = len(self.stock_leaks())
        return c

    def stock_leaks(self):
        if self.loop != "aioring":
            return []
        return sorted(t["id"] for t in self.tests.values()
                      if "_UnixSelectorEventLoop" in t.get("loops", ())
                      and not t.get("stock_by_design"))

    def as_json(self):
        return dict(module=self.module, loop=self.loop,
                    duration=round(self.duration, 1),
                    restarts=self.restarts, notes=self.notes,
                    retargeted=self.retargeted, aioring=self.aioring_file,
                    counts=dict(self.counts()),
                    stock_leaks=self.stock_leaks(),
                    excluded=self.excluded, tests=self.tests, log=self.log)


COLS = ("run", "pass", "fail", "error", "timeout", "crash", "skip", "excluded", "on_aioring")


def print_table(runs, loop, out):
    print(f"\n== {loop} loop on Python {sys.version.split()[0]} ==", file=out)
    hdr = f"{'module':<24}" + "".join(f"{c:>11}" for c in COLS) + f"{'secs':>8}"
    print(hdr, file=out)
    tot = collections.Counter()
    secs = 0.0
    for r in runs:
        c = r.counts()
        tot.update(c)
        secs += r.duration
        print(f"{r.module:<24}" + "".join(f"{c.get(k, 0):>11}" for k in COLS)
              + f"{r.duration:>8.1f}", file=out)
        for n in r.notes:
            print(f"    note: {n.splitlines()[0]}", file=out)
    print(f"{'TOTAL':<24}" + "".join(f"{tot.get(k, 0):>11}" for k in COLS)
          + f"{secs:>8.1f}", file=out)
    leaks = [i for r in runs for i in r.stock_leaks()]
    if leaks:
        print(f"\n{len(leaks)} test(s) created a stock _UnixSelectorEventLoop "
              "under --loop aioring (injection gap):", file=out)
        for i in leaks:
            print(f"    {i}", file=out)


def print_bad(runs, out, title):
    bad = [t for r in runs for t in r.tests.values() if t["outcome"] in BAD]
    if not bad:
        return
    print(f"\n{title} ({len(bad)}):", file=out)
    for t in sorted(bad, key=lambda t: t["id"]):
        ni = f" [not implemented: {', '.join(t['unimplemented'])}]" if t.get("unimplemented") else ""
        print(f"  {t['outcome']:<7} {t['id']}{ni}\n          {t['reason']}", file=out)


def compare(stock_runs, ring_runs):
    stock = {t["id"]: t for r in stock_runs for t in r.tests.values()}
    ring = {t["id"]: t for r in ring_runs for t in r.tests.values()}
    regress, skip_only, both_bad, ring_only_pass = [], [], [], []
    for tid, s in stock.items():
        a = ring.get(tid)
        if a is None:
            continue
        if s["outcome"] in ("pass", "xfail") and a["outcome"] in BAD:
            regress.append(a)
        elif s["outcome"] == "pass" and a["outcome"] == "skip":
            skip_only.append(a)
        elif s["outcome"] in BAD and a["outcome"] in BAD:
            both_bad.append((s, a))
        elif s["outcome"] in BAD and a["outcome"] == "pass":
            ring_only_pass.append(s)
    for t in regress:
        t["area"] = area_of(t["id"])
    return dict(regressions=sorted(regress, key=lambda t: t["id"]),
                skipped_on_aioring_only=sorted(skip_only, key=lambda t: t["id"]),
                bad_on_both=sorted((a for _, a in both_bad), key=lambda t: t["id"]),
                stock_bad_aioring_pass=sorted(ring_only_pass, key=lambda t: t["id"]))


def area_of(tid):
    import re
    sys.path.insert(0, HERE)
    import catalog
    for name, pattern in catalog.AREAS:
        if re.search(pattern, tid, re.I):
            return name
    return "other"


def print_compare(cmp, out):
    reg = cmp["regressions"]
    groups = collections.defaultdict(list)
    for t in reg:
        groups[area_of(t["id"])].append(t)
    print(f"\n== pass on stock asyncio, fail on aioring: {len(reg)} ==", file=out)
    for key in sorted(groups, key=lambda k: (k.startswith("already"), k)):
        print(f"\n-- {key} ({len(groups[key])})", file=out)
        for t in groups[key]:
            ni = (f" [NotImplementedError: {', '.join(t['unimplemented'])}]"
                  if t.get("unimplemented") else "")
            print(f"  {t['outcome']:<7} {t['id']}{ni}\n          {t['reason']}", file=out)
    if cmp["skipped_on_aioring_only"]:
        print(f"\n== pass on stock asyncio, skipped on aioring: "
              f"{len(cmp['skipped_on_aioring_only'])} ==", file=out)
        for t in cmp["skipped_on_aioring_only"]:
            print(f"  {t['id']}\n          {t['reason']}", file=out)
    if cmp["bad_on_both"]:
        print(f"\n== fail on both loops: {len(cmp['bad_on_both'])} ==", file=out)
        for t in cmp["bad_on_both"]:
            print(f"  {t['id']}\n          {t['reason']}", file=out)
    if cmp["stock_bad_aioring_pass"]:
        print(f"\n== fail on stock asyncio, pass on aioring: "
              f"{len(cmp['stock_bad_aioring_pass'])} ==", file=out)
        for t in cmp["stock_bad_aioring_pass"]:
            print(f"  {t['id']}\n          {t['reason']}", file=out)


# the slowest modules start first, so that -j keeps every worker busy
SLOW_FIRST = ("test_tasks", "test_ssl", "test_events", "test_sslproto",
              "test_taskgroups", "test_subprocess", "test_futures")


def run_loop(loop, modules, opts, logdir, progress):
    runs = {}
    order = sorted(modules, key=lambda m: (SLOW_FIRST.index(m)
                                           if m in SLOW_FIRST else len(SLOW_FIRST)))
    with concurrent.futures.ThreadPoolExecutor(opts.jobs) as ex:
        futs = {ex.submit(ModuleRun(m, loop, opts, logdir).run): m for m in order}
        for fut in concurrent.futures.as_completed(futs):
            r = fut.result()
            runs[r.module] = r
            if progress:
                c = r.counts()
                bad = sum(c.get(k, 0) for k in BAD)
                print(f"[{loop}] {r.module}: {c['run']} run, {bad} bad, "
                      f"{c.get('skip', 0)} skipped, {c['excluded']} excluded "
                      f"({r.duration:.1f}s)", file=sys.stderr, flush=True)
    return [runs[m] for m in modules]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", choices=("aioring", "asyncio"), default="aioring")
    ap.add_argument("--compare", action="store_true",
                    help="run on both loops; list tests that pass on the stock "
                         "loop and fail on aioring")
    ap.add_argument("--json", metavar="OUT", help="write all results as JSON")
    ap.add_argument("-j", "--jobs", type=int, default=max(2, os.cpu_count() or 2),
                    help="modules run in parallel (default: CPUs, at least 2)")
    ap.add_argument("--test-timeout", type=float, default=45.0,
                    help="seconds one test may take before it is killed (45; "
                         "no test takes 3 s on the stock loop, and the tests' "
                         "own waits are 30 s, support.SHORT_TIMEOUT)")
    ap.add_argument("--module-timeout", type=float, default=900.0,
                    help="seconds after which a module is not restarted (900)")
    ap.add_argument("--aioring-path", default=REPO, metavar="DIR",
                    help="import aioring from DIR (default: this checkout, "
                         "built in place)")
    ap.add_argument("--no-exclude", action="store_true",
                    help="run the tests catalog.py excludes, too")
    ap.add_argument("--logdir", help="keep the workers' output here "
                                     "(default: a temporary directory, kept)")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="list every failing test of each loop")
    ap.add_argument("filters", nargs="*")
    opts = ap.parse_args()

    all_modules = discover_modules()
    modules = modules_for(opts.filters, all_modules)
    logdir = opts.logdir or tempfile.mkdtemp(prefix="aioring-cpython-suite-")
    os.makedirs(logdir, exist_ok=True)
    loops = ("asyncio", "aioring") if opts.compare else (opts.loop,)

    t0 = time.monotonic()
    results = {}
    timings = {}
    for loop in loops:
        t1 = time.monotonic()
        results[loop] = run_loop(loop, modules, opts, logdir, not opts.quiet)
        timings[loop] = round(time.monotonic() - t1, 1)
    out = sys.stdout
    for loop in loops:
        print_table(results[loop], loop, out)
        print(f"wall time: {timings[loop]}s with -j {opts.jobs}", file=out)
        if opts.verbose or not opts.compare:
            print_bad(results[loop], out, f"failing on {loop}")
    cmp = None
    if opts.compare:
        cmp = compare(results["asyncio"], results["aioring"])
        print_compare(cmp, out)
    print(f"\nworker logs: {logdir}", file=out)

    if opts.json:
        data = dict(
            python=sys.version, executable=sys.executable,
            argv=sys.argv[1:], jobs=opts.jobs, timings=timings,
            total_seconds=round(time.monotonic() - t0, 1),
            aioring_path=opts.aioring_path,
            aioring_commit=_git_head() if opts.aioring_path == REPO else None,
            loops={loop: {r.module: r.as_json() for r in results[loop]}
                   for loop in loops},
            comparison=cmp)
        with open(opts.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"results: {opts.json}", file=out)

    if cmp is not None:
        return 1 if cmp["regressions"] else 0
    return 1 if any(t["outcome"] in BAD for r in results[loops[0]]
                    for t in r.tests.values()) else 0


def _git_head():
    try:
        return subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
