#!/usr/bin/env python3
"""aiomoqt's examples as three processes (relay, subscriber, publisher), objects byte-verified.

Run it with the Python of a venv holding aiomoqt (>= 3.12) and the aiopquic under test, e.g. the
one tests/aiomoqt_suite.py makes:

    .venv-aiomoqt/bin/python tests/aiomoqt_examples.py              # loopback MTU (64 KiB)
    .venv-aiomoqt/bin/python tests/aiomoqt_examples.py --mtu 1500   # in a netns, lo at MTU 1500
    .venv-aiomoqt-seed/bin/python tests/aiomoqt_examples.py         # the released 0.6.1

aiomoqt 0.13.3 has no relay among its examples: ``server_example`` is a bare ``MOQTServer``
that routes nothing between sessions.  The relay is its tool ``aiomoqt.tools.moq_interop_relay``
(WebTransport by default, ``--quic`` raw QUIC, ``--dual`` both on one UDP port), the one its own
tests put between publisher and subscriber; the publisher and subscriber are the examples
``aiomoqt.examples.pub_example`` / ``sub_example`` (a URL picks the transport: ``moqt://`` raw
QUIC, ``https://`` WebTransport).  ``join_example`` (SUBSCRIBE + joining FETCH) is not run.

Each mode starts, on 127.0.0.1 and a free port, with a certificate made for the run: the
relay, and waits for "Listening on"; each subscriber (``-N examples``), and waits until the
relay logs its SUBSCRIBE_NAMESPACE; then the publisher (``-T verified -t 2 -r 200 -s 3000 -P
2``: two subgroup streams, 3000-byte objects of three packets each at MTU 1500), which PUBLISHes the
track and sends objects from ``PublishedTrack``'s default generator ("<group>.<object>|" then
the bytes 0, 1, ... 255, 0, ... up to the object size) for 2 seconds, then closes its
session.  The subscribers discover the track through the relay (SUBSCRIBE_NAMESPACE, then its
PUBLISH), take every object, and end by themselves when the relay forwards the publisher's
PUBLISH_DONE.

  quic     relay --quic; subscriber and publisher over raw QUIC
  wt       relay (WebTransport); subscriber and publisher over WebTransport
  dual     relay --dual (both on one UDP port); one subscriber over raw QUIC and one over
           WebTransport, the publisher over raw QUIC
  dual-wt  the same with the publisher over WebTransport

The example programs run unchanged: each is started as ``python THIS --as-example pub|sub
RECORD -- ARGS``, which wraps ``PublishedTrack._remember`` (every object the publisher
generates) or the subscriber's ``on_object`` callback (every object delivered) to append
"group subgroup object status length sha256" to RECORD, then runs the example module as
``__main__`` with ARGS.  A mode passes when all processes exit by themselves in time, every
object the publisher generated has the generator's bytes, every object a subscriber got is one
the publisher generated with the same length and SHA-256 (no duplicates), and each subscriber
got the objects the publisher reports sent ("Sent: N objects") but for at most TAIL of them
at the end of a subgroup (the example closes its session at once when its time is up, which
may drop what it wrote last; see TAIL); never a hole.

Prints one line per mode and exits 0 when every mode passed, 1 otherwise.  Each wait is
bounded; a process that outlives its wait is killed.  ``--mtu N`` runs the whole thing again
inside ``unshare -n`` (a network namespace of its own; needs root) with its loopback at MTU N.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

NAMESPACE = "examples"
TRACK = "verified"
MODES = {
    # name: (relay flags, subscriber URL schemes, publisher URL scheme)
    "quic": (["--quic"], ["moqt"], "moqt"),
    "wt": ([], ["https"], "https"),
    "dual": (["--dual"], ["moqt", "https"], "moqt"),
    "dual-wt": (["--dual"], ["moqt", "https"], "https"),
}
# pub_example closes its session as soon as its time is up: an immediate close (QUIC
# CONNECTION_CLOSE; a WebTransport session close resets the session's streams), so the last
# objects it wrote may never leave it.  aiopquic 0.6.1 loses 4 to 6 of them on most
# WebTransport runs and 1 or 2 on some raw QUIC runs through the dual relay; this tree loses
# 0 to 4 over WebTransport and, on a loaded machine, now and then 1 or 2 over raw QUIC.  So
# up to TAIL objects sent may be missing, and only at the end of a subgroup, never a hole.
TAIL = 20
NETNS_ENV = "AIOMOQT_EXAMPLES_NETNS_MTU"


# --------------------------------------------------------------------- example wrapper

def as_example(role: str, record: str, argv: list[str]) -> None:
    """Run aiomoqt.examples.<role>_example with ``argv``, recording every object to
    ``record``."""
    import runpy

    import aiomoqt.track as track

    out = open(record, "a", buffering=1)

    def write(group, subgroup, obj, status, payload) -> None:
        payload = bytes(payload or b"")
        out.write(f"{group} {subgroup} {obj} {int(status or 0)} {len(payload)} "
                  f"{hashlib.sha256(payload).hexdigest()}\n")

    if role == "pub":
        remember = track.PublishedTrack._remember

        def _remember(self, group_id, object_id, payload, subgroup_id=0, extensions=None):
            write(group_id, subgroup_id, object_id, 0, payload)
            return remember(self, group_id, object_id, payload, subgroup_id, extensions)

        track.PublishedTrack._remember = _remember
    else:
        init = track.SubscribedTrack.__init__

        def __init__(self, *args, **kwargs):
            inner = kwargs.get("on_object")
            if inner is not None:
                def on_object(msg, size, recv_us, group_id=None, subgroup_id=None):
                    write(group_id, subgroup_id, msg.object_id, getattr(msg, "status", 0),
                          getattr(msg, "payload", b""))
                    return inner(msg, size, recv_us, group_id, subgroup_id)

                kwargs["on_object"] = on_object
            init(self, *args, **kwargs)

        track.SubscribedTrack.__init__ = __init__
    sys.argv = [f"{role}_example", *argv]
    runpy.run_module(f"aiomoqt.examples.{role}_example", run_name="__main__",
                     alter_sys=True)


# --------------------------------------------------------------------- processes

def die_with_parent() -> None:
    """In the child before exec: SIGKILL when this script dies (Linux PR_SET_PDEATHSIG), so a
    run killed from outside (a test timeout) leaves no relay behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Proc:
    """A child process whose output (stdout and stderr) a thread collects line by line."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict, cwd: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.log = open(log, "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True,
                                  errors="replace", preexec_fn=die_with_parent)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.log.write(line)
            self.log.flush()
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # type: ignore[arg-type]  # end of output
            self.cond.notify_all()

    def wait_line(self, pattern: str, count: int = 1, timeout: float = 20.0) -> bool:
        """Wait until ``count`` output lines match ``pattern`` (a regex); False when the
        process ends or ``timeout`` passes first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                seen = sum(1 for ln in self.lines if ln is not None and rx.search(ln))
                if seen >= count:
                    return True
                if self.lines and self.lines[-1] is None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)

    def find(self, pattern: str) -> Optional[re.Match]:
        rx = re.compile(pattern)
        with self.cond:
            for ln in self.lines:
                if ln is not None and (m := rx.search(ln)):
                    return m
        return None

    def wait_exit(self, timeout: float) -> Optional[int]:
        try:
            return self.p.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGINT, grace: float = 5.0) -> int:
        """Signal the process (if still running), kill it if it does not exit within
        ``grace`` seconds; its exit status."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            if self.wait_exit(grace) is None:
                self.p.kill()
                self.p.wait(timeout=10)
        self.reader.join(timeout=5)
        self.log.close()
        return self.p.returncode

    def tail(self, n: int = 15) -> str:
        with self.cond:
            lines = [ln for ln in self.lines if ln is not None][-n:]
        return "\n".join(f"    {self.name}| {ln}" for ln in lines)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> tuple[str, str]:
    """A self-signed P-256 certificate for localhost / 127.0.0.1, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


# --------------------------------------------------------------------- verification

def expected_payload(group: int, obj: int, size: int) -> bytes:
    """PublishedTrack's default generator (track.py, _counted_pad + the seq prefix)."""
    pad = bytes(i & 0xFF for i in range(size))
    return (f"{group}.{obj}".encode() + b"|" + pad)[:size]


def read_record(path: Path) -> list[tuple[int, int, int, int, int, str]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            g, sg, o, st, n, digest = line.split()
            rows.append((int(g), -1 if sg == "None" else int(sg), int(o), int(st), int(n),
                         digest))
    return rows


def verify(pub_rows, sent: Optional[int], sub_rows, size: int,
           tail_allowed: int) -> tuple[list[str], int, int]:
    """Problems found (none: the subscriber's objects are verified), the number of objects
    it got, and how many of those sent it did not get (only ever the last ones of a
    subgroup, at most ``tail_allowed``)."""
    problems: list[str] = []
    published: dict[tuple[int, int], tuple[int, str]] = {}
    subgroup_of: dict[tuple[int, int], int] = {}
    for g, sg, o, _st, n, digest in pub_rows:
        want = expected_payload(g, o, size)
        if n != len(want) or digest != hashlib.sha256(want).hexdigest():
            problems.append(f"publisher generated {g}.{o} with other bytes than expected")
        if (g, o) in published:
            problems.append(f"publisher generated {g}.{o} twice")
        published[(g, o)] = (n, digest)
        subgroup_of[(g, o)] = sg
    if not published:
        problems.append("publisher generated no objects")
    got: dict[tuple[int, int], tuple[int, str]] = {}
    for g, _sg, o, st, n, digest in sub_rows:
        if st != 0 and n == 0:
            continue  # a status (e.g. end of group): no payload to compare
        if (g, o) in got:
            problems.append(f"object {g}.{o} delivered twice")
        got[(g, o)] = (n, digest)
        if (g, o) not in published:
            problems.append(f"object {g}.{o} delivered but never published")
        elif published[(g, o)] != (n, digest):
            problems.append(f"object {g}.{o}: {n} bytes, SHA-256 {digest[:16]}..., "
                            f"published {published[(g, o)][0]} bytes, "
                            f"{published[(g, o)][1][:16]}...")
    # What was not delivered must be the end of its subgroup: no holes.
    last_got: dict[int, tuple[int, int]] = {}
    for loc in got:
        sg = subgroup_of.get(loc, -1)
        last_got[sg] = max(last_got.get(sg, loc), loc)
    missing = sorted(set(published) - set(got))
    holes = [loc for loc in missing if loc < last_got.get(subgroup_of[loc], (-1, -1))]
    if holes:
        problems.append(f"objects missing before later ones of their subgroup: "
                        f"{', '.join(f'{g}.{o}' for g, o in holes[:8])}"
                        f"{' ...' if len(holes) > 8 else ''}")
    lost = 0
    if sent is None:
        problems.append("publisher printed no 'Sent: N objects' line")
    else:
        lost = max(0, sent - len(got))
        if lost > tail_allowed:
            problems.append(f"got {len(got)} of the {sent} objects sent (missing "
                            f"{', '.join(f'{g}.{o}' for g, o in missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''})")
    return problems[:12], len(got), lost


# --------------------------------------------------------------------- one mode

def run_mode(mode: str, workdir: Path, cert: str, key: str, args) -> tuple[bool, str]:
    relay_flags, sub_schemes, pub_scheme = MODES[mode]
    port = free_udp_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    py = sys.executable
    me = str(Path(__file__).resolve())
    url = {"moqt": f"moqt://127.0.0.1:{port}", "https": f"https://127.0.0.1:{port}/"}
    # The processes run in this directory: "python -m" puts the working directory first on
    # sys.path, and in a source tree that would import the tree's aiopquic, not the venv's.
    d = workdir / mode
    d.mkdir()
    procs: list[Proc] = []
    t0 = time.monotonic()
    problems: list[str] = []

    def fail(why: str, *show: Proc) -> tuple[bool, str]:
        for p in procs:
            p.stop()
        detail = "\n".join(p.tail() for p in (show or procs))
        return False, f"{why} ({time.monotonic() - t0:.1f} s)\n{detail}"

    try:
        relay = Proc("relay", [py, "-m", "aiomoqt.tools.moq_interop_relay", "--bind",
                               "127.0.0.1", "--port", str(port), "--cert", cert, "--key", key,
                               *relay_flags], d / "relay.log", env, d)
        procs.append(relay)
        if not relay.wait_line(r"^Listening on", timeout=args.timeout):
            return fail("relay did not start listening", relay)

        subs = []
        for i, scheme in enumerate(sub_schemes):
            rec = d / f"sub{i}-{scheme}.rec"
            sub = Proc(f"sub-{scheme}", [py, me, "--as-example", "sub", str(rec), "--",
                                         url[scheme], "-k", "-N", NAMESPACE,
                                         "-t", str(int(args.seconds + args.timeout))],
                       d / f"sub{i}-{scheme}.log", env, d)
            procs.append(sub)
            subs.append((scheme, sub, rec))
            # Ready when the relay holds its SUBSCRIBE_NAMESPACE (the publisher's PUBLISH
            # then reaches it).
            if not relay.wait_line(rf"relay: subscribe-namespace prefix=\(b'{NAMESPACE}',\)",
                                   count=i + 1, timeout=args.timeout):
                return fail(f"the relay saw no SUBSCRIBE_NAMESPACE from subscriber {scheme}",
                            relay, sub)

        prec = d / "pub.rec"
        pub = Proc("pub", [py, me, "--as-example", "pub", str(prec), "--", url[pub_scheme],
                           "-k", "-N", NAMESPACE, "-T", TRACK, "-t", str(args.seconds),
                           "-r", str(args.rate), "-s", str(args.size),
                           "-P", str(args.streams)], d / "pub.log", env, d)
        procs.append(pub)
        rc = pub.wait_exit(args.seconds + args.timeout)
        if rc is None:
            return fail("publisher did not finish", pub, relay)
        pub.stop()
        m = pub.find(r"Sent: ([\d,]+) objects")
        sent = int(m.group(1).replace(",", "")) if m else None
        if rc != 0:
            problems.append(f"publisher exited {rc}")
        if pub.find(r"ERROR|Traceback"):
            problems.append("publisher logged an error")

        deadline = time.monotonic() + args.timeout
        pub_rows = read_record(prec)
        counts = []
        for scheme, sub, rec in subs:
            src = sub.wait_exit(deadline - time.monotonic())
            if src is None:
                problems.append(f"subscriber {scheme} did not end after the track ended")
            sub.stop()
            if src not in (None, 0):
                problems.append(f"subscriber {scheme} exited {src}")
            if sub.find(r"ERROR|Traceback"):
                problems.append(f"subscriber {scheme} logged an error")
            sub_problems, n, lost = verify(pub_rows, sent, read_record(rec), args.size,
                                           TAIL)
            problems += [f"subscriber {scheme}: {p}" for p in sub_problems]
            counts.append(f"{scheme} {n}/{sent}" + (f" (the last {lost} lost at the "
                                                    "publisher's close)" if lost else ""))
        relay.stop(signal.SIGTERM)
        if problems:
            return fail("; ".join(problems))
        return True, (f"{', '.join(counts)} objects of {args.size} B byte-verified "
                      f"(publisher over {pub_scheme}, {len(pub_rows)} generated) "
                      f"({time.monotonic() - t0:.1f} s)")
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.stop()


# --------------------------------------------------------------------- main

def reexec_in_netns(mtu: int) -> int:
    """This script again, in a network namespace of its own whose loopback has MTU ``mtu``."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        print("aiomoqt-examples: --mtu needs unshare and ip (util-linux, iproute2)")
        return 1
    inner = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    env = dict(os.environ, **{NETNS_ENV: str(mtu)})
    # $0 is the MTU, "$@" the command: the MTU is set only inside the new namespace.
    cmd = ["unshare", "-n", "sh", "-c",
           'ip link set lo mtu "$0" && ip link set lo up && exec "$@"', str(mtu), *inner]
    return subprocess.run(cmd, env=env).returncode


def loopback_mtu() -> str:
    """The MTU of this network namespace's lo ("?" when unknown).  Not from /sys/class/net:
    sysfs shows the namespace it was mounted in."""
    import fcntl
    import struct
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16si12x", b"lo", 0)
            return str(struct.unpack("16si12x", fcntl.ioctl(s.fileno(), 0x8921, req))[1])
    except OSError:  # SIOCGIFMTU
        return "?"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-example":
        # --as-example ROLE RECORD -- ARGS...
        role, record = sys.argv[2], sys.argv[3]
        rest = sys.argv[4:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        as_example(role, record, rest)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtu", type=int, default=None,
                    help="run inside unshare -n with the loopback at this MTU (needs root)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma list of modes (default {','.join(MODES)})")
    ap.add_argument("--seconds", type=int, default=2, help="publisher run time (default 2)")
    ap.add_argument("--rate", type=float, default=200, help="objects per second (default 200)")
    ap.add_argument("--size", type=int, default=3000, help="object size, bytes (default 3000)")
    ap.add_argument("--streams", type=int, default=2,
                    help="parallel subgroup streams of the publisher (default 2)")
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="bound on each wait, seconds (default 20)")
    ap.add_argument("--keep", action="store_true", help="keep the logs (printed at the end)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")

    in_netns = os.environ.get(NETNS_ENV)
    if args.mtu is not None and in_netns is None:
        return reexec_in_netns(args.mtu)
    mtu = loopback_mtu()
    if args.mtu is not None and mtu != str(args.mtu):
        print(f"aiomoqt-examples: loopback MTU is {mtu}, not {args.mtu}")
        return 1
    try:
        import importlib.metadata as md
        import importlib.util
        spec = importlib.util.find_spec("aiopquic")
        where = Path(spec.origin).parent.parent if spec and spec.origin else "?"
        versions = (f"aiomoqt {md.version('aiomoqt')}, aiopquic {md.version('aiopquic')} "
                    f"(in {where})")
    except Exception as e:  # noqa: BLE001
        print(f"aiomoqt-examples: aiomoqt is not installed for {sys.executable}: {e}")
        return 1
    if shutil.which("openssl") is None:
        print("aiomoqt-examples: needs openssl (to make the certificate)")
        return 1
    print(f"aiomoqt-examples: {versions}, Python {sys.version.split()[0]}, loopback MTU "
          f"{mtu}{' (netns)' if in_netns else ''}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="aiomoqt-examples-"))
    ok_all = True
    t0 = time.monotonic()
    try:
        cert, key = make_cert(work)
        for mode in modes:
            ok, detail = run_mode(mode, work, cert, key, args)
            ok_all &= ok
            print(f"aiomoqt-examples: {mode}: {'PASS' if ok else 'FAIL'} {detail}", flush=True)
    finally:
        if args.keep:
            print(f"aiomoqt-examples: logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"aiomoqt-examples: {'all passed' if ok_all else 'FAILED'} "
          f"({len(modes)} modes, MTU {mtu}, {time.monotonic() - t0:.1f} s)", flush=True)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
