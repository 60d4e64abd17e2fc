/*
 * aiopquic.h - the flat C API of the aiopquic shim.
 *
 * This is the only header cffi reads (build_ffi.py strips preprocessor lines), so it
 * declares plain C types only.  Threading contract:
 *   - every aq_* function below is called from ONE Python thread (the event loop's);
 *   - each endpoint owns one network thread that runs ngtcp2, the sockets and the timers;
 *   - they talk through SPSC rings (commands in, events out) and per-stream TX byte rings.
 */
#ifndef AIOPQUIC_H
#define AIOPQUIC_H

#include <stddef.h>
#include <stdint.h>

typedef struct aq_endpoint aq_endpoint;
typedef struct aq_txbuf aq_txbuf;

/* Event types (network thread -> Python). */
enum {
  AQ_EV_HANDSHAKE_DONE = 1, /* conn; data = negotiated ALPN; code = peer max datagram size */
  AQ_EV_ACCEPTED = 2,       /* server: new conn; data = "host\0port" of the peer */
  AQ_EV_STREAM_DATA = 3,    /* conn, stream_id, data/len (malloc'd, consumer frees), flags FIN */
  AQ_EV_STREAM_RESET = 4,   /* conn, stream_id, code; code2 = final size */
  AQ_EV_STOP_SENDING = 5,   /* conn, stream_id, code */
  AQ_EV_DATAGRAM = 6,       /* conn, data/len */
  AQ_EV_WRITABLE = 7,       /* conn, stream_id: TX ring drained below its low-water mark */
  AQ_EV_CLOSED = 8,         /* conn, code, code2 = frame type, flags = AQ_CLOSE_*; data = reason */
  AQ_EV_KEYLOG = 9,         /* data = one NSS key log line (no newline) */
  AQ_EV_PING_ACK = 10,      /* conn, code = uid */
  AQ_EV_STREAM_CLOSED = 11, /* conn, stream_id: engine forgot the stream (both sides done) */
  AQ_EV_CMD_SPACE = 12,     /* the command ring has room again after a failed push */
  AQ_EV_ERROR = 13,         /* endpoint-level error text in data (e.g. socket failure) */
  AQ_EV_STATS = 14          /* conn, code = request id; data = one aq_stats */
};

/* A snapshot of a connection's transport state (AQ_EV_STATS). */
typedef struct aq_stats {
  uint64_t smoothed_rtt_ns, min_rtt_ns, latest_rtt_ns, rttvar_ns;
  uint64_t cwnd, ssthresh, bytes_in_flight;
  uint64_t max_udp_payload; /* current path's packet size (after PMTUD) */
  uint64_t pkts_sent, pkts_recv, bytes_sent, bytes_recv;
  uint64_t datagrams_dropped; /* never sent: queue overflow (oldest first) or too large */
} aq_stats;

/* AQ_EV_* flags */
enum {
  AQ_FLAG_FIN = 1,
  AQ_CLOSE_APP = 1,        /* application close (else transport) */
  AQ_CLOSE_LOCAL = 2,      /* we closed it (else the peer or the engine did) */
  AQ_CLOSE_IDLE = 4,       /* idle timeout */
  AQ_CLOSE_HANDSHAKE_TIMEOUT = 8,
  AQ_CLOSE_REFUSED = 16,   /* ICMP port unreachable / ECONNREFUSED */
  AQ_CLOSE_RESET = 32,     /* stateless reset received */
  AQ_CLOSE_TLS = 64        /* handshake failed in TLS (verify, ALPN, ...) */
};

typedef struct aq_event {
  uint32_t type;
  uint32_t flags;
  uint64_t conn;
  int64_t stream_id;
  uint64_t code;
  uint64_t code2;
  uint8_t *data; /* malloc'd; owned by the consumer after aq_poll_events (aq_free) */
  size_t len;
} aq_event;

/* Congestion control */
enum { AQ_CC_RENO = 0, AQ_CC_CUBIC = 1, AQ_CC_BBR = 2 };

typedef struct aq_config {
  int is_server;
  /* TLS material (PEM in memory) */
  const char *cert_pem;
  size_t cert_pem_len;
  const char *key_pem;
  size_t key_pem_len;
  const char *key_password; /* NUL-terminated or NULL */
  const char *ca_file;      /* NULL or path */
  const char *ca_path;      /* NULL or directory */
  const char *ca_pem;       /* NULL or PEM data */
  size_t ca_pem_len;
  int verify_peer;          /* client: verify the server certificate */
  const uint8_t *alpn;      /* wire format: 1-byte length + bytes, repeated */
  size_t alpn_len;
  int keylog;               /* emit AQ_EV_KEYLOG lines */
  /* transport */
  uint64_t idle_timeout_ns;
  uint64_t handshake_timeout_ns;
  uint64_t max_data;
  uint64_t max_stream_data;
  uint64_t max_streams_bidi;
  uint64_t max_streams_uni;
  uint64_t max_datagram_frame_size; /* 0 = off */
  int cc_algo;
  uint64_t max_udp_payload; /* largest UDP payload to send (PMTUD ceiling); 0 = 1452 */
  uint64_t ack_thresh;      /* ACK after this many ack-eliciting packets; 0 = engine default */
  uint32_t event_ring_size; /* entries, power of two (0 = default) */
  uint32_t cmd_ring_size;   /* entries, power of two (0 = default) */
} aq_config;

/* Versions of the libraries actually loaded. */
const char *aq_ngtcp2_version(void);
const char *aq_gnutls_version(void);

/* A self-signed ECDSA P-256 certificate valid for `days` days for the comma-separated
 * names (DNS names or IP addresses; the first is also the CN).  PEM into the buffers; *len
 * holds the buffer size in and the PEM length out. */
int aq_selfsigned(const char *names, unsigned days, char *cert_out, size_t *cert_len,
                  char *key_out, size_t *key_len, char *err, size_t errlen);

/* Endpoint lifecycle.  aq_endpoint_new binds the UDP socket (host is a numeric IPv4/IPv6
 * address) and loads the TLS credentials; it returns NULL and fills err on failure.  For a
 * client, call aq_connect before aq_endpoint_start.  aq_endpoint_free stops the thread
 * (flushing nothing: close connections first), frees every connection and all memory. */
aq_endpoint *aq_endpoint_new(const aq_config *cfg, const char *host, int port, char *err,
                             size_t errlen);
int aq_endpoint_start(aq_endpoint *ep, char *err, size_t errlen);
void aq_endpoint_free(aq_endpoint *ep);
int aq_endpoint_event_fd(aq_endpoint *ep);
int aq_endpoint_local_port(aq_endpoint *ep);

/* Client: create the connection (before aq_endpoint_start).  Returns the connection handle
 * (> 0) or 0 with err filled.  host is numeric; server_name is for SNI/verification. */
uint64_t aq_connect(aq_endpoint *ep, const char *host, int port, const char *server_name,
                    char *err, size_t errlen);

/* Pop up to max events; returns how many.  Clears the wake fd first. */
int aq_poll_events(aq_endpoint *ep, aq_event *out, int max);
void aq_free(void *p);

/* TX byte rings.  cap is rounded up to a power of two. */
aq_txbuf *aq_txbuf_new(size_t cap);
void aq_txbuf_release(aq_txbuf *tx);
size_t aq_txbuf_space(aq_txbuf *tx);    /* bytes that can be written now */
uint64_t aq_txbuf_unacked(aq_txbuf *tx); /* written but not yet acknowledged */
/* Ask for AQ_EV_WRITABLE when the ring drains; returns 1 if it is already writable (no event
 * will come), 0 if an event will be sent. */
int aq_txbuf_want_writable(aq_txbuf *tx);

/* Commands.  Each returns 0, or -1 when the command ring is full (an AQ_EV_CMD_SPACE event
 * follows once it has room).  aq_stream_write returns bytes accepted, or -1 (ring full
 * for commands: nothing accepted).  fin is applied only if every byte was accepted. */
long aq_stream_write(aq_endpoint *ep, uint64_t conn, int64_t stream_id, aq_txbuf *tx,
                     const char *data, size_t len, int fin);
int aq_stream_reset(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code);
int aq_stream_stop(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code);
int aq_stream_consumed(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t n);
int aq_send_datagram(aq_endpoint *ep, uint64_t conn, const char *data, size_t len);
int aq_ping(aq_endpoint *ep, uint64_t conn, uint64_t uid);
int aq_key_update(aq_endpoint *ep, uint64_t conn);
int aq_request_stats(aq_endpoint *ep, uint64_t conn, uint64_t request_id);
int aq_conn_close(aq_endpoint *ep, uint64_t conn, uint64_t code, int is_app,
                  uint64_t frame_type, const char *reason, size_t reason_len);

#endif
