"""No PIN, password or token in any output of a real engine (issue #8, "Secrets").

One `vr-engine serve --log-level debug` process (the most verbose level; the API token comes
from `VR_API_TOKEN`, generated per run), real loopback HTTP servers that check Basic, Digest
and Bearer credentials and the `X-VR-Signature` HMAC, a transfer target and real SIP callers:

* call "disa" (800): menu `0`, a wrong PIN, the right PIN, destination 250 → transferred;
* call "urls" (800): two CALLER URLs (Basic GET; Bearer POST with a signing secret) whose
  servers check the credentials and then answer an invalid reply quoting a secret back (the
  engine must not repeat it in the call record's `detail`), then `5123#` → a DTMF URL with
  Digest and a signing secret answering `call 222` → transferred;
* receptionist 810 created and updated through the HTTP API (PIN changed, an action URL's
  password changed, a Bearer URL with a signing secret), then call "api" (810): both CALLER URLs
  with the API-stored credentials (each server quotes a secret back), then DISA with the
  API-updated PIN, destination 260 → transferred.

Also API writes that fail validation (an invalid PIN, an upper-case password, a short signing
secret, broken JSON), a request with a wrong API token, and `vr-engine check-config` / `serve`
on files with invalid fields next to valid secrets, invalid secrets, and syntax errors.

Every secret is random per run. PINs have 10 digits (the model's maximum; 1 in 10^10 to equal
any given timestamp) and are also searched with up to 4 non-digits between their digits.
Other secrets are searched raw, URL-/form-encoded, JSON-escaped, hex, and base64 at every byte
alignment (so Basic auth's base64 of `user:password` is covered), including any 12-character
piece of each form (a secret cut short is still a leak).

Scanned: the engine's stdout and stderr (every log line, debug included); every API response's
headers and body (status routes, `/metrics`, lists, reads, writes, errors, 401); the call
records from `/api/calls` and from the SQLite store; the raw bytes of every file in the data
directory (the database, its -wal and -shm, while running and after the stop) for PINs and API
tokens; the config-check output. Action URL passwords, tokens and signing secrets are stored
in clear by design (the runtime authenticates with them; the README promises no encryption),
so the database bytes are not searched for them — the store must be mode 0600 instead.

Positive controls: the scanner finds every secret in the configuration text written here and
in the encoded forms the servers saw; the DISA calls' records show the PIN stages and the
authentication; the servers verified each credential and signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from engine.rules.pin import pin_policy_problem
from tests.http_servers import DigestRealm, Handler, LoopbackServer, Route, Seen
from tests.integration.engine_helpers import (
    ROOT,
    Engine,
    Proc,
    Procs,
    dial,
    engine_command,
    keys,
    procs_in,
    start_target,
    summary_of,
    wait_invite,
)

pytestmark = pytest.mark.integration

REALM = "vr-secrets"
WINDOW = 12  # a piece of a (non-PIN) secret this long counts as a leak


# --- secrets and the scanner -------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    label: str
    value: str
    pin: bool = False  # digits only: searched whole and spread out, never in pieces


def _random_pin(taken: set[str], length: int = 10) -> str:
    while True:
        pin = secrets.choice("123456789") + "".join(
            secrets.choice("0123456789") for _ in range(length - 1)
        )
        if pin not in taken and (length > 10 or pin_policy_problem(pin) is None):
            taken.add(pin)
            return pin


def _credential() -> str:
    """A valid action URL password: [a-z0-9]{6,64}."""
    return secrets.token_hex(16)


@dataclass
class Secrets:
    """Every secret of one run (fresh values each time)."""

    pins: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        pin = self._new_pin
        # served
        self.api_token = Secret("API token", secrets.token_urlsafe(32))
        self.wrong_api_token = Secret("wrong API token", secrets.token_urlsafe(32))
        self.pin = Secret("DISA PIN", pin(), pin=True)
        self.wrong_pin = Secret("wrong PIN", pin(), pin=True)
        self.basic_user = "crm" + secrets.token_hex(4)
        self.basic_password = Secret("Basic password", _credential())
        self.bearer_token = Secret(
            "Bearer token", f"tok{secrets.token_urlsafe(18)}+/{secrets.token_urlsafe(6)}="
        )
        self.bearer_signing = Secret("Bearer signing secret", f"sig&{secrets.token_hex(12)}=x")
        self.digest_user = "dig" + secrets.token_hex(4)
        self.digest_password = Secret("Digest password", _credential())
        self.digest_signing = Secret("Digest signing secret", f"sig/{secrets.token_hex(12)}+y")
        # written through the API
        self.api_pin_1 = Secret("API PIN (created)", pin(), pin=True)
        self.api_pin_2 = Secret("API PIN (updated)", pin(), pin=True)
        self.api_user = "api" + secrets.token_hex(4)
        self.api_password_1 = Secret("API Basic password (created)", _credential())
        self.api_password_2 = Secret("API Basic password (updated)", _credential())
        self.api_url_token = Secret("API Bearer token", "at" + secrets.token_urlsafe(24))
        self.api_signing = Secret("API signing secret", f"as={secrets.token_hex(12)}&z")
        # refused by validation (API and config check)
        bad_policy = pin()
        self.bad_policy_pin = Secret(
            "PIN against the policy", bad_policy[:4] + "777" + bad_policy[7:], pin=True
        )
        self.long_pin = Secret("11-digit PIN", _random_pin(self.pins, 11), pin=True)
        self.int_pin = Secret("PIN as a number", _random_pin(self.pins, 9), pin=True)
        self.upper_password = Secret("upper-case password", "Q" + secrets.token_hex(12).upper())
        self.short_signing = Secret("short signing secret", secrets.token_hex(6))
        self.refused_token = Secret("token of a refused URL", "rt" + secrets.token_urlsafe(24))
        self.broken_json_pin = Secret("PIN in broken JSON", pin(), pin=True)
        # check-config
        self.check_api_token = Secret("config api_token", secrets.token_urlsafe(24))
        self.check_pin = Secret("config PIN", pin(), pin=True)
        self.check_password = Secret("config password", _credential())
        self.check_token = Secret("config token", "ct" + secrets.token_urlsafe(24))
        self.check_signing = Secret("config signing secret", "cs" + secrets.token_hex(12))
        self.syntax_pin = Secret("PIN on a YAML syntax error line", pin(), pin=True)
        self.syntax_password = Secret("password near a YAML syntax error", _credential())

    def _new_pin(self) -> str:
        return _random_pin(self.pins)

    def all(self) -> list[Secret]:
        return [value for value in vars(self).values() if isinstance(value, Secret)]

    def pins_and_api_tokens(self) -> list[Secret]:
        """What must never be stored anywhere (the store keeps PIN hashes only)."""
        return [s for s in self.all() if s.pin or "API token" in s.label]


def forms(secret: Secret) -> dict[str, bytes]:
    """The ways a secret could show: raw, encoded, escaped, base64 at each byte alignment."""
    raw = secret.value.encode()
    found = {
        "raw": raw,
        "url-encoded": quote(secret.value, safe="").encode(),
        "form-encoded": quote_plus(secret.value).encode(),
        "json-escaped": json.dumps(secret.value)[1:-1].encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    for pad in range(3):  # the characters that depend on the secret's bytes alone
        encoded = base64.b64encode(b"\0" * pad + raw)
        inner = encoded[-(-8 * pad // 6) : 8 * (pad + len(raw)) // 6]
        found[f"base64+{pad}"] = inner
        found[f"base64url+{pad}"] = inner.replace(b"+", b"-").replace(b"/", b"_")
    return found


class Scanner:
    def __init__(self, watched: Sequence[Secret]) -> None:
        self.whole: dict[bytes, str] = {}
        self.pieces: dict[bytes, str] = {}
        self.spread: list[tuple[re.Pattern[bytes], str]] = []
        for secret in watched:
            for form, needle in forms(secret).items():
                label = f"{secret.label} ({form})"
                if secret.pin or len(needle) <= WINDOW:
                    self.whole.setdefault(needle, label)
                else:
                    for i in range(len(needle) - WINDOW + 1):
                        self.pieces.setdefault(needle[i : i + WINDOW], f"{label}, a piece")
            if secret.pin:
                gap = rb"[^0-9\n]{0,4}"
                pattern = gap.join(re.escape(d.encode()) for d in secret.value)
                self.spread.append((re.compile(pattern), f"{secret.label} (digits spread out)"))

    def find(self, data: bytes | str) -> list[str]:
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        hits = {label for needle, label in self.whole.items() if needle in data}
        pieces = self.pieces
        for i in range(len(data) - WINDOW + 1):
            piece = data[i : i + WINDOW]
            if piece in pieces:
                hits.add(pieces[piece])
        hits.update(label for pattern, label in self.spread if pattern.search(data))
        return sorted(hits)


def assert_clean(scanner: Scanner, outputs: dict[str, bytes | str]) -> None:
    leaks = {name: hits for name, data in outputs.items() if (hits := scanner.find(data))}
    assert not leaks, f"secrets found: {json.dumps(leaks, indent=1)}"


# --- the loopback servers ---------------------------------------------------------------------


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def signature_ok(seen: Seen, secret: str) -> bool:
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", seen.headers.get("X-VR-Signature", ""))
    if not match or abs(int(match.group(1)) - time.time()) > 60:
        return False
    payload = seen.body if seen.method == "POST" else seen.query.encode()
    message = match.group(1).encode() + b"." + payload
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(2))


def make_routes(s: Secrets, checks: list[str]) -> dict[str, Route]:
    """Each route verifies its credentials (appending `<route>:ok|bad|challenge` to `checks`);
    the CALLER routes then answer an invalid reply that quotes a secret back."""

    def crm_basic(handler: Handler, seen: Seen) -> None:
        ok = seen.headers.get("Authorization") == basic_header(s.basic_user, s.basic_password.value)
        checks.append(f"crm-basic:{'ok' if ok else 'bad'}")
        if not ok:
            handler.reply(401, b"{}", {"WWW-Authenticate": f'Basic realm="{REALM}"'})
            return
        handler.reply_json({"status_code": 200, "action": s.basic_password.value})

    def crm_bearer(handler: Handler, seen: Seen) -> None:
        auth = seen.headers.get("Authorization", "")
        ok = auth == f"Bearer {s.bearer_token.value}" and signature_ok(seen, s.bearer_signing.value)
        checks.append(f"crm-bearer:{'ok' if ok else 'bad'}")
        if not ok:
            handler.reply(401, b"{}", {"WWW-Authenticate": "Bearer"})
            return
        handler.reply_json({"status_code": 200, "action": "call", "destination": auth})

    crm_realm = DigestRealm(REALM, s.digest_user, s.digest_password.value)

    def crm_digest(handler: Handler, seen: Seen) -> None:
        verdict = crm_realm.verify(seen)
        if verdict and signature_ok(seen, s.digest_signing.value):
            checks.append("crm-digest:ok")
            handler.reply_json({"status_code": 200, "action": "call", "destination": "222"})
            return
        checks.append("crm-digest:challenge" if verdict is None else "crm-digest:bad")
        crm_realm.challenge(handler)

    def api_basic(handler: Handler, seen: Seen) -> None:
        auth = seen.headers.get("Authorization", "")
        ok = auth == basic_header(s.api_user, s.api_password_2.value)
        checks.append(f"api-basic:{'ok' if ok else 'bad'}")
        if not ok:
            handler.reply(401, b"{}", {"WWW-Authenticate": f'Basic realm="{REALM}"'})
            return
        handler.reply_json({"status_code": 200, "action": auth})

    def api_bearer(handler: Handler, seen: Seen) -> None:
        ok = seen.headers.get(
            "Authorization"
        ) == f"Bearer {s.api_url_token.value}" and signature_ok(seen, s.api_signing.value)
        checks.append(f"api-bearer:{'ok' if ok else 'bad'}")
        if not ok:
            handler.reply(401, b"{}", {"WWW-Authenticate": "Bearer"})
            return
        reply = {"status_code": 200, "action": "call", "destination": s.api_signing.value}
        handler.reply_json(reply)

    return {
        "/crm-basic": crm_basic,
        "/crm-bearer": crm_bearer,
        "/crm-digest": crm_digest,
        "/api-basic": api_basic,
        "/api-bearer": api_bearer,
    }


# --- the API client that keeps every response -------------------------------------------------


@dataclass
class Response:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        head = "\n".join(f"{name}: {value}" for name, value in self.headers)
        return f"{self.status}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token
        self.responses: list[Response] = []

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                status, got, content = reply.status, list(reply.headers.items()), reply.read()
        except urllib.error.HTTPError as error:
            status, got, content = error.code, list(error.headers.items()), error.read()
        self.responses.append(Response(method, path, status, got, content))
        try:
            return status, json.loads(content) if content else None
        except ValueError:
            return status, content.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body


# --- the world ---------------------------------------------------------------------------------


def disa_rule() -> dict[str, Any]:
    return {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}}


def served_config(s: Secrets, http: LoopbackServer) -> dict[str, Any]:
    return {
        "server": {"name": "vr-secrets", "shutdown_grace": 2, "transfer_timeout": 10},
        "ivrs": [
            {
                "name": "Front desk",
                "extension_number": "800",
                "dtmf_interval": 2,
                "enable_pin": True,
                "pin": s.pin.value,
                "custom_forward_rules": [disa_rule()],
                "action_urls": [
                    {
                        "name": "crm-basic",
                        "enabled": True,
                        "type": "CALLER",
                        "method": "GET",
                        "caller_mask": "7202",
                        "url": http.url("/crm-basic"),
                        "auth": "BASIC",
                        "username": s.basic_user,
                        "password": s.basic_password.value,
                    },
                    {
                        "name": "crm-bearer",
                        "enabled": True,
                        "type": "CALLER",
                        "method": "POST",
                        "caller_mask": "7202",
                        "url": http.url("/crm-bearer"),
                        "auth": "BEARER",
                        "token": s.bearer_token.value,
                        "signing_secret": s.bearer_signing.value,
                    },
                    {
                        "name": "crm-digest",
                        "enabled": True,
                        "type": "DTMF",
                        "method": "POST",
                        "dtmf_mask": "5000-5999",
                        "url": http.url("/crm-digest"),
                        "auth": "DIGEST",
                        "username": s.digest_user,
                        "password": s.digest_password.value,
                        "signing_secret": s.digest_signing.value,
                    },
                ],
            }
        ],
    }


def check_config_yaml(s: Secrets) -> str:
    """Invalid fields next to valid secrets, and invalid secrets."""
    return f"""\
server:
  name: vr-check
  api_token: "{s.check_api_token.value}"
  timezone: Mars/Olympus
ivrs:
  - name: Check
    extension_number: "80x"
    pin: "{s.check_pin.value}"
    dtmf_interval: 0
    custom_forward_rules: [{{user_input: "0", office_hours_forward_rule: {{action: DISA}}}}]
    action_urls:
      - {{name: a, enabled: true, type: CALLER, method: PUT, caller_mask: ALL,
         url: "http://127.0.0.1:9/a", auth: BASIC, username: checkuser1,
         password: "{s.check_password.value}", signing_secret: "{s.check_signing.value}"}}
      - {{name: b, enabled: true, type: CALLER, caller_mask: ALL, url: "ftp://127.0.0.1/b",
         auth: BEARER, token: "{s.check_token.value}"}}
  - name: Bad secrets
    extension_number: "801"
    pin: "{s.long_pin.value}"
    action_urls:
      - {{name: c, type: CALLER, url: "http://127.0.0.1:9/c", auth: BASIC, username: checkuser2,
         password: "{s.upper_password.value}"}}
      - {{name: d, type: CALLER, url: "http://127.0.0.1:9/d",
         signing_secret: "{s.short_signing.value}"}}
  - name: Number pin
    extension_number: "802"
    pin: {s.int_pin.value}
"""


CHECK_PROBLEMS = (
    "server.timezone",
    "ivrs[0].extension_number",
    "ivrs[0].dtmf_interval",
    "ivrs[0].action_urls[0].method",
    "ivrs[0].action_urls[1].url",
    "ivrs[1].pin",
    "ivrs[1].action_urls[0].password",
    "ivrs[1].action_urls[1].signing_secret",
    "ivrs[2].pin",
)


def syntax_error_yaml(s: Secrets) -> str:
    """An unterminated quote on the PIN's line (the parser quotes the line it stops at)."""
    return f"""\
ivrs:
  - name: Broken
    extension_number: "800"
    action_urls:
      - {{name: a, type: CALLER, url: "http://127.0.0.1:9/a", auth: BASIC, username: brokenuser,
         password: "{s.syntax_password.value}"}}
    pin: "{s.syntax_pin.value}
    enable_pin: true
"""


def syntax_error_json(s: Secrets) -> str:
    return json.dumps({"ivrs": [{"name": "Broken", "extension_number": "800"}]}).replace(
        '"800"', f'"800", "pin": "{s.syntax_pin.value}" "x"'
    )


@dataclass
class Call:
    proc: Proc
    session: str
    user: str


@dataclass
class World:
    s: Secrets
    engine: Engine
    api: Api
    http: LoopbackServer
    checks: list[str]
    target: Proc
    target_port: int
    config_text: str
    calls: dict[str, Call] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: list[dict[str, Any]] = field(default_factory=list)
    files_running: dict[str, bytes] = field(default_factory=dict)
    files_stopped: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    checked: dict[str, tuple[int, str]] = field(default_factory=dict)
    refused: dict[str, tuple[int, Any]] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None


def start_engine_with_token(
    procs: Procs, config: dict[str, Any], token: str, target_port: int
) -> tuple[Engine, str]:
    """`vr-engine serve --log-level debug` with the API token in VR_API_TOKEN (as documented)."""
    base = procs.tmp / "engine"
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / "vr.json"
    text = json.dumps(config, indent=2)
    config_path.write_text(text)
    data_dir = base / "data"
    args = [*engine_command(), "serve", "--config", str(config_path), "--data-dir", str(data_dir)]
    args += ["--sip-port", "0", "--http-port", "0", "--log-level", "debug"]
    args += ["--transfer-domain", f"127.0.0.1:{target_port}"]
    proc = procs.start(args, name="engine", env={"VR_API_TOKEN": token})
    line = proc.wait_line("vr-engine ready:", 30)
    sip = line.split("SIP ", 1)[1].split(",", 1)[0]
    http = line.split("HTTP http://", 1)[1].split(",", 1)[0]
    engine = Engine(proc, int(sip.rsplit(":", 1)[1]), int(http.rsplit(":", 1)[1]), data_dir)
    return engine, text


def place_call(w: World, procs: Procs, tag: str, extension: str, user: str, digits: str) -> None:
    session = f"sec-{tag}-{uuid.uuid4().hex[:10]}"
    proc = dial(
        procs,
        w.engine,
        extension,
        "--digits",
        digits,
        name=f"caller-{tag}",
        session=session,
        from_user=user,
        duration=20,
    )
    w.calls[tag] = Call(proc, session, user)


def record_of(w: World, session: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = w.api.request("GET", f"/api/calls/{session}")
        if status == 200:
            return dict(body)
        assert time.monotonic() < deadline, f"no record {session}: {w.engine.proc.stderr_tail()}"
        time.sleep(0.2)


def data_files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data_dir)): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()
    }


def api_writes(w: World) -> str:
    """Create and update receptionist 810 and its action URLs; read everything back; make
    refused writes. Returns 810's id."""
    s, api, http = w.s, w.api, w.http
    status, created = api.request(
        "POST",
        "/api/ivrs",
        {
            "name": "Api desk",
            "extension_number": "810",
            "dtmf_interval": 2,
            "enable_pin": True,
            "pin": s.api_pin_1.value,
            "custom_forward_rules": [disa_rule()],
        },
    )
    assert status == 201, created
    ivr = created["id"]
    status, updated = api.request(
        "POST", f"/api/ivrs/{ivr}", {"name": "Api desk 2", "pin": s.api_pin_2.value}
    )
    assert status == 200 and updated["name"] == "Api desk 2", updated
    status, basic = api.request(
        "POST",
        f"/api/ivrs/{ivr}/action_urls",
        {
            "name": "api-basic",
            "enabled": True,
            "type": "CALLER",
            "method": "POST",
            "caller_mask": "7303",
            "url": http.url("/api-basic"),
            "auth": "BASIC",
            "username": s.api_user,
            "password": s.api_password_1.value,
        },
    )
    assert status == 201, basic
    status, body = api.request(
        "POST",
        f"/api/ivrs/{ivr}/action_urls/{basic['id']}",
        {"password": s.api_password_2.value},
    )
    assert status == 200, body
    status, bearer = api.request(
        "POST",
        f"/api/ivrs/{ivr}/action_urls",
        {
            "name": "api-bearer",
            "enabled": True,
            "type": "CALLER",
            "method": "GET",
            "caller_mask": "7303",
            "url": http.url("/api-bearer"),
            "auth": "BEARER",
            "token": s.api_url_token.value,
            "signing_secret": s.api_signing.value,
            "idempotency": True,
        },
    )
    assert status == 201, bearer
    # reads: every resource, every list
    front = [i for i in api.get("/api/ivrs")["items"] if i["extension_number"] == "800"]
    assert len(front) == 1, front
    for receptionist in (ivr, front[0]["id"]):
        api.get(f"/api/ivrs/{receptionist}")
        api.get(f"/api/ivrs/{receptionist}/status")
        for url in api.get(f"/api/ivrs/{receptionist}/action_urls")["items"]:
            api.get(f"/api/ivrs/{receptionist}/action_urls/{url['id']}")
    api.get("/api/ivrs?filter=" + quote("extension_number eq '810'") + "&top=10")
    api.get("/api/ivrs?search=desk&orderby=" + quote("name desc"))
    api.get("/api/files")
    # refused writes: the values must not come back, be logged or be stored
    w.refused["invalid pins"] = api.request(
        "POST",
        "/api/ivrs",
        {
            "name": "",
            "extension_number": "811",
            "pin": s.long_pin.value,
            "custom_forward_rules": [disa_rule()],
        },
    )
    w.refused["pin as a number"] = api.request(
        "POST",
        "/api/ivrs",
        {"name": "N", "extension_number": "812", "pin": int(s.int_pin.value)},
    )
    w.refused["pin against the policy"] = api.request(
        "POST", f"/api/ivrs/{ivr}", {"pin": s.bad_policy_pin.value, "dtmf_interval": 0}
    )
    w.refused["bad url secrets"] = api.request(
        "POST",
        f"/api/ivrs/{ivr}/action_urls",
        {
            "name": "refused",
            "enabled": True,
            "type": "CALLER",
            "caller_mask": "ALL",
            "url": http.url("/x"),
            "auth": "BASIC",
            "username": "refused1",
            "password": s.upper_password.value,
            "token": s.refused_token.value,
            "signing_secret": s.short_signing.value,
        },
    )
    w.refused["bad field next to stored secrets"] = api.request(
        "POST", f"/api/ivrs/{ivr}/action_urls/{bearer['id']}", {"method": "PUT"}
    )
    w.refused["broken JSON"] = api.request(
        "POST", "/api/ivrs", raw=f'{{"pin": "{s.broken_json_pin.value}", '.encode()
    )
    w.refused["wrong API token"] = api.request("GET", "/api/ivrs", token=s.wrong_api_token.value)
    return str(ivr)


def status_reads(api: Api) -> None:
    for path in (
        "/api/status",
        "/api/ivr_servers",
        "/api/ivr_servers/local/status",
        "/metrics",
        "/openapi.json",
    ):
        api.get(path)
    status, _ = api.request("GET", "/healthz", token="")
    assert status == 200


def run_check(w: World, name: str, text: str, suffix: str, serve: bool = False) -> None:
    path = w.engine.data_dir.parent / f"{name}{suffix}"
    path.write_text(text)
    command = [*engine_command(), "check-config", str(path)]
    if serve:
        command = [*engine_command(), "serve", "--config", str(path), "--log-level", "debug"]
        command += ["--data-dir", str(w.engine.data_dir.parent / f"{name}-data")]
        command += ["--sip-port", "0", "--http-port", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    w.checked[name] = (done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("secrets")
    s = Secrets()
    checks: list[str] = []
    with LoopbackServer(make_routes(s, checks)) as http, procs_in(tmp) as procs:
        target, target_port = start_target(procs, 200, "target")
        engine, config_text = start_engine_with_token(
            procs, served_config(s, http), s.api_token.value, target_port
        )
        w = World(
            s,
            engine,
            Api(engine.http_port, s.api_token.value),
            http,
            checks,
            target,
            target_port,
            config_text,
        )
        status_reads(w.api)
        api_writes(w)

        pin, wrong, api_pin = s.pin.value, s.wrong_pin.value, s.api_pin_2.value
        place_call(
            w,
            procs,
            "disa",
            "800",
            "7101",
            ",".join(["0@1.0", keys(wrong + "#", 1.5), keys(pin + "#", 4.5), keys("250#", 7.5)]),
        )
        place_call(w, procs, "urls", "800", "7202", keys("5123#", 1.5))
        place_call(
            w,
            procs,
            "api",
            "810",
            "7303",
            ",".join(["0@1.5", keys(api_pin + "#", 2.0), keys("260#", 5.0)]),
        )
        for tag, call in w.calls.items():
            w.summaries[tag] = summary_of(call.proc, timeout=40)
            w.records[tag] = record_of(w, call.session)
        w.api.get("/api/calls?top=100")
        w.api.get("/api/calls?search=7101")
        status_reads(w.api)
        w.files_running = data_files(engine.data_dir)

        run_check(w, "check-invalid", check_config_yaml(s), ".yaml")
        run_check(w, "serve-invalid", check_config_yaml(s), ".yaml", serve=True)
        run_check(w, "check-yaml-syntax", syntax_error_yaml(s), ".yaml")
        run_check(w, "serve-yaml-syntax", syntax_error_yaml(s), ".yaml", serve=True)
        run_check(w, "check-json-syntax", syntax_error_json(s), ".json")

        engine.proc.signal(signal.SIGTERM)
        w.exit_code = engine.proc.finish(20)
        w.stdout = "\n".join(engine.proc.text_lines())
        w.stderr = engine.proc.stderr_text()
        w.stored = engine.stored_records()
        w.files_stopped = data_files(engine.data_dir)
        w.modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in engine.data_dir.iterdir()
            if p.name.startswith("vr-engine.db")
        }
        yield w


# --- positive controls ------------------------------------------------------------------------


def test_the_scanner_finds_every_secret_where_it_is(world: World) -> None:
    s = world.s
    served = [s.pin, s.basic_password, s.bearer_token, s.bearer_signing, s.digest_password]
    served.append(s.digest_signing)
    for secret in served:
        assert Scanner([secret]).find(world.config_text), secret.label
    check_text = check_config_yaml(s)
    for secret in (s.check_api_token, s.check_pin, s.check_password, s.check_token):
        assert Scanner([secret]).find(check_text), secret.label
    assert Scanner([s.int_pin]).find(check_text)
    # encoded forms: Basic auth's base64 of user:password, URL-encoding, pieces, spread PINs
    header = basic_header(s.basic_user, s.basic_password.value).encode()
    assert any("(base64" in hit for hit in Scanner([s.basic_password]).find(header)), header
    assert Scanner([s.bearer_token]).find("x=" + quote(s.bearer_token.value, safe=""))
    assert Scanner([s.bearer_signing]).find(s.bearer_signing.value[:-3])  # cut short
    spaced = ", ".join(s.pin.value)
    assert Scanner([s.pin]).find(f'"digits": [{spaced}]')
    assert not Scanner(s.all()).find("nothing secret here 2026-05-01T10:00:00.123456+00:00")


def test_the_servers_saw_every_credential_and_signature(world: World) -> None:
    checks = world.checks
    assert not [c for c in checks if c.endswith(":bad")], checks
    for name in ("crm-basic", "crm-bearer", "crm-digest", "api-basic", "api-bearer"):
        assert f"{name}:ok" in checks, checks
    assert "crm-digest:challenge" in checks  # a real Digest challenge was answered
    urls = world.http.requests_for(world.calls["urls"].session)
    assert [r.path for r in urls][:2] == ["/crm-basic", "/crm-bearer"], [r.path for r in urls]
    seen = [r.headers.get("Authorization", "") for r in urls]
    assert Scanner([world.s.basic_password]).find(seen[0])  # the scanner sees base64 credentials
    assert Scanner([world.s.bearer_token]).find(seen[1])
    # the API-created URL used the updated password, never the first one
    api_seen = world.http.requests_for(world.calls["api"].session)
    sent = "\n".join(r.headers.get("Authorization", "") for r in api_seen)
    assert Scanner([world.s.api_password_2]).find(sent)
    assert not Scanner([world.s.api_password_1]).find(sent)
    idempotency = [r.headers.get("Idempotency-Key") for r in api_seen if r.path == "/api-bearer"]
    assert idempotency and all(idempotency), idempotency


def test_the_calls_went_through_disa_and_the_action_urls(world: World) -> None:
    for tag, destination in (("disa", "250"), ("urls", "222"), ("api", "260")):
        call, rec = world.calls[tag], world.records[tag]
        summary = world.summaries[tag]
        assert summary["refer_to"] == f"sip:{destination}@127.0.0.1:{world.target_port}", (
            tag,
            summary,
        )
        assert wait_invite(world.target, call.user)["request_user"] == destination
        assert rec["outcome"] == "transferred" and rec["transferred_to"] == destination, rec
    disa = world.records["disa"]
    pin_len = len(world.s.pin.value)
    assert [(i["stage"], i["digits"]) for i in disa["inputs"]] == [
        ("menu", "0"),
        ("pin", "*" * pin_len),
        ("pin", "*" * pin_len),
        ("disa_destination", "250"),
    ], disa["inputs"]
    assert disa["disa_pin_failures"] == 1 and disa["disa_authenticated"] is True
    assert disa["transfers"][0]["origin"] == "disa"
    api = world.records["api"]
    assert [i["stage"] for i in api["inputs"]] == ["menu", "pin", "disa_destination"]
    assert api["disa_pin_failures"] == 0 and api["disa_authenticated"] is True
    assert [(u["name"], u["result"]) for u in api["action_urls"]] == [
        ("api-basic", "invalid_reply"),
        ("api-bearer", "invalid_reply"),
    ], api["action_urls"]
    urls = world.records["urls"]
    assert [(u["name"], u["result"]) for u in urls["action_urls"]] == [
        ("crm-basic", "invalid_reply"),
        ("crm-bearer", "invalid_reply"),
        ("crm-digest", "call"),
    ], urls["action_urls"]
    # the invalid replies are described, with the quoted secret replaced
    for url in urls["action_urls"][:2] + api["action_urls"]:
        assert url["detail"] and "***" in url["detail"], url
    assert world.exit_code == 0, world.stderr[-3000:]
    stored = {r["session_id"] for r in world.stored}
    assert {c.session for c in world.calls.values()} <= stored


def test_refused_writes_were_refused_for_the_right_fields(world: World) -> None:
    refused = world.refused
    expect = {
        "invalid pins": ("pin", "name"),
        "pin as a number": ("pin",),
        "pin against the policy": ("pin", "dtmf_interval"),
        "bad url secrets": ("password", "signing_secret"),
        "bad field next to stored secrets": ("method",),
        "broken JSON": ("body",),
    }
    for name, fields in expect.items():
        status, body = refused[name]
        assert status == 400, (name, body)
        detail = body["errors"][0]["detail"]
        for f in fields:
            assert f in detail, (name, detail)
    assert refused["wrong API token"][0] == 401


def test_config_check_reports_the_fields_next_to_the_secrets(world: World) -> None:
    for name in ("check-invalid", "serve-invalid"):
        code, text = world.checked[name]
        assert code == 2, (name, text)
        for path in CHECK_PROBLEMS:
            assert path in text, (name, path, text)
    for name in ("check-yaml-syntax", "serve-yaml-syntax", "check-json-syntax"):
        code, text = world.checked[name]
        assert code == 2 and "not valid YAML/JSON" in text, (name, text)
        assert re.search(r"line \d+", text), (name, text)  # still says where


def test_the_debug_log_is_really_on(world: World) -> None:
    assert "DEBUG" in world.stderr and "onDtmfEvent method=" in world.stderr
    assert "wrong DISA PIN" in world.stderr  # logged, without the digits
    assert "vr-engine ready:" in world.stdout


# --- the scans ----------------------------------------------------------------------------------


def test_no_secret_in_the_engine_output(world: World) -> None:
    assert_clean(
        Scanner(world.s.all()), {"engine stdout": world.stdout, "engine stderr": world.stderr}
    )


def test_no_secret_in_any_api_response(world: World) -> None:
    responses = world.api.responses
    paths = {r.path.split("?")[0] for r in responses}
    assert {"/metrics", "/api/status", "/api/calls", "/openapi.json"} <= paths, paths
    assert len(responses) >= 40, len(responses)
    outputs: dict[str, bytes | str] = {
        f"{n}: {r.method} {r.path} → {r.status}": r.text() for n, r in enumerate(responses)
    }
    assert_clean(Scanner(world.s.all()), outputs)


def test_metrics_count_disa_and_action_urls_without_secrets(world: World) -> None:
    metrics = [r for r in world.api.responses if r.path == "/metrics"][-1].body.decode()
    assert 'vr_disa_events_total{event="pin_rejected"} 1.0' in metrics, metrics
    assert 'vr_disa_events_total{event="pin_accepted"} 2.0' in metrics, metrics
    assert "vr_action_url_requests_total" in metrics
    assert_clean(Scanner(world.s.all()), {"/metrics": metrics})


def test_no_secret_in_the_call_records(world: World) -> None:
    listed = [r for r in world.api.responses if r.path.startswith("/api/calls")]
    assert listed
    outputs: dict[str, bytes | str] = {
        f"stored record {r['session_id']}": json.dumps(r) for r in world.stored
    }
    outputs.update({f"API record {t}": json.dumps(r) for t, r in world.records.items()})
    assert_clean(Scanner(world.s.all()), outputs)


def test_no_pin_or_api_token_in_any_data_file(world: World) -> None:
    assert any(name.endswith("-wal") for name in world.files_running), list(world.files_running)
    assert "api-token" not in world.files_running  # the token came from VR_API_TOKEN
    scanner = Scanner(world.s.pins_and_api_tokens())
    outputs: dict[str, bytes | str] = {f"{k} (running)": v for k, v in world.files_running.items()}
    outputs.update({f"{k} (stopped)": v for k, v in world.files_stopped.items()})
    assert_clean(scanner, outputs)
    # the store keeps action URL secrets in clear (the runtime needs them): owner-only files
    assert world.modes and all(mode & 0o077 == 0 for mode in world.modes.values()), world.modes


def test_no_secret_in_the_config_check_output(world: World) -> None:
    outputs: dict[str, bytes | str] = {name: text for name, (_, text) in world.checked.items()}
    assert_clean(Scanner(world.s.all()), outputs)
