# The C allocator's heap, kept from shrinking and growing on every burst.
#
# A completion-based transport holds each written bytes object until the
# kernel reports it sent, so a busy server frees its large writes in bursts,
# at the start of an iteration.  With glibc's defaults, free() then finds
# more than 128 KiB unused at the top of the heap and hands it back with
# brk(), and the next iteration's allocations take it back, page by page,
# each page faulted in and zeroed by the kernel.  Measured on the buffered
# echo at 64 KiB x 10 connections: 3,400 brk calls a second, and half the
# requests per second of uvloop (whose writes are sent, and freed, inside
# write()).
#
# So, once per process, the heap may keep up to TRIM_THRESHOLD unused at its
# top, and blocks up to MMAP_THRESHOLD come from the heap rather than from
# mmaps of their own: what glibc's own dynamic thresholds settle on after
# a program has freed one block of that size.  A program that configured
# malloc itself (MALLOC_*_ variables, glibc.malloc tunables) is left alone,
# and AIORING_MALLOC_TUNING=0 leaves glibc's defaults in place.

cdef extern from *:
    """
    #ifdef __GLIBC__
    #include <malloc.h>
    static int aioring_tune_malloc(int trim, int mmap_threshold) {
        return mallopt(M_TRIM_THRESHOLD, trim) && mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    }
    #else
    static int aioring_tune_malloc(int trim, int mmap_threshold) { return 0; }
    #endif
    """
    int aioring_tune_malloc(int trim, int mmap_threshold) nogil

cdef int TRIM_THRESHOLD = 16 * 1024 * 1024
cdef int MMAP_THRESHOLD = 1024 * 1024
cdef bint malloc_tuned = False


cdef bint _user_configured_malloc():
    if not _feature_on('AIORING_MALLOC_TUNING'):
        return True
    env = os.environ
    if 'glibc.malloc.' in env.get('GLIBC_TUNABLES', ''):
        return True
    return any(name.startswith('MALLOC_') and name.endswith('_') for name in env)


cdef void tune_malloc_once() noexcept:
    global malloc_tuned
    if malloc_tuned:
        return
    malloc_tuned = True
    try:
        if _user_configured_malloc():
            return
    except BaseException:
        return
    aioring_tune_malloc(TRIM_THRESHOLD, MMAP_THRESHOLD)
