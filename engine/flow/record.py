"""The call record (SPEC §6) as the flow sees it: inputs (PIN masked), action URL outcomes,
transfer attempts and the final outcome. The runtime adds SIP-level facts and stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    TRANSFERRED = "transferred"
    CALLER_HUNG_UP = "hung_up_by_caller"
    SERVER_HUNG_UP = "hung_up_by_server"
    TRANSFER_FAILED = "failed_transfer"


@dataclass(frozen=True, kw_only=True)
class InputRecord:
    """One complete input. `digits` is masked (`*`) for a PIN."""

    at: datetime
    stage: str  # menu | pin | disa_destination
    digits: str


@dataclass(frozen=True, kw_only=True)
class ActionUrlRecord:
    at: datetime
    name: str
    type: str
    method: str
    result: str  # call | hangup | repeat | <FailureKind> | ignored:<action>
    http_status: int | None
    latency_ms: float
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class TransferRecord:
    at: datetime
    destination: str
    kind: str
    origin: str
    sip_code: int | None = None
    result: str = "pending"  # pending | succeeded | assumed | failed
    reason: str = ""


@dataclass(kw_only=True)
class FlowRecord:
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    night_mode: bool = False
    inputs: list[InputRecord] = field(default_factory=list)
    action_urls: list[ActionUrlRecord] = field(default_factory=list)
    transfers: list[TransferRecord] = field(default_factory=list)
    menu_rules: list[str] = field(default_factory=list)  # "<user_input>:<why>"
    disa_pin_failures: int = 0
    disa_authenticated: bool = False
    digits_ignored: int = 0
    outcome: Outcome | None = None
    reason: str = ""

    @property
    def transferred_to(self) -> str | None:
        done = [t for t in self.transfers if t.result in ("succeeded", "assumed")]
        return done[-1].destination if done else None
