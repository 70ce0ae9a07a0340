"""The servers compared: one Python echo/HTTP server on each event loop, and
the C floor (benchmarks/c/uring_echo.c).  A target names its loop and the
environment it runs in (the feature table's aioring variants differ only in
that: harness/features.py)."""
import importlib.util
import os
import sys
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ECHO_SERVER = os.path.join(BENCH_DIR, "servers", "echo.py")
HTTP_SERVER = os.path.join(BENCH_DIR, "servers", "http.py")
MICRO = os.path.join(BENCH_DIR, "micro.py")

C_FLOOR = "C floor"
# aioring's io_uring feature switches (=0 turns one off; read at loop creation)
AIORING_SWITCHES = ("AIORING_FIXED_FILES", "AIORING_RECV_MULTISHOT", "AIORING_BUFFER_RING",
                    "AIORING_DEFER_TASKRUN", "AIORING_CALLBACK_CLOCK")
REFERENCE = "uvloop"


@dataclass(frozen=True)
class Target:
    name: str                       # column heading
    loop: str = None                # --loop of the Python servers; None: the C floor
    env: dict = field(default_factory=dict, hash=False)

    @property
    def is_floor(self):
        return self.loop is None


def all_on_env():
    """Every io_uring feature switch of aioring explicitly on: one left at 0
    in the caller's environment would otherwise change what is measured."""
    return {variable: "1" for variable in AIORING_SWITCHES}


def available_targets(only_loops=None):
    """The Python targets whose loop imports here, then the C floor.
    aioring is always in: run.py has made sure that it imports (from the
    repository, where it may not be on this process's path)."""
    candidates = [Target("asyncio", "asyncio"), Target("uvloop", "uvloop"),
                  Target("rloop", "rloop"),
                  Target("aioring", "aioring", all_on_env()),
                  Target(C_FLOOR)]
    found = []
    for t in candidates:
        if t.loop in ("uvloop", "rloop") and importlib.util.find_spec(t.loop) is None:
            continue
        if only_loops and t.name not in only_loops:
            continue
        found.append(t)
    return found


def child_env(target, extra_pythonpath=None):
    env = dict(os.environ)
    env.update(target.env)
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (extra_pythonpath, env.get("PYTHONPATH")) if p)
    return env


def endpoint_args(endpoint):
    kind, where = endpoint
    return ["--tcp", str(where)] if kind == "tcp" else ["--unix", where]


def echo_server_argv(target, kind, endpoint, build_dir):
    if target.is_floor:
        return [os.path.join(build_dir, "uring_echo"), *endpoint_args(endpoint)]
    return [sys.executable, ECHO_SERVER, "--loop", target.loop, "--kind", kind,
            *endpoint_args(endpoint)]


def http_server_argv(target, endpoint):
    return [sys.executable, HTTP_SERVER, "--loop", target.loop, *endpoint_args(endpoint)]
