"""The loop microbenchmarks (benchmarks/micro.py), one fresh process per
loop and round, the loops in rotating order."""
import json
import subprocess
import sys

from .stats import rotated, summarize
from .targets import MICRO, child_env


def run_micro(targets, settings, ctx, log):
    python_targets = [t for t in targets if not t.is_floor]
    rates = {t.name: {} for t in python_targets}
    errors = {}
    for r in range(settings.runs):
        for target in rotated(python_targets, r):
            if target.name in errors:
                continue
            argv = [sys.executable, MICRO, "--loop", target.loop, "--json",
                    "--n", str(settings.micro_n), "--repeat", "1"]
            try:
                proc = subprocess.run(argv, capture_output=True, timeout=300,
                                      env=child_env(target, ctx.pythonpath))
                result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
                errors[target.name] = f"micro.py failed: {e}"
                log(f"  micro {target.name}: {errors[target.name]}")
                continue
            for bench, values in result.items():
                rates[target.name].setdefault(bench, []).extend(values or [None])
        log(f"  micro round {r + 1}/{settings.runs} done")
    return {"rates": {name: {bench: summarize(values) for bench, values in benches.items()}
                      for name, benches in rates.items()},
            "errors": errors}
