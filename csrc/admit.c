/*
 * admit.c - which client Initials a server turns into connection state (sans-IO).
 *
 * Every Initial that opens a connection costs the server a TLS handshake and ~60 KiB of
 * state, and its source address may be forged.  aq_admit_initial() decides, per Initial:
 *
 *   1. a token in the Initial is checked first: a Retry token this endpoint issued (10 s
 *      validity, bound to the client's address and connection ID) proves the address, and
 *      so does a NEW_TOKEN token (24 h); a Retry token that fails verification closes the
 *      attempt with INVALID_TOKEN (RFC 9000 8.1.3); a NEW_TOKEN token that fails is ignored.
 *   2. an unproven address is asked to prove it with a Retry packet when Retry is always on,
 *      or, in the default automatic mode, once `retry_threshold` handshakes are in progress;
 *   3. the half-open cap drops the Initial when `max_half_open` handshakes are in progress;
 *   4. the per-source rate limit (a token bucket per client IPv4 address or IPv6 /64, in a
 *      fixed table indexed by a keyed SipHash) drops the Initial when that source started
 *      more than `handshake_rate` handshakes per second (bursts of twice that).  A dropped
 *      Initial is retransmitted by the client, which therefore waits rather than fails.
 *
 * Nothing here touches a socket or a clock: the caller passes `now` and sends what is
 * written into `out`.  Counters are atomics so that another thread can read them.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define AQ_RETRY_TOKEN_TTL (10 * NGTCP2_SECONDS)
#define AQ_REGULAR_TOKEN_TTL (24 * 3600 * NGTCP2_SECONDS)
#define AQ_SRC_BUCKETS 4096 /* power of two */
#define AQ_TOKEN_SECRET_LEN 32

struct aq_src_bucket {
  uint64_t key;      /* SipHash of the source (0: empty) */
  double tokens;     /* handshakes it may still start */
  ngtcp2_tstamp ts;  /* last refill */
};

int aq_admit_init(aq_admit *a, const aq_config *cfg, const uint8_t secret[32]) {
  memset(a, 0, sizeof(*a));
  a->secret = secret;
  aq_rand_bytes(a->sipkey, sizeof(a->sipkey));
  a->mode = cfg->retry;
  a->max_half_open = cfg->max_half_open ? cfg->max_half_open : 256;
  a->retry_threshold = cfg->retry_threshold ? cfg->retry_threshold : a->max_half_open / 4;
  if (a->retry_threshold == 0) a->retry_threshold = 1;
  a->rate = cfg->handshake_rate;
  a->burst = 2.0 * a->rate;
  if (a->rate > 0 && cfg->is_server) {
    a->buckets = calloc(AQ_SRC_BUCKETS, sizeof(*a->buckets));
    if (!a->buckets) return -1;
  }
  return 0;
}

void aq_admit_free(aq_admit *a) {
  free(a->buckets);
  a->buckets = NULL;
}

static void count(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

/* The part of an address that identifies a source: an IPv4 address, or an IPv6 /64 (one
 * host usually owns a whole /64).  IPv4-mapped IPv6 addresses count as IPv4. */
static size_t source_key(const struct sockaddr *sa, uint8_t out[8]) {
  if (sa->sa_family == AF_INET) {
    memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 4;
  }
  if (sa->sa_family == AF_INET6) {
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0) {
      memcpy(out, b + 12, 4);
      return 4;
    }
    memcpy(out, b, 8);
    return 8;
  }
  return 0;
}

/* One handshake from this source: 1 if its bucket had a token, 0 if it is over the rate. */
static int source_allowed(aq_admit *a, const struct sockaddr *from, ngtcp2_tstamp now) {
  if (!a->buckets) return 1;
  uint8_t k[8];
  size_t klen = source_key(from, k);
  if (!klen) return 1;
  uint64_t h = aq_siphash24(a->sipkey, k, klen) | 1; /* never 0, which marks empty */
  struct aq_src_bucket *b = &a->buckets[h & (AQ_SRC_BUCKETS - 1)];
  if (b->key != h) { /* empty, or another source's: this one starts with a full bucket */
    b->key = h;
    b->tokens = a->burst;
  } else if (now > b->ts) {
    b->tokens += (double)(now - b->ts) * a->rate / (double)NGTCP2_SECONDS;
    if (b->tokens > a->burst) b->tokens = a->burst;
  }
  b->ts = now;
  if (b->tokens < 1.0) return 0;
  b->tokens -= 1.0;
  return 1;
}

static int write_retry(aq_admit *a, const ngtcp2_pkt_hd *hd, const struct sockaddr *from,
                       socklen_t fromlen, size_t cidlen, ngtcp2_tstamp now, uint8_t *out,
                       size_t outcap, size_t *outlen) {
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2];
  ngtcp2_cid scid;
  scid.datalen = cidlen;
  aq_rand_bytes(scid.data, cidlen);
  ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token2(
      token, a->secret, AQ_TOKEN_SECRET_LEN, hd->version, (const ngtcp2_sockaddr *)from, fromlen,
      &scid, &hd->dcid, now);
  if (tlen < 0) return AQ_ADMIT_DROP;
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(out, outcap, hd->version, &hd->scid, &scid,
                                             &hd->dcid, token, (size_t)tlen);
  if (n < 0) return AQ_ADMIT_DROP;
  *outlen = (size_t)n;
  count(&a->retries);
  return AQ_ADMIT_RETRY;
}

int aq_admit_initial(aq_admit *a, const ngtcp2_pkt_hd *hd, const struct sockaddr *from,
                     socklen_t fromlen, size_t half_open, size_t cidlen, ngtcp2_tstamp now,
                     aq_validation *v, uint8_t *out, size_t outcap, size_t *outlen) {
  memset(v, 0, sizeof(*v));
  *outlen = 0;
  int validated = 0;
  if (hd->type == NGTCP2_PKT_INITIAL && hd->tokenlen) {
    if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
      if (ngtcp2_crypto_verify_retry_token2(&v->odcid, hd->token, hd->tokenlen, a->secret,
                                            AQ_TOKEN_SECRET_LEN, hd->version,
                                            (const ngtcp2_sockaddr *)from, fromlen, &hd->dcid,
                                            AQ_RETRY_TOKEN_TTL, now) != 0) {
        count(&a->tokens_bad);
        ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
            out, outcap, hd->version, &hd->scid, &hd->dcid, NGTCP2_INVALID_TOKEN, NULL, 0);
        if (n < 0) return AQ_ADMIT_DROP;
        *outlen = (size_t)n;
        return AQ_ADMIT_CLOSE;
      }
      v->retried = 1;
      v->token_type = NGTCP2_TOKEN_TYPE_RETRY;
      validated = 1;
    } else if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR) {
      if (ngtcp2_crypto_verify_regular_token(hd->token, hd->tokenlen, a->secret,
                                             AQ_TOKEN_SECRET_LEN, (const ngtcp2_sockaddr *)from,
                                             fromlen, AQ_REGULAR_TOKEN_TTL, now) == 0) {
        v->token_type = NGTCP2_TOKEN_TYPE_NEW_TOKEN;
        validated = 1;
      } else {
        count(&a->tokens_bad); /* stale or foreign: treated as no token */
      }
    }
    if (validated) count(&a->tokens_ok);
  }
  if (!validated && a->mode != AQ_RETRY_NEVER &&
      (a->mode == AQ_RETRY_ALWAYS || half_open >= a->retry_threshold)) {
    /* 0-RTT packets cannot be answered with Retry: the client's Initial will be */
    if (hd->type != NGTCP2_PKT_INITIAL) return AQ_ADMIT_DROP;
    return write_retry(a, hd, from, fromlen, cidlen, now, out, outcap, outlen);
  }
  if (half_open >= a->max_half_open) {
    count(&a->dropped_full);
    return AQ_ADMIT_DROP;
  }
  if (!source_allowed(a, from, now)) {
    count(&a->rate_limited);
    return AQ_ADMIT_DROP;
  }
  return AQ_ADMIT_ACCEPT;
}
