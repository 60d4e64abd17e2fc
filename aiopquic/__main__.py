"""``python -m aiopquic COMMAND``: ``serve`` (HTTP/3 + WebTransport echo server), ``get``
(HTTP/3 client), ``perf`` (loopback transfer demo) and ``versions`` (native libraries)."""

from __future__ import annotations

import sys
from typing import Optional

USAGE = """usage: python -m aiopquic COMMAND [options]
       python -m aiopquic --version

commands:
  serve     HTTP/3 server: files under --root (GET/HEAD), POST/PUT echo, WebTransport
            echo at /echo; prints the certificate's SHA-256 for serverCertificateHashes
  get       HTTP/3 client: python -m aiopquic get URL [-o FILE] [--cacert F | --insecure]
  perf      loopback transfer demo: server + client on 127.0.0.1, verified, timed
  versions  aiopquic, ngtcp2 and GnuTLS versions, whether they are bundled or the
            system's, and the Debian packages a wheel bundles (--json for all of it)

"python -m aiopquic COMMAND --help" describes a command's options.
"""


def main(argv: Optional[list[str]] = None) -> int:
    """Dispatch to a sub-command; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("-V", "--version"):
        from aiopquic import __version__

        sys.stdout.write(f"aiopquic {__version__}\n")
        return 0
    if command == "perf":
        from aiopquic.perf import main as perf_main

        return perf_main(rest)
    if command == "serve":
        from aiopquic.http3_tools import serve_main

        return serve_main(rest)
    if command == "get":
        from aiopquic.http3_tools import get_main

        return get_main(rest)
    if command == "versions":
        from aiopquic.versions import main as versions_main

        return versions_main(rest)
    sys.stderr.write(f"unknown command {command!r}\n" + USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
