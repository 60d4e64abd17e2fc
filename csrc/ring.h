/*
 * ring.h - lock-free single-producer / single-consumer rings (C11 atomics).
 *
 * aq_ring: fixed-size records (commands, events).  aq_bytes: the per-stream TX byte ring, whose
 * consumer side has two cursors: "sent" (handed to the engine) and "acked" (released).
 * Producer and consumer indices are free-running 64-bit counters on separate cache lines.
 */
#ifndef AQ_RING_H
#define AQ_RING_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AQ_CACHELINE 64

typedef struct aq_ring {
  _Alignas(AQ_CACHELINE) _Atomic uint64_t head; /* producer writes */
  _Alignas(AQ_CACHELINE) _Atomic uint64_t tail; /* consumer writes */
  _Alignas(AQ_CACHELINE) uint64_t mask;
  size_t elem;
  unsigned char *slots;
} aq_ring;

static inline size_t aq_pow2(size_t n) {
  size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

static inline int aq_ring_init(aq_ring *r, size_t n, size_t elem) {
  n = aq_pow2(n < 2 ? 2 : n);
  r->slots = calloc(n, elem);
  if (!r->slots) return -1;
  r->mask = n - 1;
  r->elem = elem;
  atomic_store(&r->head, 0);
  atomic_store(&r->tail, 0);
  return 0;
}

static inline void aq_ring_destroy(aq_ring *r) {
  free(r->slots);
  r->slots = NULL;
}

/* producer */
static inline int aq_ring_push(aq_ring *r, const void *item) {
  uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
  if (h - t > r->mask) return -1;
  memcpy(r->slots + (h & r->mask) * r->elem, item, r->elem);
  atomic_store_explicit(&r->head, h + 1, memory_order_release);
  return 0;
}

static inline size_t aq_ring_free_slots(aq_ring *r) {
  uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
  return (size_t)(r->mask + 1 - (h - t));
}

/* consumer */
static inline int aq_ring_pop(aq_ring *r, void *item) {
  uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
  if (t == h) return -1;
  memcpy(item, r->slots + (t & r->mask) * r->elem, r->elem);
  atomic_store_explicit(&r->tail, t + 1, memory_order_release);
  return 0;
}

static inline int aq_ring_empty(aq_ring *r) {
  return atomic_load_explicit(&r->tail, memory_order_relaxed) ==
         atomic_load_explicit(&r->head, memory_order_acquire);
}

/*
 * Per-stream TX byte ring.  Python (producer) appends at `head`; the network thread hands
 * [sent, head) to ngtcp2 and advances `sent`; acknowledgements advance `acked`, which frees
 * space.  Bytes in [acked, head) are never overwritten, as ngtcp2 requires for retransmission.
 */
struct aq_txbuf {
  _Alignas(AQ_CACHELINE) _Atomic uint64_t head;   /* producer: bytes written */
  _Atomic uint64_t fin_at;                        /* producer: final size + 1 once FIN set; 0 */
  _Alignas(AQ_CACHELINE) _Atomic uint64_t acked;  /* consumer: bytes released */
  uint64_t sent;                                  /* consumer-private: bytes handed out */
  _Alignas(AQ_CACHELINE) _Atomic int notify;      /* a STREAM_DATA command is in flight */
  _Atomic int want_writable;                      /* producer waits for AQ_EV_WRITABLE */
  _Atomic int refs;
  int attached;                                   /* producer-private */
  uint64_t mask;
  uint8_t *data;
};

/*
 * Datagram send accounting of one connection, shared by Python (the producer: `submitted`)
 * and the network thread (`done`: bytes of datagrams sent or dropped).  Python refuses a
 * datagram while `submitted - done` would pass `limit` and sets `want`; the network thread
 * then emits AQ_EV_DGRAM_SPACE once at most half the limit is outstanding.  Each queued
 * datagram holds a reference, so the struct outlives the Python object that made it.
 */
struct aq_dgq {
  _Alignas(AQ_CACHELINE) _Atomic uint64_t submitted; /* producer */
  _Alignas(AQ_CACHELINE) _Atomic uint64_t done;      /* network thread */
  _Atomic int want;                                  /* producer waits for DGRAM_SPACE */
  _Atomic int refs;
  uint64_t limit;
};

#endif
