"""A whole program on each loop (the issue's "must show"), and the cost of an
idle loop."""
import asyncio
import json
import os
import signal

import aioring
from _loop_helpers import call_soon_threadsafe_from_threads, run_python


def io_uring_fds():
    """Descriptors of this process that are io_urings, with their fdinfo."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            if target != "anon_inode:[io_uring]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as f:
                found[int(name)] = f.read()
        except OSError:
            continue
    return found


async def _program():
    loop = asyncio.get_running_loop()
    report = {"type": type(loop)}

    # sleep, tasks, gather
    async def work(i):
        await asyncio.sleep(0.001 * (i % 4))
        return i * i

    tasks = [asyncio.create_task(work(i), name=f"w{i}") for i in range(20)]
    t0 = loop.time()
    await asyncio.sleep(0.01)
    report["slept"] = loop.time() - t0 >= 0.01
    report["gather"] = await asyncio.gather(*tasks)

    # call_soon_threadsafe from 8 threads
    per_thread = 1000
    got = await call_soon_threadsafe_from_threads(loop, 8, per_thread)
    report["threads"] = all(got[t] == list(range(per_thread)) for t in got)

    # run_in_executor
    report["executor"] = await loop.run_in_executor(None, sum, range(1000))

    # a signal handler
    sig = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, sig.set_result, "usr1")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        report["signal"] = await asyncio.wait_for(sig, 5)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)

    report["uring_fds"] = io_uring_fds()
    return report


def test_whole_program(loop_name):
    before = set(io_uring_fds())
    if loop_name == "aioring":
        report = aioring.run(_program())
    else:
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            report = runner.run(_program())
    assert report["slept"]
    assert report["gather"] == [i * i for i in range(20)]
    assert report["threads"]
    assert report["executor"] == sum(range(1000))
    assert report["signal"] == "usr1"
    new_rings = {fd: info for fd, info in report["uring_fds"].items() if fd not in before}
    if loop_name == "aioring":
        assert report["type"] is aioring.Loop
        assert new_rings, "no io_uring descriptor while the loop ran"
        for info in new_rings.values():
            assert "SqMask" in info or "SqHead" in info
        # and it is gone once the loop is closed
        assert not (set(io_uring_fds()) - before)
    else:
        assert issubclass(report["type"], asyncio.SelectorEventLoop)
        assert new_rings == {}


_IDLE = r"""
import asyncio, json, resource, sys, time, aioring

async def main():
    await asyncio.sleep(0.05)                 # settle
    c0, w0 = time.process_time(), time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(1)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": time.process_time() - c0, "wall": time.monotonic() - w0,
            "ru": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
            "nvcsw": r1.ru_nvcsw - r0.ru_nvcsw}

if sys.argv[1] == "aioring":
    print(json.dumps(aioring.run(main())))
else:
    print(json.dumps(asyncio.run(main())))
"""


def test_idle_loop_uses_no_cpu(loop_name):
    proc = run_python(_IDLE, loop_name)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["wall"] >= 1.0
    assert r["cpu"] < 0.01, r              # under 1% of the second
    assert r["ru"] < 0.01, r
    assert r["nvcsw"] < 20, r             # slept, did not spin
