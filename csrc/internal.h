/*
 * internal.h - structures shared by the shim's C files (never read by cffi).
 */
#ifndef AQ_INTERNAL_H
#define AQ_INTERNAL_H

#define _GNU_SOURCE 1
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

#include "aiopquic.h"
#include "io.h"
#include "ring.h"

/* ---- hash map: keys of up to 20 bytes (connection IDs, 8-byte handles/stream ids) ---- */
typedef struct aq_map_slot {
  uint8_t key[NGTCP2_MAX_CIDLEN];
  uint8_t len;
  uint8_t state; /* 0 empty, 1 used, 2 deleted */
  void *val;
} aq_map_slot;

/* Slots are found by SipHash-2-4 of the key under a random 128-bit key drawn per map
 * (aq_map_init), so peers who choose connection IDs cannot predict collisions. */
typedef struct aq_map {
  aq_map_slot *slots;
  size_t cap, used, tombs;
  uint64_t k0, k1; /* SipHash key */
} aq_map;

int aq_map_init(aq_map *m, size_t cap); /* cap 0: the table is allocated by the first put */
void aq_map_destroy(aq_map *m);
void *aq_map_get(const aq_map *m, const void *key, size_t len);
int aq_map_put(aq_map *m, const void *key, size_t len, void *val);
void aq_map_del(aq_map *m, const void *key, size_t len);

/* ---- commands (Python -> network thread) ---- */
enum {
  AQ_CMD_STREAM_DATA = 1, /* stream has new bytes / FIN; ptr = txbuf on first use */
  AQ_CMD_STREAM_RESET,
  AQ_CMD_STREAM_STOP,
  AQ_CMD_STREAM_CONSUMED,
  AQ_CMD_DATAGRAM, /* ptr = aq_dgram */
  AQ_CMD_PING,
  AQ_CMD_CLOSE, /* ptr = reason (malloc'd), len */
  AQ_CMD_KEY_UPDATE,
  AQ_CMD_STATS,
  AQ_CMD_PRIORITY, /* stream_id (-1: the connection's default for new streams), code = 0..255 */
  AQ_CMD_MIGRATE, /* client: code = the local port to move to (0: any) */
  AQ_CMD_CONNECT, /* shared client endpoint: conn = the new handle; ptr = aq_connreq */
  AQ_CMD_STOP
};

typedef struct aq_cmd {
  uint32_t type;
  uint32_t flags;
  uint64_t conn;
  int64_t stream_id;
  uint64_t code;
  uint64_t code2;
  void *ptr;
  size_t len;
} aq_cmd;

typedef struct aq_connreq { /* AQ_CMD_CONNECT */
  struct sockaddr_storage remote;
  socklen_t remotelen;
  char server_name[]; /* NUL-terminated, may be empty */
} aq_connreq;

typedef struct aq_dgram {
  struct aq_dgram *next;
  aq_dgq *q; /* the sender's accounting (holds a reference), or NULL */
  size_t len;
  uint8_t data[];
} aq_dgram;

typedef struct aq_evnode {
  struct aq_evnode *next;
  aq_event ev;
} aq_evnode;

/* ---- streams ---- */
typedef struct aq_stream {
  int64_t id;
  aq_txbuf *tx;
  struct aq_stream *next_active;
  struct aq_stream *next_dirty;
  uint8_t *rx;
  size_t rxlen, rxcap;
  uint64_t rx_total; /* bytes received on this stream so far */
  /* receive window tuning (rx_window_grow): the window the peer has (credit beyond what the
   * reader consumed; 0: not yet set), what the reader consumed, where the rate measurement
   * started (rx_mark_ts, rx_mark) and the last quarter-window step (rx_step_ts, rx_step) */
  uint64_t rx_window, rx_consumed, rx_mark, rx_mark_ts, rx_step, rx_step_ts;
  uint64_t reset_code; /* the code of our RESET_STREAM (local_reset) */
  uint8_t prio; /* lower is served first; odd: FIFO by stream id, even: round robin */
  unsigned active : 1, dirty : 1, rx_fin : 1, fin_sent : 1, shut_wr : 1, blocked : 1,
      stop_reported : 1, in_engine : 1, reset_reported : 1, local_reset : 1;
} aq_stream;

/* Active streams of one priority (a connection keeps them sorted by priority). */
typedef struct aq_bucket {
  uint8_t prio;
  aq_stream *head, *tail;
  struct aq_bucket *next;
} aq_bucket;

typedef struct aq_pingreq {
  struct aq_pingreq *next;
  uint64_t uid;
  int sent;    /* written in packet `pkn` */
  int64_t pkn;
  int acked;   /* that packet was acknowledged */
} aq_pingreq;

enum { AQ_ST_HANDSHAKE, AQ_ST_OPEN, AQ_ST_CLOSING, AQ_ST_DRAINING, AQ_ST_DEAD };

struct aq_conn;

/* ---- event sink (events.c): event ring to Python with an unbounded-in-count overflow list
 * that never drops stream events; while it is in use the driver stops reading packets ---- */
typedef struct aq_sink {
  aq_ring ring;
  aq_evnode *ovf_head, *ovf_tail;
  int pushed;          /* events pushed since the last wake */
  _Atomic int blocked; /* events wait in the overflow list */
  int efd;             /* eventfd Python waits on */
} aq_sink;

int aq_sink_init(aq_sink *k, uint32_t size, int with_fd); /* with_fd: an eventfd to wake on */
void aq_sink_destroy(aq_sink *k);
void aq_sink_emit(aq_sink *k, const aq_event *ev);
void aq_sink_emit_simple(aq_sink *k, uint32_t type, uint64_t conn, int64_t sid, uint64_t code,
                         uint64_t code2, uint32_t flags, const void *data, size_t len);
void aq_sink_flush(aq_sink *k); /* move overflow into the ring; clears blocked when done */
void aq_sink_wake(aq_sink *k);  /* one eventfd write per batch of events */

/* ---- admit.c: which client Initials become connections (Retry, caps, per-source rate) ---- */
uint64_t aq_siphash24(const uint8_t key[16], const void *in, size_t len);

struct aq_src_bucket;
typedef struct aq_admit {
  const uint8_t *secret; /* 32 bytes, keys Retry and NEW_TOKEN tokens (the aq_ctx's) */
  uint8_t sipkey[16];
  int mode;
  size_t max_half_open, retry_threshold;
  double rate, burst;
  struct aq_src_bucket *buckets; /* NULL: no per-source limit */
  _Atomic uint64_t retries, tokens_ok, tokens_bad, dropped_full, rate_limited;
} aq_admit;

/* How an accepted Initial proved its address (all zero: it did not). */
typedef struct aq_validation {
  int retried;          /* came back with our Retry token: odcid is the first Initial's DCID */
  int token_type;       /* ngtcp2_token_type */
  ngtcp2_cid odcid;
} aq_validation;

enum { AQ_ADMIT_ACCEPT, AQ_ADMIT_RETRY, AQ_ADMIT_CLOSE, AQ_ADMIT_DROP };

int aq_admit_init(aq_admit *a, const aq_config *cfg, const uint8_t secret[32]);
void aq_admit_free(aq_admit *a);
/* ACCEPT (v filled), RETRY or CLOSE (a packet of *outlen bytes in out, to send back to
 * `from`), or DROP. */
int aq_admit_initial(aq_admit *a, const ngtcp2_pkt_hd *hd, const struct sockaddr *from,
                     socklen_t fromlen, size_t half_open, size_t cidlen, ngtcp2_tstamp now,
                     aq_validation *v, uint8_t *out, size_t outcap, size_t *outlen);

/* ---- what every connection of one driver shares; connections only read it, except
 * through the two CID hooks, which is how a connection tells its driver about routing ---- */
typedef struct aq_ctx {
  aq_config cfg;
  uint8_t *alpn; /* owned copy of cfg.alpn */
  size_t alpn_len;
  gnutls_certificate_credentials_t cred;
  int cred_borrowed; /* cred belongs to an aq_creds the caller frees, not to this driver */
  gnutls_priority_t prio; /* every session's priority (versions, ciphers), parsed once */
  uint8_t reset_secret[32];
  uint8_t token_secret[32]; /* keys Retry and NEW_TOKEN tokens (admit.c, conn.c) */
  uint8_t *token;           /* client: owned copy of cfg.token */
  aq_sink *sink;
  void *driver;
  int (*cid_added)(void *driver, struct aq_conn *c, const ngtcp2_cid *cid);
  void (*cid_removed)(void *driver, struct aq_conn *c, const ngtcp2_cid *cid);
  int quiet;             /* stopping: no more CLOSED events */
  size_t cid_len;        /* length of the connection IDs we issue (cfg.cid_len or 18) */
  uint64_t ack_floor_ns; /* AIOPQUIC_ACK_FLOOR_US */
  uint64_t stream_window_start; /* AIOPQUIC_STREAM_WINDOW_START: first stream window (0: max) */
  uint32_t test_loss_ppm; /* AIOPQUIC_TEST_LOSS_PPM: drop this share of sent packets */
  uint64_t test_rng;
  /* stream priority commands applied / refused (the stream is gone or never opened) */
  _Atomic uint64_t prio_applied, prio_rejected;
  /* tls.c, resumption.  Client: the owned ticket and views into it */
  uint8_t *ticket;
  size_t ticket_len;
  const uint8_t *ticket_tls, *ticket_tp;
  size_t ticket_tls_len, ticket_tp_len;
  uint32_t ticket_early; /* max_early_data of the ticket */
  /* server: the key that encrypts this context's tickets, and 0-RTT anti-replay (GnuTLS
   * checks the ticket age; the map remembers ClientHellos seen inside the window) */
  gnutls_datum_t ticket_key;
  gnutls_anti_replay_t anti_replay;
  aq_map replay;
  uint8_t replay_sipkey[16];
  size_t replay_sweep_at;
} aq_ctx;

typedef struct aq_stopreq {
  int64_t sid;
  uint64_t code;
} aq_stopreq;

typedef struct aq_conn {
  aq_ctx *ctx;
  uint64_t handle;
  ngtcp2_conn *conn;
  gnutls_session_t tls;
  char *server_name; /* owned: GnuTLS keeps the pointer for verification */
  ngtcp2_crypto_conn_ref cref;
  int state;
  int accepted_emitted;
  int alpn_missing; /* server: the client offered no protocol we accept */
  int early_attempted; /* client: a ticket allowing 0-RTT was set before the handshake */
  int tls_done;        /* the TLS session has nothing left to do (server: handshake and
                        * ticket sent; client: a ticket received): freed after this read */
  /* client: the versions of a Version Negotiation packet (aq_conn_read restarts in one) */
  uint32_t vn_offered[16];
  size_t vn_noffered;
  int vn_restarted;
  /* engine log lines waiting for AQ_EV_ENGINE_LOG (aq_config.engine_log) */
  char *log_buf;
  size_t log_len, log_cap;
  uint64_t log_dropped;
  aq_map streams;
  aq_bucket *buckets;   /* streams with data to send, by priority */
  uint8_t default_prio; /* for streams created from now on */
  aq_stream *dirty_head, *dirty_tail; /* streams holding received data, in arrival order */
  aq_dgram *dg_head, *dg_tail;
  size_t dg_queued;     /* bytes in the datagram queue */
  uint64_t dg_dropped;  /* datagrams dropped: queue overflow, too large for the path */
  int dg_first;         /* the next packet starts with datagrams (streams and datagrams alternate) */
  aq_pingreq *pings;
  int ping_pending;       /* bit 1: a PING must be written; bit 2: retry opening local streams */
  int64_t last_tx_pkn;    /* packet number of the last 1-RTT packet we encrypted */
  int64_t max_acked_pkn;  /* largest packet number the peer acknowledged (1-RTT) */
  int ack_progress;       /* max_acked_pkn moved during this read */
  int64_t next_local_bidi, next_local_uni; /* next stream ids to open in the engine */
  /* packet size: ngtcp2's PMTUD finds the path's size; cap (when nonzero) keeps packets
   * smaller after EMSGSIZE or a black hole, and is raised again step by step */
  size_t cap;
  size_t cap_failed;          /* smallest size seen failing (EMSGSIZE / black hole) */
  ngtcp2_tstamp cap_raise_at; /* when to try the next larger size */
  ngtcp2_tstamp cap_retry_at; /* when the size that failed may be tried again */
  ngtcp2_tstamp cap_step_ts;  /* when the cap last changed */
  ngtcp2_duration cap_backoff;
  ngtcp2_tstamp last_ack_ts;  /* last time the peer acknowledged something new */
  size_t last_maxpkt;         /* packet size last reported to Python */
  uint64_t emsgsize, blackholes;
  uint64_t ecn_sent;  /* packets sent marked ECT(0)/ECT(1) (ngtcp2 decides, per path) */
  uint64_t ecn_rx[4]; /* packets received per ECN codepoint: not-ECT, ECT(1), ECT(0), CE */
  ngtcp2_tstamp refused_since; /* first ICMP refusal since the peer was last heard (0: none) */
  /* graceful close requested by Python: sent when every stream's data is acknowledged */
  int close_pending;
  uint64_t close_code, close_ft;
  int close_app;
  uint8_t *close_reason;
  size_t close_reason_len;
  ngtcp2_tstamp close_deadline; /* give up waiting for ACKs / end of closing period */
  uint8_t *close_pkt;
  size_t close_pktlen;
  uint64_t close_rx; /* packets received while closing (the close is resent at powers of 2) */
  /* STOP_SENDING frames seen by the frame scanner, reported after read_pkt */
  aq_stopreq *stops;
  int nstops, capstops;
  int64_t stop_seen[8]; /* stream id + 1 of STOP_SENDING already reported */
  unsigned stop_seen_next;
  /* connection IDs registered in the driver's table */
  ngtcp2_cid *cids;
  int ncids, capcids;
  uint64_t pkts_sent, pkts_recv, bytes_sent, bytes_recv;
  /* what the driver reads after each call (sans-IO outputs besides packets and events) */
  int want_write;       /* something may be written now */
  ngtcp2_tstamp expiry; /* when aq_conn_on_expiry must run (UINT64_MAX: never) */
  /* driver bookkeeping (endpoint.c / sched.c) */
  struct aq_endpoint *ep;
  size_t heap_idx;             /* position in the endpoint's timer heap + 1; 0 = absent */
  ngtcp2_tstamp sched_at;      /* the heap's key (UINT64_MAX = not in the heap) */
  int half_counted;            /* counted in the endpoint's half_open */
  ngtcp2_tstamp read_ts;       /* `now` of the aq_conn_read in progress */
  int dirty;                   /* on the endpoint's write list */
  struct aq_conn *next_dirty;
  int touched;                 /* on the endpoint's touched list */
  struct aq_conn *next_touched; /* conns that read packets in this batch */
  struct aq_conn *next, *prev;
} aq_conn;

/* A queued datagram leaves (sent, dropped or discarded): account it and free it.  `c` may
 * be NULL (a discarded command): then no AQ_EV_DGRAM_SPACE is emitted. */
void aq_dgram_finish(aq_conn *c, aq_dgram *d);

/* ---- endpoint (the threaded driver) ---- */

struct aq_endpoint {
  aq_ctx ctx;
  aq_io io;
  aq_sink sink;
  aq_txq txq;
  int epfd, timerfd, cmd_efd;
  pthread_t thread;
  int started;
  aq_ring cmds;
  _Atomic int net_sleeping;
  _Atomic int cmd_waiter; /* Python saw a full command ring */
  int reading;            /* EPOLLIN is armed */
  int want_out;           /* EPOLLOUT is armed (the transmit queue waits for room) */
  aq_map by_cid, by_handle;
  aq_conn *conns;
  aq_conn *touched;
  aq_conn **heap; /* timers: min-heap by expiry */
  size_t heap_len, heap_cap;
  aq_conn *dirty_head, *dirty_tail; /* connections to write */
  int reap_pending;                 /* some connection is AQ_ST_DEAD */
  uint64_t next_handle;
  _Atomic size_t half_open; /* server connections still in the handshake */
  aq_admit admit;   /* server: which Initials become connections */
  ngtcp2_tstamp armed; /* timerfd deadline (0 = disarmed) */
  uint8_t *rxmem;
  int stopping;
  uint64_t spin_ns; /* poll this long for work before sleeping */
  int error_reported; /* AQ_EV_ERROR sent for a send failure (once per endpoint) */
  /* token bucket for packets sent to unknown peers (stateless resets, version negotiation):
   * AQ_STATELESS_RATE per second, bursts of up to AQ_STATELESS_BURST */
  double stateless_tokens;
  ngtcp2_tstamp stateless_ts; /* last refill (0: never; the bucket starts full) */
  _Atomic uint64_t stateless_dropped; /* answers suppressed by the limit */
  _Atomic uint64_t stray; /* short-header packets for no connection here */
  /* the synchronous sans-IO driver (sansio.c): no socket, no thread, one connection; the
   * caller's thread applies commands at once and passes the time in */
  int sansio;
  ngtcp2_tstamp sio_now;   /* time of the last call (commands run at this time) */
  ngtcp2_tstamp sio_floor; /* the next call's time is at least this (strictly increasing) */
  ngtcp2_cid sio_scid;     /* server: the connection ID chosen before the first Initial */
  int sio_cid_events;      /* report CIDs issued / retired as events (after creation) */
  size_t sio_handed;       /* transmit queue entries the caller has taken */
  struct sockaddr_in6 sio_local; /* placeholder local address of the path */
};

/* sansio.c: the synchronous driver's hook into push_cmd (endpoint.c) */
void aq_sansio_command(struct aq_endpoint *ep, const aq_cmd *cmd);
/* endpoint.c, shared with sansio.c */
void aq_ep_follow(struct aq_endpoint *ep, aq_conn *c);
void aq_ep_link(struct aq_endpoint *ep, aq_conn *c);

/* endpoint.c */
ngtcp2_tstamp aq_now(void);
void aq_rand_bytes(uint8_t *dst, size_t n);

/* sched.c */
void aq_sched_dirty(aq_conn *c);
void aq_sched_expiry(aq_conn *c, ngtcp2_tstamp t);
void aq_sched_remove(aq_conn *c);
aq_conn *aq_sched_top(struct aq_endpoint *ep);

/* conn.c: one connection, sans-IO.  Every call may emit events (ctx->sink), change
 * c->want_write / c->expiry / c->state, and (write, on_expiry, read) queue packets in q. */
/* Fill a connection ID we issue: random, or QUIC-LB plaintext when ctx->cfg.lb_sid_len;
 * with workers, the byte at aq_worker_byte() is congruent to our worker number. */
void aq_fill_cid(const aq_ctx *ctx, uint8_t *cid, size_t len);
/* The configured QUIC versions the engine speaks, in the configured order (reserved ones,
 * which only force Version Negotiation, left out); 0 when none are configured. */
size_t aq_spoken_versions(const aq_config *cfg, uint32_t out[4]);
size_t aq_worker_byte(const aq_config *cfg);
/* dcid/scid: NULL for random ones of ctx->cid_len bytes (the Initial DCID at least 8). */
aq_conn *aq_conn_new_client(aq_ctx *ctx, uint64_t handle, const struct sockaddr *local,
                            socklen_t locallen, const struct sockaddr *remote,
                            socklen_t remotelen, const char *server_name,
                            const ngtcp2_cid *dcid, const ngtcp2_cid *scid, ngtcp2_tstamp now,
                            char *err, size_t errlen);
aq_conn *aq_conn_accept(aq_ctx *ctx, uint64_t handle, const ngtcp2_path *path,
                        const ngtcp2_pkt_hd *hd, const aq_validation *v,
                        const ngtcp2_cid *scid, ngtcp2_tstamp now);
/* The accept path of the sans-IO driver (which has no admission step): a new server
 * connection for a valid client Initial, or NULL (drop the datagram).  scid NULL: a random
 * one. */
aq_conn *aq_conn_accept_packet(aq_ctx *ctx, uint64_t handle, const ngtcp2_path *path,
                               const uint8_t *data, size_t len, const ngtcp2_cid *scid,
                               ngtcp2_tstamp now);
void aq_conn_read(aq_conn *c, const ngtcp2_path *path, const uint8_t *data, size_t len,
                  uint32_t ecn, ngtcp2_tstamp now, aq_txq *q);
void aq_conn_after_read(aq_conn *c, ngtcp2_tstamp now);
/* Returns 1 when q ran out of room (flush it and call again), else 0. */
int aq_conn_write(aq_conn *c, ngtcp2_tstamp now, aq_txq *q);
void aq_conn_on_expiry(aq_conn *c, ngtcp2_tstamp now, aq_txq *q);
void aq_conn_command(aq_conn *c, const aq_cmd *cmd, ngtcp2_tstamp now, aq_txq *q);
/* A packet of this connection was refused by the network (aq_txfail). */
void aq_conn_send_failed(aq_conn *c, const aq_txfail *f, ngtcp2_tstamp now);
void aq_conn_refused(aq_conn *c, int err, ngtcp2_tstamp now);
void aq_conn_fail(aq_conn *c, uint32_t flags, uint64_t code, const char *reason);
void aq_conn_free(aq_conn *c);
void aq_conn_shutdown(aq_conn *c, ngtcp2_tstamp now, aq_txq *q);
void aq_conn_discard_cmd(const aq_cmd *cmd);
void aq_txbuf_decref(aq_txbuf *tx);

/* tls.c */
int aq_tls_load(aq_ctx *ctx, char *err, size_t errlen);
/* The two halves of aq_tls_load: the certificate credentials (what sans-IO connections of
 * one configuration share), and the tickets (server: key and anti-replay; client: the
 * ticket to resume with). */
int aq_tls_load_cred(aq_ctx *ctx, char *err, size_t errlen);
int aq_tls_load_tickets(aq_ctx *ctx, char *err, size_t errlen);
/* The negotiated TLS 1.3 cipher suite's code point (0x1301..0x1304; 0 before it is known). */
unsigned aq_tls_cipher_suite(aq_conn *c);
void aq_tls_unload(aq_ctx *ctx); /* frees what aq_tls_load made (also after it failed) */
/* client, after the ngtcp2 connection and the TLS session exist: apply ctx's ticket */
int aq_tls_apply_ticket(aq_conn *c, char *err, size_t errlen);
/* AQ_HS_* flags for the handshake-done event */
uint32_t aq_tls_handshake_flags(aq_conn *c);
int aq_tls_session_new(aq_conn *c, const char *server_name, char *err, size_t errlen);
void aq_tls_describe_failure(aq_conn *c, char *buf, size_t len);

#define AQ_ERR(err, errlen, ...)                                   \
  do {                                                             \
    if ((err) && (errlen)) snprintf((err), (errlen), __VA_ARGS__); \
  } while (0)

#endif
