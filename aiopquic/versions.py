"""Print the versions of aiopquic and of the native libraries it actually loaded.

Usage::

    python -m aiopquic.versions

prints for example::

    aiopquic 0.1.0
    ngtcp2 1.11.0
    gnutls 3.7.9

The ngtcp2 and GnuTLS versions are asked from the loaded libraries at run time, not from the
headers the extension was built against.
"""

import sys

__all__ = ["main", "versions"]


def versions() -> list[tuple[str, str]]:
    """Return ``[(name, version), ...]`` for aiopquic, ngtcp2 and GnuTLS (in that order).

    Raises :class:`ImportError` when the native extension is not built; the message says how
    to build it.
    """
    from aiopquic import __version__

    try:
        from aiopquic._native import native_versions
    except ImportError as exc:
        raise ImportError(
            f"aiopquic's native extension (aiopquic._native._aiopquic) cannot be imported: {exc}. "
            "Build it with `make setup` (or `pip install -e .`) from the source tree."
        ) from exc
    native: dict[str, str] = native_versions()
    result = [("aiopquic", __version__)]
    for name in ("ngtcp2", "gnutls"):
        result.append((name, native.get(name, "unknown")))
    for name in sorted(set(native) - {"ngtcp2", "gnutls"}):
        result.append((name, native[name]))
    return result


def main() -> int:
    """Print one ``name version`` line per component; return the process exit status."""
    try:
        items = versions()
    except ImportError as exc:
        from aiopquic import __version__

        print(f"aiopquic {__version__}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, version in items:
        print(f"{name} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
