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
#include "ring.h"

/* ---- hash map: keys of up to 20 bytes (connection IDs, 8-byte handles/stream ids) ---- */
typedef struct aq_map_slot {
  uint8_t key[NGTCP2_MAX_CIDLEN];
  uint8_t len;
  uint8_t state; /* 0 empty, 1 used, 2 deleted */
  void *val;
} aq_map_slot;

typedef struct aq_map {
  aq_map_slot *slots;
  size_t cap, used, tombs;
} aq_map;

int aq_map_init(aq_map *m, size_t cap);
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

typedef struct aq_dgram {
  struct aq_dgram *next;
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
  unsigned active : 1, dirty : 1, rx_fin : 1, fin_sent : 1, shut_wr : 1, blocked : 1,
      stop_reported : 1, in_engine : 1, reset_reported : 1;
} aq_stream;

typedef struct aq_pingreq {
  struct aq_pingreq *next;
  uint64_t uid;
  int64_t after_pkn; /* ack must cover a packet number above this */
} aq_pingreq;

enum { AQ_ST_HANDSHAKE, AQ_ST_OPEN, AQ_ST_CLOSING, AQ_ST_DRAINING, AQ_ST_DEAD };

typedef struct aq_conn {
  struct aq_endpoint *ep;
  uint64_t handle;
  ngtcp2_conn *conn;
  gnutls_session_t tls;
  char *server_name; /* owned: GnuTLS keeps the pointer for verification */
  ngtcp2_crypto_conn_ref cref;
  ngtcp2_path_storage ps;
  int state;
  int accepted_emitted;
  aq_map streams;
  aq_stream *active_head, *active_tail;
  aq_stream *dirty_head;
  aq_dgram *dg_head, *dg_tail;
  size_t dg_queued;     /* bytes in the datagram queue */
  uint64_t dg_dropped;  /* datagrams dropped: queue overflow, too large for a packet */
  aq_pingreq *pings;
  int ping_pending;       /* a PING must be forced into the next packet */
  int64_t last_tx_pkn;    /* largest packet number written (from our encrypt wrapper) */
  int64_t max_acked_pkn;  /* largest acknowledged packet number seen in ACK frames */
  int64_t next_local_bidi, next_local_uni; /* next stream ids to open in the engine */
  /* graceful close requested by Python: sent when every stream's data is acknowledged */
  int close_pending;
  uint64_t close_code, close_ft;
  int close_app;
  uint8_t *close_reason;
  size_t close_reason_len;
  ngtcp2_tstamp close_deadline; /* give up waiting for ACKs / end of closing period */
  uint8_t *close_pkt;
  size_t close_pktlen;
  /* STOP_SENDING frames seen by the frame scanner, reported after read_pkt */
  struct {
    int64_t sid;
    uint64_t code;
  } stops[16];
  int nstops;
  int64_t stop_seen[8]; /* stream id + 1 of STOP_SENDING already reported */
  unsigned stop_seen_next;
  /* connection IDs registered in the endpoint's table */
  ngtcp2_cid *cids;
  int ncids, capcids;
  uint64_t pkts_sent, pkts_recv, bytes_sent, bytes_recv;
  ngtcp2_tstamp expiry;
  size_t heap_idx;             /* position in the endpoint's timer heap + 1; 0 = absent */
  int dirty;                   /* on the endpoint's write list */
  struct aq_conn *next_dirty;
  int touched;                 /* on the endpoint's touched list */
  struct aq_conn *next_touched; /* conns that read packets in this batch */
  struct aq_conn *next, *prev;
} aq_conn;

/* ---- endpoint ---- */
#define AQ_RX_BATCH 8
#define AQ_RX_BUFSZ 65536
#define AQ_MAX_GSO_SEGS 64

struct aq_endpoint {
  aq_config cfg;
  uint8_t *alpn; /* owned copy of cfg.alpn */
  size_t alpn_len;
  int fd, family;
  struct sockaddr_storage local;
  socklen_t locallen;
  int connected; /* client socket connect()ed to its peer */
  int epfd, timerfd, cmd_efd, ev_efd;
  pthread_t thread;
  int started;
  aq_ring cmds, events;
  _Atomic int net_sleeping;
  _Atomic int cmd_waiter;  /* Python saw a full command ring */
  _Atomic int ev_blocked;  /* network thread saw a full event ring */
  aq_evnode *ovf_head, *ovf_tail; /* events waiting for ring space (network thread only) */
  int ev_pushed;                  /* events pushed since the last wake of Python */
  aq_map by_cid, by_handle;
  aq_conn *conns;
  aq_conn *touched;
  aq_conn **heap; /* timers: min-heap by expiry */
  size_t heap_len, heap_cap;
  aq_conn *dirty_head, *dirty_tail; /* connections to write */
  int reap_pending;                 /* some connection is AQ_ST_DEAD */
  uint64_t next_handle;
  gnutls_certificate_credentials_t cred;
  uint8_t reset_secret[32];
  ngtcp2_tstamp armed; /* timerfd deadline (0 = disarmed) */
  /* receive */
  uint8_t *rxmem;
  /* transmit batch */
  uint8_t *txmem;
  size_t txcap;
  int gso_ok, gro_ok;
  int pending_tx;  /* a batch is waiting for EPOLLOUT */
  size_t pend_len, pend_seg;
  struct sockaddr_storage pend_addr;
  socklen_t pend_addrlen;
  int want_out;
  int stopping;
  uint64_t ack_floor_ns;
  uint64_t spin_ns;   /* minimum delay of a timer when nothing waits to be sent */
  uint32_t test_loss_ppm; /* AIOPQUIC_TEST_LOSS_PPM: drop this share of sent packets */
  uint64_t test_rng;
};

/* endpoint.c */
ngtcp2_tstamp aq_now(void);
void aq_emit(struct aq_endpoint *ep, const aq_event *ev);
void aq_emit_simple(struct aq_endpoint *ep, uint32_t type, uint64_t conn, int64_t sid,
                    uint64_t code, uint64_t code2, uint32_t flags, const void *data,
                    size_t len);
int aq_send_packets(struct aq_endpoint *ep, const ngtcp2_path *path, const uint8_t *data,
                    size_t len, size_t seg);
void aq_rand_bytes(uint8_t *dst, size_t n);
int aq_register_cid(aq_conn *c, const ngtcp2_cid *cid);
void aq_unregister_cid(aq_conn *c, const ngtcp2_cid *cid);

/* sched.c */
void aq_sched_dirty(aq_conn *c);
void aq_sched_expiry(aq_conn *c, ngtcp2_tstamp t);
void aq_sched_remove(aq_conn *c);
aq_conn *aq_sched_pop_dirty(struct aq_endpoint *ep);
aq_conn *aq_sched_top(struct aq_endpoint *ep);

/* conn.c */
aq_conn *aq_conn_new_client(struct aq_endpoint *ep, const struct sockaddr *remote,
                            socklen_t remotelen, const char *server_name, char *err,
                            size_t errlen);
aq_conn *aq_conn_accept(struct aq_endpoint *ep, const ngtcp2_path *path,
                        const ngtcp2_pkt_hd *hd, ngtcp2_tstamp now);
void aq_conn_read(aq_conn *c, const ngtcp2_path *path, const uint8_t *data, size_t len,
                  ngtcp2_tstamp now);
void aq_conn_after_read(aq_conn *c, ngtcp2_tstamp now);
int aq_conn_write(aq_conn *c, ngtcp2_tstamp now);
void aq_conn_on_expiry(aq_conn *c, ngtcp2_tstamp now);
void aq_conn_command(aq_conn *c, const aq_cmd *cmd, ngtcp2_tstamp now);
void aq_conn_fail(aq_conn *c, uint32_t flags, uint64_t code, const char *reason);
void aq_conn_free(aq_conn *c);
void aq_conn_shutdown(aq_conn *c, ngtcp2_tstamp now);
void aq_txbuf_decref(aq_txbuf *tx);

/* tls.c */
int aq_tls_load(struct aq_endpoint *ep, char *err, size_t errlen);
int aq_tls_session_new(aq_conn *c, const char *server_name, char *err, size_t errlen);
void aq_tls_describe_failure(aq_conn *c, char *buf, size_t len);

#define AQ_ERR(err, errlen, ...)                                   \
  do {                                                             \
    if ((err) && (errlen)) snprintf((err), (errlen), __VA_ARGS__); \
  } while (0)

#endif
