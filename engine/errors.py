"""The one exception hierarchy of vr-engine.

    VrError                      anything vr-engine raises on purpose
    ├── ConfigError              a configuration (file or API payload) is invalid; carries
    │                            every problem found, each with its field path
    ├── PromptError              a built-in or uploaded prompt is missing or unusable
    └── TelephonyError           the SIP stack could not start or serve (port in use, ...)

Every message says what was wrong and, where there is one, how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass


class VrError(Exception):
    """Base of every error vr-engine raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: `path` like ``ivrs[0].pin`` and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(VrError):
    """A configuration is invalid. `problems` lists every problem found, not just the first."""

    def __init__(self, problems: list[FieldProblem], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} error(s):\n{lines}")


class PromptError(VrError):
    """A prompt file is missing, unreadable or not in the playback format."""


class TelephonyError(VrError):
    """The SIP stack could not start or could not carry out a command."""
