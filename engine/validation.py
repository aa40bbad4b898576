"""pydantic's validation errors as vr-engine's field problems: one field path format
(``ivrs[0].action_urls[1].password``) and plain messages, for configuration files, the API and
the store alike.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

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


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class found by following `loc` from `model` (list items and optional fields
    included), or None where the path leaves models."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the same model
        if current is None:
            return None
        fields = current.model_fields
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class an annotation holds (`X`, `X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def did_you_mean(model: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    """ " (did you mean `x`?)" for an unknown field whose name is close to a known one."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    parent = _model_at(model, loc[:-1])
    if parent is None:
        return ""
    names = [f.alias or name for name, f in parent.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def problems_from(
    error: ValidationError,
    prefix: Sequence[int | str] = (),
    model: type[BaseModel] | None = None,
) -> list[FieldProblem]:
    """Every problem of a pydantic error, with field paths and plain messages; with the
    `model` validated, an unknown field names the known one it is closest to."""
    problems = []
    for item in error.errors(include_url=False):
        message = _MESSAGES.get(item["type"], item["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            message += did_you_mean(model, item["loc"])
        problems.append(FieldProblem(field_path([*prefix, *item["loc"]]), message))
    return problems
