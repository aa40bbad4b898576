"""Soak benchmark: steady calls against one real `vr-engine serve` for a long time.

    python bench/soak.py                      # 30 minutes, 2 callers at a time
    python bench/soak.py --minutes 2          # a short run (debugging)

One engine serves two receptionists; transfer targets (`engine.telephony.caller --listen`)
answer 200 and 486; a loopback HTTP server (`tests/http_servers.py`) answers the action URLs,
correctly most of the time: every 5th request of each URL gets a 500, every 7th stalls past its
`request_timeout`. `--concurrency` callers (`engine.telephony.caller`, one process per call)
are kept going for `--minutes`, cycling through the scenarios in `SCENARIOS` (menu transfer,
busy target → failure rule, direct dial, caller hang-up, DTMF action URL with Digest auth,
CALLER action URL with a Bearer token). Each call is checked against what its scenario expects
(the caller's summary and REFERs, and the engine's call record, `GET /api/calls/{session}`).

Every `--sample-seconds` the engine process is sampled: RSS, open file descriptors, threads,
CPU % (of one core), active calls (`GET /api/status`), calls completed and failed so far.
At the end the engine must still be alive and exit 0 on SIGTERM. The transfer targets are
restarted between calls every `--recycle-targets` INVITEs (see `Soak.recycle_targets`).

Writes `--out` (JSON: summary, verdict, the full time series, every call) and the same name
with `.png` (RSS, fds and threads, calls, CPU and active calls over time; needs matplotlib,
the `bench` extra). Exit code 0 only if the verdict passes (see `RULES`).

Every process runs a copy of `engine/` and `prompts/` taken at the start (the tree may be
edited meanwhile; `--live-tree` runs the tree itself). Everything runs on 127.0.0.1 with
ephemeral ports; every process is bounded in time and stopped at the end (by its PID).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from load import cpu_model  # noqa: E402

from tests.http_servers import Handler, LoopbackServer, Seen  # noqa: E402
from tests.integration import engine_helpers  # noqa: E402
from tests.integration.engine_helpers import (  # noqa: E402
    Engine,
    Proc,
    Procs,
    dial,
    make_chirp,
    start_engine,
    start_target,
    summary_of,
    target_command,
)

MIB = 2**20
CALL_LIMIT = 30.0  # the caller's --duration: a hard limit on one call (s)
URL_TIMEOUT = 2  # request_timeout of both action URLs (s)
USER, PASSWORD, REALM = "soakuser1", "soakpass1", "vr-soak"
BEARER = "soak-bearer-token-4711"
MENU, CRM = "810", "820"  # the two receptionists

FD_SLACK = 10
SLOPE_LIMIT = 20.0  # MiB/h
SLOPE_MIN_SECONDS = 300.0
RULES = (
    f"PASS if: no failed call; the engine alive at the end and exiting 0 on SIGTERM; "
    f"open fds at the end (idle) <= fds at the start (idle, before the first call) + {FD_SLACK}; "
    f"RSS slope over the second half of the calling phase (least-squares line) < {SLOPE_LIMIT:g} "
    f"MiB/h — judged only when that half lasts >= {SLOPE_MIN_SECONDS:g} s (runs of >= 10 min)."
)


# --- the CRM: action URLs that answer well most of the time ----------------------------------


class Crm:
    """`/caller` (GET, Bearer) and `/dtmf` (POST, Digest MD5 with a real 401 challenge).

    Each authenticated request is one *decision*, numbered per route: every `fail_every`-th
    gets a 500, else every `stall_every`-th stalls `stall_seconds` (past the URL's
    request_timeout) before replying, else the reply is `call <destination>`.
    """

    def __init__(self, fail_every: int, stall_every: int, stall_seconds: float) -> None:
        self.fail_every = fail_every
        self.stall_every = stall_every
        self.stall_seconds = stall_seconds
        self.lock = threading.Lock()
        self.n: Counter[str] = Counter()  # decisions per route
        self.decisions: dict[str, dict[str, Any]] = {}  # session id → decision
        self.counts: Counter[str] = Counter()
        self.nonces: set[str] = set()
        self.server = LoopbackServer({"/caller": self.caller, "/dtmf": self.dtmf})

    def decide(self, handler: Handler, route: str, seen: Seen) -> str:
        with self.lock:
            self.n[route] += 1
            n = self.n[route]
            if n % self.fail_every == 0:
                decision = "http_500"
            elif n % self.stall_every == 0:
                decision = "stall"
            else:
                decision = "ok"
            self.counts[f"{route}:{decision}"] += 1
            self.decisions[seen.session_id or f"?{route}{n}"] = {
                "route": route,
                "decision": decision,
                "n": n,
            }
        with handler.server.lock:
            handler.server.seen.clear()  # keep the server's request log bounded
        return decision

    def answer(self, handler: Handler, decision: str, destination: str) -> None:
        reply = {"status_code": 200, "action": "call", "destination": destination}
        with contextlib.suppress(OSError):
            if decision == "http_500":
                handler.reply(500, b'{"error": "soak: a planned failure"}')
            elif decision == "stall":
                handler.server.stopping.wait(self.stall_seconds)
                handler.reply_json(reply)  # too late: the engine gave up
            else:
                handler.reply_json(reply)

    def caller(self, handler: Handler, seen: Seen) -> None:
        if seen.headers.get("Authorization") != f"Bearer {BEARER}":
            with self.lock:
                self.counts["caller:bad_auth"] += 1
            handler.reply(401, b"{}", {"WWW-Authenticate": "Bearer"})
            return
        self.answer(handler, self.decide(handler, "caller", seen), "230")

    def dtmf(self, handler: Handler, seen: Seen) -> None:
        header = seen.headers.get("Authorization", "")
        if header.startswith("Digest "):
            fields = {
                m.group(1): m.group(3) if m.group(3) is not None else m.group(4)
                for m in re.finditer(r'(\w+)=("([^"]*)"|([^,\s]*))', header[7:])
            }

            def h(text: str) -> str:
                return hashlib.md5(text.encode()).hexdigest()

            ha1 = h(f"{USER}:{REALM}:{PASSWORD}")
            ha2 = h(f"{seen.method}:{seen.target}")
            expected = h(
                f"{ha1}:{fields.get('nonce')}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}"
            )
            with self.lock:  # a nonce answers one request
                nonce = fields.get("nonce", "")
                known = nonce in self.nonces
                self.nonces.discard(nonce)
            if (
                known
                and fields.get("username") == USER
                and fields.get("realm") == REALM
                and fields.get("uri") == seen.target
                and fields.get("qop") == "auth"
                and hmac.compare_digest(fields.get("response", ""), expected)
            ):
                self.answer(handler, self.decide(handler, "dtmf", seen), "222")
                return
            with self.lock:
                self.counts["dtmf:bad_auth"] += 1
        nonce = secrets.token_hex(16)
        with self.lock:
            self.counts["dtmf:challenge"] += 1
            self.nonces.add(nonce)
        challenge = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5'
        with contextlib.suppress(OSError):
            handler.reply(401, b"{}", {"WWW-Authenticate": challenge})

    def decision_for(self, session: str) -> dict[str, Any] | None:
        with self.lock:
            return self.decisions.pop(session, None)


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    extension: str
    prefix: str  # first digit of the caller number (4: matches the CALLER URL's mask)
    what: str


SCENARIOS = (
    Scenario("menu_transfer", MENU, "6", "810, key 1 → FORWARD_TO_NUMBER 201 (target 200)"),
    Scenario(
        "busy_failure_rule",
        MENU,
        "6",
        "810, key 2 → FORWARD_TO_VOICEMAIL 207 (target 486) → 'not available' → failure rule "
        "FORWARD_TO_NUMBER 300 (target 200)",
    ),
    Scenario("direct_dial", MENU, "6", "810, keys NNN# (400-699) → direct dial (target 200)"),
    Scenario("caller_hangup", MENU, "6", "810, no key, the caller hangs up after 2.5 s"),
    Scenario(
        "crm_dtmf",
        CRM,
        "6",
        "820, keys 5NNN# → DTMF URL (POST, Digest): ok → call 222; 500/stall → direct dial 5NNN",
    ),
    Scenario(
        "crm_caller",
        CRM,
        "4",
        "820, caller 4NNNNNN → CALLER URL (GET, Bearer): ok → call 230; 500/stall → the menu, "
        "key 1 at 5 s → 201",
    ),
)


def _keyed_with_hash(number: str) -> str:
    """`number` then `#`, as the caller's --digits: a key every 0.25 s from 1 s on."""
    return ",".join(f"{d}@{1.0 + 0.25 * i:.2f}" for i, d in enumerate(number + "#"))


def caller_args(scenario: Scenario, seq: int) -> tuple[list[str], dict[str, Any]]:
    """The caller's extra arguments and the facts the check needs."""
    match scenario.name:
        case "menu_transfer":
            return ["--digits", "1@1.0"], {}
        case "busy_failure_rule":
            return ["--digits", "2@1.0"], {}
        case "direct_dial":
            number = str(400 + seq % 300)
            return ["--digits", _keyed_with_hash(number)], {"number": number}
        case "caller_hangup":
            return ["--hangup-after", "2.5"], {}
        case "crm_dtmf":
            number = str(5000 + seq % 1000)
            return ["--digits", _keyed_with_hash(number)], {"number": number}
        case "crm_caller":
            return ["--digits", "1@5.0"], {}
    raise ValueError(scenario.name)


class Checker:
    def __init__(self, port200: int, port486: int) -> None:
        self.port200 = port200
        self.port486 = port486

    def uri(self, number: str, port: int | None = None) -> str:
        return f"sip:{number}@127.0.0.1:{port or self.port200}"

    def check(
        self,
        scenario: Scenario,
        facts: dict[str, Any],
        summary: dict[str, Any] | None,
        refers: list[str],
        record: dict[str, Any] | None,
        decision: dict[str, Any] | None,
    ) -> tuple[list[str], list[str], str]:
        """(failure reasons, details, path taken); no reasons = the expected outcome."""
        reasons: list[str] = []
        details: list[str] = []

        def fail(reason: str, detail: str) -> None:
            reasons.append(reason)
            details.append(f"{reason}: {detail}")

        path = scenario.name
        if summary is None:
            fail("caller_no_summary", "the caller printed no summary or overran")
        elif not summary.get("answered"):
            fail("not_answered", f"invite_status {summary.get('invite_status')}")
        if record is None:
            fail("no_record", "the engine wrote no call record")

        transfer_to: str | None = None  # the final expected destination (target 200)
        refers_expected: list[str] = []
        urls_expected: list[tuple[str, str]] = []
        match scenario.name:
            case "menu_transfer":
                transfer_to = "201"
            case "busy_failure_rule":
                transfer_to = "300"
                refers_expected = [self.uri("207", self.port486), self.uri("300")]
            case "direct_dial":
                transfer_to = facts["number"]
            case "caller_hangup":
                transfer_to = None
            case "crm_dtmf" | "crm_caller":
                name = "crm-dtmf" if scenario.name == "crm_dtmf" else "crm-caller"
                if decision is None:
                    fail("url_not_requested", f"the CRM saw no {name} request")
                    path += ":none"
                else:
                    path += f":{decision['decision']}"
                    ok = decision["decision"] == "ok"
                    result = {"ok": "call", "http_500": "http_status", "stall": "timeout"}
                    urls_expected = [(name, result[decision["decision"]])]
                    if scenario.name == "crm_dtmf":
                        transfer_to = "222" if ok else facts["number"]
                    else:
                        transfer_to = "230" if ok else "201"
        if transfer_to and not refers_expected:
            refers_expected = [self.uri(transfer_to)]

        if summary is not None:
            if refers != refers_expected:
                fail("refers", f"REFERs {refers} != expected {refers_expected}")
            if transfer_to and summary.get("transfer_call_status") != 200:
                fail(
                    "transfer_status", f"transfer call status {summary.get('transfer_call_status')}"
                )
            if scenario.name == "busy_failure_rule" and 486 not in (
                summary.get("transfer_notify_codes") or []
            ):
                fail("no_486", f"notify codes {summary.get('transfer_notify_codes')}")
        if record is not None:
            outcome = "transferred" if transfer_to else "hung_up_by_caller"
            if record.get("outcome") != outcome:
                fail("outcome", f"outcome {record.get('outcome')!r} ({record.get('reason')})")
            if transfer_to and record.get("transferred_to") != transfer_to:
                fail("transferred_to", f"{record.get('transferred_to')!r} != {transfer_to!r}")
            if scenario.name == "busy_failure_rule":
                got = [
                    (t.get("destination"), t.get("sip_code"), t.get("result"))
                    for t in record.get("transfers") or []
                ]
                want = [("207", 486, "failed"), ("300", 200, "succeeded")]
                if got != want:
                    fail("transfers", f"{got} != {want}")
            if urls_expected:
                got_urls = [
                    (u.get("name"), u.get("result")) for u in record.get("action_urls") or []
                ]
                if got_urls != urls_expected:
                    fail("url_result", f"{got_urls} != {urls_expected}")
        return reasons, details, path


# --- sampling ----------------------------------------------------------------------------------


class Tally:
    """Calls so far (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.completed = 0
        self.failed = 0

    def add(self, call: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append(call)
            self.completed += 1
            self.failed += 0 if call["ok"] else 1

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.completed, self.failed


class Sampler(threading.Thread):
    """The engine process every `interval` s: RSS, fds, threads, CPU %, active calls, calls."""

    def __init__(self, engine: Engine, tally: Tally, interval: float, t0: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.engine = engine
        self.ps = psutil.Process(engine.proc.pid)
        self.tally = tally
        self.interval = interval
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.ps.cpu_percent(None)

    def sample(self) -> dict[str, Any] | None:
        try:
            with self.ps.oneshot():
                cpu = self.ps.cpu_percent(None)
                rss = self.ps.memory_info().rss
                fds = self.ps.num_fds()
                threads = self.ps.num_threads()
        except psutil.Error:
            return None
        active = calls_total = None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            code, body = self.engine.get("/api/status", timeout=5)
            if code == 200:
                active, calls_total = int(body["active_calls"]), int(body["calls_total"])
        completed, failed = self.tally.counts()
        row = {
            "t": round(time.monotonic() - self.t0, 2),
            "rss_mib": round(rss / MIB, 2),
            "fds": fds,
            "threads": threads,
            "cpu_percent": cpu,
            "active_calls": active,
            "engine_calls_total": calls_total,
            "completed": completed,
            "failed": failed,
        }
        with self.lock:
            self.samples.append(row)
        return row

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.samples)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            if self.sample() is None:
                break


class Gate:
    """Calls run inside `call()`; `exclusive()` waits until none runs and holds new ones back
    (to restart a transfer target between calls)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.closed = False

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        with self.cond:
            while self.closed:
                self.cond.wait()
            self.active += 1
        try:
            yield
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.cond:
            self.closed = True
            while self.active:
                self.cond.wait()
        try:
            yield
        finally:
            with self.cond:
                self.closed = False
                self.cond.notify_all()


# --- the run -----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.calls_dir = work / "calls"
        self.calls_dir.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(work)
        self.source: dict[str, Any] = {}
        self.machine = machine()  # load average at the start
        self.stop = threading.Event()
        self.tally = Tally()
        self.seq = itertools.count(1)
        self.seq_lock = threading.Lock()
        self.crm = Crm(args.fail_every, args.stall_every, URL_TIMEOUT + 2.0)
        self.gate = Gate()
        self.targets: dict[int, Proc] = {}  # answer code → its listen-mode process
        self.target_ports: dict[int, int] = {}
        self.recycles: list[dict[str, Any]] = []

    def config(self, greeting: Path, port486: int) -> dict[str, Any]:
        url = self.crm.server.url
        return {
            "server": {
                "name": "soak",
                "rtp_port": self.args.rtp_port,
                "voicemail_uri_template": f"sip:{{number}}@127.0.0.1:{port486}",
                "transfer_timeout": 10,
                "shutdown_grace": 2,
            },
            "ivrs": [
                {
                    "name": "Soak menu",
                    "extension_number": MENU,
                    "prompt_file": str(greeting),
                    "dtmf_interval": 1,
                    "failure_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "300"},
                    "custom_forward_rules": [
                        {
                            "user_input": "1",
                            "office_hours_forward_rule": {
                                "action": "FORWARD_TO_NUMBER",
                                "number": "201",
                            },
                        },
                        {
                            "user_input": "2",
                            "office_hours_forward_rule": {
                                "action": "FORWARD_TO_VOICEMAIL",
                                "number": "207",
                            },
                        },
                    ],
                },
                {
                    "name": "Soak CRM",
                    "extension_number": CRM,
                    "prompt_file": str(greeting),
                    "dtmf_interval": 1,
                    "custom_forward_rules": [
                        {
                            "user_input": "1",
                            "office_hours_forward_rule": {
                                "action": "FORWARD_TO_NUMBER",
                                "number": "201",
                            },
                        }
                    ],
                    "action_urls": [
                        {
                            "name": "crm-caller",
                            "enabled": True,
                            "type": "CALLER",
                            "method": "GET",
                            "caller_mask": "4000000-4999999",
                            "url": url("/caller"),
                            "auth": "BEARER",
                            "token": BEARER,
                            "connection_timeout": URL_TIMEOUT,
                            "request_timeout": URL_TIMEOUT,
                        },
                        {
                            "name": "crm-dtmf",
                            "enabled": True,
                            "type": "DTMF",
                            "method": "POST",
                            "dtmf_mask": "5000-5999",
                            "url": url("/dtmf"),
                            "auth": "DIGEST",
                            "username": USER,
                            "password": PASSWORD,
                            "connection_timeout": URL_TIMEOUT,
                            "request_timeout": URL_TIMEOUT,
                        },
                    ],
                },
            ],
        }

    def fetch_record(self, session: str, timeout: float = 10.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                code, body = self.engine.get(f"/api/calls/{session}")
                if code == 200 and isinstance(body, dict):
                    return body
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def one_call(self, seq: int) -> dict[str, Any]:
        scenario = SCENARIOS[(seq - 1) % len(SCENARIOS)]
        extra, facts = caller_args(scenario, seq)
        session = f"soak-{seq:06d}-{uuid.uuid4().hex[:6]}"
        name = f"call-{seq:06d}-{scenario.name}"
        from_user = f"{scenario.prefix}{seq % 1_000_000:06d}"
        started = time.monotonic()
        procs = Procs(self.calls_dir)
        summary: dict[str, Any] | None = None
        refers: list[str] = []
        crashed = ""
        try:
            proc = dial(
                procs,
                self.engine,
                scenario.extension,
                *extra,
                name=name,
                session=session,
                from_user=from_user,
                duration=CALL_LIMIT,
            )
            try:
                summary = summary_of(proc, timeout=CALL_LIMIT + 20)
            except AssertionError as exc:
                crashed = str(exc)[-500:]
            refers = [str(e.get("refer_to")) for e in proc.of("refer")]
        finally:
            procs.close()
        record = self.fetch_record(session)
        decision = self.crm.decision_for(session) if scenario.extension == CRM else None
        reasons, details, path = self.checker.check(
            scenario, facts, summary, refers, record, decision
        )
        if crashed:
            details.append(crashed)
        ok = not reasons
        if not ok:
            details += self.engine_lines(session, f"sip:{from_user}@")
        stderr = self.calls_dir / f"{name}.stderr"
        if ok:
            with contextlib.suppress(OSError):
                stderr.unlink()
        return {
            "seq": seq,
            "t": round(started - self.t0, 2),
            "seconds": round(time.monotonic() - started, 2),
            "scenario": scenario.name,
            "path": path,
            "session": session,
            "ok": ok,
            "reasons": reasons,
            "details": details,
            "outcome": (record or {}).get("outcome"),
            "transferred_to": (record or {}).get("transferred_to"),
            "url_latency_ms": [
                u.get("latency_ms") for u in (record or {}).get("action_urls") or []
            ],
        }

    def recycle_targets(self) -> None:
        """Restart a transfer target on its port after `--recycle-targets` INVITEs.

        The listen-mode test target (`engine.telephony.caller --listen`) keeps one conference
        bridge slot per answered call: after 254 it answers every INVITE with 488 (measured,
        PJ_ETOOMANY in its stderr). That is the test tool's limit, not the engine's, so the soak
        restarts it between calls (no call in progress) long before that.
        """
        for code, proc in list(self.targets.items()):
            invites = len(proc.of("invite"))
            if invites < self.args.recycle_targets and proc.popen.poll() is None:
                continue
            with self.gate.exclusive():
                started = time.monotonic()
                proc.stop()
                port = self.target_ports[code]
                new = None
                for attempt in range(10):
                    new = self.procs.start(
                        target_command(code, self.target_seconds, port), name=f"target{code}"
                    )
                    try:
                        new.first("listening", timeout=20)
                        break
                    except AssertionError:
                        new.stop()
                        new = None
                        time.sleep(0.5 * (attempt + 1))
                if new is None:
                    print(f"soak: cannot restart the {code} target on {port}", flush=True)
                    self.stop.set()
                    return
                self.targets[code] = new
                self.recycles.append(
                    {
                        "t": round(started - self.t0, 1),
                        "target": code,
                        "invites": invites,
                        "seconds": round(time.monotonic() - started, 2),
                    }
                )

    def engine_lines(self, *needles: str, limit: int = 6) -> list[str]:
        """The engine's log lines that name the call (session id, caller URI)."""
        text = self.engine.proc.stderr_text()
        found = [ln for ln in text.splitlines() if any(n in ln for n in needles)]
        found.sort(key=lambda ln: " INFO " in ln)  # warnings and errors first
        return [f"engine: {ln[:300]}" for ln in found[:limit]]

    def worker(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            if self.engine.proc.popen.poll() is not None:
                self.stop.set()
                break
            with self.seq_lock:
                seq = next(self.seq)
            try:
                with self.gate.call():
                    call = self.one_call(seq)
            except Exception as exc:  # a bug of the benchmark: count it, go on
                call = {
                    "seq": seq,
                    "t": round(time.monotonic() - self.t0, 2),
                    "scenario": SCENARIOS[(seq - 1) % len(SCENARIOS)].name,
                    "path": "?",
                    "ok": False,
                    "reasons": ["bench_error"],
                    "details": [repr(exc)],
                }
            self.tally.add(call)
            if not call["ok"]:
                print(f"soak: call {seq} {call['path']} FAILED: {call['details']}", flush=True)
            self.stop.wait(self.args.pause)

    def run(self) -> dict[str, Any]:
        args = self.args
        when = datetime.now(UTC).isoformat(timespec="seconds")
        greeting = self.work / "greeting.wav"
        make_chirp(greeting, args.greeting_seconds)
        self.crm.server.start()
        target_seconds = args.minutes * 60 + 600
        self.target_seconds = target_seconds
        for code in (200, 486):
            proc, port = start_target(self.procs, code, f"target{code}", duration=target_seconds)
            self.targets[code], self.target_ports[code] = proc, port
        port200, port486 = self.target_ports[200], self.target_ports[486]
        self.checker = Checker(port200, port486)
        config = self.config(greeting, port486)
        self.engine = start_engine(
            self.procs, config, name="engine", transfer_domain=f"127.0.0.1:{port200}"
        )
        ready = next(ln for ln in self.engine.proc.text_lines() if ln.startswith("vr-engine ready"))
        print(f"soak: {ready}", flush=True)
        print(
            f"soak: CRM at {self.crm.server.url('/')}, targets 200 on {port200}, 486 on {port486}"
        )
        time.sleep(2.0)  # let the engine settle before the baseline sample

        self.t0 = time.monotonic()
        sampler = Sampler(self.engine, self.tally, args.sample_seconds, self.t0)
        first = sampler.sample()
        if first is None:
            raise RuntimeError("cannot sample the engine process")
        sampler.start()
        self.deadline = self.t0 + args.minutes * 60
        workers = [
            threading.Thread(target=self.worker, name=f"caller-{i}", daemon=True)
            for i in range(args.concurrency)
        ]
        for i, w in enumerate(workers):
            w.start()
            self.stop.wait(min(3.0, 6.0 / args.concurrency) if i < len(workers) - 1 else 0)
        last_report = time.monotonic()
        while any(w.is_alive() for w in workers):
            time.sleep(1.0)
            self.recycle_targets()
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                samples = sampler.snapshot()
                s = samples[-1] if samples else first
                print(
                    f"soak: {s['t'] / 60:5.1f} min: {s['completed']} calls, {s['failed']} failed, "
                    f"RSS {s['rss_mib']:.1f} MiB, fds {s['fds']}, threads {s['threads']}, "
                    f"CPU {s['cpu_percent']:.1f} %, active {s['active_calls']}",
                    flush=True,
                )
                self.write_json(self.result(when, config, sampler.snapshot(), None, complete=False))
        calls_end = time.monotonic() - self.t0
        # idle: no call in progress, then a few more samples as the "end" values
        idle_deadline = time.monotonic() + 30
        while time.monotonic() < idle_deadline:
            code, body = 0, {}
            with contextlib.suppress(OSError, ValueError):
                code, body = self.engine.get("/api/status")
            if code == 200 and body.get("active_calls") == 0:
                break
            time.sleep(0.5)
        time.sleep(min(10.0, 2 * args.sample_seconds))
        sampler.stop_event.set()
        sampler.join(10)
        sampler.sample()
        samples = sampler.snapshot()

        # the engine: still alive, every call recorded, SIGTERM → exit 0
        alive = self.engine.proc.popen.poll() is None
        status: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            _, status = self.engine.get("/api/status")
        rc: int | None = None
        if alive:
            self.engine.proc.signal(signal.SIGTERM)
            try:
                rc = self.engine.proc.popen.wait(30)
            except Exception:
                rc = None
        else:
            rc = self.engine.proc.popen.poll()
        end = {
            "alive_at_end": alive,
            "sigterm_exit_code": rc,
            "status_at_end": status,
            "calls_phase_s": round(calls_end, 1),
        }
        return self.result(when, config, samples, end, complete=True)

    # --- report --------------------------------------------------------------------------------

    def engine_log(self) -> dict[str, Any]:
        text = self.engine.proc.stderr_text()
        levels: Counter[str] = Counter()
        messages: Counter[str] = Counter()
        for line in text.splitlines():
            m = re.match(r"\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)", line)
            if m:
                levels[m.group(1)] += 1
                if m.group(1) in ("WARNING", "ERROR", "CRITICAL"):
                    # numbers and ids vary per call: fold them to see the distinct messages
                    folded = re.sub(r"[0-9a-f]{6,}|\d+", "N", m.group(2))[:200]
                    messages[f"{m.group(1)} {folded}"] += 1
        return {
            "path": str(self.engine.proc.stderr_path),
            "bytes": len(text.encode()),
            "levels": dict(levels),
            "tracebacks": text.count("Traceback (most recent call last)"),
            "warnings_and_errors": [
                {"count": n, "message": msg} for msg, n in messages.most_common(20)
            ],
        }

    def result(
        self,
        when: str,
        config: dict[str, Any],
        samples: list[dict[str, Any]],
        end: dict[str, Any] | None,
        *,
        complete: bool,
    ) -> dict[str, Any]:
        with self.tally.lock:
            calls = list(self.tally.calls)
        calls.sort(key=lambda c: c["seq"])
        summary = summarise(calls, samples, end, self.args)
        with self.crm.lock:
            crm_counts = dict(self.crm.counts)
        out: dict[str, Any] = {
            "complete": complete,
            "when": when,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
            "machine": self.machine,
            "work": str(self.work),
            "source": self.source,
            "engine": {
                "pid": self.engine.proc.pid,
                "config": redact(config),
                "end": end,
                "log": self.engine_log(),
            },
            "scenarios": {s.name: s.what for s in SCENARIOS},
            "crm": {
                "rule": f"decisions numbered per URL: every {self.args.fail_every}th → "
                f"500, else every {self.args.stall_every}th stalls {self.crm.stall_seconds:g} s "
                f"(request_timeout {URL_TIMEOUT} s), else call <destination>",
                "counts": crm_counts,
            },
            "target_restarts": list(self.recycles),
            "rules": RULES,
            "summary": summary,
            "verdict": verdict(summary, end) if end is not None else None,
            "samples": samples,
            "calls": calls,
        }
        return out

    def write_json(self, result: dict[str, Any]) -> None:
        out: Path = self.args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)


def snapshot_source(work: Path, attempts: int = 5) -> dict[str, Any]:
    """Copy `engine/` and `prompts/` into `work/src` and run every process from there.

    The tree is shared with people editing it: a caller process started halfway through an
    edit would import a half-written module. The engine, the targets and the callers all run
    the copy (`cwd` and `PYTHONPATH`), checked to import before the run.
    """
    src = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    error = ""
    for _ in range(attempts):
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(ROOT / "engine", src / "engine", ignore=ignore)
        shutil.copytree(ROOT / "prompts", src / "prompts", ignore=ignore)
        check = subprocess.run(
            [
                sys.executable,
                "-c",
                "import engine, engine.server, engine.telephony.caller\nprint(engine.__file__)",
            ],
            cwd=src,
            env={**os.environ, "PYTHONPATH": str(src)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check.returncode == 0 and check.stdout.strip().startswith(str(src)):
            break
        error = (check.stderr or check.stdout)[-2000:]
        time.sleep(10)
    else:
        raise RuntimeError(f"the copy of engine/ does not import: {error}")
    digest = hashlib.sha256()
    for path in sorted((src / "engine").rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    git: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "engine", "prompts"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        git = {"head": head.stdout.strip(), "uncommitted": status.stdout.splitlines()}
    engine_helpers.ROOT = src  # the helpers start every process with cwd=ROOT
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return {"copy": str(src), "engine_py_sha256": digest.hexdigest(), "git": git}


def redact(config: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(config).replace(PASSWORD, "***").replace(BEARER, "***")
    result: dict[str, Any] = json.loads(text)
    return result


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    pj_version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        pj = subprocess.run(
            [sys.executable, "-c", "import pjsua2; print(getattr(pjsua2, '__version__', '?'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        pj_version = pj.stdout.strip() or None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pjsua2": pj_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def slope_per_hour(samples: list[dict[str, Any]], key: str) -> float | None:
    if len(samples) < 3:
        return None
    t = np.asarray([s["t"] for s in samples], dtype=np.float64) / 3600
    y = np.asarray([s[key] for s in samples], dtype=np.float64)
    if t[-1] - t[0] <= 0:
        return None
    return round(float(np.polyfit(t, y, 1)[0]), 2)


def summarise(
    calls: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    end: dict[str, Any] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for c in calls:
        reasons.update(c["reasons"])
    by_scenario: dict[str, dict[str, int]] = {}
    for c in calls:
        row = by_scenario.setdefault(c["scenario"], {"calls": 0, "failed": 0})
        row["calls"] += 1
        row["failed"] += 0 if c["ok"] else 1
    paths = Counter(c["path"] for c in calls)
    phase = end["calls_phase_s"] if end else (samples[-1]["t"] if samples else 0.0)
    during = [s for s in samples if s["t"] <= phase]
    second_half = [s for s in during if s["t"] >= phase / 2]
    half_seconds = (second_half[-1]["t"] - second_half[0]["t"]) if second_half else 0.0
    rss = [s["rss_mib"] for s in samples]
    fds = [s["fds"] for s in samples]
    threads = [s["threads"] for s in samples]
    cpu = [s["cpu_percent"] for s in samples[1:] if s["t"] <= phase]
    durations = [c["seconds"] for c in calls if "seconds" in c]
    first, last = (samples[0], samples[-1]) if samples else ({}, {})
    return {
        "calls": len(calls),
        "ok": sum(1 for c in calls if c["ok"]),
        "failed": sum(1 for c in calls if not c["ok"]),
        "failures_by_first_reason": dict(Counter(c["reasons"][0] for c in calls if c["reasons"])),
        "failures_by_reason": dict(reasons),
        "by_scenario": by_scenario,
        "paths": dict(sorted(paths.items())),
        "calls_per_minute": round(len(calls) / (phase / 60), 1) if phase else None,
        "call_seconds": {
            "mean": round(float(np.mean(durations)), 2) if durations else None,
            "max": round(max(durations), 2) if durations else None,
        },
        "samples": len(samples),
        "rss_mib": {
            "start": first.get("rss_mib"),
            "min": min(rss) if rss else None,
            "max": max(rss) if rss else None,
            "end": last.get("rss_mib"),
        },
        "rss_slope_second_half_mib_per_h": slope_per_hour(second_half, "rss_mib"),
        "second_half_seconds": round(half_seconds, 1),
        "fds": {
            "start": first.get("fds"),
            "max": max(fds) if fds else None,
            "end": last.get("fds"),
        },
        "threads": {
            "start": first.get("threads"),
            "max": max(threads) if threads else None,
            "end": last.get("threads"),
        },
        "cpu_percent": {
            "mean": round(float(np.mean(cpu)), 1) if cpu else None,
            "max": round(max(cpu), 1) if cpu else None,
        },
        "active_calls_max": max((s["active_calls"] or 0) for s in samples) if samples else None,
        "engine_calls_total": (end or {}).get("status_at_end", {}).get("calls_total"),
        "concurrency": args.concurrency,
        "minutes_planned": args.minutes,
        "minutes": round(phase / 60, 2),
    }


def verdict(summary: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, dict[str, Any]] = {}
    checks["no_failed_calls"] = {"ok": summary["failed"] == 0, "value": summary["failed"]}
    checks["calls_made"] = {"ok": summary["calls"] > 0, "value": summary["calls"]}
    checks["engine_alive_at_end"] = {"ok": bool(end["alive_at_end"]), "value": end["alive_at_end"]}
    checks["sigterm_exit_0"] = {
        "ok": end["sigterm_exit_code"] == 0,
        "value": end["sigterm_exit_code"],
    }
    fds = summary["fds"]
    checks["fds_bounded"] = {
        "ok": fds["end"] is not None and fds["end"] <= fds["start"] + FD_SLACK,
        "value": f"end {fds['end']} <= start {fds['start']} + {FD_SLACK}",
    }
    slope = summary["rss_slope_second_half_mib_per_h"]
    judged = summary["second_half_seconds"] >= SLOPE_MIN_SECONDS
    checks["rss_slope_bounded"] = {
        "ok": (slope is not None and slope < SLOPE_LIMIT) if judged else True,
        "value": f"{slope} MiB/h < {SLOPE_LIMIT:g}"
        + ("" if judged else f" (not judged: second half {summary['second_half_seconds']} s)"),
    }
    return {"pass": all(c["ok"] for c in checks.values()), "checks": checks}


def plot(result: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    samples = result["samples"]
    if not samples:
        return "no samples: no plot"
    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["rss_mib"] for s in samples], color="tab:green", lw=1.2)
    ax.set_ylabel("RSS MiB")
    s = result["summary"]
    ax.set_title(
        f"engine RSS (slope over the second half: {s['rss_slope_second_half_mib_per_h']} MiB/h)",
        fontsize=9,
    )
    ax = axes[1]
    ax.plot(t, [s["fds"] for s in samples], label="open fds", lw=1.2)
    ax.plot(t, [s["threads"] for s in samples], label="threads", lw=1.2)
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("engine open file descriptors and threads", fontsize=9)
    ax = axes[2]
    ax.plot(t, [s["completed"] for s in samples], label="calls completed", lw=1.2)
    ax.plot(t, [s["failed"] for s in samples], label="calls failed", color="tab:red", lw=1.2)
    ax.set_ylabel("calls")
    for i, r in enumerate(result.get("target_restarts") or []):
        ax.axvline(
            r["t"] / 60,
            color="grey",
            lw=0.5,
            ls=":",
            label="transfer target restarted" if i == 0 else None,
        )
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("calls (cumulative)", fontsize=9)
    ax = axes[3]
    ax.plot(t, [s["cpu_percent"] for s in samples], label="engine CPU % (one core)", lw=1.0)
    ax.set_ylabel("CPU %")
    ax2 = ax.twinx()
    ax2.step(
        t,
        [s["active_calls"] if s["active_calls"] is not None else np.nan for s in samples],
        where="post",
        color="tab:purple",
        lw=0.8,
        label="active calls",
    )
    ax2.set_ylabel("active calls")
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, fontsize=8, loc="upper left")
    ax.set_title("engine CPU and active calls", fontsize=9)
    ax.set_xlabel("minutes")
    verdict_ = result.get("verdict") or {}
    m = result["machine"]
    fig.suptitle(
        f"vr-engine soak {result['when']}: {s['calls']} calls, {s['failed']} failed, "
        f"concurrency {s['concurrency']} — {'PASS' if verdict_.get('pass') else 'FAIL'} — "
        f"pjsua2 {m['pjsua2']}, {m['cores']} cores",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def print_summary(result: dict[str, Any]) -> None:
    s = result["summary"]
    end = result["engine"]["end"] or {}
    rss, fds, th, cpu = s["rss_mib"], s["fds"], s["threads"], s["cpu_percent"]
    log = result["engine"]["log"]
    print("soak: ---- summary ----")
    print(
        f"soak: {s['minutes']} min (of {s['minutes_planned']}) at concurrency "
        f"{s['concurrency']}: {s['calls']} calls ({s['calls_per_minute']}/min, mean "
        f"{s['call_seconds']['mean']} s), {s['ok']} ok, {s['failed']} failed"
    )
    if s["failed"]:
        print(f"soak: failed calls by first reason: {s['failures_by_first_reason']}")
        print(f"soak: reasons (a call may have several): {s['failures_by_reason']}")
    print(f"soak: by scenario: {s['by_scenario']}")
    print(f"soak: paths taken: {s['paths']}")
    print(f"soak: CRM requests: {result['crm']['counts']}")
    print(
        f"soak: transfer targets restarted {len(result['target_restarts'])} times "
        f"(every {result['args']['recycle_targets']} INVITEs)"
    )
    print(
        f"soak: RSS MiB start {rss['start']}, min {rss['min']}, max {rss['max']}, "
        f"end {rss['end']}; "
        f"slope over the second half ({s['second_half_seconds']} s) "
        f"{s['rss_slope_second_half_mib_per_h']} MiB/h"
    )
    print(f"soak: open fds start {fds['start']}, max {fds['max']}, end {fds['end']}")
    print(f"soak: threads start {th['start']}, max {th['max']}, end {th['end']}")
    print(f"soak: engine CPU % (one core) mean {cpu['mean']}, max {cpu['max']}")
    print(
        f"soak: engine: alive at the end {end.get('alive_at_end')}, SIGTERM exit code "
        f"{end.get('sigterm_exit_code')}, calls_total {s['engine_calls_total']}, "
        f"active calls max {s['active_calls_max']}"
    )
    print(
        f"soak: engine log: {log['levels']}, tracebacks {log['tracebacks']}"
        + "".join(
            f"\nsoak:   {w['count']} x {w['message']}" for w in log["warnings_and_errors"][:10]
        )
    )
    print(f"soak: rule: {result['rules']}")
    v = result["verdict"]
    for name, check in v["checks"].items():
        print(f"soak:   {'ok  ' if check['ok'] else 'FAIL'} {name}: {check['value']}")
    print(f"soak: verdict: {'PASS' if v['pass'] else 'FAIL'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30.0, help="how long calls are placed")
    ap.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="callers at a time (the PyPI pjsua2 wheel carries at most 4 calls)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "soak.json",
        help="the JSON result; the plot goes next to it with .png",
    )
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="engine sampling period")
    ap.add_argument(
        "--rtp-port",
        type=int,
        default=40000,
        help="the engine's first RTP port (away from other engines on this host, e.g. tests)",
    )
    ap.add_argument("--pause", type=float, default=0.5, help="pause between a caller's calls (s)")
    ap.add_argument("--greeting-seconds", type=float, default=4.0, help="the greeting's length")
    ap.add_argument("--fail-every", type=int, default=5, help="every Nth URL request gets a 500")
    ap.add_argument("--stall-every", type=int, default=7, help="every Nth URL request stalls")
    ap.add_argument(
        "--recycle-targets",
        type=int,
        default=100,
        help="restart a transfer target after this many INVITEs (the test target keeps a "
        "conference slot per answered call and refuses calls after 254)",
    )
    ap.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    ap.add_argument(
        "--live-tree",
        action="store_true",
        help="run the tree's engine/ itself, not a copy taken at the start (see snapshot_source)",
    )
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.minutes <= 0 or args.sample_seconds <= 0:
        ap.error("--concurrency, --minutes and --sample-seconds must be positive")
    work = args.work or Path(tempfile.mkdtemp(prefix="vr-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"soak: engine data, logs and failed callers' stderr in {work}", flush=True)
    source = {"copy": None} if args.live_tree else snapshot_source(work)
    print(f"soak: running the engine code of {source['copy'] or ROOT}", flush=True)
    soak = Soak(args, work)
    soak.source = source

    def on_signal(signum: int, frame: Any) -> None:
        print(f"soak: signal {signum}: finishing the calls in progress", flush=True)
        soak.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        result = soak.run()
    finally:
        soak.procs.close()
        soak.crm.server.close()
    soak.write_json(result)
    png = args.out.with_suffix(".png")
    note = plot(result, png)
    print_summary(result)
    print(f"soak: results in {args.out}" + (f"; {note}" if note else f" and {png}"), flush=True)
    return 0 if result["verdict"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
