"""The one exception hierarchy of vr-engine.

    VrError                        anything vr-engine raises on purpose
    ├── ConfigError                a configuration (file or API payload) is invalid; carries
    │                              every problem found (`FieldProblem`), each with its field path
    ├── PromptError                a built-in or uploaded prompt is missing or unusable
    ├── ConversionRefused          an uploaded audio file cannot be converted (engine.convert)
    ├── ReplyError                 an action URL's reply broke the contract (engine.action_urls)
    ├── ApiError                   an HTTP API error, answered in PortSIP's envelope (engine.api)
    ├── StoreError                 the store refused an operation (engine.store); `detail` maps
    │   │                          field paths to what is wrong. The API answers:
    │   ├── NotFound               404  no such receptionist, action URL, file, upload, record
    │   ├── Conflict               409  a unique extension, or something still in use
    │   │   └── Stale              409  a read-modify-write lost a race
    │   ├── Invalid                400  values not acceptable (every problem at once)
    │   │   └── QueryError         400  a filter/orderby/top/skip parameter
    │   ├── TooLarge               413  an upload over the size limit
    │   ├── Forbidden              403  the upload token does not match
    │   └── RangeMismatch          416  an upload chunk not where the upload ends
    └── TelephonyError             the SIP stack could not start or serve
        ├── TelephonyStartError    ... could not start (address in use, bad host, init failure)
        └── TelephonyBuildError    ... the installed pjsua2 lacks what the engine relies on

Every message says what was wrong and, where there is one, how to fix it. Modules raise these
and re-export none of them under other names; internal control-flow exceptions that never
leave their module (`action_urls._Failure`) are not part of the tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.flow.events import FailureKind


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


class TelephonyStartError(TelephonyError):
    """The SIP stack could not start (address in use, bad host, pjsua init failure)."""


class TelephonyBuildError(TelephonyError):
    """The installed pjsua2 lacks what the engine relies on (exit code 2: install another)."""


class ConversionRefused(VrError):
    """The file cannot be converted; the message says why and names the file (not its path)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplyError(VrError):
    """An action URL's reply broke the contract; `kind` is INVALID_JSON or INVALID_REPLY."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class ApiError(VrError):
    """An error answered with PortSIP's envelope (`{"errors": [{code, message, detail}]}`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = dict(detail or {})
        self.headers = dict(headers or {})


# --- the store's refusals (engine.store); the API answers each with its status ----------


class StoreError(VrError):
    """The store refused an operation; `detail` maps field paths to what is wrong."""

    def __init__(self, message: str, detail: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = dict(detail or {})


class NotFound(StoreError):
    """No such receptionist, action URL, file, upload or call record."""


class Conflict(StoreError):
    """The write would break uniqueness (extension number) or remove something in use."""


class Invalid(StoreError):
    """The request is well-formed but its values are not acceptable (every problem at once)."""


class Stale(Conflict):
    """A read-modify-write lost a race: the row changed since it was read."""


class TooLarge(StoreError):
    """An upload is over the size limit."""


class Forbidden(StoreError):
    """A credential of the request (the upload token) does not match."""


class RangeMismatch(StoreError):
    """An upload chunk does not start where the upload ends."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, {"Content-Range": message})
        self.size = size


class QueryError(Invalid):
    """A filter, search or orderby the store cannot run; `detail` names the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}", {parameter: message})
