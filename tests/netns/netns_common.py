"""What the scripts run inside network namespaces (and the tests around them) share."""

from __future__ import annotations

import asyncio
import os
import tempfile

from aiopquic._native import make_self_signed


def self_signed_files() -> tuple[str, str]:
    """A fresh self-signed certificate for localhost, 127.0.0.1 and ::1: (cert, key) paths
    in a new temporary directory."""
    cert_pem, key_pem = make_self_signed("localhost,127.0.0.1,::1")
    tmp = tempfile.mkdtemp()
    cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
    with open(cert, "wb") as f:
        f.write(cert_pem)
    with open(key, "wb") as f:
        f.write(key_pem)
    return cert, key


def counting_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A stream handler that reads the stream to its end and answers with the byte count."""
    async def run() -> None:
        n = 0
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            n += len(data)
        writer.write(str(n).encode())
        writer.write_eof()

    asyncio.get_running_loop().create_task(run())
