/*
 * endpoint.c - the threaded driver: one UDP socket (io.c), one network thread, the command
 * ring from Python and the event sink to it (events.c), the CID table and the timer heap.
 *
 * The thread owns every ngtcp2 object.  It sleeps in epoll_wait on: the socket, a timerfd
 * armed at the earliest connection expiry, and an eventfd Python writes after pushing
 * commands.  Connections (conn.c) are sans-IO: this file feeds them datagrams, commands and
 * timer expiries, flushes the packets they queue through io.c, and hands them back what the
 * network refused.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define AQ_TXQ_BYTES (256 * 1024)
#define AQ_TXQ_ENTS 512
#define AQ_MAX_FAILS 64
#define AQ_CODE_MAX ((uint64_t)1 << 62) /* QUIC varints: error codes are below 2^62 */

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

/* ---------------------------------------------------------------- epoll interest */

/* Read packets only while the event sink has room (a full sink means Python is behind);
 * wait for EPOLLOUT only while the transmit queue holds packets the socket refused. */
static void update_interest(struct aq_endpoint *ep) {
  int reading = !atomic_load(&ep->sink.blocked);
  int want_out = !aq_txq_empty(&ep->txq);
  if (reading == ep->reading && want_out == ep->want_out) return;
  ep->reading = reading;
  ep->want_out = want_out;
  struct epoll_event ev = {.events = (reading ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0),
                           .data.fd = ep->io.fd};
  epoll_ctl(ep->epfd, EPOLL_CTL_MOD, ep->io.fd, &ev);
}

/* ---------------------------------------------------------------- CID table (ctx hooks) */

static int cid_added(void *driver, aq_conn *c, const ngtcp2_cid *cid) {
  struct aq_endpoint *ep = driver;
  return aq_map_put(&ep->by_cid, cid->data, cid->datalen, c);
}

static void cid_removed(void *driver, aq_conn *c, const ngtcp2_cid *cid) {
  struct aq_endpoint *ep = driver;
  if (aq_map_get(&ep->by_cid, cid->data, cid->datalen) == c)
    aq_map_del(&ep->by_cid, cid->data, cid->datalen);
}

/* ---------------------------------------------------------------- connections */

/* After any call into a connection: follow its wishes (write, timer, death). */
static void follow(struct aq_endpoint *ep, aq_conn *c) {
  if (c->half_counted && c->state != AQ_ST_HANDSHAKE) { /* left the handshake, any way */
    c->half_counted = 0;
    ep->half_open--;
  }
  if (c->want_write) aq_sched_dirty(c);
  if (c->expiry != c->sched_at) aq_sched_expiry(c, c->expiry);
  if (c->state == AQ_ST_DEAD) ep->reap_pending = 1;
}

void aq_ep_follow(struct aq_endpoint *ep, aq_conn *c) { follow(ep, c); }

static void link_conn(struct aq_endpoint *ep, aq_conn *c) {
  c->ep = ep;
  c->sched_at = UINT64_MAX;
  c->next = ep->conns;
  if (ep->conns) ep->conns->prev = c;
  ep->conns = c;
}

void aq_ep_link(struct aq_endpoint *ep, aq_conn *c) { link_conn(ep, c); }

static void conn_release(struct aq_endpoint *ep, aq_conn *c) {
  aq_sched_remove(c);
  if (ep->touched == c) {
    ep->touched = c->next_touched;
  } else if (c->touched) {
    for (aq_conn *t = ep->touched; t; t = t->next_touched)
      if (t->next_touched == c) {
        t->next_touched = c->next_touched;
        break;
      }
  }
  if (c->half_counted) {
    c->half_counted = 0;
    ep->half_open--;
  }
  aq_map_del(&ep->by_handle, &c->handle, sizeof(c->handle));
  if (c->prev)
    c->prev->next = c->next;
  else
    ep->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  aq_conn_free(c);
}

/* ---------------------------------------------------------------- sending */

static aq_conn *conn_by_handle(struct aq_endpoint *ep, uint64_t h) {
  return h ? aq_map_get(&ep->by_handle, &h, sizeof(h)) : NULL;
}

/* Send what is queued; hand refused packets back to their connections. */
static int flush_tx(struct aq_endpoint *ep) {
  aq_txfail fails[AQ_MAX_FAILS];
  int nfails = 0;
  int rv = aq_io_flush(&ep->io, &ep->txq, fails, &nfails, AQ_MAX_FAILS);
  if (nfails) {
    ngtcp2_tstamp now = aq_now();
    for (int i = 0; i < nfails; i++) {
      aq_conn *c = conn_by_handle(ep, fails[i].owner);
      if (!c) continue;
      aq_conn_send_failed(c, &fails[i], now);
      follow(ep, c);
    }
  }
  if (ep->io.send_errors && !ep->error_reported) {
    ep->error_reported = 1;
    static const char msg[] = "UDP send failed (packet dropped; counted, reported once)";
    aq_sink_emit_simple(&ep->sink, AQ_EV_ERROR, 0, -1, ep->io.send_errors, 0, 0, msg,
                        sizeof(msg) - 1);
  }
  return rv;
}

/* ---------------------------------------------------------------- receiving */

/* Packets answered without connection state (stateless reset, version negotiation) cost an
 * attacker one spoofed datagram each and can be aimed at a victim: at most
 * AQ_STATELESS_RATE per second per endpoint, in bursts of up to AQ_STATELESS_BURST. */
#define AQ_STATELESS_RATE 100.0
#define AQ_STATELESS_BURST 10.0

static int stateless_allowed(struct aq_endpoint *ep) {
  ngtcp2_tstamp now = aq_now();
  if (!ep->stateless_ts) {
    ep->stateless_tokens = AQ_STATELESS_BURST;
  } else {
    double add = (double)(now - ep->stateless_ts) * AQ_STATELESS_RATE / (double)NGTCP2_SECONDS;
    ep->stateless_tokens += add;
    if (ep->stateless_tokens > AQ_STATELESS_BURST) ep->stateless_tokens = AQ_STATELESS_BURST;
  }
  ep->stateless_ts = now;
  if (ep->stateless_tokens < 1.0) {
    ep->stateless_dropped++;
    return 0;
  }
  ep->stateless_tokens -= 1.0;
  return 1;
}

static void send_version_negotiation(struct aq_endpoint *ep, const ngtcp2_version_cid *vc,
                                     const struct sockaddr *local, const struct sockaddr *to,
                                     socklen_t tolen, size_t pktlen) {
  uint8_t buf[256];
  /* the versions this server speaks, in its order (a client restarts in one of them and
   * then checks the server's version_information against this list: RFC 9368 section 4) */
  uint32_t sv[4];
  size_t nsv = aq_spoken_versions(&ep->ctx.cfg, sv);
  if (!nsv) { /* none configured: what ngtcp2 accepts */
    sv[nsv++] = NGTCP2_PROTO_VER_V1;
    sv[nsv++] = NGTCP2_PROTO_VER_V2;
  }
  uint8_t unused;
  if (pktlen < 1200) return; /* RFC 9000 6.1: only for a datagram of at least 1200 bytes */
  if (!stateless_allowed(ep)) return;
  aq_rand_bytes(&unused, 1);
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), unused, vc->scid,
                                                        vc->scidlen, vc->dcid, vc->dcidlen,
                                                        sv, nsv);
  if (n > 0) aq_txq_push(&ep->txq, local, to, tolen, 0, buf, (size_t)n);
}

static void send_stateless_reset(struct aq_endpoint *ep, const ngtcp2_version_cid *vc,
                                 size_t pktlen, const struct sockaddr *local,
                                 const struct sockaddr *to, socklen_t tolen) {
  /* Smaller than what triggered it, so two endpoints cannot loop; too short: stay silent. */
  if (pktlen < 43) return;
  if (!stateless_allowed(ep)) return;
  uint8_t buf[1200], token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[1200];
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
  if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->ctx.reset_secret,
                                                   sizeof(ep->ctx.reset_secret), &cid) != 0)
    return;
  size_t len = pktlen - 1 < sizeof(buf) ? pktlen - 1 : sizeof(buf);
  size_t randlen = len - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
  aq_rand_bytes(rnd, randlen);
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, len, token, rnd, randlen);
  if (n > 0) aq_txq_push(&ep->txq, local, to, tolen, 0, buf, (size_t)n);
}

static void touch(struct aq_endpoint *ep, aq_conn *c) {
  if (c->touched) return;
  c->touched = 1;
  c->next_touched = ep->touched;
  ep->touched = c;
}

/* A datagram's packet for its connection (or a new one).  `m` says who sent it and, on a
 * PKTINFO socket, to which of our addresses: that address is the local side of the path, so
 * the connection made from it and every reply leave from the address the peer sent to. */
static void dispatch(struct aq_endpoint *ep, aq_rxmsg *m, const uint8_t *data, size_t len,
                     ngtcp2_tstamp now) {
  struct sockaddr_storage *from = &m->from;
  socklen_t fromlen = m->fromlen;
  const struct sockaddr *local = m->locallen ? (const struct sockaddr *)&m->local
                                             : (const struct sockaddr *)&ep->io.local;
  socklen_t locallen = m->locallen ? m->locallen : ep->io.locallen;
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data, len, ep->ctx.cid_len);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    if (ep->ctx.cfg.is_server)
      send_version_negotiation(ep, &vc, local, (struct sockaddr *)from, fromlen, len);
    return;
  }
  if (rv != 0) return;
  ngtcp2_path path = {{(ngtcp2_sockaddr *)local, locallen},
                      {(ngtcp2_sockaddr *)from, fromlen},
                      NULL};
  aq_conn *c = aq_map_get(&ep->by_cid, vc.dcid, vc.dcidlen);
  if (!c) {
    if (!ep->ctx.cfg.is_server) return;
    if (data[0] & 0x80) {
      ngtcp2_pkt_hd hd;
      if (ngtcp2_accept(&hd, data, len) != 0) return;
      aq_validation v;
      uint8_t reply[256];
      size_t replylen;
      switch (aq_admit_initial(&ep->admit, &hd, (struct sockaddr *)from, fromlen, ep->half_open,
                               ep->ctx.cid_len, now, &v, reply, sizeof(reply), &replylen)) {
      case AQ_ADMIT_ACCEPT:
        break;
      case AQ_ADMIT_RETRY: /* smaller than the Initial (>= 1200 bytes): no amplification */
        aq_txq_push(&ep->txq, local, (struct sockaddr *)from, fromlen, 0, reply, replylen);
        return;
      case AQ_ADMIT_CLOSE:
        if (stateless_allowed(ep))
          aq_txq_push(&ep->txq, local, (struct sockaddr *)from, fromlen, 0, reply, replylen);
        return;
      default:
        return;
      }
      c = aq_conn_accept(&ep->ctx, ep->next_handle, &path, &hd, &v, NULL, now);
      if (!c) return;
      if (aq_map_put(&ep->by_handle, &c->handle, sizeof(c->handle), c) != 0) {
        c->accepted_emitted = -1;
        aq_conn_free(c);
        return;
      }
      ep->next_handle++;
      link_conn(ep, c);
      c->half_counted = 1; /* follow() and conn_release() subtract it, whatever the path */
      ep->half_open++;
    } else {
      ep->stray++;
      send_stateless_reset(ep, &vc, len, local, (struct sockaddr *)from, fromlen);
      return;
    }
  }
  aq_conn_read(c, &path, data, len, m->ecn, now, &ep->txq);
  touch(ep, c);
  follow(ep, c);
}

static void fail_refused(struct aq_endpoint *ep) {
  ngtcp2_tstamp now = aq_now();
  for (aq_conn *c = ep->conns; c; c = c->next) {
    aq_conn_refused(c, ECONNREFUSED, now);
    follow(ep, c);
  }
}

static void read_packets(struct aq_endpoint *ep) {
  aq_rxmsg msgs[AQ_RX_BATCH];
  for (int round = 0; round < 16; round++) {
    if (atomic_load(&ep->sink.blocked)) return;
    int n = aq_io_recv(&ep->io, ep->rxmem, msgs);
    if (n == -ECONNREFUSED) {
      if (ep->io.connected) fail_refused(ep);
      continue;
    }
    if (n <= 0) return; /* nothing waiting, or a transient error */
    ngtcp2_tstamp now = aq_now();
    for (int i = 0; i < n; i++) {
      for (size_t off = 0; off < msgs[i].len; off += msgs[i].seg) {
        size_t l = msgs[i].len - off < msgs[i].seg ? msgs[i].len - off : msgs[i].seg;
        dispatch(ep, &msgs[i], msgs[i].data + off, l, now);
      }
    }
    now = aq_now();
    while (ep->touched) {
      aq_conn *c = ep->touched;
      ep->touched = c->next_touched;
      c->touched = 0;
      c->next_touched = NULL;
      aq_conn_after_read(c, now);
      follow(ep, c);
    }
    if (n < AQ_RX_BATCH) return;
  }
}

/* ---------------------------------------------------------------- commands */

/* A client connection moves to a new socket (same local address, `port`): the endpoint's
 * socket is replaced, ngtcp2 moves to the new path at once and validates it. */
static void migrate(struct aq_endpoint *ep, aq_conn *c, int port, ngtcp2_tstamp now) {
  char why[160] = "";
  char host[INET6_ADDRSTRLEN] = "";
  int err = 0;
  const ngtcp2_path *cur = ngtcp2_conn_get_path(c->conn);
  const struct sockaddr *la = (const struct sockaddr *)&ep->io.local;
  if (ep->ctx.cfg.is_server || !cur) {
    err = EINVAL;
    snprintf(why, sizeof(why), "only a client connection can migrate");
  } else if (ep->ctx.cfg.shared) {
    err = EINVAL;
    snprintf(why, sizeof(why), "a connection of a shared client endpoint cannot migrate "
                               "(the socket carries other connections)");
  } else if (la->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)la)->sin_addr, host, sizeof(host));
  } else {
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)la)->sin6_addr, host, sizeof(host));
  }
  aq_io nio;
  memset(&nio, 0, sizeof(nio));
  nio.fd = -1;
  if (!err && aq_io_open(&nio, host, port, (size_t)ep->ctx.cfg.socket_buffer, 0, 0, why,
                         sizeof(why)) != 0)
    err = EADDRNOTAVAIL;
  if (!err && ep->io.connected &&
      aq_io_connect(&nio, (const struct sockaddr *)cur->remote.addr,
                    (socklen_t)cur->remote.addrlen) != 0) {
    err = errno ? errno : EINVAL;
    snprintf(why, sizeof(why), "connect: %s", strerror(err));
  }
  if (!err) {
    ngtcp2_path np = {{(ngtcp2_sockaddr *)&nio.local, nio.locallen},
                      {cur->remote.addr, cur->remote.addrlen},
                      NULL};
    int rv = ngtcp2_conn_initiate_immediate_migration(c->conn, &np, now);
    if (rv != 0) {
      err = rv < 0 ? -rv : rv;
      snprintf(why, sizeof(why), "ngtcp2: %s", ngtcp2_strerror(rv));
    }
  }
  if (err) {
    aq_io_close(&nio);
    aq_sink_emit_simple(&ep->sink, AQ_EV_MIGRATED, c->handle, -1, 0, (uint64_t)err, 0, why,
                        strlen(why));
    return;
  }
  epoll_ctl(ep->epfd, EPOLL_CTL_DEL, ep->io.fd, NULL);
  nio.emsgsize = ep->io.emsgsize;
  nio.gso_splits = ep->io.gso_splits;
  nio.send_errors = ep->io.send_errors;
  aq_io_close(&ep->io);
  ep->io = nio;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ep->io.fd};
  epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->io.fd, &ev);
  ep->reading = 1;
  ep->want_out = 0;
  c->want_write = 1; /* the path challenge and what waits go out on the new socket now */
  aq_sink_emit_simple(&ep->sink, AQ_EV_MIGRATED, c->handle, -1,
                      (uint64_t)aq_io_local_port(&ep->io), 0, 0, NULL, 0);
}

/* A shared client endpoint opens connection `handle` (numbered by aq_connect on the Python
 * thread).  A failure is reported as that handle's AQ_EV_CLOSED. */
static void connect_shared(struct aq_endpoint *ep, uint64_t handle, const aq_connreq *req,
                           ngtcp2_tstamp now) {
  char err[256] = "";
  aq_conn *c = NULL;
  if (!ep->stopping)
    c = aq_conn_new_client(&ep->ctx, handle, (struct sockaddr *)&ep->io.local, ep->io.locallen,
                           (const struct sockaddr *)&req->remote, req->remotelen,
                           req->server_name, NULL, NULL, now, err, sizeof(err));
  else
    snprintf(err, sizeof(err), "the endpoint is closing");
  if (c && aq_map_put(&ep->by_handle, &c->handle, sizeof(c->handle), c) != 0) {
    c->accepted_emitted = -1;
    aq_conn_free(c);
    c = NULL;
    snprintf(err, sizeof(err), "out of memory");
  }
  if (!c) {
    aq_sink_emit_simple(&ep->sink, AQ_EV_CLOSED, handle, -1, NGTCP2_INTERNAL_ERROR, 0,
                        AQ_CLOSE_LOCAL, err, strlen(err));
    return;
  }
  link_conn(ep, c);
  follow(ep, c);
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
    if (cmd.type == AQ_CMD_CONNECT) {
      connect_shared(ep, cmd.conn, cmd.ptr, now);
      free(cmd.ptr);
      continue;
    }
    aq_conn *c = conn_by_handle(ep, cmd.conn);
    if (!c) {
      aq_conn_discard_cmd(&cmd);
      continue;
    }
    if (cmd.type == AQ_CMD_MIGRATE) {
      migrate(ep, c, (int)cmd.code, now);
      follow(ep, c);
      continue;
    }
    aq_conn_command(c, &cmd, now, &ep->txq);
    follow(ep, c);
  }
  if (any && atomic_exchange(&ep->cmd_waiter, 0))
    aq_sink_emit_simple(&ep->sink, AQ_EV_CMD_SPACE, 0, -1, 0, 0, 0, NULL, 0);
}

/* ---------------------------------------------------------------- timers, loop */

static void arm_timer(struct aq_endpoint *ep) {
  aq_conn *top = aq_sched_top(ep);
  ngtcp2_tstamp next = top ? top->sched_at : UINT64_MAX;
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
  while ((c = aq_sched_top(ep)) && c->sched_at <= now) {
    c->expiry = UINT64_MAX; /* the next write sets the new expiry */
    aq_sched_expiry(c, UINT64_MAX);
    aq_conn_on_expiry(c, now, &ep->txq);
    follow(ep, c);
  }
}

static void reap(struct aq_endpoint *ep) {
  if (!ep->reap_pending) return;
  ep->reap_pending = 0;
  aq_conn *c = ep->conns;
  while (c) {
    aq_conn *next = c->next;
    if (c->state == AQ_ST_DEAD) conn_release(ep, c);
    c = next;
  }
}

/* Write every connection that has something to say, flushing the queue whenever it fills;
 * stop while the socket is full (EPOLLOUT resumes). */
static void write_all(struct aq_endpoint *ep) {
  if (!aq_txq_empty(&ep->txq) && flush_tx(ep) == AQ_IO_BLOCKED) return;
  ngtcp2_tstamp now = aq_now();
  /* only the connections dirty now: one that asks again is served on the next pass */
  aq_conn *list = ep->dirty_head;
  ep->dirty_head = ep->dirty_tail = NULL;
  for (aq_conn *c = list; c; c = list) {
    list = c->next_dirty;
    c->dirty = 0;
    c->next_dirty = NULL;
    int blocked = 0;
    while (aq_conn_write(c, now, &ep->txq)) {
      if (flush_tx(ep) == AQ_IO_BLOCKED) {
        blocked = 1;
        break;
      }
    }
    follow(ep, c);
    if (blocked) {
      for (aq_conn *r = list; r; r = list) { /* the rest waits for EPOLLOUT */
        list = r->next_dirty;
        r->dirty = 0;
        r->next_dirty = NULL;
        aq_sched_dirty(r);
      }
      return;
    }
  }
  if (!aq_txq_empty(&ep->txq)) flush_tx(ep);
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
    if (ep->sink.ovf_head) aq_sink_flush(&ep->sink);
    write_all(ep);
    reap(ep);
    arm_timer(ep);
    update_interest(ep);
    aq_sink_wake(&ep->sink);

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
      if (fd == ep->io.fd) {
        if (evs[i].events & EPOLLOUT) flush_tx(ep);
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
  ep->ctx.quiet = 1;
  for (aq_conn *c = ep->conns; c; c = c->next) {
    aq_conn_shutdown(c, now, &ep->txq);
    if (aq_txq_empty(&ep->txq) == 0 && ep->txq.used > AQ_TXQ_BYTES / 2) flush_tx(ep);
  }
  flush_tx(ep);
  return NULL;
}

/* ---------------------------------------------------------------- public API */

aq_endpoint *aq_endpoint_new(const aq_config *cfg, const char *host, int port, char *err,
                             size_t errlen) {
  struct aq_endpoint *ep = calloc(1, sizeof(*ep));
  if (!ep) {
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  ep->ctx.cfg = *cfg;
  ep->io.fd = ep->epfd = ep->timerfd = ep->cmd_efd = ep->sink.efd = -1;
  ep->next_handle = 1;
  ep->ctx.sink = &ep->sink;
  ep->ctx.driver = ep;
  ep->ctx.cid_added = cid_added;
  ep->ctx.cid_removed = cid_removed;
  ep->ctx.cid_len = cfg->cid_len ? cfg->cid_len : 18;
  if (cfg->alpn_len) {
    ep->ctx.alpn = malloc(cfg->alpn_len);
    if (!ep->ctx.alpn) goto oom;
    memcpy(ep->ctx.alpn, cfg->alpn, cfg->alpn_len);
    ep->ctx.alpn_len = cfg->alpn_len;
  }
  ep->ctx.cfg.alpn = ep->ctx.alpn;
  if (cfg->token_len && !cfg->is_server) {
    ep->ctx.token = malloc(cfg->token_len);
    if (!ep->ctx.token) goto oom;
    memcpy(ep->ctx.token, cfg->token, cfg->token_len);
  }
  ep->ctx.cfg.token = ep->ctx.token;
  if (!ep->ctx.token) ep->ctx.cfg.token_len = 0;
  /* the PEM buffers and paths are only needed until the credentials are loaded */
  if (aq_tls_load(&ep->ctx, err, errlen) != 0) goto fail;
  ep->ctx.cfg.cert_pem = ep->ctx.cfg.key_pem = ep->ctx.cfg.key_password = NULL;
  ep->ctx.cfg.ciphers = NULL; /* parsed into ctx.prio */
  ep->ctx.cfg.ca_file = ep->ctx.cfg.ca_path = ep->ctx.cfg.ca_pem = NULL;
  if (cfg->workers > 256 || (cfg->workers > 1 && cfg->worker >= cfg->workers) ||
      (cfg->workers > 1 && !cfg->is_server)) {
    AQ_ERR(err, errlen, "workers: a server's worker number must be below workers (<= 256)");
    goto fail;
  }
  /* PKTINFO for servers only: a client's path keeps the local address it was created with,
   * and ngtcp2 drops a client's packets that arrive on another path */
  if (aq_io_open(&ep->io, host, port, (size_t)cfg->socket_buffer, cfg->workers > 1,
                 cfg->is_server, err, errlen) != 0)
    goto fail;
  /* the first worker attaches the steering program for the whole SO_REUSEPORT group */
  if (cfg->workers > 1 && cfg->worker == 0 &&
      aq_io_steer(&ep->io, aq_worker_byte(cfg), cfg->workers, err, errlen) != 0)
    goto fail;
  if (aq_ring_init(&ep->cmds, cfg->cmd_ring_size ? cfg->cmd_ring_size : 4096, sizeof(aq_cmd)) ||
      aq_sink_init(&ep->sink, cfg->event_ring_size, 1) ||
      aq_txq_init(&ep->txq, AQ_TXQ_BYTES, AQ_TXQ_ENTS) ||
      aq_map_init(&ep->by_cid, 64) || aq_map_init(&ep->by_handle, 64))
    goto oom;
  ep->rxmem = malloc((size_t)AQ_RX_BATCH * AQ_RX_BUFSZ);
  if (!ep->rxmem) goto oom;
  aq_rand_bytes(ep->ctx.reset_secret, sizeof(ep->ctx.reset_secret));
  aq_rand_bytes(ep->ctx.token_secret, sizeof(ep->ctx.token_secret));
  if (aq_admit_init(&ep->admit, cfg, ep->ctx.token_secret) != 0) goto oom;
  {
    /* tuning: how long the network thread polls before it sleeps (default 50 us; 0 = never).
     * 100 us polled through the gaps of a steady stream of work on cores the application
     * needed (aiomoqt's full-rate datagrams, 5 threads on 2 cores: object p95 3.6-4.8 ms,
     * 0.7-1.6 ms at 50 us); a loopback round trip (~75-95 us) is caught by either. */
    const char *spin = getenv("AIOPQUIC_SPIN_US");
    ep->spin_ns = (cfg->spin_us >= 0 ? (uint64_t)cfg->spin_us
                                     : spin ? strtoull(spin, NULL, 10) : 50) * 1000;
    /* tuning: how long a connection with nothing to send may hold a pure ACK (default
     * 1 ms, well inside the 25 ms max_ack_delay we advertise) */
    const char *floor = getenv("AIOPQUIC_ACK_FLOOR_US");
    ep->ctx.ack_floor_ns = (cfg->ack_floor_us >= 0 ? (uint64_t)cfg->ack_floor_us
                            : floor ? strtoull(floor, NULL, 10) : 1000) * 1000;
    /* tuning: a stream's receive window starts at this size and grows (ngtcp2's auto-tuning)
     * up to max_stream_data while the reader keeps up within a few RTTs (default 256 KiB;
     * 0 = start at max_stream_data) */
    const char *win = getenv("AIOPQUIC_STREAM_WINDOW_START");
    ep->ctx.stream_window_start = cfg->stream_window_start >= 0
                                      ? (uint64_t)cfg->stream_window_start
                                  : win ? strtoull(win, NULL, 10)
                                        : 256 * 1024;
    /* fault injection for tests: drop sent packets at random */
    const char *loss = getenv("AIOPQUIC_TEST_LOSS_PPM");
    if (loss) ep->ctx.test_loss_ppm = (uint32_t)strtoul(loss, NULL, 10);
    aq_rand_bytes((uint8_t *)&ep->ctx.test_rng, sizeof(ep->ctx.test_rng));
  }
  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  ep->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  ep->cmd_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ep->epfd < 0 || ep->timerfd < 0 || ep->cmd_efd < 0) {
    AQ_ERR(err, errlen, "epoll/timerfd/eventfd: %s", strerror(errno));
    goto fail;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ep->io.fd};
  epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->io.fd, &ev);
  ep->reading = 1;
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

static int push_cmd(struct aq_endpoint *ep, const aq_cmd *cmd);

uint64_t aq_connect(aq_endpoint *ep, const char *host, int port, const char *server_name,
                    char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  int shared = ep->ctx.cfg.shared;
  if ((ep->started && !shared) || ep->ctx.cfg.is_server || (ep->sansio && shared)) {
    AQ_ERR(err, errlen, "aq_connect: only on a client endpoint before it starts "
                        "(or on a shared one)");
    return 0;
  }
  if (port < 0 || port > 65535) {
    AQ_ERR(err, errlen, "port must be in 0..65535: %d", port);
    return 0;
  }
  if (aq_io_parse_addr(host, port, &ss, &sl) != 0) {
    AQ_ERR(err, errlen, "not a numeric IPv4/IPv6 address: %s", host);
    return 0;
  }
  if (ss.ss_family != ep->io.family) {
    AQ_ERR(err, errlen, "address family of %s does not match the local socket", host);
    return 0;
  }
  if (ep->started) { /* shared: the network thread creates it (AQ_CMD_CONNECT) */
    size_t namelen = server_name ? strlen(server_name) : 0;
    aq_connreq *req = malloc(sizeof(*req) + namelen + 1);
    if (!req) {
      AQ_ERR(err, errlen, "out of memory");
      return 0;
    }
    memcpy(&req->remote, &ss, sl);
    req->remotelen = sl;
    if (namelen) memcpy(req->server_name, server_name, namelen);
    req->server_name[namelen] = 0;
    uint64_t handle = ep->next_handle; /* only this (Python) thread numbers client conns */
    aq_cmd cmd = {AQ_CMD_CONNECT, 0, handle, -1, 0, 0, req, 0};
    if (push_cmd(ep, &cmd) != 0) {
      free(req);
      AQ_ERR(err, errlen, "the endpoint's command queue is full: try again");
      return 0;
    }
    ep->next_handle++;
    return handle;
  }
  if (!shared) aq_io_connect(&ep->io, (struct sockaddr *)&ss, sl);
  aq_conn *c = aq_conn_new_client(&ep->ctx, ep->next_handle, (struct sockaddr *)&ep->io.local,
                                  ep->io.locallen, (struct sockaddr *)&ss, sl, server_name, NULL,
                                  NULL, aq_now(), err, errlen);
  if (!c) return 0;
  if (aq_map_put(&ep->by_handle, &c->handle, sizeof(c->handle), c) != 0) {
    c->accepted_emitted = -1;
    aq_conn_free(c);
    AQ_ERR(err, errlen, "out of memory");
    return 0;
  }
  ep->next_handle++;
  link_conn(ep, c);
  follow(ep, c);
  return c->handle;
}

int aq_endpoint_start(aq_endpoint *ep, char *err, size_t errlen) {
  if (ep->started) return 0;
  int rv = pthread_create(&ep->thread, NULL, net_main, ep);
  if (rv != 0) {
    AQ_ERR(err, errlen, "pthread_create: %s", strerror(rv));
    return -1;
  }
  ep->started = 1;
  pthread_setname_np(ep->thread, ep->ctx.cfg.is_server ? "aiopquic-srv" : "aiopquic-cli");
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
  if (ep->sansio) { /* the synchronous driver: applied now, on the caller's thread */
    aq_sansio_command(ep, cmd);
    return 0;
  }
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
  ep->ctx.quiet = 1;
  while (ep->conns) conn_release(ep, ep->conns);
  if (ep->cmds.slots) {
    aq_cmd cmd;
    while (aq_ring_pop(&ep->cmds, &cmd) == 0) aq_conn_discard_cmd(&cmd);
  }
  aq_sink_destroy(&ep->sink);
  aq_ring_destroy(&ep->cmds);
  aq_txq_destroy(&ep->txq);
  aq_map_destroy(&ep->by_cid);
  aq_map_destroy(&ep->by_handle);
  free(ep->heap);
  aq_tls_unload(&ep->ctx);
  aq_io_close(&ep->io);
  if (ep->epfd >= 0) close(ep->epfd);
  if (ep->timerfd >= 0) close(ep->timerfd);
  if (ep->cmd_efd >= 0) close(ep->cmd_efd);
  free(ep->rxmem);
  free(ep->ctx.alpn);
  free(ep->ctx.token);
  aq_admit_free(&ep->admit);
  free(ep);
}

void aq_endpoint_admit_stats(aq_endpoint *ep, aq_admit_stats *out) {
  aq_admit *a = &ep->admit;
  out->retries = atomic_load_explicit(&a->retries, memory_order_relaxed);
  out->tokens_ok = atomic_load_explicit(&a->tokens_ok, memory_order_relaxed);
  out->tokens_bad = atomic_load_explicit(&a->tokens_bad, memory_order_relaxed);
  out->dropped_full = atomic_load_explicit(&a->dropped_full, memory_order_relaxed);
  out->rate_limited = atomic_load_explicit(&a->rate_limited, memory_order_relaxed);
  out->half_open = atomic_load_explicit(&ep->half_open, memory_order_relaxed);
  out->stateless_dropped = atomic_load_explicit(&ep->stateless_dropped, memory_order_relaxed);
  out->prio_applied = atomic_load_explicit(&ep->ctx.prio_applied, memory_order_relaxed);
  out->prio_rejected = atomic_load_explicit(&ep->ctx.prio_rejected, memory_order_relaxed);
  out->stray = atomic_load_explicit(&ep->stray, memory_order_relaxed);
}

int aq_endpoint_event_fd(aq_endpoint *ep) { return ep->sink.efd; }

int aq_endpoint_local_port(aq_endpoint *ep) { return aq_io_local_port(&ep->io); }

int aq_poll_events(aq_endpoint *ep, aq_event *out, int max) {
  uint64_t x;
  ssize_t r;
  int n = 0;
  if (ep->sansio) { /* one thread: the overflow list drains straight into the ring */
    while (n < max) {
      if (aq_ring_pop(&ep->sink.ring, &out[n]) == 0) {
        n++;
      } else if (ep->sink.ovf_head) {
        aq_sink_flush(&ep->sink);
      } else {
        break;
      }
    }
    return n;
  }
  r = read(ep->sink.efd, &x, sizeof(x));
  (void)r;
  while (n < max && aq_ring_pop(&ep->sink.ring, &out[n]) == 0) n++;
  if (atomic_load(&ep->sink.blocked)) {
    uint64_t one = 1;
    r = write(ep->cmd_efd, &one, sizeof(one));
  }
  return n;
}

void aq_free(void *p) { free(p); }

int aq_tune_malloc(int trim_threshold, int mmap_threshold) {
#ifdef __GLIBC__
  if (mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1) return -1;
  if (mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1) return -1;
  return 0;
#else
  (void)trim_threshold;
  (void)mmap_threshold;
  return -1;
#endif
}

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

int aq_txbuf_recycle(aq_txbuf *tx) {
  /* acquire: the network thread's last writes to the ring happen before its decref */
  if (atomic_load_explicit(&tx->refs, memory_order_acquire) != 1) return 0;
  atomic_store_explicit(&tx->head, 0, memory_order_relaxed);
  atomic_store_explicit(&tx->fin_at, 0, memory_order_relaxed);
  atomic_store_explicit(&tx->acked, 0, memory_order_relaxed);
  tx->sent = 0;
  atomic_store_explicit(&tx->notify, 0, memory_order_relaxed);
  atomic_store_explicit(&tx->want_writable, 0, memory_order_relaxed);
  tx->attached = 0;
  return 1;
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
  /* pairs with the fence in conn.c check_writable (store `acked`, then load this flag):
   * without it both sides could miss each other's store and the writer would wait forever */
  atomic_thread_fence(memory_order_seq_cst);
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
  if (first) memcpy(tx->data + pos, data, first); /* data may be NULL for a FIN-only write */
  if (n > first) memcpy(tx->data, data + first, n - first);
  atomic_store_explicit(&tx->head, h + n, memory_order_release);
  if (fin && n == len) atomic_store_explicit(&tx->fin_at, h + n + 1, memory_order_release);
  /* len == 0 without FIN is an explicit kick (used after AQ_EV_CMD_SPACE) */
  if (n == 0 && len != 0) return 0;
  /* pairs with the fence in conn.c after clearing `notify` (AQ_CMD_STREAM_DATA) */
  atomic_thread_fence(memory_order_seq_cst);
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
  if (code >= AQ_CODE_MAX || stream_id < 0) return -3;
  return simple_cmd(ep, AQ_CMD_STREAM_RESET, conn, stream_id, code, 0, NULL, 0);
}

int aq_stream_stop(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code) {
  if (code >= AQ_CODE_MAX || stream_id < 0) return -3;
  return simple_cmd(ep, AQ_CMD_STREAM_STOP, conn, stream_id, code, 0, NULL, 0);
}

int aq_stream_consumed(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t n) {
  return simple_cmd(ep, AQ_CMD_STREAM_CONSUMED, conn, stream_id, n, 0, NULL, 0);
}

aq_dgq *aq_dgq_new(uint64_t limit) {
  aq_dgq *q;
  if (posix_memalign((void **)&q, AQ_CACHELINE, sizeof(*q)) != 0) return NULL;
  memset(q, 0, sizeof(*q));
  q->limit = limit;
  atomic_store(&q->refs, 1);
  return q;
}

void aq_dgq_release(aq_dgq *q) {
  if (q && atomic_fetch_sub(&q->refs, 1) == 1) free(q);
}

uint64_t aq_dgq_outstanding(aq_dgq *q) {
  return atomic_load_explicit(&q->submitted, memory_order_relaxed) -
         atomic_load_explicit(&q->done, memory_order_acquire);
}

int aq_dgq_room(aq_dgq *q, uint64_t len) {
  uint64_t out = aq_dgq_outstanding(q);
  if (out == 0 || out + len <= q->limit) return 1;
  atomic_store(&q->want, 1);
  /* pairs with the fence in aq_dgram_finish (it stores `done`, then loads `want`) */
  atomic_thread_fence(memory_order_seq_cst);
  out = aq_dgq_outstanding(q);
  if (out == 0 || out + len <= q->limit) {
    atomic_store(&q->want, 0); /* drained meanwhile: an event may still come, harmlessly */
    return 1;
  }
  return 0;
}

int aq_send_datagram(aq_endpoint *ep, uint64_t conn, aq_dgq *q, const char *data, size_t len) {
  aq_dgram *d = malloc(sizeof(*d) + len);
  if (!d) return -2;
  d->next = NULL;
  d->q = q;
  d->len = len;
  if (len) memcpy(d->data, data, len); /* an empty datagram is legal */
  if (q) {
    atomic_fetch_add(&q->refs, 1);
    atomic_fetch_add_explicit(&q->submitted, len, memory_order_release);
  }
  if (simple_cmd(ep, AQ_CMD_DATAGRAM, conn, -1, 0, 0, d, len) != 0) {
    if (q) {
      atomic_fetch_sub_explicit(&q->submitted, len, memory_order_release);
      aq_dgq_release(q);
    }
    free(d);
    return -1;
  }
  return 0;
}

int aq_send_datagram_room(aq_endpoint *ep, uint64_t conn, aq_dgq *q, const char *data,
                          size_t len) {
  uint64_t out = aq_dgq_outstanding(q);
  if (out != 0 && out + len > q->limit) return -4;
  return aq_send_datagram(ep, conn, q, data, len);
}

int aq_ping(aq_endpoint *ep, uint64_t conn, uint64_t uid) {
  return simple_cmd(ep, AQ_CMD_PING, conn, -1, uid, 0, NULL, 0);
}

int aq_key_update(aq_endpoint *ep, uint64_t conn) {
  return simple_cmd(ep, AQ_CMD_KEY_UPDATE, conn, -1, 0, 0, NULL, 0);
}

int aq_stream_priority(aq_endpoint *ep, uint64_t conn, int64_t stream_id, unsigned priority) {
  if (priority > 255 || stream_id < -1) return -3;
  return simple_cmd(ep, AQ_CMD_PRIORITY, conn, stream_id, priority, 0, NULL, 0);
}

int aq_request_stats(aq_endpoint *ep, uint64_t conn, uint64_t request_id) {
  return simple_cmd(ep, AQ_CMD_STATS, conn, -1, request_id, 0, NULL, 0);
}

int aq_migrate(aq_endpoint *ep, uint64_t conn, int port) {
  if (port < 0 || port > 65535) return -3;
  return simple_cmd(ep, AQ_CMD_MIGRATE, conn, -1, (uint64_t)port, 0, NULL, 0);
}

int aq_conn_close(aq_endpoint *ep, uint64_t conn, uint64_t code, int is_app,
                  uint64_t frame_type, const char *reason, size_t reason_len) {
  uint8_t *r = NULL;
  if (code >= AQ_CODE_MAX || frame_type >= AQ_CODE_MAX) return -3;
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
