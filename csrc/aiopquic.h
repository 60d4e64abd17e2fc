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
typedef struct aq_dgq aq_dgq;

/* Event types (network thread -> Python). */
enum {
  AQ_EV_HANDSHAKE_DONE = 1, /* conn; data = negotiated ALPN; code = peer max datagram size;
                             * code2 = the QUIC version negotiated */
  AQ_EV_ACCEPTED = 2,       /* server: new conn; data = "host port" of the peer; with flag
                             * AQ_ACCEPT_EARLY (0-RTT data arrived before the handshake
                             * completed; it follows) "host port\nALPN" */
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
  AQ_EV_STATS = 14,         /* conn, code = request id; data = one aq_stats */
  AQ_EV_PATH = 15,          /* conn, code = packet size now, code2 = largest datagram payload */
  AQ_EV_CID_ISSUED = 16,    /* sans-IO driver only: conn, data = a connection ID we issued */
  AQ_EV_CID_RETIRED = 17,   /* sans-IO driver only: conn, data = one of ours no longer used */
  AQ_EV_NEW_TOKEN = 18,     /* client conn: data = a NEW_TOKEN token for later connections */
  AQ_EV_CONN_INFO = 19,     /* conn, right after HANDSHAKE_DONE: data = one aq_conn_info */
  AQ_EV_SESSION_TICKET = 20, /* client conn: data = a resumption ticket (AQ_TICKET_* format)
                             * to pass as aq_config.session_ticket on a later connection */
  AQ_EV_MIGRATED = 21,      /* client conn, after aq_migrate: code = the new local port (0 if
                             * it failed), code2 = 0 or an errno / ngtcp2 error; data = why */
  AQ_EV_PEER_ADDRESS = 22,  /* conn: a new path was validated (the client moved, or a NAT
                             * rebound it); data = "host port" of the peer on it */
  AQ_EV_ENGINE_LOG = 23,    /* conn (aq_config.engine_log): data = ngtcp2's packet and frame
                             * log lines ("pkt ..." / "frm ..."), each ending in '\n' */
  AQ_EV_DGRAM_SPACE = 24    /* conn: after aq_dgq_room refused, at most half the datagram
                             * limit is still waiting to be sent */
};

/* AQ_EV_ACCEPTED flags */
enum { AQ_ACCEPT_EARLY = 1 };

/* AQ_EV_HANDSHAKE_DONE flags */
enum {
  AQ_HS_RESUMED = 1,        /* the TLS session was resumed from a ticket */
  AQ_HS_EARLY_ACCEPTED = 2, /* 0-RTT data was accepted (server: received some may follow) */
  AQ_HS_EARLY_REJECTED = 4, /* client: 0-RTT was attempted and refused; the streams opened
                             * before the handshake were opened again and their data resent */
  AQ_HS_SUITE_SHIFT = 16    /* bits 16-31: the negotiated cipher suite (0x1301..0x1304) */
};

/* The session ticket blob (AQ_EV_SESSION_TICKET, aq_config.session_ticket), big-endian:
 *   "AQST" | u8 version (1) | u32 tls_len | tls_len bytes: gnutls_session_get_data2
 *   | u32 tp_len | tp_len bytes: ngtcp2_conn_encode_0rtt_transport_params
 *   | u64 issued (Unix seconds) | u32 lifetime (s; 0: not known)
 *   | u32 max_early_data (0: no 0-RTT)
 *   | u16 TLS cipher suite (0x1301...) | u8 alpn_len | alpn | u16 server_name_len | server_name
 *   | 32 bytes: SHA-256 of everything before it
 * Nothing may follow.  The digest keeps damaged tickets (a corrupted file, a truncated copy)
 * away from GnuTLS's session parser, which does not survive every malformed input (3.7.9
 * crashes in gnutls_deinit after some failed gnutls_session_set_data calls). */
#define AQ_TICKET_VERSION 1

/* One side's transport parameters as the handshake settled them (AQ_EV_CONN_INFO). */
typedef struct aq_tp_info {
  uint64_t initial_max_data, initial_max_stream_data_bidi_local;
  uint64_t initial_max_stream_data_bidi_remote, initial_max_stream_data_uni;
  uint64_t initial_max_streams_bidi, initial_max_streams_uni;
  uint64_t max_idle_timeout_ms, max_udp_payload_size, max_ack_delay_us, ack_delay_exponent;
  uint64_t active_connection_id_limit, disable_active_migration, max_datagram_frame_size;
  uint64_t grease_quic_bit;
} aq_tp_info;

/* Transport parameters of both sides and the connection IDs (AQ_EV_CONN_INFO): ours (the
 * first source CID), the peer's (the current destination CID) and the client's first
 * destination CID. */
typedef struct aq_conn_info {
  aq_tp_info local, remote;
  uint8_t cid_local[20], cid_remote[20], cid_initial[20];
  uint32_t cid_local_len, cid_remote_len, cid_initial_len;
  uint32_t version;
  /* "host port" of the local side of the connection's path, NUL-terminated: the address
   * the peer sent to (a server bound to a wildcard address learns it per datagram with
   * PKTINFO); a wildcard host when the kernel chooses (clients) */
  char local_addr[96];
} aq_conn_info;

/* A snapshot of a connection's transport state (AQ_EV_STATS). */
typedef struct aq_stats {
  uint64_t smoothed_rtt_ns, min_rtt_ns, latest_rtt_ns, rttvar_ns;
  uint64_t cwnd, ssthresh, bytes_in_flight;
  uint64_t max_udp_payload; /* current path's packet size (after PMTUD) */
  uint64_t pkts_sent, pkts_recv, bytes_sent, bytes_recv;
  uint64_t datagrams_dropped; /* never sent: queue overflow (oldest first) or too large */
  uint64_t emsgsize;          /* packets the kernel refused as larger than the path */
  uint64_t blackholes;        /* times packets stopped getting through and the size fell back */
  uint64_t max_datagram_payload; /* largest datagram that fits a packet now (0: no datagrams) */
  uint64_t path_max_udp_payload; /* what PMTUD found (max_udp_payload is after any cap) */
  uint64_t ecn_sent;      /* packets sent with an ECT codepoint (ECN validation decides) */
  uint64_t ecn_ect0_recv; /* packets received marked ECT(0), ECT(1), CE */
  uint64_t ecn_ect1_recv;
  uint64_t ecn_ce_recv;
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
  uint32_t max_half_open;   /* server: connections in the handshake at once (0 = 256) */
  uint64_t keep_alive_ns;   /* send a PING after this long without sending (0 = off) */
  uint64_t initial_rtt_ns;  /* RTT assumed before the first sample (0 = ngtcp2's 333 ms) */
  uint64_t socket_buffer;   /* SO_SNDBUF/SO_RCVBUF to ask for (0 = 8 MiB; the kernel clamps) */
  uint64_t datagram_queue;  /* bytes of datagrams that may wait to be sent (0 = 1 MiB) */
  uint32_t cid_len;         /* length of the connection IDs we issue, 1..20 (0 = 18) */
  /* QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers): when lb_sid_len > 0,
   * every ID we issue is [config_id << 5 | (len - 1) & 31] [server ID] [random nonce] */
  uint8_t lb_sid[15];
  uint32_t lb_sid_len;
  uint32_t lb_config_id;
  /* server workers: `workers` endpoints share one port (SO_REUSEPORT), this one is number
   * `worker` (0-based, bound in that order); the connection IDs each issues carry its number
   * in the byte classic BPF steers by, so every packet of a connection reaches its worker.
   * workers <= 1: a plain socket. */
  uint32_t workers;
  uint32_t worker;
  /* tuning (see docs/guides/tuning.md); -1 = the environment variable or the built-in
   * default: the network thread's poll before sleeping (us, default 100), the shortest wait
   * before a pure ACK (us, default 1000), a stream's first receive window (bytes, default
   * 256 KiB; 0 = max_stream_data) */
  int64_t spin_us;
  int64_t ack_floor_us;
  int64_t stream_window_start;
  /* TLS cipher suites in order of preference, as a GnuTLS priority fragment
   * ("+CHACHA20-POLY1305:+AES-128-GCM"); NULL: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305,
   * AES-128-CCM */
  const char *ciphers;
  /* server admission (admit.c): Retry mode, the half-open count at which the automatic mode
   * asks for Retry (0 = max_half_open / 4), new handshakes per second per source address
   * (bursts of twice that; 0 = no limit) */
  int retry;                /* AQ_RETRY_AUTO, AQ_RETRY_ALWAYS or AQ_RETRY_NEVER (NEVER also
                             * means no NEW_TOKEN tokens are issued) */
  uint32_t retry_threshold;
  double handshake_rate;
  /* client: an address validation token (from NEW_TOKEN) sent in the first Initial */
  const uint8_t *token;
  size_t token_len;
  /* QUIC versions (1 and 2, RFC 9369) in order of preference, offered in the
   * version_information transport parameter for compatible negotiation (RFC 9368); a server
   * moves a client to the first of them the client also offers.  nversions = 0: version 1
   * only.  client_version: the version of the client's first Initial (0 = versions[0]). */
  uint32_t versions[4];
  uint32_t nversions;
  uint32_t client_version;
  /* a client may also list reserved versions (0x?a?a?a?a, RFC 9000 15) to force Version
   * Negotiation: it starts in client_version and, on a Version Negotiation packet, starts
   * again (same socket, new Initial) in the first of its supported versions the server
   * offers (RFC 9368 incompatible negotiation, with downgrade protection) */
  /* send ngtcp2's packet and frame log to Python as AQ_EV_ENGINE_LOG (qlog's packet events;
   * costs a formatted line per packet and per frame: off unless a logger asked for it) */
  int engine_log;
  /* client: one endpoint (socket + thread) carries many connections: the socket is never
   * connect()ed, aq_connect also works once the thread runs, and aq_migrate is refused (it
   * would move every connection).  An ICMP error then does not fail a connection at once:
   * it ends by handshake timeout. */
  int shared;
  /* client: a ticket from AQ_EV_SESSION_TICKET (session resumption, 0-RTT) */
  const uint8_t *session_ticket;
  size_t session_ticket_len;
  /* server: refuse 0-RTT (tickets are still issued; resumption still works); client: send
   * nothing before the handshake completes even when the ticket allows 0-RTT */
  int no_early_data;
  /* server: the 64-byte key that encrypts session tickets (every context given the same key
   * resumes the others' tickets); NULL: a random key of this context */
  const uint8_t *ticket_key;
  size_t ticket_key_len;
  /* client: aioquic's quantum_readiness_test: the ClientHello carries an extra TLS
   * extension (type 0x0c37, unassigned) of AQ_QUANTUM_READINESS_LEN zero bytes, so it no
   * longer fits one Initial packet and the server must reassemble it from several */
  int quantum_readiness;
} aq_config;

#define AQ_QUANTUM_READINESS_TYPE 0x0c37
#define AQ_QUANTUM_READINESS_LEN 1200

#define AQ_RETRY_AUTO 0
#define AQ_RETRY_ALWAYS 1
#define AQ_RETRY_NEVER 2

/* What a server did with client Initials that would open a connection (counters since the
 * endpoint started). */
typedef struct aq_admit_stats {
  uint64_t retries;       /* Retry packets sent */
  uint64_t tokens_ok;     /* Initials whose Retry or NEW_TOKEN token proved the address */
  uint64_t tokens_bad;    /* invalid or expired tokens (a bad Retry token closes the attempt) */
  uint64_t dropped_full;  /* dropped: max_half_open handshakes were in progress */
  uint64_t rate_limited;  /* dropped: the source was over its handshake rate */
  uint64_t half_open;     /* handshakes in progress now */
  uint64_t stateless_dropped; /* stateless resets / version negotiation suppressed by the limit */
  uint64_t prio_applied;  /* set_stream_priority commands applied to a stream (any endpoint) */
  uint64_t prio_rejected; /* ... refused: the stream was closed or never opened */
  uint64_t stray;         /* short-header packets for no connection of this endpoint (with
                           * workers: packets the steering sent to the wrong worker) */
} aq_admit_stats;

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
/* Server admission counters; safe to call from any thread while the endpoint runs. */
void aq_endpoint_admit_stats(aq_endpoint *ep, aq_admit_stats *out);

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
/* Make a released-by-everyone-else ring new again for another stream (the caller's reference
 * is then the only one): 1 when done, 0 while the network thread still holds it (then release
 * it as usual). */
int aq_txbuf_recycle(aq_txbuf *tx);
size_t aq_txbuf_space(aq_txbuf *tx);    /* bytes that can be written now */
uint64_t aq_txbuf_unacked(aq_txbuf *tx); /* written but not yet acknowledged */
/* Ask for AQ_EV_WRITABLE when the ring drains; returns 1 if it is already writable (no event
 * will come), 0 if an event will be sent. */
int aq_txbuf_want_writable(aq_txbuf *tx);

/* Commands.  Each returns 0, or -1 when the command ring is full (an AQ_EV_CMD_SPACE event
 * follows once it has room), -2 when out of memory, -3 for an error code or frame type not
 * below 2^62 or a negative stream id (nothing is sent).  aq_stream_write returns bytes accepted, or -1 (ring full
 * for commands: nothing accepted).  fin is applied only if every byte was accepted. */
long aq_stream_write(aq_endpoint *ep, uint64_t conn, int64_t stream_id, aq_txbuf *tx,
                     const char *data, size_t len, int fin);
int aq_stream_reset(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code);
int aq_stream_stop(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t code);
/* The application consumed n bytes of stream_id: extend its window and the connection's;
 * stream_id -1 extends only the connection's (bytes of streams whose FIN arrived). */
int aq_stream_consumed(aq_endpoint *ep, uint64_t conn, int64_t stream_id, uint64_t n);
/* Datagram send accounting of one connection (see struct aq_dgq in ring.h).  aq_dgq_new:
 * NULL when out of memory; aq_dgq_release drops the caller's reference.  aq_dgq_room:
 * 1 when `len` more bytes fit under the limit now (or nothing is outstanding), else 0, and
 * AQ_EV_DGRAM_SPACE follows once half the limit has drained. */
aq_dgq *aq_dgq_new(uint64_t limit);
void aq_dgq_release(aq_dgq *q);
int aq_dgq_room(aq_dgq *q, uint64_t len);
uint64_t aq_dgq_outstanding(aq_dgq *q);
/* q: the connection's accounting, or NULL (not counted). */
int aq_send_datagram(aq_endpoint *ep, uint64_t conn, aq_dgq *q, const char *data, size_t len);
/* aq_send_datagram when `len` more bytes fit under q's limit now (or nothing is outstanding),
 * else -4 and nothing is sent or signalled (aq_dgq_room then arms AQ_EV_DGRAM_SPACE). */
int aq_send_datagram_room(aq_endpoint *ep, uint64_t conn, aq_dgq *q, const char *data,
                          size_t len);

/* Process-wide glibc malloc tuning (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD): received
 * stream data moves in chunks of up to ~320 KiB, allocated on the network thread and again
 * as Python bytes; with glibc's defaults each such block is mapped and unmapped (or the heap
 * trimmed and grown), a page fault per 4 KiB received.  0, or -1 when not glibc / refused. */
int aq_tune_malloc(int trim_threshold, int mmap_threshold);
int aq_ping(aq_endpoint *ep, uint64_t conn, uint64_t uid);
int aq_key_update(aq_endpoint *ep, uint64_t conn);
/* Stream priority 0..255: lower is served first; among equals, odd = FIFO by stream id, even =
 * round robin.  stream_id -1 sets the default for streams created afterwards (initially 8). */
int aq_stream_priority(aq_endpoint *ep, uint64_t conn, int64_t stream_id, unsigned priority);
int aq_request_stats(aq_endpoint *ep, uint64_t conn, uint64_t request_id);
/* Client: move the connection to a new UDP socket bound to the same local address and
 * `port` (0: any free one).  The old socket is closed; ngtcp2 switches to a fresh connection
 * ID for the new path and validates it (RFC 9000 section 9).  AQ_EV_MIGRATED follows. */
int aq_migrate(aq_endpoint *ep, uint64_t conn, int port);
int aq_conn_close(aq_endpoint *ep, uint64_t conn, uint64_t code, int is_app,
                  uint64_t frame_type, const char *reason, size_t reason_len);

/* ---- the synchronous sans-IO driver (sansio.c) ----
 * One connection, no socket, no thread, no clock: the caller passes every datagram with an
 * opaque 32-bit address id and the time (ns, strictly increasing is not required: a smaller
 * time is raised to the previous one).  The command functions above (aq_stream_write,
 * aq_conn_close, ...) take the returned handle and apply at once; events are read with
 * aq_poll_events.  Free with aq_endpoint_free. */
typedef struct aq_sio_pkt {
  const uint8_t *data; /* valid until the next call on this driver */
  size_t len;          /* bytes: one datagram, or several of `seg` bytes (the last shorter) */
  size_t seg;
  uint32_t addr;       /* the address id to send to */
} aq_sio_pkt;

/* TLS credentials (certificate and key, trust anchors) loaded once from cfg and shared by
 * many sans-IO drivers: loading them costs more than a handshake's own crypto on a server.
 * NULL with err filled on failure.  Free it only after every driver given it is freed. */
typedef struct aq_creds aq_creds;
aq_creds *aq_creds_new(const aq_config *cfg, char *err, size_t errlen);
void aq_creds_free(aq_creds *creds);

/* host_cid: the connection ID we give out first (cfg->cid_len bytes), or NULL for a random
 * one.  A server connection starts with the first valid client Initial it receives.  creds:
 * credentials to borrow (from aq_creds_new with the same TLS fields as cfg), or NULL to load
 * cfg's own. */
aq_endpoint *aq_sansio_new(const aq_config *cfg, const uint8_t *host_cid, size_t host_cid_len,
                           aq_creds *creds, char *err, size_t errlen);
/* Client: start the handshake towards `addr`.  dcid: the Initial's destination connection ID
 * (NULL: random).  Returns the connection handle, 0 with err filled. */
uint64_t aq_sansio_connect(aq_endpoint *ep, uint32_t addr, const char *server_name,
                           const uint8_t *dcid, size_t dcidlen, uint64_t now, char *err,
                           size_t errlen);
/* One received datagram; ecn is the IP header's 2-bit ECN field.  Returns 0 when the
 * connection took it, -1 when it was dropped (no connection and not an acceptable Initial). */
int aq_sansio_receive(aq_endpoint *ep, const uint8_t *data, size_t len, uint32_t addr,
                      uint32_t ecn, uint64_t now);
/* Packets to send now: fills up to max entries and returns how many; *more is set when the
 * connection has more to write (call again after copying these out). */
int aq_sansio_transmit(aq_endpoint *ep, uint64_t now, aq_sio_pkt *out, int max, int *more);
/* When aq_sansio_expire must be called next (UINT64_MAX: never), and the call itself. */
uint64_t aq_sansio_expiry(aq_endpoint *ep);
void aq_sansio_expire(aq_endpoint *ep, uint64_t now);
/* -1: no connection yet; 0 handshake, 1 open, 2 closing, 3 draining, 4 ended. */
int aq_sansio_state(aq_endpoint *ep);

#endif
