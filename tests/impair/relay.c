/*
 * UDP impairment relay for the aiopquic tests and benchmarks.
 *
 * This machine's kernel has no netem, so path impairments are applied in user space: the
 * relay listens on one UDP address, forwards every datagram it receives there to one
 * upstream (server) address, and sends the upstream's replies back to the client they
 * belong to.  Each client source address gets its own upstream socket (like a NAT), so
 * the server sees one distinct peer per client, and "rebinding" that socket moves the
 * client as seen from the server.
 *
 * Per direction (c2s = client to server, s2c = server to client) the relay can drop
 * oversize datagrams (mtu), lose packets at random or in bursts (Gilbert-Elliott), delay
 * them with jitter (FIFO unless reordering is asked for), reorder, duplicate, corrupt,
 * rate-limit through a bounded drop-tail queue, and black-hole a direction for a while.
 *
 * Single thread, one epoll loop: recvmmsg/sendmmsg batches, a binary min-heap of held
 * packets ordered by departure time, one timerfd armed at the earliest departure.
 *
 * Control: one command per line on stdin, one JSON line per answer on stdout (see
 * docs/impairment-relay.md).  The relay exits when stdin closes, on "quit", or after
 * --max-seconds.
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o relay relay.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64                  /* datagrams per recvmmsg / sendmmsg call */
#define RECV_ROUNDS 8             /* recvmmsg calls per readable socket per loop turn */
#define MAX_DGRAM 65536           /* largest UDP payload we accept */
#define MAX_SESSIONS 4096         /* client mappings (never expire; new clients dropped) */
#define HELD_BYTES_CAP (64u << 20) /* all held (delayed / queued) packets together */
#define HELD_PKTS_CAP 262144u
#define SOCK_BUF (8 << 20)        /* SO_RCVBUF / SO_SNDBUF request (the kernel may clamp) */
#define DEFAULT_QUEUE_MIN 65536.0 /* smallest automatic rate-limit queue, bytes */
#define DEFAULT_QUEUE_SEC 0.05    /* automatic queue = 50 ms of the configured rate */

#define C2S 0
#define S2C 1

#define TAG_LISTEN 1u
#define TAG_STDIN 2u
#define TAG_TIMER 3u
#define TAG_SESSION_BASE 16u

/* ------------------------------------------------------------------ time, randomness */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state;

static uint64_t rng_next(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void) /* uniform in [0, 1) */
{
    return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

static bool chance(double p)
{
    return p > 0.0 && (p >= 1.0 || rng_unit() < p);
}

/* ------------------------------------------------------------------ configuration */

struct impair {
    uint32_t mtu;         /* 0 = no limit */
    double loss;          /* random loss probability (good state) */
    double burst_enter;   /* P(good -> bad) per packet; 0 = no burst model */
    double burst_exit;    /* P(bad -> good) per packet */
    double burst_loss;    /* loss probability in the bad state */
    double delay_ms;
    double jitter_ms;     /* uniform +- */
    double reorder;       /* P(a packet is held back reorder_ms) */
    double reorder_ms;
    double dup;
    double corrupt;
    double rate_mbit;     /* 0 = unlimited */
    double queue_bytes;   /* 0 = automatic (see DEFAULT_QUEUE_*) */
};

static void impair_defaults(struct impair *im)
{
    memset(im, 0, sizeof *im);
    im->burst_loss = 1.0;
    im->reorder_ms = 10.0;
}

struct counters {
    uint64_t received, rx_bytes;
    uint64_t forwarded, bytes;
    uint64_t dropped_mtu, dropped_loss, dropped_queue, dropped_blackhole;
    uint64_t dropped_send, dropped_nosession;
    uint64_t duplicated, corrupted, reordered;
};

struct direction {
    struct impair im;
    struct counters c;
    bool bad_state;          /* Gilbert-Elliott state */
    uint64_t blackhole_until; /* monotonic ns; 0 = none */
    uint64_t link_free_ns;   /* rate limiter: when the link finishes its backlog */
    uint64_t last_departure; /* FIFO clamp for non-reordered packets */
    uint64_t held_fifo;      /* held packets that are not deliberately reordered */
    uint64_t held;           /* all held packets of this direction */
};

static struct direction dirs[2];

/* ------------------------------------------------------------------ sessions (NAT) */

struct session {
    struct sockaddr_storage client;
    socklen_t client_len;
    int fd;                         /* upstream socket, connected to the upstream */
    struct sockaddr_storage local;  /* its local address (what the server sees) */
    socklen_t local_len;
};

static struct session *sessions[MAX_SESSIONS];
static unsigned n_sessions;
static unsigned last_hit;

static int epfd = -1, listen_fd = -1, timer_fd = -1;
static struct sockaddr_storage listen_addr, upstream_addr;
static socklen_t listen_len, upstream_len;
static unsigned rebind_addr_next = 2; /* next 127.0.0.N for "rebind addr" */

/* ------------------------------------------------------------------ small helpers */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("{\"event\":\"error\",\"error\":\"", stdout);
    vprintf(fmt, ap);
    fputs("\"}\n", stdout);
    va_end(ap);
    fflush(stdout);
    exit(2);
}

static void addr_str(const struct sockaddr_storage *ss, char *host, size_t hostlen, int *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, (socklen_t)hostlen);
        *port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, (socklen_t)hostlen);
        *port = ntohs(s4->sin_port);
    }
}

static int parse_addr(const char *host, const char *port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    char *end;
    long p = strtol(port, &end, 10);
    if (*end || p < 0 || p > 65535)
        return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p);
        *len = sizeof *s4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p);
        *len = sizeof *s6;
        return 0;
    }
    return -1;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0 &&
           x->sin6_scope_id == y->sin6_scope_id;
}

static void tune_socket(int fd)
{
    int v = SOCK_BUF;
    /* The *FORCE variants need CAP_NET_ADMIN; fall back to the clamped request. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

static void epoll_add(int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* A fresh upstream socket bound to `bind_to` (or the wildcard of the upstream's family,
 * port 0), connected to the upstream.  Returns the fd or -1. */
static int upstream_socket(const struct sockaddr_storage *bind_to, socklen_t bind_len,
                           struct sockaddr_storage *local, socklen_t *local_len)
{
    int fd = socket(upstream_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    tune_socket(fd);
    if (bind_to && bind(fd, (const struct sockaddr *)bind_to, bind_len) < 0)
        goto fail;
    if (connect(fd, (const struct sockaddr *)&upstream_addr, upstream_len) < 0)
        goto fail;
    *local_len = sizeof *local;
    if (getsockname(fd, (struct sockaddr *)local, local_len) < 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

static struct session *session_for(const struct sockaddr_storage *client, socklen_t len)
{
    if (n_sessions && same_addr(&sessions[last_hit]->client, client))
        return sessions[last_hit];
    for (unsigned i = 0; i < n_sessions; i++) {
        if (same_addr(&sessions[i]->client, client)) {
            last_hit = i;
            return sessions[i];
        }
    }
    if (n_sessions == MAX_SESSIONS)
        return NULL;
    struct session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = upstream_socket(NULL, 0, &s->local, &s->local_len);
    if (s->fd < 0) {
        free(s);
        return NULL;
    }
    memcpy(&s->client, client, len);
    s->client_len = len;
    epoll_add(s->fd, TAG_SESSION_BASE + n_sessions);
    last_hit = n_sessions;
    sessions[n_sessions++] = s;
    return s;
}

/* ------------------------------------------------------------------ held packets (heap) */

struct pkt {
    uint64_t due;    /* departure, monotonic ns */
    uint64_t seq;    /* tie-break: equal departures leave in arrival order */
    uint32_t len;
    uint16_t dir;
    uint16_t reordered;
    uint32_t sess;   /* session index */
    unsigned char data[];
};

static struct pkt **heap;
static size_t heap_len, heap_cap;
static uint64_t held_bytes, seq_counter;

static bool pkt_before(const struct pkt *a, const struct pkt *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static bool heap_push(struct pkt *p)
{
    if (heap_len == heap_cap) {
        size_t cap = heap_cap ? heap_cap * 2 : 1024;
        struct pkt **h = realloc(heap, cap * sizeof *h);
        if (!h)
            return false;
        heap = h;
        heap_cap = cap;
    }
    size_t i = heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pkt_before(p, heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = p;
    return true;
}

static struct pkt *heap_pop(void)
{
    struct pkt *top = heap[0];
    struct pkt *last = heap[--heap_len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct pkt *best = last;
        if (l < heap_len && pkt_before(heap[l], best)) {
            m = l;
            best = heap[l];
        }
        if (r < heap_len && pkt_before(heap[r], best))
            m = r;
        if (m == i)
            break;
        heap[i] = heap[m];
        i = m;
    }
    if (heap_len)
        heap[i] = last;
    return top;
}

/* ------------------------------------------------------------------ output batches */

/* Datagrams ready to leave now.  c2s entries go out of their session's upstream socket
 * (consecutive entries with the same fd share one sendmmsg); s2c entries go out of the
 * listening socket to the client's address. */
struct outq {
    struct mmsghdr msg[2 * BATCH];
    struct iovec iov[2 * BATCH];
    int fd[2 * BATCH];
    uint8_t dir[2 * BATCH];
    struct pkt *owned[2 * BATCH]; /* held packet to free after sending, or NULL */
    unsigned n;
};

static struct outq out;

static void out_flush(void)
{
    unsigned i = 0;
    while (i < out.n) {
        unsigned j = i + 1;
        while (j < out.n && out.fd[j] == out.fd[i])
            j++;
        unsigned k = i;
        while (k < j) {
            int r = sendmmsg(out.fd[i], &out.msg[k], j - k, MSG_DONTWAIT);
            if (r <= 0) {
                /* The first message failed (full buffer, ICMP error...): a router drops. */
                dirs[out.dir[k]].c.dropped_send++;
                k++;
                continue;
            }
            for (int m = 0; m < r; m++, k++) {
                dirs[out.dir[k]].c.forwarded++;
                dirs[out.dir[k]].c.bytes += out.iov[k].iov_len;
            }
        }
        i = j;
    }
    for (i = 0; i < out.n; i++) {
        if (out.owned[i]) {
            held_bytes -= out.owned[i]->len;
            free(out.owned[i]);
        }
    }
    out.n = 0;
}

static void out_add(int dir, unsigned sess, void *data, uint32_t len, struct pkt *owned)
{
    if (out.n == 2 * BATCH)
        out_flush();
    struct session *s = sessions[sess];
    unsigned i = out.n++;
    out.iov[i].iov_base = data;
    out.iov[i].iov_len = len;
    memset(&out.msg[i], 0, sizeof out.msg[i]);
    out.msg[i].msg_hdr.msg_iov = &out.iov[i];
    out.msg[i].msg_hdr.msg_iovlen = 1;
    if (dir == C2S) {
        out.fd[i] = s->fd;
    } else {
        out.fd[i] = listen_fd;
        out.msg[i].msg_hdr.msg_name = &s->client;
        out.msg[i].msg_hdr.msg_namelen = s->client_len;
    }
    out.dir[i] = (uint8_t)dir;
    out.owned[i] = owned;
}

/* ------------------------------------------------------------------ the pipeline */

static double queue_limit(const struct impair *im)
{
    if (im->queue_bytes > 0)
        return im->queue_bytes;
    double auto_q = im->rate_mbit * 1e6 / 8.0 * DEFAULT_QUEUE_SEC;
    return auto_q > DEFAULT_QUEUE_MIN ? auto_q : DEFAULT_QUEUE_MIN;
}

/* Schedule one copy of a datagram: rate limiter, delay, jitter, reordering.  Either
 * queues it for immediate sending (pointing at `data`, which must live until the next
 * out_flush) or copies it into the heap. */
static void schedule(int dir, unsigned sess, unsigned char *data, uint32_t len, uint64_t now)
{
    struct direction *d = &dirs[dir];
    const struct impair *im = &d->im;
    uint64_t depart = now;

    if (im->rate_mbit > 0) {
        double bytes_per_ns = im->rate_mbit * 1e6 / 8.0 / 1e9;
        uint64_t start = d->link_free_ns > now ? d->link_free_ns : now;
        double backlog = (double)(start - now) * bytes_per_ns;
        if (backlog + len > queue_limit(im)) {
            d->c.dropped_queue++;
            return;
        }
        d->link_free_ns = start + (uint64_t)((double)len / bytes_per_ns);
        depart = d->link_free_ns;
    }
    double extra_ms = im->delay_ms;
    if (im->jitter_ms > 0)
        extra_ms += (rng_unit() * 2.0 - 1.0) * im->jitter_ms;
    if (extra_ms > 0)
        depart += (uint64_t)(extra_ms * 1e6);

    bool reorder = chance(im->reorder) && im->reorder_ms > 0;
    if (reorder) {
        depart += (uint64_t)(im->reorder_ms * 1e6);
        d->c.reordered++;
    } else {
        /* Jitter alone never reorders: keep departures of a direction monotonic. */
        if (depart < d->last_departure)
            depart = d->last_departure;
        d->last_departure = depart;
    }

    if (!reorder && depart <= now && d->held_fifo == 0) {
        out_add(dir, sess, data, len, NULL);
        return;
    }
    if (held_bytes + len > HELD_BYTES_CAP || heap_len >= HELD_PKTS_CAP) {
        d->c.dropped_queue++;
        return;
    }
    struct pkt *p = malloc(sizeof *p + len);
    if (!p) {
        d->c.dropped_queue++;
        return;
    }
    p->due = depart;
    p->seq = seq_counter++;
    p->len = len;
    p->dir = (uint16_t)dir;
    p->reordered = reorder;
    p->sess = sess;
    memcpy(p->data, data, len);
    if (!heap_push(p)) {
        free(p);
        d->c.dropped_queue++;
        return;
    }
    held_bytes += len;
    d->held++;
    if (!reorder)
        d->held_fifo++;
}

static void process(int dir, unsigned sess, unsigned char *data, uint32_t len, uint64_t now)
{
    struct direction *d = &dirs[dir];
    const struct impair *im = &d->im;
    d->c.received++;
    d->c.rx_bytes += len;

    if (d->blackhole_until) {
        if (now < d->blackhole_until) {
            d->c.dropped_blackhole++;
            return;
        }
        d->blackhole_until = 0;
    }
    if (im->mtu && len > im->mtu) {
        d->c.dropped_mtu++;
        return;
    }
    double p_loss = im->loss;
    if (im->burst_enter > 0) {
        if (d->bad_state) {
            if (chance(im->burst_exit))
                d->bad_state = false;
        } else if (chance(im->burst_enter)) {
            d->bad_state = true;
        }
        if (d->bad_state)
            p_loss = im->burst_loss;
    }
    if (chance(p_loss)) {
        d->c.dropped_loss++;
        return;
    }
    if (len > 0 && chance(im->corrupt)) {
        uint64_t r = rng_next();
        data[r % len] ^= (unsigned char)(1u << ((r >> 32) % 8));
        d->c.corrupted++;
    }
    schedule(dir, sess, data, len, now);
    if (chance(im->dup)) {
        d->c.duplicated++;
        schedule(dir, sess, data, len, now);
    }
}

/* Send every held packet that is due. */
static void release_due(uint64_t now)
{
    while (heap_len && heap[0]->due <= now) {
        struct pkt *p = heap_pop();
        struct direction *d = &dirs[p->dir];
        d->held--;
        if (!p->reordered)
            d->held_fifo--;
        out_add(p->dir, p->sess, p->data, p->len, p);
    }
    out_flush();
}

/* ------------------------------------------------------------------ receiving */

static unsigned char rxbuf[BATCH][MAX_DGRAM];
static struct mmsghdr rxmsg[BATCH];
static struct iovec rxiov[BATCH];
static struct sockaddr_storage rxaddr[BATCH];

static int receive_batch(int fd)
{
    for (unsigned i = 0; i < BATCH; i++) {
        rxiov[i].iov_base = rxbuf[i];
        rxiov[i].iov_len = MAX_DGRAM;
        memset(&rxmsg[i].msg_hdr, 0, sizeof rxmsg[i].msg_hdr);
        rxmsg[i].msg_hdr.msg_iov = &rxiov[i];
        rxmsg[i].msg_hdr.msg_iovlen = 1;
        rxmsg[i].msg_hdr.msg_name = &rxaddr[i];
        rxmsg[i].msg_hdr.msg_namelen = sizeof rxaddr[i];
    }
    return recvmmsg(fd, rxmsg, BATCH, MSG_DONTWAIT, NULL);
}

static void on_listen_readable(void)
{
    for (int round = 0; round < RECV_ROUNDS; round++) {
        int n = receive_batch(listen_fd);
        if (n <= 0)
            break;
        uint64_t now = now_ns();
        for (int i = 0; i < n; i++) {
            struct session *s = session_for(&rxaddr[i], rxmsg[i].msg_hdr.msg_namelen);
            if (!s) {
                dirs[C2S].c.received++;
                dirs[C2S].c.dropped_nosession++;
                continue;
            }
            process(C2S, last_hit, rxbuf[i], rxmsg[i].msg_len, now);
        }
        out_flush();
        if (n < BATCH)
            break;
    }
}

static void on_session_readable(unsigned idx)
{
    struct session *s = sessions[idx];
    for (int round = 0; round < RECV_ROUNDS; round++) {
        int n = receive_batch(s->fd);
        if (n <= 0)
            break;
        uint64_t now = now_ns();
        for (int i = 0; i < n; i++)
            process(S2C, idx, rxbuf[i], rxmsg[i].msg_len, now);
        out_flush();
        if (n < BATCH)
            break;
    }
}

/* ------------------------------------------------------------------ control */

static void reply_error(const char *msg)
{
    printf("{\"ok\":false,\"error\":\"%s\"}\n", msg);
}

static void print_counters(const struct direction *d)
{
    const struct counters *c = &d->c;
    printf("{\"received\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"forwarded\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"dropped_mtu\":%" PRIu64 ",\"dropped_loss\":%" PRIu64
           ",\"dropped_queue\":%" PRIu64 ",\"dropped_blackhole\":%" PRIu64
           ",\"dropped_send\":%" PRIu64 ",\"dropped_nosession\":%" PRIu64
           ",\"duplicated\":%" PRIu64 ",\"corrupted\":%" PRIu64 ",\"reordered\":%" PRIu64
           ",\"held\":%" PRIu64 "}",
           c->received, c->rx_bytes, c->forwarded, c->bytes, c->dropped_mtu, c->dropped_loss,
           c->dropped_queue, c->dropped_blackhole, c->dropped_send, c->dropped_nosession,
           c->duplicated, c->corrupted, c->reordered, d->held);
}

static void print_config(const struct impair *im)
{
    printf("{\"mtu\":%u,\"loss\":%g,\"burst_enter\":%g,\"burst_exit\":%g,\"burst_loss\":%g,"
           "\"delay_ms\":%g,\"jitter_ms\":%g,\"reorder\":%g,\"reorder_ms\":%g,\"dup\":%g,"
           "\"corrupt\":%g,\"rate_mbit\":%g,\"queue_bytes\":%g}",
           im->mtu, im->loss, im->burst_enter, im->burst_exit, im->burst_loss, im->delay_ms,
           im->jitter_ms, im->reorder, im->reorder_ms, im->dup, im->corrupt, im->rate_mbit,
           im->rate_mbit > 0 ? queue_limit(im) : im->queue_bytes);
}

static void print_session_list(void)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    putchar('[');
    for (unsigned i = 0; i < n_sessions; i++) {
        addr_str(&sessions[i]->client, host, sizeof host, &port);
        printf("%s{\"client\":[\"%s\",%d],", i ? "," : "", host, port);
        addr_str(&sessions[i]->local, host, sizeof host, &port);
        printf("\"upstream_local\":[\"%s\",%d]}", host, port);
    }
    putchar(']');
}

/* Parse "c2s" / "s2c" / "both" into a bit mask; 0 if invalid. */
static int parse_dirs(const char *word)
{
    if (!word)
        return 0;
    if (!strcmp(word, "c2s"))
        return 1;
    if (!strcmp(word, "s2c"))
        return 2;
    if (!strcmp(word, "both"))
        return 3;
    return 0;
}

static bool parse_number(const char *text, double lo, double hi, double *out_val)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi))
        return false;
    *out_val = v;
    return true;
}

/* Apply one key=value to `im`; false (with *why set) if unknown or out of range. */
static bool apply_param(struct impair *im, char *kv, const char **why)
{
    char *eq = strchr(kv, '=');
    if (!eq) {
        *why = "expected key=value";
        return false;
    }
    *eq = 0;
    const char *key = kv, *val = eq + 1;
    double v;
    struct {
        const char *name;
        double *field;
        double lo, hi;
    } table[] = {
        {"loss", &im->loss, 0, 1},
        {"burst_enter", &im->burst_enter, 0, 1},
        {"burst_exit", &im->burst_exit, 0, 1},
        {"burst_loss", &im->burst_loss, 0, 1},
        {"delay_ms", &im->delay_ms, 0, 60000},
        {"jitter_ms", &im->jitter_ms, 0, 60000},
        {"reorder", &im->reorder, 0, 1},
        {"reorder_ms", &im->reorder_ms, 0, 60000},
        {"dup", &im->dup, 0, 1},
        {"corrupt", &im->corrupt, 0, 1},
        {"rate_mbit", &im->rate_mbit, 0, 1e6},
        {"queue_bytes", &im->queue_bytes, 0, HELD_BYTES_CAP},
    };
    if (!strcmp(key, "mtu")) {
        if (!parse_number(val, 0, MAX_DGRAM, &v)) {
            *why = "mtu out of range";
            return false;
        }
        im->mtu = (uint32_t)v;
        return true;
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (!strcmp(key, table[i].name)) {
            if (!parse_number(val, table[i].lo, table[i].hi, &v)) {
                *why = "value out of range";
                return false;
            }
            *table[i].field = v;
            return true;
        }
    }
    *why = "unknown parameter";
    return false;
}

static void cmd_set(char *args)
{
    char *save = NULL;
    int mask = parse_dirs(strtok_r(args, " \t", &save));
    if (!mask) {
        reply_error("direction must be c2s, s2c or both");
        return;
    }
    /* Validate everything on copies first: a bad command changes nothing. */
    struct impair next[2] = {dirs[0].im, dirs[1].im};
    char *tok;
    while ((tok = strtok_r(NULL, " \t", &save))) {
        for (int d = 0; d < 2; d++) {
            if (!(mask & (1 << d)))
                continue;
            char copy[256];
            snprintf(copy, sizeof copy, "%s", tok);
            const char *why = NULL;
            if (!apply_param(&next[d], copy, &why)) {
                printf("{\"ok\":false,\"error\":\"%s\",\"param\":\"", why);
                for (const char *c = tok; *c && c - tok < 64; c++)
                    if (*c != '"' && *c != '\\' && (unsigned char)*c >= 0x20)
                        putchar(*c);
                puts("\"}");
                return;
            }
        }
    }
    for (int d = 0; d < 2; d++) {
        if (!(mask & (1 << d)))
            continue;
        if (next[d].burst_enter == 0)
            dirs[d].bad_state = false;
        dirs[d].im = next[d];
    }
    printf("{\"ok\":true,\"c2s\":");
    print_config(&dirs[C2S].im);
    printf(",\"s2c\":");
    print_config(&dirs[S2C].im);
    puts("}");
}

static void cmd_blackhole(char *args)
{
    char *save = NULL;
    int mask = parse_dirs(strtok_r(args, " \t", &save));
    char *secs = strtok_r(NULL, " \t", &save);
    double v;
    if (!mask || !secs || !parse_number(secs, 0, 86400, &v)) {
        reply_error("usage: blackhole c2s|s2c|both SECONDS");
        return;
    }
    uint64_t until = v > 0 ? now_ns() + (uint64_t)(v * 1e9) : 0;
    for (int d = 0; d < 2; d++)
        if (mask & (1 << d))
            dirs[d].blackhole_until = until;
    printf("{\"ok\":true,\"seconds\":%g}\n", v);
}

static void cmd_rebind(char *args)
{
    char *save = NULL;
    char *kind = strtok_r(args, " \t", &save);
    bool addr;
    if (kind && !strcmp(kind, "port"))
        addr = false;
    else if (kind && !strcmp(kind, "addr"))
        addr = true;
    else {
        reply_error("usage: rebind port|addr");
        return;
    }
    struct sockaddr_storage bind_to;
    socklen_t bind_len = 0;
    bool addr_changed = false;
    if (addr && upstream_addr.ss_family == AF_INET) {
        /* The whole of 127.0.0.0/8 is local on Linux: move to the next 127.0.0.N. */
        struct sockaddr_in *s4 = (struct sockaddr_in *)&bind_to;
        memset(&bind_to, 0, sizeof bind_to);
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(0x7f000000u | rebind_addr_next);
        rebind_addr_next = rebind_addr_next >= 254 ? 2 : rebind_addr_next + 1;
        bind_len = sizeof *s4;
        addr_changed = true;
    }
    /* IPv6 loopback has only ::1, so "rebind addr" there changes the port only. */
    for (unsigned i = 0; i < n_sessions; i++) {
        struct session *s = sessions[i];
        struct sockaddr_storage local;
        socklen_t local_len;
        int fd = upstream_socket(bind_len ? &bind_to : NULL, bind_len, &local, &local_len);
        if (fd < 0) {
            printf("{\"ok\":false,\"error\":\"cannot open upstream socket: %s\"}\n",
                   strerror(errno));
            return;
        }
        /* Closing the old socket drops whatever the server still sends to it, like a NAT
         * that forgot the old binding. */
        close(s->fd);
        s->fd = fd;
        s->local = local;
        s->local_len = local_len;
        epoll_add(fd, TAG_SESSION_BASE + i);
    }
    printf("{\"ok\":true,\"kind\":\"%s\",\"addr_changed\":%s,\"sessions\":", kind,
           addr_changed ? "true" : "false");
    print_session_list();
    puts("}");
}

static void cmd_stats(void)
{
    printf("{\"ok\":true,\"c2s\":");
    print_counters(&dirs[C2S]);
    printf(",\"s2c\":");
    print_counters(&dirs[S2C]);
    printf(",\"sessions\":%u,\"held_bytes\":%" PRIu64 "}\n", n_sessions, held_bytes);
}

/* Returns false when the relay should exit. */
static bool handle_command(char *line)
{
    char *save = NULL;
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
        line[--len] = 0;
    char *cmd = strtok_r(line, " \t", &save);
    char *rest = save ? save : line + len;
    if (!cmd) {
        reply_error("empty command");
    } else if (!strcmp(cmd, "set")) {
        cmd_set(rest);
    } else if (!strcmp(cmd, "blackhole")) {
        cmd_blackhole(rest);
    } else if (!strcmp(cmd, "rebind")) {
        cmd_rebind(rest);
    } else if (!strcmp(cmd, "stats")) {
        cmd_stats();
    } else if (!strcmp(cmd, "sessions")) {
        printf("{\"ok\":true,\"sessions\":");
        print_session_list();
        puts("}");
    } else if (!strcmp(cmd, "zero")) {
        memset(&dirs[C2S].c, 0, sizeof dirs[C2S].c);
        memset(&dirs[S2C].c, 0, sizeof dirs[S2C].c);
        puts("{\"ok\":true}");
    } else if (!strcmp(cmd, "reset")) {
        for (int d = 0; d < 2; d++) {
            impair_defaults(&dirs[d].im);
            dirs[d].bad_state = false;
            dirs[d].blackhole_until = 0;
        }
        puts("{\"ok\":true}");
    } else if (!strcmp(cmd, "quit")) {
        puts("{\"ok\":true}");
        return false;
    } else {
        reply_error("unknown command");
    }
    return true;
}

static char ctl_buf[8192];
static size_t ctl_len;

/* Returns false on EOF / quit. */
static bool on_stdin_readable(void)
{
    ssize_t n = read(STDIN_FILENO, ctl_buf + ctl_len, sizeof ctl_buf - 1 - ctl_len);
    if (n == 0)
        return false;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    ctl_len += (size_t)n;
    bool keep = true;
    char *start = ctl_buf;
    char *nl;
    while (keep && (nl = memchr(start, '\n', ctl_len - (size_t)(start - ctl_buf)))) {
        *nl = 0;
        keep = handle_command(start);
        fflush(stdout);
        start = nl + 1;
    }
    ctl_len -= (size_t)(start - ctl_buf);
    memmove(ctl_buf, start, ctl_len);
    if (ctl_len == sizeof ctl_buf - 1) { /* an absurdly long line: discard it */
        ctl_len = 0;
        reply_error("line too long");
        fflush(stdout);
    }
    return keep;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fputs("usage: relay --upstream-host H --upstream-port P [--listen-host H] "
          "[--listen-port P] [--seed N] [--max-seconds S]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *lhost = "127.0.0.1", *lport = "0", *uhost = NULL, *uport = NULL;
    double max_seconds = 600;
    uint64_t seed = 0;
    bool have_seed = false;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        const char *k = argv[i], *v = argv[++i];
        if (!strcmp(k, "--listen-host"))
            lhost = v;
        else if (!strcmp(k, "--listen-port"))
            lport = v;
        else if (!strcmp(k, "--upstream-host"))
            uhost = v;
        else if (!strcmp(k, "--upstream-port"))
            uport = v;
        else if (!strcmp(k, "--seed")) {
            seed = strtoull(v, NULL, 0);
            have_seed = true;
        } else if (!strcmp(k, "--max-seconds"))
            max_seconds = strtod(v, NULL);
        else
            usage();
    }
    if (!uhost || !uport)
        usage();
    if (parse_addr(lhost, lport, &listen_addr, &listen_len) < 0)
        die("bad listen address");
    if (parse_addr(uhost, uport, &upstream_addr, &upstream_len) < 0)
        die("bad upstream address");
    rng_state = have_seed ? seed : (now_ns() ^ ((uint64_t)getpid() << 32));
    for (int d = 0; d < 2; d++)
        impair_defaults(&dirs[d].im);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    listen_fd = socket(listen_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0)
        die("socket: %s", strerror(errno));
    tune_socket(listen_fd);
    if (bind(listen_fd, (struct sockaddr *)&listen_addr, listen_len) < 0)
        die("bind: %s", strerror(errno));
    listen_len = sizeof listen_addr;
    getsockname(listen_fd, (struct sockaddr *)&listen_addr, &listen_len);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer_fd < 0)
        die("timerfd_create: %s", strerror(errno));
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    epoll_add(listen_fd, TAG_LISTEN);
    epoll_add(STDIN_FILENO, TAG_STDIN);
    epoll_add(timer_fd, TAG_TIMER);

    char host[INET6_ADDRSTRLEN], uh[INET6_ADDRSTRLEN];
    int port, up;
    addr_str(&listen_addr, host, sizeof host, &port);
    addr_str(&upstream_addr, uh, sizeof uh, &up);
    printf("{\"event\":\"listening\",\"host\":\"%s\",\"port\":%d,\"upstream\":[\"%s\",%d],"
           "\"pid\":%d,\"seed\":%" PRIu64 "}\n",
           host, port, uh, up, (int)getpid(), have_seed ? seed : 0);
    fflush(stdout);

    uint64_t deadline = now_ns() + (uint64_t)(max_seconds * 1e9);
    uint64_t armed = 0;
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline)
            break;
        release_due(now);
        uint64_t want = heap_len ? heap[0]->due : 0;
        if (want != armed) {
            struct itimerspec its = {0};
            its.it_value.tv_sec = (time_t)(want / 1000000000u);
            its.it_value.tv_nsec = (long)(want % 1000000000u);
            timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
            armed = want;
        }
        uint64_t left_ms = (deadline - now) / 1000000u + 1;
        int n = epoll_wait(epfd, evs, 64, left_ms > 1000 ? 1000 : (int)left_ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_LISTEN) {
                on_listen_readable();
            } else if (tag == TAG_STDIN) {
                if (!on_stdin_readable())
                    return 0;
            } else if (tag == TAG_TIMER) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) < 0) {
                    /* EAGAIN: already consumed; nothing to do */
                }
                armed = 0; /* one-shot: it fired, re-arm on the next turn if needed */
            } else {
                unsigned idx = (unsigned)(tag - TAG_SESSION_BASE);
                if (idx < n_sessions)
                    on_session_readable(idx);
            }
        }
    }
    return 0;
}
