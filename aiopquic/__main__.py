"""``python -m aiopquic COMMAND``: ``perf`` (loopback transfer demo)."""

from __future__ import annotations

import sys
from typing import Optional

USAGE = """usage: python -m aiopquic COMMAND [options]

commands:
  perf      loopback transfer demo: server + client on 127.0.0.1, verified, timed
"""


def main(argv: Optional[list[str]] = None) -> int:
    """Dispatch to a sub-command."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "perf":
        from aiopquic.perf import main as perf_main

        return perf_main(rest)
    sys.stderr.write(f"unknown command {command!r}\n" + USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
