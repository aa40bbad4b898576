"""The demo receptionist called by a third-party SIP user agent: SIPp, not our pjsua2 caller.

`vr-engine serve --demo` (empty configuration file), transfers to a listen-mode target, and
SIPp UAC scenarios from `tests/integration/sipp/`:

- `uac_transfer_rfc4733.xml`: INVITE 800 (PCMU 0 + telephone-event 96) → 100 (optional), 200
  (a 180 would be an unexpected message: the engine answers without ringing) → ACK; 2 s of
  the greeting; `play_dtmf 2` (RFC 4733, payload type 96) → REFER (Refer-To checked) → 202 →
  NOTIFY `SIP/2.0 200 OK` (subscription terminated) → 200 → BYE from the engine → 200. No
  echo of the engine's RTP here (the scenario says why);
- `uac_transfer_sip_info.xml`: the same with the digit sent as INFO `application/dtmf-relay`,
  and 2 s of greeting RTP counted by SIPp's `-rtp_echo` (dumped by a SIGUSR2 the scenario sends
  itself);
- `uac_unknown_extension.xml`: INVITE 999 → 404 → ACK (no retransmitted 404).

Each call's record (fetched by the X-Session-ID the scenario sends) must say the call was
transferred to 202 after one digit of the expected DTMF method.

SIPp's `play_dtmf` sends through a raw socket: it needs root or CAP_NET_RAW (CI runs as root);
without it the RFC 4733 test is skipped, saying so.
"""

from __future__ import annotations

import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine_helpers import (
    Engine,
    Proc,
    Procs,
    procs_in,
    start_engine,
    start_target,
)

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "sipp"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        SIPP is None,
        reason="sipp is not on PATH (apt-get install sip-tester; .ci/run installs it)",
    ),
]

GREETING_RTP_MIN = 50  # packets within the first 2 s of the call (20 ms each: 100 expected)
RAW_SOCKET_ERROR = "Can't create raw IPv4 socket"


# --- ports -----------------------------------------------------------------------------------


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_media_port() -> int:
    """An even port P with P..P+3 free: SIPp's -rtp_echo binds P (audio) and P+2 (video)."""
    for _ in range(200):
        port = free_udp_port() & ~1
        if port < 60000 and all(_udp_free(port + i) for i in range(4)):
            return port
    raise AssertionError("no free UDP port pair for SIPp's media")


# --- SIPp ------------------------------------------------------------------------------------


@dataclass
class SippRun:
    rc: int
    proc: Proc
    files: dict[str, Path]

    def text(self, name: str) -> str:
        path = self.files[name]
        return path.read_text(errors="replace") if path.exists() else ""

    def messages(self) -> list[tuple[str, str]]:
        """(direction "sent"/"received", message text) of each SIP message SIPp traced."""
        found: list[tuple[str, str]] = []
        for block in re.split(r"^-{20,} .*$", self.text("messages"), flags=re.M):
            head = re.match(r"\s*UDP message (sent|received)[^\n]*\n\s*\n(.*)", block, re.S)
            if head:
                found.append((head.group(1), head.group(2).strip()))
        return found

    def received(self) -> list[str]:
        return [text for direction, text in self.messages() if direction == "received"]

    def echoed_rtp_packets(self) -> int:
        """The largest "Total echo RTP pckts 1st stream" count of the screen dumps (-1: none)."""
        counts = re.findall(r"(\d+) Total echo RTP pckts 1st stream", self.text("screen"))
        return max((int(c) for c in counts), default=-1)

    def report(self) -> str:
        return (
            f"sipp rc={self.rc}\nstderr:\n{self.proc.stderr_tail()}\n"
            f"errors:\n{self.text('errors')[-3000:]}\nmessages:\n{self.text('messages')[-6000:]}"
        )


def run_sipp(
    procs: Procs,
    engine: Engine,
    scenario: str,
    *,
    service: str,
    session: str,
    caller: str,
    rtp_echo: bool = True,
    timeout: float = 30.0,
) -> SippRun:
    """One call of `scenario` against the engine; SIPp always ends (-m 1, -timeout)."""
    assert SIPP is not None
    base = procs.tmp / session
    base.mkdir()
    files = {name: base / f"{name}.log" for name in ("screen", "errors", "messages", "logs")}
    args = [
        SIPP,
        f"127.0.0.1:{engine.sip_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-s",
        service,
        "-key",
        "session",
        session,
        "-key",
        "caller",
        caller,
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_media_port()),
        "-cp",
        str(free_udp_port()),
        "-m",
        "1",
        "-l",
        "1",
        "-recv_timeout",
        "10000",
        "-timeout",
        "20s",
        "-timeout_error",
        "-nostdin",
        "-trace_screen",
        "-screen_file",
        str(files["screen"]),
        "-trace_err",
        "-error_file",
        str(files["errors"]),
        "-trace_msg",
        "-message_file",
        str(files["messages"]),
        "-trace_logs",
        "-log_file",
        str(files["logs"]),
    ]
    if rtp_echo:
        args.append("-rtp_echo")
    proc = procs.start(args, name=f"sipp-{session}")
    rc = proc.finish(timeout)
    return SippRun(rc, proc, files)


# --- the world -------------------------------------------------------------------------------


class World:
    def __init__(self, procs: Procs) -> None:
        self.procs = procs
        self.target, self.target_port = start_target(procs, 200, "target")
        self.engine: Engine = start_engine(
            procs,
            {},
            name="engine-sipp",
            transfer_domain=f"127.0.0.1:{self.target_port}",
            # pjsip's own trace (level 5: RTP and DTMF handling) for the failure reports
            extra_args=("--demo", "--log-level", "debug", "--pjsip-log-level", "5"),
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with procs_in(tmp_path_factory.mktemp("sipp")) as procs:
        yield World(procs)


def new_session(kind: str) -> str:
    return f"sipp-{kind}-{uuid.uuid4().hex[:10]}"


def engine_trace(world: World, session: str) -> str:
    """The engine's log lines about media, key presses and the session (pjsip level 5)."""
    wanted = re.compile(r"DTMF|Dtmf|RTP status|Bad RTP|SSRC|session |" + re.escape(session))
    lines = [line for line in world.engine.proc.stderr_text().splitlines() if wanted.search(line)]
    return "\nengine:\n" + "\n".join(lines[-80:])


def check_transfer_call(
    world: World,
    run: SippRun,
    session: str,
    caller: str,
    dtmf_methods: dict[str, int],
    *,
    greeting_rtp: bool = True,
) -> dict[str, Any]:
    # every scenario step as expected, the call successful
    assert run.rc == 0, run.report() + engine_trace(world, session)

    received = run.received()
    starts = [text.splitlines()[0] for text in received]
    assert not [s for s in starts if s.startswith(("SIP/2.0 180", "SIP/2.0 183"))], starts
    ok = next(t for t in received if t.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in t)
    assert "a=rtpmap:96 telephone-event/8000" in ok, ok  # our PT 96 accepted
    assert "a=rtpmap:0 PCMU/8000" in ok, ok
    assert [s.split()[0] for s in starts if not s.startswith("SIP/2.0")] == ["REFER", "BYE"]

    expected_refer = f"sip:202@127.0.0.1:{world.target_port}"
    assert f"refer_to={expected_refer}" in run.text("logs").split(), run.text("logs")
    [refer] = [t for t in received if t.startswith("REFER ")]
    assert re.search(rf"^Refer-To:\s*<?{re.escape(expected_refer)}>?\s*$", refer, re.M), refer

    if greeting_rtp:
        packets = run.echoed_rtp_packets()
        assert packets >= GREETING_RTP_MIN, (packets, run.text("screen"))

    record = world.engine.record(session)
    assert record["session_id"] == session
    assert record["caller_number"] == caller
    assert record["answered_at"] is not None, record
    assert record["outcome"] == "transferred", record
    assert record["transferred_to"] == "202", record
    assert record["transfer_sip_code"] == 200, record
    assert record["transfer_assumed"] is False, record
    assert record["dtmf_methods"] == dtmf_methods, record
    assert record["menu_rules"] == ["2:office_hours"], record
    assert [i["digits"] for i in record["inputs"]] == ["2"], record
    assert record["sip"]["disconnected_by"] == "server", record
    return record


# --- tests -----------------------------------------------------------------------------------


def test_sipp_rfc4733_digit_2_is_transferred_to_202(world: World) -> None:
    session = new_session("rfc4733")
    run = run_sipp(
        world.procs,
        world.engine,
        "uac_transfer_rfc4733.xml",
        service="800",
        session=session,
        caller="4801",
        rtp_echo=False,
    )
    if run.rc != 0 and RAW_SOCKET_ERROR in run.proc.stderr_text():
        pytest.skip(
            "sipp's play_dtmf needs a raw socket: run as root or grant CAP_NET_RAW "
            "(setcap cap_net_raw+ep $(command -v sipp))"
        )
    check_transfer_call(world, run, session, "4801", {"rfc4733": 1}, greeting_rtp=False)


def test_sipp_sip_info_digit_2_is_transferred_to_202(world: World) -> None:
    session = new_session("info")
    run = run_sipp(
        world.procs,
        world.engine,
        "uac_transfer_sip_info.xml",
        service="800",
        session=session,
        caller="4802",
    )
    record = check_transfer_call(world, run, session, "4802", {"sip-info": 1})
    info_ok = [t for t in run.received() if t.startswith("SIP/2.0 200") and "CSeq: 2 INFO" in t]
    assert len(info_ok) == 1, run.report()
    assert record["digits_ignored"] == 0, record


def test_sipp_unknown_extension_gets_404(world: World) -> None:
    session = new_session("404")
    run = run_sipp(
        world.procs,
        world.engine,
        "uac_unknown_extension.xml",
        service="999",
        session=session,
        caller="4803",
        rtp_echo=False,
    )
    assert run.rc == 0, run.report()
    finals = [t.splitlines()[0] for t in run.received() if re.match(r"SIP/2\.0 [2-6]", t)]
    # exactly one 404: the ACK matched the INVITE transaction (no retransmission in 1 s)
    assert finals == ["SIP/2.0 404 Not Found"], run.report()


def test_the_pjsip_trace_is_announced_as_unsafe(world: World) -> None:
    # the engine here runs with --pjsip-log-level 5: whole SIP messages and key presses
    log = world.engine.proc.stderr_text()
    assert "pjsip log level 5 writes whole SIP messages and key presses (PINs included)" in log
