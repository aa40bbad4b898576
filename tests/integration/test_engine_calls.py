"""Whole calls through a real `vr-engine serve` process (SPEC §3, §6, §7).

One engine process (module fixture) serves several receptionists on different extensions;
two listen-mode transfer targets answer 200 and 486. Callers are `python -m
engine.telephony.caller` processes that record what they hear and print a JSON summary; each
sends a unique `X-Session-ID` (which names its call record, `GET /api/calls/{id}`) and a unique
From user (which names the INVITE the transfer target receives after the REFER).

Transfer routing on the module engine:
* `--transfer-domain 127.0.0.1:<target 200>`: every `FORWARD_TO_NUMBER`, direct dial and DISA
  transfer reaches the target that answers 200;
* `voicemail_uri_template: sip:{number}@127.0.0.1:<target 486>`: `FORWARD_TO_VOICEMAIL`
  reaches the target that answers 486 (busy) — the only way to give one engine two targets.
The 404 case ("extension does not exist") and SIGTERM draining have engines of their own.

All ports are ephemeral on 127.0.0.1 (the engine binds SIP port 0 and prints it); every wait is
bounded; every process is stopped in fixture teardown.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.audio import aligned_correlation
from tests.integration.engine_helpers import (
    RATE,
    Engine,
    Proc,
    Procs,
    builtin_prompt,
    dial,
    engine_command,
    frame_rms,
    invites_from,
    keys,
    loud_runs,
    make_chirp,
    procs_in,
    read_wav,
    start_engine,
    start_target,
    summary_of,
    wait_invite,
)

pytestmark = pytest.mark.integration

PIN = "59381720"  # the DISA PIN (8 digits: never a fragment of a timestamp by chance)
WRONG_PIN = "82649135"
GREETING_SECONDS = 3.0  # 801's greeting (a 16 kHz WAV, converted by the engine)
LONG_SECONDS = 8.0  # 802's greeting: long, so that it is still playing at barge-in
SHORT_SECONDS = 1.0  # 804's greeting (timeout repeats)

_users = itertools.count(5550100)


def rule(user_input: str, action: str, number: str | None = None) -> dict[str, Any]:
    forward: dict[str, Any] = {"action": action}
    if number is not None:
        forward["number"] = number
    return {"user_input": user_input, "office_hours_forward_rule": forward}


@dataclass
class World:
    engine: Engine
    target200: Proc
    port200: int
    target486: Proc
    port486: int
    greeting: np.ndarray  # 801
    long_greeting: np.ndarray  # 802
    short_greeting: np.ndarray  # 804


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("engine_calls")
    with procs_in(tmp) as procs:
        target200, port200 = start_target(procs, 200, "target200")
        target486, port486 = start_target(procs, 486, "target486")
        greeting = make_chirp(tmp / "greeting16k.wav", GREETING_SECONDS, rate=16000)
        long_greeting = make_chirp(tmp / "long.wav", LONG_SECONDS, 400, 2800)
        short_greeting = make_chirp(tmp / "short.wav", SHORT_SECONDS, 500, 2500)
        config = {
            "server": {
                "name": "engine-calls",
                "voicemail_uri_template": f"sip:{{number}}@127.0.0.1:{port486}",
                "transfer_timeout": 10,
                "shutdown_grace": 2,
            },
            "ivrs": [
                {
                    "name": "Greeting",
                    "extension_number": "801",
                    "prompt_file": "../greeting16k.wav",
                    "custom_forward_rules": [rule("2", "FORWARD_TO_NUMBER", "202")],
                },
                {
                    "name": "Menu",
                    "extension_number": "802",
                    "prompt_file": "../long.wav",
                    "dtmf_interval": 2,
                    "exclude_list": "1000-1099",
                    "enable_pin": True,
                    "pin": PIN,
                    "failure_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "300"},
                    "custom_forward_rules": [
                        rule("2", "FORWARD_TO_NUMBER", "202"),
                        rule("11", "FORWARD_TO_NUMBER", "211"),
                        rule("5#", "FORWARD_TO_NUMBER", "205"),
                        rule("7", "FORWARD_TO_VOICEMAIL", "207"),
                        rule("0", "DISA"),
                    ],
                },
                {"name": "Francais", "extension_number": "803", "language": "fr-FR"},
                {
                    "name": "Timeout",
                    "extension_number": "804",
                    "prompt_file": "../short.wav",
                    "timeout_forward_rule": {
                        "timeout": 1,
                        "repeat_times": 2,
                        "action": "FORWARD_TO_NUMBER",
                        "number": "204",
                    },
                },
                {
                    "name": "Night",
                    "extension_number": "805",
                    "prompt_file": "../greeting16k.wav",
                    "enable_night_mode": True,
                    "night_mode_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "259"},
                },
            ],
        }
        engine = start_engine(procs, config, name="engine", transfer_domain=f"127.0.0.1:{port200}")
        yield World(
            engine,
            target200,
            port200,
            target486,
            port486,
            greeting,
            long_greeting,
            short_greeting,
        )
        # the engine stops cleanly at the end too
        engine.proc.signal(signal.SIGTERM)
        assert engine.proc.finish(15) == 0, engine.proc.stderr_tail()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Processes of one test (callers, extra engines): all stopped when the test ends."""
    with procs_in(tmp_path) as started:
        yield started


@dataclass
class Call:
    proc: Proc
    session: str
    user: str
    record_path: Path | None


def call(
    procs: Procs,
    engine: Engine,
    extension: str,
    *args: str,
    record: bool = True,
    duration: float = 25.0,
    tag: str = "call",
) -> Call:
    session = f"{tag}-{uuid.uuid4().hex[:10]}"
    user = str(next(_users))
    path = procs.tmp / f"{session}.wav" if record else None
    extra = ["--record", str(path)] if path is not None else []
    proc = dial(
        procs,
        engine,
        extension,
        *args,
        *extra,
        name=tag,
        session=session,
        from_user=user,
        duration=duration,
    )
    return Call(proc, session, user, path)


def heard(c: Call) -> np.ndarray:
    assert c.record_path is not None
    return read_wav(c.record_path)


def refer_at(summary: dict[str, Any], c: Call) -> float:
    """Seconds from the call's confirmation to the (first) REFER the caller received."""
    refers = c.proc.of("refer")
    assert refers, f"no REFER; summary={summary}"
    return float(refers[0]["at"]) - float(summary["confirmed_at"])


def digit_at(summary: dict[str, Any], index: int = 0) -> float:
    """Seconds from confirmation to the caller's sending of digit `index`."""
    return float(summary["digits_sent"][index]["at"]) - float(summary["confirmed_at"])


def assert_transferred(
    world: World, c: Call, summary: dict[str, Any], destination: str
) -> dict[str, Any]:
    """REFER to sip:<destination>@<target 200>, the target got the INVITE, record says so."""
    assert summary["answered"] is True, summary
    assert summary["refer_to"] == f"sip:{destination}@127.0.0.1:{world.port200}", summary
    invite = wait_invite(world.target200, c.user)
    assert invite["request_user"] == destination
    assert summary["transfer_call_status"] == 200, summary
    rec = world.engine.record(c.session)
    assert rec["outcome"] == "transferred", rec
    assert rec["transferred_to"] == destination
    assert rec["transfer_sip_code"] == 200
    assert rec["sip"]["disconnected_by"] == "server", rec["sip"]  # BYE after the final NOTIFY
    return rec


# --- 1, 2: what the caller hears -------------------------------------------------------------


def test_caller_hears_the_configured_greeting(world: World, procs: Procs) -> None:
    c = call(procs, world.engine, "801", "--hangup-after", str(GREETING_SECONDS + 0.6))
    summary = summary_of(c.proc)
    assert summary["answered"] and summary["invite_status"] == 200, summary
    recording = heard(c)
    corr, lag = aligned_correlation(recording, world.greeting)
    assert corr >= 0.9, corr
    assert lag / RATE < 0.15, f"greeting started {lag / RATE:.3f} s after answer"
    assert GREETING_SECONDS - 0.2 <= summary["heard_seconds"] <= GREETING_SECONDS + 0.2, summary
    rec = world.engine.record(c.session)
    assert rec["outcome"] == "hung_up_by_caller"
    assert rec["reason"] == "caller hung up during menu"  # the greeting had ended
    assert rec["caller_number"] == c.user and rec["extension_number"] == "801"


def test_french_receptionist_plays_the_french_builtin_greeting(world: World, procs: Procs) -> None:
    french = builtin_prompt("fr-FR", "greeting")
    english = builtin_prompt("en-US", "greeting")
    seconds = len(french) / RATE
    c = call(procs, world.engine, "803", "--hangup-after", f"{seconds + 0.5:.2f}")
    summary_of(c.proc)
    recording = heard(c)
    corr_fr, lag = aligned_correlation(recording, french)
    corr_en, _ = aligned_correlation(recording, english)
    assert corr_fr >= 0.9, (corr_fr, corr_en)
    assert corr_en <= 0.5, (corr_fr, corr_en)
    assert lag / RATE < 0.15
    assert world.engine.record(c.session)["outcome"] == "hung_up_by_caller"


# --- 3: digits by each method lead to a REFER and the target's INVITE -----------------------


@pytest.mark.parametrize("method", ["rfc4733", "sip-info", "sip-info-dtmf"])
def test_digits_lead_to_refer_and_target_invite(world: World, procs: Procs, method: str) -> None:
    one = call(procs, world.engine, "802", "--digits", "2@1.0", "--dtmf-method", method, tag="k2")
    # rule "11" pressed as two digits: no rule "1", so the first waits for the second
    two = call(
        procs, world.engine, "802", "--digits", "1@1.0,1@1.4", "--dtmf-method", method, tag="k11"
    )
    s1, s2 = summary_of(one.proc), summary_of(two.proc)

    rec1 = assert_transferred(world, one, s1, "202")
    rec2 = assert_transferred(world, two, s2, "211")
    expected_method = "rfc4733" if method == "rfc4733" else "sip-info"
    assert rec1["dtmf_methods"] == {expected_method: 1}, rec1["dtmf_methods"]
    assert rec2["dtmf_methods"] == {expected_method: 2}, rec2["dtmf_methods"]
    assert [i["digits"] for i in rec1["inputs"]] == ["2"]
    assert [i["digits"] for i in rec2["inputs"]] == ["11"]
    assert rec1["menu_rules"] == ["2:office_hours"] and rec2["menu_rules"] == ["11:office_hours"]
    # a rule without "#" fires as soon as the digits equal it
    assert refer_at(s1, one) - digit_at(s1) < 0.6
    assert refer_at(s2, two) - digit_at(s2, 1) < 0.6
    for c in (one, two):
        assert len(invites_from(world.target200, c.user)) == 1
        assert len(c.proc.of("refer")) == 1


# --- 4: barge-in -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rfc4733", "sip-info"])
def test_barge_in_stops_the_greeting_within_100_ms(
    world: World, procs: Procs, method: str, record_property: Any
) -> None:
    """A digit at 2.0 s, while the 8 s greeting plays; no rule starts with "3", so the
    engine then waits `dtmf_interval` (2 s) in silence: everything heard from the digit +
    100 ms + the receive latency until the caller hangs up at 3.7 s must be silence.

    Time base: the caller's recording starts when its media starts (at the 200 OK, within a
    few ms of `confirmed_at`), so the digit is at `digits_sent.at - confirmed_at` on the
    recording's clock. Allowance: what the caller hears lags what the engine sends by the
    receive path (RTP packetisation, the caller's jitter buffer and conference bridge). The
    greeting starts at the answer, so the greeting's offset in the recording (`lag`,
    measured ~25 ms) bounds that latency from above; it must itself be under 100 ms.
    """
    c = call(
        procs,
        world.engine,
        "802",
        "--digits",
        "3@2.0",
        "--dtmf-method",
        method,
        "--hangup-after",
        "3.7",
    )
    summary = summary_of(c.proc)
    recording = heard(c)
    digit = digit_at(summary)
    corr, lag = aligned_correlation(recording[: int(digit * RATE)], world.long_greeting[:RATE])
    latency = lag / RATE
    assert corr >= 0.9 and latency < 0.1, (corr, latency)

    rms = frame_rms(recording)  # 10 ms frames
    loud = rms > 0.01
    before = loud[int((latency + 0.1) * 100) : int((digit - 0.05) * 100)]
    assert before.mean() >= 0.95, f"greeting not loud before the digit: {before.mean():.2f}"
    cut = int(np.ceil((digit + 0.1 + latency) * 100))
    after = rms[cut : int(3.6 * 100)]
    assert len(after) > 100
    assert float(after.max()) < 0.003, f"audio after digit+100 ms: max RMS {after.max():.4f}"
    last_loud = (int(np.nonzero(loud)[0][-1]) + 1) / 100
    stop_ms = (last_loud - digit) * 1000
    record_property("barge_in_ms", round(stop_ms))
    record_property("receive_latency_ms", round(latency * 1000))
    print(
        f"barge-in ({method}): last greeting audio {stop_ms:.0f} ms after the digit was "
        f"sent (recording clock; receive latency {latency * 1000:.0f} ms included)"
    )
    assert stop_ms <= 100 + latency * 1000
    rec = world.engine.record(c.session)
    assert rec["dtmf_methods"] == {method if method == "rfc4733" else "sip-info": 1}
    assert rec["outcome"] == "hung_up_by_caller"
    assert rec["inputs"] == [], "input '3' completes only after dtmf_interval"


# --- 5: menu rules, direct dial, blocked, timeout, night, DISA, failures ---------------------


@pytest.mark.parametrize(
    ("digits", "wait"),
    [("5@1.0,#@1.3", "hash"), ("5@1.0", "3s")],
    ids=["hash", "3s-wait"],
)
def test_hash_rule_fires_on_hash_or_after_3_s(
    world: World, procs: Procs, digits: str, wait: str
) -> None:
    c = call(procs, world.engine, "802", "--digits", digits, record=False)
    summary = summary_of(c.proc)
    rec = assert_transferred(world, c, summary, "205")
    after = refer_at(summary, c) - digit_at(summary, len(summary["digits_sent"]) - 1)
    if wait == "hash":
        assert after < 0.6, after
        assert [i["digits"] for i in rec["inputs"]] == ["5#"]
    else:
        # 3 s of silence after "5", even though dtmf_interval is 2 s
        assert 2.9 <= after <= 3.6, after
        assert [i["digits"] for i in rec["inputs"]] == ["5"]
    assert rec["menu_rules"] == ["5#:office_hours"]


@pytest.mark.parametrize(
    ("digits", "wait"),
    [(keys("333#", 1.0), 0.0), (keys("444", 1.0), 2.0)],
    ids=["hash", "pause"],
)
def test_direct_dial(world: World, procs: Procs, digits: str, wait: float) -> None:
    c = call(procs, world.engine, "802", "--digits", digits, record=False)
    summary = summary_of(c.proc)
    destination = "333" if wait == 0.0 else "444"
    rec = assert_transferred(world, c, summary, destination)
    after = refer_at(summary, c) - digit_at(summary, len(summary["digits_sent"]) - 1)
    assert wait - 0.1 <= after <= wait + 0.6, after
    assert rec["transfers"][0]["origin"] == "direct_dial"
    assert rec["menu_rules"] == []


def test_blocked_extension_plays_notice_then_greeting(world: World, procs: Procs) -> None:
    blocked = builtin_prompt("en-US", "extension_blocked")
    blocked_s = len(blocked) / RATE
    c = call(
        procs,
        world.engine,
        "802",
        "--digits",
        keys("1050#", 1.0),
        "--hangup-after",
        f"{2.0 + blocked_s + 2.2:.2f}",
    )
    summary = summary_of(c.proc)
    assert summary["refer_to"] is None
    recording = heard(c)
    hash_at = digit_at(summary, 4)
    start = int(hash_at * RATE)
    corr_b, lag_b = aligned_correlation(recording[start:], blocked)
    assert corr_b >= 0.9, corr_b
    assert lag_b / RATE < 0.25, "the notice follows the # at once"
    # then the greeting again, from its beginning
    after = start + lag_b + len(blocked)
    corr_g, lag_g = aligned_correlation(recording[after:], world.long_greeting[: int(1.5 * RATE)])
    assert corr_g >= 0.9, corr_g
    assert lag_g / RATE < 0.2
    rec = world.engine.record(c.session)
    assert rec["transfers"] == [] and rec["transferred_to"] is None
    assert [i["digits"] for i in rec["inputs"]] == ["1050#"]
    assert rec["outcome"] == "hung_up_by_caller"
    assert not invites_from(world.target200, c.user)


def test_timeout_repeats_then_runs_the_timeout_action(world: World, procs: Procs) -> None:
    """timeout 1 s, repeat_times 2: greeting, 1 s, greeting, 1 s, greeting, 1 s, transfer."""
    c = call(procs, world.engine, "804")
    summary = summary_of(c.proc)
    rec = assert_transferred(world, c, summary, "204")
    at = refer_at(summary, c)
    expected = 3 * (SHORT_SECONDS + 1.0)
    assert expected - 0.1 <= at <= expected + 0.8, at
    recording = heard(c)[: int(at * RATE)]
    runs = loud_runs(recording)
    assert len(runs) == 3, runs
    for n, (begin, end) in enumerate(runs):
        assert abs(begin - n * (SHORT_SECONDS + 1.0)) < 0.25, runs
        assert abs((end - begin) - SHORT_SECONDS) < 0.1, runs
        piece = recording[max(int((begin - 0.1) * RATE), 0) : int((end + 0.1) * RATE)]
        corr, _ = aligned_correlation(piece, world.short_greeting)
        assert corr >= 0.9, (n, corr)
    assert rec["transfers"][0]["origin"] == "timeout_rule"
    assert rec["inputs"] == []


def test_night_mode_transfers_at_once_without_greeting(world: World, procs: Procs) -> None:
    c = call(procs, world.engine, "805")
    summary = summary_of(c.proc)
    rec = assert_transferred(world, c, summary, "259")
    assert refer_at(summary, c) < 0.5
    assert summary["heard_seconds"] <= 0.04, summary  # nothing before (or after) the REFER
    assert rec["night_mode"] is True
    assert rec["transfers"][0]["origin"] == "night_mode"


def assert_no_pin_anywhere(world: World) -> None:
    """Neither PIN in the call records, in any file of the data directory (the SQLite store
    and its WAL included), or in stderr."""
    records = json.dumps(world.engine.stored_records())
    stderr = world.engine.proc.stderr_text()
    files = {p: p.read_bytes() for p in world.engine.data_dir.rglob("*") if p.is_file()}
    for secret in (PIN, WRONG_PIN):
        assert secret not in records, f"PIN digits {secret} in the call records"
        assert secret not in stderr, f"PIN digits {secret} in the engine's stderr"
        leaked = [str(p) for p, data in files.items() if secret.encode() in data]
        assert not leaked, f"PIN digits {secret} in {leaked}"


def test_disa_with_the_right_pin_transfers_to_the_destination(world: World, procs: Procs) -> None:
    digits = ",".join(["0@1.0", keys(PIN + "#", 1.5), keys("250#", 4.5)])
    c = call(procs, world.engine, "802", "--digits", digits, record=False)
    summary = summary_of(c.proc)
    rec = assert_transferred(world, c, summary, "250")
    assert [(i["stage"], i["digits"]) for i in rec["inputs"]] == [
        ("menu", "0"),
        ("pin", "*" * len(PIN)),
        ("disa_destination", "250"),
    ]
    assert rec["disa_authenticated"] is True and rec["disa_pin_failures"] == 0
    assert rec["transfers"][0]["origin"] == "disa"
    assert_no_pin_anywhere(world)


def test_disa_three_wrong_pins_hang_up_and_never_leak(world: World, procs: Procs) -> None:
    attempts = [keys(WRONG_PIN + "#", 1.5 + n * 2.5) for n in range(3)]
    c = call(procs, world.engine, "802", "--digits", ",".join(["0@1.0", *attempts]))
    summary = summary_of(c.proc)
    last_key = digit_at(summary, len(summary["digits_sent"]) - 1)
    # the server hangs up after "invalid PIN" + "goodbye" (~2 s), long before --duration
    rec = world.engine.record(c.session)
    assert rec["outcome"] == "hung_up_by_server", rec
    assert rec["reason"] == "3 wrong or missing PINs"
    assert rec["sip"]["disconnected_by"] == "server"
    assert rec["disa_pin_failures"] == 3 and rec["disa_authenticated"] is False
    assert [(i["stage"], i["digits"]) for i in rec["inputs"]] == [("menu", "0")] + [
        ("pin", "*" * len(WRONG_PIN))
    ] * 3
    recording = heard(c)
    call_seconds = len(recording) / RATE
    assert last_key + 1.5 <= call_seconds <= last_key + 4.0, (last_key, call_seconds)
    goodbye = builtin_prompt("en-US", "goodbye")
    corr, _ = aligned_correlation(recording[int(last_key * RATE) :], goodbye)
    assert corr >= 0.9, corr
    assert summary["refer_to"] is None
    assert_no_pin_anywhere(world)
    assert "wrong DISA PIN" in world.engine.proc.stderr_text()  # logged, without the digits


def test_busy_target_runs_the_failure_rule(world: World, procs: Procs) -> None:
    """Rule 7 → voicemail 207 (the 486 target) → busy → "not available" → failure rule 300."""
    c = call(procs, world.engine, "802", "--digits", "7@1.0", record=False)
    summary = summary_of(c.proc)
    busy_invite = wait_invite(world.target486, c.user)
    assert busy_invite["request_user"] == "207"
    refers = [e["refer_to"] for e in c.proc.of("refer")]
    assert refers == [
        f"sip:207@127.0.0.1:{world.port486}",
        f"sip:300@127.0.0.1:{world.port200}",
    ], refers
    rec = assert_transferred(world, c, summary, "300")
    assert [
        (t["destination"], t["origin"], t["sip_code"], t["result"]) for t in rec["transfers"]
    ] == [
        ("207", "menu_rule", 486, "failed"),
        ("300", "failure_rule", 200, "succeeded"),
    ]
    assert 486 in summary["transfer_notify_codes"]
    gap = float(c.proc.of("refer")[1]["at"]) - float(c.proc.of("refer")[0]["at"])
    not_available = len(builtin_prompt("en-US", "not_available")) / RATE
    assert not_available <= gap <= not_available + 1.5, gap  # the notice plays in between


def test_unknown_extension_404_plays_notice_and_returns_to_menu(procs: Procs) -> None:
    target404, port404 = start_target(procs, 404, "target404")
    greeting = make_chirp(procs.tmp / "greeting404.wav", 2.0, 350, 3200)
    config = {
        "server": {"transfer_timeout": 10, "shutdown_grace": 1},
        "ivrs": [{"name": "Menu", "extension_number": "802", "prompt_file": "../greeting404.wav"}],
    }
    engine = start_engine(procs, config, name="engine404", transfer_domain=f"127.0.0.1:{port404}")
    not_exist = builtin_prompt("en-US", "extension_not_exist")
    hangup = 1.75 + 0.5 + len(not_exist) / RATE + 2.0 + 0.5
    c = call(procs, engine, "802", "--digits", keys("555#", 1.0), "--hangup-after", f"{hangup:.2f}")
    summary = summary_of(c.proc)
    invite = wait_invite(target404, c.user)
    assert invite["request_user"] == "555"
    assert summary["refer_to"] == f"sip:555@127.0.0.1:{port404}"
    assert summary["transfer_call_status"] == 404
    # the caller stayed with the receptionist until it hung up itself
    assert summary["disconnect_code"] == 200 and summary["answered"]
    rec = engine.record(c.session)
    assert [(t["destination"], t["sip_code"], t["result"]) for t in rec["transfers"]] == [
        ("555", 404, "failed")
    ]
    assert rec["outcome"] == "hung_up_by_caller" and rec["transferred_to"] is None
    assert rec["sip"]["disconnected_by"] == "caller"
    recording = heard(c)
    start = int(refer_at(summary, c) * RATE)
    corr_n, lag_n = aligned_correlation(recording[start:], not_exist)
    assert corr_n >= 0.9, corr_n
    after = start + lag_n + len(not_exist)
    corr_g, lag_g = aligned_correlation(recording[after:], greeting[: int(1.5 * RATE)])
    assert corr_g >= 0.9 and lag_g / RATE < 0.2, (corr_g, lag_g)
    assert engine.wait_idle()["active_calls"] == 0


# --- 6, 7: calls end cleanly, alone and in numbers -------------------------------------------


def test_caller_hanging_up_mid_greeting_leaves_no_call(world: World, procs: Procs) -> None:
    c = call(procs, world.engine, "801", "--hangup-after", "1.0", record=False)
    summary = summary_of(c.proc)
    assert summary["answered"] and 0.7 <= summary["heard_seconds"] <= 1.2, summary
    rec = world.engine.record(c.session)
    assert rec["outcome"] == "hung_up_by_caller"
    assert rec["reason"] == "caller hung up during greeting"
    assert rec["sip"]["disconnected_by"] == "caller"
    assert world.engine.wait_idle()["active_calls"] == 0


def pjsua_max_calls() -> int:
    """PJSUA_MAX_CALLS of the installed pjsua2: 4 for the PyPI wheel, the tuned build's
    (build/pjsua2) from its marker."""
    import pjsua2

    return int(getattr(pjsua2, "PJSUA_MAX_CALLS", 4))


@pytest.mark.skipif(
    pjsua_max_calls() != 4,
    reason="a tuned pjsua2 build is installed, not the PyPI wheel's 4 call slots; "
    "tests/integration/test_capacity.py covers it",
)
def test_ten_sequential_then_four_concurrent_calls_and_a_fifth_is_refused(
    world: World, procs: Procs
) -> None:
    engine = world.engine
    engine.wait_idle()
    before = engine.status()["calls_total"]
    sequential: list[Call] = []
    for n in range(10):
        args = ("--digits", "2@0.4") if n % 2 == 0 else ("--hangup-after", "0.4")
        c = call(procs, engine, "801", *args, record=False, tag=f"seq{n}")
        summary = summary_of(c.proc)
        assert summary["answered"], (n, summary)
        sequential.append(c)
    concurrent = [
        call(procs, engine, "801", "--digits", "2@4.0", record=False, tag=f"par{n}")
        for n in range(4)
    ]
    engine.wait_active(4)
    assert engine.status()["capacity"] == 4
    # the wheel's 4 call slots are all in use: a 5th INVITE gets 503 (README, Capacity;
    # before commit c255267 it was pjsua's own 486)
    fifth = call(procs, engine, "801", record=False, tag="fifth")
    over = summary_of(fifth.proc)
    assert over["answered"] is False and over["invite_status"] == 503, over
    assert "every call slot busy" in engine.proc.stderr_text()
    summaries = [summary_of(c.proc) for c in concurrent]
    assert all(s["answered"] and s["invite_status"] == 200 for s in summaries), summaries

    for n, c in enumerate(sequential):
        rec = engine.record(c.session)
        assert rec["outcome"] == ("transferred" if n % 2 == 0 else "hung_up_by_caller"), rec
    for c in concurrent:
        rec = engine.record(c.session)
        assert rec["outcome"] == "transferred" and rec["transferred_to"] == "202", rec
        assert wait_invite(world.target200, c.user)["request_user"] == "202"
    status = engine.wait_idle()
    assert status["calls_total"] - before == 14
    sessions = {c.session for c in sequential + concurrent}
    stored = [r["session_id"] for r in engine.stored_records() if r["session_id"] in sessions]
    assert sorted(stored) == sorted(sessions), "one record per call in the store"
    in_api = [r["session_id"] for r in engine.calls() if r["session_id"] in sessions]
    assert sorted(in_api) == sorted(sessions)
    assert engine.get(f"/api/calls/{fifth.session}")[0] == 404  # refused: no record


# --- 8: SIGTERM with calls in progress -------------------------------------------------------


@dataclass
class Drained:
    engine: Engine
    rc: int
    exit_seconds: float
    status_draining: dict[str, Any]
    late: dict[str, Any]
    short: dict[str, Any]
    long: dict[str, Any]
    short_call: Call
    long_call: Call
    records: dict[str, dict[str, Any]]


GRACE = 4


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drained]:
    """An engine with `shutdown_grace: 4` gets SIGTERM with two calls in progress: one hangs up
    by itself 2.5 s into the call (within the grace), one would stay 30 s. A third call
    arrives while draining."""
    tmp = tmp_path_factory.mktemp("engine_drain")
    with procs_in(tmp) as procs:
        make_chirp(tmp / "g.wav", 3.0)
        config = {
            "server": {"shutdown_grace": GRACE},
            "ivrs": [{"name": "Main", "extension_number": "801", "prompt_file": "../g.wav"}],
        }
        engine = start_engine(procs, config, name="engine-drain")
        long = call(procs, engine, "801", "--hangup-after", "30", record=False, tag="long")
        engine.wait_active(1)
        # the short call's 2.5 s start when it is answered, i.e. before SIGTERM is sent
        short = call(procs, engine, "801", "--hangup-after", "2.5", record=False, tag="short")
        engine.wait_active(2)
        engine.proc.signal(signal.SIGTERM)
        sent = time.monotonic()
        # the HTTP API answers while draining; status turns OFFLINE
        status_draining: dict[str, Any] = {}
        while time.monotonic() - sent < 2:
            status_draining = engine.status()
            if status_draining["status"] == "OFFLINE":
                break
            time.sleep(0.02)
        late = call(procs, engine, "801", record=False, tag="late")
        late_summary = summary_of(late.proc)
        short_summary = summary_of(short.proc)
        long_summary = summary_of(long.proc, timeout=GRACE + 10)
        rc = engine.proc.finish(GRACE + 15)
        exit_seconds = time.monotonic() - sent
        records = {r["session_id"]: r for r in engine.stored_records()}
        yield Drained(
            engine,
            rc,
            exit_seconds,
            status_draining,
            late_summary,
            short_summary,
            long_summary,
            short,
            long,
            records,
        )


def test_sigterm_refuses_new_calls_lets_calls_finish_and_exits_0(drained: Drained) -> None:
    assert drained.status_draining["status"] == "OFFLINE", drained.status_draining
    assert drained.late["answered"] is False
    assert drained.late["invite_status"] == 503, drained.late
    # the short call ended by itself during the grace period
    assert drained.short["answered"] and drained.short["disconnect_code"] == 200
    short_rec = drained.records[drained.short_call.session]
    assert short_rec["outcome"] == "hung_up_by_caller"
    assert short_rec["sip"]["disconnected_by"] == "caller"
    # the long one was hung up by the server when the grace ran out
    long_rec = drained.records[drained.long_call.session]
    assert long_rec["sip"]["disconnected_by"] == "server"
    assert drained.rc == 0, drained.engine.proc.stderr_tail()
    assert GRACE - 0.5 <= drained.exit_seconds <= GRACE + 8, drained.exit_seconds
    assert len(drained.records) == 2  # the refused call leaves no record
    log = drained.engine.proc.stderr_text()
    assert re.search(r"rejecting INVITE for 801 .* 503", log), log[-2000:]


def test_call_hung_up_at_the_end_of_the_grace_is_recorded_as_server_hangup(
    drained: Drained,
) -> None:
    long_rec = drained.records[drained.long_call.session]
    assert long_rec["sip"]["disconnected_by"] == "server"
    assert long_rec["outcome"] == "hung_up_by_server", long_rec


# --- regressions of findings (each was a bug) ------------------------------------------------


def test_debug_log_never_shows_pin_digits(procs: Procs) -> None:
    config = {
        "server": {"shutdown_grace": 1},
        "ivrs": [
            {
                "name": "Disa",
                "extension_number": "802",
                "pin": PIN,
                "custom_forward_rules": [rule("0", "DISA")],
            }
        ],
    }
    engine = start_engine(procs, config, name="engine-debug", extra_args=("--log-level", "debug"))
    digits = ",".join(["0@0.5", keys(PIN + "#", 1.0, 0.2)])
    c = call(procs, engine, "802", "--digits", digits, "--hangup-after", "3.2", record=False)
    summary_of(c.proc)
    rec = engine.record(c.session)
    assert rec["disa_authenticated"] is True
    log = engine.proc.stderr_text()
    assert PIN not in log
    assert "onDtmfEvent method=" in log  # the debug lines are there, without the digits


def test_http_port_in_use_is_a_clear_error_without_ready(procs: Procs) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config_path = procs.tmp / "vr.json"
        config_path.write_text('{"ivrs": [{"name": "A", "extension_number": "801"}]}')
        proc = procs.start(
            [
                *engine_command(),
                "serve",
                "--config",
                str(config_path),
                "--data-dir",
                str(procs.tmp / "data"),
                "--sip-port",
                "0",
                "--http-port",
                str(port),
            ],
            name="engine-busy-http",
            env={"VR_API_TOKEN": "x"},
        )
        rc = proc.finish(30)
    stderr = proc.stderr_text()
    assert rc != 0
    assert not any(ln.startswith("vr-engine ready:") for ln in proc.text_lines()), proc.lines
    assert "Traceback" not in stderr, stderr[-1500:]
    assert "error:" in stderr and str(port) in stderr
