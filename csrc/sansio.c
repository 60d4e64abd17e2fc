/*
 * sansio.c - the second driver of conn.c: synchronous, on the caller's thread, with no
 * socket, no thread and no clock (aioquic's receive_datagram / datagrams_to_send / timer
 * shape).  It reuses the endpoint structure (context, event sink, transmit queue, handle
 * map) so the command functions of aiopquic.h work unchanged: push_cmd hands each command
 * here and it is applied at once.
 *
 * Addresses are opaque 32-bit ids chosen by the caller, carried in a placeholder IPv6
 * address (fd00::/8 + id), so the engine can still tell paths apart (migration, NAT
 * rebinding) without this file parsing or formatting any address.
 */
#include "internal.h"

#include <arpa/inet.h>

#define AQ_SIO_TXQ_BYTES (64 * 1024) /* per connection: drained by every transmit call */
#define AQ_SIO_TXQ_ENTS 64
#define AQ_SIO_EVENTS 64 /* ring entries; more wait in the sink's overflow list */

static void sio_addr(struct sockaddr_in6 *sa, uint32_t id) {
  memset(sa, 0, sizeof(*sa));
  sa->sin6_family = AF_INET6;
  sa->sin6_port = htons(443);
  sa->sin6_addr.s6_addr[0] = 0xfd;
  uint32_t be = htonl(id);
  memcpy(&sa->sin6_addr.s6_addr[12], &be, 4);
}

static uint32_t sio_addr_id(const struct sockaddr *sa) {
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
  uint32_t be;
  if (sa->sa_family != AF_INET6) return 0;
  memcpy(&be, &s6->sin6_addr.s6_addr[12], 4);
  return ntohl(be);
}

/* The engine needs non-decreasing times, and write_ping stamps now + 1: each call's time is
 * raised to at least the previous call's + 1 ns. */
static ngtcp2_tstamp sio_time(struct aq_endpoint *ep, uint64_t now) {
  if (now < ep->sio_floor) now = ep->sio_floor;
  ep->sio_floor = now + 1;
  ep->sio_now = now;
  return now;
}

static int sio_cid_added(void *driver, aq_conn *c, const ngtcp2_cid *cid) {
  struct aq_endpoint *ep = driver;
  if (ep->sio_cid_events && !ep->ctx.quiet)
    aq_sink_emit_simple(&ep->sink, AQ_EV_CID_ISSUED, c->handle, -1, 0, 0, 0, cid->data,
                        cid->datalen);
  return 0;
}

static void sio_cid_removed(void *driver, aq_conn *c, const ngtcp2_cid *cid) {
  struct aq_endpoint *ep = driver;
  if (ep->sio_cid_events && !ep->ctx.quiet)
    aq_sink_emit_simple(&ep->sink, AQ_EV_CID_RETIRED, c->handle, -1, 0, 0, 0, cid->data,
                        cid->datalen);
}

struct aq_creds {
  gnutls_certificate_credentials_t cred;
};

aq_creds *aq_creds_new(const aq_config *cfg, char *err, size_t errlen) {
  aq_creds *creds = calloc(1, sizeof(*creds));
  aq_ctx *tmp = calloc(1, sizeof(*tmp));
  if (!creds || !tmp) {
    free(creds);
    free(tmp);
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  tmp->cfg = *cfg;
  int rv = aq_tls_load_cred(tmp, err, errlen);
  creds->cred = tmp->cred;
  free(tmp);
  if (rv != 0) {
    aq_creds_free(creds);
    return NULL;
  }
  return creds;
}

void aq_creds_free(aq_creds *creds) {
  if (!creds) return;
  if (creds->cred) gnutls_certificate_free_credentials(creds->cred);
  free(creds);
}

aq_endpoint *aq_sansio_new(const aq_config *cfg, const uint8_t *host_cid, size_t host_cid_len,
                           aq_creds *creds, char *err, size_t errlen) {
  if (cfg->cid_len > NGTCP2_MAX_CIDLEN || host_cid_len > NGTCP2_MAX_CIDLEN ||
      (host_cid && host_cid_len == 0)) {
    AQ_ERR(err, errlen, "connection ID length must be 1..%d", NGTCP2_MAX_CIDLEN);
    return NULL;
  }
  struct aq_endpoint *ep = calloc(1, sizeof(*ep));
  if (!ep) {
    AQ_ERR(err, errlen, "out of memory");
    return NULL;
  }
  ep->sansio = 1;
  ep->ctx.cfg = *cfg;
  ep->io.fd = ep->epfd = ep->timerfd = ep->cmd_efd = ep->sink.efd = -1;
  ep->next_handle = 1;
  ep->ctx.sink = &ep->sink;
  ep->ctx.driver = ep;
  ep->ctx.cid_added = sio_cid_added;
  ep->ctx.cid_removed = sio_cid_removed;
  ep->ctx.cid_len = host_cid ? host_cid_len : (cfg->cid_len ? cfg->cid_len : 18);
  /* no address validation tokens on this driver (yet): never a dangling copy of the caller's */
  ep->ctx.cfg.token = NULL;
  ep->ctx.cfg.token_len = 0;
  sio_addr(&ep->sio_local, 0);
  if (cfg->alpn_len) {
    ep->ctx.alpn = malloc(cfg->alpn_len);
    if (!ep->ctx.alpn) goto oom;
    memcpy(ep->ctx.alpn, cfg->alpn, cfg->alpn_len);
    ep->ctx.alpn_len = cfg->alpn_len;
  }
  ep->ctx.cfg.alpn = ep->ctx.alpn;
  if (creds) {
    ep->ctx.cred = creds->cred;
    ep->ctx.cred_borrowed = 1;
  } else if (aq_tls_load_cred(&ep->ctx, err, errlen) != 0) {
    goto fail;
  }
  if (aq_tls_load_tickets(&ep->ctx, err, errlen) != 0) goto fail;
  ep->ctx.cfg.cert_pem = ep->ctx.cfg.key_pem = ep->ctx.cfg.key_password = NULL;
  ep->ctx.cfg.ciphers = NULL; /* parsed into ctx.prio */
  ep->ctx.cfg.ca_file = ep->ctx.cfg.ca_path = ep->ctx.cfg.ca_pem = NULL;
  if (aq_sink_init(&ep->sink, AQ_SIO_EVENTS, 0) ||
      aq_txq_init(&ep->txq, AQ_SIO_TXQ_BYTES, AQ_SIO_TXQ_ENTS) ||
      aq_map_init(&ep->by_cid, 8) || aq_map_init(&ep->by_handle, 8))
    goto oom;
  aq_rand_bytes(ep->ctx.reset_secret, sizeof(ep->ctx.reset_secret));
  aq_rand_bytes(ep->ctx.token_secret, sizeof(ep->ctx.token_secret));
  ep->sio_scid.datalen = ep->ctx.cid_len;
  if (host_cid)
    memcpy(ep->sio_scid.data, host_cid, host_cid_len);
  else
    aq_fill_cid(&ep->ctx, ep->sio_scid.data, ep->sio_scid.datalen);
  /* no ACK floor: the caller's clock decides when packets leave */
  ep->ctx.ack_floor_ns = 0;
  /* stream windows start at max_stream_data (aioquic's behaviour) unless the configuration
   * says otherwise (stream_window_start; 0 is the same as unset here) */
  if (cfg->stream_window_start > 0)
    ep->ctx.stream_window_start = (uint64_t)cfg->stream_window_start;
  return ep;
oom:
  AQ_ERR(err, errlen, "out of memory");
fail:
  aq_endpoint_free(ep);
  return NULL;
}

static int adopt(struct aq_endpoint *ep, aq_conn *c) {
  if (aq_map_put(&ep->by_handle, &c->handle, sizeof(c->handle), c) != 0) {
    c->accepted_emitted = -1;
    aq_conn_free(c);
    return -1;
  }
  ep->next_handle++;
  aq_ep_link(ep, c);
  ep->sio_cid_events = 1; /* from now on: IDs issued by NEW_CONNECTION_ID, or retired */
  return 0;
}

uint64_t aq_sansio_connect(aq_endpoint *ep, uint32_t addr, const char *server_name,
                           const uint8_t *dcid, size_t dcidlen, uint64_t now, char *err,
                           size_t errlen) {
  if (!ep->sansio || ep->ctx.cfg.is_server || ep->conns) {
    AQ_ERR(err, errlen, "connect: only once, on a client");
    return 0;
  }
  ngtcp2_cid d;
  if (dcid && (dcidlen < NGTCP2_MIN_INITIAL_DCIDLEN || dcidlen > NGTCP2_MAX_CIDLEN)) {
    AQ_ERR(err, errlen, "the Initial's destination connection ID must be 8..20 bytes");
    return 0;
  }
  if (dcid) ngtcp2_cid_init(&d, dcid, dcidlen);
  struct sockaddr_in6 remote;
  sio_addr(&remote, addr);
  ngtcp2_tstamp t = sio_time(ep, now);
  aq_conn *c = aq_conn_new_client(&ep->ctx, ep->next_handle, (struct sockaddr *)&ep->sio_local,
                                  sizeof(ep->sio_local), (struct sockaddr *)&remote,
                                  sizeof(remote), server_name, dcid ? &d : NULL, &ep->sio_scid,
                                  t, err, errlen);
  if (!c) return 0;
  if (adopt(ep, c) != 0) {
    AQ_ERR(err, errlen, "out of memory");
    return 0;
  }
  aq_ep_follow(ep, c);
  return c->handle;
}

int aq_sansio_receive(aq_endpoint *ep, const uint8_t *data, size_t len, uint32_t addr,
                      uint32_t ecn, uint64_t now) {
  struct sockaddr_in6 remote;
  sio_addr(&remote, addr);
  ngtcp2_path path = {{(ngtcp2_sockaddr *)&ep->sio_local, sizeof(ep->sio_local)},
                      {(ngtcp2_sockaddr *)&remote, sizeof(remote)},
                      NULL};
  ngtcp2_tstamp t = sio_time(ep, now);
  aq_conn *c = ep->conns;
  if (!c) {
    c = aq_conn_accept_packet(&ep->ctx, ep->next_handle, &path, data, len, &ep->sio_scid, t);
    if (!c || adopt(ep, c) != 0) return -1;
  }
  aq_conn_read(c, &path, data, len, ecn, t, &ep->txq);
  aq_conn_after_read(c, t);
  aq_ep_follow(ep, c);
  return 0;
}

int aq_sansio_transmit(aq_endpoint *ep, uint64_t now, aq_sio_pkt *out, int max, int *more) {
  aq_txq *q = &ep->txq;
  ngtcp2_tstamp t = sio_time(ep, now);
  *more = 0;
  /* what the previous call returned has been taken by the caller */
  if (ep->sio_handed > q->head && ep->sio_handed <= q->nents) q->head = ep->sio_handed;
  ep->sio_handed = 0;
  aq_conn *c = ep->conns;
  if (c) {
    *more = aq_conn_write(c, t, q);
    aq_ep_follow(ep, c);
  }
  int n = 0;
  size_t i = q->head;
  for (; i < q->nents && n < max; i++, n++) {
    const aq_txent *e = &q->ents[i];
    out[n].data = q->buf + e->off;
    out[n].len = e->len;
    out[n].seg = e->seg;
    out[n].addr = sio_addr_id((const struct sockaddr *)&e->to);
  }
  ep->sio_handed = i;
  if (i < q->nents) *more = 1;
  return n;
}

uint64_t aq_sansio_expiry(aq_endpoint *ep) {
  aq_conn *c = ep->conns;
  if (!c || c->state == AQ_ST_DEAD) return UINT64_MAX;
  return c->expiry;
}

void aq_sansio_expire(aq_endpoint *ep, uint64_t now) {
  aq_conn *c = ep->conns;
  ngtcp2_tstamp t = sio_time(ep, now);
  if (!c || t < c->expiry) return;
  c->expiry = UINT64_MAX; /* the next write sets the new expiry */
  aq_conn_on_expiry(c, t, &ep->txq);
  aq_ep_follow(ep, c);
}

int aq_sansio_state(aq_endpoint *ep) {
  aq_conn *c = ep->conns;
  return c ? c->state : -1;
}

void aq_sansio_command(struct aq_endpoint *ep, const aq_cmd *cmd) {
  aq_conn *c = ep->conns;
  if (!c || c->handle != cmd->conn) {
    aq_conn_discard_cmd(cmd);
    return;
  }
  aq_conn_command(c, cmd, ep->sio_now, &ep->txq);
  aq_ep_follow(ep, c);
}
