"""`kill -9` of a real `vr-engine serve` during calls and API writes, then a restart (issue #8).

One engine on a data directory: a caller fails DISA (which locks DISA for its number and
source: `max_failed_calls: 1` here), two calls are in progress and four clients stream
receptionist writes through the HTTP API when the engine is killed with SIGKILL. A new
engine on the same data directory must then be serving within 2 s of its start (ready line,
HTTP API and a SIP OPTIONS answered), hold every write that got a 201 and the lock-out, and
carry calls again.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.engine_helpers import (
    TOKEN,
    Engine,
    Proc,
    Procs,
    dial,
    keys,
    make_chirp,
    procs_in,
    start_engine,
    start_target,
    summary_of,
)
from tests.sip_corpus import Target, request

pytestmark = pytest.mark.integration

PIN = "48157230"
WRONG_PIN = "90817263"
LOCKED_USER = "6001"
SERVING_WITHIN = 2.0  # seconds from the restart to ready, API and SIP answering


def config(target_port: int) -> dict[str, Any]:
    return {
        "server": {
            "name": "crash",
            "shutdown_grace": 2,
            "disa": {"pin_attempts": 1, "max_failed_calls": 1},
        },
        "ivrs": [
            {
                "name": "Crash",
                "extension_number": "800",
                "prompt_file": "../long.wav",
                "enable_pin": True,
                "pin": PIN,
                "custom_forward_rules": [
                    {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}},
                    {
                        "user_input": "2",
                        "office_hours_forward_rule": {
                            "action": "FORWARD_TO_NUMBER",
                            "number": "202",
                        },
                    },
                ],
            }
        ],
    }


@dataclass
class Writes:
    acknowledged: dict[str, str] = field(default_factory=dict)  # id → extension
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def stream_writes(base: str, worker: int, writes: Writes, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for n in range(100_000):
            if stop.is_set():
                return
            extension = f"7{worker}{n:04d}"
            try:
                response = client.post(
                    "/api/ivrs",
                    json={"name": f"W{extension}", "extension_number": extension, "pin": PIN},
                )
            except httpx.HTTPError as error:
                with writes.lock:
                    writes.errors.append(type(error).__name__)
                return
            if response.status_code == 201:
                with writes.lock:
                    writes.acknowledged[response.json()["id"]] = extension


def sip_options_answered(port: int, timeout: float) -> bool:
    """Whether the engine answers an OPTIONS within `timeout` s (UDP, resent every 100 ms)."""
    rng = random.Random()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.1)
        target = Target("127.0.0.1", port, "127.0.0.1", sock.getsockname()[1])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.sendto(request(rng, target, method="OPTIONS"), ("127.0.0.1", port))
            try:
                if sock.recv(65_000).startswith(b"SIP/2.0 200"):
                    return True
            except TimeoutError:
                continue
    return False


def caller(procs: Procs, engine: Engine, user: str, digits: str, tag: str) -> tuple[Proc, str]:
    session = f"{tag}-{uuid.uuid4().hex[:10]}"
    proc = dial(
        procs,
        engine,
        "800",
        "--digits",
        digits,
        name=tag,
        session=session,
        from_user=user,
        duration=40,
    )
    return proc, session


@dataclass
class Restarted:
    before: Engine
    after: Engine
    writes: Writes
    ready_seconds: float
    api_seconds: float
    sip_seconds: float
    locked_record: dict[str, Any]
    later_record: dict[str, Any]
    killed_calls: int


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    tmp = tmp_path_factory.mktemp("crash")
    make_chirp(tmp / "long.wav", 20.0)
    with procs_in(tmp) as procs:
        _, port = start_target(procs, 200, "target200")
        cfg = config(port)
        domain = f"127.0.0.1:{port}"
        engine = start_engine(procs, cfg, name="engine", transfer_domain=domain)
        # a failed DISA call locks DISA for its caller
        failed, session = caller(
            procs, engine, LOCKED_USER, f"0@1.0,{keys(WRONG_PIN + '#', 2.5, 0.3)}", "fail"
        )
        summary_of(failed, timeout=40)
        assert engine.record(session)["disa_pin_failures"] == 1
        assert "DISA locked for" in engine.proc.stderr_text()
        # two calls in progress, four clients writing
        for n in range(2):
            caller(procs, engine, f"620{n}", "", f"inflight{n}")
        engine.wait_active(2)
        writes, stop = Writes(), threading.Event()
        base = f"http://127.0.0.1:{engine.http_port}"
        workers = [
            threading.Thread(target=stream_writes, args=(base, k, writes, stop)) for k in range(4)
        ]
        for thread in workers:
            thread.start()
        deadline = time.monotonic() + 30
        while len(writes.acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed_calls = int(engine.status()["active_calls"])
        os.kill(engine.proc.popen.pid, signal.SIGKILL)  # mid-stream, mid-call
        engine.proc.popen.wait(10)
        for thread in workers:
            thread.join(15)
        stop.set()

        # the restart: same data directory, same configuration file, same ports
        started = time.monotonic()
        again = start_engine(
            procs,
            cfg,
            name="engine-again",
            transfer_domain=domain,
            data_dir=engine.data_dir,
            sip_port=engine.sip_port,
            http_port=engine.http_port,
        )
        ready_seconds = time.monotonic() - started
        assert sip_options_answered(again.sip_port, 5.0)
        sip_seconds = time.monotonic() - started
        api_seconds = ready_seconds  # start_engine asked /api/status once ready was printed
        print(
            f"restart: ready and API {ready_seconds:.2f} s, SIP OPTIONS {sip_seconds:.2f} s; "
            f"{len(writes.acknowledged)} acknowledged writes, {killed_calls} calls killed"
        )

        locked, locked_session = caller(procs, again, LOCKED_USER, "0@1.0", "locked")
        summary_of(locked, timeout=40)
        later, later_session = caller(procs, again, "6300", "2@1.0", "later")
        summary_of(later, timeout=40)
        yield Restarted(
            engine,
            again,
            writes,
            ready_seconds,
            api_seconds,
            sip_seconds,
            again.record(locked_session),
            again.record(later_session),
            killed_calls,
        )
        again.proc.signal(signal.SIGTERM)
        assert again.proc.finish(20) == 0, again.proc.stderr_tail()


def test_the_engine_was_killed_mid_stream_and_mid_call(restarted: Restarted) -> None:
    assert restarted.before.proc.popen.returncode == -signal.SIGKILL
    assert restarted.killed_calls == 2
    assert len(restarted.writes.acknowledged) >= 60
    assert len(restarted.writes.errors) == 4, "every client saw the engine go away"


def test_the_restarted_engine_serves_within_2_s(restarted: Restarted) -> None:
    assert restarted.ready_seconds <= SERVING_WITHIN, restarted.ready_seconds
    assert restarted.sip_seconds <= SERVING_WITHIN, restarted.sip_seconds


def test_every_acknowledged_write_is_there(restarted: Restarted) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{restarted.after.http_port}"
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for rid, extension in restarted.writes.acknowledged.items():
            response = client.get(f"/api/ivrs/{rid}")
            assert response.status_code == 200, (rid, response.text)
            assert response.json()["extension_number"] == extension
            assert PIN not in response.text


def test_the_lockout_survived_the_crash(restarted: Restarted) -> None:
    record = restarted.locked_record
    assert record["outcome"] != "transferred", record
    assert "DISA is locked" in record["reason"], record


def test_calls_work_after_the_restart(restarted: Restarted) -> None:
    record = restarted.later_record
    assert record["outcome"] == "transferred" and record["transferred_to"] == "202", record


def test_the_store_is_intact(restarted: Restarted) -> None:
    import sqlite3

    path = Path(restarted.after.data_dir) / "vr-engine.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
