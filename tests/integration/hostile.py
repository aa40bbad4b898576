"""Hostile SIP against a running engine while a probe call is in progress (issue #8).

`attack()` is the procedure the robustness test asserts on and `bench/sip_hostile.py` prints:
the corpus of `tests.sip_corpus` over UDP (and over TCP when the engine listens on TCP), a
dialog of our own whose re-INVITEs move and change the media, and an INVITE flood from one
source, all while a probe call (our pjsua2 test caller) listens to the greeting and then
presses a digit that must transfer it. Afterwards: the engine's memory and descriptors, and
whether a later call still works. Sources: 127.0.0.2 (corpus), .3 (dialog), .4 (flood), so
that the per-source rate limit of one does not touch another, nor the callers on 127.0.0.1.
"""

from __future__ import annotations

import random
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from engine.audio import aligned_correlation
from tests.integration.engine_helpers import (
    Engine,
    Proc,
    Procs,
    dial,
    read_wav,
    summary_of,
    wait_invite,
)
from tests.sip_corpus import Target, request, sdp
from tests.sip_sender import (
    DialogResult,
    Tally,
    dialog_with_reinvites,
    drain,
    send_tcp,
    send_udp,
    udp_socket,
)

PROBE_EXTENSION = "800"
PROBE_DIGIT = "2"  # → FORWARD_TO_NUMBER 202
FLOOD_SOURCE = "127.0.0.4"


@dataclass
class Usage:
    rss_mb: float
    fds: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        process = psutil.Process(pid)
        return cls(process.memory_info().rss / 2**20, process.num_fds())


@dataclass
class AttackReport:
    udp: Tally
    tcp: Tally | None  # None: the engine does not listen on TCP
    tcp_refused: bool
    dialog: DialogResult
    flood: Tally
    bad_offer_flood: Tally
    scanners: dict[str, Tally]
    probe: dict[str, Any]
    probe_record: dict[str, Any]
    probe_correlation: float
    later: dict[str, Any]
    later_record: dict[str, Any]
    before: Usage
    after: Usage
    peak_rss_mb: float
    seconds: float
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # (t, rss MB, fds)


def flood(
    host: str,
    port: int,
    count: int,
    *,
    source_host: str = FLOOD_SOURCE,
    bad_offer: bool = False,
    seed: int = 7,
) -> Tally:
    """`count` INVITEs for the probe's extension, as fast as the socket takes them, from one
    source (never ACKed: the answered ones time out on the engine's side). `bad_offer`: their
    SDP moves the media to `999.1.1.1` (refused at the SIP stack's door with 488; before that
    door, each cost pjsua two media sockets, and such floods aborted the PyPI wheel's pjlib).
    Each flood needs a `seed` of its own: pjsip keys an INVITE transaction by its Via branch
    alone, so a second flood repeating the first one's branches is absorbed by the transaction
    layer, before any module of ours, as retransmissions of transactions still alive (a
    rejected INVITE that is never ACKed lives 32 s, SIP timer H)."""
    tally = Tally()
    start = time.monotonic()
    rng = random.Random(seed)
    with udp_socket(source_host) as sock:
        target = Target(host, port, source_host, sock.getsockname()[1])
        for _ in range(count):
            body = sdp(rng, source_host)
            if bad_offer:
                body = body.replace(f"c=IN IP4 {source_host}", "c=IN IP4 999.1.1.1")
            data = request(rng, target, user=PROBE_EXTENSION, body=body)
            try:
                sock.sendto(data, (host, port))
                tally.sent += 1
            except BlockingIOError:
                time.sleep(0.001)
            drain(sock, tally)
        # the engine may still be working through a backlog (the tuned build reads a whole
        # flood): collect answers until they stop (up to
        # 10 s for the first, then 1 s without one; at most 30 s)
        end, quiet = time.monotonic() + 30.0, time.monotonic() + 10.0
        while time.monotonic() < min(end, quiet):
            time.sleep(0.05)
            before = sum(tally.answers.values())
            drain(sock, tally)
            if sum(tally.answers.values()) > before:
                quiet = time.monotonic() + 1.0
    tally.by_kind["bad_offer_invite" if bad_offer else "flood_invite"] = tally.sent
    tally.seconds = time.monotonic() - start
    return tally


SCANNER_AGENTS = ("friendly-scanner", "sipvicious 0.3.4", "sipcli/v1.8", "VaxSIPUserAgent/3.1")
NORMAL_AGENT = "Zoiper rv2.10"


def scanner_probe(host: str, port: int, *, source_host: str = "127.0.0.6") -> dict[str, Tally]:
    """OPTIONS, REGISTER and INVITE (for an unknown extension) with each scanner User-Agent
    and with an ordinary one: the answers each agent got."""
    found: dict[str, Tally] = {}
    rng = random.Random(11)
    for agent in (*SCANNER_AGENTS, NORMAL_AGENT):
        tally = found[agent] = Tally()
        with udp_socket(source_host) as sock:
            target = Target(host, port, source_host, sock.getsockname()[1])
            for method in ("OPTIONS", "REGISTER", "INVITE"):
                body = sdp(rng, source_host) if method == "INVITE" else ""
                data = request(rng, target, method=method, user_agent=agent, body=body)
                sock.sendto(data, (host, port))
                tally.sent += 1
            time.sleep(1.0)
            drain(sock, tally)
    return found


def tcp_refused(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False


def probe_call(
    procs: Procs, engine: Engine, digits: list[str], *, tag: str, duration: float = 120.0
) -> tuple[Proc, str, str, Path]:
    """A call to the probe extension, recorded; `digits` are extra caller arguments."""
    session = f"{tag}-{uuid.uuid4().hex[:10]}"
    user = f"55{uuid.uuid4().int % 10**6:06d}"
    path = procs.tmp / f"{session}.wav"
    proc = dial(
        procs,
        engine,
        PROBE_EXTENSION,
        *digits,
        "--record",
        str(path),
        name=tag,
        session=session,
        from_user=user,
        duration=duration,
    )
    return proc, session, user, path


def attack_seconds(count: int, flood_count: int) -> float:
    """How long an attack of this size may take, with room to spare: the probe's longest
    call, and what a transfer target must outlive. (The corpus over TCP, one connection a
    message, goes at ~30 messages a second with the tuned build: 20,000 take ~11 minutes.)"""
    return 120.0 + count / 100 + count / 15 + flood_count / 200


def attack(
    procs: Procs,
    engine: Engine,
    target200: Proc,
    greeting: np.ndarray,
    *,
    count: int,
    flood_count: int,
    seed: int = 1,
) -> AttackReport:
    host, port = "127.0.0.1", engine.sip_port
    pid = engine.proc.popen.pid
    started = time.monotonic()
    timeline: list[tuple[float, float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            usage = Usage.of(pid)
            timeline.append((time.monotonic() - started, usage.rss_mb, usage.fds))
            sampling.wait(0.5)

    before = Usage.of(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # the probe presses its digit when told (SIGUSR1), once the attack is over
        probe_seconds = attack_seconds(count, flood_count)
        probe, session, user, recording = probe_call(
            procs, engine, ["--digits-on-signal", PROBE_DIGIT], tag="probe", duration=probe_seconds
        )
        engine.wait_active(1)
        time.sleep(1.0)  # a second of the greeting before the attack
        scanners = scanner_probe(host, port)  # first: no call slot is held by a flood yet
        listening_tcp = not tcp_refused(host, port)
        udp = send_udp(host, port, count, seed)
        tcp = send_tcp(host, port, count, seed + 1) if listening_tcp else None
        dialog = dialog_with_reinvites(
            host, port, PROBE_EXTENSION, 20, seed + 2, source_host="127.0.0.3"
        )
        flooded = flood(host, port, flood_count, seed=seed + 3)
        bad_offers = flood(
            host, port, flood_count, source_host="127.0.0.5", bad_offer=True, seed=seed + 4
        )
        probe.signal(signal.SIGUSR1)
        summary = summary_of(probe, timeout=probe_seconds)
        probe_record = engine.record(session)
        wait_invite(target200, user)
        heard = read_wav(recording)
        correlation, _ = aligned_correlation(heard, greeting)
        # later: every call the flood left unacknowledged times out (SIP timer H, 32 s)
        engine.wait_idle(timeout=60.0)
        later_proc, later_session, later_user, _ = probe_call(
            procs, engine, ["--digits", f"{PROBE_DIGIT}@1.0"], tag="later"
        )
        later = summary_of(later_proc, timeout=60.0)
        later_record = engine.record(later_session)
        wait_invite(target200, later_user)
    finally:
        sampling.set()
        sampler.join(2.0)
    after = Usage.of(pid)
    return AttackReport(
        udp=udp,
        tcp=tcp,
        tcp_refused=not listening_tcp,
        dialog=dialog,
        flood=flooded,
        bad_offer_flood=bad_offers,
        scanners=scanners,
        probe=summary,
        probe_record=probe_record,
        probe_correlation=correlation,
        later=later,
        later_record=later_record,
        before=before,
        after=after,
        peak_rss_mb=max(rss for _, rss, _ in timeline),
        seconds=time.monotonic() - started,
        timeline=timeline,
    )


def hostile_config(target_port: int) -> dict[str, object]:
    return {
        "server": {"name": "hostile", "shutdown_grace": 2},
        "ivrs": [
            {
                "name": "Probe",
                "extension_number": PROBE_EXTENSION,
                "prompt_file": "../greeting.wav",
                # the probe waits in the menu for as long as the attack lasts
                "timeout_forward_rule": {
                    "timeout": 3600,
                    "repeat_times": 0,
                    "action": "FORWARD_TO_NUMBER",
                    "number": "299",
                },
                "custom_forward_rules": [
                    {
                        "user_input": PROBE_DIGIT,
                        "office_hours_forward_rule": {
                            "action": "FORWARD_TO_NUMBER",
                            "number": "202",
                        },
                    }
                ],
            }
        ],
    }


def summary(r: AttackReport) -> dict[str, object]:
    return {
        "udp": {
            "sent": r.udp.sent,
            "answers": dict(r.udp.methods),
            "seconds": r.udp.seconds,
        },
        "tcp": None
        if r.tcp is None
        else {
            "sent": r.tcp.sent,
            "answers": dict(r.tcp.methods),
            "errors": dict(r.tcp.errors),
            "seconds": r.tcp.seconds,
        },
        "dialog": vars(r.dialog),
        "flood": {
            "sent": r.flood.sent,
            "answers": dict(r.flood.methods),
            "calls_answered": len(r.flood.answered),
            "seconds": r.flood.seconds,
        },
        "bad_offer_flood": {
            "sent": r.bad_offer_flood.sent,
            "answers": dict(r.bad_offer_flood.methods),
        },
        "scanners": {agent: dict(t.methods) for agent, t in r.scanners.items()},
        "probe_correlation": r.probe_correlation,
        "rss_mb": [r.before.rss_mb, r.peak_rss_mb, r.after.rss_mb],
        "fds": [r.before.fds, r.after.fds],
        "seconds": r.seconds,
    }
