"""Instructions per request: the server runs under callgrind with
instrumentation off; for each workload the load generator warms it up,
drains, turns instrumentation on (callgrind_control -i on), runs the window,
drains, turns it off and dumps.  The dump's total Ir over the window's
requests is the figure: user-space instructions only, the same on a busy
or an idle machine, so one run per workload and target is enough.

One valgrind process serves all the workloads of a (target, style,
transport): starting Python under valgrind costs seconds, a window does
not, and each window is its own dump."""
import glob
import os

from .echo_load import loadgen_argv, parse_loadgen
from .endpoints import new_endpoint
from .processes import Server, run_client
from .targets import child_env, echo_server_argv


def callgrind_command(action, pid):
    """callgrind_control exits 0 even when it found no such process: judge
    it by its "OK" instead."""
    return f"callgrind_control {action} {pid} 2>&1 | grep -q OK"


def read_total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise ValueError(f"{path}: no totals line")


def measure_ir(target, kind, transport, workloads, settings, ctx, log):
    """{workload name: Ir per request or an error string} for workloads that
    share kind and transport."""
    results = {}
    endpoint = new_endpoint(transport, ctx.tmp_dir)
    out_base = os.path.join(ctx.callgrind_dir,
                            f"{target.name}-{kind}-{transport}.out".replace(" ", "_"))
    # dumps left by an earlier run into the same --out folder: valgrind
    # would overwrite them under the same names, and none would look new
    for stale in glob.glob(out_base + "*"):
        os.remove(stale)
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_base}",
            *echo_server_argv(target, kind, endpoint, ctx.build_dir)]
    with Server(argv, env=child_env(target, ctx.pythonpath), ready_timeout=180,
                log_path=ctx.server_log, hard_kill=True) as server:
        for i, workload in enumerate(workloads):
            seen = set(glob.glob(out_base + ".*"))
            client = loadgen_argv(
                ctx.build_dir, endpoint, workload,
                # the first window also warms a freshly started interpreter
                settings.callgrind_warmup * (3 if i == 0 else 1), settings.callgrind_window,
                on_start=callgrind_command("-i on", server.pid),
                on_end=f"{callgrind_command('-i off', server.pid)} && "
                       f"{callgrind_command('-d', server.pid)}",
                stall=60.0)
            try:
                rc, out, err = run_client(client, timeout=settings.callgrind_warmup * 3 +
                                          settings.callgrind_window + 180)
                load = parse_loadgen(rc, out, err)
                dumps = sorted(set(glob.glob(out_base + ".*")) - seen)
                if len(dumps) != 1:
                    raise RuntimeError(f"expected one new callgrind dump, found {len(dumps)}")
                results[workload.name] = read_total_ir(dumps[0]) / load["requests"]
            except Exception as e:          # one workload's failure is reported, not fatal
                results[workload.name] = f"error: {e}"
            log(f"  callgrind {target.name:16} {workload.name:28} {fmt(results[workload.name])}")
    return results


def fmt(value):
    return f"{value:,.0f} Ir/req" if isinstance(value, float) else value
