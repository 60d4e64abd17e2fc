/*
 * endpoint.c - one UDP socket, one network thread, the rings between it and Python.
 *
 * The thread owns every ngtcp2 object.  It sleeps in epoll_wait on: the socket, a timerfd
 * armed at the earliest connection expiry, and an eventfd Python writes after pushing
 * commands.  It wakes Python through a second eventfd once per batch of events.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <netinet/udp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define AQ_SCID_LEN 18
#define AQ_SOCKBUF (8 * 1024 * 1024)

/* Strictly increasing per thread (each network thread has its own), so a timestamp taken
 * later is always greater than one taken earlier, as ngtcp2 requires. */
ngtcp2_tstamp aq_now(void) {
  static _Thread_local ngtcp2_tstamp last;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ngtcp2_tstamp t = (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
  if (t <= last) t = last + 1;
  last = t;
  return t;
}

void aq_rand_bytes(uint8_t *dst, size_t n) {
  if (gnutls_rnd(GNUTLS_RND_RANDOM, dst, n) != 0) {
    /* gnutls_rnd does not fail in practice; never leave the buffer undefined */
    for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)(aq_now() >> (i % 8));
  }
}

const char *aq_ngtcp2_version(void) { return ngtcp2_version(0)->version_str; }
const char *aq_gnutls_version(void) { return gnutls_check_version(NULL); }

/* ---------------------------------------------------------------- events */

static void set_sock_in(struct aq_endpoint *ep, int on) {
  struct epoll_event ev = {.events = (on ? EPOLLIN : 0) | (ep->want_out ? EPOLLOUT : 0),
                           .data.fd = ep->fd};
  epoll_ctl(ep->epfd, EPOLL_CTL_MOD, ep->fd, &ev);
}

void aq_emit(struct aq_endpoint *ep, const aq_event *ev) {
  ep->ev_pushed++;
  if (!ep->ovf_head && aq_ring_push(&ep->events, ev) == 0) return;
  aq_evnode *n = malloc(sizeof(*n));
  if (!n) { /* out of memory: the event is lost, free its payload */
    free(ev->data);
    return;
  }
  n->next = NULL;
  n->ev = *ev;
  if (ep->ovf_tail)
    ep->ovf_tail->next = n;
  else
    ep->ovf_head = n;
  ep->ovf_tail = n;
  if (!atomic_load(&ep->ev_blocked)) {
    atomic_store(&ep->ev_blocked, 1);
    set_sock_in(ep, 0); /* stop reading packets until Python catches up */
  }
}

void aq_emit_simple(struct aq_endpoint *ep, uint32_t type, uint64_t conn, int64_t sid,
                    uint64_t code, uint64_t code2, uint32_t flags, const void *data,
                    size_t len) {
  aq_event ev = {type, flags, conn, sid, code, code2, NULL, len};
  if (data && len) {
    ev.data = malloc(len);
    if (!ev.data) return;
    memcpy(ev.data, data, len);
  } else {
    ev.len = 0;
  }
  aq_emit(ep, &ev);
}

static void flush_overflow(struct aq_endpoint *ep) {
  while (ep->ovf_head && aq_ring_push(&ep->events, &ep->ovf_head->ev) == 0) {
    aq_evnode *n = ep->ovf_head;
    ep->ovf_head = n->next;
    free(n);
    ep->ev_pushed++;
  }
  if (!ep->ovf_head) {
    ep->ovf_tail = NULL;
    if (atomic_load(&ep->ev_blocked)) {
      atomic_store(&ep->ev_blocked, 0);
      set_sock_in(ep, 1);
    }
  }
}

static void wake_python(struct aq_endpoint *ep) {
  if (!ep->ev_pushed) return;
  ep->ev_pushed = 0;
  uint64_t one = 1;
  ssize_t r = write(ep->ev_efd, &one, sizeof(one));
  (void)r;
}

/* ---------------------------------------------------------------- CID table */

int aq_register_cid(aq_conn *c, const ngtcp2_cid *cid) {
  if (c->ncids == c->capcids) {
    int cap = c->capcids ? c->capcids * 2 : 8;
    ngtcp2_cid *n = realloc(c->cids, (size_t)cap * sizeof(*n));
    if (!n) return -1;
    c->cids = n;
    c->capcids = cap;
  }
  c->cids[c->ncids++] = *cid;
  return aq_map_put(&c->ep->by_cid, cid->data, cid->datalen, c);
}

void aq_unregister_cid(aq_conn *c, const ngtcp2_cid *cid) {
  for (int i = 0; i < c->ncids; i++) {
    if (ngtcp2_cid_eq(&c->cids[i], cid)) {
      c->cids[i] = c->cids[--c->ncids];
      break;
    }
  }
  if (aq_map_get(&c->ep->by_cid, cid->data, cid->datalen) == c)
    aq_map_del(&c->ep->by_cid, cid->data, cid->datalen);
}

/* ---------------------------------------------------------------- sending */

static int send_raw(struct aq_endpoint *ep, const struct sockaddr *to, socklen_t tolen,
                    const uint8_t *data, size_t len, size_t seg) {
  struct iovec iov = {(void *)data, len};
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!ep->connected) {
    msg.msg_name = (void *)to;
    msg.msg_namelen = tolen;
  }
  if (seg && seg < len) {
    memset(&u, 0, sizeof(u));
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s, sizeof(s));
  }
  for (;;) {
    ssize_t n = sendmsg(ep->fd, &msg, 0);
    if (n >= 0) return 0;
    if (errno == EINTR) continue;
    return -errno;
  }
}

/* Returns 0 when sent (or dropped for good), 1 when the socket is full and the batch was
 * kept for EPOLLOUT. */
int aq_send_packets(struct aq_endpoint *ep, const ngtcp2_path *path, const uint8_t *data,
                    size_t len, size_t seg) {
  const struct sockaddr *to = path->remote.addr;
  socklen_t tolen = path->remote.addrlen;
  if (seg >= len) seg = 0;
  if (seg && !ep->gso_ok) {
    for (size_t off = 0; off < len; off += seg) {
      size_t n = len - off < seg ? len - off : seg;
      int rv = send_raw(ep, to, tolen, data + off, n, 0);
      if (rv == -EAGAIN || rv == -EWOULDBLOCK) {
        /* keep the rest for later */
        memmove(ep->txmem, data + off, len - off);
        ep->pend_len = len - off;
        ep->pend_seg = seg;
        goto pending;
      }
    }
    return 0;
  }
  int rv = send_raw(ep, to, tolen, data, len, seg);
  if (rv == 0) return 0;
  if (rv == -EIO && seg) { /* no GSO on this path: never try again */
    ep->gso_ok = 0;
    return aq_send_packets(ep, path, data, len, seg);
  }
  if (rv == -EAGAIN || rv == -EWOULDBLOCK) {
    if (data != ep->txmem) memmove(ep->txmem, data, len);
    ep->pend_len = len;
    ep->pend_seg = seg;
    goto pending;
  }
  return 0; /* ECONNREFUSED, EMSGSIZE, ...: the packet is lost, QUIC recovers */
pending:
  memcpy(&ep->pend_addr, to, tolen);
  ep->pend_addrlen = tolen;
  ep->pending_tx = 1;
  ep->want_out = 1;
  set_sock_in(ep, !atomic_load(&ep->ev_blocked));
  return 1;
}

static void flush_pending(struct aq_endpoint *ep) {
  if (!ep->pending_tx) return;
  ngtcp2_path path = {{NULL, 0}, {(ngtcp2_sockaddr *)&ep->pend_addr, ep->pend_addrlen}, NULL};
  ep->pending_tx = 0;
  ep->want_out = 0;
  if (aq_send_packets(ep, &path, ep->txmem, ep->pend_len, ep->pend_seg) == 0)
    set_sock_in(ep, !atomic_load(&ep->ev_blocked));
}

/* ---------------------------------------------------------------- receiving */

static void send_version_negotiation(struct aq_endpoint *ep, const ngtcp2_version_cid *vc,
                                     const struct sockaddr *to, socklen_t tolen) {
  uint8_t buf[256];
  uint32_t sv[] = {NGTCP2_PROTO_VER_V1, NGTCP2_PROTO_VER_V2};
  uint8_t unused;
  aq_rand_bytes(&unused, 1);
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), unused, vc->scid,
                                                        vc->scidlen, vc->dcid, vc->dcidlen,
                                                        sv, 2);
  if (n > 0) send_raw(ep, to, tolen, buf, (size_t)n, 0);
}

static void send_stateless_reset(struct aq_endpoint *ep, const ngtcp2_version_cid *vc,
                                 size_t pktlen, const struct sockaddr *to, socklen_t tolen) {
  /* Smaller than what triggered it, so two endpoints cannot loop; too short: stay silent. */
  if (pktlen < 43) return;
  uint8_t buf[1200], token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[1200];
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
  if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->reset_secret,
                                                   sizeof(ep->reset_secret), &cid) != 0)
    return;
  size_t len = pktlen - 1 < sizeof(buf) ? pktlen - 1 : sizeof(buf);
  size_t randlen = len - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
  aq_rand_bytes(rnd, randlen);
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, len, token, rnd, randlen);
  if (n > 0) send_raw(ep, to, tolen, buf, (size_t)n, 0);
}

static void dispatch(struct aq_endpoint *ep, struct sockaddr_storage *from, socklen_t fromlen,
                     const uint8_t *data, size_t len, ngtcp2_tstamp now) {
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, AQ_SCID_LEN);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    if (ep->cfg.is_server) send_version_negotiation(ep, &vc, (struct sockaddr *)from, fromlen);
    return;
  }
  if (rv != 0) return;
  ngtcp2_path path = {{(ngtcp2_sockaddr *)&ep->local, ep->locallen},
                      {(ngtcp2_sockaddr *)from, fromlen},
                      NULL};
  aq_conn *c = aq_map_get(&ep->by_cid, vc.dcid, vc.dcidlen);
  if (!c) {
    if (!ep->cfg.is_server) return;
    if (data[0] & 0x80) {
      ngtcp2_pkt_hd hd;
      if (ngtcp2_accept(&hd, data, len) != 0) return;
      c = aq_conn_accept(ep, &path, &hd, now);
      if (!c) return;
    } else {
      send_stateless_reset(ep, &vc, len, (struct sockaddr *)from, fromlen);
      return;
    }
  }
  aq_conn_read(c, &path, data, len, now);
}

static void fail_refused(struct aq_endpoint *ep) {
  for (aq_conn *c = ep->conns; c; c = c->next)
    if (c->state == AQ_ST_HANDSHAKE)
      aq_conn_fail(c, AQ_CLOSE_REFUSED, 0, "connection refused (nothing listens on that port)");
}

static void read_packets(struct aq_endpoint *ep) {
  struct mmsghdr msgs[AQ_RX_BATCH];
  struct iovec iov[AQ_RX_BATCH];
  struct sockaddr_storage addrs[AQ_RX_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(int)) + 64];
    struct cmsghdr align;
  } ctl[AQ_RX_BATCH];
  for (int round = 0; round < 16; round++) {
    if (atomic_load(&ep->ev_blocked)) return;
    for (int i = 0; i < AQ_RX_BATCH; i++) {
      iov[i].iov_base = ep->rxmem + (size_t)i * AQ_RX_BUFSZ;
      iov[i].iov_len = AQ_RX_BUFSZ;
      memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctl[i].buf;
      msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
    }
    int n = recvmmsg(ep->fd, msgs, AQ_RX_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNREFUSED) {
        fail_refused(ep);
        continue;
      }
      return; /* EAGAIN or a transient error */
    }
    ngtcp2_tstamp now = aq_now();
    for (int i = 0; i < n; i++) {
      size_t len = msgs[i].msg_len;
      size_t seg = len;
      for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm;
           cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
          int s;
          memcpy(&s, CMSG_DATA(cm), sizeof(s));
          if (s > 0) seg = (size_t)s;
        }
      }
      const uint8_t *base = iov[i].iov_base;
      for (size_t off = 0; off < len; off += seg) {
        size_t l = len - off < seg ? len - off : seg;
        dispatch(ep, &addrs[i], msgs[i].msg_hdr.msg_namelen, base + off, l, now);
      }
    }
    now = aq_now();
    while (ep->touched) {
      aq_conn *c = ep->touched;
      ep->touched = c->next_touched;
      c->touched = 0;
      c->next_touched = NULL;
      aq_conn_after_read(c, now);
    }
    if (n < AQ_RX_BATCH) return;
  }
}

/* ---------------------------------------------------------------- commands */

static void discard_cmd(aq_cmd *cmd) {
  switch (cmd->type) {
    case AQ_CMD_STREAM_DATA:
      if (cmd->ptr) aq_txbuf_decref(cmd->ptr);
      break;
    case AQ_CMD_DATAGRAM:
    case AQ_CMD_CLOSE:
      free(cmd->ptr);
      break;
    default:
      break;
  }
}

static void process_commands(struct aq_endpoint *ep) {
  aq_cmd cmd;
  ngtcp2_tstamp now = aq_now();
  int any = 0;
  while (aq_ring_pop(&ep->cmds, &cmd) == 0) {
    any = 1;
    if (cmd.type == AQ_CMD_STOP) {
      ep->stopping = 1;
      continue;
    }
    aq_conn *c = aq_map_get(&ep->by_handle, &cmd.conn, sizeof(cmd.conn));
    if (!c) {
      discard_cmd(&cmd);
      continue;
    }
    aq_conn_command(c, &cmd, now);
  }
  if (any && atomic_exchange(&ep->cmd_waiter, 0))
    aq_emit_simple(ep, AQ_EV_CMD_SPACE, 0, -1, 0, 0, 0, NULL, 0);
}

/* ---------------------------------------------------------------- timers, loop */

static void arm_timer(struct aq_endpoint *ep) {
  aq_conn *top = aq_sched_top(ep);
  ngtcp2_tstamp next = top ? top->expiry : UINT64_MAX;
  if (next == ep->armed) return;
  ep->armed = next;
  struct itimerspec its = {{0, 0}, {0, 0}};
  if (next != UINT64_MAX) {
    ngtcp2_tstamp now = aq_now();
    ngtcp2_tstamp d = next > now ? next - now : 1;
    its.it_value.tv_sec = (time_t)(d / NGTCP2_SECONDS);
    its.it_value.tv_nsec = (long)(d % NGTCP2_SECONDS);
  }
  timerfd_settime(ep->timerfd, 0, &its, NULL);
}

static void handle_timers(struct aq_endpoint *ep) {
  uint64_t x;
  ssize_t r = read(ep->timerfd, &x, sizeof(x));
  (void)r;
  ep->armed = 0;
  ngtcp2_tstamp now = aq_now();
  aq_conn *c;
  while ((c = aq_sched_top(ep)) && c->expiry <= now) {
    aq_sched_expiry(c, UINT64_MAX); /* the next write sets the new expiry */
    aq_conn_on_expiry(c, now);
  }
}

static void reap(struct aq_endpoint *ep) {
  if (!ep->reap_pending) return;
  ep->reap_pending = 0;
  aq_conn *c = ep->conns;
  while (c) {
    aq_conn *next = c->next;
    if (c->state == AQ_ST_DEAD) aq_conn_free(c);
    c = next;
  }
}

/* Before sleeping, poll for up to spin_ns: the answer to what was just sent usually comes
 * back within tens of microseconds, and catching it here saves a thread wake-up on each side
 * (64-byte RTT on loopback: ~250 us -> ~140 us).  sched_yield keeps a busy core for others.
 * Returns 1 if a command arrived (socket and timer events are left for epoll_wait). */
static int spin_for_work(struct aq_endpoint *ep, struct epoll_event *evs) {
  ngtcp2_tstamp until = aq_now() + ep->spin_ns;
  while (aq_now() < until) {
    if (!aq_ring_empty(&ep->cmds)) return 1;
    if (epoll_wait(ep->epfd, evs, 8, 0) > 0) return 0; /* level-triggered: seen again */
    sched_yield();
  }
  return 0;
}

static void *net_main(void *arg) {
  struct aq_endpoint *ep = arg;
  struct epoll_event evs[8];
  while (!ep->stopping) {
    process_commands(ep);
    if (ep->stopping) break;
    if (ep->ovf_head) flush_overflow(ep);
    flush_pending(ep);
    ngtcp2_tstamp now = aq_now();
    aq_conn *c;
    while (!ep->pending_tx && (c = aq_sched_pop_dirty(ep))) aq_conn_write(c, now);
    reap(ep);
    arm_timer(ep);
    wake_python(ep);

    if (ep->spin_ns && spin_for_work(ep, evs)) continue;
    atomic_store(&ep->net_sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (!aq_ring_empty(&ep->cmds)) {
      atomic_store(&ep->net_sleeping, 0);
      continue;
    }
    int n = epoll_wait(ep->epfd, evs, 8, -1);
    atomic_store(&ep->net_sleeping, 0);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ep->fd) {
        if (evs[i].events & EPOLLOUT) flush_pending(ep);
        if (evs[i].events & (EPOLLIN | EPOLLERR)) read_packets(ep);
      } else if (fd == ep->timerfd) {
        handle_timers(ep);
      } else if (fd == ep->cmd_efd) {
        uint64_t x;
        ssize_t r = read(ep->cmd_efd, &x, sizeof(x));
        (void)r;
      }
    }
  }
  /* say goodbye to every peer before the thread goes away */
  ngtcp2_tstamp now = aq_now();
  for (aq_conn *c = ep->conns; c; c = c->next) aq_conn_shutdown(c, now);
  return NULL;
}

/* ---------------------------------------------------------------- public API */

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof(*a6);
    return 0;
  }
  return -1;
}

static int make_socket(struct aq_endpoint *ep, const char *host, int port, char *err,
                       size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  if (parse_addr(host, port, &ss, &sl) != 0) {
    AQ_ERR(err, errlen, "not a numeric IPv4/IPv6 address: %s", host);
    return -1;
  }
  ep->family = ss.ss_family;
  ep->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ep->fd < 0) {
    AQ_ERR(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  int one = 1, sz = AQ_SOCKBUF;
  if (setsockopt(ep->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) != 0)
    setsockopt(ep->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  if (setsockopt(ep->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0)
    setsockopt(ep->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  ep->gro_ok = setsockopt(ep->fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
  int seg = 0;
  socklen_t segl = sizeof(seg);
  ep->gso_ok = getsockopt(ep->fd, SOL_UDP, UDP_SEGMENT, &seg, &segl) == 0;
  if (ss.ss_family == AF_INET6) {
    int off = 0; /* "::" also takes IPv4-mapped peers */
    setsockopt(ep->fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  }
  if (bind(ep->fd, (struct sockaddr *)&ss, sl) != 0) {
    AQ_ERR(err, errlen, "cannot bind UDP %s port %d: %s", host, port, strerror(errno));
    return -1;
  }
  ep->locallen = sizeof(ep->local);
  getsockname(ep->fd, (struct sockaddr *)&ep->local, &ep->locallen);
  return 0;
}

aq_endpoint *aq_endpoint_new(const aq_config *cfg, const char *host, int port, char *err,
                             size_t errlen) {
  struct aq_endpoint *ep = calloc(1, sizeof(*ep));
  if (!ep) {
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  ep->cfg = *cfg;
  ep->fd = ep->epfd = ep->timerfd = ep->cmd_efd = ep->ev_efd = -1;
  ep->next_handle = 1;
  if (cfg->alpn_len) {
    ep->alpn = malloc(cfg->alpn_len);
    if (!ep->alpn) goto oom;
    memcpy(ep->alpn, cfg->alpn, cfg->alpn_len);
    ep->alpn_len = cfg->alpn_len;
  }
  ep->cfg.alpn = ep->alpn;
  /* the PEM buffers and paths are only needed until the credentials are loaded */
  if (aq_tls_load(ep, err, errlen) != 0) goto fail;
  ep->cfg.cert_pem = ep->cfg.key_pem = ep->cfg.key_password = NULL;
  ep->cfg.ca_file = ep->cfg.ca_path = ep->cfg.ca_pem = NULL;
  if (make_socket(ep, host, port, err, errlen) != 0) goto fail;
  if (aq_ring_init(&ep->cmds, cfg->cmd_ring_size ? cfg->cmd_ring_size : 4096, sizeof(aq_cmd)) ||
      aq_ring_init(&ep->events, cfg->event_ring_size ? cfg->event_ring_size : 4096,
                   sizeof(aq_event)) ||
      aq_map_init(&ep->by_cid, 64) || aq_map_init(&ep->by_handle, 64))
    goto oom;
  ep->rxmem = malloc((size_t)AQ_RX_BATCH * AQ_RX_BUFSZ);
  ep->txcap = 65536 + 2048;
  ep->txmem = malloc(ep->txcap);
  if (!ep->rxmem || !ep->txmem) goto oom;
  aq_rand_bytes(ep->reset_secret, sizeof(ep->reset_secret));
  {
    /* fault injection for tests (this machine has no netem): drop sent packets at random */
    /* tuning: how long a connection with nothing to send may hold a pure ACK (default
     * 1 ms, well inside the 25 ms max_ack_delay we advertise) */
    /* tuning: how long the network thread polls before it sleeps (default 100 us; 0 = never) */
    const char *spin = getenv("AIOPQUIC_SPIN_US");
    ep->spin_ns = (spin ? strtoull(spin, NULL, 10) : 100) * 1000;
    const char *floor = getenv("AIOPQUIC_ACK_FLOOR_US");
    ep->ack_floor_ns = (floor ? strtoull(floor, NULL, 10) : 1000) * 1000;
    const char *loss = getenv("AIOPQUIC_TEST_LOSS_PPM");
    if (loss) ep->test_loss_ppm = (uint32_t)strtoul(loss, NULL, 10);
    aq_rand_bytes((uint8_t *)&ep->test_rng, sizeof(ep->test_rng));
  }
  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  ep->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  ep->cmd_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ep->ev_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep->epfd < 0 || ep->timerfd < 0 || ep->cmd_efd < 0 || ep->ev_efd < 0) {
    AQ_ERR(err, errlen, "epoll/timerfd/eventfd: %s", strerror(errno));
    goto fail;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ep->fd};
  epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->fd, &ev);
  ev.data.fd = ep->timerfd;
  epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->timerfd, &ev);
  ev.data.fd = ep->cmd_efd;
  epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->cmd_efd, &ev);
  return ep;
oom:
  AQ_ERR(err, errlen, "out of memory");
fail:
  aq_endpoint_free(ep);
  return NULL;
}

uint64_t aq_connect(aq_endpoint *ep, const char *host, int port, const char *server_name,
                    char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  if (ep->started || ep->cfg.is_server) {
    AQ_ERR(err, errlen, "aq_connect: only on a client endpoint before it starts");
    return 0;
  }
  if (parse_addr(host, port, &ss, &sl) != 0) {
    AQ_ERR(err, errlen, "not a numeric IPv4/IPv6 address: %s", host);
    return 0;
  }
  if (ss.ss_family != ep->family) {
    AQ_ERR(err, errlen, "address family of %s does not match the local socket", host);
    return 0;
  }
  if (connect(ep->fd, (struct sockaddr *)&ss, sl) == 0) ep->connected = 1;
  aq_conn *c = aq_conn_new_client(ep, (struct sockaddr *)&ss, sl, server_name, err, errlen);
  return c ? c->handle : 0;
}

int aq_endpoint_start(aq_endpoint *ep, char *err, size_t errlen) {
  if (ep->started) return 0;
  int rv = pthread_create(&ep->thread, NULL, net_main, ep);
  if (rv != 0) {
    AQ_ERR(err, errlen, "pthread_create: %s", strerror(rv));
    return -1;
  }
  ep->started = 1;
  pthread_setname_np(ep->thread, ep->cfg.is_server ? "aiopquic-srv" : "aiopquic-cli");
  return 0;
}

static void kick(struct aq_endpoint *ep) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load(&ep->net_sleeping)) {
    uint64_t one = 1;
    ssize_t r = write(ep->cmd_efd, &one, sizeof(one));
    (void)r;
  }
}

static int push_cmd(struct aq_endpoint *ep, const aq_cmd *cmd) {
  if (aq_ring_push(&ep->cmds, cmd) != 0) {
    atomic_store(&ep->cmd_waiter, 1);
    kick(ep);
    return -1;
  }
  kick(ep);
  return 0;
}

void aq_endpoint_free(aq_endpoint *ep) {
  if (!ep) return;
  if (ep->started) {
    aq_cmd stop = {.type = AQ_CMD_STOP};
    while (aq_ring_push(&ep->cmds, &stop) != 0) {
      uint64_t one = 1;
      ssize_t r = write(ep->cmd_efd, &one, sizeof(one));
      (void)r;
      sched_yield();
    }
    uint64_t one = 1;
    ssize_t r = write(ep->cmd_efd, &one, sizeof(one));
    (void)r;
    pthread_join(ep->thread, NULL);
    ep->started = 0;
  }
  while (ep->conns) aq_conn_free(ep->conns);
  if (ep->cmds.slots) {
    aq_cmd cmd;
    while (aq_ring_pop(&ep->cmds, &cmd) == 0) discard_cmd(&cmd);
  }
  if (ep->events.slots) {
    aq_event ev;
    while (aq_ring_pop(&ep->events, &ev) == 0) free(ev.data);
  }
  while (ep->ovf_head) {
    aq_evnode *n = ep->ovf_head;
    ep->ovf_head = n->next;
    free(n->ev.data);
    free(n);
  }
  aq_ring_destroy(&ep->cmds);
  aq_ring_destroy(&ep->events);
  aq_map_destroy(&ep->by_cid);
  aq_map_destroy(&ep->by_handle);
  free(ep->heap);
  if (ep->cred) gnutls_certificate_free_credentials(ep->cred);
  if (ep->fd >= 0) close(ep->fd);
  if (ep->epfd >= 0) close(ep->epfd);
  if (ep->timerfd >= 0) close(ep->timerfd);
  if (ep->cmd_efd >= 0) close(ep->cmd_efd);
  if (ep->ev_efd >= 0) close(ep->ev_efd);
  free(ep->rxmem);
  free(ep->txmem);
  free(ep->alpn);
  free(ep);
}

int aq_endpoint_event_fd(aq_endpoint *ep) { return ep->ev_efd; }

int aq_endpoint_local_port(aq_endpoint *ep) {
  if (ep->local.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ep->local)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&ep->local)->sin6_port);
}

int aq_poll_events(aq_endpoint *ep, aq_event *out, int max) {
  uint64_t x;
  ssize_t r = read(ep->ev_efd, &x, sizeof(x));
  (void)r;
  int n = 0;
  while (n < max && aq_ring_pop(&ep->events, &out[n]) == 0) n++;
  if (atomic_load(&ep->ev_blocked)) {
    uint64_t one = 1;
    r = write(ep->cmd_efd, &one, sizeof(one));
  }
  return n;
}

void aq_free(void *p) { free(p); }

/* ---------------------------------------------------------------- TX rings */

aq_txbuf *aq_txbuf_new(size_t cap) {
  aq_txbuf *tx;
  if (posix_memalign((void **)&tx, AQ_CACHELINE, sizeof(*tx)) != 0) return NULL;
  memset(tx, 0, sizeof(*tx));
  cap = aq_pow2(cap < 4096 ? 4096 : cap);
  tx->data = malloc(cap);
  if (!tx->data) {
    free(tx);
    return NULL;
  }
  tx->mask = cap - 1;
  atomic_store(&tx->refs, 1);
  return tx;
}

void aq_txbuf_decref(aq_txbuf *tx) {
  if (atomic_fetch_sub(&tx->refs, 1) == 1) {
    free(tx->data);
    free(tx);
  }
}

void aq_txbuf_release(aq_txbuf *tx) {
  if (tx) aq_txbuf_decref(tx);
}

size_t aq_txbuf_space(aq_txbuf *tx) {
  uint64_t h = atomic_load_explicit(&tx->head, memory_order_relaxed);
  uint64_t a = atomic_load_explicit(&tx->acked, memory_order_acquire);
  return (size_t)(tx->mask + 1 - (h - a));
}

uint64_t aq_txbuf_unacked(aq_txbuf *tx) {
  return atomic_load_explicit(&tx->head, memory_order_relaxed) -
         atomic_load_explicit(&tx->acked, memory_order_acquire);
}

int aq_txbuf_want_writable(aq_txbuf *tx) {
  atomic_store(&tx->want_writable, 1);
  if (aq_txbuf_space(tx) > (tx->mask + 1) / 2 && atomic_exchange(&tx->want_writable, 0)) return 1;
  return 0;
}

long aq_stream_write(aq_endpoint *ep, uint64_t conn, int64_t stream_id, aq_txbuf *tx,
                     const char *data, size_t len, int fin) {
  if (atomic_load_explicit(&tx->fin_at, memory_order_relaxed) && len) return 0; /* after FIN */
  size_t space = aq_txbuf_space(tx);
  size_t n = len < space ? len : space;
  uint64_t h = atomic_load_explicit(&tx->head, memory_order_relaxed);
  size_t cap = tx->mask + 1, pos = (size_t)(h & tx->mask);
  size_t first = cap - pos < n ? cap - pos : n;
  memcpy(tx->data + pos, data, first);
  if (n > first) memcpy(tx->data, data + first, n - first);
  atomic_store_explicit(&tx->head, h + n, memory_order_release);
  if (fin && n == len) atomic_store_explicit(&tx->fin_at, h + n + 1, memory_order_release);
  /* len == 0 without FIN is an explicit kick (used after AQ_EV_CMD_SPACE) */
  if (n == 0 && len != 0) return 0;
  if (!tx->attached || !atomic_exchange(&tx->notify, 1)) {
    aq_cmd cmd = {.type = AQ_CMD_STREAM_DATA, .conn = conn, .stream_id = stream_id};
    if (!tx->attached) {
      atomic_fetch_add(&tx->refs, 1); /* the network thread's reference */
      cmd.ptr = tx;
      atomic_store(&tx->notify, 1);
    }
    if (push_cmd(ep, &cmd) != 0) {
      atomic_store(&tx->notify, 0);
      if (tx->attached) return (long)n; /* bytes stay queued; Python kicks on CMD_SPACE */
      /* the network thread has never seen this ring: undo, nothing is half-accepted */
      atomic_fetch_sub(&tx->refs, 1);
      atomic_store_explicit(&tx->head, h, memory_order_release);
      atomic_store_explicit(&tx->fin_at, 0, memory_order_release);
      return -1;
    }
    tx->attached = 1;
  }
  return (long)n;
}

static int simple_cmd(aq_endpoint *ep, uint32_t type, uint64_t conn, int64_t sid, uint64_t code,
                      uint64_t code2, void *ptr, size_t len) {
  aq_cmd cmd = {type, 0, conn, sid, code, code2, ptr, len};
  return push_cmd(ep, &cmd);
}

int aq_stream_reset(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code) {
  return simple_cmd(ep, AQ_CMD_STREAM_RESET, conn, stream_id, code, 0, NULL, 0);
}

int aq_stream_stop(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code) {
  return simple_cmd(ep, AQ_CMD_STREAM_STOP, conn, stream_id, code, 0, NULL, 0);
}

int aq_stream_consumed(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t n) {
  return simple_cmd(ep, AQ_CMD_STREAM_CONSUMED, conn, stream_id, n, 0, NULL, 0);
}

int aq_send_datagram(aq_endpoint *ep, uint64_t conn, const char *data, size_t len) {
  aq_dgram *d = malloc(sizeof(*d) + len);
  if (!d) return -2;
  d->next = NULL;
  d->len = len;
  memcpy(d->data, data, len);
  if (simple_cmd(ep, AQ_CMD_DATAGRAM, conn, -1, 0, 0, d, len) != 0) {
    free(d);
    return -1;
  }
  return 0;
}

int aq_ping(aq_endpoint *ep, uint64_t conn, uint64_t uid) {
  return simple_cmd(ep, AQ_CMD_PING, conn, -1, uid, 0, NULL, 0);
}

int aq_key_update(aq_endpoint *ep, uint64_t conn) {
  return simple_cmd(ep, AQ_CMD_KEY_UPDATE, conn, -1, 0, 0, NULL, 0);
}

int aq_request_stats(aq_endpoint *ep, uint64_t conn, uint64_t request_id) {
  return simple_cmd(ep, AQ_CMD_STATS, conn, -1, request_id, 0, NULL, 0);
}

int aq_conn_close(aq_endpoint *ep, uint64_t conn, uint64_t code, int is_app,
                  uint64_t frame_type, const char *reason, size_t reason_len) {
  uint8_t *r = NULL;
  if (reason_len) {
    r = malloc(reason_len);
    if (!r) return -2;
    memcpy(r, reason, reason_len);
  }
  aq_cmd cmd = {AQ_CMD_CLOSE, (uint32_t)is_app, conn, -1, code, frame_type, r, reason_len};
  if (push_cmd(ep, &cmd) != 0) {
    free(r);
    return -1;
  }
  return 0;
}
