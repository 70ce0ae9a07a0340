/*
 * Closed-loop echo load generator: N connections, each sends one message of
 * S bytes and waits for the whole echo before sending the next.
 *
 *   loadgen (--tcp HOST:PORT | --unix PATH) [-c N] [-s BYTES | --http]
 *           [--warmup SEC] [--duration SEC]
 *           [--on-start CMD] [--on-end CMD] [--stall SEC]
 *
 * With --http each request is instead one keep-alive HTTP/1.1 GET, and its
 * answer must be one whole "200" response whose body has the length its
 * Content-Length names, nothing more: the plain (not pipelined) HTTP
 * benchmark with a client that costs less per request than wrk.
 *
 * Phases: connect, warm-up, drain, on-start, measurement window, drain,
 * on-end.  "Drain" means: send nothing new until every request in flight has
 * its echo.  So the window holds exactly the requests sent in it, all of them
 * answered, and the server did no work for any other request between on-start
 * and on-end: that is what makes callgrind's instruction count divided by the
 * request count exact (the runner passes callgrind_control as on-start and
 * on-end).
 *
 * Each request's bytes are a slice of a random pattern starting at an offset
 * that changes with every request, so an echo of a stale or misplaced chunk
 * is caught by a memcmp against the same slice, without filling a buffer per
 * request.
 *
 * Prints one JSON object on stdout.  Single-threaded epoll, C only, so that
 * the client costs little and the same on every run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 10000
#define PATTERN_VARIANTS 256      /* distinct start offsets, cycled per request */

/* ---- latency histogram: log-linear buckets, < 1% relative error --------- */

#define SUB_BITS 7                 /* 128 sub-buckets per power of two */
#define SUB_COUNT (1u << SUB_BITS)
#define HIST_BUCKETS (64 * SUB_COUNT)

static uint64_t hist[HIST_BUCKETS];
static uint64_t hist_count, hist_max_ns;

static unsigned bucket_of(uint64_t ns)
{
    if (ns < SUB_COUNT)
        return (unsigned)ns;
    unsigned msb = 63 - __builtin_clzll(ns);          /* >= SUB_BITS */
    unsigned shift = msb - SUB_BITS;
    return (shift + 1) * SUB_COUNT + (unsigned)((ns >> shift) - SUB_COUNT);
}

/* The upper edge of a bucket, so percentiles never read low. */
static uint64_t bucket_top(unsigned b)
{
    if (b < SUB_COUNT)
        return b;
    unsigned shift = b / SUB_COUNT - 1;
    uint64_t base = (uint64_t)(SUB_COUNT + b % SUB_COUNT) << shift;
    return base + ((1ull << shift) - 1);
}

static void hist_record(uint64_t ns)
{
    hist[bucket_of(ns)]++;
    hist_count++;
    if (ns > hist_max_ns)
        hist_max_ns = ns;
}

static double hist_percentile_us(double p)
{
    if (hist_count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(p * (double)hist_count);
    if (rank >= hist_count)
        rank = hist_count - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen > rank)
            return bucket_top(b) / 1000.0;
    }
    return hist_max_ns / 1000.0;
}

/* ---- connections --------------------------------------------------------- */

#define RESPONSE_MAX 512            /* --http: the largest response taken */

typedef struct conn {
    int fd;
    int busy;              /* a request is in flight */
    int want_out;          /* EPOLLOUT armed: the send was partial */
    unsigned variant;      /* pattern offset of the request in flight */
    size_t sent, received;
    uint64_t t_sent;       /* ns, when the request's first byte went out */
    uint64_t next_variant;
    char *response;        /* --http: the response received so far */
} conn;

static conn conns[MAX_CONNS];
static int nconns = 10;
static size_t msg_size = 1024;
static unsigned char *pattern;     /* msg_size + PATTERN_VARIANTS bytes */
static unsigned char *scratch;     /* one receive buffer shared by all */
static size_t scratch_size;
static int epfd;
static int http_mode;
static const char HTTP_REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

enum phase { WARMUP, DRAIN_BEFORE, WINDOW, DRAIN_AFTER, DONE };
static enum phase phase = WARMUP;
static uint64_t in_flight, window_requests, warmup_requests, errors;
static uint64_t last_progress_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void set_events(conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void conn_fail(conn *c, const char *why)
{
    fprintf(stderr, "loadgen: connection %ld: %s\n", (long)(c - conns), why);
    errors++;
    if (c->busy)
        in_flight--;
    c->busy = 0;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* Push out what is left of the request; arm EPOLLOUT if the socket is full. */
static void conn_send(conn *c)
{
    const unsigned char *msg = pattern + c->variant;
    while (c->sent < msg_size) {
        ssize_t n = send(c->fd, msg + c->sent, msg_size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            if (!c->want_out) {
                c->want_out = 1;
                set_events(c, EPOLLIN | EPOLLOUT);
            }
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_fail(c, "send failed");
            return;
        }
    }
    if (c->want_out) {
        c->want_out = 0;
        set_events(c, EPOLLIN);
    }
}

static void conn_start_request(conn *c)
{
    /* (--http: the one request, at offset 0 of the pattern) */
    c->variant = http_mode ? 0 : (unsigned)(c->next_variant++ % PATTERN_VARIANTS);
    c->sent = c->received = 0;
    c->busy = 1;
    in_flight++;
    c->t_sent = now_ns();
    conn_send(c);
}

static int may_start_requests(void)
{
    return phase == WARMUP || phase == WINDOW;
}

/* The request in flight has its whole answer: count it, start the next. */
static void conn_complete(conn *c)
{
    uint64_t t = now_ns();
    c->busy = 0;
    in_flight--;
    last_progress_ns = t;
    if (phase == WINDOW || phase == DRAIN_AFTER) {
        window_requests++;
        hist_record(t - c->t_sent);
    } else {
        warmup_requests++;
    }
    if (may_start_requests())
        conn_start_request(c);
}

/* --http: 1 when the bytes received so far are one whole response, 0 while
 * it is incomplete, -1 (with *why) when they cannot be one. */
static int http_response_state(const char *r, size_t n, const char **why)
{
    const char *end = memmem(r, n, "\r\n\r\n", 4);
    if (!end)
        return n < RESPONSE_MAX ? 0 : (*why = "response headers too long", -1);
    if (n < 13 || memcmp(r, "HTTP/1.1 200 ", 13) != 0)
        return *why = "not a 200 response", -1;
    size_t head = (size_t)(end - r) + 4, body = 0;
    int has_length = 0;
    for (const char *line = r; line < end;) {
        const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (eol - line > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            body = strtoul(line + 15, NULL, 10);
            has_length = 1;
        }
        line = eol + 2;
    }
    if (!has_length)
        return *why = "no Content-Length", -1;
    if (n > head + body)
        return *why = "more bytes than one response", -1;
    return n == head + body;
}

static void conn_readable(conn *c)
{
    for (;;) {
        unsigned char *into = scratch;
        size_t room = scratch_size;
        if (http_mode) {
            into = (unsigned char *)c->response + c->received;
            room = RESPONSE_MAX - c->received;
        }
        ssize_t n = recv(c->fd, into, room, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n == 0) {
            conn_fail(c, "closed by the server");
            return;
        }
        if (n < 0) {
            conn_fail(c, "recv failed");
            return;
        }
        if (!c->busy) {
            conn_fail(c, "bytes with no request in flight");
            return;
        }
        if (http_mode) {
            const char *why = NULL;
            c->received += (size_t)n;
            int state = http_response_state(c->response, c->received, &why);
            if (state < 0) {
                conn_fail(c, why);
                return;
            }
            if (state == 1) {
                conn_complete(c);
                return;
            }
            continue;
        }
        if (c->received + (size_t)n > msg_size) {
            conn_fail(c, "more bytes than were sent");
            return;
        }
        if (memcmp(scratch, pattern + c->variant + c->received, (size_t)n) != 0) {
            conn_fail(c, "echoed bytes differ from the bytes sent");
            return;
        }
        c->received += (size_t)n;
        if (c->received == msg_size) {
            conn_complete(c);
            return;
        }
    }
}

static int connect_one(const char *unix_path, const struct sockaddr_in *sin)
{
    int fd;
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(unix_path) >= sizeof(sun.sun_path)) {
            fprintf(stderr, "loadgen: unix path too long\n");
            exit(2);
        }
        strcpy(sun.sun_path, unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            die("connect (unix)");
    } else {
        int one = 1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) < 0)
            die("connect (tcp)");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void run_hook(const char *cmd, const char *name)
{
    if (!cmd)
        return;
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "loadgen: %s command failed (%d): %s\n", name, rc, cmd);
        errors++;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen (--tcp HOST:PORT | --unix PATH) [-c CONNS] [-s BYTES | --http]\n"
            "               [--warmup SEC] [--duration SEC] [--on-start CMD] [--on-end CMD]\n"
            "               [--stall SEC]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *tcp = NULL, *unix_path = NULL, *on_start = NULL, *on_end = NULL;
    double warmup = 1.0, duration = 3.0, stall = 20.0;
    static const struct option opts[] = {
        {"tcp", required_argument, 0, 't'},   {"unix", required_argument, 0, 'u'},
        {"conns", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"warmup", required_argument, 0, 'w'}, {"duration", required_argument, 0, 'd'},
        {"on-start", required_argument, 0, 'A'}, {"on-end", required_argument, 0, 'B'},
        {"stall", required_argument, 0, 'S'}, {"http", no_argument, 0, 'H'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:s:", opts, NULL)) != -1) {
        switch (opt) {
        case 't': tcp = optarg; break;
        case 'u': unix_path = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 's': msg_size = (size_t)atol(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'A': on_start = optarg; break;
        case 'B': on_end = optarg; break;
        case 'S': stall = atof(optarg); break;
        case 'H': http_mode = 1; break;
        default: usage();
        }
    }
    if (!tcp == !unix_path || nconns < 1 || nconns > MAX_CONNS || msg_size < 1 ||
        duration <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sin = {.sin_family = AF_INET};
    if (tcp) {
        char host[256];
        const char *colon = strrchr(tcp, ':');
        if (!colon || (size_t)(colon - tcp) >= sizeof(host))
            usage();
        memcpy(host, tcp, (size_t)(colon - tcp));
        host[colon - tcp] = 0;
        sin.sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
            usage();
    }

    if (http_mode)
        msg_size = sizeof(HTTP_REQUEST) - 1;
    pattern = malloc(msg_size + PATTERN_VARIANTS);
    scratch_size = msg_size < 65536 ? msg_size : 65536;
    scratch = malloc(scratch_size);
    if (!pattern || !scratch)
        die("malloc");
    uint64_t x = 0x9e3779b97f4a7c15ull;            /* xorshift: any bytes do */
    for (size_t i = 0; i < msg_size + PATTERN_VARIANTS; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        pattern[i] = (unsigned char)x;
    }
    if (http_mode)
        memcpy(pattern, HTTP_REQUEST, msg_size);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = connect_one(unix_path, &sin);
        conns[i].next_variant = (uint64_t)i * 7;   /* neighbours differ too */
        if (http_mode && !(conns[i].response = malloc(RESPONSE_MAX)))
            die("malloc");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }

    uint64_t t_begin = now_ns(), t_window = 0, t_window_end = 0, t_done = 0;
    uint64_t warmup_end = t_begin + (uint64_t)(warmup * 1e9);
    uint64_t stall_ns = (uint64_t)(stall * 1e9);
    last_progress_ns = t_begin;
    for (int i = 0; i < nconns; i++)
        conn_start_request(&conns[i]);

    struct epoll_event events[256];
    while (phase != DONE) {
        int n = epoll_wait(epfd, events, 256, 50);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            if ((events[i].events & EPOLLOUT) && c->busy)
                conn_send(c);
            if (c->fd >= 0 && (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_readable(c);
        }
        uint64_t t = now_ns();
        if (phase == WARMUP && t >= warmup_end)
            phase = DRAIN_BEFORE;
        if (phase == DRAIN_BEFORE && in_flight == 0) {
            run_hook(on_start, "on-start");
            phase = WINDOW;
            t_window = now_ns();
            t_window_end = t_window + (uint64_t)(duration * 1e9);
            last_progress_ns = t_window;
            for (int i = 0; i < nconns; i++)
                if (conns[i].fd >= 0)
                    conn_start_request(&conns[i]);
        }
        if (phase == WINDOW && t >= t_window_end)
            phase = DRAIN_AFTER;
        if (phase == DRAIN_AFTER && in_flight == 0) {
            t_done = now_ns();
            run_hook(on_end, "on-end");
            phase = DONE;
        }
        /* t may be older than the window's start: no unsigned wrap */
        if (phase != DONE && t > last_progress_ns && t - last_progress_ns > stall_ns) {
            fprintf(stderr, "loadgen: no echo for %.0f s, giving up\n", stall);
            errors++;
            if (t_window && !t_done)
                t_done = t;
            break;
        }
        int alive = 0;
        for (int i = 0; i < nconns && !alive; i++)
            alive = conns[i].fd >= 0;
        if (!alive) {
            if (t_window && !t_done)
                t_done = t;
            break;
        }
    }

    double seconds = t_window && t_done > t_window ? (t_done - t_window) / 1e9 : 0.0;
    printf("{\"requests\": %llu, \"seconds\": %.6f, \"rps\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"errors\": %llu, \"warmup_requests\": %llu, \"connections\": %d, "
           "\"size\": %zu}\n",
           (unsigned long long)window_requests, seconds,
           seconds > 0 ? window_requests / seconds : 0.0,
           hist_percentile_us(0.50), hist_percentile_us(0.99), hist_max_ns / 1000.0,
           (unsigned long long)errors, (unsigned long long)warmup_requests, nconns,
           msg_size);
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    return errors ? 1 : 0;
}
