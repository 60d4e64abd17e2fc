/*
 * tls.c - GnuTLS credentials (per endpoint) and sessions (per connection).
 */
#include "internal.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <time.h>

/* TLS 1.3 only, the AEADs QUIC allows (no CCM_8), no middlebox compatibility mode; the
 * ciphers (cfg.ciphers, e.g. "+CHACHA20-POLY1305:+AES-128-GCM") in their order of
 * preference, by default these four. */
#define AQ_PRIORITY_HEAD "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:"
#define AQ_PRIORITY_TAIL ":%DISABLE_TLS13_COMPAT_MODE"
#define AQ_CIPHERS_DEFAULT "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:+AES-128-CCM"

/* The priority every session of a driver uses, parsed once (not per handshake). */
static int priority_init(aq_ctx *ctx, char *err, size_t errlen) {
  const char *ciphers = ctx->cfg.ciphers && *ctx->cfg.ciphers ? ctx->cfg.ciphers
                                                              : AQ_CIPHERS_DEFAULT;
  char prio[512];
  int n = snprintf(prio, sizeof(prio), "%s%s%s", AQ_PRIORITY_HEAD, ciphers, AQ_PRIORITY_TAIL);
  if (n < 0 || (size_t)n >= sizeof(prio)) {
    AQ_ERR(err, errlen, "cipher list too long");
    return -1;
  }
  const char *where = NULL;
  int rv = gnutls_priority_init(&ctx->prio, prio, &where);
  if (rv != 0) {
    ctx->prio = NULL;
    AQ_ERR(err, errlen, "gnutls priority %s: %s (at %.40s)", prio, gnutls_strerror(rv),
           where ? where : "?");
    return -1;
  }
  return 0;
}

unsigned aq_tls_cipher_suite(aq_conn *c) {
  switch (gnutls_cipher_get(c->tls)) {
    case GNUTLS_CIPHER_AES_128_GCM: return 0x1301;
    case GNUTLS_CIPHER_AES_256_GCM: return 0x1302;
    case GNUTLS_CIPHER_CHACHA20_POLY1305: return 0x1303;
    case GNUTLS_CIPHER_AES_128_CCM: return 0x1304;
    default: return 0;
  }
}


/* ---------------------------------------------------------------- session tickets */

#define AQ_TICKET_KEY_LEN 64 /* GnuTLS's ticket master key size */
#define AQ_TICKET_DIGEST 32  /* SHA-256 at the end of a ticket blob */
#define AQ_REPLAY_SWEEP 4096    /* entries before expired ones are swept out */
#define AQ_REPLAY_MAX (1 << 18) /* past this, 0-RTT is refused (the handshake goes on) */

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

/* Anti-replay store (GnuTLS calls it for each ClientHello offering 0-RTT, inside the ticket
 * age window): 0 when the ClientHello is new, an error when it was seen (GnuTLS then refuses
 * the early data, and the handshake continues without it).  Keys are SipHash digests under a
 * per-context key; entries expire with GnuTLS's window. */
static int replay_add(void *ptr, time_t exp, const gnutls_datum_t *key, const gnutls_datum_t *data) {
  aq_ctx *ctx = ptr;
  (void)data;
  uint64_t h = aq_siphash24(ctx->replay_sipkey, key->data, key->size);
  if (aq_map_get(&ctx->replay, &h, sizeof(h))) return GNUTLS_E_DB_ENTRY_EXISTS;
  if (ctx->replay.used >= ctx->replay_sweep_at) {
    time_t now = time(NULL);
    for (size_t i = 0; i < ctx->replay.cap; i++) {
      aq_map_slot *sl = &ctx->replay.slots[i];
      if (sl->state == 1 && (time_t)(uintptr_t)sl->val < now) aq_map_del(&ctx->replay, sl->key, sl->len);
    }
    ctx->replay_sweep_at = ctx->replay.used * 2 > AQ_REPLAY_SWEEP ? ctx->replay.used * 2 : AQ_REPLAY_SWEEP;
  }
  if (ctx->replay.used >= AQ_REPLAY_MAX) return GNUTLS_E_DB_ERROR;
  if (aq_map_put(&ctx->replay, &h, sizeof(h), (void *)(uintptr_t)(exp > 0 ? exp : 1)) != 0)
    return GNUTLS_E_MEMORY_ERROR;
  return 0;
}

/* Server: one ticket key per context (tickets are stateless: the key encrypts them, so a
 * ticket resumes only on the endpoint that issued it) and the anti-replay state. */
static int server_tickets_init(aq_ctx *ctx, char *err, size_t errlen) {
  const uint8_t *given = ctx->cfg.ticket_key;
  size_t given_len = ctx->cfg.ticket_key_len;
  ctx->cfg.ticket_key = NULL; /* never a dangling copy of the caller's buffer */
  ctx->cfg.ticket_key_len = 0;
  int rv;
  if (given && given_len) {
    if (given_len != AQ_TICKET_KEY_LEN) {
      AQ_ERR(err, errlen, "ticket key: %zu bytes, need %d", given_len, AQ_TICKET_KEY_LEN);
      return -1;
    }
    ctx->ticket_key.data = gnutls_malloc(AQ_TICKET_KEY_LEN);
    if (!ctx->ticket_key.data) {
      AQ_ERR(err, errlen, "out of memory");
      return -1;
    }
    memcpy(ctx->ticket_key.data, given, AQ_TICKET_KEY_LEN);
    ctx->ticket_key.size = AQ_TICKET_KEY_LEN;
  } else if ((rv = gnutls_session_ticket_key_generate(&ctx->ticket_key)) < 0) {
    AQ_ERR(err, errlen, "gnutls_session_ticket_key_generate: %s", gnutls_strerror(rv));
    return -1;
  }
  if (ctx->cfg.no_early_data) return 0;
  rv = gnutls_anti_replay_init(&ctx->anti_replay);
  if (rv < 0) {
    AQ_ERR(err, errlen, "gnutls_anti_replay_init: %s", gnutls_strerror(rv));
    return -1;
  }
  gnutls_anti_replay_set_add_function(ctx->anti_replay, replay_add);
  gnutls_anti_replay_set_ptr(ctx->anti_replay, ctx);
  aq_rand_bytes(ctx->replay_sipkey, sizeof(ctx->replay_sipkey));
  ctx->replay_sweep_at = AQ_REPLAY_SWEEP;
  if (aq_map_init(&ctx->replay, 64) != 0) {
    AQ_ERR(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Client: check the ticket blob's framing (aiopquic.h, AQ_TICKET_VERSION) and keep a copy. */
static int client_ticket_load(aq_ctx *ctx, char *err, size_t errlen) {
  const uint8_t *p = ctx->cfg.session_ticket;
  size_t n = ctx->cfg.session_ticket_len;
  ctx->cfg.session_ticket = NULL; /* never a dangling copy of the caller's buffer */
  ctx->cfg.session_ticket_len = 0;
  ctx->cfg.ticket_key = NULL; /* a server's */
  ctx->cfg.ticket_key_len = 0;
  if (!p || !n) return 0;
  const uint8_t *end = p + n, *q = p;
  if (n < 5 || memcmp(q, "AQST", 4) != 0) goto bad;
  if (q[4] != AQ_TICKET_VERSION) {
    AQ_ERR(err, errlen, "session_ticket: version %u of the ticket format is not known here",
           q[4]);
    return -1;
  }
  q += 5;
  if (end - q < 4) goto bad;
  size_t tls_len = rd32(q);
  q += 4;
  if (tls_len == 0 || (size_t)(end - q) < tls_len) goto bad;
  size_t tls_off = (size_t)(q - p);
  q += tls_len;
  if (end - q < 4) goto bad;
  size_t tp_len = rd32(q);
  q += 4;
  if ((size_t)(end - q) < tp_len) goto bad;
  size_t tp_off = (size_t)(q - p);
  q += tp_len;
  if (end - q < 8 + 4 + 4 + 2 + 1) goto bad;
  uint32_t early = rd32(q + 12);
  q += 18;
  size_t alpn_len = *q++;
  if ((size_t)(end - q) < alpn_len) goto bad;
  q += alpn_len;
  if (end - q < 2) goto bad;
  size_t sni_len = (size_t)q[0] << 8 | q[1];
  q += 2;
  if ((size_t)(end - q) != sni_len + AQ_TICKET_DIGEST) goto bad;
  uint8_t digest[AQ_TICKET_DIGEST];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, p, n - AQ_TICKET_DIGEST, digest) != 0 ||
      memcmp(digest, end - AQ_TICKET_DIGEST, AQ_TICKET_DIGEST) != 0) {
    AQ_ERR(err, errlen, "session_ticket: damaged (its SHA-256 digest does not match)");
    return -1;
  }
  ctx->ticket = malloc(n);
  if (!ctx->ticket) {
    AQ_ERR(err, errlen, "out of memory");
    return -1;
  }
  memcpy(ctx->ticket, p, n);
  ctx->ticket_len = n;
  ctx->ticket_tls = ctx->ticket + tls_off;
  ctx->ticket_tls_len = tls_len;
  ctx->ticket_tp = ctx->ticket + tp_off;
  ctx->ticket_tp_len = tp_len;
  ctx->ticket_early = early;
  return 0;
bad:
  AQ_ERR(err, errlen, "session_ticket: not a ticket this library issued (bad framing)");
  return -1;
}

int aq_tls_apply_ticket(aq_conn *c, char *err, size_t errlen) {
  const aq_ctx *ctx = c->ctx;
  if (!ctx->ticket) return 0;
  int rv = gnutls_session_set_data(c->tls, ctx->ticket_tls, ctx->ticket_tls_len);
  if (rv < 0) {
    AQ_ERR(err, errlen, "session_ticket: GnuTLS refused the ticket's session data: %s",
           gnutls_strerror(rv));
    return -1;
  }
  if (ctx->ticket_early && ctx->ticket_tp_len && !ctx->cfg.no_early_data) {
    rv = ngtcp2_conn_decode_and_set_0rtt_transport_params(c->conn, ctx->ticket_tp,
                                                          ctx->ticket_tp_len);
    if (rv != 0) {
      AQ_ERR(err, errlen, "session_ticket: bad transport parameters in the ticket: %s",
             ngtcp2_strerror(rv));
      return -1;
    }
    c->early_attempted = 1;
  }
  return 0;
}

uint32_t aq_tls_handshake_flags(aq_conn *c) {
  uint32_t f = 0;
  if (gnutls_session_is_resumed(c->tls)) f |= AQ_HS_RESUMED;
  if (gnutls_session_get_flags(c->tls) & GNUTLS_SFLAGS_EARLY_DATA) f |= AQ_HS_EARLY_ACCEPTED;
  return f;
}

/* The extensions block of a NewSessionTicket (RFC 8446 4.6.1: u16 length, then type-length-
 * value entries): the early_data extension's max_early_data_size (0 when absent).  Returns
 * -1 if it does not parse. */
static int parse_nst_exts(const uint8_t *p, size_t n, uint32_t *early) {
  const uint8_t *end = p + n;
  *early = 0;
  if (n < 2 || ((size_t)p[0] << 8 | p[1]) != n - 2) return -1;
  p += 2;
  while (end - p >= 4) {
    unsigned type = (unsigned)p[0] << 8 | p[1];
    size_t el = (size_t)p[2] << 8 | p[3];
    p += 4;
    if ((size_t)(end - p) < el) return -1;
    if (type == 42 && el == 4) *early = rd32(p); /* early_data */
    p += el;
  }
  return p == end ? 0 : -1;
}

/* The whole NewSessionTicket body: lifetime, then the extensions as above. */
static int parse_nst(const uint8_t *p, size_t n, uint32_t *lifetime, uint32_t *early) {
  const uint8_t *end = p + n;
  if (n < 9) return -1;
  uint32_t lt = rd32(p);
  p += 8; /* lifetime, age_add */
  size_t l = *p++;
  if ((size_t)(end - p) < l + 2) return -1;
  p += l; /* nonce */
  l = (size_t)p[0] << 8 | p[1];
  p += 2;
  if ((size_t)(end - p) < l) return -1;
  p += l; /* ticket */
  if (parse_nst_exts(p, (size_t)(end - p), early) != 0) return -1;
  *lifetime = lt;
  return 0;
}

/* Client: a NewSessionTicket was processed.  The session data now carries it: emit it with
 * the server's 0-RTT transport parameters as one blob (aiopquic.h, AQ_TICKET_VERSION). */
static int ticket_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                       const gnutls_datum_t *msg) {
  (void)when;
  if (htype != GNUTLS_HANDSHAKE_NEW_SESSION_TICKET || !incoming) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  if (!ref) return 0;
  aq_conn *c = ref->user_data;
  /* GnuTLS 3.7/3.8 give this hook only the message's extensions block (so the lifetime
   * stays unknown: 0); a whole message body is read as well */
  uint32_t lifetime = 0, early = 0;
  if (msg && parse_nst_exts(msg->data, msg->size, &early) != 0 &&
      parse_nst(msg->data, msg->size, &lifetime, &early) != 0)
    early = 0;
  gnutls_datum_t data = {NULL, 0};
  if (gnutls_session_get_data2(s, &data) < 0) return 0;
  if (!data.size) {
    gnutls_free(data.data);
    return 0;
  }
  uint8_t tp[256];
  ngtcp2_ssize tplen = ngtcp2_conn_encode_0rtt_transport_params(c->conn, tp, sizeof(tp));
  if (tplen < 0) tplen = 0;
  gnutls_datum_t alpn = {NULL, 0};
  gnutls_alpn_get_selected_protocol(s, &alpn);
  size_t alen = alpn.size <= 255 ? alpn.size : 0;
  size_t slen = c->server_name ? strlen(c->server_name) : 0;
  if (slen > 65535) slen = 0;
  size_t n = 5 + 4 + data.size + 4 + (size_t)tplen + 8 + 4 + 4 + 2 + 1 + alen + 2 + slen +
             AQ_TICKET_DIGEST;
  unsigned suite = aq_tls_cipher_suite(c);
  uint8_t *blob = malloc(n), *q = blob;
  if (blob) {
    memcpy(q, "AQST", 4);
    q[4] = AQ_TICKET_VERSION;
    q = wr32(q + 5, data.size);
    memcpy(q, data.data, data.size);
    q = wr32(q + data.size, (uint32_t)tplen);
    memcpy(q, tp, (size_t)tplen);
    q += tplen;
    uint64_t now = (uint64_t)time(NULL);
    q = wr32(q, (uint32_t)(now >> 32));
    q = wr32(q, (uint32_t)now);
    q = wr32(q, lifetime);
    q = wr32(q, early);
    *q++ = (uint8_t)(suite >> 8);
    *q++ = (uint8_t)suite;
    *q++ = (uint8_t)alen;
    if (alen) memcpy(q, alpn.data, alen);
    q += alen;
    *q++ = (uint8_t)(slen >> 8);
    *q++ = (uint8_t)slen;
    if (slen) memcpy(q, c->server_name, slen);
    q += slen;
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, blob, (size_t)(q - blob), q) == 0)
      aq_sink_emit_simple(c->ctx->sink, AQ_EV_SESSION_TICKET, c->handle, -1, 0, 0, 0, blob, n);
    free(blob);
  }
  gnutls_free(data.data);
  /* the client has its ticket: nothing else needs the TLS session (key updates use the
   * engine's own crypto context); aq_conn_after_read frees it, later tickets are dropped */
  c->tls_done = 1;
  return 0;
}

int aq_tls_load_cred(aq_ctx *ctx, char *err, size_t errlen) {
  const aq_config *cfg = &ctx->cfg;
  int rv = gnutls_certificate_allocate_credentials(&ctx->cred);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls: %s", gnutls_strerror(rv));
    return -1;
  }
  if (cfg->cert_pem && cfg->cert_pem_len) {
    gnutls_datum_t cert = {(unsigned char *)cfg->cert_pem, (unsigned)cfg->cert_pem_len};
    gnutls_datum_t key = {(unsigned char *)cfg->key_pem, (unsigned)cfg->key_pem_len};
    rv = gnutls_certificate_set_x509_key_mem2(ctx->cred, &cert, &key, GNUTLS_X509_FMT_PEM,
                                              cfg->key_password, 0);
    if (rv < 0) {
      AQ_ERR(err, errlen, "cannot load certificate/private key: %s", gnutls_strerror(rv));
      return -1;
    }
  } else if (cfg->is_server) {
    AQ_ERR(err, errlen, "a server needs a certificate and private key (load_cert_chain)");
    return -1;
  }
  if (!cfg->is_server && cfg->verify_peer) {
    int any = 0;
    if (cfg->ca_file) {
      rv = gnutls_certificate_set_x509_trust_file(ctx->cred, cfg->ca_file, GNUTLS_X509_FMT_PEM);
      if (rv <= 0) {
        AQ_ERR(err, errlen, "cafile %s: %s", cfg->ca_file,
               rv < 0 ? gnutls_strerror(rv) : "no certificate found");
        return -1;
      }
      any = 1;
    }
    if (cfg->ca_path) {
      rv = gnutls_certificate_set_x509_trust_dir(ctx->cred, cfg->ca_path, GNUTLS_X509_FMT_PEM);
      if (rv < 0) {
        AQ_ERR(err, errlen, "capath %s: %s", cfg->ca_path, gnutls_strerror(rv));
        return -1;
      }
      any = 1;
    }
    if (cfg->ca_pem && cfg->ca_pem_len) {
      gnutls_datum_t d = {(unsigned char *)cfg->ca_pem, (unsigned)cfg->ca_pem_len};
      rv = gnutls_certificate_set_x509_trust_mem(ctx->cred, &d, GNUTLS_X509_FMT_PEM);
      if (rv <= 0) {
        AQ_ERR(err, errlen, "cadata: %s", rv < 0 ? gnutls_strerror(rv) : "no certificate found");
        return -1;
      }
      any = 1;
    }
    if (!any) {
      rv = gnutls_certificate_set_x509_system_trust(ctx->cred);
      if (rv < 0) {
        AQ_ERR(err, errlen, "cannot load the system trust store: %s", gnutls_strerror(rv));
        return -1;
      }
    }
  }
  return 0;
}

int aq_tls_load_tickets(aq_ctx *ctx, char *err, size_t errlen) {
  if (priority_init(ctx, err, errlen) != 0) return -1;
  return ctx->cfg.is_server ? server_tickets_init(ctx, err, errlen)
                            : client_ticket_load(ctx, err, errlen);
}

int aq_tls_load(aq_ctx *ctx, char *err, size_t errlen) {
  if (aq_tls_load_cred(ctx, err, errlen) != 0) return -1;
  return aq_tls_load_tickets(ctx, err, errlen);
}

void aq_tls_unload(aq_ctx *ctx) {
  if (ctx->prio) gnutls_priority_deinit(ctx->prio);
  ctx->prio = NULL;
  if (ctx->cred && !ctx->cred_borrowed) gnutls_certificate_free_credentials(ctx->cred);
  ctx->cred = NULL;
  free(ctx->ticket);
  ctx->ticket = NULL;
  if (ctx->ticket_key.data) gnutls_free(ctx->ticket_key.data);
  ctx->ticket_key.data = NULL;
  if (ctx->anti_replay) gnutls_anti_replay_deinit(ctx->anti_replay);
  ctx->anti_replay = NULL;
  if (ctx->replay.slots) aq_map_destroy(&ctx->replay);
}

static void hex(char *dst, const uint8_t *src, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    dst[2 * i] = digits[src[i] >> 4];
    dst[2 * i + 1] = digits[src[i] & 15];
  }
  dst[2 * n] = 0;
}

static int keylog_cb(gnutls_session_t s, const char *label, const gnutls_datum_t *secret) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  aq_conn *c = ref->user_data;
  gnutls_datum_t crand, srand;
  gnutls_session_get_random(s, &crand, &srand);
  size_t llen = strlen(label);
  size_t n = llen + 1 + 2 * crand.size + 1 + 2 * secret->size + 1;
  char *line = malloc(n);
  if (!line) return 0;
  memcpy(line, label, llen);
  line[llen] = ' ';
  hex(line + llen + 1, crand.data, crand.size);
  line[llen + 1 + 2 * crand.size] = ' ';
  hex(line + llen + 2 + 2 * crand.size, secret->data, secret->size);
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_KEYLOG, c->handle, -1, 0, 0, 0, line, n - 1);
  free(line);
  return 0;
}

/* Server: a ClientHello without any protocol we accept ends the handshake with
 * no_application_protocol (RFC 9001 8.1); GnuTLS alone accepts a ClientHello that carries no
 * ALPN extension at all. */
static int client_hello_hook(gnutls_session_t s, unsigned htype, unsigned when,
                             unsigned incoming, const gnutls_datum_t *msg) {
  (void)htype;
  (void)when;
  (void)incoming;
  (void)msg;
  gnutls_datum_t sel = {NULL, 0};
  if (gnutls_alpn_get_selected_protocol(s, &sel) == 0 && sel.size) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  if (ref) ((aq_conn *)ref->user_data)->alpn_missing = 1;
  return GNUTLS_E_NO_APPLICATION_PROTOCOL;
}

/* quantum readiness test (client only): an unassigned extension of zero bytes that makes
 * the ClientHello larger than one QUIC packet.  Sent in the ClientHello only; a server
 * echoing it in any other message is ignored (GnuTLS only offers us messages the
 * registration flags allow). */
static int quantum_send(gnutls_session_t s, gnutls_buffer_t extdata) {
  static const uint8_t zeros[AQ_QUANTUM_READINESS_LEN];
  if (gnutls_ext_get_current_msg(s) != GNUTLS_EXT_FLAG_CLIENT_HELLO) return 0;
  int rv = gnutls_buffer_append_data(extdata, zeros, sizeof(zeros));
  return rv < 0 ? rv : (int)sizeof(zeros);
}

static int quantum_recv(gnutls_session_t s, const unsigned char *data, size_t len) {
  (void)s;
  (void)data;
  (void)len;
  return 0;
}

static int is_ip_literal(const char *name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int aq_tls_session_new(aq_conn *c, const char *server_name, char *err, size_t errlen) {
  const aq_ctx *ctx = c->ctx;
  int server = ctx->cfg.is_server;
  int early = !ctx->cfg.no_early_data;
  unsigned flags = server ? (GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET | GNUTLS_NO_END_OF_EARLY_DATA)
                          : (GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA);
  if (early) flags |= GNUTLS_ENABLE_EARLY_DATA;
  int rv = gnutls_init(&c->tls, flags);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls_init: %s", gnutls_strerror(rv));
    return -1;
  }
  rv = server ? ngtcp2_crypto_gnutls_configure_server_session(c->tls)
              : ngtcp2_crypto_gnutls_configure_client_session(c->tls);
  if (rv != 0) {
    AQ_ERR(err, errlen, "ngtcp2_crypto_gnutls_configure_session failed");
    return -1;
  }
  rv = gnutls_priority_set(c->tls, ctx->prio);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls priority: %s", gnutls_strerror(rv));
    return -1;
  }
  gnutls_session_set_ptr(c->tls, &c->cref);
  rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, ctx->cred);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls credentials: %s", gnutls_strerror(rv));
    return -1;
  }
  if (ctx->alpn_len) {
    gnutls_datum_t protos[64];
    unsigned n = 0;
    size_t i = 0;
    while (i < ctx->alpn_len && n < 64) {
      unsigned l = ctx->alpn[i];
      protos[n].data = ctx->alpn + i + 1;
      protos[n].size = l;
      n++;
      i += 1 + l;
    }
    rv = gnutls_alpn_set_protocols(c->tls, protos, n,
                                   GNUTLS_ALPN_MANDATORY |
                                       (server ? GNUTLS_ALPN_SERVER_PRECEDENCE : 0));
    if (rv != 0) {
      AQ_ERR(err, errlen, "gnutls ALPN: %s", gnutls_strerror(rv));
      return -1;
    }
    if (server)
      gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
                                         client_hello_hook);
  }
  if (!server && server_name && *server_name) {
    c->server_name = strdup(server_name);
    if (!c->server_name) {
      AQ_ERR(err, errlen, "out of memory");
      return -1;
    }
    server_name = c->server_name;
  }
  if (!server) {
    if (server_name && *server_name && !is_ip_literal(server_name))
      gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, server_name, strlen(server_name));
    if (ctx->cfg.verify_peer)
      gnutls_session_set_verify_cert(c->tls, (server_name && *server_name) ? server_name : NULL,
                                     0);
  }
  if (server) {
    rv = gnutls_session_ticket_enable_server(c->tls, &ctx->ticket_key);
    if (rv != 0) {
      AQ_ERR(err, errlen, "gnutls session tickets: %s", gnutls_strerror(rv));
      return -1;
    }
    if (early && ctx->anti_replay) {
      gnutls_anti_replay_enable(c->tls, ctx->anti_replay);
      gnutls_record_set_max_early_data_size(c->tls, 0xffffffffu);
    }
  } else {
    gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
                                       GNUTLS_HOOK_POST, ticket_hook);
  }
  if (!server && ctx->cfg.quantum_readiness) {
    rv = gnutls_session_ext_register(c->tls, "aq_quantum_readiness", AQ_QUANTUM_READINESS_TYPE,
                                     GNUTLS_EXT_APPLICATION, quantum_recv, quantum_send, NULL,
                                     NULL, NULL,
                                     GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO);
    if (rv != 0) {
      AQ_ERR(err, errlen, "gnutls extension for quantum_readiness_test: %s",
             gnutls_strerror(rv));
      return -1;
    }
  }
  if (ctx->cfg.keylog) gnutls_session_set_keylog_function(c->tls, keylog_cb);
  return 0;
}

void aq_tls_describe_failure(aq_conn *c, char *buf, size_t len) {
  buf[0] = 0;
  if (!c->tls) return;
  unsigned status = gnutls_session_get_verify_cert_status(c->tls);
  if (status != 0) {
    gnutls_datum_t out = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      snprintf(buf, len, "certificate verification failed: %s", (char *)out.data);
      gnutls_free(out.data);
      return;
    }
    snprintf(buf, len, "certificate verification failed");
  }
}

/* ---------------------------------------------------------------- self-signed certificates */

int aq_selfsigned(const char *names, unsigned days, char *cert_out, size_t *cert_len,
                  char *key_out, size_t *key_len, char *err, size_t errlen) {
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  int rv;
  char *list = NULL;
  if ((rv = gnutls_x509_privkey_init(&key)) < 0 ||
      (rv = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0)) < 0 ||
      (rv = gnutls_x509_crt_init(&crt)) < 0)
    goto fail;
  time_t now = time(NULL);
  unsigned char serial[16];
  aq_rand_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  list = strdup(names ? names : "localhost");
  if (!list) {
    rv = GNUTLS_E_MEMORY_ERROR;
    goto fail;
  }
  char *save = NULL, *first = strtok_r(list, ",", &save);
  if (!first) first = "localhost";
  if ((rv = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
      (rv = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) < 0 ||
      (rv = gnutls_x509_crt_set_activation_time(crt, now - 60)) < 0 ||
      (rv = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400 - 120)) < 0 ||
      (rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, first,
                                          strlen(first))) < 0 ||
      (rv = gnutls_x509_crt_set_key(crt, key)) < 0 ||
      (rv = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
      (rv = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
      (rv = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0)
    goto fail;
  for (char *n = first; n; n = strtok_r(NULL, ",", &save)) {
    unsigned char ip[16];
    if (inet_pton(AF_INET, n, ip) == 1)
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4,
                                                GNUTLS_FSAN_APPEND);
    else if (inet_pton(AF_INET6, n, ip) == 1)
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 16,
                                                GNUTLS_FSAN_APPEND);
    else
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, n, strlen(n),
                                                GNUTLS_FSAN_APPEND);
    if (rv < 0) goto fail;
  }
  if ((rv = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0 ||
      (rv = gnutls_x509_crt_export(crt, GNUTLS_X509_FMT_PEM, cert_out, cert_len)) < 0 ||
      (rv = gnutls_x509_privkey_export_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                             key_out, key_len)) < 0)
    goto fail;
  free(list);
  gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return 0;
fail:
  AQ_ERR(err, errlen, "cannot create a certificate: %s", gnutls_strerror(rv));
  free(list);
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  return -1;
}
