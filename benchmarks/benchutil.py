"""Small helpers the benchmark drivers share (run as scripts from benchmarks/, so this
module is importable by its bare name)."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Optional

_SIOCGIFMTU = 0x8921


def lo_mtu() -> Optional[int]:
    """The loopback MTU of this process's network namespace (SIOCGIFMTU: /sys/class/net
    shows the namespace that mounted /sys, not ours after ``unshare -n``)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFMTU, struct.pack("16si", b"lo", 0))
        return int(struct.unpack("16si", raw)[1])
    except OSError:
        return None


def certs(directory: str) -> tuple[str, str, str]:
    """A throwaway CA and a certificate for localhost / 127.0.0.1 (trustme), written to
    ``directory``: (certificate chain, private key, CA file) paths."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, cafile = (os.path.join(directory, n) for n in ("c.pem", "k.pem", "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(cert)
    for pem in leaf.cert_chain_pems[1:]:
        with open(cert, "ab") as f:
            f.write(pem.bytes())
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(cafile)
    return cert, key, cafile
