"""One HTTP measurement: a fresh httptools server, wrk against it (a
warm-up run, then the measured run), the server's CPU time sampled around the
measured run; or, for the C client's workload, loadgen's --http mode,
measured as the echo workloads are."""
import os
import re
import shutil

from . import cputime
from .endpoints import new_endpoint
from .processes import Server, run_client
from .echo_load import measure_with_loadgen
from .targets import BENCH_DIR, child_env, http_server_argv

PIPELINE_SCRIPT = os.path.join(BENCH_DIR, "http_pipeline.lua")


def wrk_available():
    return shutil.which("wrk") is not None


def wrk_argv(url, workload, seconds):
    argv = ["wrk", "-t1", f"-c{workload.conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if workload.pipeline > 1:
        # the script's own arguments follow "--", after the URL
        return argv + ["-s", PIPELINE_SCRIPT, url, "--", str(workload.pipeline)]
    return argv + [url]


def measure_http(target, workload, settings, ctx):
    endpoint = new_endpoint("tcp", ctx.tmp_dir)
    if workload.client == "loadgen":
        return measure_with_loadgen(target, http_server_argv(target, endpoint), endpoint,
                                    workload, settings.http_warmup, settings.http_window, ctx)
    url = f"http://127.0.0.1:{endpoint[1]}/"
    env = child_env(target, ctx.pythonpath)
    with Server(http_server_argv(target, endpoint), env=env, log_path=ctx.server_log) as server:
        if settings.http_warmup:
            run_client(wrk_argv(url, workload, settings.http_warmup),
                       timeout=settings.http_warmup + 30)
        ticks_start = cputime.read_ticks(pid=server.pid)
        rc, out, err = run_client(wrk_argv(url, workload, settings.http_window),
                                  timeout=settings.http_window + 30)
        ticks_end = cputime.read_ticks(pid=server.pid)
    result = parse_wrk(rc, out, err)
    result["cpu_us_per_req"] = cputime.cpu_us_per_request(ticks_start, ticks_end,
                                                          result["requests"])
    return result


class WrkFailed(RuntimeError):
    pass


UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(rc, out, err):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if rc != 0 or not rps or not requests:
        raise WrkFailed(f"wrk failed (rc {rc}): {(err or out).strip()[-300:]}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    n_errors = (sum(map(int, errors.groups())) if errors else 0) + \
        (int(non2xx.group(1)) if non2xx else 0)
    if n_errors:
        raise WrkFailed(f"wrk: {n_errors} errors")
    percentiles = {k: to_us(v) for k, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    # wrk sometimes prints 0.00us for a percentile (seen with pipelining):
    # that is no measurement, not a fast one
    return {"rps": float(rps.group(1)), "requests": int(requests.group(1)),
            "p50_us": percentiles.get("50") or None, "p99_us": percentiles.get("99") or None}
