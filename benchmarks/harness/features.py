"""The feature table: what each io_uring feature aioring uses contributes,
measured by switching it off.  The loop reads its switches once, at
creation, from the environment (AIORING_FIXED_FILES, AIORING_RECV_MULTISHOT,
AIORING_BUFFER_RING, AIORING_DEFER_TASKRUN; =0 takes the path a kernel
without the feature gets), so each variant is a Target with one switch at 0.
One more switch is not io_uring's: AIORING_CALLBACK_CLOCK=0 measures what
loop.stats() costs (docs/stats.md).

A probe (one echo round trip on each variant's loop, then
loop._ring_info()) records what the loop actually did, so a switch that
does not take effect shows in the report instead of as a null result."""
import json
import subprocess
import sys
from dataclasses import dataclass

from .targets import AIORING_SWITCHES, Target, all_on_env, child_env
from .workloads import EchoWorkload

BASELINE = "aioring"        # everything on; the ratios are to it
PHASE = "features"          # what --only matches to select the whole table


@dataclass(frozen=True)
class Switch:
    label: str              # "fixed files": the column is "aioring −fixed files"
    variable: str           # the environment variable that turns it off with =0
    info_key: str           # the loop._ring_info() entry that says whether it is on

    @property
    def target_name(self):
        return f"{BASELINE} −{self.label}"     # U+2212: reads as "minus", not a hyphenated name


SWITCHES = (
    Switch("fixed files", "AIORING_FIXED_FILES", "fixed_files"),
    Switch("multishot recv", "AIORING_RECV_MULTISHOT", "recv_multishot"),
    # without the provided-buffer ring each stream has one recv at a time
    # into its own buffer, so multishot is moot there
    Switch("buffer ring", "AIORING_BUFFER_RING", "recv_buffer_ring"),
    Switch("DEFER_TASKRUN", "AIORING_DEFER_TASKRUN", "defer_taskrun"),
    # not io_uring's: what loop.stats() costs (its slow-callback timing; the
    # other counters are increments that cannot be switched off)
    Switch("callback clock", "AIORING_CALLBACK_CLOCK", "callback_clock"),
)

# io_uring_setup flags (linux/io_uring.h) worth naming in the report.  With
# AIORING_DEFER_TASKRUN=0 the ring falls back to the flag set of kernels
# before 6.1: COOP_TASKRUN, and neither SINGLE_ISSUER nor NO_SQARRAY, which
# the loop only asks for together with DEFER_TASKRUN.
SETUP_FLAG_NAMES = ((1 << 13, "DEFER_TASKRUN"), (1 << 12, "SINGLE_ISSUER"),
                    (1 << 16, "NO_SQARRAY"), (1 << 8, "COOP_TASKRUN"))
DEFER_TASKRUN_FLAG = 1 << 13
# targets.py sets these to 1 for every aioring column: the two lists must agree
assert {s.variable for s in SWITCHES} == set(AIORING_SWITCHES)


def feature_targets():
    """The baseline first, then one target per switch turned off."""
    targets = [Target(BASELINE, "aioring", all_on_env())]
    for s in SWITCHES:
        targets.append(Target(s.target_name, "aioring", dict(all_on_env(), **{s.variable: "0"})))
    return targets


def select_targets(only_loops):
    """The targets --loops asks for.  A variant alone is of no use (its
    ratios are to the baseline), so the baseline is always added; naming
    no variant (e.g. --loops uvloop,aioring) leaves the table out.  An
    ASCII '-' stands for the '−' in the names, which is awkward to type."""
    targets = feature_targets()
    if not only_loops:
        return targets
    wanted = {name.replace("-", "−").strip() for name in only_loops}
    variants = [t for t in targets[1:] if t.name in wanted]
    return [targets[0]] + variants if variants else []


def feature_workloads(quick):
    """Few on purpose (the full run must stay under 30 minutes):
    - proto tcp 100 B x100: many connections, tiny messages: the most
      receives and file lookups per byte, where multishot recv and fixed
      files have the most to save;
    - proto tcp 1 KiB x10: the reference workload of the other tables;
    - proto unix 1 KiB x10: a cheaper kernel path than TCP, so the loop's
      own io_uring overhead is a larger share;
    - buffered tcp 64 KiB x10: large messages, where copies and the size of
      the receive buffers weigh (without the buffer ring a stream receives
      into a 64 KiB buffer of its own);
    - streams tcp 1 KiB x10: asyncio's streams, where the loop's share of
      the work is smallest: how much of a feature's gain survives there.
    Quick mode: the reference workload only (CI exercises the code path)."""
    reference = EchoWorkload("proto", "tcp", 1024, 10)
    if quick:
        return [reference]
    return [EchoWorkload("proto", "tcp", 100, 100), reference,
            EchoWorkload("proto", "unix", 1024, 10), EchoWorkload("buffered", "tcp", 65536, 10),
            EchoWorkload("streams", "tcp", 1024, 10)]


def selected_workloads(quick, only, search):
    """--only REGEX: all of them when it matches "features", else those whose
    "features <workload name>" matches (so 'proto tcp 1 KiB' selects that
    row here as in the other tables)."""
    return [w for w in feature_workloads(quick)
            if not only or search(only, PHASE) or search(only, f"{PHASE} {w.name}")]


# Run with each target's environment: a stream echo round trip (so that the
# buffer ring, set up at the first stream receive, exists), then the ring's
# own account of itself.
PROBE = r"""
import asyncio, json, aioring

async def echo(reader, writer):
    writer.write(await reader.read(100))
    await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"probe")
    assert await reader.read(100) == b"probe"
    info = asyncio.get_running_loop()._ring_info()
    writer.close()
    server.close()
    return info

loop = aioring.new_event_loop()
try:
    info = loop.run_until_complete(main())
finally:
    loop.close()
print(json.dumps({k: info[k] for k in ("fixed_files", "recv_multishot", "recv_buffer_ring",
                                       "callback_clock", "setup_flags")}))
"""


def probe_switches(targets, ctx):
    """{target name: {fixed_files, recv_multishot, recv_buffer_ring,
    callback_clock, defer_taskrun, setup_flags, setup_flag_names} or {error}}."""
    found = {}
    for t in targets:
        proc = None
        try:
            proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=60,
                                  env=child_env(t, ctx.pythonpath), cwd=ctx.tmp_dir)
            info = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
            stderr = proc.stderr.decode(errors="replace").strip()[-300:] if proc else ""
            found[t.name] = {"error": f"probe failed: {type(e).__name__} {stderr}".strip()}
            continue
        info["defer_taskrun"] = bool(info["setup_flags"] & DEFER_TASKRUN_FLAG)
        info["setup_flag_names"] = [name for bit, name in SETUP_FLAG_NAMES
                                    if info["setup_flags"] & bit]
        found[t.name] = info
    return found


def switch_problems(switches):
    """Targets whose loop did not do what its environment asked: a feature
    left on in its variant, or off in the baseline (a kernel without it:
    then the table compares nothing)."""
    problems = []
    for name, info in switches.items():
        if "error" in info:
            problems.append(f"{name}: {info['error']}")
            continue
        for s in SWITCHES:
            want_on = name != s.target_name
            if bool(info.get(s.info_key)) != want_on:
                problems.append(f"{name}: {s.label} is {'off' if want_on else 'on'}")
    return problems
