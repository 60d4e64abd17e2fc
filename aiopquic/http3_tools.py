"""``python -m aiopquic serve`` and ``python -m aiopquic get``: a small HTTP/3 + WebTransport
server and an HTTP/3 client.

``serve`` answers GET and HEAD with the files under ``--root``, echoes the body of POST/PUT
requests, and runs a WebTransport echo at ``/echo`` (bidirectional streams are echoed on the
same stream, unidirectional streams on a new unidirectional stream, datagrams as datagrams).
Without ``--cert`` it creates a short-lived ECDSA P-256 certificate and prints its SHA-256,
ready for a browser's ``serverCertificateHashes``.

``get`` fetches one URL over HTTP/3 and writes the body to ``-o FILE`` (or stdout), with a
progress bar when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import mimetypes
import os
import signal
import ssl
import stat
import sys
import time
from collections import deque
from typing import IO, Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from aiopquic import __version__ as _version
from aiopquic._native import make_self_signed
from aiopquic.asyncio.client import connect
from aiopquic.asyncio.protocol import QuicStreamHandler
from aiopquic.asyncio.webtransport import (
    WebTransportProtocol,
    WebTransportSession,
    WebTransportSessionClosed,
    serve_webtransport,
)
from aiopquic.h0.connection import H0_ALPN
from aiopquic.h3.connection import ErrorCode, H3Connection
from aiopquic.h3.events import DataReceived, H3Event, Headers, HeadersReceived
from aiopquic.quic.configuration import QuicConfiguration
from aiopquic.quic.connection import QuicConnection
from aiopquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

__all__ = ["serve_main", "get_main", "HttpServerProtocol", "RequestBody", "echo_handler",
           "fetch"]

SERVER_NAME = f"aiopquic/{_version}".encode()
_CHUNK = 256 * 1024
#: files up to this size are answered in the event callback, from memory (see _FileCache)
SMALL_FILE_BYTES = 64 * 1024
#: at most this many bytes of small files are kept per root
FILE_CACHE_BYTES = 16 * 1024 * 1024
FILE_CACHE_ENTRIES = 4096


# ---------------------------------------------------------------------- server


async def echo_handler(session: WebTransportSession) -> None:
    """WebTransport echo: bidirectional streams are echoed back on the same stream,
    unidirectional streams on a new unidirectional stream, datagrams as datagrams.  Returns
    when the peer closes the session."""
    tasks: set[asyncio.Task[None]] = set()

    async def echo_stream(reader: asyncio.StreamReader,
                          writer: Optional[asyncio.StreamWriter]) -> None:
        try:
            if writer is None:  # echoed on a new unidirectional stream, as it arrives
                _, writer = await session.create_stream(bidirectional=False)
            while True:
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()  # a peer that does not read stops our reading
            writer.write_eof()
        except (ConnectionError, ValueError):
            pass  # the stream or the session went away

    async def streams() -> None:
        while True:
            reader, writer = await session.accept_stream()
            task = asyncio.ensure_future(echo_stream(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def datagrams() -> None:
        while True:
            data = await session.receive_datagram()
            try:
                session.send_datagram(data)
            except ValueError:
                pass

    try:
        await asyncio.gather(streams(), datagrams())
    except WebTransportSessionClosed:
        pass
    finally:
        for task in tasks:
            task.cancel()


class RequestBody:
    """A request body as it arrives.  Its flow-control credit goes back to the client only
    as :meth:`get` hands chunks out, so a body the handler does not read holds the client at
    the flow-control window; :meth:`discard` gives up on the rest."""

    def __init__(self, http: H3Connection, stream_id: int) -> None:
        self._http = http
        self._stream_id = stream_id
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._discarding = False
        self._waiter: Optional[asyncio.Future[None]] = None

    @property
    def ended(self) -> bool:
        """True once the whole body arrived (or the request was reset)."""
        return self._ended

    def _feed(self, data: bytes, end: bool) -> None:
        if data:
            if self._discarding:
                self._http.consumed(self._stream_id, len(data))
            else:
                self._chunks.append(data)
        if end:
            self._ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Optional[bytes]:
        """The next chunk, or None at the end of the body."""
        while not self._chunks:
            if self._ended or self._discarding:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._http.consumed(self._stream_id, len(chunk))
        return chunk

    def discard(self) -> None:
        """Drop what is buffered and whatever still arrives (returning its credit)."""
        self._discarding = True
        n = sum(len(c) for c in self._chunks)
        self._chunks.clear()
        self._http.consumed(self._stream_id, n)
        self._feed(b"", False)


class _CachedFile:
    __slots__ = ("full", "stamp", "data", "ctype")

    def __init__(self, full: str, stamp: tuple[int, ...], data: bytes, ctype: bytes) -> None:
        self.full = full
        self.stamp = stamp
        self.data = data
        self.ctype = ctype


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _open_nonblocking(full: str) -> int:
    """A read-only descriptor of ``full``, opened O_NONBLOCK so that a FIFO swapped in after
    the path was checked cannot block the event loop (callers accept regular files only).
    Raises :class:`OSError`."""
    return os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))


def _content_type(full: str) -> bytes:
    return (mimetypes.guess_type(full)[0] or "application/octet-stream").encode()


def _file_headers(ctype: bytes, size: int) -> Headers:
    """The response headers of a file served whole (200)."""
    return [(b":status", b"200"), (b"server", SERVER_NAME), (b"content-type", ctype),
            (b"content-length", str(size).encode())]


class _FileCache:
    """Small files under one root, by request path, for answering a GET without a task.

    An entry is used only while one ``stat`` of its resolved file still shows the same
    inode, device, size, modification and change times; anything else (the file changed,
    vanished, or a path component became a symlink to another file) drops the entry and the
    request takes the full path again (resolution under the root, then the file).  Bounded by
    FILE_CACHE_ENTRIES and FILE_CACHE_BYTES (oldest entries go first), so requests for many
    distinct paths cannot grow it."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: dict[bytes, _CachedFile] = {}
        self.size = 0

    def get(self, key: bytes) -> Optional[_CachedFile]:
        entry = self.entries.get(key)
        if entry is None:
            return None
        try:
            stamp = _stamp(os.stat(entry.full))
        except OSError:
            stamp = ()
        if stamp == entry.stamp:
            return entry
        self.drop(key)
        return None

    def drop(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry.data)

    def load(self, key: bytes, full: str) -> Optional[_CachedFile]:
        """Read ``full`` if it is a regular file of at most SMALL_FILE_BYTES and remember it;
        None for a larger file or one that changed while it was read (the caller streams
        it instead).  Raises :class:`OSError` when it cannot be opened or read."""
        fd = _open_nonblocking(full)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > SMALL_FILE_BYTES:
                return None
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:
                return None  # it is being written
            stamp = _stamp(os.fstat(fd))
            if stamp != _stamp(st):
                return None
        finally:
            os.close(fd)
        entry = _CachedFile(full, stamp, data, _content_type(full))
        self.drop(key)
        while self.entries and (len(self.entries) >= FILE_CACHE_ENTRIES
                                or self.size + len(data) > FILE_CACHE_BYTES):
            self.drop(next(iter(self.entries)))
        self.entries[key] = entry
        self.size += len(data)
        return entry


_file_caches: dict[str, _FileCache] = {}


class HttpServerProtocol(WebTransportProtocol):
    """Plain HTTP/3 next to WebTransport: GET/HEAD of files under ``root``, POST/PUT echo.

    Request bodies are read as the response is written (their credit returns then): a client
    that sends more than the server consumes is held at the flow-control window.  A body the
    response does not need is discarded once the response is complete, and the client is asked
    to stop sending it (STOP_SENDING with H3_NO_ERROR, RFC 9114 section 4.1)."""

    root: Optional[str] = None
    log: Optional[IO[str]] = None
    http_credit_on_consume = True

    def __init__(self, quic: QuicConnection, stream_handler: Optional[QuicStreamHandler] = None,
                 **kwargs: Any) -> None:
        super().__init__(quic, stream_handler, **kwargs)
        self._bodies: dict[int, RequestBody] = {}

    def http_event_received(self, event: H3Event) -> None:
        """Route plain HTTP/3 requests to the file server and the echo."""
        if isinstance(event, HeadersReceived):
            if event.stream_id in self._bodies:
                if event.stream_ended:  # trailers end the body
                    self._bodies.pop(event.stream_id)._feed(b"", True)
                return
            if event.stream_ended and self._answer_now(event.stream_id, event.headers):
                return
            body = RequestBody(self._http, event.stream_id)
            if event.stream_ended:
                body._feed(b"", True)
            else:
                self._bodies[event.stream_id] = body
            self._spawn(self._respond(event.stream_id, event.headers, body))
        elif isinstance(event, DataReceived):
            pending = self._bodies.get(event.stream_id)
            if pending is None:
                self._http.consumed(event.stream_id, len(event.data))
                return
            if event.stream_ended:
                del self._bodies[event.stream_id]
            pending._feed(event.data, event.stream_ended)

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, StreamReset):
            body = self._bodies.pop(event.stream_id, None)
            if body is not None:  # the client gave up on its request
                body.discard()
                body._feed(b"", True)

    def _answer_now(self, stream_id: int, headers: Headers) -> bool:
        """Answer a body-less GET or HEAD of a small file under ``root`` at once, from the
        per-root :class:`_FileCache`; False (nothing sent) for anything else, which the task
        of :meth:`_respond` then serves.  A file that cannot be read also returns False: the
        task path reports it."""
        root = self.root
        if root is None:
            return False
        method = path = b""
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
        if method != b"GET" and method != b"HEAD":
            return False
        cache = _file_caches.get(root)
        if cache is None:
            cache = _file_caches[root] = _FileCache()
        key = path.split(b"?", 1)[0].split(b"#", 1)[0]
        entry = cache.get(key)
        if entry is None:
            full = self._resolve(path.decode("utf-8", "replace"))
            if full is None:
                return False
            try:
                entry = cache.load(key, full)
            except OSError:
                return False
            if entry is None:
                return False
        data = entry.data
        head = method == b"HEAD"
        http = self._http
        http.send_headers(stream_id, _file_headers(entry.ctype, len(data)),
                          end_stream=head or not data)
        if data and not head:
            http.send_data(stream_id, data, end_stream=True)
        if self.log is not None:
            self._log_request(method, path.decode("utf-8", "replace"), 200,
                              0 if head else len(data))
        return True

    def _log_request(self, method: bytes, path: str, status: int, sent: int) -> None:
        """One line per request on :attr:`log` (which must be set)."""
        assert self.log is not None
        peer = self._quic.peer_address
        self.log.write(f"{peer[0] if peer else '?'} {method.decode(errors='replace')} "
                       f"{path} {status} {sent}\n")
        self.log.flush()

    async def _respond(self, stream_id: int, headers: Headers, body: RequestBody) -> None:
        try:
            await self._respond_to(stream_id, headers, body)
        finally:
            if not body.ended:  # the rest of the body is not needed
                body.discard()
                self._bodies.pop(stream_id, None)
                if not self._quic.closed:
                    self._quic.stop_stream(stream_id, ErrorCode.H3_NO_ERROR)

    async def _respond_to(self, stream_id: int, headers: Headers, body: RequestBody) -> None:
        fields = dict(headers)
        method = fields.get(b":method", b"")
        path = fields.get(b":path", b"/").decode("utf-8", "replace")
        status = 0
        sent = 0
        try:
            if method in (b"GET", b"HEAD"):
                status, sent = await self._serve_file(stream_id, path, method == b"HEAD")
            elif method in (b"POST", b"PUT"):
                status, sent = await self._echo(stream_id, body)
            else:
                status = 405
                self._simple(stream_id, 405, b"method not allowed\n",
                             [(b"allow", b"GET, HEAD, POST, PUT")])
        except (ConnectionError, ValueError) as exc:
            if self.log is not None:
                self.log.write(f"stream {stream_id}: {exc}\n")
        if self.log is not None:
            self._log_request(method, path, status, sent)

    def _simple(self, stream_id: int, status: int, text: bytes,
                extra: Optional[Headers] = None) -> None:
        self._http.send_headers(stream_id, [
            (b":status", str(status).encode()), (b"server", SERVER_NAME),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(text)).encode())] + (extra or []))
        self._http.send_data(stream_id, text, end_stream=True)

    def _resolve(self, path: str) -> Optional[str]:
        if self.root is None:
            return None
        rel = unquote(path.split("?", 1)[0].split("#", 1)[0])
        if "\x00" in rel:
            return None  # no file has that name (%00)
        root = os.path.realpath(self.root)
        try:
            full = os.path.realpath(os.path.join(root, rel.lstrip("/")))
        except (OSError, ValueError):  # a symlink loop, a name too long
            return None
        if full != root and not full.startswith(root + os.sep):
            return None  # outside the root
        if os.path.isdir(full):
            full = os.path.join(full, "index.html")
        return full if os.path.isfile(full) else None

    async def _serve_file(self, stream_id: int, path: str, head: bool) -> tuple[int, int]:
        full = self._resolve(path)
        if full is None:
            if path == "/" and self.root is None:
                text = (b"aiopquic HTTP/3 server\n\nWebTransport echo: /echo\n"
                        b"POST or PUT any path: the body is echoed\n")
                self._simple(stream_id, 200, b"" if head else text)
                return 200, len(text)
            self._simple(stream_id, 404, b"not found\n")
            return 404, 0
        try:
            f = os.fdopen(_open_nonblocking(full), "rb")
        except OSError:  # unreadable (permissions) or gone since it was resolved
            self._simple(stream_id, 403, b"forbidden\n")
            return 403, 0
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._simple(stream_id, 404, b"not found\n")
                return 404, 0
            size = st.st_size
            self._http.send_headers(stream_id, _file_headers(_content_type(full), size),
                                    end_stream=head or size == 0)
            if head or size == 0:
                return 200, 0
            sent = 0
            quic = self._quic
            while sent < size:
                chunk = f.read(min(_CHUNK, size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                self._http.send_data(stream_id, chunk, end_stream=sent >= size)
                if quic.stream_send_pending(stream_id):
                    await self._wait_writable(stream_id)
        if sent < size:  # the file shrank while we read it
            self._quic.reset_stream(stream_id, 0x102)
        return 200, sent

    async def _echo(self, stream_id: int, body: RequestBody) -> tuple[int, int]:
        self._http.send_headers(stream_id, [
            (b":status", b"200"), (b"server", SERVER_NAME),
            (b"content-type", b"application/octet-stream")])
        sent = 0
        while True:
            chunk = await body.get()
            if chunk is None:
                break
            sent += len(chunk)
            self._http.send_data(stream_id, chunk, end_stream=False)
            if self._quic.stream_send_pending(stream_id):
                await self._wait_writable(stream_id)
        self._http.send_data(stream_id, b"", end_stream=True)
        return 200, sent


def _cert_fingerprint(cert_pem: bytes) -> bytes:
    first = cert_pem.split(b"-----END CERTIFICATE-----", 1)[0] + b"-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first.decode("ascii"))).digest()


async def run_server(host: str, port: int, cert: Optional[str], key: Optional[str],
                     root: Optional[str], quiet: bool,
                     ready: Optional[asyncio.Future[int]] = None,
                     write_cert: Optional[str] = None) -> int:
    """Run ``serve`` until SIGINT/SIGTERM (or cancellation).  ``write_cert``: a file to
    write the certificate chain to (PEM), for clients' ``--cacert``; raises
    :class:`OSError` naming it when it cannot be written."""
    config = QuicConfiguration(is_client=False, alpn_protocols=["h3"],
                               max_datagram_frame_size=65535)
    if cert:
        config.load_cert_chain(cert, key)
    else:
        cert_pem, key_pem = make_self_signed("localhost,127.0.0.1,::1", days=10)
        config.certificate_chain = cert_pem
        config.private_key = key_pem
    assert config.certificate_chain is not None
    digest = _cert_fingerprint(config.certificate_chain)
    if write_cert:
        try:
            with open(write_cert, "wb") as f:
                f.write(config.certificate_chain)
        except OSError as exc:
            raise OSError(exc.errno, f"--write-cert {write_cert!r}: cannot write there "
                          f"({exc.strerror})") from None

    class Protocol(HttpServerProtocol):
        pass

    Protocol.root = root
    Protocol.log = None if quiet else sys.stderr
    server = await serve_webtransport(host, port, configuration=config, handler=echo_handler,
                                      path="/echo", create_protocol=Protocol)
    shown = f"[{host}]" if ":" in host else host
    out = sys.stdout
    out.write(f"aiopquic {_version}: HTTP/3 on udp://{shown}:{server.local_port}"
              f" (files: {root or 'none'}; POST/PUT echo; WebTransport echo at /echo)\n")
    out.write(f"certificate SHA-256: {digest.hex()}\n")
    if not cert:
        arr = ", ".join(str(b) for b in digest)
        out.write("  (runtime ECDSA P-256 certificate, valid 10 days)\n"
                  f"  base64: {base64.b64encode(digest).decode()}\n"
                  f"  new WebTransport(\"https://{shown}:{server.local_port}/echo\", "
                  "{serverCertificateHashes: [{algorithm: \"sha-256\", "
                  f"value: new Uint8Array([{arr}])}}]}})\n")
    if write_cert:
        name = "localhost" if host in ("127.0.0.1", "::1", "::", "0.0.0.0") else shown
        out.write(f"certificate written to {write_cert}; try:\n"
                  f"  python -m aiopquic get --cacert {write_cert} "
                  f"https://{name}:{server.local_port}/\n")
    out.write(f"listening on {shown}:{server.local_port}\n")
    out.flush()
    if ready is not None and not ready.done():
        ready.set_result(server.local_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        server.close()
    return 0


def serve_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m aiopquic serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m aiopquic serve",
        description="HTTP/3 file server (GET/HEAD), POST/PUT echo and WebTransport echo at "
                    "/echo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind "
                        "(default 127.0.0.1; '::' or '0.0.0.0' for all)")
    parser.add_argument("--port", type=int, default=4433, help="UDP port (default 4433; "
                        "0 picks a free one)")
    parser.add_argument("--cert", help="PEM certificate chain (default: a runtime "
                        "self-signed ECDSA P-256 certificate)")
    parser.add_argument("--key", help="PEM private key (default: from --cert)")
    parser.add_argument("--root", help="directory whose files GET serves")
    parser.add_argument("--quiet", action="store_true", help="no request log on stderr")
    parser.add_argument("--write-cert", metavar="FILE",
                        help="write the server's certificate (PEM) to FILE, for clients' "
                        "--cacert")
    args = parser.parse_args(argv)
    if args.key and not args.cert:
        parser.error("--key needs --cert")
    if args.root is not None and not os.path.isdir(args.root):
        parser.error(f"--root {args.root!r} is not a directory")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range")
    try:
        return asyncio.run(run_server(args.host, args.port, args.cert, args.key, args.root,
                                      args.quiet, write_cert=args.write_cert))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"serve: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------- client


class _Progress:
    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.total: Optional[int] = None
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and (self.total is None or self.done < self.total):
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9) / (1 << 20)
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            bar = "#" * int(pct / 4)
            line = f"\r[{bar:<25}] {pct:5.1f}% {self.done >> 10:9d} KiB {rate:8.1f} MiB/s"
        else:
            line = f"\r{self.done >> 10:9d} KiB {rate:8.1f} MiB/s"
        self.stream.write(line)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _ClientProtocol(WebTransportProtocol):
    """Collects the HTTP/3 events of each request; ``None`` in a queue means the response
    was cut short (stream reset or connection closed).  Body credit returns as :func:`fetch`
    writes the bytes out."""

    http_credit_on_consume = True

    def __init__(self, quic: QuicConnection,
                 stream_handler: Optional[QuicStreamHandler] = None) -> None:
        super().__init__(quic, stream_handler, enable_webtransport=False)
        self.responses: dict[int, asyncio.Queue[Optional[H3Event]]] = {}

    def http_event_received(self, event: H3Event) -> None:
        if isinstance(event, (HeadersReceived, DataReceived)):
            queue = self.responses.get(event.stream_id)
            if queue is not None:
                queue.put_nowait(event)
            elif isinstance(event, DataReceived):
                self._http.consumed(event.stream_id, len(event.data))

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, StreamReset):
            queue = self.responses.get(event.stream_id)
            if queue is not None:
                queue.put_nowait(None)
        elif isinstance(event, ConnectionTerminated):
            for queue in self.responses.values():
                queue.put_nowait(None)


async def fetch(url: str, out: Any, *, configuration: QuicConfiguration,
                method: str = "GET", body: Optional[bytes] = None,
                progress: Optional[_Progress] = None, headers: Optional[Headers] = None,
                on_headers: Optional[Callable[[int, Headers], None]] = None,
                ) -> tuple[int, Headers, int]:
    """Request ``url`` over HTTP/3 and write the response body to ``out`` (anything with a
    ``write(bytes)`` method).  ``headers`` are added to the request; ``on_headers(status,
    headers)`` is called when the final response headers arrive.

    Returns ``(status, headers, body_bytes)``.  Raises :class:`ValueError` for a bad URL,
    :class:`ConnectionError` when the connection fails or the response is cut short."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"URL must be https://host[:port]/path, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rsplit("@", 1)[-1]
    async with connect(parts.hostname, port, configuration=configuration,
                       create_protocol=_ClientProtocol) as proto:
        assert isinstance(proto, _ClientProtocol)
        http = proto.http
        stream_id = proto._quic.get_next_available_stream_id()
        queue: asyncio.Queue[Optional[H3Event]] = asyncio.Queue()
        proto.responses[stream_id] = queue
        http.send_headers(stream_id, [
            (b":method", method.encode()), (b":scheme", b"https"),
            (b":authority", authority.encode()), (b":path", path.encode()),
            (b"user-agent", SERVER_NAME)] + list(headers or []), end_stream=body is None)
        if body is not None:
            http.send_data(stream_id, body, end_stream=True)
        status = 0
        response_headers: Headers = []
        received = 0
        while True:
            event = await queue.get()
            if event is None:
                raise ConnectionError(
                    f"response cut short after {received} bytes: "
                    f"{proto._quic._close_message() if proto._quic.closed else 'stream reset'}")
            if isinstance(event, HeadersReceived):
                if not status:
                    fields = dict(event.headers)
                    code = fields.get(b":status", b"0")
                    if code.startswith(b"1"):
                        continue
                    status = int(code)
                    response_headers = event.headers
                    if on_headers is not None:
                        on_headers(status, response_headers)
                    length = fields.get(b"content-length")
                    if progress is not None and length is not None and length.isdigit():
                        progress.total = int(length)
            elif isinstance(event, DataReceived) and event.data:
                out.write(event.data)
                http.consumed(stream_id, len(event.data))
                received += len(event.data)
                if progress is not None:
                    progress.add(len(event.data))
            if isinstance(event, (HeadersReceived, DataReceived)) and event.stream_ended:
                break
        del proto.responses[stream_id]
    return status, response_headers, received


async def fetch_h0(url: str, out: IO[bytes], *, configuration: QuicConfiguration,
                   progress: Optional[_Progress] = None) -> tuple[int, Headers, int]:
    """Request ``url`` over HTTP/0.9 on QUIC (ALPN ``hq-interop``, the ``--legacy-http`` of
    aioquic's client) and write the body to ``out``.  HTTP/0.9 has no status or headers:
    a complete response returns ``(200, [], body_bytes)``.  Raises :class:`ValueError` for a
    bad URL, :class:`ConnectionError` when the connection fails or the response is cut
    short."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"URL must be https://host[:port]/path, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    received = 0
    async with connect(parts.hostname, port, configuration=configuration) as proto:
        reader, writer = await proto.create_stream()
        writer.write(b"GET " + path.encode() + b"\r\n")
        writer.write_eof()
        while True:
            chunk = await reader.read(1 << 16)  # raises ConnectionError if cut short
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            if progress is not None:
                progress.add(len(chunk))
    return 200, [], received


_GET_EPILOG = """\
examples:
  python -m aiopquic get https://127.0.0.1:4433/file -o file --cacert cert.pem
  python -m aiopquic get -k -i https://127.0.0.1:4433/          (headers, then the body)
  python -m aiopquic get -k -I https://127.0.0.1:4433/big       (HEAD: headers only)
  python -m aiopquic get -k -d 'hello' -H 'content-type: text/plain' https://127.0.0.1:4433/echo
  python -m aiopquic get -k -d @body.bin https://127.0.0.1:4433/upload
"""


def _parse_header(text: str) -> tuple[bytes, bytes]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ValueError(f"-H {text!r}: expected 'Name: value'")
    return name.lower().encode(), value.strip().encode()


def _format_headers(status: int, headers: Headers, proto: str) -> str:
    lines = [f"{proto} {status}"]
    for name, value in headers:
        if not name.startswith(b":"):
            lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
    return "\r\n".join(lines) + "\r\n\r\n"


def get_main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``python -m aiopquic get`` (curl-like options; user mistakes print one
    line on stderr and exit with status 2, failures with status 1, never a traceback)."""
    parser = argparse.ArgumentParser(prog="python -m aiopquic get",
                                     description="Fetch a URL over HTTP/3.",
                                     epilog=_GET_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="https://host[:port]/path")
    parser.add_argument("-o", "--output", help="write the body to this file (default stdout)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cacert", help="PEM file of CA certificates to trust")
    group.add_argument("--insecure", "-k", action="store_true",
                       help="do not verify the server certificate")
    parser.add_argument("--server-name", help="name to verify the certificate against "
                        "(default: the URL's host)")
    parser.add_argument("-X", "--method", help="request method (default GET, or POST with "
                        "-d, HEAD with -I)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="add a request header (repeatable)")
    parser.add_argument("-d", "--data", help="request body: the text itself, or @FILE for a "
                        "file's bytes (@- for stdin); implies POST")
    parser.add_argument("-i", "--include", action="store_true",
                        help="write the response status and headers before the body")
    parser.add_argument("-I", "--head", action="store_true",
                        help="HEAD request; write the status and headers only")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the request and response headers on stderr")
    parser.add_argument("-m", "--max-time", "--timeout", dest="timeout", type=float,
                        metavar="SECONDS",
                        default=300.0, help="give up after this many seconds (default 300; "
                        "0: no limit)")
    parser.add_argument("--connect-timeout", "--handshake-timeout", dest="handshake_timeout",
                        type=float, default=10.0, metavar="SECONDS",
                        help="give up on the handshake after this many seconds (default 10; "
                        "raise it on lossy paths, where retransmissions back off)")
    parser.add_argument("-q", "--quiet", "-s", "--silent", dest="quiet", action="store_true",
                        help="no progress or summary")
    parser.add_argument("--legacy-http", action="store_true",
                        help="use HTTP/0.9 over QUIC (ALPN hq-interop) instead of HTTP/3")
    args = parser.parse_args(argv)
    if not 0 < args.handshake_timeout <= 3600:
        parser.error("--connect-timeout must be in (0, 3600] seconds")
    if args.timeout < 0:
        parser.error("--max-time must be >= 0 seconds")
    if args.head and args.data is not None:
        parser.error("-I (HEAD) sends no body: drop -d")
    method = (args.method or ("HEAD" if args.head else
                              "POST" if args.data is not None else "GET")).upper()
    extra: Headers = []
    for text in args.header:
        try:
            extra.append(_parse_header(text))
        except ValueError as exc:
            parser.error(str(exc))
    if args.legacy_http and (args.data is not None or method != "GET" or extra
                             or args.include or args.head):
        parser.error("--legacy-http sends only plain GET requests (no -X, -d, -H, -i, -I)")
    config = QuicConfiguration(is_client=True,
                               alpn_protocols=H0_ALPN if args.legacy_http else ["h3"],
                               server_name=args.server_name,
                               handshake_timeout=args.handshake_timeout)
    if args.insecure:
        config.verify_mode = ssl.CERT_NONE
    elif args.cacert:
        if not os.path.isfile(args.cacert):
            parser.error(f"--cacert {args.cacert!r} is not a file")
        config.cafile = args.cacert
    body = None
    if args.data is not None:
        if args.data.startswith("@"):
            source = args.data[1:]
            try:
                if source == "-":
                    body = sys.stdin.buffer.read()
                else:
                    with open(source, "rb") as f:
                        body = f.read()
            except OSError as exc:
                parser.error(f"-d @{source}: {exc.strerror or exc}")
        else:
            body = args.data.encode()
    out: IO[bytes]
    if args.output:
        try:
            out = open(args.output, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            parser.error(f"-o {args.output!r}: cannot write there ({exc.strerror or exc})")
    else:
        out = sys.stdout.buffer
    progress = _Progress(sys.stderr, sys.stderr.isatty() and not args.quiet
                         and not args.verbose)
    proto_name = "HTTP/0.9" if args.legacy_http else "HTTP/3"
    if args.verbose:
        sys.stderr.write(f"> {method} {args.url} ({proto_name})\n")
        for name, value in extra:
            sys.stderr.write(f"> {name.decode()}: {value.decode()}\n")
    try:
        if args.legacy_http:
            coro = fetch_h0(args.url, out, configuration=config, progress=progress)
        else:
            sink = _HeaderSink(out, args.include or args.head, args.verbose, proto_name)
            coro = fetch(args.url, sink, configuration=config, method=method, body=body,
                         progress=progress, headers=extra, on_headers=sink.headers)
        start = time.perf_counter()
        if args.timeout > 0:
            status, _, received = asyncio.run(_with_timeout(coro, args.timeout))
        else:
            status, _, received = asyncio.run(coro)
        elapsed = time.perf_counter() - start
    except (ConnectionError, OSError, ValueError, TimeoutError) as exc:
        progress.finish()
        sys.stderr.write(f"get: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    progress.finish()
    if not args.quiet:
        sys.stderr.write(f"{proto_name} {status}, {received} bytes in {elapsed:.3f} s "
                         f"({received / max(elapsed, 1e-9) / (1 << 20):.1f} MiB/s)\n")
    return 0 if 200 <= status < 300 else 1


class _HeaderSink:
    """The output of ``get``: with -i/-I the status and headers go before the body; with -v
    they also go to stderr."""

    def __init__(self, out: IO[bytes], include: bool, verbose: bool, proto: str) -> None:
        self.out = out
        self.include = include
        self.verbose = verbose
        self.proto = proto

    def headers(self, status: int, headers: Headers) -> None:
        text = _format_headers(status, headers, self.proto)
        if self.include:
            self.out.write(text.encode("latin-1"))
        if self.verbose:
            for line in text.rstrip("\r\n").split("\r\n"):
                sys.stderr.write(f"< {line}\n")

    def write(self, data: bytes) -> int:
        return self.out.write(data)


async def _with_timeout(coro: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"no complete response within {timeout:g} s") from None
