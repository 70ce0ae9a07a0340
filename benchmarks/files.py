"""File I/O: aioring.open() on the ring against aiofiles and
asyncio.to_thread (both on the default thread pool), side by side in one
process, reported as operations per second and as ratios against aiofiles.

    python benchmarks/files.py [--files 2000] [--size 4096] [--big-mib 128] [--repeat 5]

Workloads (the files sit in the page cache: what is measured is the cost of
getting a request to the kernel and its answer back, not the disk):

- small reads: --files files of --size bytes, each opened, read whole and
  closed by a task of its own, all tasks started at once;
- large read: one --big-mib MiB file read in 1 MiB chunks;
- large write: the same amount written in 1 MiB chunks (no fsync).

aioring.open() runs on an aioring loop; aiofiles and to_thread run on the
stock loop (where people run them today) and on aioring's (the same thread
pool either way).  Each figure is the median of --repeat runs; wall clock
on shared VMs swings, so compare ratios taken in the same run.
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import aioring

try:
    import aiofiles
except ImportError:             # (pip install aiofiles)
    aiofiles = None

CHUNK = 1 << 20


def _read_whole(path):
    with open(path, "rb") as f:
        return f.read()


async def small_reads(opener, paths):
    async def one(path):
        async with opener(path, "rb") as f:
            return await f.read()
    return await asyncio.gather(*(one(p) for p in paths))


async def small_reads_to_thread(paths):
    return await asyncio.gather(*(asyncio.to_thread(_read_whole, p) for p in paths))


async def large_read(opener, path):
    total = 0
    async with opener(path, "rb") as f:
        while True:
            chunk = await f.read(CHUNK)
            if not chunk:
                return total
            total += len(chunk)


async def large_read_to_thread(path):
    # one thread hop per chunk, as a caller of to_thread(f.read) would make
    total = 0
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(f.read, CHUNK)
            if not chunk:
                return total
            total += len(chunk)
    finally:
        await asyncio.to_thread(f.close)


async def large_write(opener, path, blob, n):
    async with opener(path, "wb") as f:
        for _ in range(n):
            await f.write(blob)


async def large_write_to_thread(path, blob, n):
    f = await asyncio.to_thread(open, path, "wb")
    try:
        for _ in range(n):
            await asyncio.to_thread(f.write, blob)
    finally:
        await asyncio.to_thread(f.close)


def measure(loop_factory, coro_fn, repeat):
    times = []
    for _ in range(repeat):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            t0 = time.perf_counter()
            runner.run(coro_fn())
            times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--big-mib", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if aiofiles is None:
        sys.exit("benchmarks/files.py: aiofiles is not installed (pip install aiofiles)")

    stock, ring = asyncio.SelectorEventLoop, aioring.new_event_loop
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(args.files):
            p = os.path.join(d, f"small{i}")
            with open(p, "wb") as f:
                f.write(os.urandom(args.size))
            paths.append(p)
        big = os.path.join(d, "big")
        blob = os.urandom(CHUNK)
        with open(big, "wb") as f:
            for _ in range(args.big_mib):
                f.write(blob)
        out = os.path.join(d, "out")

        workloads = [
            (f"small reads ({args.files} x {args.size} B, concurrent)", args.files, "files/s", [
                ("aioring.open (aioring loop)", ring, lambda: small_reads(aioring.open, paths)),
                ("aiofiles (stock loop)", stock, lambda: small_reads(aiofiles.open, paths)),
                ("aiofiles (aioring loop)", ring, lambda: small_reads(aiofiles.open, paths)),
                ("to_thread (stock loop)", stock, lambda: small_reads_to_thread(paths)),
                ("to_thread (aioring loop)", ring, lambda: small_reads_to_thread(paths)),
            ]),
            (f"large read ({args.big_mib} MiB, 1 MiB chunks)", args.big_mib, "MiB/s", [
                ("aioring.open (aioring loop)", ring, lambda: large_read(aioring.open, big)),
                ("aiofiles (stock loop)", stock, lambda: large_read(aiofiles.open, big)),
                ("to_thread (stock loop)", stock, lambda: large_read_to_thread(big)),
            ]),
            (f"large write ({args.big_mib} MiB, 1 MiB chunks)", args.big_mib, "MiB/s", [
                ("aioring.open (aioring loop)", ring,
                 lambda: large_write(aioring.open, out, blob, args.big_mib)),
                ("aiofiles (stock loop)", stock,
                 lambda: large_write(aiofiles.open, out, blob, args.big_mib)),
                ("to_thread (stock loop)", stock,
                 lambda: large_write_to_thread(out, blob, args.big_mib)),
            ]),
        ]
        for title, units, unit_name, variants in workloads:
            print(f"{title}: median of {args.repeat} [min-max], ratio to aiofiles (stock loop)")
            rates = {}
            for name, factory, fn in variants:
                times = measure(factory, fn, args.repeat)
                rates[name] = [units / t for t in times]
            base = statistics.median(rates["aiofiles (stock loop)"])
            for name, rs in rates.items():
                med = statistics.median(rs)
                print(f"  {name:30} {med:12,.0f} {unit_name} [{min(rs):,.0f}-{max(rs):,.0f}]"
                      f"  x{med / base:.2f}")


if __name__ == "__main__":
    main()
