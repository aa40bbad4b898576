"""Helpers for whole-call tests against a real `vr-engine serve` process.

Everything runs as separate processes on 127.0.0.1 with ephemeral ports: the engine
(`vr-engine serve`), test callers and transfer targets (`python -m engine.telephony.caller`).
Every wait is bounded; every process started through `Procs` is stopped (SIGTERM, then
SIGKILL) when the owning fixture tears down.

Copied (not imported) from `test_telephony.py` and extended: process management with JSON-line
reading, chirp prompt generation and the windowed cross-correlation that tolerates a dropped
or repeated 10-20 ms frame in the receiver's jitter buffer.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000
TOKEN = "engine-calls-test-token"
PROMPTS = ROOT / "prompts"
FRAME = RATE // 100  # 10 ms


# --- processes -------------------------------------------------------------------------------


class Proc:
    """A child process; a reader thread keeps its stdout lines and the JSON objects among them."""

    def __init__(
        self, args: list[str], name: str, tmp: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.stderr_path = tmp / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._new: queue.Queue[None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.strip()
            obj: dict[str, Any] | None = None
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
            with self._lock:
                self.lines.append(line)
                if isinstance(obj, dict):
                    self.events.append(obj)
            self._new.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def text_lines(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def _wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (self.popen.poll() is not None and self._new.empty()):
                if self.popen.poll() is not None:
                    self._reader.join(1.0)
                    found = check()
                    if found:
                        return found
                raise AssertionError(
                    f"{self.name}: timed out ({timeout} s) waiting for {what}; "
                    f"rc={self.popen.poll()} events={self.snapshot()}\n"
                    f"stderr tail:\n{self.stderr_tail()}"
                )
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=min(left, 0.2))

    def wait_for(
        self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            events = self.snapshot()
            return events if pred(events) else None

        result: list[dict[str, Any]] = self._wait(check, timeout, what)
        return result

    def wait_line(self, prefix: str, timeout: float) -> str:
        def check() -> str | None:
            return next((ln for ln in self.text_lines() if ln.startswith(prefix)), None)

        line: str = self._wait(check, timeout, f"a line starting {prefix!r}")
        return line

    def first(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        events = self.wait_for(lambda ev: any(e.get("event") == event for e in ev), timeout, event)
        return next(e for e in events if e.get("event") == event)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if e.get("event") == event]

    def stderr_text(self) -> str:
        with contextlib.suppress(ValueError):
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, n: int = 4000) -> str:
        return self.stderr_text()[-n:]

    def finish(self, timeout: float) -> int:
        """Wait for a self-terminating process; kill it (and fail) if it overruns."""
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not finish within {timeout} s; {self.stderr_tail()}"
            ) from None
        self._reader.join(2.0)
        return rc

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; always reap. Only this process, by its PID."""
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                assert self.popen.stdin is not None
                self.popen.stdin.close()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(2.0)
        with contextlib.suppress(ValueError):
            self._stderr.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


class Procs:
    """Starts processes and stops every one of them in `close()` (fixture teardown)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Proc] = []
        self._names: dict[str, int] = {}

    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}-{n}"

    def start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, self._unique(name), self.tmp, env)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                proc.stop()


@contextlib.contextmanager
def procs_in(tmp: Path) -> Iterator[Procs]:
    procs = Procs(tmp)
    try:
        yield procs
    finally:
        procs.close()


# --- the engine ------------------------------------------------------------------------------


class Engine:
    """A running `vr-engine serve` and its HTTP API."""

    def __init__(self, proc: Proc, sip_port: int, http_port: int, data_dir: Path) -> None:
        self.proc = proc
        self.sip_port = sip_port
        self.http_port = http_port
        self.data_dir = data_dir

    def uri(self, extension: str) -> str:
        return f"sip:{extension}@127.0.0.1:{self.sip_port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def status(self) -> dict[str, Any]:
        code, body = self.get("/api/status")
        assert code == 200, (code, body)
        return dict(body)

    def calls(self) -> list[dict[str, Any]]:
        code, body = self.get("/api/calls?top=100")
        assert code == 200, (code, body)
        return list(body["items"])

    def record(self, session_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The call record of `session_id` (the caller's X-Session-ID), once it is written."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.get(f"/api/calls/{session_id}")
            if code == 200:
                return dict(body)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no call record {session_id} after {timeout} s; "
                    f"engine stderr:\n{self.proc.stderr_tail()}"
                )
            time.sleep(0.1)

    def wait_active(self, calls: int, timeout: float = 15.0) -> None:
        """Until at least `calls` calls are in progress."""
        deadline = time.monotonic() + timeout
        while self.status()["active_calls"] < calls:
            assert time.monotonic() < deadline, f"fewer than {calls} calls active after {timeout} s"
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["active_calls"] == 0:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"calls still active after {timeout} s: {status}")
            time.sleep(0.1)

    def stored_records(self) -> list[dict[str, Any]]:
        """Every call record in the engine's SQLite store, oldest first (read-only; works
        after the engine has exited)."""
        path = self.data_dir / "vr-engine.db"
        if not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT doc FROM call_records ORDER BY seq").fetchall()
        return [json.loads(doc) for (doc,) in rows]


def start_engine(
    procs: Procs,
    config: dict[str, Any],
    *,
    name: str,
    transfer_domain: str | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = 30.0,
    data_dir: Path | None = None,
    sip_port: int = 0,
    http_port: int = 0,
) -> Engine:
    """Write `config` as JSON into a fresh directory, serve it (by default on ephemeral SIP
    and HTTP ports, with a data directory of its own) and wait for `vr-engine ready:`
    (printed once both listen; it names the ports)."""
    base = procs.tmp / name
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / "vr.json"
    config_path.write_text(json.dumps(config, indent=2))
    data_dir = data_dir or base / "data"
    args = [*engine_command(), "serve", "--config", str(config_path)]
    args += ["--data-dir", str(data_dir), "--sip-port", str(sip_port)]
    args += ["--http-port", str(http_port)]
    if transfer_domain:
        args += ["--transfer-domain", transfer_domain]
    proc = procs.start([*args, *extra_args], name=name, env={"VR_API_TOKEN": TOKEN})
    line = proc.wait_line("vr-engine ready:", ready_timeout)
    sip = line.split("SIP ", 1)[1].split(",", 1)[0]  # "udp+tcp 127.0.0.1:PORT"
    http = line.split("HTTP http://", 1)[1].split(",", 1)[0]  # "127.0.0.1:PORT"
    engine = Engine(proc, int(sip.rsplit(":", 1)[1]), int(http.rsplit(":", 1)[1]), data_dir)
    engine.status()  # the API answers as soon as ready is printed
    return engine


def engine_command() -> list[str]:
    """The `vr-engine` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("vr-engine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


def target_command(code: int, duration: float = 600, local_port: int = 0) -> list[str]:
    """A transfer target (caller listen mode) answering every INVITE with `code`."""
    return [
        sys.executable,
        "-m",
        "engine.telephony.caller",
        "--listen",
        "--answer-with",
        str(code),
        "--local-port",
        str(local_port),
        "--duration",
        str(duration),
    ]


def start_target(procs: Procs, code: int, name: str, duration: float = 600) -> tuple[Proc, int]:
    """A transfer target answering every INVITE with `code`, and its SIP port."""
    target = procs.start(target_command(code, duration), name=name)
    return target, int(target.first("listening", timeout=20)["port"])


def dial(
    procs: Procs,
    engine: Engine,
    extension: str,
    *args: str,
    name: str,
    session: str,
    from_user: str,
    duration: float = 20.0,
) -> Proc:
    """A test caller; its X-Session-ID names its call record, its From user its target INVITE."""
    return procs.start(
        [
            sys.executable,
            "-m",
            "engine.telephony.caller",
            "--target",
            engine.uri(extension),
            "--duration",
            str(duration),
            "--from-user",
            from_user,
            "--header",
            f"X-Session-ID: {session}",
            *args,
        ],
        name=name,
    )


def keys(digits: str, start: float, step: float = 0.25) -> str:
    """`--digits` for pressing `digits` one after another from `start` s, `step` s apart."""
    return ",".join(f"{d}@{start + i * step:.2f}" for i, d in enumerate(digits))


def summary_of(caller: Proc, timeout: float = 30.0) -> dict[str, Any]:
    caller.finish(timeout)
    found = caller.of("summary")
    assert found, f"{caller.name} printed no summary; {caller.stderr_tail()}"
    return found[-1]


def invites_from(target: Proc, from_user: str) -> list[dict[str, Any]]:
    return [e for e in target.of("invite") if e.get("from_user") == from_user]


def wait_invite(target: Proc, from_user: str, timeout: float = 10.0) -> dict[str, Any]:
    events = target.wait_for(
        lambda ev: any(e.get("event") == "invite" and e.get("from_user") == from_user for e in ev),
        timeout,
        f"an INVITE from {from_user}",
    )
    return next(e for e in events if e.get("event") == "invite" and e["from_user"] == from_user)


# --- audio -----------------------------------------------------------------------------------


def make_chirp(
    path: Path, seconds: float, f0: float = 300.0, f1: float = 3000.0, rate: int = RATE
) -> np.ndarray:
    """A non-periodic test prompt (linear chirp f0→f1 with a slow envelope), 16-bit WAV.

    Returns the signal as the engine will play it: resampled to 8 kHz (if needed) and read
    back from the file. The engine normalises loudness; correlation ignores scale.
    """
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t)
    signal_ = (0.45 * envelope * np.sin(phase)).astype(np.float32)
    sf.write(str(path), signal_, rate, subtype="PCM_16")
    data, file_rate = sf.read(str(path), dtype="float64")
    if file_rate != RATE:
        import soxr

        data = soxr.resample(data, file_rate, RATE, quality="HQ")
    return np.asarray(data, dtype=np.float64)


def read_wav(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    assert rate == RATE, (path, rate)
    return np.asarray(data[:, 0], dtype=np.float64)


def builtin_prompt(language: str, name: str) -> np.ndarray:
    return read_wav(PROMPTS / language / f"{name}.wav")


def frame_rms(samples: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """RMS of consecutive `frame`-sample frames (default 10 ms)."""
    n = len(samples) // frame
    if n == 0:
        return np.zeros(0)
    frames = samples[: n * frame].reshape(n, frame)
    return np.asarray(np.sqrt(np.mean(frames**2, axis=1)))


def loud_runs(
    samples: np.ndarray, threshold: float = 0.01, min_gap: float = 0.3
) -> list[tuple[float, float]]:
    """(start, end) seconds of the stretches whose 10 ms RMS exceeds `threshold`, joining
    stretches separated by less than `min_gap` seconds (pauses inside speech)."""
    loud = frame_rms(samples) > threshold
    runs: list[tuple[float, float]] = []
    start: int | None = None
    for i, is_loud in enumerate(loud):
        if is_loud and start is None:
            start = i
        elif not is_loud and start is not None:
            runs.append((start / 100, i / 100))
            start = None
    if start is not None:
        runs.append((start / 100, len(loud) / 100))
    joined: list[tuple[float, float]] = []
    for run in runs:
        if joined and run[0] - joined[-1][1] < min_gap:
            joined[-1] = (joined[-1][0], run[1])
        else:
            joined.append(run)
    return joined
