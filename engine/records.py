"""Call records (SPEC §6): the typed `CallRecord` of one call (the flow's record and the SIP
facts), serialised to its JSON document only at the edges — a `CallRecords` sink (memory and
`calls.jsonl`, or the store) and the API, which read documents. PIN digits are already masked
by the flow; nothing here sees them.

`CallRecord`'s fields are the document's keys (the store's list filters name them too:
`tests/test_records.py` checks that every one exists).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from engine.flow.record import ActionUrlRecord, InputRecord, TransferRecord


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_document(value: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON-ready values."""
    return _plain(value)


@dataclass(kw_only=True)
class SipFacts:
    """What the SIP side saw of a call; the document holds only the facts that happened."""

    confirmed_at: str | None = None  # ISO 8601, when the ACK came
    disconnect_code: int | None = None
    disconnect_reason: str | None = None
    disconnected_by: Literal["caller", "server"] | None = None
    transfer_notify_codes: list[int] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in to_document(self).items()
            if value is not None and value != []
        }


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One call's record (SPEC §6)."""

    session_id: str
    receptionist_id: str | None
    receptionist: str
    extension_number: str
    caller_number: str
    caller_name: str
    source: str  # host:port the INVITE came from ([v6]:port)
    transport: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    outcome: str  # an `Outcome` value, or "unknown"
    reason: str
    transferred_to: str | None
    transfer_sip_code: int | None
    transfer_assumed: bool
    inputs: tuple[InputRecord, ...]
    action_urls: tuple[ActionUrlRecord, ...]
    transfers: tuple[TransferRecord, ...]
    menu_rules: tuple[str, ...]
    night_mode: bool
    disa_pin_failures: int
    disa_authenticated: bool
    digits_ignored: int
    dtmf_methods: dict[str, int]
    sip: SipFacts

    def document(self) -> dict[str, Any]:
        """The record's JSON document (what is stored, written and served)."""
        doc: dict[str, Any] = {
            f.name: to_document(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "sip"
        }
        doc["sip"] = self.sip.document()
        return doc


class CallRecords:
    """Keeps the latest records' documents in memory and appends each to a JSON-lines file."""

    def __init__(self, path: Path | None, keep: int = 1000) -> None:
        self.path = path
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.total = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: CallRecord) -> None:
        document = record.document()
        self.recent.append(document)
        self.total += 1
        if self.path is not None:
            line = json.dumps(document, separators=(",", ":")) + "\n"
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
