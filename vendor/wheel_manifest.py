"""Record in a repaired wheel which native libraries it bundles and where they came from.

Usage: python vendor/wheel_manifest.py WHEEL...   (after `auditwheel repair`)

For every library auditwheel copied into ``aiopquic.libs/`` (renamed ``libX-<hash>.so.N``), this
finds the system file it was copied from, the Debian package that owns it (``dpkg -S``), that
package's exact version and source package (``dpkg-query``), and what its Debian changelog says:
the date of the installed version and every CVE the changelog names (the advisories that
version's packaging records as fixed), plus the known advisories from vendor/advisories.json
that the bundled upstream version is still below the fix of.  The result goes into the wheel as
``aiopquic/_bundled.json``; ``python -m aiopquic versions`` prints it.  The wheel is rewritten in
place with ``wheel pack`` so RECORD stays correct.  Without dpkg (a non-Debian builder) the
package fields are null.

Reads only local files and the dpkg database; no network.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
            "/lib", "/usr/lib", "/usr/local/lib"]
_HASHED = re.compile(r"^(?P<base>[^.]+)-[0-9a-f]{8}(?P<ext>\..*)$")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}")
ADVISORIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "advisories.json")


def _upstream(debian_version: str) -> tuple[int, ...]:
    """(1, 11, 0) for "1.11.0-1~bpo12+1" or "2:6.2.1+dfsg1-1.1"."""
    v = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
    return tuple(int(x) for x in re.findall(r"\d+", re.split(r"[+~]", v)[0]))


def _open_advisories(source: str, version: str, original: str) -> list[dict[str, object]]:
    with open(ADVISORIES, encoding="utf-8") as f:
        known = json.load(f)
    return [a for a in known.get(source, [])
            if _upstream(version) < _upstream(str(a["below"]))
            and original.startswith(str(a.get("library", "")))]


def _run(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip()


def _system_path(original: str) -> Optional[str]:
    for d in LIB_DIRS:
        path = os.path.join(d, original)
        if os.path.exists(path):
            return path
    return None


def _changelog(package: str) -> tuple[Optional[str], list[str]]:
    """(date of the newest entry, sorted unique CVE ids named anywhere in the changelog)."""
    for name in ("changelog.Debian.gz", "changelog.gz"):
        path = os.path.join("/usr/share/doc", package, name)
        if os.path.exists(path):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
            m = re.search(r"^ -- .*?>\s+(.+)$", text, flags=re.M)
            date = None
            if m:
                try:
                    date = datetime.datetime.strptime(
                        m.group(1).strip(), "%a, %d %b %Y %H:%M:%S %z").date().isoformat()
                except ValueError:
                    date = m.group(1).strip()
            cves = sorted(set(_CVE.findall(text)),
                          key=lambda c: tuple(int(x) for x in c.split("-")[1:]))
            return date, cves
    return None, []


def describe(lib_file: str) -> dict[str, object]:
    m = _HASHED.match(lib_file)
    original = m.group("base") + m.group("ext") if m else lib_file
    entry: dict[str, object] = {"file": lib_file, "original": original, "path": None,
                                "package": None, "version": None, "source": None,
                                "changelog_date": None, "cves": [], "advisories": []}
    path = _system_path(original)
    if path is None:
        return entry
    entry["path"] = path
    owner = _run("dpkg", "-S", os.path.realpath(path)) or _run("dpkg", "-S", f"*/{original}")
    if not owner:
        return entry
    package = owner.splitlines()[0].split(":")[0].strip()
    fields = _run("dpkg-query", "-W", "-f", "${Version}\t${source:Package}", package)
    if fields:
        version, source = fields.split("\t")
        entry.update(package=package, version=version, source=source,
                     advisories=_open_advisories(source, version, original))
    date, cves = _changelog(package)
    entry.update(changelog_date=date, cves=cves)
    return entry


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def annotate(wheel: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", tmp, wheel], check=True,
                       stdout=subprocess.DEVNULL)
        (root,) = [os.path.join(tmp, d) for d in os.listdir(tmp)]
        libs_dir = os.path.join(root, "aiopquic.libs")
        libs = sorted(os.listdir(libs_dir)) if os.path.isdir(libs_dir) else []
        entries = [describe(lib) for lib in libs]
        manifest = {
            "wheel": os.path.basename(wheel),
            "built_on": _os_name(),
            "glibc": platform.libc_ver()[1],
            "built": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            "libraries": entries,
        }
        with open(os.path.join(root, "aiopquic", "_bundled.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", out, root], check=True,
                       stdout=subprocess.DEVNULL)
        (packed,) = os.listdir(out)
        if packed != os.path.basename(wheel):
            raise SystemExit(f"wheel pack renamed {os.path.basename(wheel)} to {packed}")
        shutil.move(os.path.join(out, packed), wheel)
    for e in entries:
        cves = e["cves"]
        n = len(cves) if isinstance(cves, list) else 0
        open_ids = [a["id"] for a in e["advisories"]]  # type: ignore[union-attr]
        print(f"{os.path.basename(wheel)}: {e['file']} <- {e['package']} {e['version']} "
              f"({n} CVEs named in its changelog; open advisories: {open_ids or 'none known'})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for whl in sys.argv[1:]:
        annotate(whl)
