/*
 * The floor: an echo server in C on io_uring, doing the least work that the
 * benchmark's echo requires, so that the gap between it and a Python loop is
 * the loop's own cost.  Built on aioring's ring layer (aioring/_ring/uring.c)
 * so that it sets the ring up exactly as the loop does (single issuer,
 * deferred task run, no SQ array where the kernel has them).
 *
 *   uring_echo (--tcp PORT | --unix PATH) [--timeout SEC]
 *
 * Multishot accept; per connection one recv in flight into the
 * connection's own 64 KiB buffer, then a send of the same bytes (resubmitted
 * from where it stopped when partial), then the next recv.  The load
 * generator is closed-loop, so one message in flight per connection is all
 * the server ever sees.  Plain descriptors (no fixed-file table), no
 * provided buffers.
 *
 * Prints "READY <pid>" once listening.  Stops on SIGTERM/SIGINT, when its
 * parent dies, or after --timeout seconds (default 900).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "uring.h"

#define BUF_SIZE 65536
#define MAX_CONNS 4096

enum op_kind { OP_ACCEPT = 1, OP_RECV, OP_SEND };

typedef struct conn {
    int fd;
    unsigned len, sent;     /* bytes received, bytes sent back so far */
    unsigned char buf[BUF_SIZE];
} conn;

static ar_ring ring;
static conn *conns[MAX_CONNS];
static volatile sig_atomic_t stopping;

/* user_data: the kind in the low byte, the connection's fd above it. */
static uint64_t udata(enum op_kind kind, int fd)
{
    return ((uint64_t)(unsigned)fd << 8) | (uint64_t)kind;
}

static struct io_uring_sqe *sqe_or_die(void)
{
    struct io_uring_sqe *sqe = ar_get_sqe(&ring);
    if (!sqe) {
        fprintf(stderr, "uring_echo: submission queue full\n");
        exit(1);
    }
    return sqe;
}

static void arm_accept(int listen_fd)
{
    ar_prep_accept(sqe_or_die(), listen_fd, SOCK_CLOEXEC, 1, udata(OP_ACCEPT, listen_fd));
}

static void arm_recv(conn *c)
{
    ar_prep_recv(sqe_or_die(), c->fd, c->buf, BUF_SIZE, 0, udata(OP_RECV, c->fd));
}

static void arm_send(conn *c)
{
    ar_prep_send(sqe_or_die(), c->fd, c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL,
                 udata(OP_SEND, c->fd));
}

static void conn_close(conn *c)
{
    conns[c->fd] = NULL;
    close(c->fd);
    free(c);
}

static void on_accept(int listen_fd, const struct io_uring_cqe *cqe, int is_tcp)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept(listen_fd);          /* the multishot ended: arm it again */
    if (cqe->res < 0)
        return;
    int fd = cqe->res;
    if (fd >= MAX_CONNS) {
        close(fd);
        return;
    }
    if (is_tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    conn *c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->len = c->sent = 0;
    conns[fd] = c;
    arm_recv(c);
}

static void on_recv(conn *c, int res)
{
    if (res <= 0) {                     /* peer closed, or an error */
        conn_close(c);
        return;
    }
    c->len = (unsigned)res;
    c->sent = 0;
    arm_send(c);
}

static void on_send(conn *c, int res)
{
    if (res < 0) {
        conn_close(c);
        return;
    }
    c->sent += (unsigned)res;
    if (c->sent < c->len)
        arm_send(c);                    /* partial: the rest, same buffer */
    else
        arm_recv(c);
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int listen_socket(const char *unix_path, int port)
{
    int fd, one = 1;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof(sun.sun_path))
            return -1;
        strcpy(sun.sun_path, unix_path);
        unlink(unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            return -1;
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
            return -1;
    }
    if (listen(fd, 1024) < 0)
        return -1;
    return fd;
}

int main(int argc, char **argv)
{
    const char *unix_path = NULL;
    int port = -1;
    unsigned timeout = 900;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tcp"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--unix"))
            unix_path = argv[i + 1];
        else if (!strcmp(argv[i], "--timeout"))
            timeout = (unsigned)atoi(argv[i + 1]);
    }
    if ((port < 0) == !unix_path) {
        fprintf(stderr, "usage: uring_echo (--tcp PORT | --unix PATH) [--timeout SEC]\n");
        return 2;
    }
    /* stop by ourselves: when the runner dies, or after the timeout */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    struct sigaction sa = {.sa_handler = on_signal};   /* no SA_RESTART: wake the wait */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    alarm(timeout);

    int listen_fd = listen_socket(unix_path, port);
    if (listen_fd < 0) {
        perror("uring_echo: listen");
        return 1;
    }
    int err = ar_ring_init(&ring, 1024, 4096, AR_WANT_DEFER_TASKRUN | AR_WANT_NO_SQARRAY);
    if (err < 0) {
        fprintf(stderr, "uring_echo: io_uring_setup: %s\n", strerror(-err));
        return 1;
    }
    arm_accept(listen_fd);
    printf("READY %d\n", (int)getpid());
    fflush(stdout);

    while (!stopping) {
        int ret = ar_ring_submit_and_wait(&ring, 1, -1);
        if (ret < 0 && ret != -EINTR) {
            fprintf(stderr, "uring_echo: io_uring_enter: %s\n", strerror(-ret));
            return 1;
        }
        unsigned head = ar_cq_head(&ring), tail = ar_cq_tail(&ring);
        for (; head != tail; head++) {
            const struct io_uring_cqe *cqe = ar_cq_at(&ring, head);
            int kind = (int)(cqe->user_data & 0xff);
            int fd = (int)(cqe->user_data >> 8);
            conn *c = kind == OP_ACCEPT ? NULL : conns[fd];
            if (kind == OP_ACCEPT)
                on_accept(fd, cqe, port >= 0);
            else if (c && kind == OP_RECV)
                on_recv(c, cqe->res);
            else if (c && kind == OP_SEND)
                on_send(c, cqe->res);
        }
        ar_cq_release(&ring, head);
    }
    ar_ring_exit(&ring);
    if (unix_path)
        unlink(unix_path);
    return 0;
}
