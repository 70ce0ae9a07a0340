"""aioring's own guarantees about how it waits (no stock-loop counterpart):
every wait is an io_uring_enter on the loop's ring, the cross-thread wake-up
eventfd is written only while the loop may be asleep, and the loop core never
sends work to io-wq worker threads."""
import asyncio
import threading
import time

import aioring
from _loop_helpers import iou_worker_tids


def test_busy_loop_never_writes_the_wakeup_eventfd():
    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        count = 0

        def cb():
            nonlocal count
            count += 1
            if count == 10_000:
                done.set_result(None)
            else:
                loop.call_soon_threadsafe(cb)    # from the loop's own thread

        loop.call_soon_threadsafe(cb)
        await done
        return loop._ring_info()['wakeups']

    assert aioring.run(main()) == 0


def test_sleeping_loop_is_woken_with_few_writes():
    async def main():
        loop = asyncio.get_running_loop()
        got = []
        woke = loop.create_future()

        def producer():
            time.sleep(0.1)                       # the loop is asleep by now
            for i in range(100):
                loop.call_soon_threadsafe(got.append, i)
            loop.call_soon_threadsafe(woke.set_result, time.monotonic())

        before = loop._ring_info()['wakeups']
        th = threading.Thread(target=producer)
        th.start()
        t_woke = await asyncio.wait_for(woke, 5)   # nothing else would wake it
        th.join()
        writes = loop._ring_info()['wakeups'] - before
        return got, writes, time.monotonic() - t_woke

    got, writes, lag = aioring.run(main())
    assert got == list(range(100))
    # at least one write woke the loop; far fewer than one per call
    assert 1 <= writes <= 10
    assert lag < 1.0


def test_waits_go_through_the_ring_and_no_io_wq_thread_appears():
    async def main():
        loop = asyncio.get_running_loop()
        before = loop._ring_info()['enter_calls']
        t0 = time.monotonic()
        await asyncio.sleep(0.05)
        slept = time.monotonic() - t0
        for _ in range(20):
            await loop.run_in_executor(None, time.sleep, 0.001)
        info = loop._ring_info()
        return info, info['enter_calls'] - before, slept, iou_worker_tids()

    info, enters, slept, workers = aioring.run(main())
    assert info['enabled'] and info['fd'] >= 0
    assert enters >= 1
    assert slept >= 0.05
    assert workers == set()
