/*
 * sched.c - which connections need the network thread's attention.
 *
 * A min-heap of connections by their expiry (c->sched_at, copied from c->expiry) arms the
 * endpoint's timerfd, and a FIFO of "dirty" connections (a packet arrived, Python sent a
 * command, a timer fired) is all the write pass looks at: an idle connection costs nothing
 * per loop iteration, however many there are.
 */
#include "internal.h"

static int before(const aq_conn *a, const aq_conn *b) { return a->sched_at < b->sched_at; }

static void heap_set(struct aq_endpoint *ep, size_t i, aq_conn *c) {
  ep->heap[i] = c;
  c->heap_idx = i + 1;
}

static void sift_up(struct aq_endpoint *ep, size_t i) {
  aq_conn *c = ep->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(c, ep->heap[parent])) break;
    heap_set(ep, i, ep->heap[parent]);
    i = parent;
  }
  heap_set(ep, i, c);
}

static void sift_down(struct aq_endpoint *ep, size_t i) {
  aq_conn *c = ep->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const aq_conn *best = c;
    if (l < ep->heap_len && before(ep->heap[l], best)) {
      m = l;
      best = ep->heap[l];
    }
    if (r < ep->heap_len && before(ep->heap[r], best)) m = r;
    if (m == i) break;
    heap_set(ep, i, ep->heap[m]);
    i = m;
  }
  heap_set(ep, i, c);
}

static void heap_remove(aq_conn *c) {
  struct aq_endpoint *ep = c->ep;
  if (c->heap_idx) {
    size_t i = c->heap_idx - 1;
    c->heap_idx = 0;
    aq_conn *last = ep->heap[--ep->heap_len];
    if (last != c) {
      heap_set(ep, i, last);
      sift_up(ep, i);
      sift_down(ep, last->heap_idx - 1);
    }
  }
}

void aq_sched_remove(aq_conn *c) {
  struct aq_endpoint *ep = c->ep;
  heap_remove(c);
  if (c->dirty) {
    aq_conn **pp = &ep->dirty_head;
    while (*pp && *pp != c) pp = &(*pp)->next_dirty;
    if (*pp) *pp = c->next_dirty;
    if (ep->dirty_tail == c) {
      ep->dirty_tail = ep->dirty_head;
      while (ep->dirty_tail && ep->dirty_tail->next_dirty)
        ep->dirty_tail = ep->dirty_tail->next_dirty;
    }
    c->dirty = 0;
    c->next_dirty = NULL;
  }
}

void aq_sched_expiry(aq_conn *c, ngtcp2_tstamp t) {
  struct aq_endpoint *ep = c->ep;
  c->sched_at = t;
  if (t == UINT64_MAX) { /* no timer: leave the heap (the dirty list is not touched) */
    heap_remove(c);
    return;
  }
  if (!c->heap_idx) {
    if (ep->heap_len == ep->heap_cap) {
      size_t cap = ep->heap_cap ? ep->heap_cap * 2 : 64;
      aq_conn **n = realloc(ep->heap, cap * sizeof(*n));
      if (!n) return; /* out of memory: the connection's timer is lost, idle timeout too */
      ep->heap = n;
      ep->heap_cap = cap;
    }
    heap_set(ep, ep->heap_len++, c);
  }
  size_t i = c->heap_idx - 1;
  sift_up(ep, i);
  sift_down(ep, c->heap_idx - 1);
}

void aq_sched_dirty(aq_conn *c) {
  struct aq_endpoint *ep = c->ep;
  if (c->dirty) return;
  c->dirty = 1;
  c->next_dirty = NULL;
  if (ep->dirty_tail)
    ep->dirty_tail->next_dirty = c;
  else
    ep->dirty_head = c;
  ep->dirty_tail = c;
}

aq_conn *aq_sched_top(struct aq_endpoint *ep) { return ep->heap_len ? ep->heap[0] : NULL; }
