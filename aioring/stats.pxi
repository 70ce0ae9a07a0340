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
# the benchmarks' feature table measures what it costs.  Where the counter
# cannot be trusted the loop reads CLOCK_MONOTONIC instead
# (AIORING_CALLBACK_CLOCK=monotonic makes it do so anywhere).

cdef extern from *:
    """
    #include <time.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <x86intrin.h>
    #define AIORING_HAS_COUNTER 1
    #elif defined(__aarch64__)
    #define AIORING_HAS_COUNTER 1
    #else
    #define AIORING_HAS_COUNTER 0
    #endif

    /* What a loop times its callbacks with (its callback_clock field). */
    enum { AIORING_CLOCK_OFF = 0, AIORING_CLOCK_COUNTER = 1, AIORING_CLOCK_MONOTONIC = 2 };

    static inline uint64_t aioring_monotonic_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }

    /* The CPU's tick counter: one instruction. */
    static inline uint64_t aioring_counter(void) {
    #if defined(__x86_64__) || defined(__i386__)
        return __rdtsc();
    #elif defined(__aarch64__)
        uint64_t v;
        __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
        return v;
    #else
        return aioring_monotonic_ns();
    #endif
    }

    /* Ticks of the given clock; 0 when it is off.  One test on the path
       the loop takes per callback. */
    static inline uint64_t aioring_callback_ticks(int clock) {
        if (__builtin_expect(clock == AIORING_CLOCK_COUNTER, 1))
            return aioring_counter();
        return clock ? aioring_monotonic_ns() : 0;
    }

    /* The counter's frequency when the CPU states it, else 0 (measured). */
    static inline uint64_t aioring_counter_hz(void) {
    #if defined(__aarch64__)
        uint64_t f;
        __asm__ __volatile__("mrs %0, cntfrq_el0" : "=r"(f));
        return f;
    #else
        return 0;
    #endif
    }
    """
    enum:
        AIORING_HAS_COUNTER
        CLOCK_OFF "AIORING_CLOCK_OFF"
        CLOCK_COUNTER "AIORING_CLOCK_COUNTER"
        CLOCK_MONOTONIC_NS "AIORING_CLOCK_MONOTONIC"
    uint64_t callback_ticks "aioring_callback_ticks"(int clock) nogil
    uint64_t _counter "aioring_counter"() nogil
    uint64_t _counter_hz "aioring_counter_hz"() nogil
    uint64_t _monotonic_ns "aioring_monotonic_ns"() nogil


def _kernel_keeps_time_by_tsc():
    try:
        with open('/sys/devices/system/clocksource/clocksource0/current_clocksource') as f:
            return f.read().strip() == 'tsc'
    except OSError:
        return False


# The clock loops time callbacks with: the CPU's counter where it is
# constant and in step across CPUs (AArch64's always; x86's TSC when the
# kernel keeps time by it, which it does only then), else CLOCK_MONOTONIC.
cdef int _CALLBACK_CLOCK = CLOCK_MONOTONIC_NS
if AIORING_HAS_COUNTER and (os.uname().machine == 'aarch64' or _kernel_keeps_time_by_tsc()):
    _CALLBACK_CLOCK = CLOCK_COUNTER


cdef int _callback_clock():
    # a new loop's clock: AIORING_CALLBACK_CLOCK=0 switches the timing off,
    # =monotonic takes the clock of machines without a usable counter (tests)
    value = os.environ.get('AIORING_CALLBACK_CLOCK', '1')
    if value == '0':
        return CLOCK_OFF
    if value == 'monotonic':
        return CLOCK_MONOTONIC_NS
    return _CALLBACK_CLOCK


# The counter's rate is measured against CLOCK_MONOTONIC from this point on:
# by the time a callback is found slow, at least that callback's duration
# has passed since, which makes the estimate as exact as the threshold needs.
cdef uint64_t _base_ticks = _counter()
cdef uint64_t _base_ns = _monotonic_ns()

# No counter runs slower than this (in ticks per second): a threshold
# converted with it is a floor, below which no callback can be slow.
cdef double _TICKS_HZ_FLOOR = 1e8


cdef double _known_hz(int clock) noexcept:
    # ticks per second of a clock when known without measuring, else 0
    if clock == CLOCK_COUNTER:
        return <double>_counter_hz()
    return 1e9


cdef double _ticks_hz(int clock) noexcept:
    cdef double known = _known_hz(clock)
    cdef uint64_t ticks, ns
    if known:
        return known
    ticks = _counter()
    ns = _monotonic_ns()
    if ns <= _base_ns:
        return _TICKS_HZ_FLOOR
    return <double>(ticks - _base_ticks) * 1e9 / <double>(ns - _base_ns)


cdef uint64_t _slow_ticks_floor(int clock, double duration) noexcept:
    # a callback that took fewer ticks than this is not slow (and one that
    # took more is checked in seconds by _count_if_slow)
    cdef double hz = _known_hz(clock) or _TICKS_HZ_FLOOR
    cdef double ticks
    if clock == CLOCK_OFF:
        return ~(<uint64_t>0)   # (the ticks are all 0: never a candidate)
    if not (duration > 0):
        return 0            # negative: every callback is slow; NaN: none (checked in seconds)
    ticks = duration * hz
    if ticks >= 1.8e19:
        return ~(<uint64_t>0)   # (beyond uint64_t: never a candidate)
    return <uint64_t>ticks


cdef void _count_if_slow(BaseLoop loop, uint64_t ticks) noexcept:
    # a callback that took at least the floor: slow if its duration in
    # seconds reaches slow_callback_duration (as asyncio's debug mode checks)
    if <double>ticks / _ticks_hz(loop.callback_clock) >= loop.slow_duration:
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
