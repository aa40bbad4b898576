"""DISA lock-out: callers (by number and by source address) with too many failed calls.

A call counts as failed at its first wrong PIN. `max_failed_calls` failed calls within
`failure_window` seconds lock that caller number and that source address for `lockout`
seconds. Time is passed in, so the policy is testable without a clock; a `LockoutSink`
(the store) keeps both across restarts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.model import DisaSettings


class LockoutSink(Protocol):
    """Where failed calls and lock-outs are recorded to survive a restart (the store)."""

    def failure(self, key: str, at: float) -> None: ...

    def locked(self, key: str, until: float) -> None: ...


@dataclass
class DisaLockouts:
    settings: DisaSettings
    sink: LockoutSink | None = None
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def keys(caller_number: str, source_host: str) -> tuple[str, str]:
        return f"number:{caller_number}", f"source:{source_host}"

    def is_locked(self, caller_number: str, source_host: str, now: float) -> bool:
        return any(
            self._locked_until.get(key, 0.0) > now for key in self.keys(caller_number, source_host)
        )

    def record_failed_call(self, caller_number: str, source_host: str, now: float) -> list[str]:
        """Count one failed call; return the keys that became locked by it."""
        newly_locked = []
        for key in self.keys(caller_number, source_host):
            window = self._failures.setdefault(key, deque())
            window.append(now)
            if self.sink is not None:
                self.sink.failure(key, now)
            while window and window[0] <= now - self.settings.failure_window:
                window.popleft()
            if (
                len(window) >= self.settings.max_failed_calls
                and not self._locked_until.get(key, 0.0) > now
            ):
                self._locked_until[key] = now + self.settings.lockout
                window.clear()
                newly_locked.append(key)
                if self.sink is not None:
                    self.sink.locked(key, self._locked_until[key])
        return newly_locked

    def restore(self, locked: Mapping[str, float], failures: Mapping[str, Sequence[float]]) -> None:
        """Take back the lock-outs and failed calls recorded before a restart."""
        self._locked_until.update(locked)
        for key, times in failures.items():
            self._failures[key] = deque(sorted(times))

    def locked(self, now: float) -> dict[str, float]:
        """Keys locked at `now`, with the time their lock ends."""
        return {key: until for key, until in self._locked_until.items() if until > now}
