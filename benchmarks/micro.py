"""Loop microbenchmarks: stock asyncio, uvloop and rloop (when installed)
and aioring, run side by side in one process, reported as operations per
second and as ratios against uvloop.

    python benchmarks/micro.py [--n 200000] [--repeat 5]
    python benchmarks/micro.py --loop aioring --json     # one loop, for run.py

Each figure is the median of --repeat runs.  Wall-clock figures on shared
VMs swing; compare ratios taken in the same run.  benchmarks/run.py runs
each loop in a process of its own (--loop) and reports min and max too.
"""
import argparse
import asyncio
import functools
import json
import socket
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
    try:
        import rloop
        factories["rloop"] = rloop.new_event_loop
    except ImportError:
        pass
    factories["aioring"] = aioring.new_event_loop
    factories["aioring (no fixed files)"] = functools.partial(aioring.Loop, fixed_files=False)
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


def bench_sock_round_trip(loop, n):
    """n/10 round trips of 64 bytes over a socketpair with the loop's sock_*
    methods: sendall a->b, recv on b, sendall b->a, recv on a.  Scaled so that
    the figure stays in operations (round trips) per second of n."""
    rounds = max(1, n // 10)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = b"x" * 64

    async def main():
        for _ in range(rounds):
            await loop.sock_sendall(a, payload)
            await loop.sock_recv(b, 64)
            await loop.sock_sendall(b, payload)
            await loop.sock_recv(a, 64)

    try:
        t0 = time.perf_counter()
        loop.run_until_complete(main())
        return (time.perf_counter() - t0) * n / rounds
    finally:
        a.close()
        b.close()


BENCHES = {
    "call_soon": bench_call_soon,
    "call_later": bench_call_later,
    "future round trip": bench_future_round_trip,
    "call_soon_threadsafe": bench_threadsafe,
    "sock_recv/sock_sendall round trip": bench_sock_round_trip,
}


def run_one_loop(factory, n, repeat):
    """{bench: [ops/s per round] or None where the loop lacks what it needs}"""
    rates = {}
    for bench_name, bench in BENCHES.items():
        rates[bench_name] = []
        for _ in range(repeat):
            loop = factory()
            try:
                rates[bench_name].append(n / bench(loop, n))
            except NotImplementedError:
                rates[bench_name] = None
                break
            finally:
                loop.close()
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--loop", help="run only this loop (a name of loop_factories())")
    ap.add_argument("--json", action="store_true", help="print {bench: [ops/s...]}")
    args = ap.parse_args()
    factories = loop_factories()
    if args.loop:
        rates = run_one_loop(factories[args.loop], args.n, args.repeat)
        print(json.dumps(rates) if args.json else rates)
        return
    results = {}
    for bench_name, bench in BENCHES.items():
        times = {name: [] for name in factories}
        for _ in range(args.repeat):
            # alternate the order of the loops between rounds
            for name, factory in factories.items():
                loop = factory()
                try:
                    times[name].append(bench(loop, args.n))
                except NotImplementedError:
                    times[name].append(float("nan"))
                finally:
                    loop.close()
        results[bench_name] = times
    print(f"Python {sys.version.split()[0]}, n={args.n}, median of {args.repeat}")
    header = f"{'benchmark':34}" + "".join(f"{name:>26}" for name in factories)
    print(header)
    for bench_name, times in results.items():
        row = f"{bench_name:34}"
        ref = statistics.median(times["uvloop"]) if "uvloop" in times else None
        for name in factories:
            med = statistics.median(times[name])
            rate = args.n / med
            ratio = f" ({ref / med:.2f}x)" if ref else ""
            row += f"{rate / 1e3:>17.0f}k/s{ratio:>7}"
        print(row)
    if "uvloop" in factories:
        print("(ratio = speed relative to uvloop; higher is faster)")


if __name__ == "__main__":
    main()
