/*
 * events.c - event output to Python: the SPSC event ring, the overflow list used while the
 * ring is full (stream events are never dropped; the driver stops reading packets until
 * Python catches up), and the coalesced eventfd wake-up.
 */
#include "internal.h"

#include <sys/eventfd.h>
#include <unistd.h>

int aq_sink_init(aq_sink *k, uint32_t size, int with_fd) {
  memset(k, 0, sizeof(*k));
  k->efd = -1;
  if (with_fd) {
    k->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (k->efd < 0) return -1;
  }
  if (aq_ring_init(&k->ring, size ? size : 4096, sizeof(aq_event)) != 0) return -1;
  return 0;
}

void aq_sink_destroy(aq_sink *k) {
  if (k->ring.slots) {
    aq_event ev;
    while (aq_ring_pop(&k->ring, &ev) == 0) free(ev.data);
  }
  while (k->ovf_head) {
    aq_evnode *n = k->ovf_head;
    k->ovf_head = n->next;
    free(n->ev.data);
    free(n);
  }
  k->ovf_tail = NULL;
  aq_ring_destroy(&k->ring);
  if (k->efd >= 0) close(k->efd);
  k->efd = -1;
}

void aq_sink_emit(aq_sink *k, const aq_event *ev) {
  k->pushed++;
  if (!k->ovf_head && aq_ring_push(&k->ring, ev) == 0) return;
  aq_evnode *n = malloc(sizeof(*n));
  if (!n) { /* out of memory: the event is lost, free its payload */
    free(ev->data);
    return;
  }
  n->next = NULL;
  n->ev = *ev;
  if (k->ovf_tail)
    k->ovf_tail->next = n;
  else
    k->ovf_head = n;
  k->ovf_tail = n;
  atomic_store(&k->blocked, 1);
}

void aq_sink_emit_simple(aq_sink *k, uint32_t type, uint64_t conn, int64_t sid, uint64_t code,
                         uint64_t code2, uint32_t flags, const void *data, size_t len) {
  aq_event ev = {type, flags, conn, sid, code, code2, NULL, len};
  if (data && len) {
    ev.data = malloc(len);
    if (!ev.data) return;
    memcpy(ev.data, data, len);
  } else {
    ev.len = 0;
  }
  aq_sink_emit(k, &ev);
}

void aq_sink_flush(aq_sink *k) {
  while (k->ovf_head && aq_ring_push(&k->ring, &k->ovf_head->ev) == 0) {
    aq_evnode *n = k->ovf_head;
    k->ovf_head = n->next;
    free(n);
    k->pushed++;
  }
  if (!k->ovf_head) {
    k->ovf_tail = NULL;
    if (atomic_load(&k->blocked)) atomic_store(&k->blocked, 0);
  }
}

void aq_sink_wake(aq_sink *k) {
  if (!k->pushed || k->efd < 0) return;
  k->pushed = 0;
  uint64_t one = 1;
  ssize_t r = write(k->efd, &one, sizeof(one));
  (void)r;
}
