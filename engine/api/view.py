"""What the HTTP API sees of the runtime: a narrow view (status, capacity, metrics, recent call
records, and applying a new snapshot of receptionists and files), never the runtime itself.
`engine.runtime.Runtime` implements it; tests may implement it in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.metrics import Metrics
from engine.model import Receptionist, ServerSettings


class RuntimeView(Protocol):
    @property
    def server(self) -> ServerSettings: ...

    @property
    def draining(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: new calls get 503, calls in progress go on."""
        ...

    @property
    def active_calls(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    @property
    def calls_total(self) -> int: ...

    @property
    def metrics(self) -> Metrics: ...

    def recent_records(self) -> Sequence[Mapping[str, Any]]:
        """The documents of the latest call records, oldest first."""
        ...

    def apply(self, receptionists: Mapping[str, Receptionist], files: Mapping[str, Path]) -> None:
        """New calls use these receptionists and converted prompt files (by id)."""
        ...
