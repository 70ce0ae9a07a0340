"""The Markdown report of a run's results (results.json's content)."""
from .features import BASELINE, SWITCHES, switch_problems
from .targets import C_FLOOR, REFERENCE

REF_SHORT = "uv"      # "×1.20 uv": relative to uvloop
FLOOR_SHORT = "C"     # "×0.40 C": relative to the C floor


def rate(value):
    if value is None:
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def micros(value):
    if value is None:
        return "–"
    return f"{value / 1e3:.1f} ms" if value >= 1e3 else f"{value:.0f} µs"


def median(res, metric):
    s = res.get(metric) if res else None
    return s["median"] if isinstance(s, dict) else None


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return None
    return f"×{a / b:.{digits}f}"


def ir_of(res):
    v = res.get("ir_per_req") if res else None
    return v if isinstance(v, (int, float)) else None


def load_cell(res, ref, floor, show_ir=True):
    """rps median [min–max] with ratios, p50/p99, CPU µs/req, Ir/req."""
    if not res or not res.get("rps"):
        return f"n/a{' ¹' if res and res.get('error') else ''}"
    rps = res["rps"]
    lines = [f"**{rate(rps['median'])}** [{rate(rps['min'])}–{rate(rps['max'])}]"]
    ratios = [f"{r} {who}" for r, who in ((ratio(rps["median"], median(ref, "rps")), REF_SHORT),
                                          (ratio(rps["median"], median(floor, "rps")), FLOOR_SHORT))
              if r and res is not ref and res is not floor]
    if ratios:
        lines.append(" · ".join(ratios))
    lines.append(f"p50 {micros(median(res, 'p50_us'))} · p99 {micros(median(res, 'p99_us'))}")
    cpu = median(res, "cpu_us_per_req")
    if cpu is not None:
        lines.append(f"CPU {cpu:.1f} µs/req")
    ir = ir_of(res)
    if show_ir and ir is not None:
        ir_ratios = [f"{r} {who}" for r, who in ((ratio(ir, ir_of(ref)), REF_SHORT),
                                                  (ratio(ir, ir_of(floor), 1), FLOOR_SHORT))
                     if r and res is not ref and res is not floor]
        lines.append(f"{ir:,.0f} Ir/req" + (f" ({', '.join(ir_ratios)})" if ir_ratios else ""))
    return "<br>".join(lines)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def echo_sections(results, targets):
    groups = {}
    for entry in results["echo"]:
        groups.setdefault(entry["workload"]["group"], []).append(entry)
    out = []
    for group, entries in groups.items():
        rows = []
        for entry in entries:
            res = entry["results"]
            ref, floor = res.get(REFERENCE), res.get(C_FLOOR)
            rows.append([entry["workload"]["row"]] +
                        [load_cell(res.get(t), ref, floor) for t in targets])
        out += [f"### {group}", "", table(["workload"] + targets, rows), ""]
    return out


def glance_sections(results, targets):
    """Two compact tables over all echo workloads: rps relative to uvloop,
    and instructions per request."""
    if not results["echo"]:
        return []
    rps_rows, ir_rows = [], []
    for entry in results["echo"]:
        res = entry["results"]
        ref = res.get(REFERENCE)
        rps_rows.append([entry["workload"]["name"]] + [
            f"{rate(median(res.get(t), 'rps'))} ({ratio(median(res.get(t), 'rps'), median(ref, 'rps')) or '–'})"
            if median(res.get(t), "rps") else "n/a" for t in targets])
        ir_rows.append([entry["workload"]["name"]] + [
            f"{ir_of(res.get(t)):,.0f}" if ir_of(res.get(t)) is not None else "–" for t in targets])
    out = ["### Requests per second (median; ratio to uvloop, higher is faster)", "",
           table(["workload"] + targets, rps_rows), ""]
    ir_rows = [row for row in ir_rows if any(c != "–" for c in row[1:])]
    if ir_rows:
        out += ["### Instructions per request (callgrind, user space; lower is better)", "",
                table(["workload"] + targets, ir_rows), ""]
    return out


def http_section(results, targets):
    http = results.get("http") or {}
    if http.get("skipped"):
        return ["### HTTP (wrk)", "", f"Skipped: {http['skipped']}", ""]
    if not http.get("workloads"):
        return []
    py_targets = [t for t in targets if t != C_FLOOR]
    rows = []
    for entry in http["workloads"]:
        res = entry["results"]
        rows.append([entry["workload"]["name"]] +
                    [load_cell(res.get(t), res.get(REFERENCE), None, show_ir=False)
                     for t in py_targets])
    return ["### HTTP (httptools server, 100 connections; wrk, or loadgen --http for the C client)", "",
            table(["workload"] + py_targets, rows), ""]


def micro_section(results, targets):
    micro = results.get("micro") or {}
    rates = micro.get("rates") or {}
    if not rates:
        return []
    names = [t for t in targets if t in rates]
    benches = list(next(iter(rates.values())).keys()) if rates else []
    rows = []
    for bench in benches:
        ref = (rates.get(REFERENCE) or {}).get(bench)
        row = [bench]
        for t in names:
            s = rates[t].get(bench)
            if not s:
                row.append("n/a")
                continue
            r = ratio(s["median"], ref["median"]) if ref else None
            row.append(f"**{rate(s['median'])}/s** [{rate(s['min'])}–{rate(s['max'])}]"
                       + (f"<br>{r} {REF_SHORT}" if r and t != REFERENCE else ""))
        rows.append(row)
    out = ["### Loop microbenchmarks (operations per second)", "", table(["benchmark"] + names, rows), ""]
    if micro.get("errors"):
        out += [f"- {t}: {e}" for t, e in micro["errors"].items()] + [""]
    return out


def feature_cell(res, base):
    """rps median [min–max], CPU µs/req and Ir/req, each with its ratio to
    the all-on baseline (none in the baseline's own cells)."""
    if not res or not res.get("rps"):
        return f"n/a{' ¹' if res and res.get('error') else ''}"

    def versus(value, base_value):
        r = ratio(value, base_value) if res is not base else None
        return f" ({r})" if r else ""
    rps = res["rps"]
    lines = [f"**{rate(rps['median'])}** [{rate(rps['min'])}–{rate(rps['max'])}]"
             + versus(rps["median"], median(base, "rps"))]
    cpu = median(res, "cpu_us_per_req")
    if cpu is not None:
        lines.append(f"CPU {cpu:.1f} µs/req" + versus(cpu, median(base, "cpu_us_per_req")))
    ir = ir_of(res)
    if ir is not None:
        lines.append(f"{ir:,.0f} Ir/req" + versus(ir, ir_of(base)))
    return "<br>".join(lines)


def on_off(value):
    return "on" if value else "**off**"


def features_section(results):
    """The feature table, and what each variant's loop reported about its
    switches."""
    table_data = results.get("features")
    if not table_data or not table_data.get("workloads"):
        return []
    targets = table_data["targets"]
    rows = []
    for entry in table_data["workloads"]:
        res = entry["results"]
        rows.append([entry["workload"]["name"]] +
                    [feature_cell(res.get(t), res.get(BASELINE)) for t in targets])
    out = ["## io_uring features, on and off", "",
           f"`{BASELINE}` has every io_uring feature it can use; each other column switches one "
           "off (" + ", ".join(f"`{s.variable}=0`" for s in SWITCHES) + "), taking the path a "
           "kernel without it gets. Measured like the echo tables, in their own rotation; "
           f"ratios are to `{BASELINE}` (requests/s: higher is faster; CPU and Ir: lower is "
           "cheaper). CPU µs/req is user+sys: what fixed files (no file lookup and reference "
           "count per operation) and DEFER_TASKRUN (completions run when the loop waits, in "
           "one batch) save is kernel time and shows only there; Ir/req is user space only. "
           "The callback clock is not io_uring's: it is what `loop.stats()` costs (its "
           "slow-callback timing, docs/stats.md)."
           + ("" if table_data.get("callgrind") else " Ir/req not measured in this run."), "",
           table(["workload"] + targets, rows), ""]
    switches = table_data.get("switches") or {}
    if switches:
        switch_rows = []
        for t in targets:
            info = switches.get(t) or {"error": "not probed"}
            if "error" in info:
                switch_rows.append([t, info["error"], "", "", "", ""])
                continue
            switch_rows.append([t, on_off(info["fixed_files"]), on_off(info["recv_multishot"]),
                                on_off(info["recv_buffer_ring"]),
                                on_off(info.get("callback_clock")),
                                " · ".join(info["setup_flag_names"]) or "–"])
        out += ["What each column's loop reported (a probe: one stream echo round trip, then "
                "`loop._ring_info()`). Without the buffer ring, multishot recv is moot (one "
                "recv at a time into the stream's own buffer); without DEFER_TASKRUN the ring "
                "gets the flags of kernels before 6.1 (COOP_TASKRUN, no SINGLE_ISSUER, no "
                "NO_SQARRAY).", "",
                table(["column", "fixed files", "multishot recv", "buffer ring",
                       "callback clock", "ring setup"],
                      switch_rows), ""]
        problems = switch_problems({t: switches[t] for t in targets if t in switches})
        if problems:
            out += ["**Switches not as asked** (those columns do not measure what they say):", ""]
            out += [f"- {p}" for p in problems] + [""]
    return out


def errors_section(results):
    """What was not measured and why, one line per target and reason."""
    reasons = {}
    entries = list(results.get("echo", [])) + list((results.get("http") or {}).get("workloads", []))
    feature_entries = list((results.get("features") or {}).get("workloads", []))
    # the feature table's rows have the echo tables' names: told apart by a prefix
    tagged = [("", e) for e in entries] + [("features ", e) for e in feature_entries]
    for prefix, entry in tagged:
        for t, res in entry["results"].items():
            if res.get("error"):
                reasons.setdefault((t, res["error"]), []).append(prefix + entry["workload"]["name"])
            if isinstance(res.get("ir_per_req"), str):
                reasons.setdefault((t, f"callgrind: {res['ir_per_req']}"), []).append(
                    prefix + entry["workload"]["name"])
    if not reasons:
        return []
    notes = [f"- {t}, {len(names)} workload{'s' if len(names) > 1 else ''} "
             f"({', '.join(names[:3])}{', …' if len(names) > 3 else ''}): {why}"
             for (t, why), names in reasons.items()]
    return ["### ¹ Not measured / errors", ""] + notes + [""]


def machine_line(results):
    m = results["machine"]
    return (f"{m['cpus']} vCPU, {m['cpu']}, Linux {m['kernel']}, CPython {m['python']}, "
            f"uvloop {m['uvloop'] or '–'}, rloop {m['rloop'] or '–'}, httptools {m['httptools'] or '–'}, "
            f"aioring {m['aioring_commit'] or '?'}; {m['gcc'] or ''}; {m['valgrind'] or ''}; "
            f"{(m['wrk'] or 'no wrk').split(' Copyright')[0]}.")


def method_line(results):
    s = results["settings"]
    mode = "**quick run** (fewer runs, shorter windows, a subset of workloads)" \
        if s["quick"] else "full run"
    return (f"{mode}, started {results['started_utc']}, took {results['elapsed_s'] / 60:.1f} min. "
            f"Echo: median of {s['runs']} runs, each a fresh server, "
            f"{s['echo_warmup']} s warm-up + {s['echo_window']} s window; "
            f"HTTP: median of {s['runs']}, {s['http_window']} s wrk window; "
            f"callgrind: {s['callgrind_window']} s window per workload"
            + (f"; workloads matching `{s['only']}` only" if s.get("only") else "") + ".")


def render(results, chart_files=(), title="# aioring benchmark results"):
    targets = results["targets"]
    out = [title, "", machine_line(results), "", method_line(results), "",
           "Cells: **requests/s median** [min–max]; ratio to uvloop (uv) and to the C floor (C); "
           "p50 · p99 latency; server CPU time per request (user+sys); callgrind instructions "
           "per request with its ratios (lower is better).", ""]
    for path, title in chart_files:
        out += [f"![{title}]({path})", ""]
    out += glance_sections(results, targets)
    if results["echo"]:
        out += ["## Echo", ""] + echo_sections(results, targets)
    http_micro = http_section(results, targets) + micro_section(results, targets)
    if http_micro:
        out += ["## HTTP and loop microbenchmarks", ""] + http_micro
    # .get: results.json files from before the feature table have no "features"
    out += features_section(results)
    out += errors_section(results)
    return "\n".join(out) + "\n"
