/*
 * engine_bench.c - what ngtcp2 1.11 + GnuTLS can do on this CPU, with no sockets.
 *
 * A client and a server connection live in one thread and hand each other packets through
 * memory.  The client sends one stream of N bytes; the server consumes it and returns credit.
 * The result is the ceiling the socket and Python layers of aiopquic are measured against:
 * both endpoints' packet work (encrypt, decrypt, framing, ACKs, loss recovery, congestion
 * control) runs on ONE core here.
 *
 * Build and run: benchmarks/engine/run.sh [MiB] [packet sizes...]
 */
#define _GNU_SOURCE 1
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aiopquic.h" /* aq_selfsigned, from the shim */

#define PATTERN (1u << 20)
#define MAXQ 4096

typedef struct pkt {
  size_t len;
  uint8_t data[65536];
} pkt;

typedef struct side {
  ngtcp2_conn *conn;
  gnutls_session_t tls;
  ngtcp2_crypto_conn_ref ref;
  int server;
  uint64_t received, sent_offset;
  int64_t sid;
  int done_handshake;
} side;

static uint8_t pattern[PATTERN];
static pkt *queue[2]; /* [0]: to server, [1]: to client */
static size_t qlen[2];
static uint64_t total_bytes;
static struct sockaddr_in addr_c, addr_s;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) { return ((side *)ref->user_data)->conn; }

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                      void *ud) {
  (void)conn;
  (void)ud;
  gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen);
  cid->datalen = cidlen;
  gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

static int recv_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t off,
                        const uint8_t *data, size_t len, void *ud, void *sud) {
  side *s = ud;
  (void)flags;
  (void)sud;
  if (len && data[0] != pattern[off % PATTERN]) {
    fprintf(stderr, "data mismatch at %llu\n", (unsigned long long)off);
    exit(1);
  }
  s->received += len;
  ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
  ngtcp2_conn_extend_max_offset(conn, len);
  return 0;
}

static int handshake_done_cb(ngtcp2_conn *conn, void *ud) {
  (void)conn;
  ((side *)ud)->done_handshake = 1;
  return 0;
}

static void callbacks(ngtcp2_callbacks *cb, int server) {
  memset(cb, 0, sizeof(*cb));
  if (server)
    cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  else {
    cb->client_initial = ngtcp2_crypto_client_initial_cb;
    cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->update_key = ngtcp2_crypto_update_key_cb;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb->rand = rand_cb;
  cb->get_new_connection_id = new_cid_cb;
  cb->recv_stream_data = recv_data_cb;
  cb->handshake_completed = handshake_done_cb;
}

static void settings(ngtcp2_settings *s, ngtcp2_transport_params *p, size_t maxpkt) {
  static const uint16_t ladder[] = {1454, 8972, 16384, 32768, 65000};
  ngtcp2_settings_default(s);
  s->initial_ts = now_ns();
  s->max_tx_udp_payload_size = maxpkt;
  size_t n = 0;
  while (n < 5 && ladder[n] <= maxpkt) n++;
  s->pmtud_probes = ladder;
  s->pmtud_probeslen = n;
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = p->initial_max_stream_data_bidi_remote =
      p->initial_max_stream_data_uni = 16u << 20;
  p->initial_max_data = 32u << 20;
  p->initial_max_streams_bidi = p->initial_max_streams_uni = 16;
  p->max_idle_timeout = 30 * NGTCP2_SECONDS;
}

static void tls(side *s, gnutls_certificate_credentials_t cred) {
  gnutls_init(&s->tls, s->server ? GNUTLS_SERVER : GNUTLS_CLIENT);
  if (s->server)
    ngtcp2_crypto_gnutls_configure_server_session(s->tls);
  else
    ngtcp2_crypto_gnutls_configure_client_session(s->tls);
  gnutls_priority_set_direct(
      s->tls, "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:%DISABLE_TLS13_COMPAT_MODE",
      NULL);
  s->ref.get_conn = get_conn;
  s->ref.user_data = s;
  gnutls_session_set_ptr(s->tls, &s->ref);
  gnutls_credentials_set(s->tls, GNUTLS_CRD_CERTIFICATE, cred);
  gnutls_datum_t alpn = {(unsigned char *)"bench", 5};
  gnutls_alpn_set_protocols(s->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  ngtcp2_conn_set_tls_native_handle(s->conn, s->tls);
}

static ngtcp2_path path_of(int server) {
  ngtcp2_path p = {{(ngtcp2_sockaddr *)(server ? &addr_s : &addr_c), sizeof(addr_c)},
                   {(ngtcp2_sockaddr *)(server ? &addr_c : &addr_s), sizeof(addr_c)},
                   NULL};
  return p;
}

/* Write everything the side wants to send into the peer's queue. */
static void pump_out(side *s, uint64_t ts) {
  int to = s->server ? 1 : 0;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  size_t room = ngtcp2_conn_get_max_tx_udp_payload_size(s->conn);
  while (qlen[to] < MAXQ) {
    ngtcp2_vec v;
    size_t nv = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
    int64_t sid = -1;
    if (!s->server && s->sid >= 0 && s->sent_offset < total_bytes) {
      size_t pos = (size_t)(s->sent_offset % PATTERN), len = PATTERN - pos;
      if (len > total_bytes - s->sent_offset) len = (size_t)(total_bytes - s->sent_offset);
      v.base = pattern + pos;
      v.len = len;
      nv = 1;
      sid = s->sid;
      if (s->sent_offset + len == total_bytes) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }
    ngtcp2_ssize datalen = -1;
    pkt *p = queue[to] + qlen[to];
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(s->conn, &ps.path, &pi, p->data, room, &datalen,
                                               flags, sid, nv ? &v : NULL, nv, ts);
    if (datalen > 0) s->sent_offset += (uint64_t)datalen;
    if (n == NGTCP2_ERR_WRITE_MORE) continue;
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
      /* flow control: write control frames / ACKs only */
      n = ngtcp2_conn_writev_stream(s->conn, &ps.path, &pi, p->data, room, NULL,
                                    NGTCP2_WRITE_STREAM_FLAG_NONE, -1, NULL, 0, ts);
    }
    if (n < 0) {
      fprintf(stderr, "write: %s\n", ngtcp2_strerror((int)n));
      exit(1);
    }
    if (n == 0) break;
    p->len = (size_t)n;
    qlen[to]++;
  }
  ngtcp2_conn_update_pkt_tx_time(s->conn, ts);
}

static void pump_in(side *s, uint64_t ts) {
  int from = s->server ? 0 : 1;
  ngtcp2_path path = path_of(s->server);
  ngtcp2_pkt_info pi = {0};
  for (size_t i = 0; i < qlen[from]; i++) {
    int rv = ngtcp2_conn_read_pkt(s->conn, &path, &pi, queue[from][i].data, queue[from][i].len,
                                  ts);
    if (rv != 0 && rv != NGTCP2_ERR_DISCARD_PKT) {
      fprintf(stderr, "read: %s\n", ngtcp2_strerror(rv));
      exit(1);
    }
  }
  qlen[from] = 0;
}

static double run(size_t maxpkt, gnutls_certificate_credentials_t scred,
                  gnutls_certificate_credentials_t ccred, size_t *pkts) {
  side c = {0}, s = {0};
  c.sid = -1;
  s.server = 1;
  ngtcp2_callbacks cb;
  ngtcp2_settings st;
  ngtcp2_transport_params tp;
  ngtcp2_cid dcid = {.datalen = 18}, scid = {.datalen = 18}, sscid = {.datalen = 18};
  gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, 18);
  gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, 18);
  gnutls_rnd(GNUTLS_RND_RANDOM, sscid.data, 18);
  callbacks(&cb, 0);
  settings(&st, &tp, maxpkt);
  ngtcp2_path cp = path_of(0);
  if (ngtcp2_conn_client_new(&c.conn, &dcid, &scid, &cp, NGTCP2_PROTO_VER_V1, &cb, &st, &tp,
                             NULL, &c) != 0)
    exit(1);
  tls(&c, ccred);
  uint64_t ts = now_ns();
  pump_out(&c, ts);
  /* the server is created from the client's first Initial */
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, queue[0][0].data, queue[0][0].len) != 0) exit(1);
  callbacks(&cb, 1);
  settings(&st, &tp, maxpkt);
  tp.original_dcid = hd.dcid;
  tp.original_dcid_present = 1;
  ngtcp2_path sp = path_of(1);
  if (ngtcp2_conn_server_new(&s.conn, &hd.scid, &sscid, &sp, hd.version, &cb, &st, &tp, NULL,
                             &s) != 0)
    exit(1);
  tls(&s, scred);
  uint64_t start = 0, rounds = 0;
  size_t npkts = 0;
  while (s.received < total_bytes) {
    ts = now_ns();
    npkts += qlen[0] + qlen[1];
    pump_in(&s, ts);
    pump_out(&s, ts);
    pump_in(&c, ts);
    if (c.done_handshake && c.sid < 0) {
      ngtcp2_conn_open_bidi_stream(c.conn, &c.sid, NULL);
      start = now_ns();
    }
    pump_out(&c, ts);
    uint64_t exp = ngtcp2_conn_get_expiry(c.conn);
    if (exp <= ts) ngtcp2_conn_handle_expiry(c.conn, ts);
    exp = ngtcp2_conn_get_expiry(s.conn);
    if (exp <= ts) ngtcp2_conn_handle_expiry(s.conn, ts);
    if (++rounds > 100000000) {
      fprintf(stderr, "no progress\n");
      exit(1);
    }
  }
  double secs = (double)(now_ns() - start) / 1e9;
  *pkts = npkts;
  ngtcp2_conn_del(c.conn);
  ngtcp2_conn_del(s.conn);
  gnutls_deinit(c.tls);
  gnutls_deinit(s.tls);
  qlen[0] = qlen[1] = 0;
  return secs;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 1024;
  total_bytes = (uint64_t)mib << 20;
  for (size_t i = 0; i < PATTERN; i++) pattern[i] = (uint8_t)(i * 2654435761u >> 13);
  queue[0] = malloc(sizeof(pkt) * MAXQ);
  queue[1] = malloc(sizeof(pkt) * MAXQ);
  addr_c.sin_family = addr_s.sin_family = AF_INET;
  addr_c.sin_port = htons(1111);
  addr_s.sin_port = htons(2222);
  addr_c.sin_addr.s_addr = addr_s.sin_addr.s_addr = htonl(0x7f000001);
  char cert[8192], key[8192], err[256];
  size_t cl = sizeof(cert), kl = sizeof(key);
  if (aq_selfsigned("localhost", 2, cert, &cl, key, &kl, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  gnutls_certificate_credentials_t scred, ccred;
  gnutls_certificate_allocate_credentials(&scred);
  gnutls_certificate_allocate_credentials(&ccred);
  gnutls_datum_t cd = {(unsigned char *)cert, (unsigned)cl}, kd = {(unsigned char *)key, (unsigned)kl};
  gnutls_certificate_set_x509_key_mem(scred, &cd, &kd, GNUTLS_X509_FMT_PEM);
  printf("engine-only (ngtcp2 %s + GnuTLS %s, one core runs both sides), %zu MiB per run\n",
         ngtcp2_version(0)->version_str, gnutls_check_version(NULL), mib);
  for (int a = 2; a < argc || a == 2; a++) {
    size_t maxpkt = argc > a ? (size_t)atoi(argv[a]) : 1452;
    size_t pkts = 0;
    double secs = run(maxpkt, scred, ccred, &pkts);
    printf("  max packet %5zu: %7.0f Mbps  (%.3f s, %zu packets both ways)\n", maxpkt,
           (double)total_bytes * 8 / secs / 1e6, secs, pkts);
  }
  gnutls_certificate_free_credentials(scred);
  gnutls_certificate_free_credentials(ccred);
  free(queue[0]);
  free(queue[1]);
  return 0;
}
