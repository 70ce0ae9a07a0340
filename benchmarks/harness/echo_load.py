"""One echo measurement: a fresh server, the C load generator against it,
and the server's CPU time over exactly the measurement window (loadgen's
--on-start/--on-end save /proc/<pid>/stat, after the warm-up drained and
before the closing drain's echoes are counted out)."""
import json
import os

from . import cputime
from .endpoints import loadgen_args, new_endpoint
from .processes import Server, run_client
from .targets import child_env, echo_server_argv


def loadgen_argv(build_dir, endpoint, workload, warmup, window, on_start=None, on_end=None,
                 stall=10.0):
    # (an HTTP workload has no size: loadgen sends its GET request)
    size = ["-s", str(workload.size)] if hasattr(workload, "size") else ["--http"]
    argv = [os.path.join(build_dir, "loadgen"), *loadgen_args(endpoint),
            "-c", str(workload.conns), *size,
            "--warmup", str(warmup), "--duration", str(window), "--stall", str(stall)]
    if on_start:
        argv += ["--on-start", on_start]
    if on_end:
        argv += ["--on-end", on_end]
    return argv


def measure_echo(target, workload, settings, ctx):
    """{rps, p50_us, p99_us, max_us, requests, cpu_us_per_req} of one run;
    raises on a server that does not start or a load generator error."""
    endpoint = new_endpoint(workload.transport, ctx.tmp_dir)
    argv = echo_server_argv(target, workload.kind, endpoint, ctx.build_dir)
    return measure_with_loadgen(target, argv, endpoint, workload, settings.echo_warmup,
                                settings.echo_window, ctx)


def measure_with_loadgen(target, argv, endpoint, workload, warmup, window, ctx):
    """The server `argv` listening on `endpoint`, loadgen against it."""
    env = child_env(target, ctx.pythonpath)
    stat_start = os.path.join(ctx.tmp_dir, "stat.start")
    stat_end = os.path.join(ctx.tmp_dir, "stat.end")
    with Server(argv, env=env, log_path=ctx.server_log) as server:
        client = loadgen_argv(ctx.build_dir, endpoint, workload, warmup, window,
                              on_start=cputime.save_stat_command(server.pid, stat_start),
                              on_end=cputime.save_stat_command(server.pid, stat_end))
        rc, out, err = run_client(client, timeout=warmup + window + 60)
    result = parse_loadgen(rc, out, err)
    result["cpu_us_per_req"] = cputime.cpu_us_per_request(
        cputime.read_ticks(path=stat_start), cputime.read_ticks(path=stat_end),
        result["requests"])
    return result


class LoadgenFailed(RuntimeError):
    pass


def parse_loadgen(rc, out, err):
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise LoadgenFailed(f"loadgen printed no result (rc {rc}): {err.strip()[-300:]}")
    if rc != 0 or result["errors"] or not result["requests"]:
        raise LoadgenFailed(f"loadgen: {result['errors']} errors, {result['requests']} requests: "
                            f"{err.strip()[-300:]}")
    return result
