"""Real HTTP(S) servers for tests, on 127.0.0.1 ephemeral ports, each in its own threads.

`LoopbackServer(routes)` serves HTTP/1.1 (keep-alive) and records every request it reads.
A route is a function `(handler, seen)` that writes the response with `handler.reply(...)`; the
route of a path is the exact path, else its first segment (`/status/500` → `/status`). Slow
routes wait on `server.stopping` so that `close()` releases them at once.

Also: `refused_port()` (bound, not listening: connecting is refused), `full_backlog_port()`
(listening with a full accept queue: a connect hangs), `silent_port()` (accepts TCP, never
answers: a TLS handshake hangs), and `make_cert()` (a self-signed certificate via the openssl
command line, for HTTPS servers), `DigestRealm` (the server side of RFC 7616 Digest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request as the server read it."""

    method: str
    target: str  # the request-target, path and query as sent
    path: str
    query: str  # raw, without "?"
    headers: Message
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        """Query parameters (last value wins)."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def session_id(self) -> str | None:
        if "session_id" in self.params:
            return self.params["session_id"]
        try:
            body = self.json()
        except ValueError:
            return None
        return body.get("session_id") if isinstance(body, dict) else None


Route = Callable[["Handler", Seen], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_GET

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        seen = Seen(self.command, self.path, split.path, split.query, self.headers, body)
        with self.server.lock:
            self.server.seen.append(seen)
        segment = "/" + split.path.split("/")[1] if split.path.startswith("/") else split.path
        route = self.server.routes.get(split.path) or self.server.routes.get(segment)
        if route is None:
            self.reply(404, b'{"error": "no such route"}')
        else:
            route(self, seen)

    def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name in headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def reply_json(self, obj: Any, status: int = 200) -> None:
        self.reply(status, json.dumps(obj).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # many concurrent clients connect at once

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = routes
        self.tls = tls
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def requests_for(self, session_id: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.session_id == session_id]

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake runs in the connection's own thread, never in the accept loop
        if self.tls is not None:
            request.settimeout(10)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (timeouts, size limits) are expected


# --- sockets that misbehave ----------------------------------------------------------------


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: a connect is refused (RST)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def full_backlog_port() -> Iterator[int]:
    """A listening port whose accept queue is full: the kernel drops new SYNs (Linux), so a
    connect hangs until the client gives up."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that completes the TCP handshake (kernel backlog) but never reads or writes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


# --- certificates --------------------------------------------------------------------------


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def make_cert(directory: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed EC certificate (and its key) for `san` (like ``IP:127.0.0.1``)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN=vr-engine test {name}",
            "-addext",
            f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


DIGEST_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
DIGEST_FIELD_RE = re.compile(r'(\w+)=("([^"]*)"|([^,\s]*))')


@dataclass
class DigestRealm:
    """The server side of RFC 7616 Digest with qop=auth: `challenge` answers 401 with a fresh
    nonce, `verify` checks a request's Authorization against the shared password."""

    realm: str
    user: str
    password: str
    nonces: set[str] = dataclasses.field(default_factory=set)

    def verify(self, seen: Seen, algorithm: str = "MD5") -> bool | None:
        """None without Digest credentials, else whether they are right."""
        header = seen.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return None
        fields = {
            m.group(1): m.group(3) if m.group(3) is not None else m.group(4)
            for m in DIGEST_FIELD_RE.finditer(header[7:])
        }

        def h(text: str) -> str:
            return DIGEST_HASHES[algorithm](text.encode()).hexdigest()

        ha1 = h(f"{self.user}:{self.realm}:{self.password}")
        ha2 = h(f"{seen.method}:{seen.target}")
        expected = h(
            f"{ha1}:{fields.get('nonce')}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}"
        )
        return (
            fields.get("username") == self.user
            and fields.get("realm") == self.realm
            and fields.get("nonce") in self.nonces
            and fields.get("uri") == seen.target
            and fields.get("qop") == "auth"
            and fields.get("algorithm", "MD5").upper() == algorithm
            and hmac.compare_digest(fields.get("response", ""), expected)
        )

    def challenge(self, handler: Handler, algorithm: str = "MD5") -> None:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        challenge = (
            f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", '
            f'algorithm={algorithm}, opaque="op42"'
        )
        handler.reply(401, b"{}", {"WWW-Authenticate": challenge})
