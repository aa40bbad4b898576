"""The runtime: the one asyncio loop that joins telephony, call flows, timers and action URLs.

It routes each new call to a snapshot of its receptionist, feeds that call's `CallFlow` every
event (SIP events, timers, action-URL results), carries out the actions it returns, and writes
one call record when the call is gone. It never blocks: all SIP work happens on the telephony
thread, HTTP in tasks, and timers are `loop.call_later` handles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from engine.action_urls import CallFacts
from engine.admission import (
    AdmissionCounters,
    Admit,
    NewRequest,
    ServerState,
    decide,
    describe,
    log_level,
)
from engine.flow.actions import (
    Action,
    CancelActionUrl,
    CancelTimer,
    DisaPinAccepted,
    DisaPinRejected,
    FilePrompt,
    Hangup,
    PlayPrompt,
    Prompt,
    RequestActionUrl,
    StartTimer,
    StopPrompt,
    TimerName,
    Transfer,
    TransferKind,
)
from engine.flow.callflow import CallContext, CallFlow, Phase
from engine.flow.events import (
    ActionUrlFailed,
    ActionUrlReplied,
    CallAnswered,
    CallerHungUp,
    DigitReceived,
    Event,
    FailureKind,
    PromptFinished,
    ServerHungUp,
    TimerFired,
    TransferFailed,
    TransferProgressed,
    TransferSucceeded,
)
from engine.lockout import DisaLockouts, LockoutSink
from engine.metrics import Metrics
from engine.model import ActionUrl, Receptionist, ServerSettings
from engine.prompts import PromptLibrary
from engine.records import CallRecord, CallRecords, SipFacts
from engine.telephony.base import (
    CallConfirmed,
    CallDisconnected,
    CallId,
    DtmfDigit,
    IncomingCall,
    PlaybackFinished,
    StrayAck,
    Telephony,
    TelephonyEvent,
    TransferStatus,
)

log = logging.getLogger(__name__)

# SIP timer H (64 x T1): how long a UAS waits for the ACK of its 2xx before giving up
ACK_TIMEOUT = 32.0


class ActionUrlRequester(Protocol):
    async def request(
        self,
        action_url: ActionUrl,
        facts: CallFacts,
        input: str,
        *,
        request_id: int,
        now: Callable[[], datetime],
    ) -> ActionUrlReplied | ActionUrlFailed: ...


@dataclass
class ActiveCall:
    incoming: IncomingCall
    receptionist: Receptionist
    flow: CallFlow
    session_id: str
    started_at: datetime
    transfer_domain: str
    timers: dict[TimerName, asyncio.TimerHandle] = field(default_factory=dict)
    requests: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    disa_failure_counted: bool = False
    sip: SipFacts = field(default_factory=SipFacts)
    dtmf_methods: dict[str, int] = field(default_factory=dict)
    confirmed: bool = False  # the ACK came (CallConfirmed)
    ack_timer: asyncio.TimerHandle | None = None  # hangs up when no ACK comes in time
    ended_because: str | None = None  # why the server hung up on its own (no ACK, no media)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Runtime:
    """Serves calls for a set of receptionists. Use from the asyncio loop only."""

    def __init__(
        self,
        *,
        server: ServerSettings,
        receptionists: Mapping[str, Receptionist],
        telephony: Telephony,
        prompts: PromptLibrary,
        files: Mapping[str, Path],
        action_urls: ActionUrlRequester,
        records: CallRecords,
        clock: Callable[[], datetime] = utc_now,
        lockout_sink: LockoutSink | None = None,
        admission: AdmissionCounters | None = None,
    ) -> None:
        self.server = server
        self.tz = ZoneInfo(server.timezone)
        self.receptionists = dict(receptionists)
        self.telephony = telephony
        self.prompts = prompts
        self.files = dict(files)
        self.action_urls = action_urls
        self.records = records
        self.clock = clock
        self.lockouts = DisaLockouts(server.disa, lockout_sink)
        self.calls: dict[CallId, ActiveCall] = {}
        self.draining = False
        self.enabled = True  # False: new calls get 503, calls in progress go on
        self.ack_timeout = ACK_TIMEOUT
        self.metrics = Metrics()
        # shared with the SIP stack's door, which applies them before pjsua when it can
        self.admission = admission or AdmissionCounters(server.sip_rate_limit)
        self.calls_total = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- configuration -----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        limit = self.telephony.max_calls
        return min(limit, self.server.max_calls) if self.server.max_calls else limit

    def set_enabled(self, enabled: bool) -> None:
        """Take the server ONLINE or OFFLINE: disabled, it refuses new calls (503) and lets
        the calls in progress finish."""
        if enabled != self.enabled:
            log.info(
                "receptionist server %s: %d call(s) in progress",
                "enabled" if enabled else "disabled, new calls get 503",
                len(self.calls),
            )
        self.enabled = enabled

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    def recent_records(self) -> Sequence[Mapping[str, Any]]:
        """The documents of the latest call records, oldest first."""
        return list(self.records.recent)

    def apply(self, receptionists: Mapping[str, Receptionist], files: Mapping[str, Path]) -> None:
        """Live change: new calls use these receptionists and converted prompt files (by
        id); calls in progress keep their snapshot."""
        self.receptionists = dict(receptionists)
        self.files = dict(files)

    # --- telephony events --------------------------------------------------------------------

    def on_event(self, event: TelephonyEvent) -> None:
        """The telephony adapter's sink. Never raises: one call's trouble is not another's."""
        try:
            self._dispatch(event)
        except Exception:
            log.exception("call %s: error handling %s", event.call_id, type(event).__name__)

    def _dispatch(self, event: TelephonyEvent) -> None:
        if isinstance(event, IncomingCall):
            self._on_incoming(event)
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        match event:
            case CallConfirmed():
                self._confirmed(call)
                self.admission.acked(call.incoming.source_host, time.monotonic())
                if event.media:
                    call.sip.confirmed_at = self.clock().isoformat()
                    self._feed(call, CallAnswered(at=self.clock()))
                else:
                    self._end_on_our_own(call, "the ACK carried no SDP answer: no audio to play")
            case StrayAck():
                if not call.confirmed and event.source_host == call.incoming.source_host:
                    self._end_on_our_own(
                        call,
                        "its ACK had no To tag, so it matched no dialog (RFC 3261 12.2.1.1): "
                        "the call could never be confirmed",
                    )
            case DtmfDigit():
                call.dtmf_methods[event.method] = call.dtmf_methods.get(event.method, 0) + 1
                self.metrics.dtmf.labels(event.method).inc()
                self._feed(
                    call, DigitReceived(at=self.clock(), digit=event.digit, method=event.method)
                )
            case PlaybackFinished():
                self._feed(call, PromptFinished(at=self.clock(), play_id=event.play_id))
            case TransferStatus():
                self._on_transfer_status(call, event)
            case CallDisconnected():
                call.sip.disconnect_code = event.sip_code
                call.sip.disconnect_reason = event.reason
                call.sip.disconnected_by = "caller" if event.by_remote else "server"
                if call.flow.phase is not Phase.ENDED:
                    if event.by_remote:
                        self._feed(call, CallerHungUp(at=self.clock()))
                    else:
                        reason = (
                            call.ended_because
                            if call.ended_because
                            else "server shutting down"
                            if self.draining
                            else f"ended by the server: {event.sip_code} {event.reason}".strip()
                        )
                        self._feed(call, ServerHungUp(at=self.clock(), reason=reason))
                self._finish(call)

    def _admit(self, incoming: IncomingCall) -> Receptionist | None:
        """Ask admission (`engine.admission.decide`) about a new INVITE; refuse it here, with
        its one log line, or return the receptionist that answers it."""
        request = NewRequest(
            method="INVITE",
            call_id=incoming.sip_call_id,
            user_agent=incoming.user_agent,
            from_header=incoming.from_header,
            contact=incoming.contact,
            source_host=incoming.source_host,
            offer=(488, incoming.offer_problem) if incoming.offer_problem is not None else None,
            request_user=incoming.request_user,
        )
        state = ServerState(
            allow=self.server.sip_allow,
            draining=self.draining,
            enabled=self.enabled,
            receptionists=self.receptionists,
            calls=len(self.calls),
            capacity=self.capacity,
            capacity_text=self._capacity_text(),
            charged=self.admission.take_charged(incoming.sip_call_id),
        )
        decision = decide(request, state, self.admission, time.monotonic())
        if isinstance(decision, Admit):
            return decision.receptionist
        self.metrics.invites.labels(str(decision.sip_code)).inc()
        source = f"{incoming.source_host}:{incoming.source_port}"
        log.log(
            logging.getLevelName(log_level(decision)), "%s", describe(decision, request, source)
        )
        # pjsua has sent 100 Trying: a silent refusal (a scanner) can only be a final answer
        self.telephony.reject(
            incoming.call_id, decision.sip_code, decision.reason, retry_after=decision.retry_after
        )
        return None

    def _capacity_text(self) -> str:
        return (
            f"this server carries at most {self.capacity} concurrent calls "
            f"(SIP stack limit {self.telephony.max_calls}"
            + (f", max_calls {self.server.max_calls}" if self.server.max_calls else "")
            + "); a tuned pjsua2 build raises it: make pjsua2 (README, Capacity)"
        )

    def _on_incoming(self, incoming: IncomingCall) -> None:
        receptionist = self._admit(incoming)
        if receptionist is None:
            return
        session_id = incoming.session_id or uuid.uuid4().hex
        now = self.clock()
        locked = self.lockouts.is_locked(incoming.from_user, incoming.source_host, time.time())
        context = CallContext(
            session_id=session_id,
            caller_number=incoming.from_user,
            caller_name=incoming.from_display,
            disa_locked=locked,
        )
        flow = CallFlow(receptionist, self.server, self.tz, context)
        domain = self.server.transfer_domain or (
            f"{format_host(incoming.source_host)}:{incoming.source_port}"
        )
        call = ActiveCall(
            incoming=incoming,
            receptionist=receptionist,
            flow=flow,
            session_id=session_id,
            started_at=now,
            transfer_domain=domain,
        )
        self.calls[incoming.call_id] = call
        self.admission.answered(incoming.source_host, incoming.call_id, time.monotonic())
        self._idle.clear()
        self.calls_total += 1
        self.metrics.invites.labels("200").inc()
        self.metrics.calls_active.inc()
        log.info(
            "session %s: call from %s to %s (%s) answered",
            session_id,
            incoming.from_user,
            receptionist.extension_number,
            receptionist.name,
        )
        self.telephony.answer(incoming.call_id)
        call.ack_timer = asyncio.get_running_loop().call_later(
            self.ack_timeout, self._ack_timed_out, incoming.call_id
        )

    def _on_transfer_status(self, call: ActiveCall, event: TransferStatus) -> None:
        call.sip.transfer_notify_codes.append(event.sip_code)
        now = self.clock()
        if not event.final:
            self._feed(call, TransferProgressed(at=now, sip_code=event.sip_code))
        elif 200 <= event.sip_code < 300:
            log.info("session %s: transfer answered (%d)", call.session_id, event.sip_code)
            self._feed(call, TransferSucceeded(at=now, sip_code=event.sip_code))
        else:
            log.warning(
                "session %s: transfer failed: %d %s",
                call.session_id,
                event.sip_code,
                event.reason,
            )
            self._feed(call, TransferFailed(at=now, sip_code=event.sip_code, reason=event.reason))

    # --- feeding the flow and carrying out its actions --------------------------------------

    def _feed(self, call: ActiveCall, event: Event) -> None:
        for action in call.flow.handle(event):
            try:
                self._execute(call, action)
            except Exception:
                log.exception("session %s: could not carry out %s", call.session_id, action)

    def _execute(self, call: ActiveCall, action: Action) -> None:
        call_id = call.incoming.call_id
        match action:
            case PlayPrompt():
                files = [self._prompt_file(call, prompt) for prompt in action.prompts]
                self.telephony.play(call_id, action.play_id, files)
            case StopPrompt():
                self.telephony.stop_playback(call_id)
            case StartTimer():
                self._cancel_timer(call, action.timer)
                loop = asyncio.get_running_loop()
                call.timers[action.timer] = loop.call_later(
                    action.seconds, self._fire, call_id, action.timer, action.token
                )
            case CancelTimer():
                self._cancel_timer(call, action.timer)
            case RequestActionUrl():
                task = asyncio.get_running_loop().create_task(self._request(call, action))
                call.requests[action.request_id] = task
            case CancelActionUrl():
                pending = call.requests.pop(action.request_id, None)
                if pending is not None:
                    pending.cancel()
            case Transfer():
                refer_to = self._refer_to(call, action)
                log.info("session %s: transferring to %s", call.session_id, refer_to)
                self.telephony.transfer(call_id, refer_to)
            case Hangup():
                log.info("session %s: hanging up (%s)", call.session_id, action.reason)
                self.telephony.hangup(call_id)
            case DisaPinRejected():
                self.metrics.disa.labels("pin_rejected").inc()
                log.warning(
                    "session %s: wrong DISA PIN from %s (%s), attempt %d",
                    call.session_id,
                    call.incoming.from_user,
                    call.incoming.source_host,
                    action.attempt,
                )
                if not call.disa_failure_counted:
                    call.disa_failure_counted = True
                    locked = self.lockouts.record_failed_call(
                        call.incoming.from_user, call.incoming.source_host, time.time()
                    )
                    for key in locked:
                        self.metrics.disa.labels("lockout").inc()
                        log.warning(
                            "DISA locked for %s for %d s after %d failed calls",
                            key,
                            self.server.disa.lockout,
                            self.server.disa.max_failed_calls,
                        )
            case DisaPinAccepted():
                self.metrics.disa.labels("pin_accepted").inc()

    def _prompt_file(self, call: ActiveCall, prompt: Prompt) -> Path:
        if isinstance(prompt, FilePrompt):
            path = self.files.get(prompt.file_id)
            if path is not None:
                return path
            log.error(
                "session %s: prompt file %s is missing; playing the built-in greeting",
                call.session_id,
                prompt.file_id,
            )
            return self.prompts.path(call.receptionist.language, "greeting")
        return self.prompts.path(call.receptionist.language, prompt.value)

    def _refer_to(self, call: ActiveCall, transfer: Transfer) -> str:
        domain = call.transfer_domain
        if transfer.kind is TransferKind.VOICEMAIL and transfer.refer_to_template:
            return transfer.refer_to_template.format(number=transfer.destination, domain=domain)
        return f"sip:{transfer.destination}@{domain}"

    def _cancel_timer(self, call: ActiveCall, timer: TimerName) -> None:
        handle = call.timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, call_id: CallId, timer: TimerName, token: int) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        call.timers.pop(timer, None)
        try:
            self._feed(call, TimerFired(at=self.clock(), timer=timer, token=token))
        except Exception:
            log.exception("session %s: error on timer %s", call.session_id, timer)

    async def _request(self, call: ActiveCall, action: RequestActionUrl) -> None:
        facts = CallFacts(
            from_number=call.incoming.from_user,
            to=call.receptionist.extension_number,
            from_name=call.incoming.from_display,
            account_name=call.receptionist.name,
            session_id=call.session_id,
        )
        try:
            result = await self.action_urls.request(
                action.action_url, facts, action.input, request_id=action.request_id, now=self.clock
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the client should never raise; be safe anyway
            result = ActionUrlFailed(
                at=self.clock(),
                request_id=action.request_id,
                kind=FailureKind.CONNECT_ERROR,
                detail=f"unexpected error: {type(error).__name__}",
            )
        if action.request_id in call.requests:
            del call.requests[action.request_id]
        kind = action.action_url.type.value
        label = result.action if isinstance(result, ActionUrlReplied) else result.kind.value
        self.metrics.action_url_requests.labels(kind, label).inc()
        self.metrics.action_url_latency.labels(kind).observe(result.latency_ms / 1000)
        if self.calls.get(call.incoming.call_id) is call:
            self._feed(call, result)

    # --- the end of a call -------------------------------------------------------------------

    def _ack_timed_out(self, call_id: CallId) -> None:
        """Timer H: the answer's ACK has not come (a silent peer, a broken NAT): hang up, so
        that the call slot is freed and the call gets its record."""
        call = self.calls.get(call_id)
        if call is None or call.confirmed:
            return
        self._end_on_our_own(call, f"no ACK within {self.ack_timeout:g} s of the answer")

    def _end_on_our_own(self, call: ActiveCall, why: str) -> None:
        call.ended_because = why
        log.warning(
            "session %s: hanging up the call from %s: %s",
            call.session_id,
            call.incoming.source_host,
            why,
        )
        self.telephony.hangup(call.incoming.call_id)

    def _confirmed(self, call: ActiveCall) -> None:
        """The call's ACK came (or the call ended first): it no longer counts as unconfirmed."""
        if call.ack_timer is not None:
            call.ack_timer.cancel()
            call.ack_timer = None
        if call.confirmed:
            return
        call.confirmed = True
        self.admission.settled(call.incoming.source_host, call.incoming.call_id)

    def _finish(self, call: ActiveCall) -> None:
        self._confirmed(call)
        for handle in call.timers.values():
            handle.cancel()
        for task in call.requests.values():
            task.cancel()
        call.timers.clear()
        call.requests.clear()
        del self.calls[call.incoming.call_id]
        record = self.call_record(call)
        self.metrics.calls_active.dec()
        self.metrics.calls.labels(record.outcome).inc()
        for transfer in call.flow.record.transfers:
            self.metrics.transfers.labels(transfer.result).inc()
        try:
            self.records.write(record)
        except OSError:
            log.exception("session %s: could not write the call record", call.session_id)
        log.info("session %s: ended, %s (%s)", call.session_id, record.outcome, record.reason)
        if not self.calls:
            self._idle.set()

    def call_record(self, call: ActiveCall) -> CallRecord:
        flow_record = call.flow.record
        last_transfer = flow_record.transfers[-1] if flow_record.transfers else None
        return CallRecord(
            session_id=call.session_id,
            receptionist_id=call.receptionist.id,
            receptionist=call.receptionist.name,
            extension_number=call.receptionist.extension_number,
            caller_number=call.incoming.from_user,
            caller_name=call.incoming.from_display,
            source=f"{format_host(call.incoming.source_host)}:{call.incoming.source_port}",
            transport=call.incoming.transport,
            started_at=call.started_at,
            answered_at=flow_record.answered_at,
            ended_at=flow_record.ended_at or self.clock(),
            outcome=flow_record.outcome.value if flow_record.outcome else "unknown",
            reason=flow_record.reason,
            transferred_to=flow_record.transferred_to,
            transfer_sip_code=last_transfer.sip_code if last_transfer else None,
            transfer_assumed=bool(last_transfer and last_transfer.result == "assumed"),
            inputs=tuple(flow_record.inputs),
            action_urls=tuple(flow_record.action_urls),
            transfers=tuple(flow_record.transfers),
            menu_rules=tuple(flow_record.menu_rules),
            night_mode=flow_record.night_mode,
            disa_pin_failures=flow_record.disa_pin_failures,
            disa_authenticated=flow_record.disa_authenticated,
            digits_ignored=flow_record.digits_ignored,
            dtmf_methods=dict(call.dtmf_methods),
            sip=dataclasses.replace(
                call.sip, transfer_notify_codes=list(call.sip.transfer_notify_codes)
            ),
        )

    # --- draining ----------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Refuse new calls (503); wait up to `grace` seconds for calls to end; hang up the rest."""
        self.draining = True
        log.info("draining: %d call(s) in progress, grace %s s", len(self.calls), grace)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            for call_id in list(self.calls):
                self.telephony.hangup(call_id)
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=5)
            except TimeoutError:
                log.warning("%d call(s) did not end after hang-up", len(self.calls))
