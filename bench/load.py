"""Load benchmark: sipp calls against a real `vr-engine serve`, ramping concurrency.

    python bench/load.py                      # steps 50,100,250,500,1000
    python bench/load.py --steps 50 --plateau 10 --listen 5

Per step N, sipp (Debian `sip-tester`) places calls at a rate that keeps N in progress
(`-l N`) for a plateau of `--plateau` seconds; each call answers, listens to the greeting,
dials extension 201 as RFC 4733 digits, and is transferred by REFER (see `sipp_calls.py`:
the sipp UAC accepts the REFER and reports the transfer done itself; it counts the REFERs, it
does not call the Refer-To target). Meanwhile one probe call (`engine.telephony.caller
--record`) listens to the greeting at the plateau, and the engine's CPU and RSS are sampled
every second with psutil. Everything runs on 127.0.0.1; every process is bounded in time and
stopped at the end.

Results: `<out>/results.json` (machine facts, the build, and per step: calls attempted,
succeeded, failed by SIP code, engine CPU % and RSS at the plateau, INVITE→200 and
last-digit→REFER latency percentiles from sipp's response times, the engine-side input→REFER
latency from its call records, the probe's correlation with the prompt) and `<out>/results.png`
(needs matplotlib: the `bench` extra). `--quick` runs one short step (a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf

from engine.audio import aligned_correlation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sipp_calls import (
    REJECT_CODES,
    build_scenario,
    digit_onsets_ms,
    read_counts,
    read_rtt,
    read_stat_last,
    write_dtmf_pcap,
)

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
TOKEN = "bench-token"
EXTENSION = "700"
DIGITS = "201"  # a direct dial: completes dtmf_interval after the last digit
DTMF_INTERVAL = 1  # seconds (the model's minimum)
HOST = "127.0.0.1"


# --- small helpers ---------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 1)


def make_chirp(path: Path, seconds: float, f0: float = 300.0, f1: float = 3000.0) -> np.ndarray:
    """A non-periodic prompt (linear chirp with a slow envelope), 8 kHz 16-bit."""
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t**2)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t)
    sig = (0.45 * envelope * np.sin(phase)).astype(np.float32)
    sf.write(str(path), sig, RATE, subtype="PCM_16")
    data, _ = sf.read(str(path), dtype="float64")
    return np.asarray(data, dtype=np.float64)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), "?" if unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def machine_facts(python: str) -> dict[str, Any]:
    cpu = cpu_model()
    build = subprocess.run(
        [
            python,
            "-c",
            "import json, pjsua2\n"
            "info = getattr(pjsua2, 'BUILD_INFO', None)\n"
            "print(json.dumps({'version': getattr(pjsua2, '__version__', None),"
            " 'build_info': info}))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10)
    sipp_version = next((ln.strip() for ln in sipp.stdout.splitlines() if "SIPp" in ln), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system()),
        "python": platform.python_version(),
        "sipp": sipp_version,
        "pjsua2": json.loads(build.stdout) if build.returncode == 0 else build.stderr[-500:],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- the engine ------------------------------------------------------------------------------


class Engine:
    """`vr-engine serve` with the benchmark receptionist, on ephemeral ports."""

    def __init__(self, work: Path, python: str, greeting: Path, max_calls: int) -> None:
        self.work = work
        self.data = work / "data"
        config = {
            "server": {
                "name": "bench",
                "sip_transports": ["udp"],
                "max_calls": max_calls,
                "transfer_timeout": 10,
                "shutdown_grace": 2,
                # one source (sipp on 127.0.0.1) places every call: no per-source limit
                "sip_rate_limit": {"invites_per_second": 0},
            },
            "ivrs": [
                {
                    "name": "Bench",
                    "extension_number": EXTENSION,
                    "prompt_file": str(greeting),
                    "dtmf_interval": DTMF_INTERVAL,
                    "enable_pin": False,
                    "timeout_forward_rule": {"timeout": 10, "repeat_times": 1, "action": "HANGUP"},
                    "custom_forward_rules": [
                        {
                            "user_input": "1",
                            "office_hours_forward_rule": {
                                "action": "FORWARD_TO_NUMBER",
                                "number": "201",
                            },
                        }
                    ],
                }
            ],
        }
        cfg = work / "bench.json"
        cfg.write_text(json.dumps(config, indent=2))
        script = Path(python).with_name("vr-engine")
        cmd = [str(script)] if script.exists() else [python, "-m", "engine.cli"]
        cmd += ["serve", "--config", str(cfg), "--data-dir", str(self.data)]
        cmd += ["--sip-port", "0", "--http-port", "0", "--log-level", "warning"]
        self.stderr = (work / "engine.stderr").open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "VR_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or line.startswith("vr-engine ready:"):
                break
        if not line.startswith("vr-engine ready:"):
            self.stop()
            raise RuntimeError(
                f"the engine did not start: {(work / 'engine.stderr').read_text()[-2000:]}"
            )
        self.ready_line = line.strip()
        sip = line.split("SIP ", 1)[1].split(",", 1)[0]
        http = line.split("HTTP http://", 1)[1].split(",", 1)[0]
        self.sip_port = int(sip.rsplit(":", 1)[1])
        self.http = f"http://{http}"
        self.ps = psutil.Process(self.proc.pid)

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.http + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/api/status")
        return result

    def wait_idle(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        active = -1
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                active = int(self.status().get("active_calls", -1))
                if active == 0:
                    return 0
            time.sleep(0.5)
        return active

    def records(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every call record, through the API (`GET /api/calls`, 100 a page)."""
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            page = self.get(f"/api/calls?top=100&skip={len(out)}")
            items = page.get("items") or []
            out.extend(items)
            if len(items) < 100:
                break
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stderr.close()


# --- sampling --------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Engine CPU % (of one core), RSS and active calls, once a second."""

    def __init__(self, engine: Engine, sipp_pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.sipp = psutil.Process(sipp_pid) if sipp_pid else None
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.plateau_n = 0
        # per-thread CPU seconds at the first and the last sample at the plateau
        self.threads_first: dict[int, float] | None = None
        self.threads_last: dict[int, float] | None = None
        self.threads_span = (0.0, 0.0)

    def thread_times(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self.engine.ps.threads()}

    def run(self) -> None:
        ps = self.engine.ps
        ps.cpu_percent(None)
        if self.sipp:
            with contextlib.suppress(psutil.Error):
                self.sipp.cpu_percent(None)
        while not self.stop_event.wait(1.0):
            try:
                cpu = ps.cpu_percent(None)
                rss = ps.memory_info().rss
            except psutil.Error:
                break
            active = -1.0
            with contextlib.suppress(OSError, ValueError):
                active = float(self.engine.status().get("active_calls", -1))
            sipp_cpu = -1.0
            if self.sipp:
                with contextlib.suppress(psutil.Error):
                    sipp_cpu = self.sipp.cpu_percent(None)
            now = round(time.monotonic() - self.t0, 2)
            self.samples.append(
                {"t": now, "cpu": cpu, "rss": rss, "active": active, "sipp_cpu": sipp_cpu}
            )
            if self.plateau_n and active >= 0.95 * self.plateau_n:
                with contextlib.suppress(psutil.Error):
                    times = self.thread_times()
                    if self.threads_first is None:
                        self.threads_first, self.threads_span = times, (now, now)
                    self.threads_last = times
                    self.threads_span = (self.threads_span[0], now)

    def thread_breakdown(self) -> list[dict[str, Any]]:
        """CPU % of one core of each engine thread at the plateau, busiest first (threads
        under 0.5 % left out). Linux names them all after the process; the main thread is
        marked."""
        first, last = self.threads_first, self.threads_last
        seconds = self.threads_span[1] - self.threads_span[0]
        if not first or not last or seconds <= 0:
            return []
        rows = []
        for tid, cpu_s in last.items():
            share = (cpu_s - first.get(tid, 0.0)) / seconds * 100
            if share < 0.5:
                continue
            name = "?"
            with contextlib.suppress(OSError):
                name = Path(f"/proc/{self.engine.proc.pid}/task/{tid}/comm").read_text().strip()
            if tid == self.engine.proc.pid:
                name += " (main thread: asyncio, HTTP API)"
            rows.append({"tid": tid, "name": name, "cpu_percent": round(share, 1)})
        return sorted(rows, key=lambda r: -r["cpu_percent"])


# --- one step --------------------------------------------------------------------------------


def run_step(
    n: int,
    *,
    engine: Engine,
    work: Path,
    args: argparse.Namespace,
    greeting: np.ndarray,
    scenario_path: Path,
    scenario_index: dict[str, int],
) -> dict[str, Any]:
    step_dir = work / f"step-{n}"
    step_dir.mkdir(parents=True, exist_ok=True)
    idle_active = engine.wait_idle(60)
    time.sleep(1.0)
    rss_idle = engine.ps.memory_info().rss
    onsets = digit_onsets_ms(DIGITS)
    call_seconds = args.listen + onsets[-1] / 1000 + DTMF_INTERVAL + 0.2
    rate = max(1.0, round(n / call_seconds * 1.1, 1))  # -l N caps the concurrency at N
    ramp = n / rate
    total = n + math.ceil(rate * args.plateau)
    time_limit = int(ramp + args.plateau + call_seconds + 30)
    sipp_port = free_port()
    media_port = free_port()
    cmd = [
        "sipp",
        f"{HOST}:{engine.sip_port}",
        "-sf",
        str(scenario_path),
        "-s",
        EXTENSION,
        "-i",
        HOST,
        "-mi",
        HOST,
        "-p",
        str(sipp_port),
        "-mp",
        str(media_port),
        "-r",
        str(rate),
        "-l",
        str(n),
        "-m",
        str(total),
        "-timeout",
        f"{time_limit}s",
        "-timeout_error",
        "-max_recv_loops",
        "5000",
        "-nostdin",
        "-trace_stat",
        "-fd",
        "1",
        "-trace_counts",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_err",
        "-trace_screen",
    ]
    (step_dir / "sipp.cmd").write_text(" ".join(cmd) + "\n")
    started = time.monotonic()
    wall_start = datetime.now(UTC)
    sipp = subprocess.Popen(
        cmd,
        cwd=step_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(step_dir / "sipp.stderr").open("wb"),
    )
    sampler = Sampler(engine, sipp.pid)
    sampler.plateau_n = n
    sampler.start()
    probe: subprocess.Popen[str] | None = None
    probe_wav = step_dir / "probe.wav"
    probe_started_at = None
    try:
        deadline = started + time_limit + 30
        while sipp.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
            if probe is None and time.monotonic() - started >= ramp + 1.0:
                probe_started_at = round(time.monotonic() - started, 2)
                probe = subprocess.Popen(
                    [
                        args.probe_python,
                        "-m",
                        "engine.telephony.caller",
                        "--target",
                        f"sip:{EXTENSION}@{HOST}:{engine.sip_port}",
                        "--record",
                        str(probe_wav),
                        "--hangup-after",
                        str(args.probe_seconds),
                        "--duration",
                        str(args.probe_seconds + 15),
                        "--from-user",
                        "probe",
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=(step_dir / "probe.stderr").open("wb"),
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
        if sipp.poll() is None:
            sipp.send_signal(signal.SIGUSR1)  # sipp: stop placing calls, end gracefully
            try:
                sipp.wait(20)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait(5)
    finally:
        sampler.stop_event.set()
        sampler.join(5)
    probe_summary: dict[str, Any] = {}
    if probe is not None:
        try:
            out, _ = probe.communicate(timeout=args.probe_seconds + 30)
        except subprocess.TimeoutExpired:
            probe.kill()
            out, _ = probe.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        with contextlib.suppress(ValueError, IndexError):
            probe_summary = json.loads(lines[-1])
    elapsed = round(time.monotonic() - started, 1)
    left = engine.wait_idle(60)

    # --- sipp's view
    name = scenario_path.stem
    counts_file = next(step_dir.glob(f"{name}_*_counts.csv"), None)
    rtt_file = next(step_dir.glob(f"{name}_*_rtt.csv"), None)
    stat_file = next(step_dir.glob(f"{name}_*_.csv"), None)
    counts = read_counts(counts_file) if counts_file else {}
    rtt = read_rtt(rtt_file) if rtt_file else {}
    stat = read_stat_last(stat_file) if stat_file else {}

    def count(key: str, kind: str) -> int:
        return int(counts.get(scenario_index[key], {}).get(kind, 0))

    rejected = {str(code): count(f"rejected_{code}", "Recv") for code in REJECT_CODES}
    rejected = {k: v for k, v in rejected.items() if v}
    attempted = count("invite", "Sent")
    answered = count("answered", "Recv")
    refers = count("refer", "Recv")
    completed = count("completed", "Sent")
    failed_other = attempted - completed - sum(rejected.values())
    invite_200 = rtt.get(1, [])
    digits_refer_raw = rtt.get(2, [])
    last_digit_ms = onsets[-1]
    digit_to_refer = [v - last_digit_ms for v in digits_refer_raw]
    p99_digit = pct(digit_to_refer, 99)
    over_interval_p99 = None if p99_digit is None else round(p99_digit - DTMF_INTERVAL * 1000, 1)

    # --- the engine's view: its call records of this step
    records = [
        r
        for r in engine.records()
        if r.get("caller_number", "").startswith("bench")
        and r.get("answered_at")
        and datetime.fromisoformat(r["answered_at"]) >= wall_start
    ]
    engine_input_to_refer = []
    for r in records:
        inputs, transfers = r.get("inputs") or [], r.get("transfers") or []
        if inputs and transfers:
            t_in = datetime.fromisoformat(inputs[-1]["at"])
            t_tr = datetime.fromisoformat(transfers[0]["at"])
            engine_input_to_refer.append((t_tr - t_in).total_seconds() * 1000)
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r.get("outcome", "?")] = outcomes.get(r.get("outcome", "?"), 0) + 1

    # --- the plateau: samples while the engine carried ≥ 95 % of N
    plateau = [s for s in sampler.samples if s["active"] >= 0.95 * n]
    cpu_values = [s["cpu"] for s in plateau]
    rss_values = [s["rss"] for s in plateau]
    rss_plateau = float(np.median(rss_values)) if rss_values else None
    active_plateau = float(np.median([s["active"] for s in plateau])) if plateau else None

    # --- the probe
    probe_result: dict[str, Any] = {"started_s": probe_started_at, "summary": probe_summary}
    if probe_wav.exists() and probe_wav.stat().st_size > 1000:
        heard, rate_ = sf.read(str(probe_wav), dtype="float64")
        if rate_ == RATE and len(heard) > RATE:
            heard = np.asarray(heard if heard.ndim == 1 else heard[:, 0], dtype=np.float64)
            span = min(len(greeting), len(heard))
            corr, lag = aligned_correlation(
                heard, greeting[:span], window=RATE // 4
            )  # 250 ms windows
            probe_result |= {
                "correlation": round(corr, 4),
                "prompt_start_ms": round(lag / RATE * 1000, 1),
                "heard_seconds": round(len(heard) / RATE, 2),
                "compared_seconds": round(span / RATE, 2),
            }
    in_plateau = [
        s
        for s in sampler.samples
        if probe_started_at is not None
        and probe_started_at <= s["t"] <= probe_started_at + args.probe_seconds
    ]
    if in_plateau:
        probe_result["engine_active_calls_meanwhile"] = [
            int(min(s["active"] for s in in_plateau)),
            int(max(s["active"] for s in in_plateau)),
        ]

    return {
        "concurrency": n,
        "rate_cps": rate,
        "calls_planned": total,
        "elapsed_s": elapsed,
        "engine_idle_before": idle_active,
        "engine_calls_left_after": left,
        "calls": {
            "attempted": attempted,
            "answered": answered,
            "refer_received": refers,
            "succeeded": completed,
            "failed": attempted - completed,
            "rejected_by_code": rejected,
            "no_refer": count("norefer_bye", "Sent"),
            "no_engine_bye": count("nobye_bye", "Sent"),
            "failed_other": failed_other,
            "sipp_failed_calls": int(stat.get("FailedCall(C)", 0) or 0),
            "sipp_unexpected_messages": int(stat.get("FailedUnexpectedMessage(C)", 0) or 0),
        },
        "engine_records": {"count": len(records), "outcomes": outcomes},
        "plateau": {
            "samples": len(plateau),
            "active_calls_median": active_plateau,
            "cpu_percent_mean": round(float(np.mean(cpu_values)), 1) if cpu_values else None,
            "cpu_percent_p95": pct(cpu_values, 95),
            "cpu_percent_max": round(max(cpu_values), 1) if cpu_values else None,
            "rss_mib": round(rss_plateau / 2**20, 1) if rss_plateau else None,
            "rss_idle_mib": round(rss_idle / 2**20, 1),
            "rss_per_call_kib": (
                round((rss_plateau - rss_idle) / active_plateau / 1024, 1)
                if rss_plateau and active_plateau
                else None
            ),
            "rss_fresh_engine_mib": round(args.rss_fresh / 2**20, 1),
            "rss_per_call_since_start_kib": (
                round((rss_plateau - args.rss_fresh) / active_plateau / 1024, 1)
                if rss_plateau and active_plateau
                else None
            ),
            "threads": sampler.thread_breakdown(),
            "sipp_cpu_percent_mean": (
                round(float(np.mean([s["sipp_cpu"] for s in plateau])), 1) if plateau else None
            ),
        },
        "latency_ms": {
            "invite_to_200": {
                "n": len(invite_200),
                "p50": pct(invite_200, 50),
                "p99": pct(invite_200, 99),
                "max": pct(invite_200, 100),
            },
            "last_digit_to_refer": {
                "n": len(digit_to_refer),
                "p50": pct(digit_to_refer, 50),
                "p99": pct(digit_to_refer, 99),
                "max": pct(digit_to_refer, 100),
                "dtmf_interval_ms": DTMF_INTERVAL * 1000,
                "over_interval_p99": over_interval_p99,
            },
            "engine_input_to_refer": {
                "n": len(engine_input_to_refer),
                "p50": pct(engine_input_to_refer, 50),
                "p99": pct(engine_input_to_refer, 99),
            },
        },
        "probe": probe_result,
        "samples": sampler.samples,
    }


# --- report ----------------------------------------------------------------------------------


def table(steps: list[dict[str, Any]]) -> str:
    head = (
        "| calls | attempted | ok | failed (codes) | CPU % (mean/max) | RSS MiB | KiB/call* "
        "| INVITE→200 p50/p99 ms | digit→REFER p50/p99 ms | probe r |\n"
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for s in steps:
        c, p, lat = s["calls"], s["plateau"], s["latency_ms"]
        codes = ", ".join(f"{k} x{v}" for k, v in c["rejected_by_code"].items())
        other = c["failed"] - sum(c["rejected_by_code"].values())
        failed = f"{c['failed']}" + (
            f" ({codes}{', ' if codes and other else ''}{f'{other} other' if other else ''})"
            if c["failed"]
            else ""
        )
        rows.append(
            f"| {s['concurrency']} | {c['attempted']} | {c['succeeded']} | {failed} "
            f"| {p['cpu_percent_mean']}/{p['cpu_percent_max']} | {p['rss_mib']} "
            f"| {p['rss_per_call_since_start_kib']} "
            f"| {lat['invite_to_200']['p50']}/{lat['invite_to_200']['p99']} "
            f"| {lat['last_digit_to_refer']['p50']}/{lat['last_digit_to_refer']['p99']} "
            f"| {s['probe'].get('correlation')} |"
        )
    note = "\n\\* (RSS at the plateau - RSS of the engine just started) / calls\n"
    return head + "\n".join(rows) + "\n" + note


def plot(steps: list[dict[str, Any]], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    ns = [s["concurrency"] for s in steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    cpu = [s["plateau"]["cpu_percent_mean"] or 0 for s in steps]
    cpu_max = [s["plateau"]["cpu_percent_max"] or 0 for s in steps]
    ax1.plot(ns, cpu, "o-", label="engine CPU % (mean at plateau)")
    ax1.plot(ns, cpu_max, "x--", label="engine CPU % (max)")
    ax1.axhline(100, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("% of one core")
    ax1b = ax1.twinx()
    ax1b.plot(
        ns, [s["plateau"]["rss_mib"] or 0 for s in steps], "s-", color="tab:green", label="RSS MiB"
    )
    ax1b.set_ylabel("RSS MiB")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax1b.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax1.set_title("engine CPU and memory")
    for key, label, style in (
        ("invite_to_200", "INVITE→200", "o-"),
        ("last_digit_to_refer", "last digit→REFER minus dtmf_interval", "s-"),
    ):
        offset = DTMF_INTERVAL * 1000 if key == "last_digit_to_refer" else 0
        p50 = [(s["latency_ms"][key]["p50"] or 0) - offset for s in steps]
        p99 = [(s["latency_ms"][key]["p99"] or 0) - offset for s in steps]
        ax2.plot(ns, p50, style, label=f"{label} p50")
        ax2.plot(ns, p99, style.replace("-", "--"), label=f"{label} p99")
    ax2.axhline(50, color="grey", lw=0.8, ls=":")
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("ms")
    ax2.legend(fontsize=8)
    ax2.set_title("latency")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --- main ------------------------------------------------------------------------------------


RESULTS = ROOT / "bench" / "results"  # the committed figures of full runs
QUICK_RESULTS = Path(tempfile.gettempdir()) / "vr-bench-quick"  # smoke runs: never RESULTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", default="50,100,250,500,1000", help="concurrency steps")
    ap.add_argument(
        "--listen", type=float, default=15.0, help="seconds each call hears the greeting"
    )
    ap.add_argument(
        "--plateau", type=float, default=20.0, help="seconds at each step's concurrency"
    )
    ap.add_argument("--probe-seconds", type=float, default=12.0, help="the probe call's length")
    ap.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: bench/results; with --quick: {QUICK_RESULTS})",
    )
    ap.add_argument(
        "--work",
        type=Path,
        help="where sipp files, recordings and the engine's "
        "data go (default: a new temporary directory, kept)",
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter of the engine (its venv)")
    ap.add_argument("--probe-python", default=None, help="interpreter of the probe caller")
    ap.add_argument("--max-calls", type=int, default=1020, help="the engine's max_calls")
    ap.add_argument(
        "--stop-on-failure", action="store_true", help="stop after a step with failures"
    )
    ap.add_argument("--quick", action="store_true", help="one short step of 20 calls (smoke)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.listen, args.plateau, args.probe_seconds = "20", 3.0, 6.0, 4.0
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    args.probe_python = args.probe_python or args.python
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        print("bench: sipp is missing (Debian: apt-get install sip-tester)", file=sys.stderr)
        return 2
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="vr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: sipp files, recordings and the engine's data in {work}", flush=True)
    facts = machine_facts(args.python)
    greeting_seconds = max(args.listen, args.probe_seconds) + 10
    greeting = make_chirp(work / "greeting.wav", greeting_seconds)
    pcap = work / "digits.pcap"
    write_dtmf_pcap(pcap, DIGITS)
    scenario = build_scenario(
        listen_ms=int(args.listen * 1000),
        pcap=pcap,
        refer_timeout_ms=int((DTMF_INTERVAL + 10) * 1000),
        bye_timeout_ms=15000,
    )
    scenario_path = work / "uac.xml"
    scenario_path.write_text(scenario.xml)
    engine = Engine(work, args.python, work / "greeting.wav", args.max_calls)
    time.sleep(2.0)
    args.rss_fresh = engine.ps.memory_info().rss
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": facts,
        "engine": {"ready": engine.ready_line, "max_calls": args.max_calls},
        "scenario": {
            "extension": EXTENSION,
            "digits": DIGITS,
            "dtmf": "RFC 4733, payload type 96, 160 ms tones, 100 ms gaps",
            "dtmf_interval_s": DTMF_INTERVAL,
            "listen_s": args.listen,
            "plateau_s": args.plateau,
            "greeting_s": greeting_seconds,
            "transfer": "REFER accepted by the sipp UAC (202), NOTIFY 100 then 200 sent by it; "
            "the Refer-To target is not called; the engine then hangs up (BYE)",
        },
        "steps": [],
    }
    print(f"bench: {engine.ready_line}", flush=True)
    try:
        for n in steps:
            print(f"bench: step {n} concurrent calls ...", flush=True)
            step = run_step(
                n,
                engine=engine,
                work=work,
                args=args,
                greeting=greeting,
                scenario_path=scenario_path,
                scenario_index=scenario.index,
            )
            results["steps"].append(step)
            c, p, lat = step["calls"], step["plateau"], step["latency_ms"]
            print(
                f"bench: step {n}: {c['succeeded']}/{c['attempted']} ok, failed {c['failed']} "
                f"{c['rejected_by_code'] or ''}, CPU {p['cpu_percent_mean']} % (max "
                f"{p['cpu_percent_max']}), RSS {p['rss_mib']} MiB "
                f"({p['rss_per_call_since_start_kib']} KiB/call since start), "
                f"INVITE→200 p99 {lat['invite_to_200']['p99']} ms, digit→REFER p99 "
                f"{lat['last_digit_to_refer']['p99']} ms, "
                f"probe r={step['probe'].get('correlation')}",
                flush=True,
            )
            (out / "results.json").write_text(json.dumps(results, indent=1))
            if args.stop_on_failure and c["failed"]:
                print(f"bench: stopping after step {n}: {c['failed']} failed calls", flush=True)
                break
    finally:
        engine.stop()
    results["engine"]["stderr_tail"] = (work / "engine.stderr").read_text(errors="replace")[-3000:]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table(results["steps"]))
    note = plot(
        results["steps"],
        out / "results.png",
        f"vr-engine {facts['pjsua2'].get('version') if isinstance(facts['pjsua2'], dict) else ''} "
        f"— {facts['cpu']}, {facts['cores']} cores — {results['when']}",
    )
    print(table(results["steps"]))
    print(
        f"bench: results in {out / 'results.json'}"
        + (f"; {note}" if note else f", {out / 'results.png'}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
