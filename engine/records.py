"""Call records (SPEC §6): one JSON document per call, built from the flow's record and the
SIP facts, kept in memory (recent calls) and appended to `calls.jsonl` in the data directory.
PIN digits are already masked by the flow; nothing here sees them."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import deque
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any


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


class CallRecords:
    """Keeps the latest records in memory and appends each to a JSON-lines file."""

    def __init__(self, path: Path | None, keep: int = 1000) -> None:
        self.path = path
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.total = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        self.recent.append(record)
        self.total += 1
        if self.path is not None:
            line = json.dumps(record, separators=(",", ":")) + "\n"
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
