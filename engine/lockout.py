"""DISA lock-out: callers (by number and by source address) with too many failed calls.

A call counts as failed at its first wrong PIN. `max_failed_calls` failed calls within
`failure_window` seconds lock that caller number and that source address for `lockout`
seconds. Time is passed in, so the policy is testable without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine.model import DisaSettings


@dataclass
class DisaLockouts:
    settings: DisaSettings
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
            while window and window[0] <= now - self.settings.failure_window:
                window.popleft()
            if (
                len(window) >= self.settings.max_failed_calls
                and not self._locked_until.get(key, 0.0) > now
            ):
                self._locked_until[key] = now + self.settings.lockout
                window.clear()
                newly_locked.append(key)
        return newly_locked

    def locked(self, now: float) -> dict[str, float]:
        """Keys locked at `now`, with the time their lock ends."""
        return {key: until for key, until in self._locked_until.items() if until > now}
