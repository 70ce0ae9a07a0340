/*
 * aioring ring layer: setup, teardown, io_uring_enter and io_uring_register.
 * See uring.h for what this layer is and is not.
 */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile unsigned ar_fork_generation;

static void fork_child(void)
{
    ar_fork_generation++;
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    long ret = syscall(__NR_io_uring_setup, entries, p);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete,
                     unsigned flags, void *arg, size_t argsz)
{
    long ret = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
    return ret < 0 ? -errno : (int)ret;
}

static int sys_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
{
    long ret = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return ret < 0 ? -errno : (int)ret;
}

static int map_rings(ar_ring *r, const struct io_uring_params *p)
{
    size_t sq_size = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    size_t cq_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    void *sq, *cq, *sqes;

    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        if (cq_size > sq_size)
            sq_size = cq_size;
        cq_size = sq_size;
    }
    sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
              r->ring_fd, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        return -errno;
    if (p->features & IORING_FEAT_SINGLE_MMAP) {
        cq = sq;
    } else {
        cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                  r->ring_fd, IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED) {
            int err = -errno;
            munmap(sq, sq_size);
            return err;
        }
    }
    r->sqes_map_size = p->sq_entries * sizeof(struct io_uring_sqe);
    sqes = mmap(NULL, r->sqes_map_size, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, r->ring_fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
        int err = -errno;
        if (cq != sq)
            munmap(cq, cq_size);
        munmap(sq, sq_size);
        return err;
    }

    r->sq_map = sq;
    r->sq_map_size = sq_size;
    r->cq_map = cq;
    r->cq_map_size = cq_size;
    r->sqes = sqes;

    r->sq_khead = (unsigned *)((char *)sq + p->sq_off.head);
    r->sq_ktail = (unsigned *)((char *)sq + p->sq_off.tail);
    r->sq_kflags = (unsigned *)((char *)sq + p->sq_off.flags);
    r->sq_kdropped = (unsigned *)((char *)sq + p->sq_off.dropped);
    r->sq_mask = *(unsigned *)((char *)sq + p->sq_off.ring_mask);
    r->sq_entries = p->sq_entries;
    r->sq_array = NULL;
    if (!(r->setup_flags & IORING_SETUP_NO_SQARRAY)) {
        /* SQE i always sits in slot i: fill the indirection array once. */
        unsigned i;
        r->sq_array = (unsigned *)((char *)sq + p->sq_off.array);
        for (i = 0; i < r->sq_entries; i++)
            r->sq_array[i] = i;
    }
    r->sqe_tail = *r->sq_ktail;

    r->cq_khead = (unsigned *)((char *)cq + p->cq_off.head);
    r->cq_ktail = (unsigned *)((char *)cq + p->cq_off.tail);
    r->cq_koverflow = (unsigned *)((char *)cq + p->cq_off.overflow);
    r->cq_mask = *(unsigned *)((char *)cq + p->cq_off.ring_mask);
    r->cq_entries = p->cq_entries;
    r->cqes = (struct io_uring_cqe *)((char *)cq + p->cq_off.cqes);
    return 0;
}

int ar_ring_init(ar_ring *r, unsigned entries, unsigned cq_entries, unsigned want)
{
    /* Flag sets to try, best first.  A kernel that does not know a flag
     * answers EINVAL, and we fall back to the next set: the decision is made
     * by the kernel we run on, never by a version string. */
    const unsigned defer = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                           IORING_SETUP_TASKRUN_FLAG;
    const unsigned coop = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    unsigned base = IORING_SETUP_SUBMIT_ALL | (cq_entries ? IORING_SETUP_CQSIZE : 0) |
                    ((want & AR_WANT_DISABLED) ? IORING_SETUP_R_DISABLED : 0);
    unsigned attempts[8];
    int n = 0, i, fd = -EINVAL, err;

    if (want & AR_WANT_DEFER_TASKRUN) {
        if (want & AR_WANT_NO_SQARRAY)
            attempts[n++] = base | defer | IORING_SETUP_NO_SQARRAY;
        attempts[n++] = base | defer;
    }
    attempts[n++] = base | coop;
    attempts[n++] = base;
    attempts[n++] = base & ~IORING_SETUP_SUBMIT_ALL;
    attempts[n++] = base & ~(IORING_SETUP_SUBMIT_ALL | IORING_SETUP_R_DISABLED);
    attempts[n++] = 0;

    static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

    pthread_once(&fork_handler_once, register_fork_handler);
    memset(r, 0, sizeof(*r));
    r->ring_fd = -1;
    r->fork_gen = ar_fork_generation;
    /* A size the kernel refuses answers EINVAL to every flag set, and the
     * last sets (no CQSIZE) would then "succeed" with a ring of other sizes
     * and no features: refuse it here instead. */
    if (!ar_ring_sizes_valid(entries, cq_entries))
        return -EINVAL;
    for (i = 0; i < n; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = attempts[i];
        if (p.flags & IORING_SETUP_CQSIZE)
            p.cq_entries = cq_entries;
        fd = sys_setup(entries, &p);
        if (fd == -EINVAL)
            continue;
        if (fd < 0)
            return fd;       /* EPERM, ENOSYS, ENOMEM...: the caller names it */
        r->ring_fd = fd;
        r->enter_fd = fd;
        r->setup_flags = p.flags;
        r->features = p.features;
        r->enabled = !(p.flags & IORING_SETUP_R_DISABLED);
        err = map_rings(r, &p);
        if (err < 0) {
            close(fd);
            r->ring_fd = -1;
            return err;
        }
        return 0;
    }
    return fd;
}

void ar_ring_exit(ar_ring *r)
{
    if (r->ring_fd < 0)
        return;
    /* A forked child only lets go of its own mappings and descriptor: the
     * registered ring descriptor is the parent's thread's. */
    if (!ar_ring_forked(r))
        ar_ring_release_ring_fd(r);
    munmap(r->sqes, r->sqes_map_size);
    if (r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_size);
    munmap(r->sq_map, r->sq_map_size);
    /* Closing the descriptor cancels whatever is still in flight; the kernel
     * frees its side once the last request has gone. */
    close(r->ring_fd);
    r->ring_fd = -1;
    r->enter_fd = -1;
}

int ar_ring_enable(ar_ring *r)
{
    int ret;
    if (r->enabled)
        return 0;
    if (ar_ring_forked(r))
        return -EBADFD;
    ret = sys_register(r->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (ret == 0)
        r->enabled = 1;
    return ret;
}

int ar_ring_register_ring_fd(ar_ring *r)
{
    struct io_uring_rsrc_update up;
    int ret;
    if (r->enter_flags & IORING_ENTER_REGISTERED_RING)
        return 0;
    if (ar_ring_forked(r))
        return -EBADFD;
    memset(&up, 0, sizeof(up));
    up.offset = -1U;                 /* any free index */
    up.data = (uint64_t)r->ring_fd;
    ret = sys_register(r->ring_fd, IORING_REGISTER_RING_FDS, &up, 1);
    if (ret != 1)
        return ret < 0 ? ret : -EINVAL;
    r->enter_fd = (int)up.offset;
    r->enter_flags |= IORING_ENTER_REGISTERED_RING;
    r->ring_fd_tid = (int)syscall(SYS_gettid);
    return 0;
}

int ar_ring_unregister_ring_fd(ar_ring *r)
{
    struct io_uring_rsrc_update up;
    int ret;
    if (!(r->enter_flags & IORING_ENTER_REGISTERED_RING))
        return 0;
    if (ar_ring_forked(r))
        return -EBADFD;
    memset(&up, 0, sizeof(up));
    up.offset = (unsigned)r->enter_fd;
    ret = sys_register(r->ring_fd, IORING_UNREGISTER_RING_FDS, &up, 1);
    if (ret != 1)
        return ret < 0 ? ret : -EINVAL;
    r->enter_fd = r->ring_fd;
    r->enter_flags &= ~IORING_ENTER_REGISTERED_RING;
    r->ring_fd_tid = 0;
    return 0;
}

void ar_ring_release_ring_fd(ar_ring *r)
{
    if (!(r->enter_flags & IORING_ENTER_REGISTERED_RING))
        return;
    if (r->ring_fd_tid == (int)syscall(SYS_gettid) &&
        ar_ring_unregister_ring_fd(r) == 0)
        return;
    r->enter_fd = r->ring_fd;
    r->enter_flags &= ~IORING_ENTER_REGISTERED_RING;
    r->ring_fd_tid = 0;
}

int ar_ring_probe(ar_ring *r)
{
    size_t len = sizeof(struct io_uring_probe) + AR_OP_MAX * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *p = calloc(1, len);
    int ret, i;
    if (p == NULL)
        return -ENOMEM;
    ret = sys_register(r->ring_fd, IORING_REGISTER_PROBE, p, AR_OP_MAX);
    if (ret == 0) {
        memset(r->ops, 0, sizeof(r->ops));
        for (i = 0; i < p->ops_len && i < AR_OP_MAX; i++) {
            if (p->ops[i].flags & IO_URING_OP_SUPPORTED)
                r->ops[p->ops[i].op] = 1;
        }
        r->probed = 1;
    }
    free(p);
    return ret;
}

unsigned ar_ring_flush(ar_ring *r)
{
    if (ar_ring_forked(r))
        return 0;
    if (*r->sq_ktail != r->sqe_tail)
        __atomic_store_n(r->sq_ktail, r->sqe_tail, __ATOMIC_RELEASE);
    return r->sqe_tail - __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
}

/* Deferred or cooperative task work is waiting for us to enter the kernel. */
static int taskrun_pending(const ar_ring *r)
{
    if (r->setup_flags & IORING_SETUP_TASKRUN_FLAG)
        return (__atomic_load_n(r->sq_kflags, __ATOMIC_RELAXED) & IORING_SQ_TASKRUN) != 0;
    return (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) != 0;
}

int ar_ring_submit_and_wait(ar_ring *r, unsigned wait_nr, int64_t timeout_ns)
{
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    void *argp = NULL;
    size_t argsz = 0;
    unsigned to_submit = ar_ring_flush(r);
    unsigned flags = r->enter_flags;
    int ret;

    if (ar_ring_forked(r))
        return -EBADFD;
    if (wait_nr == 0 && to_submit == 0 && !ar_cq_overflowed(r) && !taskrun_pending(r))
        return 0;
    if (wait_nr > 0 || ar_cq_overflowed(r) || taskrun_pending(r))
        flags |= IORING_ENTER_GETEVENTS;
    if (wait_nr > 0 && timeout_ns >= 0) {
        if (r->features & IORING_FEAT_EXT_ARG) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            memset(&arg, 0, sizeof(arg));
            arg.ts = (uint64_t)(uintptr_t)&ts;
            argp = &arg;
            argsz = sizeof(arg);
            flags |= IORING_ENTER_EXT_ARG;
        } else {
            /* Older kernels: a timeout request that completes after one other
             * completion or when the time is up; its CQE is ours and is
             * skipped by whoever iterates the CQ (AR_UDATA_RING_TIMEOUT). */
            struct io_uring_sqe *sqe;
            if (ar_sq_space(r) == 0)
                return -EBUSY;
            sqe = &r->sqes[r->sqe_tail & r->sq_mask];
            r->sqe_tail++;
            memset(sqe, 0, sizeof(*sqe));
            r->fallback_ts.tv_sec = timeout_ns / 1000000000;
            r->fallback_ts.tv_nsec = timeout_ns % 1000000000;
            ar_prep_timeout(sqe, &r->fallback_ts, 1, AR_UDATA_RING_TIMEOUT);
            to_submit = ar_ring_flush(r);
        }
    }
    r->n_enter++;
    ret = sys_enter(r->enter_fd, to_submit, wait_nr, flags, argp, argsz);
    if (ret == -ETIME)
        ret = 0;
    if (ret > 0)
        r->n_submitted += (unsigned)ret;
    return ret;
}

int ar_ring_get_events(ar_ring *r)
{
    if (ar_ring_forked(r))
        return -EBADFD;
    r->n_enter++;
    return sys_enter(r->enter_fd, 0, 0, r->enter_flags | IORING_ENTER_GETEVENTS, NULL, 0);
}

int ar_ring_register_files_sparse(ar_ring *r, unsigned nr)
{
    struct io_uring_rsrc_register reg;
    int ret;
    if (ar_ring_forked(r))
        return -EBADFD;
    memset(&reg, 0, sizeof(reg));
    reg.nr = nr;
    reg.flags = IORING_RSRC_REGISTER_SPARSE;
    ret = sys_register(r->ring_fd, IORING_REGISTER_FILES2, &reg, sizeof(reg));
    if (ret == -EINVAL) {
        /* Kernels before sparse registration accept an array of -1. */
        int *fds = malloc(nr * sizeof(int));
        unsigned i;
        if (fds == NULL)
            return -ENOMEM;
        for (i = 0; i < nr; i++)
            fds[i] = -1;
        ret = sys_register(r->ring_fd, IORING_REGISTER_FILES, fds, nr);
        free(fds);
    }
    return ret;
}

int ar_ring_update_files(ar_ring *r, unsigned offset, const int *fds, unsigned nr)
{
    struct io_uring_files_update up;
    if (ar_ring_forked(r))
        return -EBADFD;
    memset(&up, 0, sizeof(up));
    up.offset = offset;
    up.fds = (uint64_t)(uintptr_t)fds;
    return sys_register(r->ring_fd, IORING_REGISTER_FILES_UPDATE, &up, nr);
}

int ar_ring_unregister_files(ar_ring *r)
{
    if (ar_ring_forked(r))
        return -EBADFD;
    return sys_register(r->ring_fd, IORING_UNREGISTER_FILES, NULL, 0);
}

int ar_bufring_setup(ar_ring *r, ar_bufring *b, uint16_t bgid,
                     unsigned entries, unsigned buf_size, unsigned provided)
{
    struct io_uring_buf_reg reg;
    long page = sysconf(_SC_PAGESIZE);
    int ret;

    memset(b, 0, sizeof(*b));
    if (ar_ring_forked(r))
        return -EBADFD;
    if (entries == 0 || entries > 32768 || (entries & (entries - 1)) != 0 || buf_size == 0)
        return -EINVAL;
    b->br_size = ((entries * sizeof(struct io_uring_buf)) + page - 1) & ~(size_t)(page - 1);
    b->br = mmap(NULL, b->br_size, PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (b->br == MAP_FAILED) {
        b->br = NULL;
        return -errno;
    }
    b->bufs_size = (size_t)entries * buf_size;
    b->bufs = mmap(NULL, b->bufs_size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (b->bufs == MAP_FAILED) {
        ret = -errno;
        munmap(b->br, b->br_size);
        memset(b, 0, sizeof(*b));
        return ret;
    }
    b->entries = entries;
    b->mask = entries - 1;
    b->buf_size = buf_size;
    b->bgid = bgid;

    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)b->br;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    ret = sys_register(r->ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (ret < 0) {
        munmap(b->bufs, b->bufs_size);
        munmap(b->br, b->br_size);
        memset(b, 0, sizeof(*b));
        return ret;
    }
    b->tail = 0;
    b->provided = 0;
    ar_bufring_grow(b, provided);
    return 0;
}

unsigned ar_bufring_grow(ar_bufring *b, unsigned n)
{
    unsigned i;
    if (n > b->entries - b->provided)
        n = b->entries - b->provided;
    for (i = 0; i < n; i++)
        ar_bufring_recycle(b, (uint16_t)(b->provided + i));
    b->provided += n;
    ar_bufring_publish(b);
    return n;
}

int ar_bufring_available(ar_ring *r, const ar_bufring *b)
{
    struct {
        uint32_t buf_group;
        uint32_t head;          /* out: the kernel's head */
        uint32_t resv[8];
    } st;
    int ret;
    if (b->br == NULL || r->ring_fd < 0)
        return -EBADF;
    memset(&st, 0, sizeof(st));
    st.buf_group = b->bgid;
    ret = sys_register(r->ring_fd, AR_REGISTER_PBUF_STATUS, &st, 1);
    if (ret < 0)
        return ret;
    return (uint16_t)(b->tail - (uint16_t)st.head);
}

void ar_bufring_free(ar_ring *r, ar_bufring *b)
{
    struct io_uring_buf_reg reg;
    if (b->br == NULL)
        return;
    if (r->ring_fd >= 0 && !ar_ring_forked(r)) {
        memset(&reg, 0, sizeof(reg));
        reg.bgid = b->bgid;
        sys_register(r->ring_fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    munmap(b->bufs, b->bufs_size);
    munmap(b->br, b->br_size);
    memset(b, 0, sizeof(*b));
}
