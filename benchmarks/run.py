"""Run the whole benchmark comparison and write its results.

    python benchmarks/run.py [--quick] [--out DIR] [--only REGEX] [--publish]

Echo (three server styles, TCP and Unix, 100 B / 1 KiB / 64 KiB, 10 and
100 connections), HTTP through wrk, loop microbenchmarks and callgrind
instruction counts, for stock asyncio, uvloop, rloop, aioring and a C echo
server on io_uring (the floor); then the feature table: aioring with each
io_uring feature (fixed files, multishot recv, buffer ring, DEFER_TASKRUN)
switched off in turn, on a few echo workloads (--only features selects
just that table).  Writes
results.json, report.md and PNG charts into DIR (default
benchmarks/results/<UTC timestamp>/); --publish also copies the report and
charts into docs/benchmarks.md.  See docs/benchmarks.md for the method.
"""
import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types

from harness import callgrind, charts, features, machine, publish, report
from harness.build import REPO, build_c_programs
from harness.echo_load import measure_echo
from harness.http_load import measure_http, wrk_available
from harness.micro_runs import run_micro
from harness.stats import rotated, summarize
from harness.targets import available_targets
from harness.workloads import (FULL, QUICK, callgrind_workloads, echo_workloads,
                               http_workloads)

METRICS = ("rps", "p50_us", "p99_us", "max_us", "cpu_us_per_req")
QUICK_CALLGRIND_TARGETS = ("asyncio", "uvloop", "aioring", "C floor")


def log(msg):
    print(msg, flush=True)


def aioring_pythonpath():
    """None when aioring imports as installed; else the repository (a build
    in place), which the servers then get on PYTHONPATH."""
    probe = [sys.executable, "-c", "import aioring"]
    if subprocess.run(probe, capture_output=True, cwd=tempfile.gettempdir()).returncode == 0:
        return None
    env = dict(os.environ, PYTHONPATH=REPO)
    if subprocess.run(probe, capture_output=True, env=env,
                      cwd=tempfile.gettempdir()).returncode == 0:
        return REPO
    raise SystemExit("aioring does not import: build it (python setup.py build_ext --inplace) "
                     "or install it (pip install -e .)")


def install_wrk():
    """wrk from Debian when missing; None if that did not work."""
    if wrk_available():
        return True
    log("wrk missing: apt-get install -y wrk")
    for argv in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(argv, capture_output=True)
        if wrk_available():
            return True
    return False


def measure_repeatedly(measure, workload, targets, settings, ctx, label, shared=None):
    """{target: {metric: stats, runs, error}}: settings.runs rounds, the
    targets in rotating order, a fresh server each run.  `shared`: results
    measured before for an equivalent workload (the C floor), reused."""
    raw = {t.name: [] for t in targets}
    errors = {}
    todo = [t for t in targets if not (shared and t.name in shared)]
    for r in range(settings.runs):
        for target in rotated(todo, r):
            if target.name in errors:
                continue            # a server that cannot run this workload
            try:
                raw[target.name].append(measure(target, workload, settings, ctx))
            except Exception as e:
                errors[target.name] = f"{type(e).__name__}: {e}"
    results = {}
    for t in targets:
        if shared and t.name in shared:
            results[t.name] = shared[t.name]
            continue
        runs = raw[t.name]
        res = {m: summarize([run.get(m) for run in runs]) for m in METRICS}
        res["runs"] = runs
        res["error"] = errors.get(t.name)
        results[t.name] = res
    log(f"{label:36} " + "  ".join(
        f"{t.name} {report.rate(report.median(results[t.name], 'rps'))}"
        + ("!" if results[t.name].get("error") else "") for t in targets))
    return results


def run_echo(targets, workloads, settings, ctx):
    entries, floors = [], {}
    for w in workloads:
        shared = floors.get(w.floor_key)
        res = measure_repeatedly(measure_echo, w, targets, settings, ctx, w.name, shared)
        floor = [t for t in targets if t.is_floor]
        if floor and not shared:
            floors[w.floor_key] = {floor[0].name: res[floor[0].name]}
        entries.append({"workload": dict(dataclasses.asdict(w), name=w.name, group=w.group,
                                         row=w.row),
                        "results": res})
    return entries


def run_http(targets, settings, ctx, only):
    if not install_wrk():
        return {"skipped": "wrk is not installed and apt-get could not install it",
                "workloads": []}
    py_targets = [t for t in targets if not t.is_floor]
    if not any(t.loop for t in py_targets):
        return {"skipped": "no Python target", "workloads": []}
    if importlib.util.find_spec("httptools") is None:     # the server's parser
        return {"skipped": "httptools is not installed", "workloads": []}
    entries = []
    for w in http_workloads():
        if only and not re.search(only, w.name):
            continue
        res = measure_repeatedly(measure_http, w, py_targets, settings, ctx, w.name)
        entries.append({"workload": dict(dataclasses.asdict(w), name=w.name), "results": res})
    return {"skipped": None, "workloads": entries}


def ir_or_errors(target, kind, transport, ws, settings, ctx):
    """callgrind.measure_ir, or each workload's error: one valgrind that
    fails does not end the run."""
    try:
        return callgrind.measure_ir(target, kind, transport, ws, settings, ctx, log)
    except Exception as e:
        log(f"  callgrind {target.name} {kind} {transport}: {e}")
        return {w.name: f"error: {e}" for w in ws}


def run_callgrind(targets, echo_entries, workloads, settings, ctx):
    """Ir/req of `workloads` into their entries, one valgrind process per
    (target, style, transport)."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        log("callgrind: valgrind is not installed, instruction counts skipped")
        return
    by_name = {e["workload"]["name"]: e for e in echo_entries}
    done_floor = {}
    groups = {}
    for w in workloads:
        groups.setdefault((w.kind, w.transport), []).append(w)
    for (kind, transport), ws in groups.items():
        for target in targets:
            if all(not by_name[w.name]["results"].get(target.name, {}).get("rps")
                   for w in ws if w.name in by_name) and any(w.name in by_name for w in ws):
                irs = {w.name: "not measured: the server did not run this workload" for w in ws}
            elif target.is_floor:
                # kind-independent: measured once per transport
                pending = [w for w in ws if w.floor_key not in done_floor]
                if pending:
                    irs = callgrind.measure_ir(target, kind, transport, pending, settings, ctx, log)
                    for w in pending:
                        done_floor[w.floor_key] = irs[w.name]
                irs = {w.name: done_floor[w.floor_key] for w in ws}
            else:
                irs = ir_or_errors(target, kind, transport, ws, settings, ctx)
            for w in ws:
                entry = by_name.get(w.name)
                if entry is not None:
                    entry["results"].setdefault(target.name, {})["ir_per_req"] = irs[w.name]


def run_features(targets, workloads, quick, no_callgrind, settings, ctx):
    """The feature table: the baseline aioring and its variants measured
    like the echo comparison (rotating order, median of settings.runs, a
    fresh server each run), then callgrind on each (not in quick mode)."""
    log(f"features: {', '.join(t.name for t in targets)}")
    switches = features.probe_switches(targets, ctx)
    for problem in features.switch_problems(switches):
        log(f"features: switch not as asked: {problem}")
    entries = run_echo(targets, workloads, settings, ctx)
    if not quick and not no_callgrind:
        # a folder of its own: the echo phase's dumps of "aioring" use the
        # same file names, and a second valgrind would overwrite them
        feature_ctx = types.SimpleNamespace(
            **dict(vars(ctx), callgrind_dir=os.path.join(ctx.callgrind_dir, "features")))
        os.makedirs(feature_ctx.callgrind_dir, exist_ok=True)
        run_callgrind(targets, entries, workloads, settings, feature_ctx)
    return {"targets": [t.name for t in targets], "switches": switches,
            "callgrind": not quick and not no_callgrind, "workloads": entries}


def write_report(out_dir, results, to_docs):
    """report.md and the charts from `results`; with `to_docs` also
    docs/benchmarks.md and its PNGs."""
    chart_files = []
    target_names = results["targets"]
    if charts.rps_chart(results, target_names, os.path.join(out_dir, "echo-rps.png")):
        chart_files.append(("echo-rps.png", "Echo requests per second"))
    if charts.ir_chart(results, target_names, os.path.join(out_dir, "echo-ir.png")):
        chart_files.append(("echo-ir.png", "Echo instructions per request"))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report.render(results, chart_files))
    if to_docs:
        publish.publish(out_dir, results, chart_files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer runs, shorter windows, a subset of workloads (< 3 min)")
    ap.add_argument("--out", help="results folder (default benchmarks/results/<UTC timestamp>)")
    ap.add_argument("--only", metavar="REGEX",
                    help="only workloads whose name matches, e.g. 'echo proto tcp|http'; "
                         "'features' for the feature table alone")
    ap.add_argument("--loops", help="comma-separated targets, e.g. uvloop,aioring,'C floor'; "
                                    "the feature table runs when one of its variants is named, "
                                    "e.g. 'aioring -fixed files'")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--publish", action="store_true",
                    help="copy the report and charts into docs/benchmarks.md")
    ap.add_argument("--rerender", metavar="DIR",
                    help="measure nothing: write DIR's report and charts again from its results.json")
    args = ap.parse_args()
    if args.rerender:
        with open(os.path.join(args.rerender, "results.json")) as f:
            write_report(args.rerender, json.load(f), args.publish)
        return 0

    t_start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    out_dir = os.path.abspath(args.out or os.path.join(
        REPO, "benchmarks", "results", started.strftime("%Y%m%dT%H%M%SZ")))
    os.makedirs(out_dir, exist_ok=True)
    settings = QUICK if args.quick else FULL
    only_loops = args.loops.split(",") if args.loops else None
    targets = available_targets(only_loops)
    feature_targets = features.select_targets(only_loops)
    phases = {}

    with tempfile.TemporaryDirectory(prefix="aioring-bench-") as tmp_dir:
        ctx = types.SimpleNamespace(
            tmp_dir=tmp_dir, build_dir=os.path.join(out_dir, "build"),
            callgrind_dir=os.path.join(out_dir, "callgrind"),
            server_log=os.path.join(out_dir, "servers.log"),
            pythonpath=aioring_pythonpath())
        os.makedirs(ctx.callgrind_dir, exist_ok=True)
        build_c_programs(ctx.build_dir)
        phases["build"] = time.monotonic() - t_start
        log(f"targets: {', '.join(t.name for t in targets)}; "
            f"features: {', '.join(t.name for t in feature_targets) or 'none'}; "
            f"results in {out_dir}")

        t = time.monotonic()
        echo_ws = [w for w in echo_workloads(args.quick)
                   if targets and (not args.only or re.search(args.only, w.name))]
        echo_entries = run_echo(targets, echo_ws, settings, ctx)
        phases["echo"] = time.monotonic() - t

        t = time.monotonic()
        http = run_http(targets, settings, ctx, args.only)
        phases["http"] = time.monotonic() - t

        t = time.monotonic()
        micro = None
        if any(not t.is_floor for t in targets) and (not args.only or re.search(args.only, "micro")):
            micro = run_micro(targets, settings, ctx, log)
        phases["micro"] = time.monotonic() - t

        t = time.monotonic()
        if not args.no_callgrind:
            run_callgrind([t for t in targets if not args.quick or t.name in QUICK_CALLGRIND_TARGETS],
                          echo_entries,
                          [w for w in callgrind_workloads(args.quick)
                           if not args.only or re.search(args.only, w.name)],
                          settings, ctx)
        phases["callgrind"] = time.monotonic() - t

        t = time.monotonic()
        feature_ws = features.selected_workloads(args.quick, args.only, re.search)
        feature_table = None
        if feature_targets and feature_ws:
            feature_table = run_features(feature_targets, feature_ws, args.quick,
                                         args.no_callgrind, settings, ctx)
        phases["features"] = time.monotonic() - t

    results = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": time.monotonic() - t_start,
        "phase_seconds": phases,
        "machine": machine.machine_facts(),
        "settings": dict(dataclasses.asdict(settings), quick=args.quick, only=args.only),
        "targets": [t.name for t in targets],
        "echo": echo_entries,
        "http": http,
        "micro": micro,
        "features": feature_table,
    }
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_report(out_dir, results, args.publish)
    log(f"done in {results['elapsed_s'] / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in phases.items())}): {out_dir}/report.md")
    if not echo_entries and not (http.get("workloads")) and not micro and not feature_table:
        log("nothing was measured")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
