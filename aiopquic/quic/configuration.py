"""QUIC configuration, shaped like aioquic's :class:`aioquic.quic.configuration.QuicConfiguration`.

The field names and defaults of aioquic are kept where aioquic has them; fields marked
*(aiopquic)* are extensions.  Two differences matter when porting code:

- :attr:`QuicConfiguration.certificate_chain` and :attr:`QuicConfiguration.private_key` hold PEM
  :class:`bytes` (the native engine hands them to GnuTLS), not ``cryptography`` objects.
- :meth:`QuicConfiguration.load_verify_locations` only sets the arguments that are given, so
  successive calls add locations (as with :class:`ssl.SSLContext`).

Bad values raise at once -- on construction, in :meth:`~QuicConfiguration.load_cert_chain` /
:meth:`~QuicConfiguration.load_verify_locations`, or in :meth:`~QuicConfiguration.validate`
(which ``connect()`` and ``serve()`` call again, so fields assigned after construction are
checked too) -- with a message naming the field or file at fault.

Programs written for aioquic or for the picoquic-based aiopquic 0.6.1 construct unchanged:
every field of both is accepted by keyword and readable.  Each is either honoured (mapped onto
an engine setting) or accepted at its default only, in which case :meth:`validate` rejects any
other value with a message naming the field and saying why; nothing is silently ignored
(docs/migrating.md has the table).
"""

import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO, Union

from aiopquic.quic.logger import QuicLogger  # re-exported, as aioquic does
from aiopquic.quic.packet import QuicProtocolVersion  # re-exported
from aiopquic.tls import CipherSuite, SessionTicket, session_ticket_blob  # re-exported

__all__ = [
    "CipherSuite",
    "QuicLogger",
    "QuicProtocolVersion",
    "SMALLEST_MAX_DATAGRAM_SIZE",
    "SessionTicket",
    "CONGESTION_CONTROL_ALGORITHMS",
    "CONGESTION_CONTROL_ALIASES",
    "CONNECTION_ID_LENGTH",
    "MIN_STREAM_BUFFER_SIZE",
    "QUIC_V1",
    "QUIC_V2",
    "QuicConfiguration",
]

StrPath = Union[str, "os.PathLike[str]"]
"""A filesystem path: :class:`str` or :class:`os.PathLike`."""

CONGESTION_CONTROL_ALGORITHMS: tuple[str, ...] = ("reno", "cubic", "bbr")
"""Accepted values of :attr:`QuicConfiguration.congestion_control_algorithm` (besides the
aliases in :data:`CONGESTION_CONTROL_ALIASES`)."""

CONGESTION_CONTROL_ALIASES: dict[str, str] = {"newreno": "reno", "bbr1": "bbr"}
"""Names aiopquic 0.6.1 (picoquic) accepts, mapped onto the engine's controller of that
family: ngtcp2's Reno is NewReno, and its BBR takes the place of picoquic's BBRv1."""

_UNSUPPORTED_CC = ("dcubic", "fast", "prague", "c4", "bbr2", "bbr3")

QUIC_V1 = 0x00000001
"""QUIC version 1 (RFC 9000)."""

QUIC_V2 = 0x6B3343CF
"""QUIC version 2 (RFC 9369), offered for compatible version negotiation (RFC 9368) by
default (see :attr:`QuicConfiguration.supported_versions`)."""

_VERSION_NAMES = {QUIC_V1: "QUIC_V1", QUIC_V2: "QUIC_V2"}


def is_reserved_version(version: int) -> bool:
    """True for QUIC's reserved versions ``0x?a?a?a?a`` (RFC 9000 section 15), which no
    server speaks: a client that starts in one gets a Version Negotiation packet."""
    return (int(version) & 0x0F0F0F0F) == 0x0A0A0A0A

CONNECTION_ID_LENGTH = 8
"""Default length of the connection IDs we issue (aioquic's; 8 to 20 are accepted)."""

MIN_STREAM_BUFFER_SIZE = 64 * 1024
"""Smallest accepted :attr:`QuicConfiguration.stream_buffer_size` (bytes)."""

_MAX_VARINT = (1 << 62) - 1
_VERIFY_MODES = (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED)

_PEM_CERTIFICATE_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)
# PKCS#8 ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") and legacy ("RSA PRIVATE KEY", "EC PRIVATE KEY").
_PEM_PRIVATE_KEY_RE = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL
)


_GNUTLS_CIPHERS = {0x1301: "AES-128-GCM", 0x1302: "AES-256-GCM", 0x1303: "CHACHA20-POLY1305",
                   0x1304: "AES-128-CCM"}
_CIPHER_NAMES = {"AES_128_GCM_SHA256": 0x1301, "AES_256_GCM_SHA384": 0x1302,
                 "CHACHA20_POLY1305_SHA256": 0x1303, "AES_128_CCM_SHA256": 0x1304}

SMALLEST_MAX_DATAGRAM_SIZE = 1200
"""The smallest UDP payload every QUIC path must carry (RFC 9000 section 14), aioquic's name;
``max_datagram_size`` may not go below it here."""


@dataclass
class QuicConfiguration:
    """The settings of a QUIC endpoint: TLS identity and verification, ALPN, limits, timeouts.

    Create one per client or server, set fields by keyword, then (servers) call
    :meth:`load_cert_chain` and (clients with a private CA) :meth:`load_verify_locations`::

        config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
        config.load_cert_chain("cert.pem", "key.pem")

    Raises:
        ValueError: a field has a bad value (the message names the field and the value).
        TypeError: a field has the wrong type.
        FileNotFoundError: ``cafile`` / ``capath`` names a path that does not exist.
    """

    alpn_protocols: Optional[list[str]] = None
    """ALPN protocols offered (client) or accepted (server), in order of preference.

    Each entry is a non-empty string of at most 255 bytes.  ``None`` sends no ALPN."""

    is_client: bool = True
    """Whether this is the client side of the QUIC connection."""

    server_name: Optional[str] = None
    """Client: the name (DNS name or IP address) the server certificate is verified against; a
    DNS name is also sent as SNI.  ``None`` means the host given to ``connect()``."""

    verify_mode: Optional[int] = None
    """Client: :data:`ssl.CERT_NONE` skips verification of the server certificate; ``None`` or
    :data:`ssl.CERT_REQUIRED` verifies it (against ``cafile``/``capath``/``cadata`` if set, else
    the system trust store)."""

    cafile: Optional[str] = None
    """Path of a PEM file with trusted CA certificates."""

    capath: Optional[str] = None
    """Path of a directory with trusted CA certificates (PEM files)."""

    cadata: Optional[bytes] = field(default=None, repr=False)
    """Trusted CA certificates as PEM bytes (left out of ``repr()``)."""

    certificate_chain: Optional[bytes] = field(default=None, repr=False)
    """PEM bytes of the certificate followed by its chain; set by :meth:`load_cert_chain`."""

    private_key: Optional[bytes] = field(default=None, repr=False)
    """PEM bytes of the private key; set by :meth:`load_cert_chain` (left out of ``repr()``,
    as are :attr:`certificate_chain` and :attr:`private_key_password`)."""

    private_key_password: Optional[bytes] = field(default=None, repr=False)
    """Password of an encrypted :attr:`private_key`; set by :meth:`load_cert_chain`."""

    certfile: Optional[str] = None
    """Path the certificate chain was loaded from (kept for error messages)."""

    keyfile: Optional[str] = None
    """Path the private key was loaded from (kept for error messages).  When the key came from
    the certificate file, this is the certificate file's path."""

    idle_timeout: float = 60.0
    """Idle timeout in seconds: the connection closes if nothing is received for this long.
    Sent as the ``max_idle_timeout`` transport parameter; ``0`` means no idle timeout on our
    side (RFC 9000 section 10.1: the peer's limit, if it has one, still applies)."""

    handshake_timeout: float = 10.0
    """*(aiopquic)* Seconds a connection attempt may take before ``connect()`` raises
    :class:`ConnectionError`."""

    max_data: int = 16 * 1024 * 1024
    """Connection-wide receive flow control limit in bytes."""

    max_stream_data: int = 8 * 1024 * 1024
    """Per-stream receive flow control limit in bytes."""

    max_streams_bidi: int = 128
    """*(aiopquic)* Bidirectional streams the peer may have open at once (extended as streams
    close)."""

    max_streams_uni: int = 128
    """*(aiopquic)* Unidirectional streams the peer may have open at once (extended as streams
    close)."""

    max_datagram_size: int = 16384
    """Largest UDP payload this endpoint sends, in bytes (1200..65000).  Connections start at
    1200 bytes and path MTU discovery (DPLPMTUD) climbs 1454 (Ethernet), 8972 (jumbo frames),
    16384, 32768, 65000 up to this ceiling, keeping the largest size the path really carries:
    1454 on a typical Internet path, the ceiling on loopback.  Larger packets cost less CPU
    per byte.  aioquic uses the same name for a fixed size (default 1200); 1452 is a safe
    ceiling on paths with broken PMTUD, and 1200 turns PMTUD off.  Values below 1200 are
    refused: QUIC needs every path to carry 1200-byte UDP payloads (RFC 9000 section 14) and
    the engine cannot build smaller packets."""

    max_datagram_frame_size: Optional[int] = None
    """Largest DATAGRAM frame accepted, advertised to the peer (RFC 9221): any QUIC varint
    from 1 up (65536 is common).  A datagram still has to fit one packet, so larger values
    only say "no limit besides the packet size".  ``None`` (or 0) turns datagrams off."""

    secrets_log_file: Optional[Union[TextIO, str]] = None
    """Where TLS secrets are logged in NSS key log format (for Wireshark): a text file object
    (as in aioquic) or a path (aiopquic), which is opened for appending (a new file is created
    with mode 0600, readable by its owner only: it holds the secrets that decrypt the traffic).
    GnuTLS also honours the ``SSLKEYLOGFILE`` environment variable by itself."""

    congestion_control_algorithm: Optional[str] = "bbr"
    """Congestion controller: ``"reno"``, ``"cubic"`` or ``"bbr"`` (case-insensitive); aiopquic
    0.6.1's ``"newreno"`` and ``"bbr1"`` map to ``"reno"`` and ``"bbr"``, and ``None`` means
    the default (``"bbr"``: on lossy paths it keeps 10-16x the goodput of the loss-based
    controllers, and it equals CUBIC on clean ones, see docs/performance.md).  picoquic-only
    controllers (``"dcubic"``, ``"fast"``,
    ``"prague"``, ``"c4"``) are refused."""

    stream_buffer_size: int = 4 * 1024 * 1024
    """*(aiopquic)* Bytes of each stream's send ring: a power of two, at least 64 KiB.
    ``writer.drain()`` waits while the ring is full."""

    quic_logger: Any = None
    """aioquic's qlog sink (a :class:`~aiopquic.quic.logger.QuicLogger` or
    ``QuicFileLogger``): each connection gets a trace of its connection-level events
    (handshake, ALPN, path MTU, stream data and datagrams moved, resets, the close); no
    packet-level events (see docs/api.md, "qlog").  :meth:`validate` raises
    :class:`TypeError` for an object without ``start_trace()``/``end_trace()``."""

    # -------------------------------------------------- aiopquic 0.6.1 fields

    certificate_file: Optional[str] = None
    """*(aiopquic 0.6.1)* PEM certificate chain file, loaded by :meth:`validate` (so on
    construction and again by ``connect()``/``serve()``) as :meth:`load_cert_chain` would;
    :meth:`load_cert_chain` also sets it."""

    private_key_file: Optional[str] = None
    """*(aiopquic 0.6.1)* PEM private key file loaded with :attr:`certificate_file`; ``None``
    takes the key from the certificate file."""

    keep_alive_interval: Optional[float] = None
    """*(aiopquic 0.6.1)* Send a PING when nothing was sent for this many seconds (keeps NAT
    bindings and the peer's idle timer alive).  ``None`` or ``0``: off."""

    max_connections: Optional[int] = None
    """*(aiopquic 0.6.1)* Server: most connections open at once.  A connection that would
    exceed it is closed right after its handshake with CONNECTION_REFUSED (transport error
    0x2) and never reaches ``create_protocol``.  ``None``: no limit (0.6.1's default was
    256).  Ignored by clients (one connection per endpoint)."""

    socket_buffer_size: Optional[int] = None
    """*(aiopquic 0.6.1)* UDP socket send and receive buffer size to ask for, in bytes (the
    kernel clamps it to rmem_max/wmem_max unless the process may force it).  ``None``: 8 MiB."""

    max_half_open: int = 256
    """Server: most handshakes in progress at once.  A new client Initial beyond it is
    dropped (the client retransmits it, so it waits rather than fails) and counted in
    :meth:`QuicServer.admission_stats` as ``dropped_full``.  Each costs ~60 KiB until its
    handshake completes or times out."""

    retry_threshold: Optional[int] = None
    """Server, with ``serve(retry=None)`` (the default, automatic Retry): once this many
    handshakes are in progress, a client Initial without a valid token is answered with a
    Retry packet, so only clients that prove their address get connection state.  ``None``:
    a quarter of :attr:`max_half_open`."""

    handshake_rate_per_source: float = 200.0
    """Server: new handshakes per second that one source (an IPv4 address, or an IPv6 /64)
    may start, in bursts of twice that; an Initial over the rate is dropped (the client
    retransmits it) and counted as ``rate_limited``.  ``0``: no limit.  Raise it for load
    generators that open many connections from one address."""

    stream_ring_cap: Optional[int] = None
    """*(aiopquic 0.6.1)* Bytes of each stream's send ring: sets :attr:`stream_buffer_size`
    (rounded up to a power of two, at least 64 KiB) when not ``None``.  Unlike 0.6.1, a write
    larger than the ring is not refused: the excess waits in a Python queue."""

    tx_max_queued_bytes: Optional[int] = None
    """*(aiopquic 0.6.1)* 0.6.1's process-wide send gate.  Only ``None`` or ``0`` (off): here
    backpressure is per stream (:attr:`stream_buffer_size`, ``writer.drain()``)."""

    event_ring_capacity: Optional[int] = None
    """*(aiopquic 0.6.1)* Entries of the native event ring (network thread to Python), rounded
    up to a power of two, 64..2**20.  ``None``: 4096.  Events beyond it wait in an overflow
    list, so this is tuning only."""

    qlog_dir: Optional[str] = None
    """*(aiopquic 0.6.1)* Directory for qlog files: each connection's trace is written there
    as ``<id>.qlog`` (JSON, aioquic's ``QuicFileLogger`` format) when it closes; used when
    :attr:`quic_logger` is None.  ``None`` falls back to ``$AIOPQUIC_QLOG_DIR`` (as 0.6.1
    did).  :meth:`validate` raises :class:`FileNotFoundError` / :class:`NotADirectoryError`
    naming it when it is not an existing directory."""

    datagram_ring_bytes: Optional[int] = None
    """*(aiopquic 0.6.1)* Bytes of datagrams that may wait to be sent per connection; beyond
    it ``send_datagram_frame`` returns 0 (not taken) until half of them have left, as
    0.6.1's "ring full".  ``None``: 1 MiB."""

    datagram_max_payload: Optional[int] = None
    """*(aiopquic 0.6.1)* Largest datagram payload ``send_datagram_frame`` accepts, 1..65535:
    a cap on top of what the path and the peer allow.  ``None``: the path decides."""

    key_exchange_groups: Any = None
    """*(aiopquic 0.6.1)* TLS key exchange groups.  Only ``None``: the engine's GnuTLS
    priority string fixes them."""

    cipher_suite: Any = None
    """*(aiopquic 0.6.1)* One TLS cipher suite to use (a :class:`~aiopquic.tls.CipherSuite`
    or its code point), as ``cipher_suites=[cipher_suite]``.  ``None``: the default list."""

    key_update_interval: Optional[int] = None
    """*(aiopquic 0.6.1)* Automatic key updates.  Only ``None``: call
    ``QuicConnection.request_key_update()`` to update keys."""

    session_ticket_file: Optional[str] = None
    """*(aiopquic 0.6.1)* Client: a file of resumption tickets.  ``connect()`` resumes with the
    newest valid ticket in it for the server name (unless :attr:`session_ticket` is set) and
    stores each new ticket the server sends (one per server name and ALPN, mode 0600).  A
    missing file is created; damaged entries are skipped.  Servers ignore it."""

    ip_family: Optional[int] = None
    """*(aiopquic 0.6.1)* Address family of the socket.  Only ``None`` or
    :data:`socket.AF_UNSPEC`: the family follows the address given to ``connect()`` /
    ``serve()`` (use ``"::"`` or ``"0.0.0.0"``)."""

    pmtud: Optional[str] = None
    """*(aiopquic 0.6.1)* Path MTU discovery: ``None`` or ``"basic"`` (on, up to
    :attr:`max_datagram_size`) or ``"blocked"`` (off: 1200-byte packets).  picoquic's
    ``"delayed"`` is refused."""

    # -------------------------------------------------- more aioquic fields

    certificate: Any = field(default=None, repr=False)
    """aioquic's server certificate: a ``cryptography`` ``x509.Certificate`` (or PEM bytes).
    :meth:`validate` writes it as PEM in front of :attr:`certificate_chain`, which may also
    be aioquic's list of ``x509.Certificate`` (converted to PEM bytes).  A ``cryptography``
    private key object in :attr:`private_key` is converted to PEM (PKCS#8) the same way."""

    cipher_suites: Any = None
    """aioquic's TLS cipher suites, in order of preference: :class:`~aiopquic.tls.CipherSuite`
    values (or their code points) among AES_128_GCM_SHA256, AES_256_GCM_SHA384,
    CHACHA20_POLY1305_SHA256 and 0x1304 (TLS_AES_128_CCM_SHA256).  A client offers these
    only; a server accepts only these.  ``None``: all four, AES-128-GCM first.
    ``QuicConnection.cipher_suite`` tells which one a connection negotiated."""

    supported_versions: Optional[list[int]] = field(
        default_factory=lambda: [QUIC_V1, QUIC_V2])
    """QUIC versions in order of preference, from :data:`QUIC_V1` and :data:`QUIC_V2`
    (aioquic's field and default).  A client starts in :attr:`original_version` (default:
    the first of them) and offers all of them; a server moves a client to the first of its
    own list that the client offers (compatible version negotiation, RFC 9368), else keeps
    the client's version.  ``None``: version 1 only.  A client may also list reserved
    versions (``0x?a?a?a?a``, as aioquic's interop.py puts 0x1A2A3A4A first): starting in
    one, it gets a Version Negotiation packet and starts again, once, in the first of its
    real versions the server offers (the connection fails with
    ``VERSION_NEGOTIATION_ERROR`` when there is none).  :meth:`validate` raises
    :class:`ValueError` for an empty list, more than 4, a repeated or unknown version, or
    a list of reserved versions only."""

    original_version: Optional[int] = None
    """The version of a client's first Initial (aioquic's field): :data:`QUIC_V1` or
    :data:`QUIC_V2`, one of :attr:`supported_versions`.  ``None``: the first of
    :attr:`supported_versions`.  Servers ignore it."""

    initial_rtt: Optional[float] = None
    """RTT (seconds) assumed before the first measurement (aioquic's name).  ``None``: ngtcp2's
    333 ms."""

    connection_id_length: int = CONNECTION_ID_LENGTH
    """Length of the connection IDs we issue, 8 to 20 bytes (aioquic's default, 8: servers
    that own their socket route short-header packets by it)."""

    quic_lb_server_id: Optional[bytes] = None
    """*(aiopquic)* Server: encode this server ID (1 to 15 bytes) in every connection ID it
    issues, in the plaintext format of QUIC-LB (draft-ietf-quic-load-balancers): first byte
    = :attr:`quic_lb_config_id` in its top 3 bits and the ID length minus one in the low 5,
    then the server ID, then a random nonce of at least 4 bytes (so
    ``connection_id_length >= 1 + len(quic_lb_server_id) + 4``).  A load balancer that
    speaks QUIC-LB routes every packet of the connection to this server by it.  ``None``:
    fully random connection IDs."""

    network_poll_us: Optional[int] = None
    """*(aiopquic)* Microseconds the network thread keeps polling after it sent, before it
    sleeps, so the application's answer is picked up without a thread wake-up (yielding the
    CPU while it polls).  ``None``: ``AIOPQUIC_SPIN_US`` from the environment, else 50.
    ``0`` saves that CPU on servers with many idle connections.  See docs/guides/tuning.md."""

    ack_floor_us: Optional[int] = None
    """*(aiopquic)* Shortest wait (microseconds) before a connection with nothing of its own
    to send sends a pure ACK, so the application's answer carries it.  ``None``:
    ``AIOPQUIC_ACK_FLOOR_US`` from the environment, else 1000 (inside the 25 ms
    max_ack_delay advertised)."""

    stream_window_start: Optional[int] = None
    """*(aiopquic)* Bytes of a stream's first receive window, which grows towards
    :attr:`max_stream_data` while the reader keeps up (``0``: ``max_stream_data`` from the
    start).  ``None``: ``AIOPQUIC_STREAM_WINDOW_START`` from the environment, else 256 KiB."""

    quic_lb_config_id: int = 0
    """*(aiopquic)* The QUIC-LB config rotation codepoint (0..6) in the first byte of the
    connection IDs when :attr:`quic_lb_server_id` is set (7 marks unroutable IDs)."""

    token: Optional[bytes] = b""
    """Client: an address validation token the server gave on an earlier connection (a
    NEW_TOKEN frame, delivered to ``connect(token_handler=...)``), sent in the first
    Initial so that a server asking for Retry admits the client without that extra round
    trip.  Empty or ``None``: no token.  A stale or foreign token costs nothing: the server
    ignores it (and may send a Retry)."""

    session_ticket: Any = None
    """Client: a :class:`aiopquic.tls.SessionTicket` that ``connect()``'s
    ``session_ticket_handler`` received on an earlier connection to the same server: the
    connection resumes the TLS session and, when the ticket allows it
    (``max_early_data_size``), sends stream data and datagrams written before the handshake
    completes as 0-RTT.  Tickets of aioquic itself cannot be used (the TLS engine is
    GnuTLS): :meth:`validate` raises :class:`ValueError` for anything but a ticket this
    library issued.  ``None``: a full handshake."""

    early_data: bool = True
    """*(aiopquic)* 0-RTT.  Server: accept early data from resuming clients (GnuTLS's
    anti-replay check refuses a ClientHello seen before within its window); ``False`` still
    issues tickets and resumes sessions but refuses 0-RTT.  Client: ``False`` never sends
    0-RTT even when the ticket allows it.  0-RTT data can be replayed by an attacker:
    servers whose requests are not idempotent may want ``False``."""

    quantum_readiness_test: bool = False
    """Client: aioquic's quantum readiness test.  ``True`` adds a TLS extension of 1200 zero
    bytes (type ``0x0c37``, unassigned, which servers ignore) to the ClientHello, so that
    it no longer fits one Initial packet, as a post-quantum key share would not: the
    client's first flight spans two Initial packets and the server must reassemble the
    ClientHello from them.  (aioquic carries the same 1200 bytes in transport parameter
    ``0x0c37``; ngtcp2 writes only the transport parameters it knows, so here it is a TLS
    extension of its own.)  Ignored by a server."""

    # -------------------------------------------------- 0.6.1 properties

    @property
    def verify_peer(self) -> bool:
        """*(aiopquic 0.6.1)* Whether a client verifies the server certificate, that is
        ``verify_mode != ssl.CERT_NONE``; setting it sets :attr:`verify_mode`."""
        return self.verify_mode != ssl.CERT_NONE

    @verify_peer.setter
    def verify_peer(self, value: bool) -> None:
        self.verify_mode = ssl.CERT_REQUIRED if value else ssl.CERT_NONE

    @property
    def desired_version(self) -> int:
        """*(aiopquic 0.6.1)* The QUIC version a client starts with (see
        :attr:`original_version`)."""
        if self.original_version is not None:
            return int(self.original_version)
        return int(self.supported_versions[0]) if self.supported_versions else QUIC_V1

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------ checks

    def _cipher_priority(self) -> Optional[str]:
        """The GnuTLS priority fragment for :attr:`cipher_suites` / :attr:`cipher_suite`
        (``None``: the engine's default).  Raises :class:`ValueError` / :class:`TypeError`
        naming the field for an unknown or duplicated suite."""
        name = "cipher_suites"
        suites = self.cipher_suites
        if self.cipher_suite is not None:
            if suites is not None:
                raise ValueError("QuicConfiguration.cipher_suite and cipher_suites are "
                                 "both set: use one")
            name, suites = "cipher_suite", [self.cipher_suite]
        if suites is None:
            return None
        if isinstance(suites, (str, bytes)) or not hasattr(suites, "__iter__"):
            raise TypeError(f"QuicConfiguration.{name} must be a list of CipherSuite values, "
                            f"got {type(suites).__name__}")
        parts: list[str] = []
        for suite in suites:
            if isinstance(suite, str):  # 0.6.1 names them: "TLS_AES_128_GCM_SHA256"
                code = _CIPHER_NAMES.get(suite.upper().removeprefix("TLS_"))
                if code is None:
                    raise ValueError(f"QuicConfiguration.{name}: unknown cipher suite "
                                     f"{suite!r} (one of TLS_AES_128_GCM_SHA256, "
                                     f"TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, "
                                     f"TLS_AES_128_CCM_SHA256)")
                suite = code
            if isinstance(suite, bool) or not isinstance(suite, int):
                raise TypeError(f"QuicConfiguration.{name}: {suite!r} is not a CipherSuite")
            gnutls = _GNUTLS_CIPHERS.get(int(suite))
            if gnutls is None:
                raise ValueError(
                    f"QuicConfiguration.{name}: 0x{int(suite):04x} is not a TLS 1.3 suite "
                    f"QUIC can use here (AES_128_GCM_SHA256, AES_256_GCM_SHA384, "
                    f"CHACHA20_POLY1305_SHA256, 0x1304 AES_128_CCM_SHA256)")
            if gnutls in parts:
                raise ValueError(f"QuicConfiguration.{name} lists 0x{int(suite):04x} twice")
            parts.append(gnutls)
        if not parts:
            raise ValueError(f"QuicConfiguration.{name} is empty")
        return ":".join("+" + p for p in parts)

    def validate(self) -> None:
        """Check every field and normalise a few (lower-case congestion control name, path-like
        objects to :class:`str`, ``str`` passwords and CA data to :class:`bytes`).

        Called on construction; ``connect()`` and ``serve()`` call it again, so fields assigned
        later are checked too.  Safe to call more than once.

        Raises:
            ValueError: a field has a bad value; the message names the field and the value.
            TypeError: a field has the wrong type; the message names the field.
            FileNotFoundError: ``cafile`` or ``capath`` does not exist.
        """
        self._validate_alpn()

        _check_bool("is_client", self.is_client)

        if self.server_name is not None:
            if not isinstance(self.server_name, str):
                raise TypeError(
                    f"QuicConfiguration.server_name must be a str or None, "
                    f"got {type(self.server_name).__name__}: {self.server_name!r}"
                )
            if not self.server_name:
                raise ValueError("QuicConfiguration.server_name must not be empty (use None)")

        if self.verify_mode is not None and (
            isinstance(self.verify_mode, bool) or self.verify_mode not in _VERIFY_MODES
        ):
            raise ValueError(
                f"QuicConfiguration.verify_mode must be None, ssl.CERT_NONE, ssl.CERT_OPTIONAL "
                f"or ssl.CERT_REQUIRED, got {self.verify_mode!r}"
            )

        # Trust anchors.
        if self.cafile is not None:
            self.cafile = _fspath("cafile", self.cafile)
            _check_is_file("cafile", self.cafile, "CA file")
        if self.capath is not None:
            self.capath = _fspath("capath", self.capath)
            _check_is_dir("capath", self.capath)
        if self.cadata is not None:
            self.cadata = _pem_bytes("cadata", self.cadata)
            if not _PEM_CERTIFICATE_RE.search(self.cadata):
                raise ValueError(
                    "QuicConfiguration.cadata contains no PEM certificate "
                    "('-----BEGIN CERTIFICATE-----' block)"
                )

        # Identity.
        self._validate_credentials()
        for name in ("certificate_chain", "private_key", "private_key_password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                if isinstance(value, (bytearray, memoryview)):
                    setattr(self, name, bytes(value))
                elif name == "private_key_password" and isinstance(value, str):
                    setattr(self, name, value.encode("utf-8"))
                else:
                    raise TypeError(
                        f"QuicConfiguration.{name} must be bytes or None, "
                        f"got {type(value).__name__}"
                    )
        for name in ("certfile", "keyfile"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _fspath(name, value))

        # Timeouts.
        if self.idle_timeout == 0 and not isinstance(self.idle_timeout, bool):
            self.idle_timeout = 0.0  # no idle timeout on our side (RFC 9000 section 10.1)
        else:
            self.idle_timeout = _check_positive_number(
                "idle_timeout", self.idle_timeout, "seconds (0: none)"
            )
        self.handshake_timeout = _check_positive_number(
            "handshake_timeout", self.handshake_timeout, "seconds"
        )

        # Limits.
        _check_int_range("max_data", self.max_data, 1, _MAX_VARINT)
        _check_int_range("max_stream_data", self.max_stream_data, 1, _MAX_VARINT)
        _check_int_range("max_streams_bidi", self.max_streams_bidi, 0, 1 << 60)
        _check_int_range("max_streams_uni", self.max_streams_uni, 0, 1 << 60)
        if self.max_datagram_frame_size is not None:
            _check_int_range(
                "max_datagram_frame_size",
                self.max_datagram_frame_size,
                0,
                _MAX_VARINT,
                hint=" (use None to turn datagrams off)",
            )
            if self.max_datagram_frame_size == 0:
                self.max_datagram_frame_size = None  # RFC 9221: 0 = no DATAGRAM support
        _check_int_range(
            "max_datagram_size",
            self.max_datagram_size,
            1200,
            65000,
            hint=" (QUIC needs paths to carry 1200-byte UDP payloads, RFC 9000 section 14; "
            "the engine cannot send smaller packets)",
        )
        if self.stream_ring_cap is not None:
            _check_int_range("stream_ring_cap", self.stream_ring_cap, 1, 1 << 40)
            self.stream_buffer_size = max(
                MIN_STREAM_BUFFER_SIZE, 1 << (self.stream_ring_cap - 1).bit_length()
            )
        _check_int_range(
            "stream_buffer_size", self.stream_buffer_size, MIN_STREAM_BUFFER_SIZE, 1 << 40
        )
        if self.stream_buffer_size & (self.stream_buffer_size - 1):
            raise ValueError(
                f"QuicConfiguration.stream_buffer_size must be a power of two, "
                f"got {self.stream_buffer_size!r}"
            )

        # Congestion control.
        cca = self.congestion_control_algorithm
        if cca is None:
            cca = "bbr"  # aiopquic 0.6.1: None = the engine's default
        if not isinstance(cca, str):
            raise TypeError(
                f"QuicConfiguration.congestion_control_algorithm must be a str, "
                f"got {type(cca).__name__}: {cca!r}"
            )
        name = cca.lower()
        if name in _UNSUPPORTED_CC:
            raise ValueError(
                f"QuicConfiguration.congestion_control_algorithm: {cca!r} is a picoquic "
                f"controller that ngtcp2 does not have (choose one of "
                f"{', '.join(map(repr, CONGESTION_CONTROL_ALGORITHMS))})"
            )
        if name not in CONGESTION_CONTROL_ALGORITHMS and name not in CONGESTION_CONTROL_ALIASES:
            raise ValueError(
                f"QuicConfiguration.congestion_control_algorithm: unknown algorithm {cca!r} "
                f"(choose one of {', '.join(map(repr, CONGESTION_CONTROL_ALGORITHMS))})"
            )
        self.congestion_control_algorithm = name

        self._validate_compat_fields()

        # Key log.
        slf = self.secrets_log_file
        if slf is not None:
            if isinstance(slf, os.PathLike):
                self.secrets_log_file = _fspath("secrets_log_file", slf)
            elif isinstance(slf, str):
                if not slf:
                    raise ValueError("QuicConfiguration.secrets_log_file must not be an empty path")
            elif not callable(getattr(slf, "write", None)):
                raise TypeError(
                    f"QuicConfiguration.secrets_log_file must be a text file object, a path or "
                    f"None, got {type(slf).__name__}"
                )

    def _validate_credentials(self) -> None:
        """aioquic's ``cryptography`` objects to PEM; 0.6.1's certificate/key files loaded."""
        cert = self.certificate
        chain = self.certificate_chain
        if isinstance(chain, (list, tuple)):
            self.certificate_chain = chain = b"".join(
                _cert_pem(f"certificate_chain[{i}]", c) for i, c in enumerate(chain)
            )
        if cert is not None:
            if self.certificate_file is not None:
                raise ValueError(
                    "QuicConfiguration.certificate and certificate_file are both set "
                    "(give the certificate one way)"
                )
            pem = _cert_pem("certificate", cert)
            rest = chain if isinstance(chain, bytes) else b""
            if not rest.startswith(pem):
                self.certificate_chain = pem + rest
        key = self.private_key
        if key is not None and hasattr(key, "private_bytes"):
            from cryptography.hazmat.primitives import serialization

            self.private_key = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        if self.private_key_file is not None and self.certificate_file is None:
            raise ValueError(
                "QuicConfiguration.private_key_file is set without certificate_file "
                "(set both, or call load_cert_chain())"
            )
        if self.certificate_file is not None:
            certfile = _fspath("certificate_file", self.certificate_file)
            keyfile = (
                None
                if self.private_key_file is None
                else _fspath("private_key_file", self.private_key_file)
            )
            loaded = (
                self.certificate_chain is not None
                and self.private_key is not None
                and self.certfile == certfile
                and (keyfile is None or self.keyfile == keyfile)
            )
            if not loaded:
                self.load_cert_chain(certfile, keyfile, self.private_key_password)
            self.certificate_file, self.private_key_file = certfile, keyfile

    def _validate_compat_fields(self) -> None:
        """aiopquic 0.6.1 and aioquic fields: honoured, or only their defaults accepted."""
        for name in ("max_connections", "event_ring_capacity", "datagram_max_payload"):
            value = getattr(self, name)
            if value is not None:
                high = {"event_ring_capacity": 1 << 20, "datagram_max_payload": 65535}.get(
                    name, 1 << 31
                )
                _check_int_range(name, value, 64 if name == "event_ring_capacity" else 1, high)
        if self.pmtud is not None:
            if not isinstance(self.pmtud, str):
                raise TypeError(
                    f"QuicConfiguration.pmtud must be a str or None, "
                    f"got {type(self.pmtud).__name__}"
                )
            self.pmtud = self.pmtud.lower()
            if self.pmtud not in ("basic", "blocked"):
                _unsupported(
                    "pmtud",
                    self.pmtud,
                    "choose None or 'basic' (path MTU discovery on) or 'blocked' (off); "
                    "picoquic's 'delayed' mode does not exist in ngtcp2",
                )
        _check_int_range("max_half_open", self.max_half_open, 1, 1 << 20)
        if self.retry_threshold is not None:
            _check_int_range("retry_threshold", self.retry_threshold, 1, 1 << 20)
        _check_optional_number("handshake_rate_per_source", self.handshake_rate_per_source,
                               0, 1e9)
        _check_optional_number("keep_alive_interval", self.keep_alive_interval, 0, 86400)
        _check_optional_number("socket_buffer_size", self.socket_buffer_size, 4096, 1 << 30,
                               integer=True)
        _only_default(
            "tx_max_queued_bytes",
            self.tx_max_queued_bytes,
            (None, 0),
            "there is no process-wide send gate here; backpressure is per stream "
            "(stream_buffer_size / stream_ring_cap and writer.drain()); None or 0 only",
        )
        if self.qlog_dir is not None:
            self.qlog_dir = _fspath("qlog_dir", self.qlog_dir)
            _check_is_dir("qlog_dir", self.qlog_dir, "")
        if self.quic_logger is not None:
            for method in ("start_trace", "end_trace"):
                if not callable(getattr(self.quic_logger, method, None)):
                    raise TypeError(
                        f"QuicConfiguration.quic_logger must be a QuicLogger (an object with "
                        f"start_trace() and end_trace()), got {type(self.quic_logger).__name__}"
                        f" without {method}()")
        _check_optional_number("datagram_ring_bytes", self.datagram_ring_bytes, 1024, 1 << 30,
                               integer=True)
        _only_default(
            "key_exchange_groups",
            self.key_exchange_groups,
            (None,),
            "the TLS groups are fixed by the engine's GnuTLS priority string (X25519, "
            "SECP256R1, ...; GnuTLS 3.7 has no post-quantum group)",
        )
        self._cipher_priority()
        _only_default(
            "key_update_interval",
            self.key_update_interval,
            (None,),
            "no automatic key updates; call QuicConnection.request_key_update()",
        )
        if self.session_ticket_file is not None:
            self.session_ticket_file = _fspath("QuicConfiguration.session_ticket_file",
                                               self.session_ticket_file)
            if os.path.isdir(self.session_ticket_file):
                raise ValueError(f"QuicConfiguration.session_ticket_file "
                                 f"{self.session_ticket_file!r} is a directory (session "
                                 f"resumption needs a file)")
        if self.session_ticket is not None:
            session_ticket_blob(self.session_ticket)  # ValueError naming the field
        if not isinstance(self.early_data, bool):
            raise TypeError(f"QuicConfiguration.early_data must be a bool, "
                            f"got {type(self.early_data).__name__}")
        _only_default(
            "ip_family",
            self.ip_family,
            (None, socket.AF_UNSPEC),
            "the socket's family follows the address given to connect()/serve() "
            "(serve on '::' or '0.0.0.0')",
        )
        versions = self.supported_versions
        if versions is not None and not isinstance(versions, (list, tuple)):
            raise TypeError(
                f"QuicConfiguration.supported_versions must be a list of int or None, "
                f"got {type(versions).__name__}"
            )
        if versions is not None:
            if not versions or len(set(versions)) != len(versions) or len(versions) > 4 or \
                    any(not isinstance(v, int) or
                        (v not in _VERSION_NAMES and not is_reserved_version(v))
                        for v in versions) or \
                    not any(v in _VERSION_NAMES for v in versions):
                _unsupported(
                    "supported_versions",
                    versions,
                    f"give QUIC versions 1 ({QUIC_V1:#x}) and/or 2 ({QUIC_V2:#x}), each once, "
                    f"in order of preference, optionally with reserved versions "
                    f"(0x?a?a?a?a, to force Version Negotiation); at most 4 "
                    f"(or None: version 1 only)",
                )
        if self.original_version is not None:
            offered = list(versions) if versions is not None else [QUIC_V1]
            if self.original_version not in offered:
                _unsupported(
                    "original_version",
                    self.original_version,
                    f"a client starts in one of supported_versions "
                    f"({', '.join(_VERSION_NAMES.get(v, hex(v)) for v in offered)})",
                )
        _check_optional_number("initial_rtt", self.initial_rtt, 0.0001, 60)
        _check_int_range("connection_id_length", self.connection_id_length, 8, 20)
        _check_int_range("quic_lb_config_id", self.quic_lb_config_id, 0, 6)
        for name, high in (("network_poll_us", 1_000_000), ("ack_floor_us", 25_000),
                           ("stream_window_start", 1 << 40)):
            if getattr(self, name) is not None:
                _check_int_range(name, getattr(self, name), 0, high)
        if self.quic_lb_server_id is not None:
            sid = self.quic_lb_server_id
            if not isinstance(sid, (bytes, bytearray)):
                raise TypeError(f"QuicConfiguration.quic_lb_server_id must be bytes, got "
                                f"{type(sid).__name__}")
            if not 1 <= len(sid) <= 15:
                raise ValueError(f"QuicConfiguration.quic_lb_server_id must be 1 to 15 bytes, "
                                 f"got {len(sid)}")
            if self.connection_id_length < 1 + len(sid) + 4:
                raise ValueError(
                    f"QuicConfiguration.connection_id_length {self.connection_id_length} is "
                    f"too short for quic_lb_server_id of {len(sid)} bytes: QUIC-LB needs at "
                    f"least {1 + len(sid) + 4} (1 + server ID + a 4-byte nonce)")
        if self.token is not None and not isinstance(self.token, (bytes, bytearray)):
            raise TypeError(
                f"QuicConfiguration.token must be bytes, got {type(self.token).__name__}"
            )
        if self.token and len(self.token) > 4096:
            raise ValueError(
                f"QuicConfiguration.token is {len(self.token)} bytes: a server's address "
                "validation token is at most a few hundred bytes (limit 4096)"
            )
        if not isinstance(self.quantum_readiness_test, bool):
            raise TypeError(f"QuicConfiguration.quantum_readiness_test must be a bool, "
                            f"got {type(self.quantum_readiness_test).__name__}")

    def _validate_alpn(self) -> None:
        protocols = self.alpn_protocols
        if protocols is None:
            return
        if isinstance(protocols, (str, bytes)):
            raise TypeError(
                f"QuicConfiguration.alpn_protocols must be a list of str, got a single "
                f"{type(protocols).__name__} {protocols!r} (write [{protocols!r}])"
            )
        try:
            items = list(protocols)
        except TypeError:
            raise TypeError(
                f"QuicConfiguration.alpn_protocols must be a list of str, "
                f"got {type(protocols).__name__}"
            ) from None
        for index, protocol in enumerate(items):
            if not isinstance(protocol, str):
                raise TypeError(
                    f"QuicConfiguration.alpn_protocols[{index}] must be a str, "
                    f"got {type(protocol).__name__}: {protocol!r}"
                )
            if not protocol:
                raise ValueError(f"QuicConfiguration.alpn_protocols[{index}] is an empty string")
            size = len(protocol.encode("utf-8"))
            if size > 255:
                raise ValueError(
                    f"QuicConfiguration.alpn_protocols[{index}] is {size} bytes long "
                    f"(at most 255): {protocol[:40]!r}..."
                )
        self.alpn_protocols = items

    # ----------------------------------------------------------------------------- loaders

    def load_cert_chain(
        self,
        certfile: StrPath,
        keyfile: Optional[StrPath] = None,
        password: Optional[Union[bytes, str]] = None,
    ) -> None:
        """Load a certificate (with its chain) and the private key, reading the files now.

        Args:
            certfile: PEM file with the certificate first, then any intermediates.  It may
                also hold the private key.
            keyfile: PEM file with the private key; ``None`` takes the key from ``certfile``.
            password: password of an encrypted private key (:class:`str` or :class:`bytes`).

        Sets :attr:`certificate_chain`, :attr:`private_key`, :attr:`private_key_password`,
        :attr:`certfile` and :attr:`keyfile`, and aiopquic 0.6.1's :attr:`certificate_file`
        and :attr:`private_key_file` (clearing aioquic's :attr:`certificate`).

        Raises:
            FileNotFoundError: a file does not exist (other :class:`OSError` subclasses when it
                cannot be read); the message names the path.
            ValueError: ``certfile`` has no PEM certificate, the key file has no PEM private key,
                or the key is encrypted and no password was given; the message names the file.
        """
        cert_path = _fspath("certfile", certfile)
        cert_pem = _read_file(cert_path, "certificate file")
        certificates = _PEM_CERTIFICATE_RE.findall(cert_pem)
        if not certificates:
            raise ValueError(
                f"certificate file {cert_path!r} contains no PEM certificate "
                "('-----BEGIN CERTIFICATE-----' block)"
            )

        if keyfile is None:
            key_path, key_pem = cert_path, cert_pem
            where = f"certificate file {cert_path!r} (no keyfile was given)"
        else:
            key_path = _fspath("keyfile", keyfile)
            key_pem = _read_file(key_path, "private key file")
            where = f"private key file {key_path!r}"
        match = _PEM_PRIVATE_KEY_RE.search(key_pem)
        if match is None:
            raise ValueError(
                f"{where} contains no PEM private key ('-----BEGIN ... PRIVATE KEY-----' block)"
            )
        private_key = match.group(0)
        encrypted = match.group(1) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in (
            private_key
        )

        if isinstance(password, str):
            password_bytes: Optional[bytes] = password.encode("utf-8")
        elif password is None or isinstance(password, bytes):
            password_bytes = password
        elif isinstance(password, (bytearray, memoryview)):
            password_bytes = bytes(password)
        else:
            raise TypeError(
                f"load_cert_chain: password must be str, bytes or None, "
                f"got {type(password).__name__}"
            )
        if encrypted and password_bytes is None:
            raise ValueError(f"{where} holds an encrypted private key and no password was given")

        self.certificate_chain = b"".join(_ensure_newline(c) for c in certificates)
        self.private_key = _ensure_newline(private_key)
        self.private_key_password = password_bytes
        self.certfile = cert_path
        self.keyfile = key_path
        # aiopquic 0.6.1 names (validate() does not load them again)
        self.certificate_file = cert_path
        self.private_key_file = None if keyfile is None else key_path
        self.certificate = None

    def load_verify_locations(
        self,
        cafile: Optional[StrPath] = None,
        capath: Optional[StrPath] = None,
        cadata: Optional[Union[bytes, str]] = None,
    ) -> None:
        """Add trusted CA certificates used to verify the peer's certificate.

        Only the arguments given are set, so several calls add up (like
        :meth:`ssl.SSLContext.load_verify_locations`); aioquic instead resets the others.

        Args:
            cafile: PEM file of CA certificates.
            capath: directory of PEM CA certificates.
            cadata: PEM CA certificates as :class:`str` or :class:`bytes` (stored as bytes).

        Raises:
            TypeError: no argument was given.
            FileNotFoundError: ``cafile`` or ``capath`` does not exist; the message names it.
            ValueError: ``cafile`` or ``cadata`` contains no PEM certificate.
        """
        if cafile is None and capath is None and cadata is None:
            raise TypeError("load_verify_locations: cafile, capath and cadata cannot all be None")
        if cafile is not None:
            path = _fspath("cafile", cafile)
            pem = _read_file(path, "CA file")
            if not _PEM_CERTIFICATE_RE.search(pem):
                raise ValueError(
                    f"CA file {path!r} contains no PEM certificate "
                    "('-----BEGIN CERTIFICATE-----' block)"
                )
            self.cafile = path
        if capath is not None:
            path = _fspath("capath", capath)
            _check_is_dir("capath", path)
            self.capath = path
        if cadata is not None:
            data = _pem_bytes("cadata", cadata)
            if not _PEM_CERTIFICATE_RE.search(data):
                raise ValueError(
                    "load_verify_locations: cadata contains no PEM certificate "
                    "('-----BEGIN CERTIFICATE-----' block)"
                )
            self.cadata = data


# ---------------------------------------------------------------------------------- helpers


def _fspath(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str):
            return path
        return os.fsdecode(path)
    raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise type(exc)(exc.errno, f"cannot read {what} ({reason})", path) from exc


def _check_is_file(name: str, path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"QuicConfiguration.{name}: {what} does not exist", path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            21, f"QuicConfiguration.{name}: {what} is a directory (use capath)", path
        )


def _check_is_dir(name: str, path: str, hint: str = " (use cafile)") -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"QuicConfiguration.{name}: directory does not exist", path)
    if not os.path.isdir(path):
        raise NotADirectoryError(20, f"QuicConfiguration.{name}: not a directory{hint}", path)


def _pem_bytes(name: str, value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be PEM text (ASCII only)") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be PEM bytes or str, got {type(value).__name__}")


def _unsupported(name: str, value: object, reason: str) -> None:
    raise ValueError(f"QuicConfiguration.{name}={value!r} is not supported: {reason}")


def _check_optional_number(name: str, value: object, low: float, high: float, *,
                           integer: bool = False) -> None:
    """``None``, or a number in [low, high] (an int when ``integer``); else TypeError /
    ValueError naming ``name``.  0 is accepted for non-integer settings (it means off)."""
    if value is None:
        return
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"QuicConfiguration.{name} must be "
                        f"{'an int' if integer else 'a number'} or None, "
                        f"got {type(value).__name__}")
    if not integer and value == 0:
        return
    if not low <= value <= high:  # type: ignore[operator]
        raise ValueError(f"QuicConfiguration.{name} must be in [{low}, {high}], got {value!r}")


def _only_default(name: str, value: object, allowed: tuple[object, ...], reason: str) -> None:
    """Accept ``value`` only when it is one of ``allowed`` (compared by identity for None and
    bools, by value otherwise); else raise ValueError naming ``name`` and the reason."""
    for ok in allowed:
        if ok is None or isinstance(ok, bool):
            if value is ok:
                return
        elif not isinstance(value, bool) and value == ok:
            return
    _unsupported(name, value, reason)


def _cert_pem(name: str, cert: object) -> bytes:
    """A certificate as PEM bytes: a ``cryptography`` ``x509.Certificate`` or PEM already."""
    if hasattr(cert, "public_bytes"):
        from cryptography.hazmat.primitives import serialization

        pem = cert.public_bytes(serialization.Encoding.PEM)
        if isinstance(pem, bytes):
            return _ensure_newline(pem)
    if isinstance(cert, (bytes, bytearray, memoryview)):
        raw = bytes(cert)
        if _PEM_CERTIFICATE_RE.search(raw):
            return _ensure_newline(raw)
        raise ValueError(f"QuicConfiguration.{name} contains no PEM certificate")
    raise TypeError(
        f"QuicConfiguration.{name} must be a cryptography x509.Certificate or PEM bytes, "
        f"got {type(cert).__name__}"
    )


def _ensure_newline(block: bytes) -> bytes:
    return block if block.endswith(b"\n") else block + b"\n"


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"QuicConfiguration.{name} must be a bool, got {type(value).__name__}: {value!r}"
        )


def _check_positive_number(name: str, value: object, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"QuicConfiguration.{name} must be a number of {unit}, "
            f"got {type(value).__name__}: {value!r}"
        )
    if not value > 0 or value == float("inf"):
        raise ValueError(
            f"QuicConfiguration.{name} must be a positive, finite number of {unit}, got {value!r}"
        )
    return float(value)


def _check_int_range(name: str, value: object, low: int, high: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"QuicConfiguration.{name} must be an int, got {type(value).__name__}: {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(
            f"QuicConfiguration.{name} must be between {low} and {high}, got {value!r}{hint}"
        )

