"""Actions: commands a `CallFlow` asks the runtime to carry out, in order."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.model import ActionUrl


class SystemPrompt(StrEnum):
    """Built-in prompts; the file stems under `prompts/<language>/`."""

    GREETING = "greeting"
    INVALID_OPTION = "invalid_option"
    EXTENSION_NOT_EXIST = "extension_not_exist"
    EXTENSION_BLOCKED = "extension_blocked"
    TRANSFER_HOLD = "transfer_hold"
    ENTER_PIN = "enter_pin"
    INVALID_PIN = "invalid_pin"
    ENTER_DESTINATION = "enter_destination"
    NOT_AVAILABLE = "not_available"
    GOODBYE = "goodbye"


@dataclass(frozen=True, kw_only=True)
class FilePrompt:
    """An uploaded prompt, by file id."""

    file_id: str


Prompt = SystemPrompt | FilePrompt


class TimerName(StrEnum):
    NO_INPUT = "no_input"  # timeout_forward_rule.timeout after the greeting
    INTER_DIGIT = "inter_digit"  # dtmf_interval (or 3 s for an N# rule) after a digit
    ACTION_URL = "action_url"  # guard: a reply later than this is ignored
    TRANSFER = "transfer"  # no final NOTIFY in time


class TransferKind(StrEnum):
    NUMBER = "number"
    VOICEMAIL = "voicemail"


@dataclass(frozen=True, kw_only=True)
class PlayPrompt:
    """Stop whatever plays, then play `prompts` in order, once; report `PromptFinished`."""

    prompts: tuple[Prompt, ...]
    play_id: int


@dataclass(frozen=True, kw_only=True)
class StopPrompt:
    pass


@dataclass(frozen=True, kw_only=True)
class StartTimer:
    """(Re)start `timer`; when it fires, report `TimerFired(timer, token)`."""

    timer: TimerName
    seconds: float
    token: int


@dataclass(frozen=True, kw_only=True)
class CancelTimer:
    timer: TimerName


@dataclass(frozen=True, kw_only=True)
class RequestActionUrl:
    """Send the action URL request; report `ActionUrlReplied` or `ActionUrlFailed`.
    `input` is empty for CALLER URLs and never holds PIN digits."""

    request_id: int
    action_url: ActionUrl
    input: str


@dataclass(frozen=True, kw_only=True)
class CancelActionUrl:
    request_id: int


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """Blind transfer (REFER). `refer_to_template` is set for voicemail: the runtime fills in
    `{number}` and `{domain}`; for a number the Refer-To is `sip:<destination>@<domain>`."""

    destination: str
    kind: TransferKind = TransferKind.NUMBER
    refer_to_template: str | None = None


@dataclass(frozen=True, kw_only=True)
class Hangup:
    reason: str


@dataclass(frozen=True, kw_only=True)
class DisaPinRejected:
    """A wrong PIN was entered (for the lock-out counters). Carries no digits."""

    attempt: int


@dataclass(frozen=True, kw_only=True)
class DisaPinAccepted:
    pass


Action = (
    PlayPrompt
    | StopPrompt
    | StartTimer
    | CancelTimer
    | RequestActionUrl
    | CancelActionUrl
    | Transfer
    | Hangup
    | DisaPinRejected
    | DisaPinAccepted
)
