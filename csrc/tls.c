/*
 * tls.c - GnuTLS credentials (per endpoint) and sessions (per connection).
 */
#include "internal.h"

#include <arpa/inet.h>
#include <gnutls/x509.h>
#include <time.h>

/* TLS 1.3 only, the AEADs QUIC allows (no CCM_8), no middlebox compatibility mode. */
static const char AQ_PRIORITY[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:+AES-128-CCM:%DISABLE_TLS13_COMPAT_MODE";

int aq_tls_load(aq_ctx *ctx, char *err, size_t errlen) {
  const aq_config *cfg = &ctx->cfg;
  int rv = gnutls_certificate_allocate_credentials(&ctx->cred);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls: %s", gnutls_strerror(rv));
    return -1;
  }
  if (cfg->cert_pem && cfg->cert_pem_len) {
    gnutls_datum_t cert = {(unsigned char *)cfg->cert_pem, (unsigned)cfg->cert_pem_len};
    gnutls_datum_t key = {(unsigned char *)cfg->key_pem, (unsigned)cfg->key_pem_len};
    rv = gnutls_certificate_set_x509_key_mem2(ctx->cred, &cert, &key, GNUTLS_X509_FMT_PEM,
                                              cfg->key_password, 0);
    if (rv < 0) {
      AQ_ERR(err, errlen, "cannot load certificate/private key: %s", gnutls_strerror(rv));
      return -1;
    }
  } else if (cfg->is_server) {
    AQ_ERR(err, errlen, "a server needs a certificate and private key (load_cert_chain)");
    return -1;
  }
  if (!cfg->is_server && cfg->verify_peer) {
    int any = 0;
    if (cfg->ca_file) {
      rv = gnutls_certificate_set_x509_trust_file(ctx->cred, cfg->ca_file, GNUTLS_X509_FMT_PEM);
      if (rv <= 0) {
        AQ_ERR(err, errlen, "cafile %s: %s", cfg->ca_file,
               rv < 0 ? gnutls_strerror(rv) : "no certificate found");
        return -1;
      }
      any = 1;
    }
    if (cfg->ca_path) {
      rv = gnutls_certificate_set_x509_trust_dir(ctx->cred, cfg->ca_path, GNUTLS_X509_FMT_PEM);
      if (rv < 0) {
        AQ_ERR(err, errlen, "capath %s: %s", cfg->ca_path, gnutls_strerror(rv));
        return -1;
      }
      any = 1;
    }
    if (cfg->ca_pem && cfg->ca_pem_len) {
      gnutls_datum_t d = {(unsigned char *)cfg->ca_pem, (unsigned)cfg->ca_pem_len};
      rv = gnutls_certificate_set_x509_trust_mem(ctx->cred, &d, GNUTLS_X509_FMT_PEM);
      if (rv <= 0) {
        AQ_ERR(err, errlen, "cadata: %s", rv < 0 ? gnutls_strerror(rv) : "no certificate found");
        return -1;
      }
      any = 1;
    }
    if (!any) {
      rv = gnutls_certificate_set_x509_system_trust(ctx->cred);
      if (rv < 0) {
        AQ_ERR(err, errlen, "cannot load the system trust store: %s", gnutls_strerror(rv));
        return -1;
      }
    }
  }
  return 0;
}

static void hex(char *dst, const uint8_t *src, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    dst[2 * i] = digits[src[i] >> 4];
    dst[2 * i + 1] = digits[src[i] & 15];
  }
  dst[2 * n] = 0;
}

static int keylog_cb(gnutls_session_t s, const char *label, const gnutls_datum_t *secret) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  aq_conn *c = ref->user_data;
  gnutls_datum_t crand, srand;
  gnutls_session_get_random(s, &crand, &srand);
  size_t llen = strlen(label);
  size_t n = llen + 1 + 2 * crand.size + 1 + 2 * secret->size + 1;
  char *line = malloc(n);
  if (!line) return 0;
  memcpy(line, label, llen);
  line[llen] = ' ';
  hex(line + llen + 1, crand.data, crand.size);
  line[llen + 1 + 2 * crand.size] = ' ';
  hex(line + llen + 2 + 2 * crand.size, secret->data, secret->size);
  aq_sink_emit_simple(c->ctx->sink, AQ_EV_KEYLOG, c->handle, -1, 0, 0, 0, line, n - 1);
  free(line);
  return 0;
}

/* Server: a ClientHello without any protocol we accept ends the handshake with
 * no_application_protocol (RFC 9001 8.1); GnuTLS alone accepts a ClientHello that carries no
 * ALPN extension at all. */
static int client_hello_hook(gnutls_session_t s, unsigned htype, unsigned when,
                             unsigned incoming, const gnutls_datum_t *msg) {
  (void)htype;
  (void)when;
  (void)incoming;
  (void)msg;
  gnutls_datum_t sel = {NULL, 0};
  if (gnutls_alpn_get_selected_protocol(s, &sel) == 0 && sel.size) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  if (ref) ((aq_conn *)ref->user_data)->alpn_missing = 1;
  return GNUTLS_E_NO_APPLICATION_PROTOCOL;
}

static int is_ip_literal(const char *name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int aq_tls_session_new(aq_conn *c, const char *server_name, char *err, size_t errlen) {
  const aq_ctx *ctx = c->ctx;
  int server = ctx->cfg.is_server;
  int rv = gnutls_init(&c->tls, server ? GNUTLS_SERVER : (GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA));
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls_init: %s", gnutls_strerror(rv));
    return -1;
  }
  rv = server ? ngtcp2_crypto_gnutls_configure_server_session(c->tls)
              : ngtcp2_crypto_gnutls_configure_client_session(c->tls);
  if (rv != 0) {
    AQ_ERR(err, errlen, "ngtcp2_crypto_gnutls_configure_session failed");
    return -1;
  }
  rv = gnutls_priority_set_direct(c->tls, AQ_PRIORITY, NULL);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls priority: %s", gnutls_strerror(rv));
    return -1;
  }
  gnutls_session_set_ptr(c->tls, &c->cref);
  rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, ctx->cred);
  if (rv != 0) {
    AQ_ERR(err, errlen, "gnutls credentials: %s", gnutls_strerror(rv));
    return -1;
  }
  if (ctx->alpn_len) {
    gnutls_datum_t protos[64];
    unsigned n = 0;
    size_t i = 0;
    while (i < ctx->alpn_len && n < 64) {
      unsigned l = ctx->alpn[i];
      protos[n].data = ctx->alpn + i + 1;
      protos[n].size = l;
      n++;
      i += 1 + l;
    }
    rv = gnutls_alpn_set_protocols(c->tls, protos, n,
                                   GNUTLS_ALPN_MANDATORY |
                                       (server ? GNUTLS_ALPN_SERVER_PRECEDENCE : 0));
    if (rv != 0) {
      AQ_ERR(err, errlen, "gnutls ALPN: %s", gnutls_strerror(rv));
      return -1;
    }
    if (server)
      gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
                                         client_hello_hook);
  }
  if (!server && server_name && *server_name) {
    c->server_name = strdup(server_name);
    if (!c->server_name) {
      AQ_ERR(err, errlen, "out of memory");
      return -1;
    }
    server_name = c->server_name;
  }
  if (!server) {
    if (server_name && *server_name && !is_ip_literal(server_name))
      gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, server_name, strlen(server_name));
    if (ctx->cfg.verify_peer)
      gnutls_session_set_verify_cert(c->tls, (server_name && *server_name) ? server_name : NULL,
                                     0);
  }
  if (ctx->cfg.keylog) gnutls_session_set_keylog_function(c->tls, keylog_cb);
  return 0;
}

void aq_tls_describe_failure(aq_conn *c, char *buf, size_t len) {
  buf[0] = 0;
  if (!c->tls) return;
  unsigned status = gnutls_session_get_verify_cert_status(c->tls);
  if (status != 0) {
    gnutls_datum_t out = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
      snprintf(buf, len, "certificate verification failed: %s", (char *)out.data);
      gnutls_free(out.data);
      return;
    }
    snprintf(buf, len, "certificate verification failed");
  }
}

/* ---------------------------------------------------------------- self-signed certificates */

int aq_selfsigned(const char *names, unsigned days, char *cert_out, size_t *cert_len,
                  char *key_out, size_t *key_len, char *err, size_t errlen) {
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  int rv;
  char *list = NULL;
  if ((rv = gnutls_x509_privkey_init(&key)) < 0 ||
      (rv = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0)) < 0 ||
      (rv = gnutls_x509_crt_init(&crt)) < 0)
    goto fail;
  time_t now = time(NULL);
  unsigned char serial[16];
  aq_rand_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  list = strdup(names ? names : "localhost");
  if (!list) {
    rv = GNUTLS_E_MEMORY_ERROR;
    goto fail;
  }
  char *save = NULL, *first = strtok_r(list, ",", &save);
  if (!first) first = "localhost";
  if ((rv = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
      (rv = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) < 0 ||
      (rv = gnutls_x509_crt_set_activation_time(crt, now - 60)) < 0 ||
      (rv = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400 - 120)) < 0 ||
      (rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, first,
                                          strlen(first))) < 0 ||
      (rv = gnutls_x509_crt_set_key(crt, key)) < 0 ||
      (rv = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
      (rv = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
      (rv = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0)
    goto fail;
  for (char *n = first; n; n = strtok_r(NULL, ",", &save)) {
    unsigned char ip[16];
    if (inet_pton(AF_INET, n, ip) == 1)
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 4,
                                                GNUTLS_FSAN_APPEND);
    else if (inet_pton(AF_INET6, n, ip) == 1)
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, ip, 16,
                                                GNUTLS_FSAN_APPEND);
    else
      rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, n, strlen(n),
                                                GNUTLS_FSAN_APPEND);
    if (rv < 0) goto fail;
  }
  if ((rv = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0 ||
      (rv = gnutls_x509_crt_export(crt, GNUTLS_X509_FMT_PEM, cert_out, cert_len)) < 0 ||
      (rv = gnutls_x509_privkey_export_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                             key_out, key_len)) < 0)
    goto fail;
  free(list);
  gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return 0;
fail:
  AQ_ERR(err, errlen, "cannot create a certificate: %s", gnutls_strerror(rv));
  free(list);
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  return -1;
}
