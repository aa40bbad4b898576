"""Action URL requests (SPEC §4): one HTTP exchange per request, bounded in time and size.

`ActionUrlClient.request` never raises (except `asyncio.CancelledError` when the awaiting task
is cancelled, as asyncio requires): every outcome is an `ActionUrlReplied` or an
`ActionUrlFailed` with a `FailureKind`, and it returns within the URL's `request_timeout` (plus
a few milliseconds) whatever the server does: slow to connect, slow headers, a body trickled a
byte at a time, a huge or compressed body, a redirect loop.

Safety rules, beyond PortSIP:

- HTTPS certificates are always verified; `ca_bundle` adds trust, never removes it.
- Every response body read, including those of redirects and of a Digest challenge, is capped
  at `max_reply_bytes` on the wire and after decoding (gzip/deflate bombs are cut off).
- Cookies are never stored: one call's request cannot influence another's.
- A redirect to another origin drops the URL's custom headers, the signature and the
  idempotency key (httpx drops `Authorization`); a redirect from https to http is refused.
- A failure's `detail` is a short message written here (quoting at most a shortened piece of
  what the server sent), scrubbed of the password, token and signing secret; it never repeats
  the request's parameters or custom header values.

Optional, per URL (`ActionUrlExtras`): an HMAC-SHA256 signature header
``X-VR-Signature: t=<unix ts>,v1=<hex hmac-sha256(secret, "<ts>." + payload)>``, where the
payload is the exact JSON body of a POST, or the exact (percent-encoded) query string of a GET
without the leading ``?``; and an ``Idempotency-Key: <session_id>-<request_id>`` header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any, Final, Literal, Protocol
from urllib.request import Request as UrllibRequest

import httpx
from pydantic import SecretStr

from engine.errors import ConfigError, FieldProblem, ReplyError
from engine.flow.events import ActionUrlFailed, ActionUrlReplied, FailureKind
from engine.model import DESTINATION_RE, ActionUrl, AuthMethod, HttpMethod, parse_headers

DEFAULT_MAX_REPLY_BYTES: Final = 64 * 1024
DEFAULT_MAX_REDIRECTS: Final = 3
# If closing the connection after the deadline hangs, `request` stops waiting this much later.
DEADLINE_GRACE: Final = 0.2
SIGNATURE_HEADER: Final = "X-VR-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
USER_AGENT: Final = "vr-engine/0.1"

Action = Literal["call", "hangup", "repeat"]
ACTIONS: Final[tuple[Action, ...]] = ("call", "hangup", "repeat")

# Custom headers that would break the framing or the body-size guard: dropped.
_RESERVED_HEADERS: Final = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "accept-encoding",
    }
)
_EXCHANGE_KEY: Final = "vr_engine.action_url"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MAX_DETAIL: Final = 200


# --- public data ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CallFacts:
    """What an action URL request says about its call (the SPEC §4 parameters)."""

    from_number: str  # sent as `from`
    to: str  # the receptionist's extension
    from_name: str = ""
    account_name: str = ""  # the receptionist's name
    session_id: str


class CallFactsLike(Protocol):
    """Anything with the fields of `CallFacts` (read-only)."""

    @property
    def from_number(self) -> str: ...
    @property
    def to(self) -> str: ...
    @property
    def from_name(self) -> str: ...
    @property
    def account_name(self) -> str: ...
    @property
    def session_id(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class ActionUrlExtras:
    """Options beyond PortSIP, off by default. `of()` reads them from the action URL once the
    model has the fields `signing_secret` and `idempotency`."""

    signing_secret: SecretStr | None = field(default=None, repr=False)
    idempotency: bool = False

    @classmethod
    def of(cls, action_url: ActionUrl) -> ActionUrlExtras:
        secret = getattr(action_url, "signing_secret", None)
        idempotency = getattr(action_url, "idempotency", False)
        return cls(
            signing_secret=secret if isinstance(secret, SecretStr) else None,
            idempotency=idempotency is True,
        )


def sign(secret: str | bytes, timestamp: int, payload: bytes) -> str:
    """The `X-VR-Signature` value: ``t=<timestamp>,v1=<hex hmac-sha256 of "<ts>." + payload>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_reply(body: bytes) -> tuple[Action, str | None]:
    """The action and destination (None unless `call`) of a reply body; raises `ReplyError`.

    The body must be UTF-8 JSON (no NaN/Infinity, no duplicate keys) holding an object with
    `status_code` an integer equal to 200, `action` one of call/hangup/repeat and, for `call`,
    `destination` a number of up to 64 digits, `*` or `#`, optionally starting with `+`.
    Other keys are ignored, and so is `destination` for hangup and repeat.
    """
    if not body.strip():
        raise ReplyError(FailureKind.INVALID_JSON, "the reply is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ReplyError(FailureKind.INVALID_JSON, "the reply is not UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as dup:
        raise ReplyError(FailureKind.INVALID_REPLY, f"the reply repeats the key {dup}") from None
    except json.JSONDecodeError as error:
        raise ReplyError(
            FailureKind.INVALID_JSON,
            f"the reply is not JSON (line {error.lineno} column {error.colno})",
        ) from None
    except (ValueError, RecursionError):  # NaN, Infinity, absurd nesting
        raise ReplyError(FailureKind.INVALID_JSON, "the reply is not JSON") from None
    if not isinstance(data, dict):
        raise ReplyError(FailureKind.INVALID_REPLY, "the reply is not a JSON object")
    status = data.get("status_code")
    if not isinstance(status, int) or isinstance(status, bool):
        raise ReplyError(
            FailureKind.INVALID_REPLY, "status_code is missing or not an integer (must be 200)"
        )
    if status != 200:
        raise ReplyError(FailureKind.INVALID_REPLY, f"status_code is {status}, not 200")
    action = data.get("action")
    if action not in ACTIONS:
        raise ReplyError(
            FailureKind.INVALID_REPLY,
            f"action {_short(action)} is not one of call, hangup, repeat",
        )
    if action != "call":
        return action, None
    destination = data.get("destination")
    if not isinstance(destination, str) or not DESTINATION_RE.fullmatch(destination):
        raise ReplyError(
            FailureKind.INVALID_REPLY,
            f"action call needs a destination of up to 64 digits, * or #, optionally "
            f"starting with +; got {_short(destination)}",
        )
    return "call", destination


# --- the client ----------------------------------------------------------------------------


class ActionUrlClient:
    """Sends action URL requests over one long-lived `httpx.AsyncClient` (connection pool).

    Create it, use it and `aclose()` it within one event loop. Concurrent requests are
    independent: the pool has no connection limit, so a slow URL never queues another.
    `proxy` (e.g. ``http://proxy:3128``) is used only when given; proxy environment variables
    are ignored.
    """

    def __init__(
        self,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        ca_bundle: str | os.PathLike[str] | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        proxy: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if max_reply_bytes < 1:
            raise ValueError("max_reply_bytes must be at least 1")
        if max_redirects < 0:
            raise ValueError("max_redirects must not be negative")
        self.max_reply_bytes = max_reply_bytes
        self.max_redirects = max_redirects
        inner = httpx.AsyncHTTPTransport(
            verify=_ssl_context(ca_bundle),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=64, keepalive_expiry=5.0
            ),
            proxy=proxy,
        )
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(inner, max_reply_bytes),
            follow_redirects=True,
            max_redirects=max_redirects,
            cookies=CookieJar(policy=_NoCookies()),
            trust_env=False,
            headers={
                "User-Agent": user_agent,
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            },
        )
        self._abandoned: set[asyncio.Task[ActionUrlReplied | ActionUrlFailed]] = set()

    async def __aenter__(self) -> ActionUrlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool; requests sent afterwards fail with CONNECT_ERROR."""
        for task in list(self._abandoned):
            task.cancel()
        if self._abandoned:
            await asyncio.wait(self._abandoned, timeout=1.0)
        await self._client.aclose()

    async def request(
        self,
        action_url: ActionUrl,
        facts: CallFactsLike,
        input: str,
        *,
        request_id: int,
        now: Callable[[], datetime],
        extras: ActionUrlExtras | None = None,
    ) -> ActionUrlReplied | ActionUrlFailed:
        """Send the request of `action_url` for a call and judge the reply (SPEC §4).

        `input` is the caller's DTMF input (empty for CALLER URLs). `now` stamps the result's
        `at` and the signature's timestamp. `extras` defaults to `ActionUrlExtras.of(action_url)`.
        """
        started = time.monotonic()
        total = action_url.effective_request_timeout
        if extras is None:
            extras = ActionUrlExtras.of(action_url)
        exchange = _Exchange(action_url=action_url, extras=extras)
        task = asyncio.get_running_loop().create_task(
            self._exchange(exchange, facts, input, request_id, now, started)
        )
        try:
            done, _ = await asyncio.wait({task}, timeout=total + DEADLINE_GRACE)
        except asyncio.CancelledError:
            task.cancel()
            self._abandon(task)
            raise
        if not done:  # the exchange did not end at its deadline: stop waiting for it
            task.cancel()
            self._abandon(task)
            return exchange.failed(
                now, request_id, started, FailureKind.TIMEOUT, f"no reply within {total:g} s"
            )
        if task.cancelled() or task.exception() is not None:  # never expected
            return exchange.failed(
                now, request_id, started, FailureKind.CONNECT_ERROR, "unexpected internal error"
            )
        return task.result()

    def _abandon(self, task: asyncio.Task[ActionUrlReplied | ActionUrlFailed]) -> None:
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[ActionUrlReplied | ActionUrlFailed]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it

    async def _exchange(
        self,
        exchange: _Exchange,
        facts: CallFactsLike,
        input: str,
        request_id: int,
        now: Callable[[], datetime],
        started: float,
    ) -> ActionUrlReplied | ActionUrlFailed:
        action_url = exchange.action_url
        total = action_url.effective_request_timeout
        deadline = asyncio.timeout(total)
        status: int | None = None
        try:
            async with deadline:
                status, body = await self._send(exchange, facts, input, request_id, now)
            if not 200 <= status < 300:
                phrase = _status_phrase(status)
                return exchange.failed(
                    now,
                    request_id,
                    started,
                    FailureKind.HTTP_STATUS,
                    f"HTTP {status}{' ' + phrase if phrase else ''}",
                    http_status=status,
                )
            action, destination = parse_reply(body)
        except ReplyError as error:
            return exchange.failed(
                now, request_id, started, error.kind, error.detail, http_status=status
            )
        except Exception as error:
            kind, detail = _classify(error, exchange, timed_out=deadline.expired())
            return exchange.failed(
                now, request_id, started, kind, detail, http_status=exchange.http_status
            )
        return ActionUrlReplied(
            at=now(),
            request_id=request_id,
            action=action,
            destination=destination,
            http_status=status,
            latency_ms=_elapsed_ms(started),
        )

    async def _send(
        self,
        exchange: _Exchange,
        facts: CallFactsLike,
        input: str,
        request_id: int,
        now: Callable[[], datetime],
    ) -> tuple[int, bytes]:
        """The status and (for a 2xx) the body of the final response."""
        action_url = exchange.action_url
        extras = exchange.extras
        params = {
            "from": facts.from_number,
            "to": facts.to,
            "input": input,
            "from_name": facts.from_name,
            "account_name": facts.account_name,
            "session_id": facts.session_id,
        }
        url = httpx.URL(action_url.url)
        exchange.origin = _origin(url)
        try:
            custom = [
                (name, value)
                for name, value in parse_headers(action_url.headers)
                if name.lower() not in _RESERVED_HEADERS
            ]
            headers = httpx.Headers(custom)
        except ValueError:  # the message could quote a header value: not in the detail
            raise _Failure(
                FailureKind.CONNECT_ERROR, "the headers are invalid (write k1:v1&k2:v2, ASCII)"
            ) from None
        exchange.strip = {name.lower() for name, _ in custom} - {"host"}
        content: bytes | None = None
        if action_url.method is HttpMethod.POST:
            content = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
            payload = content
        else:
            url = url.copy_merge_params(params)
            payload = url.query
        if extras.signing_secret is not None:
            secret = extras.signing_secret.get_secret_value()
            headers[SIGNATURE_HEADER] = sign(secret, int(now().timestamp()), payload)
            exchange.strip.add(SIGNATURE_HEADER.lower())
        if extras.idempotency:
            headers[IDEMPOTENCY_HEADER] = f"{facts.session_id}-{request_id}"
            exchange.strip.add(IDEMPOTENCY_HEADER.lower())
        auth: httpx.Auth | None = None
        match action_url.auth:
            case AuthMethod.BASIC:
                auth = httpx.BasicAuth(action_url.username or "", _secret(action_url.password))
            case AuthMethod.DIGEST:
                auth = httpx.DigestAuth(action_url.username or "", _secret(action_url.password))
            case AuthMethod.BEARER:
                headers["Authorization"] = f"Bearer {_secret(action_url.token)}"
            case AuthMethod.DISABLE:
                pass
        total = action_url.effective_request_timeout
        request = self._client.build_request(
            action_url.method.value,
            url,
            headers=headers,
            content=content,
            timeout=httpx.Timeout(total, connect=action_url.effective_connection_timeout),
            extensions={"trace": exchange.trace, _EXCHANGE_KEY: exchange},
        )
        response = await self._client.send(request, auth=auth, stream=True)
        exchange.http_status = response.status_code
        try:
            if not 200 <= response.status_code < 300:
                return response.status_code, b""
            exchange.phase = _READING
            return response.status_code, await response.aread()
        finally:
            await response.aclose()


# --- one exchange --------------------------------------------------------------------------

_CONNECTING = "connecting"
_SENDING = "sending the request"
_WAITING = "waiting for the reply"
_READING = "reading the reply"
_PHASES: Final = {
    "connection.connect_tcp.started": _CONNECTING,
    "connection.start_tls.started": _CONNECTING,
    "http11.send_request_headers.started": _SENDING,
    "http11.receive_response_headers.started": _WAITING,
    "http11.receive_response_body.started": _READING,
}


@dataclass(kw_only=True)
class _Exchange:
    """The state of one request: its phase, origin and secrets."""

    action_url: ActionUrl
    extras: ActionUrlExtras
    phase: str = _CONNECTING
    origin: tuple[str, str, int] = ("", "", 0)
    strip: set[str] = field(default_factory=set)
    http_status: int | None = None  # of the final response, once it has come

    async def trace(self, name: str, info: Mapping[str, Any]) -> None:
        self.phase = _PHASES.get(name, self.phase)

    def check_redirect(self, request: httpx.Request) -> None:
        """Called for every request sent: refuse https→http, strip ours cross-origin."""
        target = _origin(request.url)
        if target == self.origin:
            return
        scheme, host, _ = self.origin
        if scheme == "https" and target[0] == "http":
            raise _Failure(FailureKind.TLS_ERROR, "a redirect from https to http was refused")
        if host == target[1] and (scheme, target[0]) == ("http", "https"):
            return  # the same host, upgraded to https
        for name in self.strip:
            request.headers.pop(name, None)

    def secrets(self) -> list[str]:
        url = self.action_url
        found = [_secret(url.password), _secret(url.token), _secret(self.extras.signing_secret)]
        if url.password is not None:
            basic = f"{url.username or ''}:{_secret(url.password)}".encode()
            found.append(base64.b64encode(basic).decode())
        with contextlib.suppress(Exception):  # an invalid URL fails before anything is sent
            found.append(httpx.URL(url.url).password)  # http://user:password@host/
        return [s for s in found if s]

    def failed(
        self,
        now: Callable[[], datetime],
        request_id: int,
        started: float,
        kind: FailureKind,
        detail: str,
        *,
        http_status: int | None = None,
    ) -> ActionUrlFailed:
        return ActionUrlFailed(
            at=now(),
            request_id=request_id,
            kind=kind,
            detail=_redact(detail, self.secrets()),
            http_status=http_status,
            latency_ms=_elapsed_ms(started),
        )


class _Failure(Exception):
    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _classify(error: Exception, exchange: _Exchange, *, timed_out: bool) -> tuple[FailureKind, str]:
    url = exchange.action_url
    phase = exchange.phase
    if isinstance(error, _Failure):
        return error.kind, error.detail
    if timed_out:
        total = url.effective_request_timeout
        if phase == _CONNECTING:
            return FailureKind.CONNECT_TIMEOUT, f"could not connect within {total:g} s"
        return FailureKind.TIMEOUT, f"no complete reply within {total:g} s ({phase})"
    if isinstance(error, httpx.TooManyRedirects):
        return FailureKind.TOO_MANY_REDIRECTS, "too many redirects"
    if isinstance(error, httpx.ConnectTimeout):  # the TLS handshake included
        seconds = url.effective_connection_timeout
        return FailureKind.CONNECT_TIMEOUT, f"could not connect within {seconds:g} s"
    if isinstance(error, httpx.TimeoutException):
        return FailureKind.TIMEOUT, f"timed out {phase}"
    tls = _tls_problem(error)
    if tls is not None:
        return FailureKind.TLS_ERROR, f"TLS failed: {tls}"
    if isinstance(error, httpx.ConnectError):
        return FailureKind.CONNECT_ERROR, f"could not connect: {_os_reason(error)}"
    if isinstance(error, httpx.RemoteProtocolError):
        return FailureKind.INVALID_REPLY, f"the server broke HTTP: {_message(error)}"
    if isinstance(error, httpx.NetworkError):
        return FailureKind.CONNECT_ERROR, f"the connection failed {phase}: {_os_reason(error)}"
    if isinstance(error, httpx.UnsupportedProtocol):
        return FailureKind.INVALID_REPLY, "the URL or a redirect is not http or https"
    if isinstance(error, httpx.LocalProtocolError | httpx.InvalidURL | ValueError):
        # the message could quote a header value or the URL: not in the detail
        name = type(error).__name__
        return (
            FailureKind.CONNECT_ERROR,
            f"the request could not be sent: a header or the URL is invalid ({name})",
        )
    if isinstance(error, httpx.ProtocolError):  # e.g. a malformed Digest challenge
        return FailureKind.INVALID_REPLY, f"the server broke HTTP: {_message(error)}"
    kind = FailureKind.INVALID_REPLY if phase == _READING else FailureKind.CONNECT_ERROR
    return kind, f"unexpected error {phase} ({type(error).__name__})"


# --- the transport guard -------------------------------------------------------------------


class _GuardedTransport(httpx.AsyncBaseTransport):
    """Checks each request sent (redirects included) and caps each response body."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int) -> None:
        self._inner = inner
        self._max = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = request.extensions.get(_EXCHANGE_KEY)
        if isinstance(exchange, _Exchange):
            exchange.check_redirect(request)
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        declared = response.headers.get("Content-Length")
        headers = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in (b"content-encoding", b"content-length")
        ]
        return httpx.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_CappedStream(response.stream, self._max, declared, encoding),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    """A response body of at most `limit` bytes, on the wire and decoded (gzip or deflate)."""

    def __init__(
        self, inner: httpx.AsyncByteStream, limit: int, declared: str | None, encoding: str
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._declared = declared
        self._encoding = encoding

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self._limit
        too_large = _Failure(FailureKind.TOO_LARGE, f"the reply is larger than {limit} bytes")
        declared = (self._declared or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise too_large
        decoder = None
        if self._encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
        elif self._encoding not in ("", "identity"):
            raise _Failure(
                FailureKind.INVALID_REPLY,
                f"unsupported Content-Encoding {_short(self._encoding)} (identity was asked for)",
            )
        wire = decoded = 0
        async for chunk in self._inner:
            wire += len(chunk)
            if wire > limit:
                raise too_large
            if decoder is not None:
                try:
                    chunk = decoder.decompress(chunk, limit + 1 - decoded)
                except zlib.error:
                    raise _Failure(
                        FailureKind.INVALID_REPLY, f"the {self._encoding} body is corrupt"
                    ) from None
            decoded += len(chunk)
            if decoded > limit:
                raise too_large
            if chunk:
                yield chunk
        if decoder is not None and not decoder.eof:
            raise _Failure(FailureKind.INVALID_REPLY, f"the {self._encoding} body is truncated")

    async def aclose(self) -> None:
        await self._inner.aclose()


class _NoCookies(DefaultCookiePolicy):
    """Store and send no cookies: requests of different calls stay independent."""

    def set_ok(self, cookie: Cookie, request: UrllibRequest) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: UrllibRequest) -> bool:
        return False


# --- helpers -------------------------------------------------------------------------------


def _ssl_context(ca_bundle: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """The default trust (certifi), plus `ca_bundle`; verification is always on."""
    context = httpx.create_ssl_context(verify=True, trust_env=False)
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=os.fspath(ca_bundle))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                [FieldProblem("ca_bundle", f"cannot load {os.fspath(ca_bundle)!r}: {error}")]
            ) from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _tls_problem(error: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError) and not isinstance(
            current, ssl.SSLWantReadError | ssl.SSLWantWriteError
        ):
            return str(current.reason or current.strerror or type(current).__name__)
        current = current.__cause__ or current.__context__
    return None


def _os_reason(error: BaseException) -> str:
    """The operating system's reason (like "Connection refused") under `error`, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and isinstance(current.errno, int):
            if current.errno > 0:
                return os.strerror(current.errno)
            if current.strerror:  # a resolver error (socket.gaierror)
                return str(current.strerror)
        current = current.__cause__ or current.__context__
    return _message(error)


def _message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _redact(text: str, secrets: list[str]) -> str:
    """`text` without any secret (also as a Python repr would escape it, and also cut short
    by `_short`), then truncated: truncation comes last so that it cannot split a secret."""
    variants = {variant for secret in secrets for variant in (secret, repr(secret)[1:-1])}
    for secret in sorted(variants, key=len, reverse=True):
        text = text.replace(secret, "***")
        for size in range(len(secret) - 1, 0, -1):
            text = text.replace(secret[:size] + "…", "***…")
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(_short(key))
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
