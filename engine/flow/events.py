"""Events: past-tense facts fed to a `CallFlow`. Each carries `at`, the instant it happened
(timezone-aware), stamped by the runtime: the flow reads no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from engine.flow.actions import TimerName

DtmfMethod = Literal["rfc4733", "sip-info", "inband"]


class FailureKind(StrEnum):
    """Why an action URL request failed."""

    CONNECT_ERROR = "connect_error"  # refused, unreachable, DNS failure
    CONNECT_TIMEOUT = "connect_timeout"
    TIMEOUT = "timeout"  # no complete reply within request_timeout
    TLS_ERROR = "tls_error"
    HTTP_STATUS = "http_status"  # non-2xx
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    INVALID_REPLY = "invalid_reply"  # wrong types, status_code != 200, unknown action, ...
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class CallAnswered:
    """The call is answered and confirmed: media flows."""

    at: datetime


@dataclass(frozen=True, kw_only=True)
class DigitReceived:
    """One key press. `digit` is in clear here; the flow masks PIN digits in everything
    it emits, and `repr` never shows the digit."""

    at: datetime
    digit: str = field(repr=False)
    method: DtmfMethod = "rfc4733"


@dataclass(frozen=True, kw_only=True)
class PromptFinished:
    """The prompt sequence started by `PlayPrompt(play_id=…)` played to its end."""

    at: datetime
    play_id: int


@dataclass(frozen=True, kw_only=True)
class TimerFired:
    at: datetime
    timer: TimerName
    token: int


@dataclass(frozen=True, kw_only=True)
class ActionUrlReplied:
    """A valid reply (SPEC §4) to `RequestActionUrl(request_id=…)`."""

    at: datetime
    request_id: int
    action: Literal["call", "hangup", "repeat"]
    destination: str | None = None
    http_status: int = 200
    latency_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ActionUrlFailed:
    at: datetime
    request_id: int
    kind: FailureKind
    detail: str = ""
    http_status: int | None = None
    latency_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TransferProgressed:
    """A provisional or 2xx NOTIFY that is not final (the target is ringing, or answered
    but its final NOTIFY has not come)."""

    at: datetime
    sip_code: int


@dataclass(frozen=True, kw_only=True)
class TransferSucceeded:
    at: datetime
    sip_code: int = 200


@dataclass(frozen=True, kw_only=True)
class TransferFailed:
    """The REFER was rejected, or the final NOTIFY carried a failure."""

    at: datetime
    sip_code: int
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class CallerHungUp:
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ServerHungUp:
    """The call ended from our side without the flow asking (shutdown, a SIP failure)."""

    at: datetime
    reason: str


Event = (
    CallAnswered
    | DigitReceived
    | PromptFinished
    | TimerFired
    | ActionUrlReplied
    | ActionUrlFailed
    | TransferProgressed
    | TransferSucceeded
    | TransferFailed
    | CallerHungUp
    | ServerHungUp
)
