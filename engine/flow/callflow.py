"""`CallFlow`: what one call hears and where it goes, as a pure state machine.

`CallFlow.handle(event) -> list[Action]`: events in (`engine.flow.events`), actions out
(`engine.flow.actions`). It implements SPEC §3 and §4's decision logic for one call, from
answer to hang-up, and keeps the call record (`flow.record`). No clock, no I/O: time arrives
as `TimerFired` and in each event's `at`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum

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
    SystemPrompt,
    TimerName,
    Transfer,
    TransferKind,
)
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
from engine.flow.hours import choose_forward_rule
from engine.flow.record import (
    ActionUrlRecord,
    FlowRecord,
    InputRecord,
    Outcome,
    TransferRecord,
)
from engine.model import (
    EXTENSION_RE,
    ActionUrl,
    ActionUrlType,
    ForwardAction,
    ForwardRule,
    MenuForwardRule,
    MenuRule,
    Receptionist,
    ServerSettings,
)
from engine.rules.masks import parse_mask
from engine.rules.pin import mask_digits, verify_pin

HASH_RULE_WAIT = 3.0  # seconds of silence after N that fire a rule N# (SPEC §3.5)
MAX_INPUT_DIGITS = 64  # input is complete at this length
MAX_MENU_PLAYS = 12  # the greeting plays at most this often per call, then goodbye
ACTION_URL_GRACE = 0.5  # a reply later than request_timeout + this is ignored
DECIDED_NO_DIGITS = "no further digits are taken once the input is decided"


class Phase(StrEnum):
    WAITING = "waiting"  # not answered yet
    GREETING = "greeting"  # greeting (maybe after a notice) playing; digits barge in
    MENU = "menu"  # greeting over or interrupted; collecting digits
    DECIDING = "deciding"  # a DTMF action URL is deciding the input
    DISA_PIN = "disa_pin"
    DISA_DESTINATION = "disa_destination"
    TRANSFER_PROMPT = "transfer_prompt"
    TRANSFERRING = "transferring"
    CLOSING = "closing"  # a last prompt plays, then hang up
    ENDED = "ended"


class Origin(StrEnum):
    """What caused a transfer."""

    NIGHT_MODE = "night_mode"
    CALLER_URL = "caller_action_url"
    TIMEOUT = "timeout_rule"
    MENU_RULE = "menu_rule"
    DIRECT_DIAL = "direct_dial"
    DTMF_URL = "dtmf_action_url"
    DISA = "disa"
    FAILURE_RULE = "failure_rule"


INPUT_CAUSED = frozenset({Origin.MENU_RULE, Origin.DIRECT_DIAL, Origin.DTMF_URL, Origin.DISA})
MENU_PHASES = frozenset({Phase.GREETING, Phase.MENU})
DISA_PHASES = frozenset({Phase.DISA_PIN, Phase.DISA_DESTINATION})


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """Facts about the call the runtime knows when it starts the flow."""

    session_id: str
    caller_number: str
    caller_name: str = ""
    disa_locked: bool = False  # the lock-out store says this caller may not use DISA now


@dataclass(frozen=True)
class _PendingTransfer:
    destination: str
    kind: TransferKind
    origin: Origin


@dataclass(frozen=True)
class _PendingRequest:
    request_id: int
    action_url: ActionUrl
    input: str
    by_hash: bool


class CallFlow:
    """One call's decisions. Feed it every event of the call, carry out what it returns."""

    def __init__(
        self,
        receptionist: Receptionist,
        server: ServerSettings,
        tz: tzinfo,
        context: CallContext,
    ) -> None:
        self.receptionist = receptionist
        self.server = server
        self.tz = tz
        self.context = context
        self.record = FlowRecord()
        self.phase = Phase.WAITING
        self._out: list[Action] = []
        self._now: datetime | None = None
        self._play_id = 0
        self._playing = False
        self._timers: dict[TimerName, int] = {}
        self._token = 0
        self._request_id = 0
        self._request: _PendingRequest | None = None
        self._caller_urls: list[ActionUrl] = []
        self._digits = ""
        self._repeats = 0
        self._menu_plays = 0
        self._disa_attempts = 0
        self._transfer: _PendingTransfer | None = None
        self._transfer_accepted = False
        self._transfer_answered = False
        self._exclude = parse_mask(receptionist.exclude_list)
        self._disa_allowed = parse_mask(server.disa.allowed_destinations)
        self._dtmf_urls = [
            (url, parse_mask(url.dtmf_mask))
            for url in receptionist.enabled_action_urls(ActionUrlType.DTMF)
        ]

    # --- the entry point -------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to carry out, in order."""
        if self.phase is Phase.ENDED:
            return []
        self._now = event.at
        match event:
            case CallAnswered():
                self._on_answered()
            case DigitReceived():
                self._on_digit(event.digit)
            case PromptFinished():
                if self._playing and event.play_id == self._play_id:
                    self._playing = False
                    self._on_prompt_finished()
            case TimerFired():
                if self._timers.get(event.timer) == event.token:
                    del self._timers[event.timer]
                    self._on_timer(event.timer)
            case ActionUrlReplied() | ActionUrlFailed():
                if self._request is not None and event.request_id == self._request.request_id:
                    self._on_action_url_result(event)
            case TransferProgressed():
                self._on_transfer_progress(event.sip_code)
            case TransferSucceeded():
                if self.phase is Phase.TRANSFERRING:
                    self._finish_transfer("succeeded", event.sip_code)
            case TransferFailed():
                if self.phase is Phase.TRANSFERRING:
                    self._transfer_failed(event.sip_code, event.reason)
            case CallerHungUp():
                self._on_caller_hung_up()
            case ServerHungUp():
                self._release()
                self.record.outcome, self.record.reason = Outcome.SERVER_HUNG_UP, event.reason
                self._end()
        out, self._out = self._out, []
        return out

    @property
    def now(self) -> datetime:
        assert self._now is not None
        return self._now

    # --- building blocks -------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _play(self, *prompts: Prompt) -> None:
        self._play_id += 1
        self._playing = True
        self._emit(PlayPrompt(prompts=tuple(prompts), play_id=self._play_id))

    def _stop_prompt(self) -> None:
        if self._playing:
            self._playing = False
            self._emit(StopPrompt())

    def _start_timer(self, timer: TimerName, seconds: float) -> None:
        self._token += 1
        self._timers[timer] = self._token
        self._emit(StartTimer(timer=timer, seconds=seconds, token=self._token))

    def _cancel_timer(self, *timers: TimerName) -> None:
        for timer in timers:
            if self._timers.pop(timer, None) is not None:
                self._emit(CancelTimer(timer=timer))

    def _cancel_request(self) -> None:
        if self._request is not None:
            self._emit(CancelActionUrl(request_id=self._request.request_id))
            self._request = None
            self._cancel_timer(TimerName.ACTION_URL)
        self._caller_urls = []

    def _greeting(self) -> Prompt:
        file_id = self.receptionist.prompt_file_id
        return FilePrompt(file_id=file_id) if file_id else SystemPrompt.GREETING

    def _close(self, prompts: tuple[Prompt, ...], outcome: Outcome, reason: str) -> None:
        """Play `prompts` (if any), then hang up."""
        self._cancel_timer(*list(self._timers))
        self._cancel_request()
        self.record.outcome, self.record.reason = outcome, reason
        if prompts:
            self.phase = Phase.CLOSING
            self._play(*prompts)
        else:
            self._stop_prompt()
            self._hang_up()

    def _hang_up(self) -> None:
        self._emit(Hangup(reason=self.record.reason))
        self._end()

    def _end(self) -> None:
        self.phase = Phase.ENDED
        self.record.ended_at = self.now

    # --- answer, greeting, menu ------------------------------------------------------------

    def _on_answered(self) -> None:
        if self.phase is not Phase.WAITING:
            return
        self.record.answered_at = self.now
        if self.receptionist.enable_night_mode or self.server.night_mode:
            self.record.night_mode = True
            self._run_rule(self.receptionist.night_mode_forward_rule, Origin.NIGHT_MODE)
            return
        caller_mask_urls = self.receptionist.enabled_action_urls(ActionUrlType.CALLER)
        self._caller_urls = [
            url
            for url in caller_mask_urls
            if parse_mask(url.caller_mask).matches(self.context.caller_number)
        ]
        self._next_caller_url()
        self._enter_menu()

    def _enter_menu(self, notice: SystemPrompt | None = None) -> None:
        """(Back) to the menu: an optional notice, then the greeting; digits barge in."""
        self._cancel_timer(TimerName.NO_INPUT, TimerName.INTER_DIGIT)
        self._digits = ""
        self._menu_plays += 1
        if self._menu_plays > MAX_MENU_PLAYS:
            reason = f"the menu played {MAX_MENU_PLAYS} times without a decision"
            self._close((SystemPrompt.GOODBYE,), Outcome.SERVER_HUNG_UP, reason)
            return
        self.phase = Phase.GREETING
        prompts: tuple[Prompt, ...] = (self._greeting(),)
        self._play(*(((notice,) if notice else ()) + prompts))

    def _on_prompt_finished(self) -> None:
        match self.phase:
            case Phase.GREETING:
                self.phase = Phase.MENU
                self._start_no_input_timer()
            case Phase.DISA_PIN | Phase.DISA_DESTINATION:
                if not self._digits:
                    self._start_no_input_timer()
            case Phase.TRANSFER_PROMPT:
                self._send_transfer()
            case Phase.CLOSING:
                self._hang_up()
            case _:
                pass

    def _start_no_input_timer(self) -> None:
        self._start_timer(TimerName.NO_INPUT, self.receptionist.timeout_forward_rule.timeout)

    def _record_input(self, stage: str, digits: str) -> None:
        self.record.inputs.append(InputRecord(at=self.now, stage=stage, digits=digits))

    def _on_digit(self, digit: str) -> None:
        if self.phase in MENU_PHASES or self.phase in DISA_PHASES:
            self._stop_prompt()
            if self.phase is Phase.GREETING:
                self.phase = Phase.MENU
            self._cancel_timer(TimerName.NO_INPUT, TimerName.INTER_DIGIT)
            self._collect(digit)
        else:
            self.record.digits_ignored += 1

    def _collect(self, digit: str) -> None:
        if digit == "#":
            self._complete(by_hash=True)
            return
        self._digits += digit
        if len(self._digits) >= MAX_INPUT_DIGITS:
            self._complete(by_hash=False)
            return
        interval = float(self.receptionist.dtmf_interval)
        if self.phase is Phase.MENU:
            immediate = self._rule_for(self._digits, hash_rules=False)
            if immediate is not None and not self._dtmf_url_could_match(self._digits):
                self._complete(by_hash=False)
                return
            if any(r.needs_hash and r.digits == self._digits for r in self._rules):
                interval = HASH_RULE_WAIT
        self._start_timer(TimerName.INTER_DIGIT, interval)

    def _complete(self, *, by_hash: bool) -> None:
        self._cancel_timer(TimerName.INTER_DIGIT, TimerName.NO_INPUT)
        entered, self._digits = self._digits, ""
        if self.phase is Phase.DISA_PIN:
            self._complete_pin(entered)
        elif self.phase is Phase.DISA_DESTINATION:
            self._complete_destination(entered)
        else:
            self._complete_menu(entered, by_hash=by_hash)

    def _on_timer(self, timer: TimerName) -> None:
        match timer:
            case TimerName.INTER_DIGIT:
                self._complete(by_hash=False)
            case TimerName.NO_INPUT if self.phase is Phase.MENU:
                self._no_input()
            case TimerName.NO_INPUT:
                self._complete(by_hash=False)  # DISA: an empty entry
            case TimerName.ACTION_URL:
                assert self._request is not None
                self._emit(CancelActionUrl(request_id=self._request.request_id))
                request_timeout = self._request.action_url.effective_request_timeout
                self._on_action_url_result(
                    ActionUrlFailed(
                        at=self.now,
                        request_id=self._request.request_id,
                        kind=FailureKind.TIMEOUT,
                        detail=f"no reply within {request_timeout:g} s",
                        latency_ms=(request_timeout + ACTION_URL_GRACE) * 1000,
                    )
                )
            case TimerName.TRANSFER:
                if self._transfer_answered:
                    self._finish_transfer("assumed", 200)
                else:
                    seconds = self.server.transfer_timeout
                    self._transfer_failed(408, f"no final transfer result within {seconds} s")

    def _no_input(self) -> None:
        rule = self.receptionist.timeout_forward_rule
        if self._repeats < rule.repeat_times:
            self._repeats += 1
            self._enter_menu()
        else:
            self._run_rule(rule, Origin.TIMEOUT)

    def _bad_input(self, notice: SystemPrompt) -> None:
        """Invalid input counts as one repeat (SPEC §3.6)."""
        if self._repeats < self.receptionist.timeout_forward_rule.repeat_times:
            self._repeats += 1
            self._enter_menu(notice)
        else:
            self._run_rule(self.receptionist.timeout_forward_rule, Origin.TIMEOUT, notice)

    # --- deciding complete input -----------------------------------------------------------

    @property
    def _rules(self) -> list[MenuRule]:
        return self.receptionist.custom_forward_rules

    def _rule_for(self, entered: str, *, hash_rules: bool) -> MenuRule | None:
        for rule in self._rules:
            if not rule.needs_hash and rule.user_input == entered:
                return rule
            if hash_rules and rule.needs_hash and rule.digits == entered:
                return rule
        return None

    def _dtmf_url_could_match(self, prefix: str) -> bool:
        return any(mask.could_extend_to_match(prefix) for _, mask in self._dtmf_urls)

    def _complete_menu(self, entered: str, *, by_hash: bool) -> None:
        self._record_input("menu", entered + ("#" if by_hash else ""))
        url = next((u for u, mask in self._dtmf_urls if entered and mask.matches(entered)), None)
        if url is not None:
            self._cancel_request()
            self.phase = Phase.DECIDING
            self._request_url(url, entered, by_hash=by_hash)
            return
        self._menu_or_dial(entered, by_hash=by_hash)

    def _menu_or_dial(self, entered: str, *, by_hash: bool) -> None:
        self.phase = Phase.MENU
        rule = self._rule_for(entered, hash_rules=True)
        if rule is None and by_hash and entered == "":
            rule = next((r for r in self._rules if r.user_input == "#"), None)
        if rule is not None:
            forward, why = choose_forward_rule(
                rule,
                self.now,
                tz=self.tz,
                global_hours=self.server.office_hours,
                holidays=self.server.holidays,
            )
            self.record.menu_rules.append(f"{rule.user_input}:{why}")
            self._run_rule(forward, Origin.MENU_RULE)
        elif EXTENSION_RE.fullmatch(entered):
            if self._exclude.matches(entered) or entered == self.receptionist.extension_number:
                self._bad_input(SystemPrompt.EXTENSION_BLOCKED)
            else:
                self._transfer_to(entered, TransferKind.NUMBER, Origin.DIRECT_DIAL)
        else:
            self._bad_input(SystemPrompt.INVALID_OPTION)

    def _run_rule(
        self,
        rule: ForwardRule | MenuForwardRule,
        origin: Origin,
        notice: SystemPrompt | None = None,
    ) -> None:
        match rule.action:
            case ForwardAction.FORWARD_TO_NUMBER | ForwardAction.FORWARD_TO_VOICEMAIL:
                assert rule.number is not None
                kind = (
                    TransferKind.VOICEMAIL
                    if rule.action is ForwardAction.FORWARD_TO_VOICEMAIL
                    else TransferKind.NUMBER
                )
                self._transfer_to(rule.number, kind, origin, notice)
            case ForwardAction.REPEAT:
                if origin is Origin.TIMEOUT:
                    self._repeats = 0
                self._enter_menu(notice)
            case ForwardAction.HANGUP:
                prompts = ((notice,) if notice else ()) + (SystemPrompt.GOODBYE,)
                self._close(prompts, Outcome.SERVER_HUNG_UP, f"{origin.value}: HANGUP")
            case ForwardAction.DISA:
                self._start_disa()

    # --- action URLs -----------------------------------------------------------------------

    def _request_url(self, url: ActionUrl, entered: str, *, by_hash: bool) -> None:
        self._request_id += 1
        self._request = _PendingRequest(self._request_id, url, entered, by_hash)
        self._emit(RequestActionUrl(request_id=self._request_id, action_url=url, input=entered))
        self._start_timer(TimerName.ACTION_URL, url.effective_request_timeout + ACTION_URL_GRACE)

    def _next_caller_url(self) -> None:
        if self._caller_urls:
            self._request_url(self._caller_urls.pop(0), "", by_hash=False)

    def _on_action_url_result(self, event: ActionUrlReplied | ActionUrlFailed) -> None:
        request = self._request
        assert request is not None
        self._request = None
        self._cancel_timer(TimerName.ACTION_URL)
        url = request.action_url
        is_caller = url.type is ActionUrlType.CALLER
        taking_over = isinstance(event, ActionUrlReplied) and (
            not is_caller or self.phase in MENU_PHASES
        )
        if isinstance(event, ActionUrlReplied):
            result = event.action if taking_over else f"ignored:{event.action}"
            status: int | None = event.http_status
            detail = event.destination or ""
        else:
            result, status, detail = event.kind.value, event.http_status, event.detail
        self.record.action_urls.append(
            ActionUrlRecord(
                at=self.now,
                name=url.name,
                type=url.type.value,
                method=url.method.value,
                result=result,
                http_status=status,
                latency_ms=event.latency_ms,
                detail=detail,
            )
        )
        if isinstance(event, ActionUrlFailed):
            if is_caller:
                self._next_caller_url()
            else:
                self._menu_or_dial(request.input, by_hash=request.by_hash)
            return
        if not taking_over:
            return
        self._caller_urls = []
        origin = Origin.CALLER_URL if is_caller else Origin.DTMF_URL
        match event.action:
            case "call":
                assert event.destination is not None
                self._stop_prompt()
                self._transfer_to(event.destination, TransferKind.NUMBER, origin)
            case "hangup":
                self._close((), Outcome.SERVER_HUNG_UP, f"{url.name}: action URL said hangup")
            case "repeat":
                self._enter_menu()

    # --- transfer --------------------------------------------------------------------------

    def _transfer_to(
        self,
        destination: str,
        kind: TransferKind,
        origin: Origin,
        notice: SystemPrompt | None = None,
    ) -> None:
        self._cancel_timer(TimerName.NO_INPUT, TimerName.INTER_DIGIT)
        self._cancel_request()
        self._transfer = _PendingTransfer(destination, kind, origin)
        prompts: list[Prompt] = [notice] if notice else []
        if origin in INPUT_CAUSED:
            file_id = self.receptionist.transfer_prompt_file_id
            if file_id:
                prompts.append(FilePrompt(file_id=file_id))
            elif self.server.builtin_transfer_prompt:
                prompts.append(SystemPrompt.TRANSFER_HOLD)
        if prompts:
            self.phase = Phase.TRANSFER_PROMPT
            self._play(*prompts)
        else:
            self._stop_prompt()
            self._send_transfer()

    def _send_transfer(self) -> None:
        transfer = self._transfer
        assert transfer is not None
        self.phase = Phase.TRANSFERRING
        self._transfer_accepted = self._transfer_answered = False
        template = (
            self.server.voicemail_uri_template if transfer.kind is TransferKind.VOICEMAIL else None
        )
        self._emit(
            Transfer(
                destination=transfer.destination, kind=transfer.kind, refer_to_template=template
            )
        )
        self.record.transfers.append(
            TransferRecord(
                at=self.now,
                destination=transfer.destination,
                kind=transfer.kind.value,
                origin=transfer.origin.value,
            )
        )
        self._start_timer(TimerName.TRANSFER, self.server.transfer_timeout)

    def _update_transfer(self, **changes: object) -> None:
        last = self.record.transfers[-1]
        self.record.transfers[-1] = dataclasses.replace(last, **changes)  # type: ignore[arg-type]

    def _on_transfer_progress(self, sip_code: int) -> None:
        if self.phase is not Phase.TRANSFERRING:
            return
        self._transfer_accepted = True
        if 200 <= sip_code < 300 and not self._transfer_answered:
            # Answered, but some targets never send a final NOTIFY that pjsip accepts:
            # wait a little, then take the transfer as done.
            self._transfer_answered = True
            self._start_timer(TimerName.TRANSFER, self.server.transfer_assume_done_after)

    def _finish_transfer(self, result: str, sip_code: int) -> None:
        self._cancel_timer(TimerName.TRANSFER)
        self._update_transfer(sip_code=sip_code, result=result)
        self.record.outcome = Outcome.TRANSFERRED
        self.record.reason = (
            "transfer taken as done: answered but no final NOTIFY"
            if result == "assumed"
            else "transferred"
        )
        self._hang_up()

    def _transfer_failed(self, sip_code: int, reason: str) -> None:
        self._cancel_timer(TimerName.TRANSFER)
        self._update_transfer(sip_code=sip_code, result="failed", reason=reason)
        transfer = self._transfer
        assert transfer is not None
        if transfer.origin is Origin.DIRECT_DIAL and sip_code in (404, 484):
            self._bad_input(SystemPrompt.EXTENSION_NOT_EXIST)
        elif transfer.origin is Origin.FAILURE_RULE:
            why = f"the failure rule's transfer failed too ({sip_code})"
            self._close((SystemPrompt.NOT_AVAILABLE,), Outcome.TRANSFER_FAILED, why)
        else:
            rule = self.receptionist.failure_forward_rule
            if rule.action is ForwardAction.HANGUP:
                why = f"transfer to {transfer.destination} failed ({sip_code})"
                prompts = (SystemPrompt.NOT_AVAILABLE, SystemPrompt.GOODBYE)
                self._close(prompts, Outcome.TRANSFER_FAILED, why)
            else:
                self._run_rule(rule, Origin.FAILURE_RULE, SystemPrompt.NOT_AVAILABLE)

    # --- DISA ------------------------------------------------------------------------------

    def _start_disa(self) -> None:
        self._cancel_request()
        self._disa_attempts = 0
        self._digits = ""
        if self.context.disa_locked:
            reason = "DISA is locked for this caller after repeated wrong PINs"
            self._close((SystemPrompt.NOT_AVAILABLE,), Outcome.SERVER_HUNG_UP, reason)
        elif self.receptionist.enable_pin:
            if self.receptionist.pin_hash is None:
                reason = "DISA needs a PIN but none is configured"
                self._close((SystemPrompt.NOT_AVAILABLE,), Outcome.SERVER_HUNG_UP, reason)
                return
            self.phase = Phase.DISA_PIN
            self._play(SystemPrompt.ENTER_PIN)
        else:
            self.phase = Phase.DISA_DESTINATION
            self._play(SystemPrompt.ENTER_DESTINATION)

    def _complete_pin(self, entered: str) -> None:
        self._record_input("pin", mask_digits(entered))
        pin_hash = self.receptionist.pin_hash
        if entered and pin_hash is not None and verify_pin(pin_hash, entered):
            self.record.disa_authenticated = True
            self._emit(DisaPinAccepted())
            self._disa_attempts = 0
            self.phase = Phase.DISA_DESTINATION
            self._play(SystemPrompt.ENTER_DESTINATION)
            return
        self._disa_attempts += 1
        if entered:
            self.record.disa_pin_failures += 1
            self._emit(DisaPinRejected(attempt=self._disa_attempts))
        if self._disa_attempts >= self.server.disa.pin_attempts:
            reason = f"{self._disa_attempts} wrong or missing PINs"
            self._close(
                (SystemPrompt.INVALID_PIN, SystemPrompt.GOODBYE), Outcome.SERVER_HUNG_UP, reason
            )
        else:
            self._play(SystemPrompt.INVALID_PIN, SystemPrompt.ENTER_PIN)

    def _complete_destination(self, entered: str) -> None:
        self._record_input("disa_destination", entered)
        if entered and self._disa_allowed.matches(entered):
            self._transfer_to(entered, TransferKind.NUMBER, Origin.DISA)
            return
        self._disa_attempts += 1
        if self._disa_attempts >= self.server.disa.pin_attempts:
            reason = f"{self._disa_attempts} DISA destinations refused by the allow-list"
            self._close(
                (SystemPrompt.NOT_AVAILABLE, SystemPrompt.GOODBYE), Outcome.SERVER_HUNG_UP, reason
            )
        else:
            self._play(SystemPrompt.NOT_AVAILABLE, SystemPrompt.ENTER_DESTINATION)

    # --- hang-up ---------------------------------------------------------------------------

    def _release(self) -> None:
        """Stop every timer, request and prompt of the call."""
        self._cancel_timer(*list(self._timers))
        self._cancel_request()
        self._stop_prompt()

    def _on_caller_hung_up(self) -> None:
        self._release()
        if self.phase is Phase.TRANSFERRING and self._transfer_accepted:
            # The PBX ended our leg after accepting the REFER: the usual end of a transfer.
            self._update_transfer(result="assumed")
            self.record.outcome = Outcome.TRANSFERRED
            self.record.reason = "the PBX ended the call after accepting the transfer"
        elif self.phase is Phase.CLOSING and self.record.outcome is not None:
            pass  # the caller left during our last prompt: the decision stands
        else:
            self.record.outcome = Outcome.CALLER_HUNG_UP
            self.record.reason = f"caller hung up during {self.phase.value}"
        self._end()
