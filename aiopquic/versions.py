"""Print the versions of aiopquic and of the native libraries it actually loaded.

Usage::

    python -m aiopquic versions [--json]      (or: python -m aiopquic.versions)

prints for example (an installed wheel)::

    aiopquic 0.7.0
    ngtcp2 1.11.0
    gnutls 3.7.9
    libngtcp2: bundled, .../site-packages/aiopquic.libs/libngtcp2-777980a9.so.16.2.9
    libngtcp2_crypto_gnutls: bundled, .../aiopquic.libs/libngtcp2_crypto_gnutls-8a4f7bdc.so.8.2.0
    libgnutls: bundled, .../aiopquic.libs/libgnutls-779b25d2.so.30.34.3
    bundled in this wheel (built 2026-12-06 on Debian GNU/Linux 12 (bookworm), glibc 2.36):
      libgnutls30 3.7.9-2+deb12u7 (source gnutls28, changelog 2026-...): 33 CVEs named ...
      ...

The ngtcp2 and GnuTLS versions are asked from the loaded libraries at run time, not from the
headers the extension was built against; which files were loaded comes from the process's
memory map, so "bundled" (the wheel's ``aiopquic.libs/``) or "system" is a fact about this
process.  A wheel carries ``aiopquic/_bundled.json`` (written when the wheel was built, see
vendor/wheel_manifest.py): the Debian package and exact version each bundled library was
copied from and the CVEs its Debian changelog names.  :func:`print_versions` prints the first
three facts in the layout of aiopquic 0.6.1's ``print_versions`` (``label:`` padded to 11
columns), which aiomoqt's version report calls.
"""

import json
import os
import re
import sys
from typing import Any, Optional, TextIO

__all__ = ["bundle_manifest", "loaded_libraries", "main", "print_versions", "versions"]

_LABEL_WIDTH = 11  # 0.6.1's column width, shared with aiomoqt's report


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


_LIB_NAMES = ("libngtcp2", "libngtcp2_crypto_gnutls", "libgnutls")
# libX.so.N (system) or libX-<8 hex>.so.N (renamed by auditwheel into aiopquic.libs/)
_LIB_FILE = re.compile(r"^(lib[A-Za-z0-9_+]+?)(?:-[0-9a-f]{8})?\.so(?:\.|$)")


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _bundle_dir() -> str:
    """Where auditwheel puts a wheel's libraries: ``aiopquic.libs`` beside the package."""
    return os.path.join(os.path.dirname(_package_dir()), "aiopquic.libs")


def loaded_libraries(maps: str = "/proc/self/maps") -> list[dict[str, Any]]:
    """The ngtcp2, ngtcp2_crypto_gnutls and GnuTLS files this process has mapped.

    One ``{"name", "path", "bundled"}`` dict per library, in that order; ``path`` is None when
    the library is not mapped (the extension is not imported, or not Linux); ``bundled`` is
    True when the file lives in the wheel's ``aiopquic.libs`` directory.  Imports the native
    extension first (ImportError when it cannot be).
    """
    import aiopquic._native  # noqa: F401  (maps the libraries)

    found: dict[str, str] = {}
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) < 6 or not fields[5].startswith("/"):
                    continue
                path = fields[5].strip()
                m = _LIB_FILE.match(os.path.basename(path))
                if m and m.group(1) in _LIB_NAMES:
                    found.setdefault(m.group(1), path)
    except OSError:
        pass
    bundle = os.path.realpath(_bundle_dir())
    result: list[dict[str, Any]] = []
    for name in _LIB_NAMES:
        mapped = found.get(name)
        bundled = mapped is not None and os.path.dirname(os.path.realpath(mapped)) == bundle
        result.append({"name": name, "path": mapped, "bundled": bundled})
    return result


def bundle_manifest() -> Optional[dict[str, Any]]:
    """The wheel's record of its bundled libraries (``aiopquic/_bundled.json``), or None for
    a build that links the system's libraries (an sdist or editable install)."""
    path = os.path.join(_package_dir(), "_bundled.json")
    try:
        with open(path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    return data


def _library_lines() -> list[str]:
    lines = []
    for lib in loaded_libraries():
        where = ("bundled" if lib["bundled"] else "system") if lib["path"] else "not loaded"
        lines.append(f"{lib['name']}: {where}" + (f", {lib['path']}" if lib["path"] else ""))
    manifest = bundle_manifest()
    if manifest is None:
        lines.append("bundled libraries: none (this build links the system's libraries)")
        return lines
    lines.append(f"bundled in this wheel (built {manifest.get('built')} on "
                 f"{manifest.get('built_on')}, glibc {manifest.get('glibc')}):")
    for entry in manifest.get("libraries", []):
        cves = list(entry.get("cves") or [])
        lines.append(f"  {entry.get('package') or entry.get('original')} "
                     f"{entry.get('version') or '?'} (Debian source {entry.get('source') or '?'}, "
                     f"changelog {entry.get('changelog_date')}), file {entry.get('file')}")
        if cves:
            lines.append(f"    named in its Debian changelog (fixed or not applicable): {len(cves)}"
                         " CVE(s), newest " + ", ".join(cves[-3:]))
        for adv in entry.get("advisories") or []:
            reach = "not reachable from aiopquic" if adv.get("reachable") is False else "open"
            lines.append(f"    known advisory ({reach}): {adv.get('id')}, fixed upstream in "
                         f"{adv.get('below')}: {adv.get('note')}")
    return lines


def print_versions(file: Optional[TextIO] = None) -> None:
    """Print aiopquic's, ngtcp2's and GnuTLS's versions, one ``label: version`` line each.

    The call aiopquic 0.6.1 offered (aiomoqt's ``print_versions`` chains to it); ``file``
    defaults to ``sys.stdout``.  Without the native extension the aiopquic line is followed
    by one saying why it cannot be imported; nothing is raised.
    """
    out = sys.stdout if file is None else file
    try:
        items = versions()
    except ImportError as exc:
        from aiopquic import __version__

        print(f"{'aiopquic:':<{_LABEL_WIDTH}}{__version__}", file=out)
        print(f"{'native:':<{_LABEL_WIDTH}}(not importable: {exc})", file=out)
        return
    for name, version in items:
        print(f"{name + ':':<{_LABEL_WIDTH}}{version}", file=out)


def main(argv: Optional[list[str]] = None) -> int:
    """Print one ``name version`` line per component, then where ngtcp2 and GnuTLS were loaded
    from and what the wheel bundles (``--json``: all of it as one JSON object); return the
    process exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        items = versions()
    except ImportError as exc:
        from aiopquic import __version__

        print(f"aiopquic {__version__}")
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "--json" in args:
        print(json.dumps({"versions": dict(items), "loaded": loaded_libraries(),
                          "bundle": bundle_manifest()}, indent=1))
        return 0
    for name, version in items:
        print(f"{name} {version}")
    for line in _library_lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
