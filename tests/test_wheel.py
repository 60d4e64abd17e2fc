"""A built wheel is self-contained: it installs into a fresh venv and runs with no system
ngtcp2 or GnuTLS reachable.

Run by ``make test-wheel`` (the last step of ``make test``), which builds the sdist and the wheels
(``make wheel``) and, for every interpreter this test uses, the dependency wheels (cffi,
pylsqpack), then sets ``AIOPQUIC_WHEELHOUSE`` and ``AIOPQUIC_WHEEL_DEPS``.  Without them (a
plain ``pytest`` run) the tests skip and say so.

For each interpreter (CPython 3.9-3.13 found here, PyPy):

1. a fresh venv, and ``pip install --no-index --only-binary aiopquic`` of the wheel pip picks
   for that interpreter (no package index, no sdist, no compiler involved);
2. ``ldd`` on the installed extension: every ngtcp2 / GnuTLS / GnuTLS-dependency library
   resolves inside the wheel's ``aiopquic.libs``, none is "not found";
3. a QUIC echo and an HTTP/3 GET (certificate verified by the bundled GnuTLS), in a private
   mount namespace (``unshare -m``) where the system's copies of those libraries are replaced
   by ``/dev/null`` (bind mounts): a control first checks that loading them by their system
   name fails there, and the process's memory map afterwards holds only the wheel's copies.
   Where ``unshare`` is not permitted (not root), the run happens without hiding and the
   memory-map and ldd checks carry the test.

``python tests/test_wheel.py --interpreters`` prints the interpreters (the Makefile uses it).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Optional

import pytest

WHEELHOUSE = os.environ.get("AIOPQUIC_WHEELHOUSE", "")
DEPS = os.environ.get("AIOPQUIC_WHEEL_DEPS", "")
STEP_TIMEOUT = 300  # seconds for any one subprocess (venv + pip on a loaded machine, PyPy)

# What the wheel must carry: ngtcp2, its GnuTLS crypto helper, GnuTLS and what GnuTLS loads.
# (libffi is bundled too, for p11-kit, but interpreters load their own libffi, so the memory
# map check leaves it out; ldd still checks that the extension's chain uses the wheel's copy.)
BUNDLED_LIBS = ("ngtcp2", "ngtcp2_crypto_gnutls", "gnutls", "nettle", "hogweed", "gmp",
                "tasn1", "idn2", "unistring", "p11-kit")
_LIB_RE = re.compile(r"^lib(" + "|".join(re.escape(n) for n in BUNDLED_LIBS + ("ffi",))
                     + r")(?:-[0-9a-f]{8})?\.so")
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
            "/lib", "/usr/lib")


def _lib_name(filename: str) -> Optional[str]:
    """"gnutls" for libgnutls.so.30 or libgnutls-779b25d2.so.30.34.3; None if not ours."""
    m = _LIB_RE.match(filename)
    return m.group(1) if m else None


def interpreters() -> list[str]:
    """CPython 3.9-3.13 (one per minor version; pyenv's or on PATH) and PyPy, each able to
    create a venv with pip, as real paths."""
    found: dict[str, str] = {}
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in range(9, 14):
        candidates = sorted(glob.glob(os.path.join(pyenv, "versions", f"3.{minor}.*", "bin",
                                                   f"python3.{minor}")), reverse=True)
        candidates += [p for p in (shutil.which(f"python3.{minor}"),) if p]
        for candidate in candidates:
            real = _usable(candidate, f"cpython-3.{minor}")
            if real:
                found[f"cpython-3.{minor}"] = real
                break
    pypy = shutil.which("pypy3")
    if pypy:
        real = _usable(pypy, "pypy")
        if real:
            found["pypy"] = real
    return list(found.values())


def _usable(python: str, want: str) -> Optional[str]:
    code = ("import sys, ensurepip, venv; "
            "print(sys.implementation.name + '-%d.%d' % sys.version_info[:2]); "
            "print(sys.executable)")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None
    if not (lines[0] == want or (want == "pypy" and lines[0].startswith("pypy-"))):
        return None
    return os.path.realpath(lines[1])


def _run(args: list[str], cwd: Optional[str] = None,
         extra_env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run with this process's environment minus anything that would point Python or the
    loader at the source tree or another environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
                        "LD_PRELOAD")}
    env.update(extra_env or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                          env=env, cwd=cwd)


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    assert proc.returncode == 0, (
        f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _system_libs() -> list[str]:
    """The real files of the system's ngtcp2, GnuTLS and GnuTLS's dependencies."""
    files = set()
    for d in LIB_DIRS:
        for path in glob.glob(os.path.join(d, "lib*.so*")):
            m = _LIB_RE.match(os.path.basename(path))
            if m and m.group(1) in BUNDLED_LIBS and os.path.exists(path):
                files.add(os.path.realpath(path))
    return sorted(files)


def _system_sonames() -> list[str]:
    """Names the loader would look the system copies up by (control inside the namespace)."""
    names = set()
    for d in LIB_DIRS:
        for path in glob.glob(os.path.join(d, "lib*.so.*")):
            base = os.path.basename(path)
            m = _LIB_RE.match(base)
            if m and m.group(1) in BUNDLED_LIBS and re.fullmatch(r"lib[^.]+\.so\.\d+", base):
                names.add(base)
    return sorted(names)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return _run(["unshare", "-m", "--propagation", "private", "mount", "--bind",
                     "/dev/null", "/dev/null"]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# The program run inside the installed venv: control, QUIC echo, HTTP/3 GET, what was loaded.
PROBE = r'''
import asyncio, ctypes, io, json, os, re, sys, tempfile

hidden = json.loads(os.environ["AIOPQUIC_TEST_HIDDEN_SONAMES"])
for soname in hidden:  # control: the system's copies cannot be loaded here
    try:
        ctypes.CDLL(soname)
    except OSError:
        continue
    raise SystemExit(f"control failed: the system {soname} still loads")

import aiopquic
from aiopquic._native import make_self_signed
from aiopquic.asyncio import connect, serve
from aiopquic.http3_tools import fetch, run_server
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.versions import bundle_manifest, loaded_libraries, main as versions_main

assert os.path.realpath(aiopquic.__file__).startswith(os.path.realpath(sys.prefix)), \
    aiopquic.__file__
work = tempfile.mkdtemp()
cert, key = make_self_signed("localhost,127.0.0.1", days=2)
certfile, keyfile = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
with open(certfile, "wb") as f:
    f.write(cert)
with open(keyfile, "wb") as f:
    f.write(key)
os.mkdir(os.path.join(work, "root"))
with open(os.path.join(work, "root", "hello.txt"), "wb") as f:
    f.write(b"hello from a wheel\n")


async def echo(reader, writer):
    writer.write(await reader.read())
    await writer.drain()
    writer.write_eof()


async def quic_echo():
    tasks = set()

    def handle(reader, writer):
        task = asyncio.ensure_future(echo(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server_config = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    server_config.load_cert_chain(certfile, keyfile)
    server = await serve("127.0.0.1", 0, configuration=server_config, stream_handler=handle)
    try:
        client_config = QuicConfiguration(alpn_protocols=["echo"], server_name="localhost")
        client_config.load_verify_locations(cadata=cert)
        payload = os.urandom(200_000)
        async with connect("127.0.0.1", server.local_port,
                           configuration=client_config) as client:
            reader, writer = await client.create_stream()
            writer.write(payload)
            writer.write_eof()
            assert await reader.read() == payload
    finally:
        server.close()


async def h3_get():
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    server = asyncio.ensure_future(run_server("127.0.0.1", 0, certfile, keyfile,
                                              os.path.join(work, "root"), True, ready))
    try:
        port = await asyncio.wait_for(asyncio.shield(ready), 30)
        config = QuicConfiguration(alpn_protocols=["h3"], server_name="localhost")
        config.load_verify_locations(cadata=cert)
        out = io.BytesIO()
        status, _, _ = await fetch(f"https://127.0.0.1:{port}/hello.txt", out,
                                   configuration=config)
        assert (status, out.getvalue()) == (200, b"hello from a wheel\n"), status
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def main():
    await asyncio.wait_for(quic_echo(), 60)
    await asyncio.wait_for(h3_get(), 60)

saved = sys.stdout
sys.stdout = io.StringIO()  # run_server prints its banner
try:
    asyncio.run(main())
finally:
    sys.stdout = saved

report = io.StringIO()
sys.stdout = report
versions_main([])
sys.stdout = saved

mapped = set()
with open("/proc/self/maps") as f:
    for line in f:
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            mapped.add(fields[5].strip())
import platform
import aiopquic.buffer
import aiopquic.streamchain
c_codecs = (aiopquic.buffer.Buffer is not aiopquic.buffer.PyBuffer
            and aiopquic.streamchain.StreamChain is not aiopquic.streamchain.PyStreamChain)
print("RESULT " + json.dumps({"loaded": loaded_libraries(), "manifest": bundle_manifest(),
                              "mapped": sorted(mapped), "versions": report.getvalue(),
                              "c_codecs": c_codecs,
                              "cpython": platform.python_implementation() == "CPython"}))
'''


@pytest.fixture(scope="module")
def wheelhouse() -> str:
    if not WHEELHOUSE:
        pytest.skip("needs built wheels: run `make test-wheel` (sets AIOPQUIC_WHEELHOUSE)")
    assert glob.glob(os.path.join(WHEELHOUSE, "aiopquic-*.whl")), f"no wheels in {WHEELHOUSE}"
    return WHEELHOUSE


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_build_script(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import build_ffi; print(' '.join(build_ffi._compile_args()))"
    env = {k: v for k, v in os.environ.items() if k != "AIOPQUIC_WERROR"}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_source_build_names_the_missing_packages() -> None:
    """Building from the sdist without the -dev packages fails at once, naming them."""
    proc = _import_build_script({"PKG_CONFIG_LIBDIR": "/nonexistent",
                                 "PKG_CONFIG_PATH": "/nonexistent"})
    assert proc.returncode != 0
    for text in ("libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev",
                 "'libngtcp2_crypto_gnutls' (not found)"):
        assert text in proc.stderr, proc.stderr


def test_werror_only_when_asked() -> None:
    """A user's build never fails on warnings; the Makefile's builds (AIOPQUIC_WERROR=1) do."""
    user = _check(_import_build_script({}), "build_ffi without AIOPQUIC_WERROR").split()
    dev = _check(_import_build_script({"AIOPQUIC_WERROR": "1"}), "build_ffi with it").split()
    assert "-Werror" not in user and "-Wall" in user
    assert "-Werror" in dev


# Interpreters are looked for only when there are wheels to test (it runs each candidate).
PYTHONS = interpreters() if WHEELHOUSE else ["(no wheels built)"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("python", PYTHONS, ids=[os.path.basename(p) for p in PYTHONS])
def test_wheel_runs_without_system_ngtcp2_and_gnutls(python: str, wheelhouse: str,
                                                     tmp_path: os.PathLike[str]) -> None:
    tmp = os.fspath(tmp_path)
    (sdist,) = glob.glob(os.path.join(wheelhouse, "aiopquic-*.tar.gz"))
    version = os.path.basename(sdist)[len("aiopquic-"):-len(".tar.gz")]
    venv = os.path.join(tmp, "venv")
    _check(_run([python, "-m", "venv", venv]), "venv")
    vpy = os.path.join(venv, "bin", "python")
    deps = os.path.join(DEPS, os.path.basename(python)) if DEPS else ""
    links = ["--find-links", wheelhouse] + (["--find-links", deps] if deps else [])
    _check(_run([vpy, "-m", "pip", "install", "-q", "--no-index", "--only-binary", "aiopquic",
                 *links, f"aiopquic=={version}"], cwd=tmp), "pip install of the wheel")

    # ldd: every ngtcp2/GnuTLS library of the installed extension resolves inside the wheel.
    (site,) = glob.glob(os.path.join(venv, "lib", "*", "site-packages"))
    libs_dir = os.path.realpath(os.path.join(site, "aiopquic.libs"))
    (ext,) = glob.glob(os.path.join(site, "aiopquic", "_native", "_aiopquic*.so"))
    ldd = _check(_run(["ldd", ext]), "ldd")
    assert "not found" not in ldd, ldd
    resolved = {}
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m and _LIB_RE.match(m.group(1)):
            resolved[m.group(1)] = m.group(2)
    names = {_lib_name(n) for n in resolved}
    assert {"ngtcp2", "ngtcp2_crypto_gnutls", "gnutls"} <= names, ldd
    outside = {n: p for n, p in resolved.items()
               if os.path.dirname(os.path.realpath(p)) != libs_dir}
    assert not outside, f"resolved outside {libs_dir}: {outside}"

    # The echo and the GET with the system's copies hidden.
    hidden = _system_libs()
    sonames = _system_sonames()
    probe = os.path.join(tmp, "probe.py")
    with open(probe, "w", encoding="utf-8") as f:
        f.write(PROBE)
    if _can_unshare() and hidden:
        script = ('set -e; IFS=:; for f in $AIOPQUIC_TEST_HIDE; do mount --bind /dev/null "$f"; '
                  'done; unset IFS; exec "$@"')
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
               vpy, probe]
    else:
        sonames = []  # nothing hidden: the control would fail; maps + ldd carry the test
        cmd = [vpy, probe]
    env = {"AIOPQUIC_TEST_HIDE": ":".join(hidden),
           "AIOPQUIC_TEST_HIDDEN_SONAMES": json.dumps(sonames)}
    out = _check(_run(cmd, cwd=tmp, extra_env=env), "echo + HTTP/3 GET from the installed wheel")
    (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])

    # The C codecs (aiopquic._ccodecs) came with the CPython wheel; PyPy's runs the Python ones.
    assert result["c_codecs"] == result["cpython"], result["c_codecs"]
    # Only the wheel's copies were mapped, and `versions` says so.
    for lib in result["loaded"]:
        assert lib["bundled"], result["loaded"]
    for path in result["mapped"]:
        if _lib_name(os.path.basename(path)) in BUNDLED_LIBS:
            assert os.path.dirname(os.path.realpath(path)) == libs_dir, path
    report = result["versions"]
    for name in ("libngtcp2", "libngtcp2_crypto_gnutls", "libgnutls"):
        assert f"{name}: bundled, " in report, report
    manifest = result["manifest"]
    assert manifest is not None, "the wheel has no aiopquic/_bundled.json"
    packages = {e["package"]: e["version"] for e in manifest["libraries"]}
    if shutil.which("dpkg-query"):
        assert any(p and p.startswith("libngtcp2-") for p in packages), packages
        assert packages.get("libgnutls30"), packages
    assert set(os.listdir(libs_dir)) == {e["file"] for e in manifest["libraries"]}


if __name__ == "__main__":
    if sys.argv[1:] == ["--interpreters"]:
        print("\n".join(interpreters()))
    else:
        sys.exit(__doc__)
