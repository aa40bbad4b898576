"""Action URL requests (SPEC §4) against real HTTP(S) servers on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from engine.action_urls import (
    ActionUrlClient,
    ActionUrlExtras,
    CallFacts,
    parse_reply,
    sign,
)
from engine.errors import ConfigError, ReplyError
from engine.flow.events import ActionUrlFailed, ActionUrlReplied, FailureKind
from engine.model import ActionUrl
from tests.http_servers import (
    DigestRealm,
    Handler,
    LoopbackServer,
    Seen,
    full_backlog_port,
    have_openssl,
    make_cert,
    refused_port,
    server_tls_context,
    silent_port,
)

USER = "frontdesk"
PASSWORD = "pw7secret"
TOKEN = "tok-SECRET-4f9a"
SIGNING_SECRET = "sig-SECRET-77"
PIN = "135790"
REALM = "vr-test"
HANGUP = {"status_code": 200, "action": "hangup"}
FIXED_NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
SLOW = 4.0  # how long a slow route stalls (released at once when the server closes)

Result = ActionUrlReplied | ActionUrlFailed


# --- routes --------------------------------------------------------------------------------


def ok(handler: Handler, seen: Seen) -> None:
    handler.reply_json(HANGUP)


def call_222(handler: Handler, seen: Seen) -> None:
    handler.reply_json({"status_code": 200, "action": "call", "destination": "222"})


def repeat(handler: Handler, seen: Seen) -> None:
    handler.reply_json({"status_code": 200, "action": "repeat", "note": "extra keys are fine"})


def status(handler: Handler, seen: Seen) -> None:
    handler.reply(int(seen.path.split("/")[2]), b'{"status_code": 200, "action": "hangup"}')


CANNED: dict[str, bytes] = {
    "garbage": b"<html>not json</html>",
    "not-utf8": b'{"status_code": 200, "action": "hang\xff"}',
    "empty": b"",
    "array": b'[200, "hangup"]',
    "nan": b'{"status_code": NaN, "action": "hangup"}',
    "status-str": b'{"status_code": "200", "action": "hangup"}',
    "status-bool": b'{"status_code": true, "action": "hangup"}',
    "status-float": b'{"status_code": 200.0, "action": "hangup"}',
    "status-500": b'{"status_code": 500, "action": "hangup"}',
    "no-status": b'{"action": "hangup"}',
    "unknown-action": b'{"status_code": 200, "action": "dance"}',
    "upper-action": b'{"status_code": 200, "action": "HANGUP"}',
    "no-action": b'{"status_code": 200}',
    "call-no-dest": b'{"status_code": 200, "action": "call"}',
    "call-empty-dest": b'{"status_code": 200, "action": "call", "destination": ""}',
    "call-int-dest": b'{"status_code": 200, "action": "call", "destination": 222}',
    "call-bad-dest": b'{"status_code": 200, "action": "call", "destination": "22a"}',
    "call-newline-dest": b'{"status_code": 200, "action": "call", "destination": "222\\n"}',
    "call-long-dest": b'{"status_code": 200, "action": "call", "destination": "'
    + b"1" * 65
    + b'"}',
    "duplicate": b'{"status_code": 200, "action": "call", "action": "hangup"}',
    "call-plus": b'{"status_code": 200, "action": "call", "destination": "+4930*12#"}',
}


def canned(handler: Handler, seen: Seen) -> None:
    handler.reply(200, CANNED[seen.path.split("/")[2]])


def basic(handler: Handler, seen: Seen) -> None:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    if seen.headers.get("Authorization") == expected:
        handler.reply_json(HANGUP)
    else:
        handler.reply(401, b"{}", {"WWW-Authenticate": f'Basic realm="{REALM}"'})


def bearer(handler: Handler, seen: Seen) -> None:
    if seen.headers.get("Authorization") == f"Bearer {TOKEN}":
        handler.reply_json(HANGUP)
    else:
        handler.reply(401, b"{}", {"WWW-Authenticate": "Bearer"})


DIGEST = DigestRealm(REALM, USER, PASSWORD)
DIGEST_LOG: list[str] = []  # "challenge" | "ok" | "bad"


def digest(handler: Handler, seen: Seen) -> None:
    """RFC 7616 with qop=auth: verify the client's response from the shared password."""
    algorithm = "SHA-256" if seen.path.endswith("sha256") else "MD5"
    verdict = DIGEST.verify(seen, algorithm)
    DIGEST_LOG.append({None: "challenge", True: "ok", False: "bad"}[verdict])
    if verdict:
        handler.reply_json(HANGUP)
    else:
        DIGEST.challenge(handler, algorithm)


def signed(handler: Handler, seen: Seen) -> None:
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", seen.headers.get("X-VR-Signature", ""))
    payload = seen.body if seen.method == "POST" else seen.query.encode()
    if match and abs(int(match.group(1)) - time.time()) < 30:
        message = match.group(1).encode() + b"." + payload
        expected = hmac.new(SIGNING_SECRET.encode(), message, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, match.group(2)):
            handler.reply_json(HANGUP)
            return
    handler.reply(401, b"{}")


def slow_headers(handler: Handler, seen: Seen) -> None:
    handler.server.stopping.wait(SLOW)
    handler.reply_json(HANGUP)


def sleep(handler: Handler, seen: Seen) -> None:
    handler.server.stopping.wait(float(seen.path.split("/")[2]))
    handler.reply_json(HANGUP)


def trickle(handler: Handler, seen: Seen) -> None:
    """Headers at once, then the body one byte every 0.1 s: no read ever times out."""
    body = json.dumps(HANGUP).encode() + b" " * 200
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for i in range(len(body)):
        if handler.server.stopping.wait(0.1):
            return
        handler.wfile.write(body[i : i + 1])
        handler.wfile.flush()


def huge_declared(handler: Handler, seen: Seen) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(50_000_000))
    handler.end_headers()
    for _ in range(100):
        handler.wfile.write(b" " * 65536)


def huge_chunked(handler: Handler, seen: Seen) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.close_connection = True
    chunk = b" " * 16384
    for _ in range(3000):  # 48 MB unless the client stops reading
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    handler.wfile.write(b"0\r\n\r\n")


def gzipped(handler: Handler, seen: Seen) -> None:
    handler.reply(200, gzip.compress(json.dumps(HANGUP).encode()), {"Content-Encoding": "gzip"})


BOMB = gzip.compress(b" " * 20_000_000)


def gzip_bomb(handler: Handler, seen: Seen) -> None:
    handler.reply(200, BOMB, {"Content-Encoding": "gzip"})


def brotli(handler: Handler, seen: Seen) -> None:
    handler.reply(200, b"\x0b\x02\x80{}\x03", {"Content-Encoding": "br"})


def redirect(handler: Handler, seen: Seen) -> None:
    target = seen.params.get("target") or "/redirect"  # no target: a loop
    handler.reply(307, b"", {"Location": target})


def cookie(handler: Handler, seen: Seen) -> None:
    handler.reply(200, json.dumps(HANGUP).encode(), {"Set-Cookie": "sid=abc123; Path=/"})


def echo_auth(handler: Handler, seen: Seen) -> None:
    """An invalid reply that quotes the Authorization header back (a leak test)."""
    handler.reply_json({"status_code": 200, "action": seen.headers.get("Authorization", "")})


def echo_input(handler: Handler, seen: Seen) -> None:
    handler.reply(500, json.dumps({"input": seen.params.get("input")}).encode())


def disconnect(handler: Handler, seen: Seen) -> None:
    handler.close_connection = True
    handler.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"status')
    handler.wfile.flush()


def bad_http(handler: Handler, seen: Seen) -> None:
    handler.close_connection = True
    handler.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
    handler.wfile.flush()


ROUTES = {
    "/ok": ok,
    "/call": call_222,
    "/repeat": repeat,
    "/status": status,
    "/canned": canned,
    "/basic": basic,
    "/bearer": bearer,
    "/digest-md5": digest,
    "/digest-sha256": digest,
    "/signed": signed,
    "/slow-headers": slow_headers,
    "/sleep": sleep,
    "/trickle": trickle,
    "/huge-declared": huge_declared,
    "/huge-chunked": huge_chunked,
    "/gzip": gzipped,
    "/gzip-bomb": gzip_bomb,
    "/brotli": brotli,
    "/redirect": redirect,
    "/cookie": cookie,
    "/echo-auth": echo_auth,
    "/echo-input": echo_input,
    "/disconnect": disconnect,
    "/bad-http": bad_http,
}


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(ROUTES) as srv:
        yield srv


@pytest.fixture(scope="module")
def other() -> Iterator[LoopbackServer]:
    """A second origin (another port)."""
    with LoopbackServer(ROUTES) as srv:
        yield srv


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not have_openssl():
        pytest.skip("the openssl command is needed to make test certificates")
    directory = tmp_path_factory.mktemp("certs")
    good, good_key = make_cert(directory, "good", "IP:127.0.0.1")
    wrong, wrong_key = make_cert(directory, "wrong", "IP:127.0.0.2")
    bundle = directory / "bundle.pem"
    bundle.write_bytes(good.read_bytes() + wrong.read_bytes())
    return {
        "good": good,
        "good_key": good_key,
        "wrong": wrong,
        "wrong_key": wrong_key,
        "bundle": bundle,
    }


@pytest.fixture(scope="module")
def tls_server(certs: dict[str, Path]) -> Iterator[LoopbackServer]:
    with LoopbackServer(ROUTES, tls=server_tls_context(certs["good"], certs["good_key"])) as srv:
        yield srv


def url_for(target: str, **fields: Any) -> ActionUrl:
    return ActionUrl.model_validate({"name": "test", "type": "DTMF", "url": target, **fields})


def facts(session: str | None = None) -> CallFacts:
    return CallFacts(
        from_number="+49 30 1234",
        to="800",
        from_name="Zoë & Co = 1?",
        account_name="Front desk",
        session_id=session or uuid.uuid4().hex,
    )


async def timed(
    client: ActionUrlClient,
    action_url: ActionUrl,
    call: CallFacts,
    *,
    input: str = "21",
    request_id: int = 7,
    extras: ActionUrlExtras | None = None,
) -> tuple[Result, float]:
    started = time.monotonic()
    result = await client.request(
        action_url, call, input, request_id=request_id, now=lambda: FIXED_NOW, extras=extras
    )
    return result, time.monotonic() - started


def run(
    action_url: ActionUrl,
    call: CallFacts | None = None,
    *,
    client_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Result, float]:
    async def go() -> tuple[Result, float]:
        async with ActionUrlClient(**(client_options or {})) as client:
            return await timed(client, action_url, call or facts(), **kwargs)

    return asyncio.run(go())


def failed(result: Result, kind: FailureKind) -> ActionUrlFailed:
    assert isinstance(result, ActionUrlFailed), result
    assert result.kind is kind, result
    assert result.detail, result
    assert result.at == FIXED_NOW
    return result


def replied(result: Result) -> ActionUrlReplied:
    assert isinstance(result, ActionUrlReplied), result
    assert result.at == FIXED_NOW and result.request_id == 7
    return result


# --- replies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "action", "destination"),
    [
        ("/ok", "hangup", None),
        ("/repeat", "repeat", None),
        ("/call", "call", "222"),
        ("/canned/call-plus", "call", "+4930*12#"),
        ("/gzip", "hangup", None),
    ],
)
def test_valid_replies(
    server: LoopbackServer, path: str, action: str, destination: str | None
) -> None:
    result, _ = run(url_for(server.url(path)))
    reply = replied(result)
    assert (reply.action, reply.destination, reply.http_status) == (action, destination, 200)
    assert 0 < reply.latency_ms < 1000


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("garbage", FailureKind.INVALID_JSON),
        ("not-utf8", FailureKind.INVALID_JSON),
        ("empty", FailureKind.INVALID_JSON),
        ("nan", FailureKind.INVALID_JSON),
        ("array", FailureKind.INVALID_REPLY),
        ("status-str", FailureKind.INVALID_REPLY),
        ("status-bool", FailureKind.INVALID_REPLY),
        ("status-float", FailureKind.INVALID_REPLY),
        ("status-500", FailureKind.INVALID_REPLY),
        ("no-status", FailureKind.INVALID_REPLY),
        ("unknown-action", FailureKind.INVALID_REPLY),
        ("upper-action", FailureKind.INVALID_REPLY),
        ("no-action", FailureKind.INVALID_REPLY),
        ("call-no-dest", FailureKind.INVALID_REPLY),
        ("call-empty-dest", FailureKind.INVALID_REPLY),
        ("call-int-dest", FailureKind.INVALID_REPLY),
        ("call-bad-dest", FailureKind.INVALID_REPLY),
        ("call-newline-dest", FailureKind.INVALID_REPLY),
        ("call-long-dest", FailureKind.INVALID_REPLY),
        ("duplicate", FailureKind.INVALID_REPLY),
    ],
)
def test_invalid_replies(server: LoopbackServer, name: str, kind: FailureKind) -> None:
    result, _ = run(url_for(server.url(f"/canned/{name}")))
    assert failed(result, kind).http_status == 200


@pytest.mark.parametrize("code", [500, 404, 401, 302, 204])
def test_non_2xx_and_empty_2xx(server: LoopbackServer, code: int) -> None:
    result, _ = run(url_for(server.url(f"/status/{code}")))
    if code == 204:  # a 2xx without a body is not a reply
        assert failed(result, FailureKind.INVALID_JSON).http_status == 204
    else:
        assert failed(result, FailureKind.HTTP_STATUS).http_status == code
        assert str(code) in result.detail


def test_too_large(server: LoopbackServer) -> None:
    for path in ("/huge-declared", "/huge-chunked", "/gzip-bomb"):
        result, elapsed = run(url_for(server.url(path)))
        failed(result, FailureKind.TOO_LARGE)
        assert elapsed < 1.0, path
    small, _ = run(url_for(server.url("/ok")), client_options={"max_reply_bytes": 10})
    failed(small, FailureKind.TOO_LARGE)


def test_unsupported_content_encoding(server: LoopbackServer) -> None:
    failed(run(url_for(server.url("/brotli")))[0], FailureKind.INVALID_REPLY)


def test_broken_http(server: LoopbackServer) -> None:
    failed(run(url_for(server.url("/bad-http")))[0], FailureKind.INVALID_REPLY)
    result, _ = run(url_for(server.url("/disconnect")))
    assert isinstance(result, ActionUrlFailed)
    assert result.kind in (FailureKind.INVALID_REPLY, FailureKind.CONNECT_ERROR)


# --- what is sent --------------------------------------------------------------------------

SIX = {"from", "to", "input", "from_name", "account_name", "session_id"}


def test_get_sends_query_parameters_and_headers(server: LoopbackServer) -> None:
    call = facts()
    url = url_for(server.url("/ok?fixed=1"), headers="X-Tenant:acme&X-Trace: 42")
    replied(run(url, call, input="5#")[0])
    [seen] = server.requests_for(call.session_id)
    assert seen.method == "GET" and seen.body == b""
    assert seen.params == {
        "fixed": "1",
        "from": "+49 30 1234",
        "to": "800",
        "input": "5#",
        "from_name": "Zoë & Co = 1?",
        "account_name": "Front desk",
        "session_id": call.session_id,
    }
    assert seen.headers["X-Tenant"] == "acme" and seen.headers["X-Trace"] == "42"
    assert "Authorization" not in seen.headers
    assert "X-VR-Signature" not in seen.headers and "Idempotency-Key" not in seen.headers


def test_post_sends_a_json_body(server: LoopbackServer) -> None:
    call = facts()
    url = url_for(server.url("/ok"), method="POST", headers="X-Tenant:acme&Content-Length:5")
    replied(run(url, call, input="")[0])
    [seen] = server.requests_for(call.session_id)
    assert seen.method == "POST" and seen.query == ""
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Tenant"] == "acme"
    body = seen.json()
    assert set(body) == SIX
    assert body == {
        "from": "+49 30 1234",
        "to": "800",
        "input": "",
        "from_name": "Zoë & Co = 1?",
        "account_name": "Front desk",
        "session_id": call.session_id,
    }


def test_cookies_are_never_kept(server: LoopbackServer) -> None:
    async def go() -> list[Seen]:
        async with ActionUrlClient() as client:
            first, second = facts(), facts()
            await timed(client, url_for(server.url("/cookie")), first)
            await timed(client, url_for(server.url("/cookie")), second)
            return server.requests_for(second.session_id)

    [seen] = asyncio.run(go())
    assert "Cookie" not in seen.headers


# --- authentication ------------------------------------------------------------------------


def test_basic_auth(server: LoopbackServer) -> None:
    target = server.url("/basic")
    failed(run(url_for(target))[0], FailureKind.HTTP_STATUS)
    wrong = url_for(target, auth="BASIC", username=USER, password="wrongpass1")
    assert failed(run(wrong)[0], FailureKind.HTTP_STATUS).http_status == 401
    right = url_for(target, auth="BASIC", username=USER, password=PASSWORD)
    replied(run(right)[0])


@pytest.mark.parametrize(("path", "method"), [("/digest-md5", "GET"), ("/digest-sha256", "POST")])
def test_digest_auth_answers_a_real_challenge(
    server: LoopbackServer, path: str, method: str
) -> None:
    DIGEST_LOG.clear()
    right = url_for(
        server.url(path), auth="DIGEST", username=USER, password=PASSWORD, method=method
    )
    replied(run(right)[0])
    assert DIGEST_LOG == ["challenge", "ok"]
    DIGEST_LOG.clear()
    wrong = url_for(server.url(path), auth="DIGEST", username=USER, password="wrongpass1")
    assert failed(run(wrong)[0], FailureKind.HTTP_STATUS).http_status == 401
    assert DIGEST_LOG == ["challenge", "bad"]


def test_bearer_auth(server: LoopbackServer) -> None:
    replied(run(url_for(server.url("/bearer"), auth="BEARER", token=TOKEN))[0])
    wrong = url_for(server.url("/bearer"), auth="BEARER", token="not-the-token")
    assert failed(run(wrong)[0], FailureKind.HTTP_STATUS).http_status == 401


# --- timeouts and connection failures ------------------------------------------------------


def test_slow_headers_time_out(server: LoopbackServer) -> None:
    url = url_for(server.url("/slow-headers"), request_timeout=1, connection_timeout=1)
    result, elapsed = run(url)
    assert "waiting" in failed(result, FailureKind.TIMEOUT).detail
    assert 0.9 < elapsed < 1.5


def test_a_trickled_body_times_out(server: LoopbackServer) -> None:
    result, elapsed = run(url_for(server.url("/trickle"), request_timeout=1))
    assert "reading" in failed(result, FailureKind.TIMEOUT).detail
    assert 0.9 < elapsed < 1.5


def test_zero_timeouts_mean_the_defaults(server: LoopbackServer) -> None:
    url = url_for(server.url("/slow-headers"), request_timeout=0, connection_timeout=0)
    assert (url.effective_request_timeout, url.effective_connection_timeout) == (2.0, 2.0)
    result, elapsed = run(url)
    failed(result, FailureKind.TIMEOUT)
    assert 1.9 < elapsed < 2.5


def test_refused_connection() -> None:
    with refused_port() as port:
        result, elapsed = run(url_for(f"http://127.0.0.1:{port}/"))
    failed(result, FailureKind.CONNECT_ERROR)
    assert elapsed < 1.0


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs on a full backlog"
)
def test_connect_timeout() -> None:
    with full_backlog_port() as port:
        # the connection timeout ends the attempt
        quick = url_for(f"http://127.0.0.1:{port}/", connection_timeout=1, request_timeout=3)
        result, elapsed = run(quick)
        failed(result, FailureKind.CONNECT_TIMEOUT)
        assert 0.9 < elapsed < 1.5
        # the request timeout ends it first, still while connecting
        slow = url_for(f"http://127.0.0.1:{port}/", connection_timeout=5, request_timeout=1)
        result, elapsed = run(slow)
        failed(result, FailureKind.CONNECT_TIMEOUT)
        assert 0.9 < elapsed < 1.5


def test_a_stalled_tls_handshake_is_a_connect_timeout() -> None:
    with silent_port() as port:
        url = url_for(f"https://127.0.0.1:{port}/", connection_timeout=1, request_timeout=3)
        result, elapsed = run(url)
    failed(result, FailureKind.CONNECT_TIMEOUT)
    assert 0.9 < elapsed < 1.5


def test_a_slow_url_does_not_delay_other_calls(server: LoopbackServer) -> None:
    async def go() -> tuple[list[tuple[Result, float]], tuple[Result, float]]:
        async with ActionUrlClient() as client:
            slow_url = url_for(server.url("/sleep/1.5"), request_timeout=3)
            slow = [asyncio.create_task(timed(client, slow_url, facts())) for _ in range(8)]
            await asyncio.sleep(0.05)  # the slow requests hold their connections
            fast = await timed(client, url_for(server.url("/ok")), facts())
            return await asyncio.gather(*slow), fast

    slow, (fast, fast_elapsed) = asyncio.run(go())
    replied(fast)
    assert fast_elapsed < 0.5
    for result, elapsed in slow:
        replied(result)
        assert 1.4 < elapsed < 2.5


def test_cancelling_the_request_propagates(server: LoopbackServer) -> None:
    async def go() -> None:
        async with ActionUrlClient() as client:
            task = asyncio.create_task(timed(client, url_for(server.url("/slow-headers")), facts()))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    started = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - started < 1.5


def test_a_closed_client_fails_without_raising(server: LoopbackServer) -> None:
    async def go() -> Result:
        client = ActionUrlClient()
        await client.aclose()
        return (await timed(client, url_for(server.url("/ok")), facts()))[0]

    failed(asyncio.run(go()), FailureKind.CONNECT_ERROR)


# --- redirects -----------------------------------------------------------------------------


def test_redirect_loop(server: LoopbackServer) -> None:
    result, elapsed = run(url_for(server.url("/redirect")))
    failed(result, FailureKind.TOO_MANY_REDIRECTS)
    assert elapsed < 1.0


def test_same_origin_redirect_keeps_headers(server: LoopbackServer) -> None:
    call = facts()
    url = url_for(
        server.url("/redirect?target=/ok"),
        method="POST",  # a 307 keeps the method and the body (with the session id)
        headers="X-Api-Key:k1",
        auth="BEARER",
        token=TOKEN,
    )
    replied(run(url, call, extras=ActionUrlExtras(idempotency=True))[0])
    first, second = server.requests_for(call.session_id)
    assert (first.path, second.path) == ("/redirect", "/ok")
    assert second.headers["X-Api-Key"] == "k1"
    assert second.headers["Authorization"] == f"Bearer {TOKEN}"
    assert second.headers["Idempotency-Key"] == f"{call.session_id}-7"


def test_cross_origin_redirect_drops_credentials(
    server: LoopbackServer, other: LoopbackServer
) -> None:
    call = facts()
    target = other.url("/ok")
    url = url_for(
        server.url(f"/redirect?target={target}"),
        method="POST",
        headers="X-Api-Key:k1",
        auth="BEARER",
        token=TOKEN,
    )
    extras = ActionUrlExtras(idempotency=True, signing_secret=SecretStr(SIGNING_SECRET))
    replied(run(url, call, extras=extras)[0])
    [seen] = other.requests_for(call.session_id)
    for name in ("X-Api-Key", "Authorization", "Idempotency-Key", "X-VR-Signature"):
        assert name not in seen.headers, name


# --- TLS -----------------------------------------------------------------------------------


def test_tls_verification(
    tls_server: LoopbackServer, server: LoopbackServer, certs: dict[str, Path]
) -> None:
    # self-signed: refused by default
    result, _ = run(url_for(tls_server.url("/ok")))
    assert "certificate" in failed(result, FailureKind.TLS_ERROR).detail
    # trusted through the CA bundle
    replied(run(url_for(tls_server.url("/ok")), client_options={"ca_bundle": certs["bundle"]})[0])
    # plain HTTP spoken to with https://
    plain = server.url("/ok").replace("http://", "https://")
    failed(run(url_for(plain))[0], FailureKind.TLS_ERROR)
    # https → http redirect refused
    downgrade = tls_server.url(f"/redirect?target={server.url('/ok')}")
    result, _ = run(url_for(downgrade), client_options={"ca_bundle": certs["bundle"]})
    failed(result, FailureKind.TLS_ERROR)


def test_a_ca_bundle_adds_trust_but_never_disables_checks(certs: dict[str, Path]) -> None:
    # the bundle trusts the certificate, but it names 127.0.0.2, not 127.0.0.1
    context = server_tls_context(certs["wrong"], certs["wrong_key"])
    with LoopbackServer(ROUTES, tls=context) as wrong_name:
        result, _ = run(
            url_for(wrong_name.url("/ok")), client_options={"ca_bundle": certs["bundle"]}
        )
    assert "certificate" in failed(result, FailureKind.TLS_ERROR).detail


def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        ActionUrlClient(ca_bundle=tmp_path / "missing.pem")


# --- signature and idempotency -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_hmac_signature_verifies(server: LoopbackServer, method: str) -> None:
    url = url_for(server.url("/signed?fixed=a%20b"), method=method)
    good = ActionUrlExtras(signing_secret=SecretStr(SIGNING_SECRET))

    async def go() -> tuple[Result, Result, Result]:
        async with ActionUrlClient() as client:
            real_now = lambda: datetime.now(UTC)  # noqa: E731
            kwargs: dict[str, Any] = {"request_id": 3, "now": real_now}
            signed_ok = await client.request(url, facts(), "1", extras=good, **kwargs)
            wrong = ActionUrlExtras(signing_secret=SecretStr("not-the-secret"))
            signed_bad = await client.request(url, facts(), "1", extras=wrong, **kwargs)
            unsigned = await client.request(url, facts(), "1", **kwargs)
            return signed_ok, signed_bad, unsigned

    signed_ok, signed_bad, unsigned = asyncio.run(go())
    assert isinstance(signed_ok, ActionUrlReplied), signed_ok
    assert isinstance(signed_bad, ActionUrlFailed) and signed_bad.http_status == 401
    assert isinstance(unsigned, ActionUrlFailed) and unsigned.http_status == 401
    assert SIGNING_SECRET not in repr(good)


def test_sign_format() -> None:
    expected = hmac.new(b"k", b"1700000000.body", hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, b"body") == f"t=1700000000,v1={expected}"


def test_idempotency_key_only_when_enabled(server: LoopbackServer) -> None:
    with_key, without_key = facts(), facts()
    url = url_for(server.url("/ok"), method="POST")
    replied(run(url, with_key, extras=ActionUrlExtras(idempotency=True))[0])
    replied(run(url, without_key)[0])
    [seen] = server.requests_for(with_key.session_id)
    assert seen.headers["Idempotency-Key"] == f"{with_key.session_id}-7"
    [seen] = server.requests_for(without_key.session_id)
    assert "Idempotency-Key" not in seen.headers


def test_extras_default_off_for_the_current_model(server: LoopbackServer) -> None:
    extras = ActionUrlExtras.of(url_for(server.url("/ok")))
    assert extras == ActionUrlExtras() and extras.signing_secret is None and not extras.idempotency


# --- secrets never leak --------------------------------------------------------------------


def test_secrets_never_appear_in_results(server: LoopbackServer, other: LoopbackServer) -> None:
    auths: list[dict[str, Any]] = [
        {"auth": "BASIC", "username": USER, "password": PASSWORD},
        {"auth": "DIGEST", "username": USER, "password": PASSWORD},
        {"auth": "BEARER", "token": TOKEN},
    ]
    paths = [
        "/echo-auth",
        "/echo-input",
        "/status/500",
        "/canned/garbage",
        "/redirect",
        "/huge-declared",
    ]
    extras = ActionUrlExtras(signing_secret=SecretStr(SIGNING_SECRET), idempotency=True)

    async def go() -> list[Result]:
        async with ActionUrlClient() as client:
            jobs = [
                timed(client, url_for(server.url(p), **auth), facts(), input=PIN, extras=extras)
                for auth in auths
                for p in paths
            ]
            with refused_port() as port:
                for auth in auths:
                    refused = url_for(f"http://user:{PASSWORD}@127.0.0.1:{port}/", **auth)
                    jobs.append(timed(client, refused, facts(), input=PIN, extras=extras))
                return [result for result, _ in await asyncio.gather(*jobs)]

    results = asyncio.run(go())
    assert len(results) == 21
    basic_b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for result in results:
        assert isinstance(result, ActionUrlFailed), result
        for secret in (PASSWORD, TOKEN, SIGNING_SECRET, basic_b64):
            assert secret not in result.detail and secret not in repr(result), result
        if result.kind is not FailureKind.INVALID_REPLY:  # an invalid reply quotes the server
            assert PIN not in result.detail, result
    # the echoed Authorization header was scrubbed, not dropped
    assert any("***" in r.detail for r in results if isinstance(r, ActionUrlFailed))


# --- the reply contract, without a network -------------------------------------------------

replies = st.fixed_dictionaries(
    {},
    optional={
        "status_code": st.sampled_from([200, 201, "200", True, 200.0, None]),
        "action": st.sampled_from(["call", "hangup", "repeat", "CALL", "", None, 1]),
        "destination": st.sampled_from(
            ["222", "+1#*", "", "2 2", "x", None, 222, "9" * 64, "9" * 65]
        ),
        "other": st.none()
        | st.integers()
        | st.text(max_size=8)
        | st.lists(st.integers(), max_size=3),
    },
)


@given(replies)
def test_parse_reply_accepts_only_the_contract(data: dict[str, Any]) -> None:
    try:
        action, destination = parse_reply(json.dumps(data).encode())
    except ReplyError as error:
        assert error.kind is FailureKind.INVALID_REPLY
        ok_status = type(data.get("status_code")) is int and data["status_code"] == 200
        valid_call = isinstance(data.get("destination"), str) and re.fullmatch(
            r"\+?[0-9*#]{1,64}", data["destination"]
        )
        assert (
            not ok_status
            or data.get("action") not in ("call", "hangup", "repeat")
            or (data.get("action") == "call" and not valid_call)
        )
    else:
        assert data["status_code"] == 200 and type(data["status_code"]) is int
        assert action == data["action"]
        assert destination == (data["destination"] if action == "call" else None)


@given(st.binary(max_size=64))
def test_parse_reply_never_fails_otherwise(body: bytes) -> None:
    try:
        parse_reply(body)
    except ReplyError as error:
        assert error.kind in (FailureKind.INVALID_JSON, FailureKind.INVALID_REPLY)


def test_environment_proxies_are_ignored(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refused_port() as port:
        monkeypatch.setitem(os.environ, "HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.setitem(os.environ, "ALL_PROXY", f"http://127.0.0.1:{port}")
        replied(run(url_for(server.url("/ok")))[0])


# --- the request never raises, and the deadline always holds -------------------------------


def test_the_deadline_holds_even_if_the_exchange_ignores_cancellation(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stubborn(*args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(10)  # ignores the first cancellation (the deadline)
        return 200, b""

    async def go() -> tuple[Result, float]:
        async with ActionUrlClient() as client:
            monkeypatch.setattr(client, "_send", stubborn)
            return await timed(client, url_for(server.url("/ok"), request_timeout=1), facts())

    started = time.monotonic()
    result, elapsed = asyncio.run(go())
    failed(result, FailureKind.TIMEOUT)
    assert 1.0 < elapsed < 1.5
    assert time.monotonic() - started < 2.5  # aclose cancelled the abandoned exchange


def test_invalid_models_fail_without_raising(server: LoopbackServer) -> None:
    bad_headers = ActionUrl.model_construct(
        name="x", type="DTMF", url=server.url("/ok"), headers=f"no colon {PASSWORD}"
    )
    result, _ = run(bad_headers)
    assert PASSWORD not in failed(result, FailureKind.CONNECT_ERROR).detail
    ftp = ActionUrl.model_construct(name="x", type="DTMF", url="ftp://127.0.0.1/")
    failed(run(ftp)[0], FailureKind.INVALID_REPLY)


def test_a_long_echoed_token_is_scrubbed_even_when_cut_short(server: LoopbackServer) -> None:
    token = "tok" + secrets.token_hex(30)
    result, _ = run(url_for(server.url("/echo-auth"), auth="BEARER", token=token))
    detail = failed(result, FailureKind.INVALID_REPLY).detail
    assert "***" in detail
    assert not any(token[i : i + 6] in detail for i in range(len(token) - 5)), detail


def test_too_large_keeps_the_http_status(server: LoopbackServer) -> None:
    result, _ = run(url_for(server.url("/huge-declared")))
    assert failed(result, FailureKind.TOO_LARGE).http_status == 200


def test_an_invalid_url_fails_without_raising() -> None:
    broken = ActionUrl.model_construct(name="x", type="DTMF", url="http://[::1")
    failed(run(broken)[0], FailureKind.CONNECT_ERROR)
