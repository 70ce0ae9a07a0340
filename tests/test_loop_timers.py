"""call_later / call_at and the loop's clock, on the stock loop and on aioring."""
import asyncio
import gc
import random
import time
import weakref

import pytest

from _loop_helpers import on_stock, run_briefly


def noop(*args):
    pass


def run_for(loop, seconds):
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


# -- the clock ------------------------------------------------------------------


def test_time_is_monotonic_and_comparable(any_loop):
    loop = any_loop
    values = [loop.time() for _ in range(10_000)]
    assert values == sorted(values)
    assert isinstance(values[0], float)
    assert abs(loop.time() - time.monotonic()) < 0.01
    t0 = loop.time()
    time.sleep(0.02)
    assert 0.02 <= loop.time() - t0 < 1


# -- order ------------------------------------------------------------------


def test_timers_fire_in_order_of_time(any_loop):
    loop = any_loop
    seen = []
    for d in (0.03, 0.01, 0.04, 0.0, 0.02):
        loop.call_later(d, seen.append, d)
    run_for(loop, 0.08)
    assert seen == [0.0, 0.01, 0.02, 0.03, 0.04]


def test_equal_delays_fire_in_order_of_when(any_loop):
    loop = any_loop
    fired = []
    handles = [loop.call_later(0.01, lambda i=i: fired.append(i))
               for i in range(200)]
    whens = [h.when() for h in handles]
    run_for(loop, 0.05)
    assert sorted(fired) == list(range(200))
    fired_whens = [whens[i] for i in fired]
    assert fired_whens == sorted(fired_whens)
    # asyncio only orders by `when`; scheduled one after the other the
    # `when`s differ, and then the order is the scheduling order
    if len(set(whens)) == len(whens):
        assert fired == list(range(200))


def test_call_at_same_when_all_fire(any_loop):
    # asyncio leaves the order of equal `when`s undefined: only check that
    # every one fires, in the same iteration.
    loop = any_loop
    fired = []
    when = loop.time() + 0.01
    for i in range(50):
        loop.call_at(when, fired.append, i)
    loop.call_at(when + 0.02, loop.stop)
    loop.run_forever()
    assert sorted(fired) == list(range(50))


def test_timer_vs_ready_ordering_matches_stock(any_loop):
    def scenario(loop):
        trace = []
        loop.call_later(-1, trace.append, "neg")
        loop.call_soon(trace.append, "soon1")
        loop.call_at(loop.time(), trace.append, "now")
        loop.call_later(0, trace.append, "zero")
        loop.call_soon(trace.append, "soon2")
        loop.call_later(-10, trace.append, "neg10")
        run_briefly(loop)
        return trace
    got = scenario(any_loop)
    assert got == on_stock(scenario)
    assert got == ["soon1", "soon2", "neg10", "neg", "now", "zero"]


def test_negative_delay_runs_in_next_iteration(any_loop):
    loop = any_loop
    seen = []
    h = loop.call_later(-5, seen.append, "x")
    assert h.when() < loop.time()
    run_briefly(loop)
    assert seen == ["x"]


# -- when(), cancel -------------------------------------------------------------


def test_when(any_loop):
    loop = any_loop
    before = loop.time()
    h = loop.call_later(10, noop)
    after = loop.time()
    assert before + 10 <= h.when() <= after + 10
    when = loop.time() + 5.5
    t = loop.call_at(when, noop)
    assert t.when() == when
    assert t < h and h > t and t <= h and not (t == h)
    assert hash(t) == hash(when)
    h.cancel()
    t.cancel()
    assert t.when() == when             # still there after cancel


def test_call_at_keeps_the_when_it_was_given(any_loop):
    # asyncio stores `when` as given: an int stays an int (and shows so in
    # the repr).
    loop = any_loop
    h = loop.call_at(10**6, noop)
    try:
        assert h.when() == 10**6
        assert type(h.when()) is int
        assert "when=1000000 " in repr(h)
    finally:
        h.cancel()


def test_cancel_timer(any_loop):
    loop = any_loop
    seen = []
    h1 = loop.call_later(0.01, seen.append, 1)
    h2 = loop.call_later(0.01, seen.append, 2)
    h3 = loop.call_later(0.02, seen.append, 3)
    h2.cancel()
    assert h2.cancelled() and not h1.cancelled()
    run_for(loop, 0.04)
    assert seen == [1, 3]
    h1.cancel()                   # after it fired: harmless
    assert h1.cancelled()
    assert not h3.cancelled()


def test_timer_cancelled_by_earlier_timer(any_loop):
    loop = any_loop
    seen = []
    hs = []
    loop.call_later(0.01, lambda: hs[0].cancel())
    hs.append(loop.call_later(0.01, seen.append, "cancelled"))
    loop.call_later(0.01, seen.append, "kept")
    run_for(loop, 0.03)
    assert seen == ["kept"]


def test_none_delay_and_when(any_loop):
    loop = any_loop
    with pytest.raises(TypeError, match="delay must not be None"):
        loop.call_later(None, noop)
    with pytest.raises(TypeError, match="when cannot be None"):
        loop.call_at(None, noop)


def test_bad_delay_type(any_loop):
    with pytest.raises(TypeError):
        any_loop.call_later("1", noop)


def test_huge_and_infinite_delays(any_loop):
    loop = any_loop
    seen = []
    far = loop.call_later(1e9, seen.append, "far")
    inf = loop.call_later(float("inf"), seen.append, "inf")
    loop.call_later(0.01, seen.append, "near")
    t0 = time.monotonic()
    run_for(loop, 0.03)
    assert time.monotonic() - t0 < 1
    assert seen == ["near"]
    assert inf.when() == float("inf")
    far.cancel()
    inf.cancel()


# -- precision ------------------------------------------------------------------


def test_timer_does_not_fire_early(any_loop):
    loop = any_loop
    rec = []
    start_wall = time.monotonic()
    h = loop.call_later(0.05, lambda: rec.append((loop.time(), time.monotonic())))
    loop.call_later(0.1, loop.stop)
    loop.run_forever()
    (now, wall), = rec
    assert now >= h.when()
    assert wall - start_wall >= 0.05
    assert now - h.when() < 0.04            # and not very late either


def test_many_short_timers_not_early(any_loop):
    loop = any_loop
    late = []

    def check(h):
        late.append(loop.time() - h[0].when())

    for d in (0.001, 0.002, 0.005, 0.0101, 0.013):
        box = []
        box.append(loop.call_later(d, check, box))
    run_for(loop, 0.03)
    assert len(late) == 5
    assert min(late) >= 0


# -- volume -------------------------------------------------------------------


def test_100k_random_timers_fire_in_order_of_when(any_loop):
    loop = any_loop
    rnd = random.Random(1234)
    n = 100_000
    fired = []
    early = []

    def cb(i):
        fired.append(i)
        if loop.time() < whens[i]:
            early.append(i)

    whens = [0.0] * n
    for i in range(n):
        whens[i] = loop.call_later(rnd.uniform(0, 0.2), cb, i).when()
    done = loop.create_future()
    loop.call_at(max(whens) + 0.001, done.set_result, None)
    t0 = time.monotonic()
    loop.run_until_complete(done)
    assert time.monotonic() - t0 < 10
    assert len(fired) == n
    fired_whens = [whens[i] for i in fired]
    assert fired_whens == sorted(fired_whens)
    assert early == []


def test_cancelling_many_timers_purges_them(any_loop):
    # asyncio drops cancelled timers from its heap once there are more than
    # 100 timers and more than half of them are cancelled: the handles are
    # then freed without waiting for their time.
    loop = any_loop
    seen = []
    n = 1000
    handles = [loop.call_later(3600 + i, seen.append, i) for i in range(n)]
    refs = [weakref.ref(h) for h in handles]
    for i in range(0, n, 10):               # keep every 10th
        for h in handles[i + 1:i + 10]:
            h.cancel()
    keep = handles[::10]
    del handles, h
    run_briefly(loop)
    gc.collect()
    alive = [i for i, r in enumerate(refs) if r() is not None]
    assert alive == list(range(0, n, 10))
    # the survivors still fire, in order: move them close
    for h in keep:
        h.cancel()
    seen.clear()
    rnd = random.Random(5)
    fired_whens = []
    hs = []
    for i in range(1000):
        h = loop.call_later(rnd.uniform(0, 0.02), lambda i=i: fired_whens.append(hs[i].when()))
        hs.append(h)
    for h in hs[::3]:
        h.cancel()
    run_for(loop, 0.05)
    assert len(fired_whens) == 1000 - len(hs[::3])
    assert fired_whens == sorted(fired_whens)
    assert seen == []


def test_cancelled_head_timers_are_dropped(any_loop):
    # below the purge threshold asyncio pops cancelled timers off the head
    loop = any_loop
    first = [loop.call_later(3600, noop) for _ in range(10)]
    rest = [loop.call_later(7200, noop) for _ in range(10)]
    ref = weakref.ref(first[0])
    for h in first:
        h.cancel()
    del first, h
    run_briefly(loop)
    gc.collect()
    assert ref() is None
    for h in rest:
        h.cancel()


async def test_sleep_durations():
    loop = asyncio.get_running_loop()
    for d in (0, 0.001, 0.01, 0.03):
        t0 = loop.time()
        await asyncio.sleep(d)
        assert loop.time() - t0 >= d
    t0 = loop.time()
    await asyncio.gather(*(asyncio.sleep(0.02) for _ in range(100)))
    assert 0.02 <= loop.time() - t0 < 1
