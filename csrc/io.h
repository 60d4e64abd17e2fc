/*
 * io.h - the UDP socket and the send path (io.c), and the transmit queue that connections
 * fill without touching a socket (txq.c).
 *
 * Layering: conn.c writes packets into an aq_txq (plain memory); the driver (endpoint.c)
 * hands the queue to aq_io_flush, which owns every send-error decision and reports refused
 * packets back as aq_txfail records.  io.c never calls into a connection or the endpoint.
 */
#ifndef AQ_IO_H
#define AQ_IO_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ---- transmit queue ---- */

enum {
  AQ_TX_PROBE = 1,  /* a PMTUD probe: always alone; its loss says nothing about the path */
  AQ_TX_SEALED = 2, /* no later packet may join this batch */
  AQ_TX_ECN_SHIFT = 8 /* bits 8-9: the ECN codepoint to send the batch with (0: not-ECT) */
};

/* One batch: nseg packets of seg bytes each (the last may be shorter), sent with one
 * sendmsg (UDP_SEGMENT when nseg > 1). */
typedef struct aq_txent {
  struct sockaddr_storage to;
  socklen_t tolen;
  /* the source address (an IPv4 sockaddr_in fits too); fromlen 0: the kernel chooses.
   * Only sockets with PKTINFO on (aq_io.pktinfo) send it. */
  struct sockaddr_in6 from;
  socklen_t fromlen;
  uint64_t owner; /* connection handle; 0 for stateless packets */
  size_t off, len, seg;
  uint32_t nseg;
  uint32_t flags;
} aq_txent;

typedef struct aq_txq {
  uint8_t *buf;
  size_t cap, used;
  aq_txent *ents;
  size_t capents, nents, head; /* [head, nents) are waiting to be sent */
  size_t max_batch;            /* bytes in one GSO batch (the kernel takes < 64 KiB) */
} aq_txq;

int aq_txq_init(aq_txq *q, size_t cap, size_t capents);
void aq_txq_destroy(aq_txq *q);
/* Room for one packet of up to `room` bytes at the tail, or NULL when the queue is full. */
uint8_t *aq_txq_reserve(aq_txq *q, size_t room);
/* Account `len` bytes written at the pointer aq_txq_reserve returned, to be sent from
 * `from` (the local address of the packet's path; NULL or a wildcard address: the kernel
 * chooses) to `to`.  The packet joins the tail batch when it can (same owner, source and
 * destination, not larger than the batch's segment size, the batch not sealed, under maxsegs
 * and max_batch); a shorter packet seals the batch; a probe travels alone. */
void aq_txq_commit(aq_txq *q, const struct sockaddr *from, const struct sockaddr *to,
                   socklen_t tolen, uint64_t owner, size_t len, uint32_t flags, size_t maxsegs);
/* Copy a whole packet in (stateless packets, CONNECTION_CLOSE); -1 when the queue is full. */
int aq_txq_push(aq_txq *q, const struct sockaddr *from, const struct sockaddr *to,
                socklen_t tolen, uint64_t owner, const uint8_t *data, size_t len);
void aq_txq_seal(aq_txq *q);
static inline int aq_txq_empty(const aq_txq *q) { return q->head == q->nents; }

/* ---- socket ---- */

typedef struct aq_io {
  int fd, family;
  struct sockaddr_storage local;
  socklen_t locallen;
  int connected;      /* client socket connect()ed to its peer */
  int gso_ok, gro_ok; /* kernel offloads usable on this socket */
  int df;             /* don't-fragment set (IP_PMTUDISC_DO / IPV6_PMTUDISC_DO) */
  int pktinfo;        /* a wildcard bind with PKTINFO on: every datagram received says which
                       * local address it was sent to (aq_rxmsg.local), and every batch with
                       * a source (aq_txent.from) leaves from that address */
  uint64_t emsgsize;  /* packets the kernel refused as larger than the path (EMSGSIZE) */
  uint64_t gso_splits; /* GSO batches resent one segment at a time after EMSGSIZE/EINVAL */
  uint64_t send_errors; /* other send failures (packet dropped; QUIC recovers) */
} aq_io;

/* A packet the network refused, for the driver to hand to its connection. */
typedef struct aq_txfail {
  uint64_t owner;
  size_t size;
  uint32_t flags; /* AQ_TX_PROBE if it was a probe */
  int err;        /* errno: EMSGSIZE, ECONNREFUSED, ... */
} aq_txfail;

enum { AQ_IO_DONE = 0, AQ_IO_BLOCKED = 1 };

/* Binds a UDP socket (numeric host) with DF, GRO, large buffers; err filled on failure. */
/* Steer the SO_REUSEPORT group of io's socket by connection ID: a classic BPF program
 * returns (the DCID byte at `pos`) % workers as the socket index, so each packet reaches the
 * socket bound in that position (Initials with a client-chosen DCID land anywhere, but
 * consistently).  0, or -1 with err filled. */
int aq_io_steer(aq_io *io, size_t pos, unsigned workers, char *err, size_t errlen);
/* pktinfo: on a wildcard address (0.0.0.0, ::), learn and use each datagram's local address
 * (a server answers from the address its client sent to); ignored for other addresses. */
int aq_io_open(aq_io *io, const char *host, int port, size_t sockbuf, int reuseport,
               int pktinfo, char *err, size_t errlen);
void aq_io_close(aq_io *io);
int aq_io_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);
/* connect() the socket to its only peer (client): ICMP errors then reach us. */
int aq_io_connect(aq_io *io, const struct sockaddr *to, socklen_t tolen);
int aq_io_local_port(const aq_io *io);
/* The largest UDP payload the local route to `to` carries (its interface MTU less the IP and
 * UDP headers), or 0 when unknown.  A throwaway connected socket asks the kernel (IP_MTU /
 * IPV6_MTU): a few syscalls, once per connection. */
size_t aq_io_route_payload(const struct sockaddr *to, socklen_t tolen);

/* Sends the queue from its head.  AQ_IO_DONE: everything left (the queue is reset);
 * AQ_IO_BLOCKED: the socket is full, the rest stays queued for EPOLLOUT.  Packets the path
 * refused are written to fails[] (at most maxfails; the count in *nfails). */
int aq_io_flush(aq_io *io, aq_txq *q, aq_txfail *fails, int *nfails, int maxfails);

/* ---- receive ---- */

#define AQ_RX_BATCH 8
#define AQ_RX_BUFSZ 65536

typedef struct aq_rxmsg {
  struct sockaddr_storage from;
  socklen_t fromlen;
  uint8_t *data;
  size_t len, seg; /* seg: GRO segment size (== len when not coalesced) */
  uint8_t ecn;     /* the ECN codepoint of the IP header (GRO keeps it equal for a batch) */
  /* with aq_io.pktinfo: the local address (and the socket's port) the datagram was sent to,
   * in the socket's family (IPv4-mapped on a dual-stack IPv6 socket); locallen 0: unknown */
  struct sockaddr_in6 local;
  socklen_t locallen;
} aq_rxmsg;

#define AQ_TX_ECN(ecn) (((uint32_t)(ecn) & 3u) << AQ_TX_ECN_SHIFT)
#define AQ_TX_ECN_OF(flags) (((flags) >> AQ_TX_ECN_SHIFT) & 3u)

/* Reads up to AQ_RX_BATCH datagrams into mem (AQ_RX_BATCH * AQ_RX_BUFSZ bytes).  Returns the
 * count, 0 when nothing is waiting, or -errno (ECONNREFUSED: an ICMP error on a connected
 * socket). */
int aq_io_recv(aq_io *io, uint8_t *mem, aq_rxmsg *msgs);

#endif
