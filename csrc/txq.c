/*
 * txq.c - the transmit queue: packets written by connections, grouped into GSO batches,
 * waiting for io.c to send them.  Plain memory: no socket, no clock, no connection.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

int aq_txq_init(aq_txq *q, size_t cap, size_t capents) {
  memset(q, 0, sizeof(*q));
  q->buf = malloc(cap);
  q->ents = calloc(capents, sizeof(*q->ents));
  if (!q->buf || !q->ents) {
    aq_txq_destroy(q);
    return -1;
  }
  q->cap = cap;
  q->capents = capents;
  q->max_batch = 65000;
  return 0;
}

void aq_txq_destroy(aq_txq *q) {
  free(q->buf);
  free(q->ents);
  q->buf = NULL;
  q->ents = NULL;
  q->cap = q->capents = q->used = q->nents = q->head = 0;
}

/* Once everything was sent, start again at the front. */
static void maybe_reset(aq_txq *q) {
  if (q->head == q->nents) q->head = q->nents = q->used = 0;
}

uint8_t *aq_txq_reserve(aq_txq *q, size_t room) {
  maybe_reset(q);
  if (q->used + room > q->cap) return NULL;
  /* a new entry may be needed for this packet */
  if (q->nents == q->capents) return NULL;
  return q->buf + q->used;
}

/* The source address worth sending with: `from` unless it is NULL or a wildcard. */
static socklen_t source_of(const struct sockaddr *from, struct sockaddr_in6 *out) {
  if (!from) return 0;
  if (from->sa_family == AF_INET) {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)(const void *)from;
    if (a4->sin_addr.s_addr == htonl(INADDR_ANY)) return 0;
    memset(out, 0, sizeof(*out));
    memcpy(out, a4, sizeof(*a4));
    return sizeof(*a4);
  }
  if (from->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)(const void *)from;
    if (IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr)) return 0;
    *out = *a6;
    return sizeof(*a6);
  }
  return 0;
}

static int same_addr(const aq_txent *e, const struct sockaddr_in6 *from, socklen_t fromlen,
                     const struct sockaddr *to, socklen_t tolen) {
  return e->tolen == tolen && memcmp(&e->to, to, tolen) == 0 && e->fromlen == fromlen &&
         memcmp(&e->from, from, fromlen) == 0;
}

void aq_txq_commit(aq_txq *q, const struct sockaddr *from, const struct sockaddr *to,
                   socklen_t tolen, uint64_t owner, size_t len, uint32_t flags, size_t maxsegs) {
  if (!len) return;
  struct sockaddr_in6 src;
  socklen_t srclen = source_of(from, &src);
  aq_txent *last = q->nents > q->head ? &q->ents[q->nents - 1] : NULL;
  if (last && !(last->flags & (AQ_TX_SEALED | AQ_TX_PROBE)) && !(flags & AQ_TX_PROBE) &&
      last->owner == owner && len <= last->seg && last->nseg < maxsegs &&
      AQ_TX_ECN_OF(last->flags) == AQ_TX_ECN_OF(flags) &&
      last->len + len <= q->max_batch && last->off + last->len == q->used &&
      same_addr(last, &src, srclen, to, tolen)) {
    last->len += len;
    last->nseg++;
    if (len < last->seg || last->nseg >= maxsegs) last->flags |= AQ_TX_SEALED;
    q->used += len;
    return;
  }
  if (last) last->flags |= AQ_TX_SEALED;
  aq_txent *e = &q->ents[q->nents++];
  memcpy(&e->to, to, tolen);
  e->tolen = tolen;
  if (srclen) e->from = src;
  e->fromlen = srclen;
  e->owner = owner;
  e->off = q->used;
  e->len = e->seg = len;
  e->nseg = 1;
  e->flags = flags;
  if ((flags & AQ_TX_PROBE) || maxsegs <= 1) e->flags |= AQ_TX_SEALED;
  q->used += len;
}

int aq_txq_push(aq_txq *q, const struct sockaddr *from, const struct sockaddr *to,
                socklen_t tolen, uint64_t owner, const uint8_t *data, size_t len) {
  uint8_t *p = aq_txq_reserve(q, len);
  if (!p) return -1;
  memcpy(p, data, len);
  aq_txq_seal(q);
  aq_txq_commit(q, from, to, tolen, owner, len, AQ_TX_SEALED, 1);
  return 0;
}

void aq_txq_seal(aq_txq *q) {
  if (q->nents > q->head) q->ents[q->nents - 1].flags |= AQ_TX_SEALED;
}
