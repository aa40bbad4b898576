"""Admission and the ACK timer in the runtime, end to end: a real `vr-engine serve` with `server.max_calls: 1`
(below the SIP stack's slots, so the door lets the second INVITE through and the runtime
refuses it), real callers. The refused caller gets `503` with `Retry-After: 5` and the
runtime's reason phrase; the engine logs the refusal once, naming the limit and how to raise
it; an unknown extension gets 404; the call in progress is not disturbed. Last (it holds the
only slot meanwhile): a delayed-offer INVITE (no SDP) whose ACK carries no SDP answer, which
pjsua confirms without media and the call flow waited on for ever, is hung up with a BYE at
once and gets its record."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.engine_helpers import (
    Engine,
    Procs,
    dial,
    procs_in,
    start_engine,
    summary_of,
)
from tests.sip_corpus import Target, request, sdp

pytestmark = pytest.mark.integration

CONFIG = {
    "server": {"name": "vr-admission", "max_calls": 1, "shutdown_grace": 2},
    "ivrs": [{"name": "Main", "extension_number": "800"}],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Procs, Engine]]:
    with procs_in(tmp_path_factory.mktemp("admission")) as procs:
        engine = start_engine(procs, CONFIG, name="engine-admission")
        yield procs, engine


def test_over_max_calls_the_runtime_answers_503_with_retry_after(
    world: tuple[Procs, Engine],
) -> None:
    procs, engine = world
    assert engine.status()["capacity"] == 1
    first = dial(
        procs,
        engine,
        "800",
        "--hangup-after",
        "6",
        name="first",
        session="adm-first",
        from_user="1001",
    )
    engine.wait_active(1)
    second = dial(
        procs,
        engine,
        "800",
        "--log-level",
        "4",
        name="second",
        session="adm-second",
        from_user="1002",
    )
    over = summary_of(second)
    assert over["answered"] is False and over["invite_status"] == 503, over
    sip_log = second.stderr_tail(1_000_000)
    assert "SIP/2.0 503 Service Unavailable (call limit reached)" in sip_log
    assert "Retry-After: 5" in sip_log
    held = summary_of(first)
    assert held["answered"] is True and held["disconnect_code"] == 200, held
    log = engine.proc.stderr_text()
    lines = [ln for ln in log.splitlines() if "rejecting INVITE for 800" in ln]
    assert len(lines) == 1, lines
    assert "with 503 Service Unavailable (call limit reached)" in lines[0]
    assert "at most 1 concurrent calls" in lines[0] and "make pjsua2" in lines[0]
    assert engine.get("/api/calls/adm-second")[0] == 404  # refused: no record


def test_an_unknown_extension_gets_404_and_one_log_line(world: tuple[Procs, Engine]) -> None:
    procs, engine = world
    engine.wait_idle()
    unknown = dial(procs, engine, "999", name="unknown", session="adm-unknown", from_user="1003")
    summary = summary_of(unknown)
    assert summary["answered"] is False and summary["invite_status"] == 404, summary
    lines = [ln for ln in engine.proc.stderr_text().splitlines() if "for 999" in ln]
    assert len(lines) == 1 and "with 404 Not Found" in lines[0], lines


def test_a_delayed_offer_without_an_answer_is_ended_at_once(world: tuple[Procs, Engine]) -> None:
    """Issue 13, item 1: four such INVITEs held the four slots of the wheel for ever."""
    _, engine = world
    engine.wait_idle()
    rng = random.Random(3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.9", 0))
        target = Target("127.0.0.1", engine.sip_port, "127.0.0.9", sock.getsockname()[1])
        common = {"user": "800", "call_id": "delayed-offer@probe", "from_tag": "do1"}
        extra = ["X-Session-ID: adm-delayed"]
        sock.sendto(
            request(rng, target, "INVITE", extra=extra, **common), (target.host, target.port)
        )
        sock.settimeout(5)
        final = b""
        while not final.startswith(b"SIP/2.0 200"):
            final = sock.recv(65536)
        to = next(ln for ln in final.decode().split("\r\n") if ln.lower().startswith("to:"))
        ack = request(rng, target, "ACK", **common).decode()
        ack = "\r\n".join(to if ln.startswith("To:") else ln for ln in ack.split("\r\n"))
        sock.sendto(ack.encode(), (target.host, target.port))  # no SDP answer to the 200's offer
        started = time.monotonic()
        sock.settimeout(45)
        bye = b""
        while not bye.startswith(b"BYE "):
            bye = sock.recv(65536)
        waited = time.monotonic() - started
        head = bye.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        keep = ("via", "from", "to", "call-id", "cseq", "v:", "f:", "t:", "i:")
        echoed = [ln for ln in head[1:] if ln.lower().startswith(keep)]
        ok = "\r\n".join(["SIP/2.0 200 OK", *echoed, "Content-Length: 0", "", ""])
        sock.sendto(ok.encode(), (target.host, target.port))
    assert waited < 10, waited
    record = engine.record("adm-delayed", timeout=15)
    assert record["outcome"] == "hung_up_by_server"
    assert record["reason"] == "the ACK carried no SDP answer: no audio to play", record
    engine.wait_idle()


def test_an_ack_without_a_to_tag_ends_the_call_at_once(world: tuple[Procs, Engine]) -> None:
    """Issue 13, item 1: PROTOS c07-sip's teardown ACKs carry no To tag, so they match no
        dialog and the answered call waited for timer H (32 s) in its slot. Such an ACK with the
        call's Call-ID, from the call's source, ends it now (pjsip sends the BYE only once timer H
    has passed: RFC 3261 lets a UAS send none before the ACK). One from elsewhere does not.
    Before the door consumed such ACKs, the first one aborted the engine: pjsua's merged-request
    check answered it, and pjsip asserts that no ACK is answered."""
    _, engine = world
    engine.wait_idle()
    rng = random.Random(5)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
    ):
        sock.bind(("127.0.0.9", 0))
        other.bind(("127.0.0.10", 0))
        target = Target("127.0.0.1", engine.sip_port, "127.0.0.9", sock.getsockname()[1])
        elsewhere = Target("127.0.0.1", engine.sip_port, "127.0.0.10", other.getsockname()[1])
        common = {"user": "800", "call_id": "tagless-ack@probe", "from_tag": "ta1"}
        invite = request(
            rng,
            target,
            "INVITE",
            body=sdp(rng, "127.0.0.9"),
            extra=["X-Session-ID: adm-ack"],
            **common,
        )
        sock.sendto(invite, (target.host, target.port))
        sock.settimeout(5)
        final = b""
        while not final.startswith(b"SIP/2.0 200"):
            final = sock.recv(65536)
        # from another source first: ignored, the call stays
        other.sendto(request(rng, elsewhere, "ACK", **common), (target.host, target.port))
        time.sleep(1.0)
        assert engine.status()["active_calls"] == 1
        sock.sendto(request(rng, target, "ACK", **common), (target.host, target.port))
        started = time.monotonic()
        engine.wait_idle(timeout=5)  # the slot is free now, not at timer H
        waited = time.monotonic() - started
    assert waited < 5, waited
    record = engine.record("adm-ack", timeout=15)
    assert record["outcome"] == "hung_up_by_server"
    assert "no To tag" in record["reason"], record
    engine.wait_idle()


def test_a_source_probing_extensions_gets_404_for_every_one(world: tuple[Procs, Engine]) -> None:
    """Issue 13, item 2: a scanner that mimics a phone (no fingerprint) could tell existing
    from missing extensions at the rate limit's pace. After 10 missing ones (the default
    `unknown_per_minute`) the 11th blocks its source: 800, which exists, then gets the very
    same 404 as the rest; other callers are not affected."""
    procs, engine = world
    engine.wait_idle()
    rng = random.Random(8)
    answers: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.20", 0))
        target = Target("127.0.0.1", engine.sip_port, "127.0.0.20", sock.getsockname()[1])
        sock.settimeout(5)
        for number in [*range(780, 800), 800, 801]:
            time.sleep(0.15)  # below the wheel's pace of new calls (10 a second)
            call_id = f"probe-{number}@scan"
            sock.sendto(
                request(
                    rng,
                    target,
                    "INVITE",
                    user=str(number),
                    call_id=call_id,
                    body=sdp(rng, "127.0.0.20"),
                    user_agent="Yealink SIP-T46S 66.86.0.15",
                    from_user="201",
                ),
                (target.host, target.port),
            )
            while str(number) not in answers:
                answer = sock.recv(65536).decode()
                first = answer.split("\r\n", 1)[0]
                if call_id in answer and not first.startswith("SIP/2.0 1"):
                    answers[str(number)] = first
                    ack = request(rng, target, "ACK", user=str(number), call_id=call_id)
                    sock.sendto(ack, (target.host, target.port))  # for a final non-2xx
    assert set(answers.values()) == {"SIP/2.0 404 Not Found"}, answers
    lines = [ln for ln in engine.proc.stderr_text().splitlines() if "127.0.0.20" in ln]
    blocked = [ln for ln in lines if "WARNING" in ln and "unknown_per_minute" in ln]
    assert len(blocked) == 1 and "for 790 " in blocked[0], lines
    # another caller reaches 800
    caller = dial(
        procs,
        engine,
        "800",
        "--hangup-after",
        "1",
        name="after-probe",
        session="adm-ok",
        from_user="1011",
    )
    assert summary_of(caller)["invite_status"] == 200


@pytest.fixture(scope="module")
def wheel_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Procs, Engine]]:
    config = {"server": {"name": "vr-reserve", "shutdown_grace": 1}, "ivrs": CONFIG["ivrs"]}
    with procs_in(tmp_path_factory.mktemp("reserve")) as procs:
        engine = start_engine(procs, config, name="engine-reserve")
        yield procs, engine


def test_a_silent_source_cannot_take_the_last_call_slot(
    wheel_engine: tuple[Procs, Engine],
) -> None:
    """Issue 13, item 1: four INVITEs from one source that never ACKs took all 4 slots of the
    PyPI wheel, and every other caller got 503 for 65 s. Now the last free slot is kept for
    sources whose calls were ACKed: the silent source's 4th INVITE, sent as soon as the 3rd
    is answered, gets 503; a caller gets the slot. At timer H the silent calls end at once,
    without a BYE waiting 32 s more for the silent peer: then every slot takes a call."""
    procs, engine = wheel_engine
    capacity = engine.status()["capacity"]
    rng = random.Random(21)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.12", 0))
        target = Target("127.0.0.1", engine.sip_port, "127.0.0.12", sock.getsockname()[1])
        sock.settimeout(5)

        def invite(n: int) -> int:
            body = sdp(rng, "127.0.0.12")
            data = request(rng, target, "INVITE", user="800", call_id=f"silent-{n}@x", body=body)
            sock.sendto(data, (target.host, target.port))
            while True:  # the earlier calls' 200s are retransmitted meanwhile: match Call-ID
                answer = sock.recv(65536)
                status = answer.split(b" ", 2)[1]
                if f"silent-{n}@x".encode() in answer and not status.startswith(b"1"):
                    return int(status)

        answered = [invite(n) for n in range(capacity - 1)]  # never ACKed
        assert answered == [200] * (capacity - 1)
        assert invite(capacity) == 503  # a burst: three calls of this source in flight
        caller = dial(
            procs,
            engine,
            "800",
            "--hangup-after",
            "1",
            name="after-silent",
            session="adm-after-silent",
            from_user="1009",
        )
        summary = summary_of(caller)
        assert summary["answered"] is True and summary["invite_status"] == 200, summary
    log = engine.proc.stderr_text()
    assert "1 INVITEs with 503 for the last free call slots, kept for sources" in log, log[-3000:]
    engine.wait_idle(timeout=40)  # timer H: 32 s after the answers
    callers = [
        dial(
            procs,
            engine,
            "800",
            "--hangup-after",
            "2",
            name=f"after-h-{n}",
            session=f"adm-after-h-{n}",
            from_user=f"102{n}",
        )
        for n in range(capacity)
    ]
    codes = [summary_of(caller)["invite_status"] for caller in callers]
    assert codes == [200] * capacity, codes  # every call slot of the SIP stack is free again
    record = engine.record("adm-after-silent")
    assert record["outcome"] == "hung_up_by_caller"


def test_a_pbx_that_acked_a_call_may_take_every_slot_in_a_burst(
    wheel_engine: tuple[Procs, Engine],
) -> None:
    """The reserve must not refuse a PBX: four callers reach it at once and it starts four
    calls within an ACK's round trip. (The CI run of session 5 refused the wheel's 4th
    concurrent call this way.) A source that ACKed a call before is not a silent flood: its
    burst takes every slot, the 4th INVITE sent while the other three wait for their ACKs."""
    _, engine = wheel_engine
    engine.wait_idle(timeout=40)
    capacity = engine.status()["capacity"]
    rng = random.Random(34)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.14", 0))
        target = Target("127.0.0.1", engine.sip_port, "127.0.0.14", sock.getsockname()[1])
        sock.settimeout(5)

        def send(method: str, n: int, to_tag: str | None = None, cseq: int = 1) -> None:
            body = sdp(rng, "127.0.0.14") if method == "INVITE" else ""
            common = {"user": "800", "call_id": f"pbx-{n}@x", "from_tag": f"pbx{n}"}
            data = request(rng, target, method, body=body, to_tag=to_tag, cseq=cseq, **common)
            sock.sendto(data, (target.host, target.port))

        def final(n: int, method: str = "INVITE") -> tuple[int, str]:
            """The final answer to call n's `method`, and its To tag."""
            while True:  # retransmitted 200s of the other calls arrive meanwhile
                answer = sock.recv(65536).decode()
                head = answer.split("\r\n\r\n", 1)[0].split("\r\n")
                status = head[0].split(" ", 2)[1]
                cseq = next(ln for ln in head if ln.lower().startswith(("cseq:", "cseq ")))
                if f"pbx-{n}@x" in answer and method in cseq and not status.startswith("1"):
                    to = next(ln for ln in head if ln.lower().startswith(("to:", "t:")))
                    return int(status), to.rsplit("tag=", 1)[-1].split(";")[0]

        def hang_up(n: int, to_tag: str) -> None:
            send("BYE", n, to_tag, cseq=2)
            assert final(n, "BYE")[0] == 200

        send("INVITE", 0)  # the PBX's first call: answered and ACKed, then hung up
        status, tag = final(0)
        assert status == 200
        send("ACK", 0, tag)
        time.sleep(0.5)
        hang_up(0, tag)
        engine.wait_idle()
        tags = []
        for n in range(1, capacity + 1):
            time.sleep(0.15)  # below the wheel's pace of new calls (10 a second)
            send("INVITE", n)
            status, tag = final(n)
            assert status == 200, (n, status)  # the last one too: no 503 for the reserve
            tags.append(tag)
        assert engine.status()["active_calls"] == capacity
        for n, tag in enumerate(tags, start=1):
            send("ACK", n, tag)
        for n, tag in enumerate(tags, start=1):
            hang_up(n, tag)
    engine.wait_idle()
