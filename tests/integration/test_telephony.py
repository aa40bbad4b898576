"""PjsuaTelephony against real SIP peers: separate processes on 127.0.0.1, ephemeral ports.

The server is `tests/integration/echo_server.py` (PjsuaTelephony + asyncio, one JSON line per
event); callers and transfer targets are `python -m engine.telephony.caller` processes (one
pjsua2 Endpoint per process). Every wait is bounded and every process is killed in `finally`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engine.audio import aligned_correlation
from tests.integration.engine_helpers import Proc, procs_in

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000
PROMPT_SECONDS = 2.5


def pjsua_max_calls() -> int:
    """PJSUA_MAX_CALLS of the installed pjsua2: 4 for the PyPI wheel, the tuned build's
    (build/pjsua2) from its marker."""
    import pjsua2

    return int(getattr(pjsua2, "PJSUA_MAX_CALLS", 4))


WHEEL_SLOTS = pjsua_max_calls()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `python <args>` processes; all are stopped when the test ends."""
    with procs_in(tmp_path) as started:

        def start(*args: str, name: str) -> Proc:
            return started.start([sys.executable, *args], name)

        yield start


def make_prompt(path: Path) -> np.ndarray:
    """A non-periodic test prompt (chirp 300→3000 Hz with a slow envelope), 16-bit 8 kHz."""
    t = np.arange(int(PROMPT_SECONDS * RATE)) / RATE
    phase = 2 * np.pi * (300 * t + (3000 - 300) / (2 * PROMPT_SECONDS) * t**2)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t)
    signal = (0.45 * envelope * np.sin(phase)).astype(np.float32)
    sf.write(str(path), signal, RATE, subtype="PCM_16")
    data, _ = sf.read(str(path), dtype="float32")
    return np.asarray(data, dtype=np.float64)


def start_server(procs: Callable[..., Proc], prompt: Path, *extra: str) -> tuple[Proc, int]:
    server = procs(
        "-m",
        "tests.integration.echo_server",
        "--prompt",
        str(prompt),
        "--debug",
        *extra,
        name="server",
    )
    ready = server.first("ready", timeout=15)
    return server, int(ready["port"])


def start_target(procs: Callable[..., Proc], code: int, name: str) -> tuple[Proc, int]:
    target = procs(
        "-m",
        "engine.telephony.caller",
        "--listen",
        "--answer-with",
        str(code),
        "--duration",
        "60",
        name=name,
    )
    return target, int(target.first("listening", timeout=15)["port"])


def dial(procs: Callable[..., Proc], port: int, *args: str, name: str = "caller") -> Proc:
    return procs(
        "-m",
        "engine.telephony.caller",
        "--target",
        f"sip:800@127.0.0.1:{port}",
        "--duration",
        "12",
        *args,
        name=name,
    )


def summary_of(caller: Proc, timeout: float = 20.0) -> dict[str, Any]:
    caller.finish(timeout)
    found = caller.of("summary")
    assert found, f"{caller.name} printed no summary; {caller.stderr_tail()}"
    return found[-1]


def events_of(server: Proc, call_id: str) -> list[dict[str, Any]]:
    return [e for e in server.snapshot() if e.get("call_id") == call_id]


def wait_counts_empty(server: Proc, timeout: float = 5.0) -> dict[str, Any]:
    def empty(ev: list[dict[str, Any]]) -> bool:
        counts = [e for e in ev if e["event"] == "counts"]
        return bool(counts) and counts[-1]["calls"] == 0 and counts[-1]["players"] == 0

    events = server.wait_for(empty, timeout, "empty tables")
    return [e for e in events if e["event"] == "counts"][-1]


# ---------------------------------------------------------------------------------------------


def test_caller_hears_the_prompt_over_tcp_and_incoming_call_fields(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    prompt_path = tmp_path / "prompt.wav"
    prompt = make_prompt(prompt_path)
    server, port = start_server(procs, prompt_path)
    recording = tmp_path / "heard.wav"
    caller = dial(
        procs,
        port,
        "--transport",
        "tcp",
        "--record",
        str(recording),
        "--hangup-after",
        str(PROMPT_SECONDS + 1.0),
        "--from-user",
        "0301234567",
        "--from-display",
        "Alice Smith",
        "--header",
        "X-Session-ID: sess-42",
    )
    summary = summary_of(caller)
    assert summary["answered"] is True
    assert summary["invite_status"] == 200

    incoming = server.first("IncomingCall")
    assert incoming["request_user"] == "800"
    assert incoming["from_user"] == "0301234567"
    assert incoming["from_display"] == "Alice Smith"
    assert incoming["transport"] == "tcp"
    assert incoming["session_id"] == "sess-42"
    assert incoming["user_agent"] == "vr-engine-test-caller"
    assert incoming["source_host"] == "127.0.0.1" and incoming["source_port"] > 0

    cid = incoming["call_id"]
    server.wait_for(lambda ev: any(e["event"] == "CallDisconnected" for e in ev), 5, "hangup")
    names = [e["event"] for e in events_of(server, cid)]
    assert names == [
        "IncomingCall",
        "CallConfirmed",
        "PlaybackFinished",
        "CallDisconnected",
    ], names
    disc = server.of("CallDisconnected")[0]
    assert disc["by_remote"] is True and disc["sip_code"] == 200

    heard, rate = sf.read(str(recording), dtype="float32")
    assert rate == RATE
    assert heard.ndim == 1
    assert PROMPT_SECONDS - 0.2 <= summary["heard_seconds"] <= PROMPT_SECONDS + 0.3
    corr, _lag = aligned_correlation(np.asarray(heard, dtype=np.float64), prompt)
    assert corr >= 0.9, corr
    assert wait_counts_empty(server)["pjsua_calls"] == 0


@pytest.mark.parametrize(
    ("method", "expected"),
    [("rfc4733", "rfc4733"), ("sip-info", "sip-info"), ("sip-info-dtmf", "sip-info")],
)
def test_dtmf_each_press_reported_exactly_once(
    procs: Callable[..., Proc], tmp_path: Path, method: str, expected: str
) -> None:
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    server, port = start_server(procs, prompt_path)
    # the same digit twice in a row, 250 ms apart (RFC 4733 tone 160 ms), then another
    caller = dial(
        procs,
        port,
        "--digits",
        "1@0.6,1@0.85,2@1.1",
        "--dtmf-method",
        method,
        "--hangup-after",
        "2.0",
    )
    summary = summary_of(caller)
    assert [d["digit"] for d in summary["digits_sent"]] == ["1", "1", "2"]
    server.wait_for(lambda ev: any(e["event"] == "CallDisconnected" for e in ev), 5, "hangup")
    digits = server.of("DtmfDigit")
    assert [(d["digit"], d["method"]) for d in digits] == [
        ("1", expected),
        ("1", expected),
        ("2", expected),
    ], digits
    log = server.stderr_tail(200_000)
    if method == "rfc4733":
        # evidence for the de-dup rule: pjsua indicated each press several times
        assert log.count("onDtmfEvent") > 3 * 2
        assert "flags=1" in log and "flags=3" in log
    elif method == "sip-info":
        assert log.count("onDtmfEvent") == 3 and log.count("onDtmfDigit") == 3
    else:
        assert "INFO application/dtmf" in log


@pytest.mark.parametrize(
    ("digit", "target_user", "expect_final"), [("9", "201", 200), ("8", "202", 486)]
)
def test_blind_transfer_result(
    procs: Callable[..., Proc],
    tmp_path: Path,
    digit: str,
    target_user: str,
    expect_final: int,
) -> None:
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    ok_target, ok_port = start_target(procs, 200, "target200")
    busy_target, busy_port = start_target(procs, 486, "target486")
    server, port = start_server(
        procs,
        prompt_path,
        "--transfer-to",
        f"sip:201@127.0.0.1:{ok_port}",
        "--transfer-to-alt",
        f"sip:202@127.0.0.1:{busy_port}",
    )
    caller = dial(procs, port, "--digits", f"{digit}@0.5", "--hangup-after", "3.0")
    summary = summary_of(caller)
    target = ok_target if expect_final == 200 else busy_target
    invite = target.first("invite", timeout=5)
    assert invite["request_user"] == target_user
    assert summary["refer_to"] is not None and summary["refer_to"].startswith(
        f"sip:{target_user}@127.0.0.1:"
    )

    statuses = server.wait_for(
        lambda ev: any(e["event"] == "TransferStatus" and e["final"] for e in ev), 5, "final"
    )
    final = [e for e in statuses if e["event"] == "TransferStatus" and e["final"]]
    assert len(final) == 1
    assert not server.of("PlaybackFinished"), "stop_playback must not report PlaybackFinished"
    if expect_final == 200:
        assert final[0]["sip_code"] == 200
        assert summary["transfer_call_status"] == 200
        # the echo server hangs the original leg up after the final 200
        disc = server.first("CallDisconnected", timeout=5)
        assert disc["by_remote"] is False
    else:
        assert 400 <= final[0]["sip_code"] < 500
        assert final[0]["sip_code"] == 486
        # a failed transfer leaves the caller connected to the receptionist
        disc = server.first("CallDisconnected", timeout=5)
        assert disc["by_remote"] is True
        assert summary["answered"] and summary["disconnect_code"] == 200


def test_transfer_refer_rejected_reports_final_status(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    server, port = start_server(procs, prompt_path, "--transfer-to", "sip:201@127.0.0.1:9")
    caller = dial(
        procs, port, "--digits", "9@0.5", "--refer-response", "603", "--hangup-after", "1.5"
    )
    summary_of(caller)
    statuses = server.of("TransferStatus")
    assert [(s["sip_code"], s["final"]) for s in statuses] == [(603, True)], statuses


@pytest.mark.skipif(
    WHEEL_SLOTS != 4,
    reason=f"a tuned pjsua2 build ({WHEEL_SLOTS} calls) is installed, not the PyPI wheel; "
    "tests/integration/test_capacity.py covers it",
)
def test_call_limit_of_the_wheel(procs: Callable[..., Proc], tmp_path: Path) -> None:
    """PyPI wheel: 4 pjsua call slots, all carry calls. A 5th concurrent INVITE gets `503` +
    `Retry-After` from the adapter's pjsip module (never pjsua's `486`) and never reaches the
    adapter's callbacks; in-dialog requests (SIP INFO DTMF) still work while every slot is
    busy; once the calls end, a new call is answered."""
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    server, port = start_server(procs, prompt_path)
    assert server.first("ready")["max_calls"] == 4  # every slot is usable
    # c0 sends two SIP INFO digits while all four calls are up (the second one, 5.5 s after its
    # answer, comes after the 5th caller's 503: that caller starts once all four are confirmed)
    dtmf = ["--digits", "5@2.5,6@5.5", "--dtmf-method", "sip-info"]
    callers = [
        dial(procs, port, "--hangup-after", "7.5", *(dtmf if i == 0 else []), name=f"c{i}")
        for i in range(4)
    ]
    server.wait_for(lambda ev: sum(e["event"] == "CallConfirmed" for e in ev) == 4, 15, "4 calls")
    fifth = dial(procs, port, "--log-level", "4", name="c5")
    over = summary_of(fifth)
    assert over["answered"] is False
    assert over["invite_status"] == 503, over
    sip_log = fifth.stderr_tail(1_000_000)
    assert "SIP/2.0 503 Service Unavailable" in sip_log
    assert "Retry-After: 5" in sip_log
    assert "SIP/2.0 486" not in sip_log
    for c in callers:
        summary = summary_of(c, timeout=25.0)
        assert summary["answered"] is True and summary["disconnect_code"] == 200, summary
    counts = wait_counts_empty(server)
    assert counts["rejected_full"] == 1
    assert counts["rejected_by_pjsua"] == 0
    assert len(server.of("IncomingCall")) == 4  # the 5th never reached the adapter

    # the INFO requests were answered and reported while all four slots were busy
    events = server.snapshot()
    names = [e["event"] for e in events]
    first_end = names.index("CallDisconnected")
    digits = [e for e in events[:first_end] if e["event"] == "DtmfDigit"]
    assert [(d["digit"], d["method"]) for d in digits] == [("5", "sip-info"), ("6", "sip-info")]
    at_dtmf = [e for e in events[:first_end] if e["event"] == "counts_at_dtmf"]
    assert [e["pjsua_calls"] for e in at_dtmf] == [4, 4]
    assert at_dtmf[-1]["rejected_full"] == 1  # the second INFO came after the 503

    log = server.stderr_tail(1_000_000)
    warnings = [
        ln
        for ln in log.splitlines()
        if "turned away 1 request(s)" in ln
        and "1 INVITEs with 503 (Retry-After 5 s) for every call slot busy" in ln
    ]
    assert len(warnings) == 1, log
    assert "at most 4 concurrent calls (PJSUA_MAX_CALLS)" in warnings[0]
    assert "make pjsua2" in warnings[0]

    again = summary_of(dial(procs, port, "--hangup-after", "0.5", name="again"))
    assert again["answered"] is True and again["invite_status"] == 200
    assert len(server.of("IncomingCall")) == 5
    server.stop()
    log = server.stderr_path.read_text(errors="replace")
    assert server.popen.returncode == 0, log[-4000:]
    assert "Assertion" not in log and "Segmentation" not in log
    stopped = server.of("stopped")
    assert stopped and stopped[0]["rejected_full"] == 1 and stopped[0]["calls"] == 0


def test_runtime_limit_leaves_a_slot_to_answer_503(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    server, port = start_server(procs, prompt_path, "--enforce-limit", "3")
    callers = [dial(procs, port, "--hangup-after", "3.0", name=f"c{i}") for i in range(3)]
    server.wait_for(lambda ev: sum(e["event"] == "CallConfirmed" for e in ev) == 3, 10, "3 calls")
    for i in (4, 5):  # one after the other: each gets the reserved slot
        over = summary_of(dial(procs, port, name=f"over{i}"))
        assert over["answered"] is False and over["invite_status"] == 503, over
    for c in callers:
        assert summary_of(c)["answered"] is True
    rejected = [e for e in server.of("CallDisconnected") if e["sip_code"] == 503]
    assert len(rejected) == 2 and all(e["by_remote"] is False for e in rejected)
    counts = wait_counts_empty(server)
    assert counts["rejected_by_pjsua"] == 0 and counts["rejected_full"] == 0


def test_hangup_mid_playback_empties_tables(procs: Callable[..., Proc], tmp_path: Path) -> None:
    prompt_path = tmp_path / "prompt.wav"
    make_prompt(prompt_path)
    # play() is issued 0.5 s before answer: the adapter must start it once media is active
    server, port = start_server(
        procs, prompt_path, "--play-on", "incoming", "--answer-delay", "0.5"
    )
    caller = dial(procs, port, "--hangup-after", "1.0", "--log-level", "4")
    summary = summary_of(caller)
    assert summary["answered"] is True
    sip_log = caller.stderr_tail(1_000_000)
    assert "Response msg 100/INVITE" in sip_log
    assert "Response msg 180/INVITE" not in sip_log and "183/INVITE" not in sip_log
    assert 0.7 <= summary["heard_seconds"] <= 1.3, summary
    disc = server.first("CallDisconnected", timeout=5)
    assert disc["by_remote"] is True
    counts = wait_counts_empty(server)
    assert {k: v for k, v in counts.items() if k != "event"} == {
        "calls": 0,
        "players": 0,
        "pjsua_calls": 0,
        "rejected_by_pjsua": 0,
        "rejected_full": 0,
    }
    time.sleep(PROMPT_SECONDS)  # past the prompt's end: no late PlaybackFinished
    assert not server.of("PlaybackFinished")
    server.stop()
    stopped = server.of("stopped")
    assert stopped and stopped[0]["calls"] == 0
    assert server.popen.returncode == 0, server.stderr_tail()


RESTART_SCRIPT = """
import asyncio, socket
from engine.errors import TelephonyStartError
from engine.telephony.pjsua import PjsuaTelephony, SipSettings

async def main():
    loop = asyncio.get_running_loop()
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    tel = PjsuaTelephony(SipSettings(port=busy.getsockname()[1]))
    try:
        tel.start(loop, print)
        print("UNEXPECTED")
    except TelephonyStartError as exc:
        print("START-ERROR", exc)
    tel.stop()
    for _ in range(2):  # a failed start leaves nothing behind; stop/start again works
        tel = PjsuaTelephony(SipSettings(port=0))
        tel.start(loop, print)
        print("STARTED", tel.bound_port, tel.max_calls)
        tel.stop(1.0)

asyncio.run(main())
"""


def test_port_in_use_is_a_clear_error_and_restart_works() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RESTART_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("START-ERROR cannot listen for SIP/UDP on 127.0.0.1:")
    assert "Address already in use" in lines[0]
    started = [ln.split() for ln in lines if ln.startswith("STARTED")]
    expected = str(min(1000, WHEEL_SLOTS))  # SipSettings.max_calls 1000, capped by the build
    assert len(started) == 2 and all(int(p) > 0 and m == expected for _, p, m in started)
