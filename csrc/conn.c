/*
 * conn.c - one QUIC connection, sans-IO: ngtcp2 callbacks, streams, the write loop, packet
 * size (PMTUD cap, EMSGSIZE, black holes), closing.
 *
 * Inputs: received datagrams, commands, timer expiry, the time, send failures.  Outputs:
 * packets appended to the caller's transmit queue (aq_txq), events to ctx->sink, and
 * c->want_write / c->expiry / c->state for the driver to read.  No socket, thread or clock:
 * every entry point takes `now` from its driver (the threaded endpoint reads CLOCK_MONOTONIC,
 * the synchronous sans-IO driver is given the caller's time), and the only timestamp made
 * here is write_ping's now + 1 ns.
 */
#include "internal.h"

#include <errno.h>
#include <netdb.h>

#define AQ_RX_FLUSH (256 * 1024)
#define AQ_DGRAM_QUEUE_MAX (1024 * 1024) /* bytes of datagrams waiting to be sent */
#define AQ_MAX_GSO_SEGS 64
#define AQ_BASE_PLPMTU 1200  /* QUIC's minimum: always usable */
#define AQ_DGRAM_OVERHEAD 46 /* short header (1 + 20 CID + 4 pkn) + AEAD 16 + frame 1 + len 4 */

/* Packet sizes (UDP payload) tried, smallest first: IPv6/IPv4 at MTU 1280, 1500, 9000, then
 * loopback-sized packets.  ngtcp2's PMTUD probes each in turn (DF is set, so a probe larger
 * than the path is lost); after EMSGSIZE or a black hole the cap steps through them again. */
static const uint16_t aq_ladder[] = {1232, 1252, 1452, 1472, 8952, 8972, 16384, 32768, 65000};
#define AQ_LADDER_LEN (sizeof(aq_ladder) / sizeof(aq_ladder[0]))

/* The connection whose packet is being encrypted or decrypted on this thread (for the frame
 * scanner and packet-number tracking).  Thread-local: every driver thread has its own. */
static _Thread_local aq_conn *aq_cur_conn;

/* ---------------------------------------------------------------- helpers */

static void do_graceful_close(aq_conn *c, ngtcp2_tstamp now, aq_txq *q);

/* ---- the engine log (aq_config.engine_log): ngtcp2's packet and frame lines, batched per
 * connection and handed to Python as AQ_EV_ENGINE_LOG events.  A server connection's lines
 * wait until Python knows it (AQ_EV_ACCEPTED). */

#define AQ_LOG_FLUSH (32 * 1024) /* hand a batch over at this size */
#define AQ_LOG_HOLD (256 * 1024) /* most held for a connection Python does not know yet */

static int log_visible(const aq_conn *c) {
  return c->accepted_emitted > 0 || !c->ctx->cfg.is_server;
}

static void engine_log_flush(aq_conn *c) {
  if (!c->log_len || !log_visible(c) || c->ctx->quiet) return;
  aq_event ev = {AQ_EV_ENGINE_LOG, 0, c->handle, -1, c->log_dropped, 0, (uint8_t *)c->log_buf,
                 c->log_len};
  c->log_buf = NULL;
  c->log_len = c->log_cap = 0;
  c->log_dropped = 0;
  aq_sink_emit(c->ctx->sink, &ev);
}

static void engine_log_cb(void *user_data, const char *fmt, ...) {
  aq_conn *c = user_data;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
  /* "I<ms> 0x<scid> <event> ...": keep the packet and frame events only */
  const char *sp = memchr(line, ' ', len);
  if (!sp) return;
  sp = memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line));
  if (!sp || (size_t)(sp - line) + 5 > len) return;
  if (memcmp(sp + 1, "pkt ", 4) != 0 && memcmp(sp + 1, "frm ", 4) != 0) return;
  if (c->log_len + len + 1 > AQ_LOG_HOLD) {
    c->log_dropped++;
    return;
  }
  if (c->log_len + len + 1 > c->log_cap) {
    size_t cap = c->log_cap ? c->log_cap * 2 : 4096;
    while (cap < c->log_len + len + 1) cap *= 2;
    char *b = realloc(c->log_buf, cap);
    if (!b) {
      c->log_dropped++;
      return;
    }
    c->log_buf = b;
    c->log_cap = cap;
  }
  memcpy(c->log_buf + c->log_len, line, len);
  c->log_len += len;
  c->log_buf[c->log_len++] = '\n';
}

static void engine_log_maybe_flush(aq_conn *c) {
  if (c->log_len >= AQ_LOG_FLUSH) engine_log_flush(c);
}

static void emit_closed(aq_conn *c, uint32_t flags, uint64_t code, uint64_t ft,
                        const void *reason, size_t len) {
  if (c->accepted_emitted < 0) return; /* already reported */
  int was_visible = c->accepted_emitted || !c->ctx->cfg.is_server;
  engine_log_flush(c); /* the log reaches Python before the close does */
  c->accepted_emitted = -1;
  if (was_visible && !c->ctx->quiet)
    aq_sink_emit_simple(c->ctx->sink, AQ_EV_CLOSED, c->handle, -1, code, ft, flags, reason, len);
}

/* The receive window every stream starts with (the transport parameters). */
static uint64_t stream_window_start(const aq_ctx *ctx) {
  uint64_t max = ctx->cfg.max_stream_data;
  return ctx->stream_window_start && ctx->stream_window_start < max ? ctx->stream_window_start
                                                                     : max;
}

static aq_stream *stream_get(aq_conn *c, int64_t sid) {
  return aq_map_get(&c->streams, &sid, sizeof(sid));
}

static aq_stream *stream_get_or_create(aq_conn *c, int64_t sid) {
  aq_stream *s = stream_get(c, sid);
  if (s) return s;
  s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->id = sid;
  s->prio = c->default_prio;
  if (aq_map_put(&c->streams, &sid, sizeof(sid), s) != 0) {
    free(s);
    return NULL;
  }
  return s;
}

static int is_local(aq_conn *c, int64_t sid) {
  return ((sid & 1) != 0) == (c->ctx->cfg.is_server != 0);
}

static void active_remove(aq_stream **head, aq_stream *s) {
  for (aq_stream **pp = head; *pp; pp = &(*pp)->next_active) {
    if (*pp == s) {
      *pp = s->next_active;
      return;
    }
  }
}

/* The bucket of streams with priority prio (created on demand; NULL if out of memory or, with
 * create == 0, absent).  Buckets stay sorted by priority; there are at most 256. */
static aq_bucket *bucket_get(aq_conn *c, uint8_t prio, int create) {
  aq_bucket **pp = &c->buckets;
  while (*pp && (*pp)->prio < prio) pp = &(*pp)->next;
  if (*pp && (*pp)->prio == prio) return *pp;
  if (!create) return NULL;
  aq_bucket *b = calloc(1, sizeof(*b));
  if (!b) return NULL;
  b->prio = prio;
  b->next = *pp;
  *pp = b;
  return b;
}

static void deactivate(aq_conn *c, aq_stream *s) {
  if (!s->active) return;
  aq_bucket *b = bucket_get(c, s->prio, 0);
  if (b) {
    active_remove(&b->head, s);
    if (b->tail == s) {
      b->tail = b->head;
      while (b->tail && b->tail->next_active) b->tail = b->tail->next_active;
    }
  }
  s->active = 0;
  s->next_active = NULL;
}

/* The stream to serve next: the head of the most urgent non-empty bucket (empty buckets
 * met on the way are freed). */
static aq_stream *first_active(aq_conn *c) {
  while (c->buckets && !c->buckets->head) {
    aq_bucket *b = c->buckets;
    c->buckets = b->next;
    free(b);
  }
  for (aq_bucket *b = c->buckets; b; b = b->next)
    if (b->head) return b->head;
  return NULL;
}

static int stream_pending(aq_stream *s) {
  if (!s->tx || s->shut_wr || s->fin_sent || !s->in_engine || s->blocked) return 0;
  uint64_t fin_at = atomic_load_explicit(&s->tx->fin_at, memory_order_acquire);
  uint64_t head = atomic_load_explicit(&s->tx->head, memory_order_acquire);
  return head > s->tx->sent || fin_at != 0;
}

/* Queue a stream with data to send in its priority's bucket: in stream-id order for an odd
 * priority (FIFO: the lowest id is served until it has nothing more), at the tail for an even
 * one (round robin: the writer rotates after each packet). */
static void activate(aq_conn *c, aq_stream *s) {
  if (s->active || !stream_pending(s)) return;
  aq_bucket *b = bucket_get(c, s->prio, 1);
  if (!b) return; /* out of memory: served again after its next write */
  s->active = 1;
  s->next_active = NULL;
  if (s->prio & 1) {
    aq_stream **pp = &b->head;
    while (*pp && (*pp)->id < s->id) pp = &(*pp)->next_active;
    s->next_active = *pp;
    *pp = s;
    if (!s->next_active) b->tail = s;
    return;
  }
  if (b->tail)
    b->tail->next_active = s;
  else
    b->head = s;
  b->tail = s;
}

/* Take s off the connection's list of streams holding received data (a FIFO, so that data
 * reaches Python in the order it arrived across streams). */
static void dirty_remove(aq_conn *c, aq_stream *s) {
  if (!s->dirty) return;
  aq_stream *prev = NULL;
  for (aq_stream *it = c->dirty_head; it; prev = it, it = it->next_dirty) {
    if (it != s) continue;
    if (prev)
      prev->next_dirty = s->next_dirty;
    else
      c->dirty_head = s->next_dirty;
    if (c->dirty_tail == s) c->dirty_tail = prev;
    break;
  }
  s->dirty = 0;
  s->next_dirty = NULL;
}

static void flush_rx(aq_conn *c, aq_stream *s) {
  dirty_remove(c, s);
  if (!s->rxlen && !s->rx_fin) return;
  aq_event ev = {AQ_EV_STREAM_DATA, s->rx_fin ? AQ_FLAG_FIN : 0, c->handle, s->id, 0, 0,
                 s->rx, s->rxlen};
  if (!s->rxlen) {
    free(s->rx);
    ev.data = NULL;
  }
  s->rx = NULL;
  s->rxlen = s->rxcap = 0;
  s->rx_fin = 0;
  aq_sink_emit(c->ctx->sink, &ev);
}

/* Hand Python every stream's buffered data, oldest first: called before any event that
 * must not overtake data received before it (a FIN, a reset, a datagram, a stop). */
static void flush_dirty(aq_conn *c) {
  while (c->dirty_head) flush_rx(c, c->dirty_head);
}

static void stream_free(aq_conn *c, aq_stream *s) {
  deactivate(c, s);
  dirty_remove(c, s);
  free(s->rx);
  if (s->tx) aq_txbuf_decref(s->tx);
  aq_map_del(&c->streams, &s->id, sizeof(s->id));
  free(s);
}

static void check_writable(aq_conn *c, aq_stream *s) {
  aq_txbuf *tx = s->tx;
  if (!tx) return;
  /* pairs with the fence in aq_txbuf_want_writable: we stored `acked`, Python stored
   * `want_writable`; each then loads the other's variable, so at least one sees both */
  atomic_thread_fence(memory_order_seq_cst);
  if (!atomic_load_explicit(&tx->want_writable, memory_order_relaxed)) return;
  /* Writable once half the ring is free, or earlier, once an eighth is and the engine is
   * about to run out of bytes to send (a sixty-fourth of the ring left): a lost packet holds
   * everything after it in the ring until its retransmission is acknowledged, so on a lossy
   * path the free half may come only after the engine has sent all it has and waited idle
   * for more than an RTT.  Not earlier than that: a writer refilled sooner keeps the ring
   * fuller, and what waits in it is latency (aiomoqt's p95 object latency rose). */
  size_t cap = (size_t)tx->mask + 1, space = aq_txbuf_space(tx);
  uint64_t unsent = atomic_load_explicit(&tx->head, memory_order_relaxed) - tx->sent;
  if ((space > cap / 2 || (space >= cap / 8 && unsent <= cap / 64)) &&
      atomic_exchange(&tx->want_writable, 0))
    aq_sink_emit_simple(c->ctx->sink, AQ_EV_WRITABLE, c->handle, s->id, 0, 0, 0, NULL, 0);
}

/* Wake a writer whose stream can no longer carry data (reset, stop-sending, closed). */
static void release_writer(aq_conn *c, aq_stream *s) {
  if (s->tx && atomic_exchange(&s->tx->want_writable, 0))
    aq_sink_emit_simple(c->ctx->sink, AQ_EV_WRITABLE, c->handle, s->id, 0, 0, 0, NULL, 0);
}

/* ---------------------------------------------------------------- frame scanner */

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  if (*p >= end) return -1;
  size_t n = (size_t)1 << (**p >> 6);
  if ((size_t)(end - *p) < n) return -1;
  uint64_t x = **p & 0x3f;
  for (size_t i = 1; i < n; i++) x = (x << 8) | (*p)[i];
  *p += n;
  *v = x;
  return 0;
}

static int skip_varints(const uint8_t **p, const uint8_t *end, int n) {
  uint64_t v;
  while (n--)
    if (rd_varint(p, end, &v)) return -1;
  return 0;
}

static int skip_bytes(const uint8_t **p, const uint8_t *end, uint64_t n) {
  if ((uint64_t)(end - *p) < n) return -1;
  *p += n;
  return 0;
}

/* An ACK frame: note the largest acknowledged packet (progress, for black-hole detection),
 * and mark PINGs whose packet is in an acknowledged range; a PING whose packet is 3 or more
 * below an acknowledged one is lost (RFC 9002 packet threshold) and is written again. */
static int scan_ack(aq_conn *c, const uint8_t **pp, const uint8_t *end, int ecn) {
  uint64_t largest, delay, count, first, gap, len;
  if (rd_varint(pp, end, &largest) || rd_varint(pp, end, &delay) || rd_varint(pp, end, &count) ||
      rd_varint(pp, end, &first))
    return -1;
  (void)delay;
  if (first > largest) return -1;
  if ((int64_t)largest > c->max_acked_pkn) {
    c->max_acked_pkn = (int64_t)largest;
    c->ack_progress = 1;
  }
  uint64_t hi = largest, lo = largest - first;
  for (uint64_t i = 0;; i++) {
    for (aq_pingreq *pg = c->pings; pg; pg = pg->next)
      if (pg->sent && !pg->acked && (uint64_t)pg->pkn >= lo && (uint64_t)pg->pkn <= hi)
        pg->acked = 1;
    if (i == count) break;
    if (rd_varint(pp, end, &gap) || rd_varint(pp, end, &len)) return -1;
    if (lo < gap + 2) return -1;
    hi = lo - gap - 2;
    if (len > hi) return -1;
    lo = hi - len;
  }
  for (aq_pingreq *pg = c->pings; pg; pg = pg->next)
    if (pg->sent && !pg->acked && (int64_t)largest >= pg->pkn + 3) {
      pg->sent = 0; /* lost: PING frames are not retransmitted by the engine */
      c->ping_pending |= 1;
    }
  if (ecn && skip_varints(pp, end, 3)) return -1;
  return 0;
}

/* ngtcp2 1.11 has no callback for a peer's STOP_SENDING, and none for the ACK of a PING, so
 * decrypted 1-RTT payloads are walked frame by frame (skipping data by length, cheap) to
 * note those two.  Anything unknown ends the walk. */
static void scan_frames(aq_conn *c, const uint8_t *p, size_t len) {
  const uint8_t *end = p + len;
  uint64_t type, a, b, n;
  while (p < end) {
    if (rd_varint(&p, end, &type)) return;
    switch (type) {
      case 0x00: /* PADDING */
      case 0x01: /* PING */
      case 0x1e: /* HANDSHAKE_DONE */
        break;
      case 0x02:
      case 0x03: /* ACK */
        if (scan_ack(c, &p, end, type == 0x03)) return;
        break;
      case 0x04:
        if (skip_varints(&p, end, 3)) return;
        break;
      case 0x05: /* STOP_SENDING */
        if (rd_varint(&p, end, &a) || rd_varint(&p, end, &b)) return;
        if (c->nstops == c->capstops) { /* at most one per frame of a packet being read */
          int cap = c->capstops ? c->capstops * 2 : 16;
          aq_stopreq *ns = realloc(c->stops, (size_t)cap * sizeof(*ns));
          if (!ns) return;
          c->stops = ns;
          c->capstops = cap;
        }
        c->stops[c->nstops].sid = (int64_t)a;
        c->stops[c->nstops].code = b;
        c->nstops++;
        break;
      case 0x06: /* CRYPTO */
        if (skip_varints(&p, end, 1) || rd_varint(&p, end, &n) || skip_bytes(&p, end, n)) return;
        break;
      case 0x07: /* NEW_TOKEN */
        if (rd_varint(&p, end, &n) || skip_bytes(&p, end, n)) return;
        break;
      case 0x10:
      case 0x12:
      case 0x13:
      case 0x14:
      case 0x16:
      case 0x17:
      case 0x19:
        if (skip_varints(&p, end, 1)) return;
        break;
      case 0x11:
      case 0x15:
        if (skip_varints(&p, end, 2)) return;
        break;
      case 0x18: /* NEW_CONNECTION_ID */
        if (skip_varints(&p, end, 2) || p >= end) return;
        n = *p++;
        if (skip_bytes(&p, end, n + 16)) return;
        break;
      case 0x1a:
      case 0x1b:
        if (skip_bytes(&p, end, 8)) return;
        break;
      case 0x1c:
      case 0x1d: /* CONNECTION_CLOSE */
        if (skip_varints(&p, end, type == 0x1c ? 2 : 1) || rd_varint(&p, end, &n) ||
            skip_bytes(&p, end, n))
          return;
        break;
      case 0x31: /* DATAGRAM with length */
        if (rd_varint(&p, end, &n) || skip_bytes(&p, end, n)) return;
        break;
      default:
        if (type >= 0x08 && type <= 0x0f) { /* STREAM */
          if (skip_varints(&p, end, (type & 0x04) ? 2 : 1)) return;
          if (!(type & 0x02)) return; /* extends to the end of the packet */
          if (rd_varint(&p, end, &n) || skip_bytes(&p, end, n)) return;
          break;
        }
        return; /* 0x30 (DATAGRAM to the end) or an extension frame */
    }
  }
}

static int decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                      const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *ciphertext,
                      size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
                      const uint8_t *aad, size_t aadlen) {
  int rv = ngtcp2_crypto_decrypt_cb(dest, aead, aead_ctx, ciphertext, ciphertextlen, nonce,
                                    noncelen, aad, aadlen);
  if (rv == 0 && aq_cur_conn && aadlen && !(aad[0] & 0x80) &&
      ciphertextlen >= aead->max_overhead)
    scan_frames(aq_cur_conn, dest, ciphertextlen - aead->max_overhead);
  return rv;
}

/* Notes the packet number of each 1-RTT packet we send (the header is still unprotected
 * when it is encrypted): a PING's packet number is how its ACK is recognised.  The engine
 * also calls this with an empty plaintext to check a Retry packet's integrity tag (the aad
 * is then the Retry pseudo-packet, which starts with a length byte, not a header): that is
 * not a packet we send. */
static int encrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead,
                      const ngtcp2_crypto_aead_ctx *aead_ctx, const uint8_t *plaintext,
                      size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
                      const uint8_t *aad, size_t aadlen) {
  aq_conn *c = aq_cur_conn;
  if (c && plaintextlen && aadlen && !(aad[0] & 0x80)) {
    size_t pnlen = (size_t)(aad[0] & 3) + 1;
    if (aadlen >= pnlen + 1) {
      uint64_t trunc = 0;
      for (size_t i = aadlen - pnlen; i < aadlen; i++) trunc = (trunc << 8) | aad[i];
      /* RFC 9000 A.3: the full number closest to the next expected one */
      uint64_t expected = (uint64_t)(c->last_tx_pkn + 1), win = (uint64_t)1 << (pnlen * 8);
      uint64_t cand = (expected & ~(win - 1)) | trunc;
      if (cand + win / 2 <= expected && cand + win < ((uint64_t)1 << 62))
        cand += win;
      else if (cand > expected + win / 2 && cand >= win)
        cand -= win;
      c->last_tx_pkn = (int64_t)cand;
    }
  }
  return ngtcp2_crypto_encrypt_cb(dest, aead, aead_ctx, plaintext, plaintextlen, nonce,
                                  noncelen, aad, aadlen);
}

/* ---------------------------------------------------------------- callbacks */

/* The connection's IDs, mirrored in the driver's routing table through the ctx hooks. */
static int register_cid(aq_conn *c, const ngtcp2_cid *cid) {
  if (c->ncids == c->capcids) {
    int cap = c->capcids ? c->capcids * 2 : 8;
    ngtcp2_cid *n = realloc(c->cids, (size_t)cap * sizeof(*n));
    if (!n) return -1;
    c->cids = n;
    c->capcids = cap;
  }
  c->cids[c->ncids++] = *cid;
  return c->ctx->cid_added ? c->ctx->cid_added(c->ctx->driver, c, cid) : 0;
}

static void unregister_cid(aq_conn *c, const ngtcp2_cid *cid) {
  for (int i = 0; i < c->ncids; i++) {
    if (ngtcp2_cid_eq(&c->cids[i], cid)) {
      c->cids[i] = c->cids[--c->ncids];
      break;
    }
  }
  if (c->ctx->cid_removed) c->ctx->cid_removed(c->ctx->driver, c, cid);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((aq_conn *)ref->user_data)->conn;
}

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  aq_rand_bytes(dest, destlen);
}

size_t aq_worker_byte(const aq_config *cfg) {
  size_t sid = cfg->lb_sid_len <= sizeof(cfg->lb_sid) ? cfg->lb_sid_len : 0;
  return sid ? 1 + sid : 0;
}

void aq_fill_cid(const aq_ctx *ctx, uint8_t *cid, size_t len) {
  aq_rand_bytes(cid, len);
  size_t sid = ctx->cfg.lb_sid_len;
  if (sid && len >= 1 + sid + 4 && sid <= sizeof(ctx->cfg.lb_sid)) {
    cid[0] = (uint8_t)(((ctx->cfg.lb_config_id & 7u) << 5) | ((len - 1) & 31u));
    memcpy(cid + 1, ctx->cfg.lb_sid, sid);
  }
  uint32_t n = ctx->cfg.workers;
  size_t pos = aq_worker_byte(&ctx->cfg);
  if (n > 1 && n <= 256 && pos < len) {
    /* this byte modulo the worker count is our worker number: what the BPF program reads */
    unsigned v = cid[pos] - cid[pos] % n + ctx->cfg.worker % n;
    if (v > 255) v -= n;
    cid[pos] = (uint8_t)v;
  }
}

static int get_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *ud) {
  aq_conn *c = ud;
  (void)conn;
  aq_fill_cid(c->ctx, cid->data, cidlen);
  cid->datalen = cidlen;
  if (ngtcp2_crypto_generate_stateless_reset_token(token, c->ctx->reset_secret,
                                                   sizeof(c->ctx->reset_secret), cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return register_cid(c, cid) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int remove_cid_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud) {
  (void)conn;
  unregister_cid(ud, cid);
  return 0;
}

static void addr_text(const ngtcp2_addr *a, char *buf, size_t len) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getnameinfo((const struct sockaddr *)a->addr, a->addrlen, host, sizeof(host), port,
                  sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(buf, len, "? 0");
    return;
  }
  snprintf(buf, len, "%s %s", host, port);
}

static void peer_addr_text(aq_conn *c, char *buf, size_t len) {
  addr_text(&ngtcp2_conn_get_path(c->conn)->remote, buf, len);
}

/* A new path was validated (RFC 9000 section 8.2): the peer moved, tell Python where. */
static int path_validation_cb(ngtcp2_conn *conn, uint32_t flags, const ngtcp2_path *path,
                              const ngtcp2_path *old_path, ngtcp2_path_validation_result res,
                              void *ud) {
  aq_conn *c = ud;
  (void)conn;
  (void)flags;
  (void)path;
  (void)old_path;
  if (res != NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) return 0;
  char addr[NI_MAXHOST + NI_MAXSERV + 2];
  peer_addr_text(c, addr, sizeof(addr));
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_PEER_ADDRESS, c->handle, -1, 0, 0, 0, addr,
                      strlen(addr));
  return 0;
}

static void tp_info(aq_tp_info *o, const ngtcp2_transport_params *p) {
  if (!p) return;
  o->initial_max_data = p->initial_max_data;
  o->initial_max_stream_data_bidi_local = p->initial_max_stream_data_bidi_local;
  o->initial_max_stream_data_bidi_remote = p->initial_max_stream_data_bidi_remote;
  o->initial_max_stream_data_uni = p->initial_max_stream_data_uni;
  o->initial_max_streams_bidi = p->initial_max_streams_bidi;
  o->initial_max_streams_uni = p->initial_max_streams_uni;
  o->max_idle_timeout_ms = p->max_idle_timeout / NGTCP2_MILLISECONDS;
  o->max_udp_payload_size = p->max_udp_payload_size;
  o->max_ack_delay_us = p->max_ack_delay / NGTCP2_MICROSECONDS;
  o->ack_delay_exponent = p->ack_delay_exponent;
  o->active_connection_id_limit = p->active_connection_id_limit;
  o->disable_active_migration = p->disable_active_migration;
  o->max_datagram_frame_size = p->max_datagram_frame_size;
  o->grease_quic_bit = p->grease_quic_bit;
}

static void copy_cid(uint8_t *dst, uint32_t *len, const ngtcp2_cid *cid) {
  *len = (uint32_t)(cid->datalen <= 20 ? cid->datalen : 20);
  memcpy(dst, cid->data, *len);
}

/* Both sides' transport parameters and the connection IDs, for Python's introspection
 * (0.6.1's peer_transport_parameters / connection_ids) and the qlog file name. */
static void emit_conn_info(aq_conn *c) {
  aq_conn_info info;
  memset(&info, 0, sizeof(info));
  tp_info(&info.local, ngtcp2_conn_get_local_transport_params(c->conn));
  tp_info(&info.remote, ngtcp2_conn_get_remote_transport_params(c->conn));
  if (c->ncids) /* the first one registered: the source CID the connection was made with */
    copy_cid(info.cid_local, &info.cid_local_len, &c->cids[0]);
  copy_cid(info.cid_remote, &info.cid_remote_len, ngtcp2_conn_get_dcid(c->conn));
  copy_cid(info.cid_initial, &info.cid_initial_len,
           ngtcp2_conn_get_client_initial_dcid(c->conn));
  info.version = ngtcp2_conn_get_negotiated_version(c->conn);
  addr_text(&ngtcp2_conn_get_path(c->conn)->local, info.local_addr, sizeof(info.local_addr));
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_CONN_INFO, c->handle, -1, 0, 0, 0, &info,
                      sizeof(info));
}

/* Server: the connection becomes visible to Python (at the end of the handshake, or earlier
 * when 0-RTT data arrives for it). */
static void emit_accepted(aq_conn *c, int early) {
  if (c->accepted_emitted) return;
  char addr[NI_MAXHOST + NI_MAXSERV + 2 + 256];
  peer_addr_text(c, addr, NI_MAXHOST + NI_MAXSERV + 2);
  size_t n = strlen(addr);
  if (early) { /* the ALPN the ClientHello settled, so the application can pick by it */
    gnutls_datum_t alpn = {NULL, 0};
    gnutls_alpn_get_selected_protocol(c->tls, &alpn);
    addr[n++] = '\n';
    if (alpn.size && alpn.size < 255) {
      memcpy(addr + n, alpn.data, alpn.size);
      n += alpn.size;
    }
  }
  c->accepted_emitted = 1;
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_ACCEPTED, c->handle, -1, 0, 0,
                      early ? AQ_ACCEPT_EARLY : 0, addr, n);
}

static void open_local_streams(aq_conn *c);

/* Client, 0-RTT refused: ngtcp2 forgot every stream and resets the stream id counters.
 * Our streams keep their TX rings (nothing sent in 0-RTT was acknowledged), so each local
 * stream is opened again, in id order (the engine hands out the same ids), and its data
 * goes out again from the start; datagrams sent in 0-RTT are lost (they are unreliable). */
static void reopen_after_rejection(aq_conn *c) {
  for (size_t i = 0; i < c->streams.cap; i++) {
    aq_map_slot *sl = &c->streams.slots[i];
    if (sl->state != 1) continue;
    aq_stream *s = sl->val;
    if (!is_local(c, s->id)) {
      stream_free(c, s); /* none can exist before the handshake; never leave one dangling */
      continue;
    }
    deactivate(c, s);
    s->in_engine = 0;
    s->fin_sent = 0;
    s->blocked = 0;
    if (s->tx) s->tx->sent = atomic_load_explicit(&s->tx->acked, memory_order_acquire);
  }
  c->next_local_bidi = 0;
  c->next_local_uni = 2;
  open_local_streams(c);
  /* a stream reset before the handshake is reset again (the engine forgot that too) */
  for (size_t i = 0; i < c->streams.cap; i++) {
    aq_map_slot *sl = &c->streams.slots[i];
    if (sl->state != 1) continue;
    aq_stream *s = sl->val;
    if (s->local_reset && s->in_engine)
      ngtcp2_conn_shutdown_stream_write(c->conn, 0, s->id, s->reset_code);
  }
}

static int handshake_completed_cb(ngtcp2_conn *conn, void *ud) {
  aq_conn *c = ud;
  if (c->ctx->cfg.is_server && c->ctx->alpn_len) {
    gnutls_datum_t sel = {NULL, 0};
    if (gnutls_alpn_get_selected_protocol(c->tls, &sel) != 0 || !sel.size) {
      c->alpn_missing = 1; /* RFC 9001 8.1: closed with no_application_protocol */
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
  }
  c->state = AQ_ST_OPEN;
  c->last_ack_ts = 0;
  if (c->ctx->cfg.is_server) emit_accepted(c, 0);
  uint32_t hs = aq_tls_handshake_flags(c) | (aq_tls_cipher_suite(c) << AQ_HS_SUITE_SHIFT);
  if (!c->ctx->cfg.is_server && c->early_attempted && !(hs & AQ_HS_EARLY_ACCEPTED)) {
    /* GnuTLS reports a refused 0-RTT only now: the engine drops the streams opened in
     * 0-RTT (and their ids); reopen them and resend their bytes from the TX rings */
    int rv = ngtcp2_conn_tls_early_data_rejected(conn);
    if (rv != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
    reopen_after_rejection(c);
    hs |= AQ_HS_EARLY_REJECTED;
  }
  gnutls_datum_t alpn = {NULL, 0};
  gnutls_alpn_get_selected_protocol(c->tls, &alpn);
  const ngtcp2_transport_params *tp = ngtcp2_conn_get_remote_transport_params(conn);
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_HANDSHAKE_DONE, c->handle, -1,
                      tp ? tp->max_datagram_frame_size : 0,
                      ngtcp2_conn_get_negotiated_version(conn), hs, alpn.data, alpn.size);
  emit_conn_info(c);
  /* one session ticket for resumption and 0-RTT (best effort); ngtcp2 copies it, so the
   * server's TLS session has nothing left to do: aq_conn_after_read frees it */
  if (c->ctx->cfg.is_server) {
    gnutls_session_ticket_send(c->tls, 1, 0);
    c->tls_done = 1;
  }
  if (c->ctx->cfg.is_server && c->ctx->cfg.retry != AQ_RETRY_NEVER) {
    /* a token for the client's next connection: it proves its address then, without a
     * Retry round trip (admit.c checks it) */
    uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
    const ngtcp2_path *path = ngtcp2_conn_get_path(conn);
    ngtcp2_ssize n = ngtcp2_crypto_generate_regular_token(
        token, c->ctx->token_secret, sizeof(c->ctx->token_secret), path->remote.addr,
        path->remote.addrlen, aq_now());
    if (n > 0) ngtcp2_conn_submit_new_token(conn, token, (size_t)n); /* best effort */
  }
  return 0;
}

/* After the TLS session was freed (tls_done), CRYPTO data can only be a post-handshake
 * message: a client's (QUIC clients send none) or a server's further session ticket
 * (the client kept the first): dropped. */
static int recv_crypto_cb(ngtcp2_conn *conn, ngtcp2_encryption_level level, uint64_t offset,
                          const uint8_t *data, size_t datalen, void *ud) {
  aq_conn *c = ud;
  if (!c->tls) return 0;
  return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, datalen, ud);
}

static void release_tls(aq_conn *c) {
  c->tls_done = 0;
  if (!c->tls) return;
  ngtcp2_conn_set_tls_native_handle(c->conn, NULL);
  gnutls_deinit(c->tls);
  c->tls = NULL;
}

static int recv_vn_cb(ngtcp2_conn *conn, const ngtcp2_pkt_hd *hd, const uint32_t *sv,
                      size_t nsv, void *ud) {
  aq_conn *c = ud;
  (void)conn;
  (void)hd;
  c->vn_noffered = 0;
  for (size_t i = 0; i < nsv && c->vn_noffered < sizeof(c->vn_offered) / sizeof(c->vn_offered[0]);
       i++)
    c->vn_offered[c->vn_noffered++] = sv[i];
  return 0;
}

static int recv_new_token_cb(ngtcp2_conn *conn, const uint8_t *token, size_t tokenlen,
                             void *ud) {
  aq_conn *c = ud;
  (void)conn;
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_NEW_TOKEN, c->handle, -1, 0, 0, 0, token, tokenlen);
  return 0;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *ud, void *sud) {
  aq_conn *c = ud;
  aq_stream *s = sud ? sud : stream_get_or_create(c, sid);
  (void)offset;
  if (c->ctx->cfg.is_server && !c->accepted_emitted) emit_accepted(c, 1); /* 0-RTT data */
  if (!s) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (!sud) {
    s->in_engine = 1;
    ngtcp2_conn_set_stream_user_data(conn, sid, s);
  }
  if (datalen) {
    if (s->rxlen + datalen > s->rxcap) {
      /* a stream that already carried bulk data gets a full chunk at once (no realloc
       * copies); a fresh one starts small */
      size_t cap = s->rxcap ? s->rxcap : (s->rx_total > 65536 ? AQ_RX_FLUSH + 65536 : 16384);
      while (cap < s->rxlen + datalen) cap *= 2;
      uint8_t *n = realloc(s->rx, cap);
      if (!n) return NGTCP2_ERR_CALLBACK_FAILURE;
      s->rx = n;
      s->rxcap = cap;
    }
    memcpy(s->rx + s->rxlen, data, datalen);
    s->rxlen += datalen;
    if (!s->rx_mark_ts) s->rx_mark_ts = c->read_ts; /* rx_window_grow measures from here */
    s->rx_total += datalen;
  }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) s->rx_fin = 1;
  if (s->rxlen >= AQ_RX_FLUSH || s->rx_fin) {
    flush_dirty(c); /* what arrived earlier on other streams goes first */
    flush_rx(c, s);
  } else if (!s->dirty) {
    s->dirty = 1;
    s->next_dirty = NULL;
    if (c->dirty_tail)
      c->dirty_tail->next_dirty = s;
    else
      c->dirty_head = s;
    c->dirty_tail = s;
  }
  return 0;
}

static int stream_open_cb(ngtcp2_conn *conn, int64_t sid, void *ud) {
  aq_conn *c = ud;
  aq_stream *s = stream_get_or_create(c, sid);
  if (!s) return NGTCP2_ERR_CALLBACK_FAILURE;
  s->in_engine = 1;
  ngtcp2_conn_set_stream_user_data(conn, sid, s);
  return 0;
}

static int acked_cb(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t datalen, void *ud,
                    void *sud) {
  aq_conn *c = ud;
  aq_stream *s = sud;
  (void)conn;
  (void)sid;
  if (!s || !s->tx) return 0;
  uint64_t end = offset + datalen;
  if (end > atomic_load_explicit(&s->tx->acked, memory_order_relaxed))
    atomic_store_explicit(&s->tx->acked, end, memory_order_release);
  check_writable(c, s);
  return 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code,
                           void *ud, void *sud) {
  aq_conn *c = ud;
  aq_stream *s = sud;
  (void)flags;
  (void)code;
  if (!is_local(c, sid)) {
    if (sid & 2)
      ngtcp2_conn_extend_max_streams_uni(conn, 1);
    else
      ngtcp2_conn_extend_max_streams_bidi(conn, 1);
  }
  if (!s) return 0;
  flush_dirty(c);
  flush_rx(c, s);
  release_writer(c, s);
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_STREAM_CLOSED, c->handle, sid, 0, 0, 0, NULL, 0);
  ngtcp2_conn_set_stream_user_data(conn, sid, NULL);
  stream_free(c, s);
  return 0;
}

static int stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t code,
                           void *ud, void *sud) {
  aq_conn *c = ud;
  aq_stream *s = sud;
  (void)conn;
  if (s) {
    flush_dirty(c);
    flush_rx(c, s);
    if (s->reset_reported) return 0;
    s->reset_reported = 1;
  }
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_STREAM_RESET, c->handle, sid, code, final_size, 0, NULL, 0);
  return 0;
}

static int extend_local_cb(ngtcp2_conn *conn, uint64_t max_streams, void *ud) {
  (void)conn;
  (void)max_streams;
  ((aq_conn *)ud)->ping_pending |= 2; /* bit 2: retry opening local streams */
  return 0;
}

static int extend_stream_data_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max_data, void *ud,
                                 void *sud) {
  aq_stream *s = sud;
  (void)conn;
  (void)sid;
  (void)max_data;
  if (s && s->blocked) {
    s->blocked = 0;
    activate(ud, s);
  }
  return 0;
}

static int recv_datagram_cb(ngtcp2_conn *conn, uint32_t flags, const uint8_t *data, size_t len,
                            void *ud) {
  aq_conn *c = ud;
  (void)conn;
  (void)flags;
  if (c->ctx->cfg.is_server && !c->accepted_emitted) emit_accepted(c, 1); /* 0-RTT data */
  flush_dirty(c); /* stream data that arrived before this datagram is delivered first */
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_DATAGRAM, c->handle, -1, 0, 0, 0, data, len);
  return 0;
}

static void init_callbacks(ngtcp2_callbacks *cb, int server) {
  memset(cb, 0, sizeof(*cb));
  if (server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb->recv_new_token = recv_new_token_cb;
    cb->recv_version_negotiation = recv_vn_cb;
  }
  cb->recv_crypto_data = recv_crypto_cb;
  cb->encrypt = encrypt_cb;
  cb->decrypt = decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = get_new_cid_cb;
  cb->path_validation = path_validation_cb;
  cb->remove_connection_id = remove_cid_cb;
  cb->handshake_completed = handshake_completed_cb;
  cb->recv_stream_data = recv_stream_data_cb;
  cb->stream_open = stream_open_cb;
  cb->acked_stream_data_offset = acked_cb;
  cb->stream_close = stream_close_cb;
  cb->stream_reset = stream_reset_cb;
  cb->extend_max_local_streams_bidi = extend_local_cb;
  cb->extend_max_local_streams_uni = extend_local_cb;
  cb->extend_max_stream_data = extend_stream_data_cb;
  cb->recv_datagram = recv_datagram_cb;
}

/* ---------------------------------------------------------------- creation */

size_t aq_spoken_versions(const aq_config *cfg, uint32_t out[4]) {
  size_t n = 0;
  for (uint32_t i = 0; i < cfg->nversions && i < 4; i++)
    if (ngtcp2_is_supported_version(cfg->versions[i])) out[n++] = cfg->versions[i];
  return n;
}

/* pref: room for cfg->nversions entries, alive until the ngtcp2_conn is created (ngtcp2
 * copies the lists). */
static void init_settings(const aq_ctx *ctx, ngtcp2_settings *s, ngtcp2_transport_params *p,
                          ngtcp2_tstamp now, uint32_t *pref, const struct sockaddr *remote,
                          socklen_t remotelen) {
  const aq_config *cfg = &ctx->cfg;
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  if (cfg->engine_log) s->log_printf = engine_log_cb;
  s->cc_algo = (ngtcp2_cc_algo)cfg->cc_algo;
  if (cfg->handshake_timeout_ns) s->handshake_timeout = cfg->handshake_timeout_ns;
  /* PMTUD climbs from 1200 bytes through the ladder up to the configured maximum.  DF is
   * set on the socket, so a probe larger than the path is lost and ngtcp2 stops there.
   * Never beyond the local route's MTU: the kernel refuses those probes (EMSGSIZE), and
   * each refused probe costs the engine a loss and a PTO probe (three per connection on
   * every 1500-byte interface). */
  size_t nprobes = 0;
  size_t maxp = cfg->max_udp_payload;
  if (maxp && remote) {
    size_t route = aq_io_route_payload(remote, remotelen);
    if (route >= AQ_BASE_PLPMTU && route < maxp) maxp = route;
  }
  if (maxp) {
    s->max_tx_udp_payload_size = maxp;
    while (nprobes < AQ_LADDER_LEN && aq_ladder[nprobes] <= maxp) nprobes++;
    s->pmtud_probes = aq_ladder;
    s->pmtud_probeslen = nprobes;
    if (!nprobes) s->no_pmtud = 1;
  }
  if (cfg->ack_thresh) s->ack_thresh = cfg->ack_thresh;
  if (cfg->initial_rtt_ns) s->initial_rtt = cfg->initial_rtt_ns;
  ngtcp2_transport_params_default(p);
  /* Stream windows start small and grow to max_stream_data only while the reader keeps up
   * (rx_window_grow; ngtcp2's own auto-tuning stays off): a reader slower than the path
   * keeps a short queue (low latency), a fast one on a long path gets the full window. */
  uint64_t stream_window = stream_window_start(ctx);
  p->initial_max_stream_data_bidi_local = stream_window;
  p->initial_max_stream_data_bidi_remote = stream_window;
  p->initial_max_stream_data_uni = stream_window;
  p->initial_max_data = cfg->max_data;
  p->initial_max_streams_bidi = cfg->max_streams_bidi;
  p->initial_max_streams_uni = cfg->max_streams_uni;
  p->max_idle_timeout = cfg->idle_timeout_ns;
  p->active_connection_id_limit = 7;
  p->max_datagram_frame_size = cfg->max_datagram_frame_size;
  if (cfg->nversions) { /* ctx->cfg outlives every connection of the context */
    /* preferred: the versions we speak; available (offered in version_information) may
     * also hold reserved ones, which ngtcp2 allows there only */
    size_t npref = aq_spoken_versions(cfg, pref);
    if (npref) {
      s->preferred_versions = pref;
      s->preferred_versionslen = npref;
    }
    s->available_versions = cfg->versions;
    s->available_versionslen = cfg->nversions;
  }
}

static aq_conn *conn_alloc(aq_ctx *ctx, uint64_t handle) {
  aq_conn *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->ctx = ctx;
  c->handle = handle;
  c->cref.get_conn = get_conn;
  c->cref.user_data = c;
  c->next_local_bidi = ctx->cfg.is_server ? 1 : 0;
  c->next_local_uni = ctx->cfg.is_server ? 3 : 2;
  c->last_tx_pkn = -1;
  c->max_acked_pkn = -1;
  c->expiry = UINT64_MAX;
  c->cap_backoff = NGTCP2_SECONDS;
  c->cap_failed = SIZE_MAX;
  c->default_prio = 8; /* round robin among equals, as before priorities existed */
  if (aq_map_init(&c->streams, 0) != 0) { /* streams: a table from the first one on */
    free(c);
    return NULL;
  }
  return c;
}

/* A connection ID of the context's length: `given` (when not NULL) or random. */
static void make_cid(const aq_ctx *ctx, ngtcp2_cid *cid, const ngtcp2_cid *given, size_t minlen) {
  if (given) {
    *cid = *given;
    return;
  }
  cid->datalen = ctx->cid_len < minlen ? minlen : ctx->cid_len;
  aq_fill_cid(ctx, cid->data, cid->datalen);
}

/* The client's engine and TLS session: at creation, and again (new ngtcp2_conn, new TLS
 * session, same connection ID and socket) after a Version Negotiation packet, in `version`
 * with `original` the version of the first attempt (0: this is the first). */
static int client_engine_new(aq_conn *c, const ngtcp2_path *path, const ngtcp2_cid *dcid,
                             const ngtcp2_cid *scid, uint32_t version, uint32_t original,
                             const char *server_name, ngtcp2_tstamp now, char *err,
                             size_t errlen) {
  aq_ctx *ctx = c->ctx;
  ngtcp2_callbacks cb;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  uint32_t pref[4];
  init_callbacks(&cb, 0);
  init_settings(ctx, &settings, &params, now, pref, (const struct sockaddr *)path->remote.addr,
                (socklen_t)path->remote.addrlen);
  if (original) settings.original_version = original;
  if (ctx->cfg.token_len) {
    settings.token = ctx->cfg.token;
    settings.tokenlen = ctx->cfg.token_len;
  }
  int rv = ngtcp2_conn_client_new(&c->conn, dcid, scid, path, version, &cb, &settings, &params,
                                  NULL, c);
  if (rv != 0) {
    c->conn = NULL;
    AQ_ERR(err, errlen, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
    return -1;
  }
  if (aq_tls_session_new(c, server_name, err, errlen) != 0) return -1;
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  if (aq_tls_apply_ticket(c, err, errlen) != 0) return -1;
  if (ctx->cfg.keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->conn, ctx->cfg.keep_alive_ns);
  return 0;
}

aq_conn *aq_conn_new_client(aq_ctx *ctx, uint64_t handle, const struct sockaddr *local,
                            socklen_t locallen, const struct sockaddr *remote,
                            socklen_t remotelen, const char *server_name,
                            const ngtcp2_cid *dcid_in, const ngtcp2_cid *scid_in,
                            ngtcp2_tstamp now, char *err, size_t errlen) {
  aq_conn *c = conn_alloc(ctx, handle);
  if (!c) {
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  ngtcp2_cid dcid, scid;
  make_cid(ctx, &dcid, dcid_in, NGTCP2_MIN_INITIAL_DCIDLEN); /* RFC 9000 7.2: >= 8 bytes */
  make_cid(ctx, &scid, scid_in, 0);
  ngtcp2_path path = {{(ngtcp2_sockaddr *)local, locallen},
                      {(ngtcp2_sockaddr *)remote, remotelen},
                      NULL};
  uint32_t version = ctx->cfg.client_version ? ctx->cfg.client_version
                     : ctx->cfg.nversions   ? ctx->cfg.versions[0]
                                            : NGTCP2_PROTO_VER_V1;
  if (client_engine_new(c, &path, &dcid, &scid, version, 0, server_name, now, err, errlen) != 0)
    goto fail;
  if (register_cid(c, &scid) != 0) {
    AQ_ERR(err, errlen, "out of memory");
    goto fail;
  }
  c->state = AQ_ST_HANDSHAKE;
  c->want_write = 1; /* the first write sends the Initial */
  return c;
fail:
  c->accepted_emitted = -1;
  aq_conn_free(c);
  return NULL;
}

/* A Version Negotiation packet answered our first Initial (ngtcp2 checked it names our
 * connection IDs and does not list the version we used): start again in the first of our
 * versions the server offers, from the same socket and connection ID, or fail the
 * connection when there is none (or this already happened once). */
static void client_renegotiate(aq_conn *c, ngtcp2_tstamp now) {
  const aq_config *cfg = &c->ctx->cfg;
  uint32_t pref[4];
  size_t npref = aq_spoken_versions(cfg, pref);
  if (!npref) pref[npref++] = NGTCP2_PROTO_VER_V1; /* none configured: version 1 only */
  uint32_t chosen = ngtcp2_select_version(pref, npref, c->vn_offered, c->vn_noffered);
  if (!chosen || c->vn_restarted || c->early_attempted) {
    char why[200];
    int n = snprintf(why, sizeof(why), "version negotiation failed: the server offers");
    for (size_t i = 0; i < c->vn_noffered && i < 8 && n > 0 && (size_t)n < sizeof(why); i++)
      n += snprintf(why + n, sizeof(why) - (size_t)n, " 0x%08x", c->vn_offered[i]);
    aq_conn_fail(c, AQ_CLOSE_LOCAL, NGTCP2_VERSION_NEGOTIATION_ERROR, why);
    return;
  }
  c->vn_restarted = 1;
  uint32_t original = ngtcp2_conn_get_client_chosen_version(c->conn);
  struct sockaddr_storage local, remote;
  const ngtcp2_path *old = ngtcp2_conn_get_path(c->conn);
  socklen_t locallen = (socklen_t)old->local.addrlen, remotelen = (socklen_t)old->remote.addrlen;
  memcpy(&local, old->local.addr, locallen);
  memcpy(&remote, old->remote.addr, remotelen);
  if (!c->ncids) {
    aq_conn_fail(c, AQ_CLOSE_LOCAL, NGTCP2_INTERNAL_ERROR, "version negotiation: no connection ID");
    return;
  }
  ngtcp2_cid scid = c->cids[0]; /* registered at creation: the packets still find us */
  ngtcp2_path path = {{(ngtcp2_sockaddr *)&local, locallen},
                      {(ngtcp2_sockaddr *)&remote, remotelen},
                      NULL};
  ngtcp2_cid dcid;
  make_cid(c->ctx, &dcid, NULL, NGTCP2_MIN_INITIAL_DCIDLEN);
  char *name = c->server_name;
  c->server_name = NULL;
  ngtcp2_conn_del(c->conn);
  c->conn = NULL;
  gnutls_deinit(c->tls);
  c->tls = NULL;
  char err[256];
  int rv = client_engine_new(c, &path, &dcid, &scid, chosen, original, name, now, err,
                             sizeof(err));
  free(name);
  if (rv != 0) {
    aq_conn_fail(c, AQ_CLOSE_LOCAL, NGTCP2_INTERNAL_ERROR, err); /* DEAD: no engine left */
    return;
  }
  c->want_write = 1; /* the new Initial */
}

aq_conn *aq_conn_accept(aq_ctx *ctx, uint64_t handle, const ngtcp2_path *path,
                        const ngtcp2_pkt_hd *hd, const aq_validation *v,
                        const ngtcp2_cid *scid_in, ngtcp2_tstamp now) {
  aq_conn *c = conn_alloc(ctx, handle);
  if (!c) return NULL;
  ngtcp2_callbacks cb;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  uint32_t pref[4];
  init_callbacks(&cb, 1);
  init_settings(ctx, &settings, &params, now, pref, (const struct sockaddr *)path->remote.addr,
                (socklen_t)path->remote.addrlen);
  ngtcp2_cid scid;
  make_cid(ctx, &scid, scid_in, 0);
  params.original_dcid = hd->dcid;
  params.original_dcid_present = 1;
  if (v && v->retried) { /* RFC 9000 7.3: both IDs let the client authenticate the Retry */
    params.original_dcid = v->odcid;
    params.retry_scid = hd->dcid;
    params.retry_scid_present = 1;
  }
  if (v && v->token_type != NGTCP2_TOKEN_TYPE_UNKNOWN) { /* the address is proven */
    settings.token = hd->token;
    settings.tokenlen = hd->tokenlen;
    settings.token_type = (ngtcp2_token_type)v->token_type;
  }
  if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token,
                                                   ctx->reset_secret, sizeof(ctx->reset_secret),
                                                   &scid) == 0)
    params.stateless_reset_token_present = 1;
  char err[256];
  int rv = ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, path, hd->version, &cb,
                                  &settings, &params, NULL, c);
  if (rv != 0 || aq_tls_session_new(c, NULL, err, sizeof(err)) != 0) goto fail;
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  if (ctx->cfg.keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->conn, ctx->cfg.keep_alive_ns);
  if (register_cid(c, &scid) != 0 || register_cid(c, &hd->dcid) != 0) goto fail;
  c->state = AQ_ST_HANDSHAKE;
  return c;
fail:
  c->accepted_emitted = -1;
  aq_conn_free(c);
  return NULL;
}

/* The accept path both drivers share: a datagram that matches no connection starts one if
 * it is a valid client Initial (ngtcp2_accept checks the version, the packet type, the
 * Initial DCID length and the datagram size).  Anything else returns NULL and is dropped.
 * scid is the server's connection ID (NULL: random, the context's length). */
aq_conn *aq_conn_accept_packet(aq_ctx *ctx, uint64_t handle, const ngtcp2_path *path,
                               const uint8_t *data, size_t len, const ngtcp2_cid *scid,
                               ngtcp2_tstamp now) {
  ngtcp2_pkt_hd hd;
  if (!ctx->cfg.is_server || !len || !(data[0] & 0x80)) return NULL;
  if (ngtcp2_accept(&hd, data, len) != 0) return NULL;
  return aq_conn_accept(ctx, handle, path, &hd, NULL, scid, now);
}

/* The driver is stopping: tell the peer now instead of waiting for acknowledgements. */
void aq_conn_shutdown(aq_conn *c, ngtcp2_tstamp now, aq_txq *q) {
  if (c->state >= AQ_ST_CLOSING) return;
  if (!c->close_pending) {
    static const char why[] = "endpoint closed";
    c->close_pending = 1;
    c->close_app = 1;
    c->close_code = 0;
    c->close_reason = malloc(sizeof(why) - 1);
    if (c->close_reason) {
      memcpy(c->close_reason, why, sizeof(why) - 1);
      c->close_reason_len = sizeof(why) - 1;
    }
  }
  do_graceful_close(c, now, q);
}

void aq_conn_free(aq_conn *c) {
  emit_closed(c, 0, 0, 0, "connection released", 19);
  while (c->ncids) unregister_cid(c, &c->cids[c->ncids - 1]);
  free(c->cids);
  for (size_t i = 0; i < c->streams.cap; i++) {
    aq_map_slot *sl = &c->streams.slots[i];
    if (sl->state == 1) {
      aq_stream *s = sl->val;
      free(s->rx);
      if (s->tx) aq_txbuf_decref(s->tx);
      free(s);
    }
  }
  aq_map_destroy(&c->streams);
  while (c->dg_head) {
    aq_dgram *d = c->dg_head;
    c->dg_head = d->next;
    aq_dgram_finish(NULL, d); /* the connection is gone: Python learns it from CLOSED */
  }
  while (c->pings) {
    aq_pingreq *p = c->pings;
    c->pings = p->next;
    free(p);
  }
  while (c->buckets) {
    aq_bucket *b = c->buckets;
    c->buckets = b->next;
    free(b);
  }
  free(c->stops);
  free(c->close_reason);
  free(c->close_pkt);
  if (c->conn) ngtcp2_conn_del(c->conn);
  if (c->tls) gnutls_deinit(c->tls);
  free(c->server_name);
  free(c->log_buf);
  free(c);
}

/* ---------------------------------------------------------------- closing */

static void enter_closing(aq_conn *c, ngtcp2_ccerr *ccerr, uint32_t flags, ngtcp2_tstamp now,
                          aq_txq *q) {
  uint8_t buf[1500];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof(buf),
                                                      ccerr, now);
  if (n > 0) {
    /* a full queue loses this copy; the saved one answers the peer's next packet */
    aq_txq_push(q, (const struct sockaddr *)ps.path.local.addr,
                (const struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen,
                c->handle, buf, (size_t)n);
    c->close_pkt = malloc((size_t)n);
    if (c->close_pkt) {
      memcpy(c->close_pkt, buf, (size_t)n);
      c->close_pktlen = (size_t)n;
    }
  }
  emit_closed(c, flags | AQ_CLOSE_LOCAL, ccerr->error_code, ccerr->frame_type, ccerr->reason,
              ccerr->reasonlen);
  c->state = n > 0 ? AQ_ST_CLOSING : AQ_ST_DEAD;
  c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->conn);
  c->expiry = c->close_deadline;
}

static void do_graceful_close(aq_conn *c, ngtcp2_tstamp now, aq_txq *q) {
  ngtcp2_ccerr ccerr;
  ngtcp2_ccerr_default(&ccerr);
  if (c->close_app)
    ngtcp2_ccerr_set_application_error(&ccerr, c->close_code, c->close_reason,
                                       c->close_reason_len);
  else
    ngtcp2_ccerr_set_transport_error(&ccerr, c->close_code, c->close_reason,
                                     c->close_reason_len);
  ccerr.frame_type = c->close_ft;
  c->close_pending = 0;
  enter_closing(c, &ccerr, c->close_app ? AQ_CLOSE_APP : 0, now, q);
}

static int all_acked(aq_conn *c) {
  for (size_t i = 0; i < c->streams.cap; i++) {
    aq_map_slot *sl = &c->streams.slots[i];
    if (sl->state != 1) continue;
    aq_stream *s = sl->val;
    if (!s->tx || s->shut_wr) continue;
    if (atomic_load(&s->tx->acked) < atomic_load(&s->tx->head)) return 0;
    if (atomic_load(&s->tx->fin_at) && !s->fin_sent) return 0;
  }
  return 1;
}

void aq_conn_fail(aq_conn *c, uint32_t flags, uint64_t code, const char *reason) {
  if (c->state >= AQ_ST_CLOSING) return;
  emit_closed(c, flags, code, 0, reason, strlen(reason));
  c->state = AQ_ST_DEAD;
}

static void enter_draining(aq_conn *c, ngtcp2_tstamp now) {
  const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(c->conn);
  uint32_t flags = e->type == NGTCP2_CCERR_TYPE_APPLICATION ? AQ_CLOSE_APP : 0;
  if (e->type == NGTCP2_CCERR_TYPE_DROP_CONN) flags |= AQ_CLOSE_RESET;
  emit_closed(c, flags, e->error_code, e->frame_type, e->reason, e->reasonlen);
  c->state = AQ_ST_DRAINING;
  c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->conn);
  c->expiry = c->close_deadline;
}

static void fail_with_liberr(aq_conn *c, int rv, ngtcp2_tstamp now, aq_txq *q) {
  ngtcp2_ccerr ccerr;
  ngtcp2_ccerr_default(&ccerr);
  char reason[512];
  uint32_t flags = 0;
  if (c->alpn_missing) {
    ngtcp2_ccerr_set_tls_alert(&ccerr, GNUTLS_A_NO_APPLICATION_PROTOCOL, NULL, 0);
    snprintf(reason, sizeof(reason),
             "no_application_protocol: the client offered none of the server's ALPN protocols");
    flags = AQ_CLOSE_TLS;
  } else if (rv == NGTCP2_ERR_CRYPTO) {
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->conn);
    aq_tls_describe_failure(c, reason, sizeof(reason));
    if (!reason[0])
      snprintf(reason, sizeof(reason), "TLS handshake failed: %s",
               gnutls_alert_get_name((gnutls_alert_description_t)alert)
                   ? gnutls_alert_get_name((gnutls_alert_description_t)alert)
                   : "unknown alert");
    ngtcp2_ccerr_set_tls_alert(&ccerr, alert, NULL, 0);
    flags = AQ_CLOSE_TLS;
  } else {
    ngtcp2_ccerr_set_liberr(&ccerr, rv, NULL, 0);
    snprintf(reason, sizeof(reason), "%s", ngtcp2_strerror(rv));
  }
  /* report our own reason text, but keep the wire reason empty */
  emit_closed(c, flags | AQ_CLOSE_LOCAL, ccerr.error_code, ccerr.frame_type, reason,
              strlen(reason));
  enter_closing(c, &ccerr, flags, now, q);
}

/* ---------------------------------------------------------------- reading */

void aq_conn_read(aq_conn *c, const ngtcp2_path *path, const uint8_t *data, size_t len,
                  uint32_t ecn, ngtcp2_tstamp now, aq_txq *q) {
  if (c->state == AQ_ST_CLOSING) {
    /* RFC 9000 10.2.1: answer a closing connection's packets with the saved close, but only
     * at the 1st, 2nd, 4th, 8th... packet and never with more bytes than arrived */
    c->close_rx++;
    if (c->close_pkt && c->close_pktlen <= len && (c->close_rx & (c->close_rx - 1)) == 0)
      aq_txq_push(q, (const struct sockaddr *)path->local.addr,
                  (const struct sockaddr *)path->remote.addr, path->remote.addrlen,
                  c->handle, c->close_pkt, c->close_pktlen);
    return;
  }
  if (c->state >= AQ_ST_DRAINING) return;
  c->read_ts = now; /* the time callbacks of this read see (handshake_completed_cb) */
  ngtcp2_pkt_info pi = {.ecn = (uint8_t)(ecn & 3)};
  c->ecn_rx[ecn & 3]++;
  aq_cur_conn = c;
  c->pkts_recv++;
  c->bytes_recv += len;
  int rv = ngtcp2_conn_read_pkt(c->conn, path, &pi, data, len, now);
  aq_cur_conn = NULL;
  c->want_write = 1;
  if (rv == 0) {
    c->refused_since = 0; /* the peer is there: earlier ICMP refusals are forgotten */
    return;
  }
  switch (rv) {
    case NGTCP2_ERR_DRAINING:
      enter_draining(c, now);
      return;
    case NGTCP2_ERR_CLOSING:
      return;
    case NGTCP2_ERR_DROP_CONN:
      aq_conn_fail(c, 0, 0, "connection dropped");
      return;
    case NGTCP2_ERR_DISCARD_PKT:
      return;
    case NGTCP2_ERR_RECV_VERSION_NEGOTIATION:
      client_renegotiate(c, now);
      return;
    default:
      fail_with_liberr(c, rv, now, q);
      return;
  }
}

static void open_local_streams(aq_conn *c) {
  for (int uni = 0; uni < 2; uni++) {
    int64_t *next = uni ? &c->next_local_uni : &c->next_local_bidi;
    for (;;) {
      aq_stream *s = stream_get(c, *next);
      if (!s) { /* open ids up to the highest one Python has used */
        int64_t probe = *next + 4;
        int found = 0;
        for (size_t i = 0; i < c->streams.cap && !found; i++) {
          aq_map_slot *sl = &c->streams.slots[i];
          if (sl->state == 1) {
            aq_stream *o = sl->val;
            if (!o->in_engine && is_local(c, o->id) && (((o->id & 2) != 0) == uni) &&
                o->id >= probe)
              found = 1;
          }
        }
        if (!found) break;
        s = stream_get_or_create(c, *next);
        if (!s) break;
      }
      if (s->in_engine) {
        *next += 4;
        continue;
      }
      int64_t id;
      int rv = uni ? ngtcp2_conn_open_uni_stream(c->conn, &id, s)
                   : ngtcp2_conn_open_bidi_stream(c->conn, &id, s);
      if (rv != 0) break; /* NGTCP2_ERR_STREAM_ID_BLOCKED: wait for MAX_STREAMS */
      s->in_engine = 1;
      *next += 4;
      activate(c, s);
    }
  }
}

void aq_conn_after_read(aq_conn *c, ngtcp2_tstamp now) {
  flush_dirty(c);
  if (c->ack_progress) {
    c->ack_progress = 0;
    c->last_ack_ts = now;
  }
  for (int i = 0; i < c->nstops; i++) {
    int64_t sid = c->stops[i].sid;
    aq_stream *s = stream_get(c, sid);
    if (s) {
      if (s->stop_reported) continue;
      s->stop_reported = 1;
      s->shut_wr = 1;
      deactivate(c, s);
      release_writer(c, s);
    } else {
      /* the stream may have closed (and been freed) in this very read: still report it,
       * once, even if the frame is retransmitted */
      int seen = 0;
      for (size_t k = 0; k < sizeof(c->stop_seen) / sizeof(c->stop_seen[0]); k++)
        if (c->stop_seen[k] == sid + 1) seen = 1;
      if (seen) continue;
    }
    c->stop_seen[c->stop_seen_next++ % (sizeof(c->stop_seen) / sizeof(c->stop_seen[0]))] = sid + 1;
    aq_sink_emit_simple(c->ctx->sink, AQ_EV_STOP_SENDING, c->handle, sid, c->stops[i].code, 0, 0,
                        NULL, 0);
  }
  c->nstops = 0;
  if (c->capstops > 64) { /* a burst of STOP_SENDING: give the memory back */
    free(c->stops);
    c->stops = NULL;
    c->capstops = 0;
  }
  aq_pingreq **pp = &c->pings;
  while (*pp) {
    aq_pingreq *p = *pp;
    if (p->acked) {
      aq_sink_emit_simple(c->ctx->sink, AQ_EV_PING_ACK, c->handle, -1, p->uid, 0, 0, NULL, 0);
      *pp = p->next;
      free(p);
    } else {
      pp = &p->next;
    }
  }
  if (c->ping_pending & 2) {
    c->ping_pending &= ~2;
    if (c->state == AQ_ST_OPEN || c->state == AQ_ST_HANDSHAKE) open_local_streams(c);
  }
  if (c->tls_done) release_tls(c);
  if (c->log_len) engine_log_flush(c);
}

/* ---------------------------------------------------------------- packet size */

/* ngtcp2's path size (what its PMTUD found), limited by our cap. */
static size_t path_size(aq_conn *c) {
  size_t m = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
  return c->cap && c->cap < m ? c->cap : m;
}

static size_t rung_below(size_t n) {
  size_t r = AQ_BASE_PLPMTU;
  for (size_t i = 0; i < AQ_LADDER_LEN && aq_ladder[i] < n; i++) r = aq_ladder[i];
  return r;
}

static size_t rung_above(size_t n) {
  for (size_t i = 0; i < AQ_LADDER_LEN; i++)
    if (aq_ladder[i] > n) return aq_ladder[i];
  return 0;
}

static size_t varint_len(uint64_t v) { return v < 64 ? 1 : v < 16384 ? 2 : v < (1u << 30) ? 4 : 8; }

/* Largest DATAGRAM payload that fits one packet of `pkt` bytes and the peer's limit. */
static size_t max_dgram_payload(aq_conn *c, size_t pkt) {
  const ngtcp2_transport_params *tp = ngtcp2_conn_get_remote_transport_params(c->conn);
  if (!tp || !tp->max_datagram_frame_size || pkt <= AQ_DGRAM_OVERHEAD) return 0;
  uint64_t best = 0, fmax = tp->max_datagram_frame_size;
  for (size_t vl = 1; vl <= 8; vl *= 2) {
    if (fmax < 1 + vl) break;
    uint64_t p = fmax - 1 - vl;
    if (varint_len(p) <= vl && p > best) best = p;
  }
  size_t bypkt = pkt - AQ_DGRAM_OVERHEAD;
  return best < bypkt ? (size_t)best : bypkt;
}

/* Packets of `failed` bytes do not get through: send packets of `to` bytes from now on,
 * climb back rung by rung, and try `failed` again only after a back-off (doubling each time,
 * up to 10 minutes). */
static void lower_cap(aq_conn *c, size_t to, size_t failed, ngtcp2_tstamp now) {
  if (c->cap && c->cap <= to) return;
  ngtcp2_duration pto = ngtcp2_conn_get_pto(c->conn);
  c->cap = to;
  c->cap_step_ts = now;
  if (failed < c->cap_failed) c->cap_failed = failed;
  c->cap_retry_at = now + c->cap_backoff;
  if (c->cap_backoff < 600 * NGTCP2_SECONDS) c->cap_backoff *= 2;
  c->cap_raise_at = now + 3 * pto;
  c->want_write = 1;
}

/* RFC 8899-style black-hole detection and search: when nothing new has been acknowledged for
 * 4 PTOs while packets larger than the base size are in flight, fall back to 1200 bytes; then
 * climb the ladder one rung at a time (a rung must see an acknowledgement before the next)
 * up to the engine's size, retrying the size that failed only after the back-off. */
static void check_path(aq_conn *c, ngtcp2_tstamp now) {
  if (c->state != AQ_ST_OPEN) return;
  size_t cur = path_size(c);
  ngtcp2_duration pto = ngtcp2_conn_get_pto(c->conn);
  if (cur > AQ_BASE_PLPMTU && c->last_ack_ts && now >= c->last_ack_ts + 4 * pto) {
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(c->conn, &ci);
    if (ci.bytes_in_flight) {
      c->blackholes++;
      lower_cap(c, AQ_BASE_PLPMTU, cur, now);
      c->last_ack_ts = now; /* give the smaller packets their own 4 PTOs */
      return;
    }
  }
  if (!c->cap || now < c->cap_raise_at) return;
  if (c->last_ack_ts <= c->cap_step_ts) { /* nothing acknowledged since the last step */
    /* with nothing in flight no acknowledgement can come: an idle connection does not poll
     * (10,000 idle connections polled every PTO cost a quarter of a core); the next packet
     * sent re-arms the check (conn_write) */
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(c->conn, &ci);
    c->cap_raise_at = ci.bytes_in_flight ? now + pto : UINT64_MAX;
    return;
  }
  size_t engine = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
  size_t next = rung_above(c->cap);
  if (next && next < engine && next >= c->cap_failed) {
    if (now < c->cap_retry_at) {
      c->cap_raise_at = c->cap_retry_at;
      return;
    }
    c->cap_failed = SIZE_MAX;
  } else if ((!next || next >= engine) && engine >= c->cap_failed) {
    if (now < c->cap_retry_at) {
      c->cap_raise_at = c->cap_retry_at;
      return;
    }
    c->cap_failed = SIZE_MAX;
  }
  c->cap = (!next || next >= engine) ? 0 : next;
  c->cap_step_ts = now;
  c->cap_raise_at = now + 3 * pto;
  c->want_write = 1;
}

/* An ICMP error says nobody is there (ECONNREFUSED: port unreachable; EHOSTUNREACH /
 * ENETUNREACH).  ICMP is not authenticated and a server may be restarting, so one error
 * closes nothing: the connection closes when errors keep coming back for AQ_REFUSED_GRACE
 * with no packet from the peer in between (the engine's retransmissions draw them: about
 * 1 s into a handshake, 1 to 2 s after a peer vanished). */
#define AQ_REFUSED_GRACE (NGTCP2_SECONDS * 9 / 10)

void aq_conn_refused(aq_conn *c, int err, ngtcp2_tstamp now) {
  if (c->state >= AQ_ST_CLOSING) return;
  if (!c->refused_since) c->refused_since = now ? now : 1;
  if (now - c->refused_since < AQ_REFUSED_GRACE) return;
  if (c->state == AQ_ST_HANDSHAKE && err == ECONNREFUSED)
    aq_conn_fail(c, AQ_CLOSE_REFUSED, 0, "connection refused (nothing listens on that port)");
  else
    aq_conn_fail(c, AQ_CLOSE_REFUSED, 0,
                 err == ECONNREFUSED ? "peer unreachable (ICMP port unreachable)"
                                     : "peer unreachable (ICMP host/network unreachable)");
}

/* A packet of this connection was refused by the network.  EMSGSIZE: the path is smaller
 * than the packet (unless it was a PMTUD probe, which is allowed to fail): lower the size.
 * ECONNREFUSED / unreachable: see aq_conn_refused. */
void aq_conn_send_failed(aq_conn *c, const aq_txfail *f, ngtcp2_tstamp now) {
  if (c->state >= AQ_ST_CLOSING) return;
  if (f->err == EMSGSIZE) {
    c->emsgsize++;
    if ((f->flags & AQ_TX_PROBE) || f->size <= AQ_BASE_PLPMTU) return;
    lower_cap(c, rung_below(f->size), f->size, now);
    return;
  }
  aq_conn_refused(c, f->err, now);
}

/* ---------------------------------------------------------------- timers */

void aq_conn_on_expiry(aq_conn *c, ngtcp2_tstamp now, aq_txq *q) {
  if (c->state == AQ_ST_CLOSING || c->state == AQ_ST_DRAINING) {
    if (now >= c->close_deadline)
      c->state = AQ_ST_DEAD;
    else
      c->expiry = c->close_deadline;
    return;
  }
  if (c->state == AQ_ST_DEAD) return;
  if (c->close_pending && now >= c->close_deadline) {
    do_graceful_close(c, now, q);
    return;
  }
  int rv = ngtcp2_conn_handle_expiry(c->conn, now);
  c->want_write = 1;
  engine_log_maybe_flush(c);
  if (rv == 0) {
    check_path(c, now);
    return;
  }
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    aq_conn_fail(c, AQ_CLOSE_IDLE, 0, "idle timeout");
  } else if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    aq_conn_fail(c, AQ_CLOSE_HANDSHAKE_TIMEOUT, 0, "handshake timeout (no answer from the peer)");
  } else {
    fail_with_liberr(c, rv, now, q);
  }
}

/* ---------------------------------------------------------------- commands */

void aq_dgram_finish(aq_conn *c, aq_dgram *d) {
  aq_dgq *q = d->q;
  if (q) {
    atomic_fetch_add_explicit(&q->done, d->len, memory_order_release);
    /* pairs with the fence in aq_dgq_room (it stores `want`, then loads `done`) */
    atomic_thread_fence(memory_order_seq_cst);
    if (c && atomic_load_explicit(&q->want, memory_order_relaxed) &&
        aq_dgq_outstanding(q) <= q->limit / 2 && atomic_exchange(&q->want, 0))
      aq_sink_emit_simple(c->ctx->sink, AQ_EV_DGRAM_SPACE, c->handle, -1, 0, 0, 0, NULL, 0);
    aq_dgq_release(q);
  }
  free(d);
}

/* Take the oldest datagram off the queue and finish it; `dropped`: it was never sent. */
static void dgram_pop(aq_conn *c, int dropped) {
  aq_dgram *d = c->dg_head;
  c->dg_head = d->next;
  if (!c->dg_head) c->dg_tail = NULL;
  c->dg_queued -= d->len;
  if (dropped) c->dg_dropped++;
  aq_dgram_finish(c, d);
}

void aq_conn_discard_cmd(const aq_cmd *cmd) {
  switch (cmd->type) {
    case AQ_CMD_STREAM_DATA:
      if (cmd->ptr) aq_txbuf_decref(cmd->ptr);
      break;
    case AQ_CMD_DATAGRAM:
      aq_dgram_finish(NULL, cmd->ptr);
      break;
    case AQ_CMD_CLOSE:
    case AQ_CMD_CONNECT:
      free(cmd->ptr);
      break;
    default:
      break;
  }
}

/* Receive window tuning (ngtcp2's own auto-tuning stays off).  The reader consumed `n` more
 * bytes of `s` (its credit was just returned).  The window (up to max_stream_data) grows:
 * - by doubling, when a quarter of it was consumed twice within two smoothed RTTs: the rule
 *   of ngtcp2's auto-tuning, which it replaces (a reader slower than the path keeps the
 *   window it started with);
 * - at once to what the reader consumed per base RTT (min_rtt), times AQ_RX_WINDOW_RTTS,
 *   measured over at least a smoothed RTT, when that is more.
 * Doubling alone fell behind a sender in slow start on a lossy path: a lost packet holds
 * everything after it in the window for more than an RTT (until its retransmission
 * arrives), and at 1 % loss and 20 ms the sender spent most of a short transfer blocked by
 * flow control, with a congestion window several times the stream window.  The jump goes
 * by the base RTT, not the smoothed one: on a busy host loopback's smoothed RTT is 10-30
 * times its minimum, and bursts measured against it opened windows of megabytes in front of
 * a reader that falls behind now and then (a higher p95 object latency in aiomoqt's
 * loopback bench). */
#define AQ_RX_WINDOW_RTTS 8

static void rx_window_grow(aq_conn *c, aq_stream *s, uint64_t n, ngtcp2_tstamp now) {
  uint64_t max = c->ctx->cfg.max_stream_data;
  if (!s->rx_window) s->rx_window = stream_window_start(c->ctx);
  s->rx_consumed += n;
  if (s->rx_window >= max) return;
  if (!s->rx_mark_ts) s->rx_mark_ts = now;
  ngtcp2_conn_info ci;
  ngtcp2_conn_get_conn_info(c->conn, &ci);
  uint64_t w = s->rx_window;
  if (s->rx_consumed - s->rx_step >= s->rx_window / 4) {
    if (s->rx_step_ts && now - s->rx_step_ts < 2 * ci.smoothed_rtt) w = 2 * s->rx_window;
    s->rx_step_ts = now;
    s->rx_step = s->rx_consumed;
  }
  if (now > s->rx_mark_ts && now - s->rx_mark_ts >= ci.smoothed_rtt) {
    if (ci.min_rtt != UINT64_MAX) {
      double want = (double)(s->rx_consumed - s->rx_mark) * (double)ci.min_rtt /
                    (double)(now - s->rx_mark_ts) * AQ_RX_WINDOW_RTTS;
      if (want > (double)w) w = want >= (double)max ? max : (uint64_t)want;
    }
    s->rx_mark_ts = now;
    s->rx_mark = s->rx_consumed;
  }
  if (w <= s->rx_window) return;
  if (w > max) w = max;
  ngtcp2_conn_extend_max_stream_offset(c->conn, s->id, w - s->rx_window);
  s->rx_window = w;
}

void aq_conn_command(aq_conn *c, const aq_cmd *cmd, ngtcp2_tstamp now, aq_txq *q) {
  aq_stream *s;
  if (c->state >= AQ_ST_CLOSING || (c->close_pending && cmd->type != AQ_CMD_STREAM_DATA &&
                                    cmd->type != AQ_CMD_STREAM_CONSUMED &&
                                    cmd->type != AQ_CMD_STATS)) {
    aq_conn_discard_cmd(cmd);
    return;
  }
  c->want_write = 1;
  switch (cmd->type) {
    case AQ_CMD_STREAM_DATA:
      s = stream_get_or_create(c, cmd->stream_id);
      if (!s) {
        if (cmd->ptr) aq_txbuf_decref(cmd->ptr);
        return;
      }
      if (cmd->ptr) {
        if (s->tx) aq_txbuf_decref(s->tx);
        s->tx = cmd->ptr;
      }
      if (!s->tx) return;
      atomic_store(&s->tx->notify, 0);
      /* pairs with aq_stream_write: it stores `head` then tests `notify`; we clear `notify`
       * then load `head` (stream_pending), so bytes written meanwhile are never stranded */
      atomic_thread_fence(memory_order_seq_cst);
      if (!s->in_engine) {
        int64_t next = (s->id & 2) ? c->next_local_uni : c->next_local_bidi;
        if (is_local(c, s->id) && s->id >= next) {
          open_local_streams(c);
        } else {
          /* the engine already closed and forgot this stream: the data cannot be sent.
           * Tell Python (it drops the stream's send state) and forget it again. */
          release_writer(c, s);
          aq_sink_emit_simple(c->ctx->sink, AQ_EV_STREAM_CLOSED, c->handle, s->id, 0, 0, 0,
                              NULL, 0);
          stream_free(c, s);
          return;
        }
      }
      activate(c, s);
      break;
    case AQ_CMD_STREAM_RESET:
      s = stream_get(c, cmd->stream_id);
      ngtcp2_conn_shutdown_stream_write(c->conn, 0, cmd->stream_id, cmd->code);
      if (s) {
        s->shut_wr = 1;
        s->local_reset = 1;
        s->reset_code = cmd->code;
        deactivate(c, s);
        release_writer(c, s);
      }
      break;
    case AQ_CMD_STREAM_STOP:
      ngtcp2_conn_shutdown_stream_read(c->conn, 0, cmd->stream_id, cmd->code);
      break;
    case AQ_CMD_STREAM_CONSUMED:
      /* stream_id -1: credit of streams that ended, for the connection's window only */
      if (cmd->stream_id >= 0) {
        ngtcp2_conn_extend_max_stream_offset(c->conn, cmd->stream_id, cmd->code);
        if ((s = stream_get(c, cmd->stream_id))) rx_window_grow(c, s, cmd->code, now);
      }
      ngtcp2_conn_extend_max_offset(c->conn, cmd->code);
      break;
    case AQ_CMD_DATAGRAM: {
      aq_dgram *d = cmd->ptr;
      if (c->dg_tail)
        c->dg_tail->next = d;
      else
        c->dg_head = d;
      c->dg_tail = d;
      c->dg_queued += d->len;
      /* Datagrams are unreliable: when the sender outruns the path, the oldest queued ones
       * are dropped (as a full router queue would) instead of growing memory. */
      size_t qmax = c->ctx->cfg.datagram_queue ? (size_t)c->ctx->cfg.datagram_queue
                                               : AQ_DGRAM_QUEUE_MAX;
      while (c->dg_queued > qmax && c->dg_head != d) dgram_pop(c, 1);
      break;
    }
    case AQ_CMD_PING: {
      aq_pingreq *p = calloc(1, sizeof(*p));
      if (!p) break;
      p->uid = cmd->code;
      p->next = c->pings;
      c->pings = p;
      c->ping_pending |= 1;
      break;
    }
    case AQ_CMD_PRIORITY:
      if (cmd->stream_id < 0) {
        c->default_prio = (uint8_t)cmd->code;
        break;
      }
      s = stream_get(c, cmd->stream_id);
      if (!s && is_local(c, cmd->stream_id)) s = stream_get_or_create(c, cmd->stream_id);
      atomic_fetch_add_explicit(s ? &c->ctx->prio_applied : &c->ctx->prio_rejected, 1,
                                memory_order_relaxed);
      if (s && s->prio != (uint8_t)cmd->code) {
        int was = s->active;
        deactivate(c, s);
        s->prio = (uint8_t)cmd->code;
        if (was) activate(c, s);
      }
      break;
    case AQ_CMD_KEY_UPDATE:
      /* NGTCP2_ERR_INVALID_STATE while the previous update is unconfirmed: then the
       * request is dropped, as the peer is about to see fresh keys anyway */
      if (c->state == AQ_ST_OPEN) ngtcp2_conn_initiate_key_update(c->conn, now);
      break;
    case AQ_CMD_STATS: {
      aq_stats st;
      ngtcp2_conn_info ci;
      memset(&st, 0, sizeof(st));
      ngtcp2_conn_get_conn_info(c->conn, &ci);
      st.smoothed_rtt_ns = ci.smoothed_rtt;
      st.min_rtt_ns = ci.min_rtt;
      st.latest_rtt_ns = ci.latest_rtt;
      st.rttvar_ns = ci.rttvar;
      st.cwnd = ci.cwnd;
      st.ssthresh = ci.ssthresh;
      st.bytes_in_flight = ci.bytes_in_flight;
      st.max_udp_payload = path_size(c);
      st.pkts_sent = c->pkts_sent;
      st.pkts_recv = c->pkts_recv;
      st.bytes_sent = c->bytes_sent;
      st.bytes_recv = c->bytes_recv;
      st.datagrams_dropped = c->dg_dropped;
      st.emsgsize = c->emsgsize;
      st.blackholes = c->blackholes;
      st.ecn_sent = c->ecn_sent;
      st.ecn_ect0_recv = c->ecn_rx[2];
      st.ecn_ect1_recv = c->ecn_rx[1];
      st.ecn_ce_recv = c->ecn_rx[3];
      st.max_datagram_payload = max_dgram_payload(c, path_size(c));
      st.path_max_udp_payload = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
      aq_sink_emit_simple(c->ctx->sink, AQ_EV_STATS, c->handle, -1, cmd->code, 0, 0, &st,
                          sizeof(st));
      break;
    }
    case AQ_CMD_CLOSE:
      c->close_pending = 1;
      c->close_app = (int)cmd->flags;
      c->close_code = cmd->code;
      c->close_ft = cmd->code2;
      c->close_reason = cmd->ptr;
      c->close_reason_len = cmd->len;
      {
        uint64_t wait = c->ctx->cfg.idle_timeout_ns ? c->ctx->cfg.idle_timeout_ns : 30 * NGTCP2_SECONDS;
        c->close_deadline = now + wait;
      }
      if (c->state == AQ_ST_HANDSHAKE) do_graceful_close(c, now, q);
      break;
    default:
      break;
  }
}

/* ---------------------------------------------------------------- writing */

static int test_drop(aq_ctx *ctx) {
  ctx->test_rng ^= ctx->test_rng << 13; /* xorshift64 */
  ctx->test_rng ^= ctx->test_rng >> 7;
  ctx->test_rng ^= ctx->test_rng << 17;
  return ctx->test_rng % 1000000 < ctx->test_loss_ppm;
}

/* ngtcp2 1.11 has no "send a PING" call.  Its keep-alive writes a PING into a packet that
 * would otherwise be empty once the keep-alive timeout has elapsed since the last packet; so
 * after everything else is written, a 1 ns keep-alive and a timestamp 1 ns later (drivers
 * never pass a `now` below the previous call's now + 1) force exactly one PING-only packet.  If pacing or congestion control hold it back, it is retried
 * on the next write.  The packet's number (noted by encrypt_cb) is what its ACK must cover. */
static void write_ping(aq_conn *c, aq_txq *q, size_t room, ngtcp2_tstamp now) {
  uint8_t *buf = aq_txq_reserve(q, room);
  if (!buf) return;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_tstamp ts = now + 1;
  ngtcp2_conn_set_keep_alive_timeout(c->conn, 1);
  aq_cur_conn = c;
  ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, room, NULL,
                                             NGTCP2_WRITE_STREAM_FLAG_NONE, -1, NULL, 0, ts);
  aq_cur_conn = NULL;
  ngtcp2_conn_set_keep_alive_timeout(
      c->conn, c->ctx->cfg.keep_alive_ns ? c->ctx->cfg.keep_alive_ns : UINT64_MAX);
  if (n <= 0) return;
  if (pi.ecn) c->ecn_sent++;
  aq_txq_commit(q, (const struct sockaddr *)ps.path.local.addr,
                (const struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen,
                c->handle, (size_t)n, AQ_TX_ECN(pi.ecn), 1);
  ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
  c->ping_pending &= ~1;
  for (aq_pingreq *p = c->pings; p; p = p->next)
    if (!p->sent && !p->acked) {
      p->sent = 1;
      p->pkn = c->last_tx_pkn;
    }
}

/* Fill q with this connection's packets: stream data (round robin between streams) and
 * datagrams, alternating which one leads each packet so neither starves the other.  A PMTUD
 * probe (a packet larger than the path size) is queued alone.  Returns 1 if q filled up
 * (the driver flushes it and calls again). */
static int conn_write(aq_conn *c, ngtcp2_tstamp now, aq_txq *q) {
  c->want_write = 0;
  if (c->state >= AQ_ST_CLOSING) return 0;
  uint64_t pkts_before = c->pkts_sent;
  /* A close whose data is all acknowledged goes out after one more pass, never before it:
   * that pass writes what the engine itself still holds (a client's Finished, ACKs, queued
   * datagrams).  Closing first lost the Finished of a client that closed at once after its
   * handshake, so the server never saw the connection, nor its close. */
  int close_now = c->close_pending && all_acked(c);
  size_t pktmax = path_size(c);
  /* room for one packet: uncapped, the configured maximum, so that ngtcp2 can write a PMTUD
   * probe (it writes one only into a buffer that large and sizes every other packet to the
   * path); capped, exactly the cap */
  size_t room = pktmax;
  if (!c->cap) {
    size_t m = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
    if (m > room) room = m;
  }
  if (room > 65527) room = 65527;
  size_t quantum = ngtcp2_conn_get_send_quantum(c->conn);
  size_t maxsegs = quantum / pktmax;
  if (maxsegs < 1) maxsegs = 1;
  if (maxsegs > AQ_MAX_GSO_SEGS) maxsegs = AQ_MAX_GSO_SEGS;
  if (maxsegs * pktmax > q->max_batch) maxsegs = q->max_batch / pktmax;
  if (maxsegs < 1) maxsegs = 1;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  int full = 0, tried_dg = 0, tried_st = 0;
  aq_cur_conn = c;
  for (;;) {
    ngtcp2_ssize nwrite, ndatalen = -1;
    aq_stream *s = NULL;
    uint8_t *buf = aq_txq_reserve(q, room);
    if (!buf) {
      full = 1;
      break;
    }
    while ((s = first_active(c)) && !stream_pending(s)) deactivate(c, s);
    if (c->dg_head && !tried_dg && (c->dg_first || tried_st || !s)) {
      aq_dgram *d = c->dg_head;
      if (d->len + AQ_DGRAM_OVERHEAD > pktmax) { /* the path shrank after it was accepted */
        dgram_pop(c, 1);
        continue;
      }
      ngtcp2_vec v = {d->data, d->len};
      int accepted = 0;
      nwrite = ngtcp2_conn_writev_datagram(c->conn, &ps.path, &pi, buf, room, &accepted,
                                           NGTCP2_WRITE_DATAGRAM_FLAG_MORE, 0, &v,
                                           d->len ? 1 : 0, now);
      if (accepted || nwrite == NGTCP2_ERR_INVALID_ARGUMENT ||
          nwrite == NGTCP2_ERR_INVALID_STATE)
        dgram_pop(c, !accepted);
      if (nwrite == NGTCP2_ERR_WRITE_MORE || nwrite == NGTCP2_ERR_INVALID_ARGUMENT ||
          nwrite == NGTCP2_ERR_INVALID_STATE)
        continue;
      if (nwrite == 0) { /* congestion or pacing: let the stream path say the same */
        tried_dg = 1;
        continue;
      }
    } else {
      int64_t sid = -1;
      uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      ngtcp2_vec v[2];
      size_t vcnt = 0, total = 0;
      if (s) {
        aq_txbuf *tx = s->tx;
        uint64_t fin_at = atomic_load_explicit(&tx->fin_at, memory_order_acquire);
        uint64_t head = atomic_load_explicit(&tx->head, memory_order_acquire);
        size_t cap = tx->mask + 1;
        total = (size_t)(head - tx->sent);
        size_t pos = (size_t)(tx->sent & tx->mask);
        size_t first = cap - pos < total ? cap - pos : total;
        if (first) {
          v[vcnt].base = tx->data + pos;
          v[vcnt++].len = first;
        }
        if (total > first) {
          v[vcnt].base = tx->data;
          v[vcnt++].len = total - first;
        }
        if (fin_at && fin_at - 1 == head) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        sid = s->id;
      }
      nwrite = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf, room, &ndatalen, flags,
                                         sid, v, vcnt, now);
      if (s && ndatalen >= 0) {
        s->tx->sent += (uint64_t)ndatalen;
        if (ndatalen && atomic_load_explicit(&s->tx->want_writable, memory_order_relaxed))
          check_writable(c, s); /* less left to send: the writer may be due (see there) */
        if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && (size_t)ndatalen == total) s->fin_sent = 1;
        /* round robin: the next packet starts with the next stream */
        if (!(s->prio & 1) && s->active && s->next_active) {
          deactivate(c, s);
          activate(c, s);
        }
      }
      if (nwrite < 0) {
        if (nwrite == NGTCP2_ERR_WRITE_MORE) {
          tried_st = 1;
          continue;
        }
        if (s && nwrite == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
          s->blocked = 1;
          deactivate(c, s);
          continue;
        }
        if (s && (nwrite == NGTCP2_ERR_STREAM_SHUT_WR || nwrite == NGTCP2_ERR_STREAM_NOT_FOUND)) {
          s->shut_wr = 1;
          deactivate(c, s);
          release_writer(c, s);
          continue;
        }
      }
    }
    if (nwrite < 0) {
      aq_cur_conn = NULL;
      fail_with_liberr(c, (int)nwrite, now, q);
      return 0;
    }
    if (nwrite == 0) break;
    size_t n = (size_t)nwrite;
    c->pkts_sent++;
    c->bytes_sent += n;
    tried_dg = tried_st = 0;
    c->dg_first = !c->dg_first;
    if (c->ctx->test_loss_ppm && test_drop(c->ctx)) continue; /* the packet is "lost" */
    if (pi.ecn) c->ecn_sent++;
    aq_txq_commit(q, (const struct sockaddr *)ps.path.local.addr,
                  (const struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen,
                  c->handle, n, (n > pktmax ? AQ_TX_PROBE : 0) | AQ_TX_ECN(pi.ecn), maxsegs);
  }
  aq_cur_conn = NULL;
  aq_txq_seal(q);
  ngtcp2_conn_update_pkt_tx_time(c->conn, now);
  if (close_now && !full && c->state < AQ_ST_CLOSING) {
    do_graceful_close(c, now, q);
    return 0;
  }
  if (!full && (c->ping_pending & 1) && c->state == AQ_ST_OPEN) write_ping(c, q, pktmax, now);
  if (c->state == AQ_ST_OPEN && pktmax != c->last_maxpkt) {
    /* tell Python the packet size and the largest datagram that fits now */
    c->last_maxpkt = pktmax;
    aq_sink_emit_simple(c->ctx->sink, AQ_EV_PATH, c->handle, -1, pktmax,
                        max_dgram_payload(c, pktmax), 0, NULL, 0);
  }
  ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
  if (c->close_pending && c->close_deadline < expiry) expiry = c->close_deadline;
  if (c->cap && c->cap_raise_at == UINT64_MAX && c->pkts_sent != pkts_before)
    c->cap_raise_at = now + ngtcp2_conn_get_pto(c->conn); /* sending again: resume the climb */
  if (c->cap && c->cap_raise_at < expiry) expiry = c->cap_raise_at;
  if (pktmax > AQ_BASE_PLPMTU && c->last_ack_ts && c->state == AQ_ST_OPEN) {
    ngtcp2_tstamp bh = c->last_ack_ts + 4 * ngtcp2_conn_get_pto(c->conn);
    if (bh > now && bh < expiry) {
      ngtcp2_conn_info ci;
      ngtcp2_conn_get_conn_info(c->conn, &ci);
      if (ci.bytes_in_flight) expiry = bh; /* black-hole check */
    }
  }
  if (!first_active(c) && !c->dg_head && !c->close_pending && c->ctx->ack_floor_ns) {
    /* Nothing of ours to send: the timer is an ACK delay (srtt/8 in ngtcp2, a few us on
     * loopback), a PTO or idle.  Waiting a little longer lets the application's answer
     * carry the ACK instead of a packet of its own; every timer here tolerates it. */
    ngtcp2_tstamp floor = now + c->ctx->ack_floor_ns;
    if (expiry < floor) expiry = floor;
  }
  c->expiry = expiry;
  if (full) c->want_write = 1; /* finish once the queue drains */
  return full;
}

int aq_conn_write(aq_conn *c, ngtcp2_tstamp now, aq_txq *q) {
  int rv = conn_write(c, now, q);
  if (c->log_len) engine_log_flush(c);
  return rv;
}
