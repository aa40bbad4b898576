"""A harness that plays the runtime's part for a `CallFlow`: a virtual clock, timers fired by
hand or by `wait`, prompts finished on request, and every action kept for assertions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from engine.flow.actions import (
    Action,
    CancelActionUrl,
    CancelTimer,
    Hangup,
    PlayPrompt,
    Prompt,
    RequestActionUrl,
    StartTimer,
    StopPrompt,
    TimerName,
    Transfer,
)
from engine.flow.callflow import CallContext, CallFlow
from engine.flow.events import (
    ActionUrlFailed,
    ActionUrlReplied,
    CallAnswered,
    CallerHungUp,
    DigitReceived,
    Event,
    FailureKind,
    PromptFinished,
    TimerFired,
    TransferFailed,
    TransferProgressed,
    TransferSucceeded,
)
from engine.model import Receptionist, ServerSettings

# A Wednesday, 10:00 in Berlin (CET, UTC+1).
T0 = datetime(2026, 1, 14, 9, 0, tzinfo=UTC)
PIN = "135790"


def receptionist(**fields: Any) -> Receptionist:
    data: dict[str, Any] = {"name": "Main", "extension_number": "800"}
    data.update(fields)
    return Receptionist.model_validate(data)


def server(**fields: Any) -> ServerSettings:
    data: dict[str, Any] = {"timezone": "Europe/Berlin"}
    data.update(fields)
    return ServerSettings.model_validate(data)


def fwd(action: str, number: str | None = None) -> dict[str, Any]:
    return {"action": action, "number": number} if number else {"action": action}


def menu(user_input: str, action: str, number: str | None = None, **more: Any) -> dict[str, Any]:
    return {"user_input": user_input, "office_hours_forward_rule": fwd(action, number), **more}


@dataclass
class Harness:
    flow: CallFlow
    now: datetime = T0
    actions: list[Action] = field(default_factory=list)
    timers: dict[TimerName, tuple[datetime, int]] = field(default_factory=dict)
    playing: tuple[Prompt, ...] | None = None
    play_id: int = 0
    requests: dict[int, RequestActionUrl] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    hung_up: Hangup | None = None

    @classmethod
    def start(
        cls,
        ivr: Receptionist | None = None,
        srv: ServerSettings | None = None,
        *,
        caller: str = "1001",
        disa_locked: bool = False,
        at: datetime = T0,
    ) -> Harness:
        srv = srv or server()
        context = CallContext(
            session_id="s-1", caller_number=caller, caller_name="Ann", disa_locked=disa_locked
        )
        flow = CallFlow(ivr or receptionist(), srv, ZoneInfo(srv.timezone), context)
        return cls(flow=flow, now=at)

    # --- feeding events --------------------------------------------------------------------

    def send(self, event: Event) -> list[Action]:
        out = self.flow.handle(event)
        self.actions.extend(out)
        for action in out:
            match action:
                case PlayPrompt():
                    self.playing, self.play_id = action.prompts, action.play_id
                case StopPrompt():
                    self.playing = None
                case StartTimer():
                    due = self.now + timedelta(seconds=action.seconds)
                    self.timers[action.timer] = (due, action.token)
                case CancelTimer():
                    self.timers.pop(action.timer, None)
                case RequestActionUrl():
                    self.requests[action.request_id] = action
                case CancelActionUrl():
                    self.requests.pop(action.request_id, None)
                case Transfer():
                    self.transfers.append(action)
                case Hangup():
                    self.hung_up = action
                    self.playing = None
                case _:
                    pass
        return out

    def answer(self) -> list[Action]:
        return self.send(CallAnswered(at=self.now))

    def press(self, keys: str, gap: float = 0.2, method: str = "rfc4733") -> list[Action]:
        out: list[Action] = []
        for index, key in enumerate(keys):
            if index:
                self.wait(gap)
            out += self.send(DigitReceived(at=self.now, digit=key, method=method))  # type: ignore[arg-type]
        return out

    def prompt_ends(self) -> list[Action]:
        assert self.playing is not None, "nothing is playing"
        self.playing = None
        return self.send(PromptFinished(at=self.now, play_id=self.play_id))

    def wait(self, seconds: float) -> list[Action]:
        """Advance the clock, firing due timers in order (prompts keep playing)."""
        end = self.now + timedelta(seconds=seconds)
        out: list[Action] = []
        while True:
            due = [(when, name) for name, (when, _) in self.timers.items() if when <= end]
            if not due:
                break
            when, name = min(due)
            self.now = when
            _, token = self.timers.pop(name)
            out += self.send(TimerFired(at=self.now, timer=name, token=token))
        self.now = end
        return out

    def fire(self, timer: TimerName) -> list[Action]:
        when, token = self.timers.pop(timer)
        self.now = max(self.now, when)
        return self.send(TimerFired(at=self.now, timer=timer, token=token))

    def last_request(self) -> RequestActionUrl:
        return self.actions_of(RequestActionUrl)[-1]

    def reply(self, action: str, destination: str | None = None) -> list[Action]:
        request = self.last_request()
        self.requests.pop(request.request_id, None)
        return self.send(
            ActionUrlReplied(
                at=self.now,
                request_id=request.request_id,
                action=action,
                destination=destination,  # type: ignore[arg-type]
            )
        )

    def fail_request(self, kind: FailureKind = FailureKind.CONNECT_ERROR) -> list[Action]:
        request = self.last_request()
        self.requests.pop(request.request_id, None)
        return self.send(ActionUrlFailed(at=self.now, request_id=request.request_id, kind=kind))

    def transfer_progress(self, code: int) -> list[Action]:
        return self.send(TransferProgressed(at=self.now, sip_code=code))

    def transfer_ok(self) -> list[Action]:
        return self.send(TransferSucceeded(at=self.now))

    def transfer_fails(self, code: int) -> list[Action]:
        return self.send(TransferFailed(at=self.now, sip_code=code, reason="x"))

    def hang_up(self) -> list[Action]:
        return self.send(CallerHungUp(at=self.now))

    # --- reading what happened -------------------------------------------------------------

    def actions_of(self, kind: type[Any]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def transferred_to(self) -> str | None:
        return self.transfers[-1].destination if self.transfers else None

    def clean(self) -> bool:
        """No timer, prompt or request left behind."""
        return not self.timers and self.playing is None and not self.requests
