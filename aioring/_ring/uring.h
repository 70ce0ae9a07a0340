/*
 * aioring ring layer: the io_uring kernel ABI and nothing else.
 *
 * This header knows io_uring and knows nothing of Python or asyncio.  It is
 * written against <linux/io_uring.h>; constants that the build machine's
 * header may lack (it can be older than the kernel we run on) are defined
 * here, and whether the running kernel has them is decided at run time by
 * setup fallbacks, params.features and IORING_REGISTER_PROBE.
 *
 * Hot-path helpers (SQE acquisition, SQE preparation, CQ iteration) are
 * static inline so that every extension that includes this header gets them
 * without a call through a module boundary.  Everything that makes a
 * syscall lives in uring.c.
 */
#ifndef AIORING_URING_H
#define AIORING_URING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>

/* ---- constants newer than a 6.1 <linux/io_uring.h> ----------------------- */

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)          /* 6.6 */
#endif
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING (1U << 13)         /* 6.3 */
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)      /* 6.10 */
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)          /* 6.12 */
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)            /* 6.10 */
#endif
#ifndef IORING_RECV_MULTISHOT
#define IORING_RECV_MULTISHOT (1U << 1)
#endif
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)             /* 6.12 */
#endif

/* Opcodes are an enum in the kernel header, so the newer ones get names of
 * our own instead of #ifndef guards. */
#define AR_OP_FIXED_FD_INSTALL 54                   /* 6.8 */
#define AR_OP_FTRUNCATE        55                   /* 6.9 */
#define AR_OP_BIND             56                   /* 6.11 */
#define AR_OP_LISTEN           57                   /* 6.11 */
#define AR_OP_MAX              256                  /* size of the probe table */
/* io_uring_register opcodes are an enum too */
#define AR_REGISTER_PBUF_STATUS 26                  /* 6.8 */

/* user_data reserved by the ring layer for its own timeout SQE (kernels
 * without IORING_FEAT_EXT_ARG).  Operation records are pointers, which are
 * never all ones. */
#define AR_UDATA_RING_TIMEOUT  ((uint64_t)-1)

/* ---- the ring ------------------------------------------------------------ */

typedef struct ar_ring {
    int ring_fd;                 /* the io_uring descriptor */
    int enter_fd;                /* ring_fd, or its index once registered */
    unsigned enter_flags;        /* IORING_ENTER_REGISTERED_RING once registered */
    int ring_fd_tid;             /* kernel thread id that registered it (0: none) */
    unsigned setup_flags;        /* the flags the kernel accepted */
    unsigned features;           /* params.features */
    int enabled;                 /* 0 while IORING_SETUP_R_DISABLED holds */
    unsigned fork_gen;           /* ar_fork_generation when the ring was set up */

    /* submission queue (kernel-shared words first) */
    unsigned *sq_khead;
    unsigned *sq_ktail;
    unsigned *sq_kflags;
    unsigned *sq_kdropped;
    unsigned *sq_array;          /* NULL with IORING_SETUP_NO_SQARRAY */
    unsigned sq_mask;
    unsigned sq_entries;
    unsigned sqe_tail;           /* SQEs handed out; published on flush */
    struct io_uring_sqe *sqes;

    /* completion queue */
    unsigned *cq_khead;
    unsigned *cq_ktail;
    unsigned *cq_koverflow;
    unsigned cq_mask;
    unsigned cq_entries;
    struct io_uring_cqe *cqes;

    /* mappings, for teardown */
    void *sq_map;
    size_t sq_map_size;
    void *cq_map;                /* == sq_map with IORING_FEAT_SINGLE_MMAP */
    size_t cq_map_size;
    size_t sqes_map_size;

    /* timeout for kernels without IORING_FEAT_EXT_ARG */
    struct __kernel_timespec fallback_ts;

    unsigned char ops[AR_OP_MAX];   /* 1 where IORING_REGISTER_PROBE says supported */
    int probed;

    /* counters (read by the loop's statistics) */
    uint64_t n_enter;
    uint64_t n_submitted;
} ar_ring;

/* What a setup attempt may ask for, newest first: setup drops flags from this
 * list one by one while the kernel answers EINVAL. */
#define AR_WANT_DEFER_TASKRUN  (1U << 0)
#define AR_WANT_NO_SQARRAY     (1U << 1)
#define AR_WANT_DISABLED       (1U << 2)  /* start R_DISABLED; enable later */

/* The kernel's size limits (IORING_MAX_ENTRIES, IORING_MAX_CQ_ENTRIES). */
#define AR_MAX_ENTRIES     32768U
#define AR_MAX_CQ_ENTRIES  (2 * AR_MAX_ENTRIES)

static inline unsigned ar_roundup_pow2(unsigned v)
{
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/* Sizes io_uring_setup accepts (cq_entries 0: the kernel's default, twice
 * the SQ).  ar_ring_init refuses others with -EINVAL before trying any flag
 * set, so a bad size is never mistaken for a missing feature. */
static inline int ar_ring_sizes_valid(unsigned entries, unsigned cq_entries)
{
    if (entries == 0 || entries > AR_MAX_ENTRIES)
        return 0;
    if (cq_entries != 0 && (cq_entries > AR_MAX_CQ_ENTRIES ||
                            ar_roundup_pow2(cq_entries) < ar_roundup_pow2(entries)))
        return 0;
    return 1;
}

int ar_ring_init(ar_ring *r, unsigned entries, unsigned cq_entries, unsigned want);
/* Unmap and close; first lets go of a registered ring descriptor
 * (ar_ring_release_ring_fd). */
void ar_ring_exit(ar_ring *r);
int ar_ring_enable(ar_ring *r);
int ar_ring_register_ring_fd(ar_ring *r);
int ar_ring_unregister_ring_fd(ar_ring *r);
/* Stop entering through the registered descriptor.  A registered ring fd is
 * private to the thread that registered it and pins the ring (and one of that
 * thread's 16 slots) until unregistered, which only that thread can do: from
 * it, unregister; from any other thread, just go back to the plain fd (the
 * slot is freed when the registering thread exits). */
void ar_ring_release_ring_fd(ar_ring *r);
int ar_ring_probe(ar_ring *r);

/* Publish the SQEs handed out so far.  Returns how many are pending for the
 * kernel. */
unsigned ar_ring_flush(ar_ring *r);
/* Submit what is pending and, when wait_nr > 0, wait for that many
 * completions or until timeout_ns passes (timeout_ns < 0: no timeout).
 * Returns the number of SQEs submitted, or -errno.  -ETIME is mapped to 0.
 * -EINTR is returned as is: the caller handles signals and calls again. */
int ar_ring_submit_and_wait(ar_ring *r, unsigned wait_nr, int64_t timeout_ns);
/* Ask the kernel to move completions from its overflow list into the CQ and
 * to run deferred task work, without waiting. */
int ar_ring_get_events(ar_ring *r);

/* registered (fixed) file table */
int ar_ring_register_files_sparse(ar_ring *r, unsigned nr);
int ar_ring_update_files(ar_ring *r, unsigned offset, const int *fds, unsigned nr);
int ar_ring_unregister_files(ar_ring *r);

/* ---- provided-buffer rings ----------------------------------------------- */

typedef struct ar_bufring {
    struct io_uring_buf_ring *br;  /* the ring shared with the kernel */
    size_t br_size;
    unsigned char *bufs;           /* entries * buf_size bytes */
    size_t bufs_size;
    unsigned entries;
    unsigned mask;
    unsigned buf_size;
    uint16_t bgid;
    uint16_t tail;                 /* our tail; published by ar_bufring_publish */
    unsigned provided;             /* buffers 0..provided-1 handed to the kernel */
} ar_bufring;

/* Room for `entries` buffers of `buf_size` bytes, of which the first
 * `provided` are handed to the kernel now; ar_bufring_grow hands out more.
 * The buffer memory is reserved up front but only touched (and so only
 * resident) once provided. */
int ar_bufring_setup(ar_ring *r, ar_bufring *b, uint16_t bgid,
                     unsigned entries, unsigned buf_size, unsigned provided);
/* Hand up to n more buffers to the kernel; returns how many. */
unsigned ar_bufring_grow(ar_bufring *b, unsigned n);
void ar_bufring_free(ar_ring *r, ar_bufring *b);
/* How many buffers the kernel holds ready for recvs (our tail minus the
 * kernel's head, IORING_REGISTER_PBUF_STATUS), or -errno (-EINVAL before
 * 6.8).  provided minus this is what recvs took and the loop has not handed
 * back yet: 0 whenever the loop is between iterations.  A diagnostic (one
 * syscall), never on a hot path. */
int ar_bufring_available(ar_ring *r, const ar_bufring *b);

static inline unsigned char *ar_bufring_addr(const ar_bufring *b, uint16_t bid)
{
    return b->bufs + (size_t)bid * b->buf_size;
}

/* Hand buffer `bid` back to the kernel (visible after ar_bufring_publish). */
static inline void ar_bufring_recycle(ar_bufring *b, uint16_t bid)
{
    struct io_uring_buf *buf = &b->br->bufs[b->tail & b->mask];
    buf->addr = (uint64_t)(uintptr_t)ar_bufring_addr(b, bid);
    buf->len = b->buf_size;
    buf->bid = bid;
    b->tail++;
}

static inline void ar_bufring_publish(ar_bufring *b)
{
    __atomic_store_n(&b->br->tail, b->tail, __ATOMIC_RELEASE);
}

/* ---- SQ ------------------------------------------------------------------ */

static inline unsigned ar_sq_space(const ar_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    return r->sq_entries - (r->sqe_tail - head);
}

/* A zeroed SQE, or NULL when the SQ is full and a flush to the kernel did not
 * make room (the caller raises; nothing was lost). */
/* After fork() the child's mappings of the SQ and CQ are the parent's
 * (MAP_SHARED) and its ring descriptor names the parent's ring: a child must
 * neither write an SQE, move a queue head or tail, enter nor register.
 * ar_fork_generation counts the forks this process descends from (a
 * pthread_atfork child handler bumps it); a ring set up in an earlier
 * generation is the parent's.  The ar_ring_* calls below answer -EBADFD
 * (ar_get_sqe NULL) on such a ring; the loop checks ar_ring_forked() first
 * to name the cause. */
extern volatile unsigned ar_fork_generation;

static inline int ar_ring_forked(const ar_ring *r)
{
    return r->fork_gen != ar_fork_generation;
}

static inline struct io_uring_sqe *ar_get_sqe(ar_ring *r)
{
    struct io_uring_sqe *sqe;
    if (ar_ring_forked(r))
        return NULL;
    if (ar_sq_space(r) == 0) {
        /* Full: hand what we have to the kernel, then look again. */
        if (ar_ring_submit_and_wait(r, 0, -1) < 0 || ar_sq_space(r) == 0)
            return NULL;
    }
    sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

static inline unsigned ar_sq_pending(const ar_ring *r)
{
    return r->sqe_tail - *r->sq_ktail;
}

static inline void ar_prep_rw(struct io_uring_sqe *sqe, int op, int fd,
                              const void *addr, unsigned len, uint64_t off,
                              uint64_t user_data)
{
    sqe->opcode = (uint8_t)op;
    sqe->fd = fd;
    sqe->off = off;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = len;
    sqe->user_data = user_data;
}

static inline void ar_prep_nop(struct io_uring_sqe *sqe, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_NOP, -1, NULL, 0, 0, user_data);
}

static inline void ar_prep_read(struct io_uring_sqe *sqe, int fd, void *buf,
                                unsigned len, uint64_t off, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_READ, fd, buf, len, off, user_data);
}

static inline void ar_prep_write(struct io_uring_sqe *sqe, int fd, const void *buf,
                                 unsigned len, uint64_t off, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_WRITE, fd, buf, len, off, user_data);
}

static inline void ar_prep_writev(struct io_uring_sqe *sqe, int fd,
                                  const struct iovec *iov, unsigned nr,
                                  uint64_t off, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_WRITEV, fd, iov, nr, off, user_data);
}

/* Socket requests without MSG_DONTWAIT in msg_flags wait in the kernel: it
 * arms its internal poll and retries when the socket is ready, instead of
 * failing with EAGAIN.  It still can complete one with EAGAIN (it gives up
 * retrying after a while; seen on 6.18 sends to a full socket buffer without
 * DEFER_TASKRUN), with nothing transferred: callers submit it again. */
static inline void ar_prep_recv(struct io_uring_sqe *sqe, int fd, void *buf,
                                unsigned len, unsigned msg_flags, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_RECV, fd, buf, len, 0, user_data);
    sqe->msg_flags = msg_flags;
}

/* A recv that takes its buffer from provided-buffer group `bgid`; with
 * `multishot` it stays armed and completes once per received chunk (F_MORE
 * set while it stays armed). */
static inline void ar_prep_recv_select(struct io_uring_sqe *sqe, int fd,
                                       uint16_t bgid, int multishot,
                                       unsigned msg_flags, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_RECV, fd, NULL, 0, 0, user_data);
    sqe->msg_flags = msg_flags;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
    if (multishot)
        sqe->ioprio |= IORING_RECV_MULTISHOT;
}

/* Sends: MSG_DONTWAIT in msg_flags as for ar_prep_recv. */
static inline void ar_prep_send(struct io_uring_sqe *sqe, int fd, const void *buf,
                                unsigned len, unsigned msg_flags, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_SEND, fd, buf, len, 0, user_data);
    sqe->msg_flags = msg_flags;
}

/* sendmsg(2): msg names the data (msg_iov) and, for an unconnected datagram
 * socket, the destination (msg_name); the kernel reads both, so they must
 * stay valid until the request's completion. */
static inline void ar_prep_sendmsg(struct io_uring_sqe *sqe, int fd,
                                   const struct msghdr *msg, unsigned msg_flags,
                                   uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_SENDMSG, fd, msg, 1, 0, user_data);
    sqe->msg_flags = msg_flags;
}

static inline void ar_prep_recvmsg(struct io_uring_sqe *sqe, int fd,
                                   struct msghdr *msg, unsigned msg_flags,
                                   uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_RECVMSG, fd, msg, 1, 0, user_data);
    sqe->msg_flags = msg_flags;
}

/* accept(2) with `flags` (SOCK_NONBLOCK, SOCK_CLOEXEC); with `multishot` it
 * stays armed and completes once per connection (F_MORE while armed).  The
 * peer's address is not asked for: a multishot accept would overwrite it. */
static inline void ar_prep_accept(struct io_uring_sqe *sqe, int fd, unsigned flags,
                                  int multishot, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_ACCEPT, fd, NULL, 0, 0, user_data);
    sqe->accept_flags = flags;
    if (multishot)
        sqe->ioprio |= IORING_ACCEPT_MULTISHOT;
}

static inline void ar_prep_poll_add(struct io_uring_sqe *sqe, int fd,
                                    unsigned poll_mask, int multishot,
                                    uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_POLL_ADD, fd, NULL, multishot ? IORING_POLL_ADD_MULTI : 0,
               0, user_data);
    sqe->poll32_events = poll_mask;
}

static inline void ar_prep_cancel(struct io_uring_sqe *sqe, uint64_t target,
                                  uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_ASYNC_CANCEL, -1, NULL, 0, 0, user_data);
    sqe->addr = target;
}

static inline void ar_prep_timeout(struct io_uring_sqe *sqe,
                                   struct __kernel_timespec *ts,
                                   unsigned count, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_TIMEOUT, -1, ts, 1, count, user_data);
}

/* ---- files and paths (aioring.open and its helpers) ---------------------
 * Paths and buffers are read or written by the kernel after submission (the
 * request may run in an io-wq worker): they must stay valid until the
 * request's completion.  dfd is a directory descriptor or AT_FDCWD. */

static inline void ar_prep_openat(struct io_uring_sqe *sqe, int dfd, const char *path,
                                  int flags, unsigned mode, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_OPENAT, dfd, path, mode, 0, user_data);
    sqe->open_flags = (uint32_t)flags;
}

static inline void ar_prep_close(struct io_uring_sqe *sqe, int fd, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_CLOSE, fd, NULL, 0, 0, user_data);
}

/* fsync_flags: 0, or IORING_FSYNC_DATASYNC for fdatasync(2) */
static inline void ar_prep_fsync(struct io_uring_sqe *sqe, int fd, unsigned fsync_flags,
                                 uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_FSYNC, fd, NULL, 0, 0, user_data);
    sqe->fsync_flags = fsync_flags;
}

/* statx(2) into statxbuf, a struct statx (256 bytes) */
static inline void ar_prep_statx(struct io_uring_sqe *sqe, int dfd, const char *path,
                                 int flags, unsigned mask, void *statxbuf,
                                 uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_STATX, dfd, path, mask, (uint64_t)(uintptr_t)statxbuf,
               user_data);
    sqe->statx_flags = (uint32_t)flags;
}

/* unlinkat(2); flags AT_REMOVEDIR makes it rmdir(2) */
static inline void ar_prep_unlinkat(struct io_uring_sqe *sqe, int dfd, const char *path,
                                    int flags, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_UNLINKAT, dfd, path, 0, 0, user_data);
    sqe->unlink_flags = (uint32_t)flags;
}

/* renameat2(2): the new directory goes in len, the new path in off */
static inline void ar_prep_renameat(struct io_uring_sqe *sqe, int olddfd, const char *oldpath,
                                    int newdfd, const char *newpath, unsigned flags,
                                    uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_RENAMEAT, olddfd, oldpath, (unsigned)newdfd,
               (uint64_t)(uintptr_t)newpath, user_data);
    sqe->rename_flags = flags;
}

static inline void ar_prep_mkdirat(struct io_uring_sqe *sqe, int dfd, const char *path,
                                   unsigned mode, uint64_t user_data)
{
    ar_prep_rw(sqe, IORING_OP_MKDIRAT, dfd, path, mode, 0, user_data);
}

/* ftruncate(2) (Linux 6.9): the length goes in off */
static inline void ar_prep_ftruncate(struct io_uring_sqe *sqe, int fd, uint64_t length,
                                     uint64_t user_data)
{
    ar_prep_rw(sqe, AR_OP_FTRUNCATE, fd, NULL, 0, length, user_data);
}

/* ---- CQ ------------------------------------------------------------------ */

static inline unsigned ar_cq_head(const ar_ring *r)
{
    return *r->cq_khead;
}

static inline unsigned ar_cq_tail(const ar_ring *r)
{
    return __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
}

static inline struct io_uring_cqe *ar_cq_at(const ar_ring *r, unsigned index)
{
    return &r->cqes[index & r->cq_mask];
}

/* Give CQ entries up to (not including) `head` back to the kernel. */
static inline void ar_cq_release(ar_ring *r, unsigned head)
{
    __atomic_store_n(r->cq_khead, head, __ATOMIC_RELEASE);
}

/* The kernel holds completions that did not fit in the CQ. */
static inline int ar_cq_overflowed(const ar_ring *r)
{
    return (__atomic_load_n(r->sq_kflags, __ATOMIC_RELAXED) & IORING_SQ_CQ_OVERFLOW) != 0;
}

static inline int ar_op_supported(const ar_ring *r, unsigned op)
{
    return op < AR_OP_MAX && r->ops[op];
}

#endif /* AIORING_URING_H */
