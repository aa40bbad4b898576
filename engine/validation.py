"""pydantic's validation errors as vr-engine's field problems: one field path format
(``ivrs[0].action_urls[1].password``) and plain messages, for configuration files, the API and
the store alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from engine.errors import FieldProblem

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
}


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic location as a field path: ``('ivrs', 0, 'pin')`` → ``ivrs[0].pin``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def problems_from(error: ValidationError, prefix: Sequence[int | str] = ()) -> list[FieldProblem]:
    """Every problem of a pydantic error, with field paths and plain messages."""
    problems = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(FieldProblem(field_path([*prefix, *item["loc"]]), message))
    return problems
