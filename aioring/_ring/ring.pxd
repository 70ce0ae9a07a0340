# Declarations of the ring layer (uring.h / uring.c) for Cython modules.
# Any extension that cimports this must also compile aioring/_ring/uring.c
# (setup.py does): the hot helpers are inline and call into it.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

cdef extern from "uring.h" nogil:
    struct io_uring_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int fd
        uint64_t off
        uint64_t addr
        uint32_t len
        uint64_t user_data
        uint16_t buf_group

    struct io_uring_cqe:
        uint64_t user_data
        int res
        uint32_t flags

    struct __kernel_timespec:
        long long tv_sec
        long long tv_nsec

    ctypedef struct ar_ring:
        int ring_fd
        int enter_fd
        unsigned enter_flags
        unsigned setup_flags
        unsigned features
        int enabled
        unsigned fork_gen
        unsigned sq_entries
        unsigned cq_entries
        unsigned *sq_kflags
        unsigned *cq_koverflow
        unsigned char ops[256]
        int probed
        uint64_t n_enter
        uint64_t n_submitted

    ctypedef struct ar_bufring:
        unsigned entries
        unsigned buf_size
        uint16_t bgid
        unsigned provided

    struct iovec:
        void *iov_base
        size_t iov_len

    struct msghdr:
        void *msg_name
        unsigned msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    # constants (the kernel header's, or ours where it is too old)
    enum:
        IORING_SETUP_SQPOLL
        IORING_SETUP_CQSIZE
        IORING_SETUP_SUBMIT_ALL
        IORING_SETUP_R_DISABLED
        IORING_SETUP_COOP_TASKRUN
        IORING_SETUP_TASKRUN_FLAG
        IORING_SETUP_SINGLE_ISSUER
        IORING_SETUP_DEFER_TASKRUN
        IORING_SETUP_NO_SQARRAY
        IORING_FEAT_NODROP
        IORING_FEAT_EXT_ARG
        IORING_FEAT_FAST_POLL
        IORING_FEAT_SINGLE_MMAP
        IORING_FEAT_RW_CUR_POS
        IORING_ENTER_REGISTERED_RING
        IORING_SQ_CQ_OVERFLOW
        IORING_CQE_F_MORE
        IORING_CQE_F_BUFFER
        IORING_CQE_BUFFER_SHIFT
        IORING_RECV_MULTISHOT
        IOSQE_FIXED_FILE
        IOSQE_ASYNC
        IOSQE_BUFFER_SELECT
        IORING_OP_NOP
        IORING_OP_READ
        IORING_OP_WRITE
        IORING_OP_POLL_ADD
        IORING_OP_ASYNC_CANCEL
        IORING_OP_TIMEOUT
        IORING_OP_RECV
        IORING_OP_SEND
        IORING_OP_ACCEPT
        IORING_OP_CONNECT
        IORING_OP_SENDMSG
        IORING_OP_RECVMSG
        IORING_OP_MSG_RING
        IORING_OP_SOCKET
        IORING_OP_SEND_ZC
        IORING_OP_OPENAT
        IORING_OP_CLOSE
        IORING_OP_FSYNC
        IORING_OP_STATX
        IORING_OP_UNLINKAT
        IORING_OP_RENAMEAT
        IORING_OP_MKDIRAT
        AR_OP_FTRUNCATE
        IORING_FSYNC_DATASYNC
        AR_OP_MAX
        AR_WANT_DEFER_TASKRUN
        AR_WANT_NO_SQARRAY
        AR_WANT_DISABLED

    uint64_t AR_UDATA_RING_TIMEOUT

    int ar_ring_sizes_valid(unsigned entries, unsigned cq_entries)
    int ar_ring_init(ar_ring *r, unsigned entries, unsigned cq_entries, unsigned want)
    void ar_ring_exit(ar_ring *r)
    int ar_ring_enable(ar_ring *r)
    int ar_ring_register_ring_fd(ar_ring *r)
    int ar_ring_unregister_ring_fd(ar_ring *r)
    void ar_ring_release_ring_fd(ar_ring *r)
    int ar_ring_probe(ar_ring *r)
    unsigned ar_ring_flush(ar_ring *r)
    int ar_ring_submit_and_wait(ar_ring *r, unsigned wait_nr, int64_t timeout_ns)
    int ar_ring_get_events(ar_ring *r)
    int ar_ring_register_files_sparse(ar_ring *r, unsigned nr)
    int ar_ring_update_files(ar_ring *r, unsigned offset, const int *fds, unsigned nr)
    int ar_ring_unregister_files(ar_ring *r)

    int ar_bufring_setup(ar_ring *r, ar_bufring *b, uint16_t bgid,
                         unsigned entries, unsigned buf_size, unsigned provided)
    unsigned ar_bufring_grow(ar_bufring *b, unsigned n)
    void ar_bufring_free(ar_ring *r, ar_bufring *b)
    int ar_bufring_available(ar_ring *r, const ar_bufring *b)
    unsigned char *ar_bufring_addr(const ar_bufring *b, uint16_t bid)
    void ar_bufring_recycle(ar_bufring *b, uint16_t bid)
    void ar_bufring_publish(ar_bufring *b)

    unsigned ar_sq_space(const ar_ring *r)
    unsigned ar_sq_pending(const ar_ring *r)
    io_uring_sqe *ar_get_sqe(ar_ring *r)
    bint ar_ring_forked(const ar_ring *r)
    void ar_prep_nop(io_uring_sqe *sqe, uint64_t user_data)
    void ar_prep_read(io_uring_sqe *sqe, int fd, void *buf, unsigned len,
                      uint64_t off, uint64_t user_data)
    void ar_prep_write(io_uring_sqe *sqe, int fd, const void *buf, unsigned len,
                       uint64_t off, uint64_t user_data)
    void ar_prep_writev(io_uring_sqe *sqe, int fd, const iovec *iov, unsigned nr,
                        uint64_t off, uint64_t user_data)
    void ar_prep_recv(io_uring_sqe *sqe, int fd, void *buf, unsigned len,
                      unsigned msg_flags, uint64_t user_data)
    void ar_prep_recv_select(io_uring_sqe *sqe, int fd, uint16_t bgid,
                             int multishot, unsigned msg_flags, uint64_t user_data)
    void ar_prep_send(io_uring_sqe *sqe, int fd, const void *buf, unsigned len,
                      unsigned msg_flags, uint64_t user_data)
    void ar_prep_sendmsg(io_uring_sqe *sqe, int fd, const msghdr *msg,
                         unsigned msg_flags, uint64_t user_data)
    void ar_prep_recvmsg(io_uring_sqe *sqe, int fd, msghdr *msg, unsigned msg_flags,
                         uint64_t user_data)
    void ar_prep_accept(io_uring_sqe *sqe, int fd, unsigned flags, int multishot,
                        uint64_t user_data)
    void ar_prep_poll_add(io_uring_sqe *sqe, int fd, unsigned poll_mask,
                          int multishot, uint64_t user_data)
    void ar_prep_cancel(io_uring_sqe *sqe, uint64_t target, uint64_t user_data)
    void ar_prep_openat(io_uring_sqe *sqe, int dfd, const char *path, int flags,
                        unsigned mode, uint64_t user_data)
    void ar_prep_close(io_uring_sqe *sqe, int fd, uint64_t user_data)
    void ar_prep_fsync(io_uring_sqe *sqe, int fd, unsigned fsync_flags, uint64_t user_data)
    void ar_prep_statx(io_uring_sqe *sqe, int dfd, const char *path, int flags,
                       unsigned mask, void *statxbuf, uint64_t user_data)
    void ar_prep_unlinkat(io_uring_sqe *sqe, int dfd, const char *path, int flags,
                          uint64_t user_data)
    void ar_prep_renameat(io_uring_sqe *sqe, int olddfd, const char *oldpath, int newdfd,
                          const char *newpath, unsigned flags, uint64_t user_data)
    void ar_prep_mkdirat(io_uring_sqe *sqe, int dfd, const char *path, unsigned mode,
                         uint64_t user_data)
    void ar_prep_ftruncate(io_uring_sqe *sqe, int fd, uint64_t length, uint64_t user_data)

    unsigned ar_cq_head(const ar_ring *r)
    unsigned ar_cq_tail(const ar_ring *r)
    io_uring_cqe *ar_cq_at(const ar_ring *r, unsigned index)
    void ar_cq_release(ar_ring *r, unsigned head)
    int ar_cq_overflowed(const ar_ring *r)
    int ar_op_supported(const ar_ring *r, unsigned op)


# Turn a setup failure into the exception new_event_loop() raises; shared by
# the test-facing Ring and the loop.
cdef object setup_error(int err)
