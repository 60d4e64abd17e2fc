/*
 * conn.c - one QUIC connection: ngtcp2 callbacks, streams, the write loop, closing.
 * Runs only on the endpoint's network thread.
 */
#include "internal.h"

#include <netdb.h>

#define AQ_SCID_LEN 18
#define AQ_RX_FLUSH (256 * 1024)
#define AQ_DGRAM_QUEUE_MAX (1024 * 1024) /* bytes of datagrams waiting to be sent */

/* Frame scanner context: the connection whose packet is being decrypted on this thread.
 * Thread-local, so every endpoint (one thread each) has its own. */
static _Thread_local aq_conn *aq_scan_conn;

/* ---------------------------------------------------------------- helpers */

static void do_graceful_close(aq_conn *c, ngtcp2_tstamp now);

static void emit_closed(aq_conn *c, uint32_t flags, uint64_t code, uint64_t ft,
                        const void *reason, size_t len) {
  if (c->accepted_emitted < 0) return; /* already reported */
  int was_visible = c->accepted_emitted || !c->ep->cfg.is_server;
  c->accepted_emitted = -1;
  if (was_visible)
    aq_emit_simple(c->ep, AQ_EV_CLOSED, c->handle, -1, code, ft, flags, reason, len);
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
  if (aq_map_put(&c->streams, &sid, sizeof(sid), s) != 0) {
    free(s);
    return NULL;
  }
  return s;
}

static int is_local(aq_conn *c, int64_t sid) {
  return ((sid & 1) != 0) == (c->ep->cfg.is_server != 0);
}

static void list_remove(aq_stream **head, aq_stream *s, int dirty) {
  for (aq_stream **pp = head; *pp; pp = dirty ? &(*pp)->next_dirty : &(*pp)->next_active) {
    if (*pp == s) {
      *pp = dirty ? s->next_dirty : s->next_active;
      return;
    }
  }
}

static void deactivate(aq_conn *c, aq_stream *s) {
  if (!s->active) return;
  list_remove(&c->active_head, s, 0);
  if (c->active_tail == s) {
    c->active_tail = c->active_head;
    while (c->active_tail && c->active_tail->next_active)
      c->active_tail = c->active_tail->next_active;
  }
  s->active = 0;
  s->next_active = NULL;
}

static int stream_pending(aq_stream *s) {
  if (!s->tx || s->shut_wr || s->fin_sent || !s->in_engine || s->blocked) return 0;
  uint64_t fin_at = atomic_load_explicit(&s->tx->fin_at, memory_order_acquire);
  uint64_t head = atomic_load_explicit(&s->tx->head, memory_order_acquire);
  return head > s->tx->sent || fin_at != 0;
}

static void activate(aq_conn *c, aq_stream *s) {
  if (s->active || !stream_pending(s)) return;
  s->active = 1;
  s->next_active = NULL;
  if (c->active_tail)
    c->active_tail->next_active = s;
  else
    c->active_head = s;
  c->active_tail = s;
}

static void flush_rx(aq_conn *c, aq_stream *s) {
  if (s->dirty) {
    list_remove(&c->dirty_head, s, 1);
    s->dirty = 0;
    s->next_dirty = NULL;
  }
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
  aq_emit(c->ep, &ev);
}

static void stream_free(aq_conn *c, aq_stream *s) {
  deactivate(c, s);
  if (s->dirty) list_remove(&c->dirty_head, s, 1);
  free(s->rx);
  if (s->tx) aq_txbuf_decref(s->tx);
  aq_map_del(&c->streams, &s->id, sizeof(s->id));
  free(s);
}

static void check_writable(aq_conn *c, aq_stream *s) {
  aq_txbuf *tx = s->tx;
  if (!tx || !atomic_load_explicit(&tx->want_writable, memory_order_acquire)) return;
  if (aq_txbuf_space(tx) > (tx->mask + 1) / 2 && atomic_exchange(&tx->want_writable, 0))
    aq_emit_simple(c->ep, AQ_EV_WRITABLE, c->handle, s->id, 0, 0, 0, NULL, 0);
}

/* Wake a writer whose stream can no longer carry data (reset, stop-sending, closed). */
static void release_writer(aq_conn *c, aq_stream *s) {
  if (s->tx && atomic_exchange(&s->tx->want_writable, 0))
    aq_emit_simple(c->ep, AQ_EV_WRITABLE, c->handle, s->id, 0, 0, 0, NULL, 0);
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
        if (rd_varint(&p, end, &a) || skip_varints(&p, end, 1) || rd_varint(&p, end, &n) ||
            skip_varints(&p, end, 1))
          return;
        if (n > 1000 || skip_varints(&p, end, (int)(2 * n))) return;
        if (type == 0x03 && skip_varints(&p, end, 3)) return;
        for (aq_pingreq *pg = c->pings; pg; pg = pg->next)
          if (pg->after_pkn == 1) pg->after_pkn = 2; /* sent and now acknowledged */
        break;
      case 0x04:
        if (skip_varints(&p, end, 3)) return;
        break;
      case 0x05: /* STOP_SENDING */
        if (rd_varint(&p, end, &a) || rd_varint(&p, end, &b)) return;
        if (c->nstops < (int)(sizeof(c->stops) / sizeof(c->stops[0]))) {
          c->stops[c->nstops].sid = (int64_t)a;
          c->stops[c->nstops].code = b;
          c->nstops++;
        }
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
  if (rv == 0 && aq_scan_conn && aadlen && !(aad[0] & 0x80) &&
      ciphertextlen >= aead->max_overhead)
    scan_frames(aq_scan_conn, dest, ciphertextlen - aead->max_overhead);
  return rv;
}

/* ---------------------------------------------------------------- callbacks */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((aq_conn *)ref->user_data)->conn;
}

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  aq_rand_bytes(dest, destlen);
}

static int get_new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                          void *ud) {
  aq_conn *c = ud;
  (void)conn;
  aq_rand_bytes(cid->data, cidlen);
  cid->datalen = cidlen;
  if (ngtcp2_crypto_generate_stateless_reset_token(token, c->ep->reset_secret,
                                                   sizeof(c->ep->reset_secret), cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return aq_register_cid(c, cid) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int remove_cid_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud) {
  (void)conn;
  aq_unregister_cid(ud, cid);
  return 0;
}

static void peer_addr_text(aq_conn *c, char *buf, size_t len) {
  char host[NI_MAXHOST], port[NI_MAXSERV];
  const ngtcp2_path *p = ngtcp2_conn_get_path(c->conn);
  if (getnameinfo((const struct sockaddr *)p->remote.addr, p->remote.addrlen, host,
                  sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    snprintf(buf, len, "? 0");
    return;
  }
  snprintf(buf, len, "%s %s", host, port);
}

static int handshake_completed_cb(ngtcp2_conn *conn, void *ud) {
  aq_conn *c = ud;
  c->state = AQ_ST_OPEN;
  if (c->ep->cfg.is_server) {
    char addr[NI_MAXHOST + NI_MAXSERV + 2];
    peer_addr_text(c, addr, sizeof(addr));
    c->accepted_emitted = 1;
    aq_emit_simple(c->ep, AQ_EV_ACCEPTED, c->handle, -1, 0, 0, 0, addr, strlen(addr));
  }
  gnutls_datum_t alpn = {NULL, 0};
  gnutls_alpn_get_selected_protocol(c->tls, &alpn);
  const ngtcp2_transport_params *tp = ngtcp2_conn_get_remote_transport_params(conn);
  aq_emit_simple(c->ep, AQ_EV_HANDSHAKE_DONE, c->handle, -1,
                 tp ? tp->max_datagram_frame_size : 0, 0, 0, alpn.data, alpn.size);
  return 0;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t datalen, void *ud, void *sud) {
  aq_conn *c = ud;
  aq_stream *s = sud ? sud : stream_get_or_create(c, sid);
  (void)offset;
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
    s->rx_total += datalen;
  }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) s->rx_fin = 1;
  if (s->rxlen >= AQ_RX_FLUSH || s->rx_fin) {
    flush_rx(c, s);
  } else if (!s->dirty) {
    s->dirty = 1;
    s->next_dirty = c->dirty_head;
    c->dirty_head = s;
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
  flush_rx(c, s);
  release_writer(c, s);
  aq_emit_simple(c->ep, AQ_EV_STREAM_CLOSED, c->handle, sid, 0, 0, 0, NULL, 0);
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
    flush_rx(c, s);
    if (s->reset_reported) return 0;
    s->reset_reported = 1;
  }
  aq_emit_simple(c->ep, AQ_EV_STREAM_RESET, c->handle, sid, code, final_size, 0, NULL, 0);
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
  aq_emit_simple(c->ep, AQ_EV_DATAGRAM, c->handle, -1, 0, 0, 0, data, len);
  return 0;
}

static void init_callbacks(ngtcp2_callbacks *cb, int server) {
  memset(cb, 0, sizeof(*cb));
  if (server) {
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = get_new_cid_cb;
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

static void init_settings(struct aq_endpoint *ep, ngtcp2_settings *s,
                          ngtcp2_transport_params *p, ngtcp2_tstamp now) {
  const aq_config *cfg = &ep->cfg;
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  s->cc_algo = (ngtcp2_cc_algo)cfg->cc_algo;
  if (cfg->handshake_timeout_ns) s->handshake_timeout = cfg->handshake_timeout_ns;
  /* PMTUD climbs from 1200 bytes through this ladder up to the configured maximum: 1454
   * (Ethernet), 8972 (jumbo frames), then loopback-sized packets.  A failed probe costs a
   * few padded packets and changes nothing else. */
  static const uint16_t ladder[] = {1454, 8972, 16384, 32768, 65000};
  size_t nprobes = 0;
  if (cfg->max_udp_payload) {
    s->max_tx_udp_payload_size = cfg->max_udp_payload;
    while (nprobes < sizeof(ladder) / sizeof(ladder[0]) && ladder[nprobes] <= cfg->max_udp_payload)
      nprobes++;
    s->pmtud_probes = ladder;
    s->pmtud_probeslen = nprobes;
    if (!nprobes) s->no_pmtud = 1;
  }
  if (cfg->ack_thresh) s->ack_thresh = cfg->ack_thresh;
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = cfg->max_stream_data;
  p->initial_max_stream_data_bidi_remote = cfg->max_stream_data;
  p->initial_max_stream_data_uni = cfg->max_stream_data;
  p->initial_max_data = cfg->max_data;
  p->initial_max_streams_bidi = cfg->max_streams_bidi;
  p->initial_max_streams_uni = cfg->max_streams_uni;
  p->max_idle_timeout = cfg->idle_timeout_ns;
  p->active_connection_id_limit = 7;
  p->max_datagram_frame_size = cfg->max_datagram_frame_size;
}

static aq_conn *conn_alloc(struct aq_endpoint *ep) {
  aq_conn *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->ep = ep;
  c->cref.get_conn = get_conn;
  c->cref.user_data = c;
  c->handle = ep->next_handle++;
  c->next_local_bidi = ep->cfg.is_server ? 1 : 0;
  c->next_local_uni = ep->cfg.is_server ? 3 : 2;
  if (aq_map_init(&c->streams, 16) != 0 ||
      aq_map_put(&ep->by_handle, &c->handle, sizeof(c->handle), c) != 0) {
    aq_map_destroy(&c->streams);
    free(c);
    return NULL;
  }
  c->next = ep->conns;
  if (ep->conns) ep->conns->prev = c;
  ep->conns = c;
  return c;
}

aq_conn *aq_conn_new_client(struct aq_endpoint *ep, const struct sockaddr *remote,
                            socklen_t remotelen, const char *server_name, char *err,
                            size_t errlen) {
  aq_conn *c = conn_alloc(ep);
  if (!c) {
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  ngtcp2_callbacks cb;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  init_callbacks(&cb, 0);
  init_settings(ep, &settings, &params, aq_now());
  ngtcp2_cid dcid, scid;
  dcid.datalen = scid.datalen = AQ_SCID_LEN;
  aq_rand_bytes(dcid.data, AQ_SCID_LEN);
  aq_rand_bytes(scid.data, AQ_SCID_LEN);
  ngtcp2_path path = {{(ngtcp2_sockaddr *)&ep->local, ep->locallen},
                      {(ngtcp2_sockaddr *)remote, remotelen},
                      NULL};
  int rv = ngtcp2_conn_client_new(&c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb,
                                  &settings, &params, NULL, c);
  if (rv != 0) {
    AQ_ERR(err, errlen, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
    goto fail;
  }
  if (aq_tls_session_new(c, server_name, err, errlen) != 0) goto fail;
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  if (aq_register_cid(c, &scid) != 0) {
    AQ_ERR(err, errlen, "out of memory");
    goto fail;
  }
  c->state = AQ_ST_HANDSHAKE;
  aq_sched_dirty(c); /* the first write sends the Initial */
  return c;
fail:
  c->accepted_emitted = -1;
  aq_conn_free(c);
  return NULL;
}

aq_conn *aq_conn_accept(struct aq_endpoint *ep, const ngtcp2_path *path,
                        const ngtcp2_pkt_hd *hd, ngtcp2_tstamp now) {
  aq_conn *c = conn_alloc(ep);
  if (!c) return NULL;
  ngtcp2_callbacks cb;
  ngtcp2_settings settings;
  ngtcp2_transport_params params;
  init_callbacks(&cb, 1);
  init_settings(ep, &settings, &params, now);
  ngtcp2_cid scid;
  scid.datalen = AQ_SCID_LEN;
  aq_rand_bytes(scid.data, AQ_SCID_LEN);
  params.original_dcid = hd->dcid;
  params.original_dcid_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(params.stateless_reset_token,
                                                   ep->reset_secret, sizeof(ep->reset_secret),
                                                   &scid) == 0)
    params.stateless_reset_token_present = 1;
  char err[256];
  int rv = ngtcp2_conn_server_new(&c->conn, &hd->scid, &scid, path, hd->version, &cb,
                                  &settings, &params, NULL, c);
  if (rv != 0 || aq_tls_session_new(c, NULL, err, sizeof(err)) != 0) goto fail;
  ngtcp2_conn_set_tls_native_handle(c->conn, c->tls);
  if (aq_register_cid(c, &scid) != 0 || aq_register_cid(c, &hd->dcid) != 0) goto fail;
  c->state = AQ_ST_HANDSHAKE;
  return c;
fail:
  c->accepted_emitted = -1;
  aq_conn_free(c);
  return NULL;
}

/* The endpoint is stopping: tell the peer now instead of waiting for acknowledgements. */
void aq_conn_shutdown(aq_conn *c, ngtcp2_tstamp now) {
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
  do_graceful_close(c, now);
}

void aq_conn_free(aq_conn *c) {
  struct aq_endpoint *ep = c->ep;
  aq_sched_remove(c);
  if (ep->touched == c) ep->touched = c->next_touched;
  else if (c->touched)
    for (aq_conn *t = ep->touched; t; t = t->next_touched)
      if (t->next_touched == c) {
        t->next_touched = c->next_touched;
        break;
      }
  if (!ep->stopping) emit_closed(c, 0, 0, 0, "connection released", 19);
  while (c->ncids) aq_unregister_cid(c, &c->cids[c->ncids - 1]);
  free(c->cids);
  aq_map_del(&ep->by_handle, &c->handle, sizeof(c->handle));
  if (c->prev)
    c->prev->next = c->next;
  else
    ep->conns = c->next;
  if (c->next) c->next->prev = c->prev;
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
    free(d);
  }
  while (c->pings) {
    aq_pingreq *p = c->pings;
    c->pings = p->next;
    free(p);
  }
  free(c->close_reason);
  free(c->close_pkt);
  if (c->conn) ngtcp2_conn_del(c->conn);
  if (c->tls) gnutls_deinit(c->tls);
  free(c->server_name);
  free(c);
}

/* ---------------------------------------------------------------- closing */

static void enter_closing(aq_conn *c, ngtcp2_ccerr *ccerr, uint32_t flags, ngtcp2_tstamp now) {
  uint8_t buf[1500];
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->conn, &ps.path, &pi, buf, sizeof(buf),
                                                      ccerr, now);
  if (n > 0) {
    aq_send_packets(c->ep, &ps.path, buf, (size_t)n, 0);
    c->close_pkt = malloc((size_t)n);
    if (c->close_pkt) {
      memcpy(c->close_pkt, buf, (size_t)n);
      c->close_pktlen = (size_t)n;
    }
  }
  emit_closed(c, flags | AQ_CLOSE_LOCAL, ccerr->error_code, ccerr->frame_type, ccerr->reason,
              ccerr->reasonlen);
  c->state = n > 0 ? AQ_ST_CLOSING : AQ_ST_DEAD;
  if (c->state == AQ_ST_DEAD) c->ep->reap_pending = 1;
  c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->conn);
  aq_sched_expiry(c, c->close_deadline);
}

static void do_graceful_close(aq_conn *c, ngtcp2_tstamp now) {
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
  enter_closing(c, &ccerr, c->close_app ? AQ_CLOSE_APP : 0, now);
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
  c->ep->reap_pending = 1;
}

static void enter_draining(aq_conn *c, ngtcp2_tstamp now) {
  const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(c->conn);
  uint32_t flags = e->type == NGTCP2_CCERR_TYPE_APPLICATION ? AQ_CLOSE_APP : 0;
  if (e->type == NGTCP2_CCERR_TYPE_DROP_CONN) flags |= AQ_CLOSE_RESET;
  emit_closed(c, flags, e->error_code, e->frame_type, e->reason, e->reasonlen);
  c->state = AQ_ST_DRAINING;
  c->close_deadline = now + 3 * ngtcp2_conn_get_pto(c->conn);
  aq_sched_expiry(c, c->close_deadline);
}

static void fail_with_liberr(aq_conn *c, int rv, ngtcp2_tstamp now) {
  ngtcp2_ccerr ccerr;
  ngtcp2_ccerr_default(&ccerr);
  char reason[512];
  uint32_t flags = 0;
  if (rv == NGTCP2_ERR_CRYPTO) {
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
  enter_closing(c, &ccerr, flags, now);
}

/* ---------------------------------------------------------------- reading */

void aq_conn_read(aq_conn *c, const ngtcp2_path *path, const uint8_t *data, size_t len,
                  ngtcp2_tstamp now) {
  if (c->state == AQ_ST_CLOSING) {
    if (c->close_pkt) aq_send_packets(c->ep, path, c->close_pkt, c->close_pktlen, 0);
    return;
  }
  if (c->state >= AQ_ST_DRAINING) return;
  ngtcp2_pkt_info pi = {0};
  if (!c->touched) {
    c->touched = 1;
    c->next_touched = c->ep->touched;
    c->ep->touched = c;
  }
  aq_scan_conn = c;
  c->pkts_recv++;
  c->bytes_recv += len;
  int rv = ngtcp2_conn_read_pkt(c->conn, path, &pi, data, len, now);
  aq_scan_conn = NULL;
  aq_sched_dirty(c);
  if (rv == 0) return;
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
    default:
      fail_with_liberr(c, rv, now);
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
  (void)now;
  while (c->dirty_head) flush_rx(c, c->dirty_head);
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
    aq_emit_simple(c->ep, AQ_EV_STOP_SENDING, c->handle, sid, c->stops[i].code, 0, 0, NULL, 0);
  }
  c->nstops = 0;
  aq_pingreq **pp = &c->pings;
  while (*pp) {
    aq_pingreq *p = *pp;
    if (p->after_pkn == 2) {
      aq_emit_simple(c->ep, AQ_EV_PING_ACK, c->handle, -1, p->uid, 0, 0, NULL, 0);
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
}

/* ---------------------------------------------------------------- timers */

void aq_conn_on_expiry(aq_conn *c, ngtcp2_tstamp now) {
  if (c->state == AQ_ST_CLOSING || c->state == AQ_ST_DRAINING) {
    if (now >= c->close_deadline) {
      c->state = AQ_ST_DEAD;
      c->ep->reap_pending = 1;
    }
    return;
  }
  if (c->state == AQ_ST_DEAD) return;
  if (c->close_pending && now >= c->close_deadline) {
    do_graceful_close(c, now);
    return;
  }
  int rv = ngtcp2_conn_handle_expiry(c->conn, now);
  aq_sched_dirty(c);
  if (rv == 0) return;
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    aq_conn_fail(c, AQ_CLOSE_IDLE, 0, "idle timeout");
  } else if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    aq_conn_fail(c, AQ_CLOSE_HANDSHAKE_TIMEOUT, 0, "handshake timeout (no answer from the peer)");
  } else {
    fail_with_liberr(c, rv, now);
  }
}

/* ---------------------------------------------------------------- commands */

void aq_conn_command(aq_conn *c, const aq_cmd *cmd, ngtcp2_tstamp now) {
  aq_stream *s;
  if (c->state >= AQ_ST_CLOSING || (c->close_pending && cmd->type != AQ_CMD_STREAM_DATA &&
                                    cmd->type != AQ_CMD_STREAM_CONSUMED)) {
    if (cmd->type == AQ_CMD_STREAM_DATA && cmd->ptr) aq_txbuf_decref(cmd->ptr);
    if (cmd->type == AQ_CMD_DATAGRAM || cmd->type == AQ_CMD_CLOSE) free(cmd->ptr);
    return;
  }
  aq_sched_dirty(c);
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
      if (!s->in_engine) {
        int64_t next = (s->id & 2) ? c->next_local_uni : c->next_local_bidi;
        if (is_local(c, s->id) && s->id >= next) {
          open_local_streams(c);
        } else {
          /* the engine already closed and forgot this stream: the data cannot be sent.
           * Tell Python (it drops the stream's send state) and forget it again. */
          release_writer(c, s);
          aq_emit_simple(c->ep, AQ_EV_STREAM_CLOSED, c->handle, s->id, 0, 0, 0, NULL, 0);
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
        deactivate(c, s);
        release_writer(c, s);
      }
      break;
    case AQ_CMD_STREAM_STOP:
      ngtcp2_conn_shutdown_stream_read(c->conn, 0, cmd->stream_id, cmd->code);
      break;
    case AQ_CMD_STREAM_CONSUMED:
      ngtcp2_conn_extend_max_stream_offset(c->conn, cmd->stream_id, cmd->code);
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
      while (c->dg_queued > AQ_DGRAM_QUEUE_MAX && c->dg_head != d) {
        aq_dgram *old = c->dg_head;
        c->dg_head = old->next;
        c->dg_queued -= old->len;
        c->dg_dropped++;
        free(old);
      }
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
    case AQ_CMD_KEY_UPDATE:
      /* NGTCP2_ERR_INVALID_STATE while the previous update is unconfirmed: then the
       * request is dropped, as the peer is about to see fresh keys anyway */
      if (c->state == AQ_ST_OPEN) ngtcp2_conn_initiate_key_update(c->conn, now);
      break;
    case AQ_CMD_STATS: {
      aq_stats st;
      ngtcp2_conn_info ci;
      ngtcp2_conn_get_conn_info(c->conn, &ci);
      st.smoothed_rtt_ns = ci.smoothed_rtt;
      st.min_rtt_ns = ci.min_rtt;
      st.latest_rtt_ns = ci.latest_rtt;
      st.rttvar_ns = ci.rttvar;
      st.cwnd = ci.cwnd;
      st.ssthresh = ci.ssthresh;
      st.bytes_in_flight = ci.bytes_in_flight;
      st.max_udp_payload = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
      st.pkts_sent = c->pkts_sent;
      st.pkts_recv = c->pkts_recv;
      st.bytes_sent = c->bytes_sent;
      st.bytes_recv = c->bytes_recv;
      st.datagrams_dropped = c->dg_dropped;
      aq_emit_simple(c->ep, AQ_EV_STATS, c->handle, -1, cmd->code, 0, 0, &st, sizeof(st));
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
        uint64_t wait = c->ep->cfg.idle_timeout_ns ? c->ep->cfg.idle_timeout_ns : 30 * NGTCP2_SECONDS;
        c->close_deadline = now + wait;
      }
      if (c->state == AQ_ST_HANDSHAKE) do_graceful_close(c, now);
      break;
    default:
      break;
  }
}

/* ---------------------------------------------------------------- writing */

static int test_drop(struct aq_endpoint *ep) {
  ep->test_rng ^= ep->test_rng << 13; /* xorshift64 */
  ep->test_rng ^= ep->test_rng >> 7;
  ep->test_rng ^= ep->test_rng << 17;
  return ep->test_rng % 1000000 < ep->test_loss_ppm;
}

/* ngtcp2 1.11 has no "send a PING" call.  Its keep-alive writes a PING into a packet that
 * would otherwise be empty once the keep-alive timeout has elapsed since the last packet; so
 * after everything else is flushed, a 1 ns keep-alive and a strictly later timestamp force
 * exactly one PING-only packet.  If pacing or congestion control hold it back, it is retried
 * on the next write. */
static void write_ping(aq_conn *c, ngtcp2_path *path) {
  uint8_t buf[1500];
  ngtcp2_pkt_info pi;
  ngtcp2_tstamp ts = aq_now();
  size_t max = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
  ngtcp2_conn_set_keep_alive_timeout(c->conn, 1);
  ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->conn, path, &pi, buf,
                                             max < sizeof(buf) ? max : sizeof(buf), NULL,
                                             NGTCP2_WRITE_STREAM_FLAG_NONE, -1, NULL, 0, ts);
  ngtcp2_conn_set_keep_alive_timeout(c->conn, UINT64_MAX);
  if (n <= 0) return;
  aq_send_packets(c->ep, path, buf, (size_t)n, 0);
  ngtcp2_conn_update_pkt_tx_time(c->conn, ts);
  c->ping_pending &= ~1;
  for (aq_pingreq *p = c->pings; p; p = p->next)
    if (p->after_pkn == 0) p->after_pkn = 1;
}

/* Returns 1 if the socket is blocked (stop writing everything). */
int aq_conn_write(aq_conn *c, ngtcp2_tstamp now) {
  struct aq_endpoint *ep = c->ep;
  if (c->state >= AQ_ST_CLOSING) return 0;
  if (c->close_pending && all_acked(c)) {
    do_graceful_close(c, now);
    return 0;
  }
  size_t pktmax = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->conn);
  /* room for one packet: the configured maximum, so that PMTUD probes (larger than the
   * path's current size) can be written; a probe then travels in a batch of its own */
  size_t room = ngtcp2_conn_get_max_tx_udp_payload_size(c->conn);
  if (room < pktmax) room = pktmax;
  if (room > ep->txcap / 2) room = ep->txcap / 2;
  size_t quantum = ngtcp2_conn_get_send_quantum(c->conn);
  size_t maxsegs = quantum / pktmax;
  if (maxsegs < 1) maxsegs = 1;
  if (maxsegs > AQ_MAX_GSO_SEGS) maxsegs = AQ_MAX_GSO_SEGS;
  if (maxsegs * pktmax > 65000) maxsegs = 65000 / pktmax;
  uint8_t *buf = ep->txmem;
  size_t off = 0, seg = 0, nseg = 0;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  int blocked = 0;
  for (;;) {
    ngtcp2_ssize nwrite, ndatalen = -1;
    aq_stream *s = NULL;
    if (off + room > ep->txcap) {
      int b = aq_send_packets(ep, &ps.path, buf, off, seg);
      off = 0;
      nseg = 0;
      if (b) {
        blocked = 1;
        break;
      }
    }
    if (c->dg_head) {
      aq_dgram *d = c->dg_head;
      ngtcp2_vec v = {d->data, d->len};
      int accepted = 0;
      nwrite = ngtcp2_conn_writev_datagram(c->conn, &ps.path, &pi, buf + off, room, &accepted,
                                           NGTCP2_WRITE_DATAGRAM_FLAG_MORE, 0, &v, 1, now);
      if (accepted || nwrite == NGTCP2_ERR_INVALID_ARGUMENT ||
          nwrite == NGTCP2_ERR_INVALID_STATE) {
        c->dg_head = d->next;
        if (!c->dg_head) c->dg_tail = NULL;
        c->dg_queued -= d->len;
        if (!accepted) c->dg_dropped++;
        free(d);
      }
      if (nwrite == NGTCP2_ERR_WRITE_MORE || nwrite == NGTCP2_ERR_INVALID_ARGUMENT ||
          nwrite == NGTCP2_ERR_INVALID_STATE)
        continue;
    } else {
      int64_t sid = -1;
      uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      ngtcp2_vec v[2];
      size_t vcnt = 0, total = 0;
      while ((s = c->active_head) && !stream_pending(s)) deactivate(c, s);
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
      nwrite = ngtcp2_conn_writev_stream(c->conn, &ps.path, &pi, buf + off, room, &ndatalen,
                                         flags, sid, v, vcnt, now);
      if (s && ndatalen >= 0) {
        s->tx->sent += (uint64_t)ndatalen;
        if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && (size_t)ndatalen == total) s->fin_sent = 1;
        /* round robin: the next packet starts with the next stream */
        if (c->active_head == s && s->next_active) {
          deactivate(c, s);
          activate(c, s);
        }
      }
      if (nwrite < 0) {
        if (nwrite == NGTCP2_ERR_WRITE_MORE) continue;
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
      if (off) aq_send_packets(ep, &ps.path, buf, off, seg);
      fail_with_liberr(c, (int)nwrite, now);
      return 0;
    }
    if (nwrite == 0) break;
    size_t n = (size_t)nwrite;
    c->pkts_sent++;
    c->bytes_sent += n;
    if (ep->test_loss_ppm && test_drop(ep)) continue; /* the packet is "lost" */
    if (nseg && (n > seg || off + n > 65000)) { /* cannot join: send the batch, move it */
      if (aq_send_packets(ep, &ps.path, buf, off, seg)) {
        blocked = 1;
        off = 0;
        break;
      }
      memmove(buf, buf + off, n);
      off = 0;
      nseg = 0;
    }
    if (nseg == 0) seg = n;
    off += n;
    nseg++;
    if (n < seg || nseg >= maxsegs) {
      int b = aq_send_packets(ep, &ps.path, buf, off, seg);
      off = 0;
      nseg = 0;
      if (b) {
        blocked = 1;
        break;
      }
    }
  }
  if (off && aq_send_packets(ep, &ps.path, buf, off, seg)) blocked = 1;
  ngtcp2_conn_update_pkt_tx_time(c->conn, now);
  if (!blocked && (c->ping_pending & 1) && c->state == AQ_ST_OPEN) write_ping(c, &ps.path);
  ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->conn);
  if (c->close_pending && c->close_deadline < expiry) expiry = c->close_deadline;
  if (!c->active_head && !c->dg_head && !c->close_pending && c->ep->ack_floor_ns) {
    /* Nothing of ours to send: the timer is an ACK delay (srtt/8 in ngtcp2, a few us on
     * loopback), a PTO or idle.  Waiting a little longer lets the application's answer
     * carry the ACK instead of a packet of its own; every timer here tolerates it. */
    ngtcp2_tstamp floor = now + c->ep->ack_floor_ns;
    if (expiry < floor) expiry = floor;
  }
  aq_sched_expiry(c, expiry);
  if (blocked) aq_sched_dirty(c); /* finish once the socket drains */
  return blocked;
}
