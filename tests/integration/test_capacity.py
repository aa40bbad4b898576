"""Capacity smoke test: 50 concurrent sipp calls against `vr-engine serve`, none may fail.

Runs the load benchmark (`bench/load.py`) for one short step: each call answers, hears the
greeting, dials 201 as RFC 4733 digits and is transferred by REFER; a probe call records the
greeting meanwhile. Needs the tuned pjsua2 build (`make pjsua2`; the PyPI wheel carries 4
calls), sipp (`apt-get install sip-tester`) and a raw socket for sipp's RTP replay (root or
CAP_NET_RAW); skipped, saying which, otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = 50


def tuned_max_calls() -> int:
    """PJSUA_MAX_CALLS of the installed tuned build (0: not the tuned build). Reads the
    build's marker file without importing pjsua2 into the test process."""
    spec = importlib.util.find_spec("pjsua2")
    if spec is None or not spec.submodule_search_locations:
        return 0
    for location in spec.submodule_search_locations:
        marker = Path(location) / "_build_info.py"
        if marker.exists():
            found = re.search(r"^PJSUA_MAX_CALLS = (\d+)$", marker.read_text(), re.M)
            return int(found.group(1)) if found else 0
    return 0


def raw_socket_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except OSError:
        return False
    return True


MAX_CALLS = tuned_max_calls()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        MAX_CALLS < CALLS + 2,
        reason="the tuned pjsua2 build is not installed (the PyPI wheel carries 4 calls): "
        "run `make pjsua2` (build/pjsua2/README.md)",
    ),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is missing (sip-tester)"),
    pytest.mark.skipif(
        not raw_socket_allowed(),
        reason="sipp replays the RFC 4733 digits through a raw socket: needs root or CAP_NET_RAW",
    ),
]


@pytest.fixture(scope="module")
def step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("capacity")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--steps",
            str(CALLS),
            "--listen",
            "5",
            "--plateau",
            "6",
            "--probe-seconds",
            "4",
            "--max-calls",
            str(CALLS + 10),
            "--out",
            str(out),
            "--work",
            str(out / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["pjsua2"]["build_info"]["tuned"] is True
    result: dict[str, Any] = results["steps"][0]
    result["_stdout"] = done.stdout
    return result


def test_fifty_concurrent_calls_none_fails(step: dict[str, Any]) -> None:
    calls = step["calls"]
    assert calls["failed"] == 0, (calls, step["_stdout"][-2000:])
    assert calls["attempted"] >= CALLS
    assert calls["succeeded"] == calls["attempted"] == calls["refer_received"], calls
    assert calls["sipp_unexpected_messages"] == 0, calls
    # the engine carried the whole step's concurrency at once (the probe call too)
    assert step["plateau"]["active_calls_median"] >= CALLS * 0.95, step["plateau"]
    assert step["engine_records"]["outcomes"] == {"transferred": calls["attempted"]}
    assert step["engine_calls_left_after"] == 0


def test_latency_and_the_probe_call(step: dict[str, Any]) -> None:
    latency = step["latency_ms"]
    assert latency["invite_to_200"]["n"] == step["calls"]["attempted"]
    assert latency["invite_to_200"]["p99"] < 500, latency
    # REFER after the last digit: dtmf_interval (1 s), plus generous slack for a busy CI machine
    digit = latency["last_digit_to_refer"]
    assert 950 <= digit["p50"] <= 1500, digit
    probe = step["probe"]
    assert probe["summary"].get("answered") is True, probe
    assert probe.get("correlation", 0) >= 0.8, probe
