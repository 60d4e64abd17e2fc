/*
 * test_map.c - csrc/map.c on its own: SipHash-2-4 known answers and the map's behaviour
 * (put/get/overwrite/delete, growth, tombstone reuse, keys of every length 0..20, two maps
 * with different keys, a map created without a table).  Built and run by tests/test_map.py; exits non-zero on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint64_t aq_siphash24(const uint8_t key[16], const void *in, size_t len);

static uint64_t rng = 0x243f6a8885a308d3ULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* the map takes its SipHash key from here (endpoint.c's version asks GnuTLS) */
void aq_rand_bytes(uint8_t *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)next_rand();
}

static int failures;
#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                    \
    }                                                                \
  } while (0)

int main(void) {
  /* SipHash-2-4 reference vectors: key 00..0f, message 00..(n-1) */
  uint8_t key[16], msg[64];
  for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
  for (int i = 0; i < 64; i++) msg[i] = (uint8_t)i;
  CHECK(aq_siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
  CHECK(aq_siphash24(key, msg, 1) == 0x74f839c593dc67fdULL);
  CHECK(aq_siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL);
  CHECK(aq_siphash24(key, msg, 63) == 0x958a324ceb064572ULL);

  /* map behaviour */
  enum { N = 5000 };
  static uint8_t keys[N][20];
  static size_t lens[N];
  aq_map m;
  CHECK(aq_map_init(&m, 4) == 0);
  for (int i = 0; i < N; i++) {
    lens[i] = (size_t)(i % 21); /* 0..20 bytes */
    for (size_t j = 0; j < lens[i]; j++) keys[i][j] = (uint8_t)next_rand();
    if (lens[i] >= 4) memcpy(keys[i], &i, sizeof(i)); /* distinct */
  }
  /* short keys may repeat (len 0..3): the last put wins */
  for (int i = 0; i < N; i++) CHECK(aq_map_put(&m, keys[i], lens[i], &keys[i]) == 0);
  for (int i = 0; i < N; i++) {
    void *v = aq_map_get(&m, keys[i], lens[i]);
    CHECK(v != NULL);
    if (lens[i] >= 4) CHECK(v == &keys[i]);
  }
  uint8_t big[21] = {0};
  CHECK(aq_map_put(&m, big, 21, big) == -1); /* longer than a CID */
  /* delete every other long key, the rest stay */
  for (int i = 0; i < N; i++)
    if (lens[i] >= 4 && i % 2) aq_map_del(&m, keys[i], lens[i]);
  for (int i = 0; i < N; i++)
    if (lens[i] >= 4) CHECK(aq_map_get(&m, keys[i], lens[i]) == (i % 2 ? NULL : &keys[i]));
  /* churn: many put/delete cycles must not fill the table with tombstones */
  for (int r = 0; r < 200000; r++) {
    uint64_t k = next_rand();
    CHECK(aq_map_put(&m, &k, sizeof(k), &m) == 0);
    CHECK(aq_map_get(&m, &k, sizeof(k)) == &m);
    aq_map_del(&m, &k, sizeof(k));
    CHECK(aq_map_get(&m, &k, sizeof(k)) == NULL);
  }
  CHECK(m.cap < 64 * 1024);
  for (int i = 0; i < N; i++)
    if (lens[i] >= 4 && !(i % 2)) CHECK(aq_map_get(&m, keys[i], lens[i]) == &keys[i]);

  /* two maps draw different SipHash keys */
  aq_map m2;
  CHECK(aq_map_init(&m2, 16) == 0);
  CHECK(m.k0 != m2.k0 || m.k1 != m2.k1);
  aq_map_destroy(&m2);

  /* capacity 0: no table until the first put (what an idle connection's stream map is) */
  aq_map lazy;
  CHECK(aq_map_init(&lazy, 0) == 0);
  CHECK(lazy.slots == NULL && lazy.cap == 0);
  CHECK(aq_map_get(&lazy, keys[0], lens[0]) == NULL);
  aq_map_del(&lazy, keys[0], lens[0]);
  size_t nlazy = 0;
  for (int i = 0; i < 200; i++)
    if (lens[i] >= 4) { /* distinct keys */
      CHECK(aq_map_put(&lazy, keys[i], lens[i], &keys[i]) == 0);
      nlazy++;
    }
  CHECK(lazy.slots != NULL && lazy.used == nlazy && nlazy > 16);
  for (int i = 0; i < 200; i++)
    if (lens[i] >= 4) CHECK(aq_map_get(&lazy, keys[i], lens[i]) == &keys[i]);
  aq_map_destroy(&lazy);
  aq_map_destroy(&m);
  CHECK(aq_map_get(&m, keys[0], lens[0]) == NULL); /* destroyed map: empty, no crash */

  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("map ok\n");
  return 0;
}
