"""Call slots held by INVITEs that are never ACKed: how soon other callers get through.

Against a fresh `vr-engine serve --demo` (the pjsua2 of this interpreter's venv; the PyPI
wheel has 4 call slots), on loopback:

- **flood**: 4 valid INVITEs (with SDP) from one source (127.0.0.11) that never ACKs, at once;
  meanwhile a well-behaved probe (127.0.0.12: INVITE, ACK with the To tag, BYE) every
  `--probe-every` seconds. Figures: each probe's answer, the first probe answered, when the
  engine's `active_calls` is 0 again (every silent call freed), how many 200 OK
  retransmissions and BYEs the silent source received.
- **trickle**: one silent INVITE every 8 s from one source (127.0.0.13) for `--trickle` s, a
  probe every 8 s between them (the issue's measurement: 4 of 6 probes refused before).

Prints the figures as JSON (and writes them to `--out` when given).

    .venv/bin/python bench/slot_hold.py
    .venv-tuned/bin/python bench/slot_hold.py
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.engine_helpers import Engine, procs_in, start_engine  # noqa: E402
from tests.sip_corpus import Target, request, sdp  # noqa: E402


@dataclass
class Silent:
    """A source that sends INVITEs and never answers anything; counts what it receives."""

    host: str
    engine_port: int
    sock: socket.socket = field(init=False)
    received: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.sock.settimeout(0.2)
        self.target = Target("127.0.0.1", self.engine_port, self.host, self.sock.getsockname()[1])
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            kind = first.split(" ", 2)[1] if first.startswith("SIP/2.0") else first.split(" ")[0]
            self.received[kind] = self.received.get(kind, 0) + 1

    def invite(self, rng: random.Random) -> None:
        self.sock.sendto(
            request(rng, self.target, "INVITE", user="800", body=sdp(rng, self.host)),
            (self.target.host, self.target.port),
        )

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def probe(engine_port: int, host: str, rng: random.Random) -> int | None:
    """A well-behaved call: INVITE, then for a 200 its ACK (To tag) and a BYE. The final code."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(3)
        t = Target("127.0.0.1", engine_port, host, sock.getsockname()[1])
        call_id = f"probe-{rng.getrandbits(48):x}@bench"
        common: dict[str, Any] = {"user": "800", "call_id": call_id, "from_tag": "p1"}
        sock.sendto(request(rng, t, "INVITE", body=sdp(rng, host), **common), (t.host, t.port))
        code = None
        to_tag = None
        try:
            while code is None or code < 200:
                data = sock.recv(65536).decode("utf-8", "replace")
                if not data.startswith("SIP/2.0 "):
                    continue
                code = int(data.split(" ", 2)[1])
                for line in data.split("\r\n"):
                    if line.lower().startswith(("to:", "t:")) and "tag=" in line:
                        to_tag = line.split("tag=", 1)[1].split(";", 1)[0].strip()
        except TimeoutError:
            return None
        if code == 200 and to_tag:
            sock.sendto(request(rng, t, "ACK", to_tag=to_tag, **common), (t.host, t.port))
            time.sleep(0.2)
            sock.sendto(request(rng, t, "BYE", to_tag=to_tag, cseq=2, **common), (t.host, t.port))
        return code


def active_calls(engine: Engine) -> int:
    return int(engine.status()["active_calls"])


def flood(engine: Engine, every: float, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    silent = Silent("127.0.0.11", engine.sip_port)
    started = time.monotonic()
    for _ in range(4):
        silent.invite(rng)
    probes: list[dict[str, Any]] = []
    freed_at = None
    while time.monotonic() - started < seconds:
        at = time.monotonic() - started
        probes.append({"at": round(at, 1), "code": probe(engine.sip_port, "127.0.0.12", rng)})
        if freed_at is None and at > 3 and active_calls(engine) == 0:
            freed_at = round(time.monotonic() - started, 1)
        time.sleep(max(0.0, every - (time.monotonic() - started - at)))
    while freed_at is None and time.monotonic() - started < seconds + 70:
        if active_calls(engine) == 0:
            freed_at = round(time.monotonic() - started, 1)
        time.sleep(0.5)
    time.sleep(2)
    silent.close()
    answered = [p["at"] for p in probes if p["code"] == 200]
    return {
        "silent_invites": 4,
        "probes": probes,
        "first_probe_answered_at_s": answered[0] if answered else None,
        "probes_refused": sum(1 for p in probes if p["code"] != 200),
        "all_silent_calls_freed_at_s": freed_at,
        "silent_source_received": silent.received,
    }


def trickle(engine: Engine, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    silent = Silent("127.0.0.13", engine.sip_port)
    started = time.monotonic()
    probes: list[dict[str, Any]] = []
    while time.monotonic() - started < seconds:
        silent.invite(rng)
        time.sleep(4)
        at = round(time.monotonic() - started, 1)
        probes.append({"at": at, "code": probe(engine.sip_port, "127.0.0.14", rng)})
        time.sleep(max(0.0, 4 - (time.monotonic() - started - at)))
    silent.close()
    return {
        "silent_invite_every_s": 8,
        "probes": probes,
        "probes_refused": sum(1 for p in probes if p["code"] != 200),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--flood-seconds", type=float, default=40.0)
    parser.add_argument("--trickle", type=float, default=48.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import pjsua2

    build = getattr(pjsua2, "BUILD_INFO", None)
    with (
        tempfile.TemporaryDirectory(prefix="vr-slot-hold-") as tmp_name,
        procs_in(Path(tmp_name)) as procs,
    ):
        engine = start_engine(procs, {}, name="engine", extra_args=("--demo",))
        capacity = engine.status()["capacity"]
        flooded = flood(engine, args.probe_every, args.flood_seconds, args.seed)
        engine.wait_idle(timeout=70)
        trickled = trickle(engine, args.trickle, args.seed + 1)
        alive = engine.proc.popen.poll() is None
    figures = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "pjsua2": "tuned build" if build else "PyPI wheel",
        "capacity": capacity,
        "flood": flooded,
        "trickle": trickled,
        "engine_alive": alive,
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
