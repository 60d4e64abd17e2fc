"""QuicConfiguration: defaults, validation, certificate and CA loading (no network)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aiopquic.quic.configuration import QuicConfiguration

KiB = 1024
MiB = 1024 * 1024


def test_defaults():
    c = QuicConfiguration()
    assert c.alpn_protocols is None
    assert c.is_client is True
    assert c.server_name is None
    assert c.verify_mode is None
    assert c.cafile is None and c.capath is None and c.cadata is None
    assert c.certificate_chain is None and c.private_key is None
    assert c.private_key_password is None
    assert c.idle_timeout == 60.0
    assert c.handshake_timeout == 10.0
    assert c.max_data == 16 * MiB
    assert c.max_stream_data == 8 * MiB
    assert c.max_streams_bidi == 128
    assert c.max_streams_uni == 128
    assert c.max_datagram_frame_size is None
    assert c.secrets_log_file is None
    assert c.congestion_control_algorithm == "bbr"
    assert c.stream_buffer_size == 4 * MiB
    assert c.quic_logger is None


def test_aioquic_style_keyword_construction():
    c = QuicConfiguration(
        alpn_protocols=["h3", "test"],
        is_client=False,
        idle_timeout=5.0,
        max_datagram_frame_size=65535,
        quic_logger=None,
    )
    assert c.alpn_protocols == ["h3", "test"]
    assert c.is_client is False
    assert c.idle_timeout == 5.0
    assert c.max_datagram_frame_size == 65535


@pytest.mark.parametrize("name", ["reno", "cubic", "bbr"])
def test_congestion_control_known(name):
    assert QuicConfiguration(congestion_control_algorithm=name).congestion_control_algorithm == name


def test_congestion_control_is_lowercased():
    assert (
        QuicConfiguration(congestion_control_algorithm="BBR").congestion_control_algorithm == "bbr"
    )


def test_congestion_control_unknown_names_culprit():
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(congestion_control_algorithm="vegas-turbo")
    assert "vegas-turbo" in str(excinfo.value)


@pytest.mark.parametrize("size", [-1, 1 << 62])
def test_max_datagram_frame_size_out_of_range(size):
    with pytest.raises(ValueError):
        QuicConfiguration(max_datagram_frame_size=size)


@pytest.mark.parametrize("size", [1, 1200, 65535, 65536, (1 << 62) - 1])
def test_max_datagram_frame_size_in_range(size):
    assert QuicConfiguration(max_datagram_frame_size=size).max_datagram_frame_size == size


def test_alpn_empty_entry_rejected():
    with pytest.raises(ValueError):
        QuicConfiguration(alpn_protocols=["ok", ""])


def test_alpn_too_long_rejected_by_bytes_not_chars():
    QuicConfiguration(alpn_protocols=["x" * 255])  # exactly 255 bytes: fine
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(alpn_protocols=["good", "y" * 256])
    assert "yyyy" in str(excinfo.value)
    with pytest.raises(ValueError):
        # 128 characters but 256 bytes in UTF-8
        QuicConfiguration(alpn_protocols=["\u00e9" * 128])


# -- load_cert_chain ----------------------------------------------------------------------


def test_load_cert_chain_reads_pem_now(certs):
    c = QuicConfiguration(is_client=False)
    c.load_cert_chain(certs.cert, certs.key)
    assert isinstance(c.certificate_chain, bytes)
    assert isinstance(c.private_key, bytes)
    assert b"-----BEGIN CERTIFICATE-----" in c.certificate_chain
    assert b"PRIVATE KEY-----" in c.private_key
    assert c.certfile == certs.cert
    assert c.keyfile == certs.key


def test_load_cert_chain_keeps_intermediates(chain_certs):
    c = QuicConfiguration(is_client=False)
    c.load_cert_chain(chain_certs.cert, chain_certs.key)
    assert c.certificate_chain.count(b"-----BEGIN CERTIFICATE-----") == 2


def test_load_cert_chain_combined_file(certs, tmp_path):
    combined = tmp_path / "combined.pem"
    with open(certs.key, "rb") as k, open(certs.cert, "rb") as ce:
        combined.write_bytes(k.read() + ce.read())
    c = QuicConfiguration(is_client=False)
    c.load_cert_chain(str(combined))
    assert b"-----BEGIN CERTIFICATE-----" in c.certificate_chain
    assert b"PRIVATE KEY-----" in c.private_key
    assert b"PRIVATE KEY" not in c.certificate_chain


def test_load_cert_chain_missing_certfile_names_path(tmp_path):
    missing = str(tmp_path / "no-such-cert.pem")
    with pytest.raises(OSError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(missing, missing)
    assert missing in str(excinfo.value)


def test_load_cert_chain_missing_keyfile_names_path(certs, tmp_path):
    missing = str(tmp_path / "no-such-key.pem")
    with pytest.raises(OSError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(certs.cert, missing)
    assert missing in str(excinfo.value)


def test_load_cert_chain_non_pem_certfile_names_path(certs, tmp_path):
    garbage = tmp_path / "garbage-cert.pem"
    garbage.write_bytes(os.urandom(512))
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(str(garbage), certs.key)
    assert str(garbage) in str(excinfo.value)


def test_load_cert_chain_key_only_in_certfile_names_path(certs):
    # A file holding a private key but no CERTIFICATE block is not a certificate file.
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(certs.key, certs.key)
    assert certs.key in str(excinfo.value)


def test_load_cert_chain_keyfile_without_key_names_path(certs):
    # The certificate file has no PRIVATE KEY block.
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(certs.cert, certs.cert)
    assert certs.cert in str(excinfo.value)


def test_load_cert_chain_certfile_alone_without_key_names_path(certs):
    with pytest.raises(ValueError) as excinfo:
        QuicConfiguration(is_client=False).load_cert_chain(certs.cert)
    assert certs.cert in str(excinfo.value)


@pytest.mark.parametrize("password", ["s3cret", b"s3cret"])
def test_load_cert_chain_encrypted_key_with_password(certs, tmp_path, password):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assert b"ENCRYPTED PRIVATE KEY" in pem
    key_path = tmp_path / "encrypted-key.pem"
    key_path.write_bytes(pem)
    c = QuicConfiguration(is_client=False)
    c.load_cert_chain(certs.cert, str(key_path), password=password)
    assert c.private_key_password == b"s3cret"
    assert c.private_key == pem


# -- load_verify_locations ------------------------------------------------------------------


def test_load_verify_locations_cafile(certs):
    c = QuicConfiguration()
    c.load_verify_locations(cafile=certs.ca)
    assert c.cafile == certs.ca


def test_load_verify_locations_missing_cafile_names_path(tmp_path):
    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(FileNotFoundError) as excinfo:
        QuicConfiguration().load_verify_locations(cafile=missing)
    assert missing in str(excinfo.value)


def test_load_verify_locations_missing_capath_names_path(tmp_path):
    missing = str(tmp_path / "no-such-ca-dir")
    with pytest.raises(FileNotFoundError) as excinfo:
        QuicConfiguration().load_verify_locations(capath=missing)
    assert missing in str(excinfo.value)


def test_load_verify_locations_cadata_str_stored_as_bytes(certs):
    with open(certs.ca) as f:
        text = f.read()
    c = QuicConfiguration()
    c.load_verify_locations(cadata=text)
    assert c.cadata == text.encode("ascii")
