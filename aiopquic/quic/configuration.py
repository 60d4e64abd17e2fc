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
"""

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO, Union

__all__ = [
    "CONGESTION_CONTROL_ALGORITHMS",
    "MIN_STREAM_BUFFER_SIZE",
    "QuicConfiguration",
]

StrPath = Union[str, "os.PathLike[str]"]
"""A filesystem path: :class:`str` or :class:`os.PathLike`."""

CONGESTION_CONTROL_ALGORITHMS: tuple[str, ...] = ("reno", "cubic", "bbr")
"""Accepted values of :attr:`QuicConfiguration.congestion_control_algorithm`."""

MIN_STREAM_BUFFER_SIZE = 64 * 1024
"""Smallest accepted :attr:`QuicConfiguration.stream_buffer_size` (bytes)."""

_MAX_DATAGRAM_FRAME_SIZE = 65535
_MAX_VARINT = (1 << 62) - 1
_VERIFY_MODES = (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED)

_PEM_CERTIFICATE_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)
# PKCS#8 ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") and legacy ("RSA PRIVATE KEY", "EC PRIVATE KEY").
_PEM_PRIVATE_KEY_RE = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL
)


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
    """Idle timeout in seconds: the connection closes if nothing is received for this long."""

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
    ceiling on paths with broken PMTUD."""

    max_datagram_frame_size: Optional[int] = None
    """Largest DATAGRAM frame accepted (1..65535), advertised to the peer.  ``None`` turns
    datagrams off."""

    secrets_log_file: Optional[Union[TextIO, str]] = None
    """Where TLS secrets are logged in NSS key log format (for Wireshark): a text file object
    (as in aioquic) or a path (aiopquic), which is opened for appending.  GnuTLS also honours the
    ``SSLKEYLOGFILE`` environment variable by itself."""

    congestion_control_algorithm: str = "cubic"
    """Congestion controller: ``"reno"``, ``"cubic"`` or ``"bbr"`` (case-insensitive)."""

    stream_buffer_size: int = 1024 * 1024
    """*(aiopquic)* Bytes of each stream's send ring: a power of two, at least 64 KiB.
    ``writer.drain()`` waits while the ring is full."""

    quic_logger: Any = None
    """Accepted for aioquic compatibility and ignored."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------ checks

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
        self.idle_timeout = _check_positive_number("idle_timeout", self.idle_timeout, "seconds")
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
                1,
                _MAX_DATAGRAM_FRAME_SIZE,
                hint=" (use None to turn datagrams off)",
            )
        _check_int_range("max_datagram_size", self.max_datagram_size, 1200, 65000)
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
        if not isinstance(cca, str):
            raise TypeError(
                f"QuicConfiguration.congestion_control_algorithm must be a str, "
                f"got {type(cca).__name__}: {cca!r}"
            )
        if cca.lower() not in CONGESTION_CONTROL_ALGORITHMS:
            raise ValueError(
                f"QuicConfiguration.congestion_control_algorithm: unknown algorithm {cca!r} "
                f"(choose one of {', '.join(map(repr, CONGESTION_CONTROL_ALGORITHMS))})"
            )
        self.congestion_control_algorithm = cca.lower()

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
        :attr:`certfile` and :attr:`keyfile`.

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


def _check_is_dir(name: str, path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"QuicConfiguration.{name}: directory does not exist", path)
    if not os.path.isdir(path):
        raise NotADirectoryError(
            20, f"QuicConfiguration.{name}: not a directory (use cafile)", path
        )


def _pem_bytes(name: str, value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be PEM text (ASCII only)") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be PEM bytes or str, got {type(value).__name__}")


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
