/*
 * io.c - the UDP socket: options (DF for path MTU discovery, GSO, GRO, buffers), receiving,
 * and the send path with its one error policy.
 *
 * What happens when a send fails, in one place:
 *   EAGAIN       the socket buffer is full: the batch and everything after it stay queued
 *                (aq_io_flush returns AQ_IO_BLOCKED; the driver waits for EPOLLOUT).
 *   EMSGSIZE     a packet is larger than the path the kernel knows (interface MTU, or a
 *                PMTU learned from ICMP; DF is set, so nothing is fragmented).  A GSO batch
 *                is resent one segment at a time; each packet still refused is reported to
 *                its connection (aq_txfail), which lowers its packet size unless the packet
 *                was a PMTUD probe.  Counted in aq_io.emsgsize.
 *   EINVAL       with GSO: the segment size does not fit the device; handled like EMSGSIZE.
 *   EIO          with GSO: the device cannot segment: GSO is turned off for this socket and
 *                the batch is resent one packet at a time.
 *   ECONNREFUSED an ICMP port/host unreachable came back on a connected socket: reported to
 *                the owner (the connection closes with "refused").
 *   other        the packet is dropped and counted (aq_io.send_errors); QUIC recovers.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define AQ_SOCKBUF (8 * 1024 * 1024)

#define ERRF(err, errlen, ...)                                     \
  do {                                                             \
    if ((err) && (errlen)) snprintf((err), (errlen), __VA_ARGS__); \
  } while (0)

int aq_io_parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (port < 0 || port > 65535) return -1;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof(*a6);
    return 0;
  }
  return -1;
}

/* Don't fragment: a datagram larger than the path is refused (EMSGSIZE locally) or lost,
 * never split into IP fragments that would make a too-large PMTUD probe look delivered. */
static int set_df(int fd, int family) {
  int ok = 1;
#if defined(IP_MTU_DISCOVER) && defined(IP_PMTUDISC_DO)
  int v4 = IP_PMTUDISC_DO;
  /* on an IPv6 socket this covers IPv4-mapped peers; it may fail there, which is fine */
  if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v4, sizeof(v4)) != 0 && family == AF_INET)
    ok = 0;
#endif
#if defined(IPV6_MTU_DISCOVER) && defined(IPV6_PMTUDISC_DO)
  if (family == AF_INET6) {
    int v6 = IPV6_PMTUDISC_DO;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof(v6)) != 0) ok = 0;
#ifdef IPV6_DONTFRAG
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, &one, sizeof(one));
#endif
  }
#endif
  return ok;
}

static int is_wildcard(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET)
    return ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
  return ss->ss_family == AF_INET6 &&
         IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr);
}

int aq_io_open(aq_io *io, const char *host, int port, size_t sockbuf, int reuseport,
               int pktinfo, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(io, 0, sizeof(*io));
  io->fd = -1;
  if (port < 0 || port > 65535) {
    ERRF(err, errlen, "port must be in 0..65535: %d", port);
    return -1;
  }
  if (aq_io_parse_addr(host, port, &ss, &sl) != 0) {
    ERRF(err, errlen, "not a numeric IPv4/IPv6 address: %s", host);
    return -1;
  }
  io->family = ss.ss_family;
  io->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (io->fd < 0) {
    ERRF(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  int one = 1, sz = sockbuf && sockbuf < (1u << 30) ? (int)sockbuf : AQ_SOCKBUF;
  if (setsockopt(io->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) != 0)
    setsockopt(io->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
  if (setsockopt(io->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) != 0)
    setsockopt(io->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
  io->gro_ok = setsockopt(io->fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0;
  int seg = 0;
  socklen_t segl = sizeof(seg);
  io->gso_ok = getsockopt(io->fd, SOL_UDP, UDP_SEGMENT, &seg, &segl) == 0;
  if (ss.ss_family == AF_INET6) {
    int off = 0; /* "::" also takes IPv4-mapped peers */
    setsockopt(io->fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
  }
  io->df = set_df(io->fd, ss.ss_family);
  if (reuseport && setsockopt(io->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    ERRF(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
    close(io->fd);
    io->fd = -1;
    return -1;
  }
  /* ECN: learn the codepoint of every received datagram (IPv4-mapped peers of an IPv6
   * socket arrive with IP_TOS) */
  setsockopt(io->fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one));
  if (ss.ss_family == AF_INET6) setsockopt(io->fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof(one));
  /* PKTINFO on a wildcard bind: the destination address of every datagram (IPv4 datagrams on
   * a dual-stack IPv6 socket report theirs IPv4-mapped in IPV6_PKTINFO), so that replies can
   * leave from it.  A specific bind needs none: the kernel uses that address. */
  if (pktinfo && is_wildcard(&ss)) {
    if (ss.ss_family == AF_INET)
      io->pktinfo = setsockopt(io->fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == 0;
    else
      io->pktinfo =
          setsockopt(io->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one)) == 0;
  }
  if (bind(io->fd, (struct sockaddr *)&ss, sl) != 0) {
    ERRF(err, errlen, "cannot bind UDP %s port %d: %s", host, port, strerror(errno));
    close(io->fd);
    io->fd = -1;
    return -1;
  }
  io->locallen = sizeof(io->local);
  getsockname(io->fd, (struct sockaddr *)&io->local, &io->locallen);
  return 0;
}

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

int aq_io_steer(aq_io *io, size_t pos, unsigned workers, char *err, size_t errlen) {
  /* the program sees the UDP payload; a long header's DCID starts at byte 6, a short
   * header's at byte 1.  An index >= the group's size (a short packet, say) makes the kernel
   * fall back to its hash. */
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 0, 3),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)(6 + pos)),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
      BPF_STMT(BPF_RET | BPF_A, 0),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)(1 + pos)),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
  if (setsockopt(io->fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
    ERRF(err, errlen, "SO_ATTACH_REUSEPORT_CBPF: %s", strerror(errno));
    return -1;
  }
  return 0;
}

void aq_io_close(aq_io *io) {
  if (io->fd >= 0) close(io->fd);
  io->fd = -1;
}

int aq_io_connect(aq_io *io, const struct sockaddr *to, socklen_t tolen) {
  if (connect(io->fd, to, tolen) != 0) return -1;
  io->connected = 1;
  return 0;
}

int aq_io_local_port(const aq_io *io) {
  if (io->local.ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)&io->local)->sin_port);
  return ntohs(((const struct sockaddr_in6 *)&io->local)->sin6_port);
}

/* ---------------------------------------------------------------- sending */

/* True when a datagram to e->to leaves as IPv4 (an AF_INET peer, or IPv4-mapped). */
static int is_v4(const aq_txent *e) {
  if (e->to.ss_family == AF_INET) return 1;
  const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&e->to;
  return e->to.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr);
}

/* The source address cmsg (IP_PKTINFO for an IPv4 source, also IPv4-mapped on a dual-stack
 * socket; else IPV6_PKTINFO) at cm; returns its CMSG_SPACE. */
static size_t put_source(struct cmsghdr *cm, const aq_txent *e) {
  const struct sockaddr_in6 *a6 = &e->from;
  if (e->from.sin6_family == AF_INET || IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof(pi));
    if (e->from.sin6_family == AF_INET)
      pi.ipi_spec_dst = ((const struct sockaddr_in *)(const void *)&e->from)->sin_addr;
    else
      memcpy(&pi.ipi_spec_dst, &a6->sin6_addr.s6_addr[12], 4);
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(cm), &pi, sizeof(pi));
    return CMSG_SPACE(sizeof(pi));
  }
  struct in6_pktinfo pi6;
  memset(&pi6, 0, sizeof(pi6));
  pi6.ipi6_addr = a6->sin6_addr;
  pi6.ipi6_ifindex = a6->sin6_scope_id; /* the interface of a link-local address */
  cm->cmsg_level = IPPROTO_IPV6;
  cm->cmsg_type = IPV6_PKTINFO;
  cm->cmsg_len = CMSG_LEN(sizeof(pi6));
  memcpy(CMSG_DATA(cm), &pi6, sizeof(pi6));
  return CMSG_SPACE(sizeof(pi6));
}

/* One sendmsg; 0 or -errno.  Carries the GSO segment size, the ECN codepoint and (PKTINFO
 * sockets) the source address as cmsgs. */
static int send_one(aq_io *io, const aq_txent *e, const uint8_t *data, size_t len, size_t seg) {
  struct iovec iov = {(void *)data, len};
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int)) +
             CMSG_SPACE(sizeof(struct in6_pktinfo))];
    struct cmsghdr align;
  } u;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  memset(&u, 0, sizeof(u));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!io->connected) {
    msg.msg_name = (void *)&e->to;
    msg.msg_namelen = e->tolen;
  }
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof(u.buf);
  size_t used = 0;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  if (seg && seg < len) {
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s, sizeof(s));
    used += CMSG_SPACE(sizeof(uint16_t));
    cm = (struct cmsghdr *)(void *)(u.buf + used);
  }
  int ecn = (int)AQ_TX_ECN_OF(e->flags);
  if (ecn) {
    int v4 = is_v4(e);
    cm->cmsg_level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
    cm->cmsg_type = v4 ? IP_TOS : IPV6_TCLASS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &ecn, sizeof(ecn));
    used += CMSG_SPACE(sizeof(int));
    cm = (struct cmsghdr *)(void *)(u.buf + used);
  }
  if (io->pktinfo && e->fromlen) used += put_source(cm, e);
  msg.msg_controllen = used;
  if (!used) msg.msg_control = NULL;
  for (;;) {
    if (sendmsg(io->fd, &msg, 0) >= 0) return 0;
    if (errno == EINTR) continue;
    return -errno;
  }
}

static void report(aq_txfail *fails, int *nfails, int maxfails, const aq_txent *e, size_t size,
                   int err) {
  if (*nfails >= maxfails) return;
  aq_txfail *f = &fails[(*nfails)++];
  f->owner = e->owner;
  f->size = size;
  f->flags = e->flags & AQ_TX_PROBE;
  f->err = err;
}

static int is_blocked(int rv) { return rv == -EAGAIN || rv == -EWOULDBLOCK || rv == -ENOBUFS; }

/* What to do with a packet the kernel refused for good (not EAGAIN). */
static void refused(aq_io *io, const aq_txent *e, size_t size, int rv, aq_txfail *fails,
                    int *nfails, int maxfails) {
  if (rv == -EMSGSIZE || rv == -EINVAL) {
    io->emsgsize++;
    report(fails, nfails, maxfails, e, size, EMSGSIZE);
  } else if (rv == -ECONNREFUSED || rv == -EHOSTUNREACH || rv == -ENETUNREACH) {
    io->send_errors++;
    report(fails, nfails, maxfails, e, size, -rv);
  } else {
    io->send_errors++;
  }
}

/* Send e's segments one by one starting at e->off; on EAGAIN shrink e to what is left. */
static int send_segments(aq_io *io, aq_txq *q, aq_txent *e, aq_txfail *fails, int *nfails,
                         int maxfails) {
  while (e->len) {
    size_t n = e->len < e->seg ? e->len : e->seg;
    int rv = send_one(io, e, q->buf + e->off, n, 0);
    if (is_blocked(rv)) return AQ_IO_BLOCKED;
    if (rv != 0) refused(io, e, n, rv, fails, nfails, maxfails);
    e->off += n;
    e->len -= n;
    if (e->nseg) e->nseg--;
  }
  return AQ_IO_DONE;
}

int aq_io_flush(aq_io *io, aq_txq *q, aq_txfail *fails, int *nfails, int maxfails) {
  *nfails = 0;
  while (q->head < q->nents) {
    aq_txent *e = &q->ents[q->head];
    int rv;
    if (e->nseg > 1 && !io->gso_ok) {
      rv = send_segments(io, q, e, fails, nfails, maxfails);
      if (rv == AQ_IO_BLOCKED) return rv;
      q->head++;
      continue;
    }
    rv = send_one(io, e, q->buf + e->off, e->len, e->nseg > 1 ? e->seg : 0);
    if (rv == 0) {
      q->head++;
      continue;
    }
    if (is_blocked(rv)) return AQ_IO_BLOCKED;
    if (e->nseg > 1 && (rv == -EIO || rv == -EMSGSIZE || rv == -EINVAL)) {
      if (rv == -EIO) io->gso_ok = 0; /* the device cannot segment: never again */
      else io->gso_splits++;
      if (send_segments(io, q, e, fails, nfails, maxfails) == AQ_IO_BLOCKED) return AQ_IO_BLOCKED;
      q->head++;
      continue;
    }
    refused(io, e, e->len, rv, fails, nfails, maxfails);
    q->head++;
  }
  q->head = q->nents = q->used = 0;
  return AQ_IO_DONE;
}

/* ---------------------------------------------------------------- receiving */

/* The local address of a received datagram (PKTINFO), in the socket's family, with the
 * socket's port.  A multicast or broadcast destination is no address to answer from: left
 * unknown (the kernel chooses). */
static void set_local_v4(const aq_io *io, aq_rxmsg *m, struct in_addr addr) {
  uint32_t host = ntohl(addr.s_addr);
  if (IN_MULTICAST(host) || host == INADDR_BROADCAST || host == INADDR_ANY) return;
  memset(&m->local, 0, sizeof(m->local));
  if (io->family == AF_INET) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)&m->local;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)aq_io_local_port(io));
    a4->sin_addr = addr;
    m->locallen = sizeof(*a4);
  } else {
    m->local.sin6_family = AF_INET6;
    m->local.sin6_port = htons((uint16_t)aq_io_local_port(io));
    m->local.sin6_addr.s6_addr[10] = 0xff;
    m->local.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&m->local.sin6_addr.s6_addr[12], &addr, 4);
    m->locallen = sizeof(m->local);
  }
}

static void set_local_v6(const aq_io *io, aq_rxmsg *m, const struct in6_pktinfo *pi6) {
  if (IN6_IS_ADDR_V4MAPPED(&pi6->ipi6_addr)) {
    struct in_addr a;
    memcpy(&a, &pi6->ipi6_addr.s6_addr[12], 4);
    set_local_v4(io, m, a);
    return;
  }
  if (io->family != AF_INET6 || IN6_IS_ADDR_MULTICAST(&pi6->ipi6_addr) ||
      IN6_IS_ADDR_UNSPECIFIED(&pi6->ipi6_addr))
    return;
  memset(&m->local, 0, sizeof(m->local));
  m->local.sin6_family = AF_INET6;
  m->local.sin6_port = htons((uint16_t)aq_io_local_port(io));
  m->local.sin6_addr = pi6->ipi6_addr;
  if (IN6_IS_ADDR_LINKLOCAL(&pi6->ipi6_addr)) m->local.sin6_scope_id = pi6->ipi6_ifindex;
  m->locallen = sizeof(m->local);
}

int aq_io_recv(aq_io *io, uint8_t *mem, aq_rxmsg *out) {
  struct mmsghdr msgs[AQ_RX_BATCH];
  struct iovec iov[AQ_RX_BATCH];
  union {
    char buf[3 * CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct in6_pktinfo)) + 64];
    struct cmsghdr align;
  } ctl[AQ_RX_BATCH];
  for (int i = 0; i < AQ_RX_BATCH; i++) {
    iov[i].iov_base = mem + (size_t)i * AQ_RX_BUFSZ;
    iov[i].iov_len = AQ_RX_BUFSZ;
    memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
    msgs[i].msg_hdr.msg_name = &out[i].from;
    msgs[i].msg_hdr.msg_namelen = sizeof(out[i].from);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = ctl[i].buf;
    msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
  }
  int n;
  for (;;) {
    n = recvmmsg(io->fd, msgs, AQ_RX_BATCH, MSG_DONTWAIT, NULL);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -errno;
  }
  for (int i = 0; i < n; i++) {
    out[i].fromlen = msgs[i].msg_hdr.msg_namelen;
    out[i].data = iov[i].iov_base;
    out[i].len = msgs[i].msg_len;
    out[i].seg = out[i].len;
    out[i].ecn = 0;
    out[i].locallen = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm;
         cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
      if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
        int s;
        memcpy(&s, CMSG_DATA(cm), sizeof(s));
        if (s > 0) out[i].seg = (size_t)s;
      } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TOS &&
                 cm->cmsg_len >= CMSG_LEN(1)) {
        out[i].ecn = CMSG_DATA(cm)[0] & 3; /* one byte on receive */
      } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_TCLASS &&
                 cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int tc;
        memcpy(&tc, CMSG_DATA(cm), sizeof(tc));
        out[i].ecn = (uint8_t)(tc & 3);
      } else if (io->pktinfo && cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
                 cm->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
        struct in_pktinfo pi;
        memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
        set_local_v4(io, &out[i], pi.ipi_addr);
      } else if (io->pktinfo && cm->cmsg_level == IPPROTO_IPV6 &&
                 cm->cmsg_type == IPV6_PKTINFO &&
                 cm->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
        struct in6_pktinfo pi6;
        memcpy(&pi6, CMSG_DATA(cm), sizeof(pi6));
        set_local_v6(io, &out[i], &pi6);
      }
    }
    if (out[i].seg == 0) out[i].seg = 1; /* never loop forever on a bogus cmsg */
  }
  return n;
}

size_t aq_io_route_payload(const struct sockaddr *to, socklen_t tolen) {
  int family = to->sa_family;
  if (family != AF_INET && family != AF_INET6) return 0;
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  size_t out = 0;
  if (connect(fd, to, tolen) == 0) {
    int mtu = 0;
    socklen_t len = sizeof(mtu);
    int rv = family == AF_INET6 ? getsockopt(fd, IPPROTO_IPV6, IPV6_MTU, &mtu, &len)
                                : getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &len);
    size_t hdr = family == AF_INET6 ? 48 : 28; /* IPv6 + UDP, IPv4 + UDP headers */
    if (rv == 0 && mtu > 0 && (size_t)mtu > hdr) out = (size_t)mtu - hdr;
  }
  close(fd);
  return out;
}
