/*
 * map.c - open-addressing hash map keyed by short byte strings (CIDs, handles, stream ids).
 */
#include "internal.h"

static uint64_t hash_key(const uint8_t *k, size_t len) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
  for (size_t i = 0; i < len; i++) {
    h ^= k[i];
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 29;
  return h;
}

int aq_map_init(aq_map *m, size_t cap) {
  m->cap = aq_pow2(cap < 16 ? 16 : cap);
  m->slots = calloc(m->cap, sizeof(aq_map_slot));
  m->used = m->tombs = 0;
  return m->slots ? 0 : -1;
}

void aq_map_destroy(aq_map *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->used = m->tombs = 0;
}

static aq_map_slot *find(const aq_map *m, const void *key, size_t len) {
  size_t mask = m->cap - 1, i = (size_t)hash_key(key, len) & mask;
  for (size_t n = 0; n < m->cap; n++, i = (i + 1) & mask) {
    aq_map_slot *s = &m->slots[i];
    if (s->state == 0) return NULL;
    if (s->state == 1 && s->len == len && memcmp(s->key, key, len) == 0) return s;
  }
  return NULL;
}

void *aq_map_get(const aq_map *m, const void *key, size_t len) {
  aq_map_slot *s = find(m, key, len);
  return s ? s->val : NULL;
}

static int grow(aq_map *m, size_t newcap) {
  aq_map old = *m;
  if (aq_map_init(m, newcap) != 0) {
    *m = old;
    return -1;
  }
  for (size_t i = 0; i < old.cap; i++)
    if (old.slots[i].state == 1) aq_map_put(m, old.slots[i].key, old.slots[i].len, old.slots[i].val);
  free(old.slots);
  return 0;
}

int aq_map_put(aq_map *m, const void *key, size_t len, void *val) {
  if (len > NGTCP2_MAX_CIDLEN) return -1;
  aq_map_slot *s = find(m, key, len);
  if (s) {
    s->val = val;
    return 0;
  }
  if ((m->used + m->tombs + 1) * 4 > m->cap * 3) {
    if (grow(m, m->used * 2 + 16 > m->cap ? m->cap * 2 : m->cap) != 0) return -1;
  }
  size_t mask = m->cap - 1, i = (size_t)hash_key(key, len) & mask;
  for (;; i = (i + 1) & mask) {
    s = &m->slots[i];
    if (s->state != 1) {
      if (s->state == 2) m->tombs--;
      memcpy(s->key, key, len);
      s->len = (uint8_t)len;
      s->state = 1;
      s->val = val;
      m->used++;
      return 0;
    }
  }
}

void aq_map_del(aq_map *m, const void *key, size_t len) {
  aq_map_slot *s = find(m, key, len);
  if (!s) return;
  s->state = 2;
  s->val = NULL;
  m->used--;
  m->tombs++;
}
