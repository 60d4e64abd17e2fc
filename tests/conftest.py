"""Shared fixtures for the aiopquic test suite.

Certificates come from trustme (written once per session); ``server_config`` and
``client_config`` are factories returning a fresh ``QuicConfiguration`` each call, so a test
can pass overrides: ``server_config(max_datagram_frame_size=65535)``.

Async tests run on anyio's pytest plugin with the asyncio backend (the API under test is
asyncio-specific).  Helpers shared by several test modules live in ``quic_helpers.py`` next
to this file; the directory is put on ``sys.path`` here so ``import quic_helpers`` works
whatever pytest import mode is configured.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

import pytest
import trustme

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long transfers (still run by default; deselect with -m 'not slow')"
    )


@pytest.fixture
def anyio_backend():
    return "asyncio"


@dataclass(frozen=True)
class CertPaths:
    directory: str
    ca: str  # PEM of the trust anchor the client should use
    cert: str  # leaf certificate followed by any intermediates
    key: str  # leaf private key (PEM)
    password: Optional[bytes] = None  # set when the key file is encrypted


def write_trustme_certs(directory, issuer: trustme.CA, root: trustme.CA) -> CertPaths:
    """Issue a leaf for localhost/127.0.0.1 from ``issuer`` and write ca/cert/key PEM files."""
    os.makedirs(str(directory), exist_ok=True)
    leaf = issuer.issue_cert("localhost", "127.0.0.1")
    ca_path = os.path.join(str(directory), "ca.pem")
    cert_path = os.path.join(str(directory), "cert.pem")
    key_path = os.path.join(str(directory), "key.pem")
    root.cert_pem.write_to_path(ca_path)
    leaf.private_key_pem.write_to_path(key_path)
    with open(cert_path, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    return CertPaths(directory=str(directory), ca=ca_path, cert=cert_path, key=key_path)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> CertPaths:
    """A CA and a leaf certificate (issued directly by the CA) for localhost and 127.0.0.1."""
    ca = trustme.CA()
    return write_trustme_certs(tmp_path_factory.mktemp("certs"), ca, ca)


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory) -> CertPaths:
    """An unrelated CA (and leaf): trusting its ca.pem must NOT validate ``certs``' server."""
    ca = trustme.CA()
    return write_trustme_certs(tmp_path_factory.mktemp("other-certs"), ca, ca)


@pytest.fixture(scope="session")
def chain_certs(tmp_path_factory) -> CertPaths:
    """root CA -> intermediate CA -> leaf.  ca.pem holds only the root; cert.pem holds the
    leaf then the intermediate, so the server must send the chain for verification to pass."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    return write_trustme_certs(tmp_path_factory.mktemp("chain-certs"), intermediate, root)


@pytest.fixture
def server_config(certs):
    """Factory: server QuicConfiguration (alpn ["test"], trustme cert loaded) with overrides.

    ``cert_paths=`` selects another CertPaths set (e.g. ``chain_certs``)."""

    def make(cert_paths: CertPaths = None, **overrides):
        from aiopquic.quic.configuration import QuicConfiguration

        paths = cert_paths if cert_paths is not None else certs
        kwargs = {"is_client": False, "alpn_protocols": ["test"]}
        kwargs.update(overrides)
        configuration = QuicConfiguration(**kwargs)
        configuration.load_cert_chain(paths.cert, paths.key)
        return configuration

    return make


@pytest.fixture
def client_config(certs):
    """Factory: client QuicConfiguration (alpn ["test"], cafile = trustme CA,
    server_name "localhost") with overrides."""

    def make(**overrides):
        from aiopquic.quic.configuration import QuicConfiguration

        kwargs = {
            "is_client": True,
            "alpn_protocols": ["test"],
            "server_name": "localhost",
            "cafile": certs.ca,
        }
        kwargs.update(overrides)
        return QuicConfiguration(**kwargs)

    return make


ENCRYPTED_KEY_PASSWORD = b"correct horse"


@pytest.fixture(scope="session")
def encrypted_key_certs(tmp_path_factory) -> CertPaths:
    """A CA and a localhost leaf whose key file is an encrypted PKCS#8 PEM
    (password ``ENCRYPTED_KEY_PASSWORD``).  trustme cannot encrypt keys, so this uses
    cryptography directly."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = str(tmp_path_factory.mktemp("encrypted-key-certs"))
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiopquic test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(
        directory=directory,
        ca=os.path.join(directory, "ca.pem"),
        cert=os.path.join(directory, "cert.pem"),
        key=os.path.join(directory, "key.pem"),
        password=ENCRYPTED_KEY_PASSWORD,
    )
    with open(paths.ca, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths.cert, "wb") as f:
        f.write(leaf_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths.key, "wb") as f:
        f.write(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(ENCRYPTED_KEY_PASSWORD),
            )
        )
    return paths
