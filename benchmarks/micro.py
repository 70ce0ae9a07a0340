"""Loop microbenchmarks: stock asyncio, uvloop (when installed) and aioring,
run side by side in one process, reported as operations per second and as
ratios against uvloop.

    python benchmarks/micro.py [--n 200000] [--repeat 5]

Each figure is the median of --repeat runs (min and max shown).  Wall-clock
figures on shared VMs swing; compare ratios taken in the same run.
"""
import argparse
import asyncio
import statistics
import sys
import threading
import time


def loop_factories():
    import aioring
    factories = {"asyncio": asyncio.SelectorEventLoop}
    try:
        import uvloop
        factories["uvloop"] = uvloop.new_event_loop
    except ImportError:
        pass
    factories["aioring"] = aioring.new_event_loop
    return factories


def counting_callback(loop, n):
    """A callback, and a future that completes on its n-th call."""
    done = loop.create_future()
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    return cb, done


def bench_call_soon(loop, n):
    cb, done = counting_callback(loop, n)
    t0 = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    loop.run_until_complete(done)
    return time.perf_counter() - t0


def bench_call_later(loop, n):
    cb, done = counting_callback(loop, n)

    t0 = time.perf_counter()
    for i in range(n):
        loop.call_later(0.001 * (i % 10), cb)
    loop.run_until_complete(done)
    return time.perf_counter() - t0


def bench_future_round_trip(loop, n):
    async def main():
        for _ in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    return time.perf_counter() - t0


def bench_threadsafe(loop, n):
    cb, done = counting_callback(loop, n)

    def producer():
        for _ in range(n):
            loop.call_soon_threadsafe(cb)

    t0 = time.perf_counter()
    th = threading.Thread(target=producer)
    th.start()
    loop.run_until_complete(done)
    th.join()
    return time.perf_counter() - t0


BENCHES = {
    "call_soon": bench_call_soon,
    "call_later": bench_call_later,
    "future round trip": bench_future_round_trip,
    "call_soon_threadsafe": bench_threadsafe,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    factories = loop_factories()
    results = {}
    for bench_name, bench in BENCHES.items():
        times = {name: [] for name in factories}
        for _ in range(args.repeat):
            # alternate the order of the loops between rounds
            for name, factory in factories.items():
                loop = factory()
                try:
                    times[name].append(bench(loop, args.n))
                finally:
                    loop.close()
        results[bench_name] = times
    print(f"Python {sys.version.split()[0]}, n={args.n}, median of {args.repeat}")
    header = f"{'benchmark':22}" + "".join(f"{name:>22}" for name in factories)
    print(header)
    for bench_name, times in results.items():
        row = f"{bench_name:22}"
        ref = statistics.median(times["uvloop"]) if "uvloop" in times else None
        for name in factories:
            med = statistics.median(times[name])
            rate = args.n / med
            ratio = f" ({ref / med:.2f}x)" if ref else ""
            row += f"{rate / 1e3:>13.0f}k/s{ratio:>7}"
        print(row)
    if "uvloop" in factories:
        print("(ratio = speed relative to uvloop; higher is faster)")


if __name__ == "__main__":
    main()
