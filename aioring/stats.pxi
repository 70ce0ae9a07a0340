# loop.stats(): what the loop has done underneath, as counters a program can
# log or export (docs/stats.md).
#
# Every counter is an increment the loop makes where the event happens (the
# ring counts its enters and submissions, the fixed-file table its slots,
# the buffer pool its buffers and ENOBUFS).  The one that needs a clock is
# slow_callbacks: each callback the loop runs -- a handle from the ready
# queue, or a completion, which runs protocol callbacks such as
# data_received() -- is timed, as asyncio's debug mode times handles, but
# always on.  Reading CLOCK_MONOTONIC around every callback would cost more
# than the loop spends on some of them, so the loop reads a tick counter
# instead (x86's TSC, AArch64's virtual counter: one instruction) and turns
# ticks into seconds only for a callback that may be slow.
#
# AIORING_CALLBACK_CLOCK=0 switches the timing off (slow_callbacks stays 0):
# the benchmarks' feature table measures what it costs.

cdef extern from *:
    """
    #include <time.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <x86intrin.h>
    #endif

    /* 1: ticks are the TSC (x86 with a TSC the kernel keeps time by, so
       constant and in step across CPUs); 0: nanoseconds of CLOCK_MONOTONIC.
       Set once at import. */
    static int aioring_ticks_are_tsc = 0;

    static inline uint64_t aioring_monotonic_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }

    static inline uint64_t aioring_ticks(void) {
    #if defined(__aarch64__)
        uint64_t v;
        __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
        return v;
    #else
    #if defined(__x86_64__) || defined(__i386__)
        if (aioring_ticks_are_tsc)
            return __rdtsc();
    #endif
        return aioring_monotonic_ns();
    #endif
    }

    /* The counter's frequency when it is known without measuring, else 0. */
    static inline uint64_t aioring_ticks_known_hz(void) {
    #if defined(__aarch64__)
        uint64_t f;
        __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(f));
        return f;
    #else
        return aioring_ticks_are_tsc ? 0 : 1000000000u;
    #endif
    }
    """
    int aioring_ticks_are_tsc
    uint64_t callback_ticks "aioring_ticks"() nogil
    uint64_t _ticks_known_hz "aioring_ticks_known_hz"() nogil
    uint64_t _monotonic_ns "aioring_monotonic_ns"() nogil


def _kernel_keeps_time_by_tsc():
    try:
        with open('/sys/devices/system/clocksource/clocksource0/current_clocksource') as f:
            return f.read().strip() == 'tsc'
    except OSError:
        return False


aioring_ticks_are_tsc = _kernel_keeps_time_by_tsc()

# The TSC's rate is measured against CLOCK_MONOTONIC from this point on:
# by the time a callback is found slow, at least that callback's duration
# has passed since, which makes the estimate as exact as the threshold needs.
cdef uint64_t _base_ticks = callback_ticks()
cdef uint64_t _base_ns = _monotonic_ns()

# No TSC runs slower than this (in ticks per second): a threshold converted
# with it is a floor, below which no callback can be slow.
cdef double _TICKS_HZ_FLOOR = 1e8


cdef double _ticks_hz() noexcept:
    cdef uint64_t known = _ticks_known_hz()
    cdef uint64_t ticks, ns
    if known:
        return <double>known
    ticks = callback_ticks()
    ns = _monotonic_ns()
    if ns <= _base_ns:
        return _TICKS_HZ_FLOOR
    return <double>(ticks - _base_ticks) * 1e9 / <double>(ns - _base_ns)


cdef uint64_t _slow_ticks_floor(double duration) noexcept:
    # a callback that took fewer ticks than this is not slow (and one that
    # took more is checked in seconds by _count_if_slow)
    cdef double hz = <double>_ticks_known_hz() or _TICKS_HZ_FLOOR
    cdef double ticks
    if not (duration > 0):
        return 0            # negative: every callback is slow; NaN: none (checked in seconds)
    ticks = duration * hz
    if ticks >= 1.8e19:
        return ~(<uint64_t>0)   # (beyond uint64_t: never a candidate)
    return <uint64_t>ticks


cdef void _count_if_slow(BaseLoop loop, uint64_t ticks) noexcept:
    # a callback that took at least the floor: slow if its duration in
    # seconds reaches slow_callback_duration (as asyncio's debug mode checks)
    if <double>ticks / _ticks_hz() >= loop.slow_duration:
        loop.slow_callbacks += 1


def _loop_stats(BaseLoop self):
    """Counters of what the loop has done since it was created: a new dict
    of ints at each call (docs/stats.md)."""
    cdef ar_ring *ring = &self.ring
    free_slots = self.files.size - self.files.in_use if self.files.enabled else 0
    return {
        'iterations': self.iteration,
        'enter_calls': ring.n_enter,
        'submissions': ring.n_submitted,
        'completions': self.completions,
        'in_flight': self.inflight,
        'cq_overflows': self.cq_overflows,
        'wakeups': self.wakeup_writes,
        'fixed_files_in_use': self.files.in_use,
        'fixed_files_free': free_slots,
        'fd_fallbacks': self.files.fallbacks,
        'recv_buffers_provided': self.recv_buffers.provided(),
        'recv_buffers_used': self.recv_buffers.used,
        'recv_enobufs': self.recv_buffers.enobufs,
        'slow_callbacks': self.slow_callbacks,
        'file_requests': self.file_requests,
    }
