/*
 * map.c - open-addressing hash map keyed by short byte strings (CIDs, handles, stream ids).
 *
 * Keys (connection IDs among them) may be chosen by the peer, so slots are found with
 * SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF") under a random
 * 128-bit key per map: without the key an attacker cannot make keys collide (hash flooding).
 */
#include "internal.h"

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3) \
  do {                           \
    v0 += v1;                    \
    v1 = ROTL64(v1, 13);         \
    v1 ^= v0;                    \
    v0 = ROTL64(v0, 32);         \
    v2 += v3;                    \
    v3 = ROTL64(v3, 16);         \
    v3 ^= v2;                    \
    v0 += v3;                    \
    v3 = ROTL64(v3, 21);         \
    v3 ^= v0;                    \
    v2 += v1;                    \
    v1 = ROTL64(v1, 17);         \
    v1 ^= v2;                    \
    v2 = ROTL64(v2, 32);         \
  } while (0)

static uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* SipHash-2-4: 2 compression rounds per 8-byte word, 4 finalization rounds. */
static uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len) {
  uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
  uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
  uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
  uint64_t v3 = k1 ^ 0x7465646279746573ULL;
  size_t whole = len - (len % 8);
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = load_le64(in + i);
    v3 ^= m;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
  }
  /* last word: the remaining 0..7 bytes, little-endian, with len mod 256 in the top byte */
  uint64_t b = (uint64_t)(len & 0xff) << 56;
  for (size_t i = 0; i < len % 8; i++) b |= (uint64_t)in[whole + i] << (8 * i);
  v3 ^= b;
  SIPROUND(v0, v1, v2, v3);
  SIPROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int r = 0; r < 4; r++) SIPROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

/* Exposed for the known-answer test (tests/test_map_c.py builds map.c on its own). */
uint64_t aq_siphash24(const uint8_t key[16], const void *in, size_t len);
uint64_t aq_siphash24(const uint8_t key[16], const void *in, size_t len) {
  return siphash24(load_le64(key), load_le64(key + 8), in, len);
}

static size_t slot_of(const aq_map *m, const void *key, size_t len) {
  return (size_t)siphash24(m->k0, m->k1, key, len) & (m->cap - 1);
}

static int alloc_slots(aq_map *m, size_t cap) {
  m->cap = aq_pow2(cap < 16 ? 16 : cap);
  m->slots = calloc(m->cap, sizeof(aq_map_slot));
  m->used = m->tombs = 0;
  return m->slots ? 0 : -1;
}

int aq_map_init(aq_map *m, size_t cap) {
  uint8_t k[16];
  aq_rand_bytes(k, sizeof(k));
  m->k0 = load_le64(k);
  m->k1 = load_le64(k + 8);
  if (!cap) { /* no table until the first put: an idle connection holds no stream */
    m->slots = NULL;
    m->cap = m->used = m->tombs = 0;
    return 0;
  }
  return alloc_slots(m, cap);
}

void aq_map_destroy(aq_map *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->used = m->tombs = 0;
}

static aq_map_slot *find(const aq_map *m, const void *key, size_t len) {
  if (!m->slots) return NULL;
  size_t mask = m->cap - 1, i = slot_of(m, key, len);
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

/* Rehash into a new table (same SipHash key); tombstones are dropped. */
static int grow(aq_map *m, size_t newcap) {
  aq_map old = *m;
  if (alloc_slots(m, newcap) != 0) {
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
  size_t mask = m->cap - 1, i = slot_of(m, key, len);
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
