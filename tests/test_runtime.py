"""The runtime on an in-memory telephony fake: routing, actions carried out, timers on the
loop, action-URL results fed back, records written, draining. Real SIP is in integration/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.flow.events import ActionUrlFailed, ActionUrlReplied, FailureKind
from engine.model import ActionUrl, ServerSettings
from engine.prompts import PromptLibrary
from engine.records import CallRecords
from engine.runtime import CallFacts, Runtime
from engine.telephony.base import (
    CallConfirmed,
    CallDisconnected,
    DtmfDigit,
    IncomingCall,
    PlaybackFinished,
    StrayAck,
    TransferStatus,
)
from tests.flow_harness import menu, receptionist


class FakeTelephony:
    def __init__(self, max_calls: int = 4) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self._max = max_calls

    @property
    def max_calls(self) -> int:
        return self._max

    def answer(self, call_id: str) -> None:
        self.commands.append(("answer", call_id))

    def reject(
        self, call_id: str, sip_code: int, reason: str, *, retry_after: int | None = None
    ) -> None:
        self.commands.append(("reject", call_id, sip_code))

    def play(self, call_id: str, play_id: int, files: Sequence[Path]) -> None:
        self.commands.append(("play", call_id, play_id, tuple(f.name for f in files)))

    def stop_playback(self, call_id: str) -> None:
        self.commands.append(("stop", call_id))

    def transfer(self, call_id: str, refer_to: str) -> None:
        self.commands.append(("transfer", call_id, refer_to))

    def hangup(self, call_id: str) -> None:
        self.commands.append(("hangup", call_id))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.commands if c[0] == name]


class FakeActionUrls:
    def __init__(self, reply: Callable[[int, str], ActionUrlReplied | ActionUrlFailed]) -> None:
        self.reply = reply
        self.seen: list[tuple[str, CallFacts]] = []

    async def request(
        self,
        action_url: ActionUrl,
        facts: CallFacts,
        input: str,
        *,
        request_id: int,
        now: Callable[[], datetime],
    ) -> ActionUrlReplied | ActionUrlFailed:
        self.seen.append((input, facts))
        await asyncio.sleep(0.01)
        return self.reply(request_id, input)


def incoming(call_id: str = "c1", user: str = "800", **kw: Any) -> IncomingCall:
    data: dict[str, Any] = dict(
        call_id=call_id,
        request_user=user,
        from_user="1001",
        from_display="Ann",
        source_host="127.0.0.1",
        source_port=5062,
        transport="udp",
        session_id=None,
        user_agent="test",
    )
    data.update(kw)
    return IncomingCall(**data)


def make_runtime(
    tmp_path: Path,
    ivr: Any = None,
    telephony: FakeTelephony | None = None,
    urls: FakeActionUrls | None = None,
    **server: Any,
) -> tuple[Runtime, FakeTelephony]:
    tel = telephony or FakeTelephony()
    ivr = ivr or receptionist(custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")])
    runtime = Runtime(
        server=ServerSettings.model_validate(server),
        receptionists={ivr.extension_number: ivr},
        telephony=tel,
        prompts=PromptLibrary(),
        files={},
        action_urls=urls
        or FakeActionUrls(
            lambda rid, _: ActionUrlFailed(
                at=datetime.now(), request_id=rid, kind=FailureKind.CONNECT_ERROR
            )
        ),
        records=CallRecords(tmp_path / "calls.jsonl"),
    )
    return runtime, tel


def test_a_whole_call_through_the_runtime(tmp_path: Path) -> None:
    async def run() -> tuple[Runtime, FakeTelephony]:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming())
        assert tel.named("answer") == [("answer", "c1")]
        runtime.on_event(CallConfirmed(call_id="c1"))
        assert tel.named("play")[-1][3] == ("greeting.wav",)
        runtime.on_event(DtmfDigit(call_id="c1", digit="1", method="rfc4733"))
        assert tel.named("stop") and tel.named("transfer") == [
            ("transfer", "c1", "sip:201@127.0.0.1:5062")
        ]
        runtime.on_event(TransferStatus(call_id="c1", sip_code=100, reason="Trying", final=False))
        runtime.on_event(TransferStatus(call_id="c1", sip_code=200, reason="OK", final=True))
        assert tel.named("hangup") == [("hangup", "c1")]
        runtime.on_event(CallDisconnected(call_id="c1", sip_code=200, reason="", by_remote=False))
        return runtime, tel

    runtime, _ = asyncio.run(run())
    assert runtime.calls == {}
    record = runtime.records.recent[-1]
    assert record["outcome"] == "transferred" and record["transferred_to"] == "201"
    assert record["dtmf_methods"] == {"rfc4733": 1}
    assert record["sip"]["transfer_notify_codes"] == [100, 200]
    assert (tmp_path / "calls.jsonl").read_text().count("\n") == 1


def test_timers_run_on_the_loop(tmp_path: Path) -> None:
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path, ivr=receptionist(dtmf_interval=1))
        runtime.on_event(incoming())
        runtime.on_event(CallConfirmed(call_id="c1"))
        for digit in "201":
            runtime.on_event(DtmfDigit(call_id="c1", digit=digit, method="sip-info"))
        await asyncio.sleep(0.8)
        assert tel.named("transfer") == []
        await asyncio.sleep(0.4)
        return tel

    tel = asyncio.run(run())
    assert tel.named("transfer") == [("transfer", "c1", "sip:201@127.0.0.1:5062")]


def test_action_url_result_is_fed_back(tmp_path: Path) -> None:
    urls = FakeActionUrls(
        lambda rid, inp: ActionUrlReplied(
            at=datetime.now(), request_id=rid, action="call", destination="222"
        )
    )
    ivr = receptionist(
        action_urls=[
            {
                "name": "crm",
                "enabled": True,
                "type": "DTMF",
                "dtmf_mask": "5***",
                "url": "http://127.0.0.1:9/x",
            }
        ]
    )

    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path, ivr=ivr, urls=urls, transfer_domain="pbx.example")
        runtime.on_event(incoming(session_id="pbx-sess-1"))
        runtime.on_event(CallConfirmed(call_id="c1"))
        for digit in "5000#":
            runtime.on_event(DtmfDigit(call_id="c1", digit=digit, method="rfc4733"))
        await asyncio.sleep(0.1)
        return tel

    tel = asyncio.run(run())
    assert tel.named("transfer") == [("transfer", "c1", "sip:222@pbx.example")]
    given, facts = urls.seen[0]
    assert given == "5000" and facts.session_id == "pbx-sess-1" and facts.to == "800"


def test_routing_rejections_and_capacity(tmp_path: Path) -> None:
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path, telephony=FakeTelephony(max_calls=2))
        runtime.on_event(incoming("a"))
        runtime.on_event(incoming("b"))
        runtime.on_event(incoming("c"))  # over capacity
        runtime.on_event(incoming("d", user="999"))  # unknown
        runtime.on_event(CallDisconnected(call_id="a", sip_code=200, reason="", by_remote=True))
        runtime.on_event(incoming("e"))  # a slot is free again
        return tel

    tel = asyncio.run(run())
    assert tel.named("reject") == [("reject", "c", 503), ("reject", "d", 404)]
    assert [c[1] for c in tel.named("answer")] == ["a", "b", "e"]


def test_drain_refuses_new_calls_and_hangs_up_after_grace(tmp_path: Path) -> None:
    async def run() -> tuple[Runtime, FakeTelephony]:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("a"))
        runtime.on_event(CallConfirmed(call_id="a"))
        drain = asyncio.create_task(runtime.drain(grace=0.2))
        await asyncio.sleep(0.05)
        runtime.on_event(incoming("b"))
        await asyncio.sleep(0.3)
        assert ("hangup", "a") in tel.commands
        runtime.on_event(CallDisconnected(call_id="a", sip_code=200, reason="", by_remote=False))
        await drain
        return runtime, tel

    runtime, tel = asyncio.run(run())
    assert ("reject", "b", 503) in tel.commands
    assert runtime.calls == {}


def test_caller_hang_up_mid_greeting_leaves_no_timer_or_task(tmp_path: Path) -> None:
    async def run() -> Runtime:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming())
        runtime.on_event(CallConfirmed(call_id="c1"))
        play_id = tel.named("play")[-1][2]
        runtime.on_event(PlaybackFinished(call_id="c1", play_id=play_id))  # no-input timer runs
        runtime.on_event(CallDisconnected(call_id="c1", sip_code=200, reason="", by_remote=True))
        return runtime

    runtime = asyncio.run(run())
    assert runtime.calls == {}
    assert runtime.records.recent[-1]["outcome"] == "hung_up_by_caller"


def test_an_error_in_one_call_does_not_stop_the_runtime(tmp_path: Path) -> None:
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("a"))

        def broken(*_: Any) -> None:
            raise RuntimeError("boom")

        tel.play = broken  # type: ignore[method-assign]
        runtime.on_event(CallConfirmed(call_id="a"))  # play fails: logged, not raised
        runtime.on_event(incoming("b"))
        return tel

    tel = asyncio.run(run())
    assert [c[1] for c in tel.named("answer")] == ["a", "b"]


def test_metrics_count_calls_digits_transfers_and_urls(tmp_path: Path) -> None:
    urls = FakeActionUrls(
        lambda rid, inp: ActionUrlFailed(
            at=datetime.now(), request_id=rid, kind=FailureKind.TIMEOUT, latency_ms=2000.0
        )
    )
    ivr = receptionist(
        action_urls=[
            {
                "name": "crm",
                "enabled": True,
                "type": "DTMF",
                "dtmf_mask": "5***",
                "url": "http://127.0.0.1:9/x",
            }
        ]
    )

    async def run() -> Runtime:
        runtime, _ = make_runtime(tmp_path, ivr=ivr, urls=urls)
        runtime.on_event(incoming())
        runtime.on_event(incoming("x", user="999"))
        runtime.on_event(CallConfirmed(call_id="c1"))
        for digit in "5000#":
            runtime.on_event(DtmfDigit(call_id="c1", digit=digit, method="sip-info"))
        await asyncio.sleep(0.1)
        runtime.on_event(TransferStatus(call_id="c1", sip_code=486, reason="Busy", final=True))
        runtime.on_event(CallDisconnected(call_id="c1", sip_code=200, reason="", by_remote=True))
        return runtime

    text = asyncio.run(run()).metrics.render().decode()
    for line in (
        'vr_sip_invites_total{code="200"} 1.0',
        'vr_sip_invites_total{code="404"} 1.0',
        'vr_dtmf_digits_total{method="sip-info"} 5.0',
        'vr_action_url_requests_total{result="timeout",type="DTMF"} 1.0',
        'vr_action_url_latency_seconds_count{type="DTMF"} 1.0',
        'vr_transfers_total{result="failed"} 1.0',
        'vr_calls_total{outcome="hung_up_by_caller"} 1.0',
        "vr_calls_active 0.0",
    ):
        assert line in text, line
    # the digits dialled appear in no metric name, label or help text; sample values are left
    # out of the check (a `_created` timestamp such as 1.7962262950006502e+09 contains "5000")
    described = [
        line.rsplit(" ", 1)[0] if not line.startswith("#") else line for line in text.splitlines()
    ]
    assert not [line for line in described if "5000" in line], described


def test_scanners_and_floods_are_refused_at_the_door(tmp_path: Path) -> None:
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path, sip_rate_limit={"invites_per_second": 1, "burst": 2})
        runtime.on_event(incoming("s", user_agent="friendly-scanner"))
        for n in range(3):  # the third within the same instant is over the burst
            runtime.on_event(incoming(f"f{n}", source_host="192.0.2.9"))
        runtime.on_event(incoming("other", source_host="192.0.2.10"))
        return tel

    tel = asyncio.run(run())
    assert tel.named("reject") == [("reject", "s", 403), ("reject", "f2", 503)]
    assert [c[1] for c in tel.named("answer")] == ["f0", "f1", "other"]


def test_an_invite_the_door_admitted_spends_no_second_rate_token(tmp_path: Path) -> None:
    # the SIP stack's door applied the source's rate already (charged); the runtime checks
    # only the unacknowledged calls, which the door may have counted before any was answered
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(
            tmp_path,
            sip_rate_limit={"invites_per_second": 1, "burst": 2, "max_unconfirmed": 3},
        )
        for n in range(4):
            runtime.admission.charge(f"sip-a{n}")  # the door spent the INVITE's rate token
            runtime.on_event(incoming(f"a{n}", source_host="192.0.2.9", sip_call_id=f"sip-a{n}"))
        runtime.on_event(incoming("not-admitted", source_host="192.0.2.11"))
        return tel

    tel = asyncio.run(run())
    assert tel.named("reject") == [("reject", "a3", 503)]  # the 4th: 3 unacknowledged
    assert [c[1] for c in tel.named("answer")] == ["a0", "a1", "a2", "not-admitted"]


def test_an_offer_the_media_stack_cannot_carry_gets_488_and_no_call(tmp_path: Path) -> None:
    async def run() -> tuple[FakeTelephony, str]:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("bad", offer_problem="c='IN IP4 999.1.1.1' is not an address"))
        runtime.on_event(incoming("good"))
        return tel, runtime.metrics.render().decode()

    tel, metrics = asyncio.run(run())
    assert tel.named("reject") == [("reject", "bad", 488)]
    assert [c[1] for c in tel.named("answer")] == ["good"]
    assert 'vr_sip_invites_total{code="488"} 1.0' in metrics


def test_a_source_with_too_many_unacknowledged_calls_gets_503(tmp_path: Path) -> None:
    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path, sip_rate_limit={"max_unconfirmed": 2})
        for n in range(3):  # answered, never ACKed: the third is one too many
            runtime.on_event(incoming(f"f{n}", source_host="192.0.2.9"))
        runtime.on_event(incoming("other", source_host="192.0.2.10"))  # another source
        runtime.on_event(CallConfirmed(call_id="f0"))  # an ACK frees a place
        runtime.on_event(incoming("f3", source_host="192.0.2.9"))
        runtime.on_event(incoming("f4", source_host="192.0.2.9"))
        runtime.on_event(CallDisconnected(call_id="f1", sip_code=408, reason="", by_remote=True))
        runtime.on_event(incoming("f5", source_host="192.0.2.9"))  # so does an end
        return tel

    tel = asyncio.run(run())
    assert tel.named("reject") == [("reject", "f2", 503), ("reject", "f4", 503)]
    assert [c[1] for c in tel.named("answer")] == ["f0", "f1", "other", "f3", "f5"]


def test_a_disabled_server_refuses_new_calls_and_keeps_the_calls_in_progress(
    tmp_path: Path,
) -> None:
    """Issue 13, item 6: POST /api/ivr_servers/{id} {"enabled": false} takes it OFFLINE."""

    async def run() -> FakeTelephony:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("before"))
        runtime.on_event(CallConfirmed(call_id="before"))
        runtime.set_enabled(False)
        runtime.on_event(incoming("while-disabled"))
        runtime.on_event(DtmfDigit(call_id="before", digit="1", method="rfc4733"))
        runtime.set_enabled(True)
        runtime.on_event(incoming("after"))
        return tel

    tel = asyncio.run(run())
    assert tel.named("reject") == [("reject", "while-disabled", 503)]
    assert [c[1] for c in tel.named("answer")] == ["before", "after"]
    assert tel.named("transfer") == [("transfer", "before", "sip:201@127.0.0.1:5062")]


def test_a_call_without_an_ack_is_hung_up_at_timer_h_and_recorded(tmp_path: Path) -> None:
    """Issue 13, item 1: a delayed-offer INVITE whose ACK carries no SDP answer stayed in its
    call slot for ever (pjsua never confirms it); a silent peer's call held it for ~65 s."""

    async def run() -> tuple[Runtime, FakeTelephony]:
        runtime, tel = make_runtime(tmp_path)
        runtime.ack_timeout = 0.05
        runtime.on_event(incoming("silent"))
        runtime.on_event(incoming("acked", source_host="192.0.2.5"))
        runtime.on_event(CallConfirmed(call_id="acked"))
        await asyncio.sleep(0.2)
        assert tel.named("hangup") == [("hangup", "silent")]  # only the call without an ACK
        runtime.on_event(
            CallDisconnected(call_id="silent", sip_code=200, reason="", by_remote=False)
        )
        return runtime, tel

    runtime, _ = asyncio.run(run())
    record = runtime.records.recent[-1]
    assert record["outcome"] == "hung_up_by_server"
    assert record["reason"] == "no ACK within 0.05 s of the answer"
    assert set(runtime.calls) == {"acked"}
    assert runtime.admission.unconfirmed("127.0.0.1") == 0


def test_a_call_confirmed_without_media_is_ended_at_once(tmp_path: Path) -> None:
    """A delayed-offer INVITE whose ACK carried no SDP answer: pjsua confirms the call, but
    nothing can be played, so the flow would wait for its greeting for ever."""

    async def run() -> tuple[Runtime, FakeTelephony]:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("no-media"))
        runtime.on_event(CallConfirmed(call_id="no-media", media=False))
        assert tel.named("hangup") == [("hangup", "no-media")]
        assert not tel.named("play")
        runtime.on_event(
            CallDisconnected(call_id="no-media", sip_code=200, reason="", by_remote=False)
        )
        return runtime, tel

    runtime, _ = asyncio.run(run())
    record = runtime.records.recent[-1]
    assert record["outcome"] == "hung_up_by_server"
    assert record["reason"] == "the ACK carried no SDP answer: no audio to play"


def test_a_stray_ack_from_the_calls_source_ends_an_unconfirmed_call(tmp_path: Path) -> None:
    """An ACK without a To tag for a call still waiting for its ACK (the door reports it):
    from another source, or for a confirmed call, nothing happens; from the source, hang up."""

    async def run() -> tuple[Runtime, FakeTelephony]:
        runtime, tel = make_runtime(tmp_path)
        runtime.on_event(incoming("stray"))
        runtime.on_event(incoming("fine", source_host="127.0.0.2"))
        runtime.on_event(CallConfirmed(call_id="fine"))
        runtime.on_event(StrayAck(call_id="stray", source_host="192.0.2.66"))
        runtime.on_event(StrayAck(call_id="stray", source_host=None))
        runtime.on_event(StrayAck(call_id="fine", source_host="127.0.0.2"))
        assert tel.named("hangup") == []
        runtime.on_event(StrayAck(call_id="stray", source_host="127.0.0.1"))
        assert tel.named("hangup") == [("hangup", "stray")]
        runtime.on_event(
            CallDisconnected(call_id="stray", sip_code=200, reason="", by_remote=False)
        )
        return runtime, tel

    runtime, _ = asyncio.run(run())
    record = runtime.records.recent[-1]
    assert record["outcome"] == "hung_up_by_server"
    assert record["reason"].startswith("its ACK had no To tag"), record
