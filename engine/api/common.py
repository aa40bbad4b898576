"""What the resource routers share: the API context (store, runtime, change notification),
request bodies, list options, validation problems and the PortSIP-shaped views.

Views are built from whitelists of what may be shown: a receptionist's `pin` (its hash) and an
action URL's `password`, `token` and `signing_secret` are write-only and never leave here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Query, Request
from pydantic import ValidationError

from engine.api.errors import invalid
from engine.api.view import RuntimeView
from engine.errors import ApiError
from engine.keyed_locks import KeyedLocks
from engine.store import (
    MAX_SKIP,
    MAX_TOP,
    SECRET_FIELDS,
    FileInfo,
    ListOptions,
    Snapshot,
    StoreBackend,
    StoredActionUrl,
    StoredReceptionist,
)
from engine.uploads import Uploads
from engine.validation import problems_from

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_JSON_BYTES = 1024 * 1024

# Read-only fields of PortSIP's responses, ignored when a client sends them back.
RECEPTIONIST_READ_ONLY = frozenset(
    {
        "id",
        "prompt_file_name",
        "prompt_file_size",
        "prompt_file_url",
        "transfer_prompt_file_name",
        "transfer_prompt_file_size",
        "transfer_prompt_file_url",
    }
)
ACTION_URL_READ_ONLY = frozenset({"id"})
RECEPTIONIST_WRITE_ONLY = frozenset({"pin"})

# A model-level rule has no field of its own; its problem is reported under the first of these
# field names that its message mentions (so a form can show it next to that field).
RECEPTIONIST_ROOT_FIELDS = ("pin",)
ACTION_URL_ROOT_FIELDS = ("username", "password", "token", "dtmf_mask", "caller_mask")


@dataclass
class ApiContext:
    """What handlers need: the store, the runtime (read only), and the change hook."""

    store: StoreBackend
    runtime: RuntimeView
    is_serving: Callable[[], bool]
    on_change: Callable[[Snapshot], None]
    uploads: Uploads
    applied_version: int = field(default=-1)
    # partial updates of one resource run one at a time (read, merge, validate, write)
    updates: KeyedLocks = field(default_factory=KeyedLocks)

    async def write(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store write, then publish a fresh snapshot to `on_change`.

        The snapshot is taken on the store's thread right after the write and handed to the
        loop before the write's result, so a client that got a 2xx can rely on the next call
        seeing the change — even if the client went away in between."""
        loop = asyncio.get_running_loop()

        def job() -> T:
            result = fn(*args, **kwargs)
            self._publish(loop)
            return result

        return await self.store.run(job)

    async def refresh(self) -> None:
        """Publish a fresh snapshot (after writes done outside `write`)."""
        loop = asyncio.get_running_loop()
        await self.store.run(self._publish, loop)

    def _publish(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            snapshot = self.store.snapshot()
        except Exception:
            log.exception("could not build a receptionist snapshot after a write")
            return
        loop.call_soon_threadsafe(self._apply, snapshot)

    def _apply(self, snapshot: Snapshot) -> None:
        if snapshot.version <= self.applied_version:
            return
        self.applied_version = snapshot.version
        try:
            self.on_change(snapshot)
        except Exception:
            log.exception("the on_change hook failed")

    def serving(self) -> bool:
        return self.is_serving() and not self.runtime.draining


def apply_to_runtime(runtime: RuntimeView) -> Callable[[Snapshot], None]:
    """The default change hook: new calls use the snapshot's receptionists and files."""

    def apply(snapshot: Snapshot) -> None:
        runtime.apply(snapshot.receptionists, snapshot.files)

    return apply


# --- requests ------------------------------------------------------------------------------


async def read_capped(body: AsyncIterator[bytes], limit: int) -> bytes:
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > limit:
            raise ApiError(
                413, "PAYLOAD_TOO_LARGE", f"the request body is larger than {limit} bytes"
            )
    return bytes(data)


async def read_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    raw = await read_capped(request.stream(), MAX_JSON_BYTES)
    if not raw.strip():
        raise invalid({"body": "is empty; send a JSON object"})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid({"body": f"is not valid JSON ({error})"}) from None
    if not isinstance(data, dict):
        raise invalid({"body": "must be a JSON object"})
    return data


def list_options(
    filter: Annotated[str | None, Query(max_length=2000)] = None,
    search: Annotated[str | None, Query(max_length=256)] = None,
    orderby: Annotated[str | None, Query(max_length=256)] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    top: Annotated[int, Query(ge=1, le=MAX_TOP)] = MAX_TOP,
) -> ListOptions:
    """PortSIP's list options (`top` 1..100, default 100)."""
    return ListOptions(filter=filter, search=search, orderby=orderby, skip=skip, top=top)


def validation_detail(error: ValidationError, root_fields: Sequence[str]) -> dict[str, str]:
    """Every problem of a model validation as {field path: message}."""
    detail: dict[str, str] = {}
    for problem in problems_from(error):
        path = problem.path or next(
            (name for name in root_fields if re.search(rf"\b{name}\b", problem.message)), "body"
        )
        detail[path] = f"{detail[path]}; {problem.message}" if path in detail else problem.message
    return detail


def without(data: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in names}


# --- views ---------------------------------------------------------------------------------


def blob_url(digest: str) -> str:
    return f"/api/blobs/{digest}"


def file_view(info: FileInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "size": info.size,
        "media_type": info.media_type,
        "created_at": info.created_at,
        "duration": round(info.duration, 3),
        "digest": f"sha256:{info.digest}",
        "url": blob_url(info.digest),
    }


def without_nulls(value: Any) -> Any:
    """`value` with every `null` member of its objects left out (also in nested objects and
    lists): PortSIP's schemas declare no field nullable, so an unset optional field is absent."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def receptionist_view(stored: StoredReceptionist) -> dict[str, Any]:
    """A receptionist as PortSIP shows it: no PIN, with the prompt files' read-only fields, and
    no `null`s (an unset optional field is absent)."""
    doc = without(stored.doc, RECEPTIONIST_WRITE_ONLY | {"action_urls"})
    view: dict[str, Any] = {"id": stored.id, **doc}
    for prefix, info in (
        ("prompt_file", stored.prompt_file),
        ("transfer_prompt_file", stored.transfer_prompt_file),
    ):
        if info is not None:
            view[f"{prefix}_name"] = info.name
            view[f"{prefix}_size"] = info.size
            view[f"{prefix}_url"] = blob_url(info.digest)
    result: dict[str, Any] = without_nulls(view)
    return result


def action_url_view(stored: StoredActionUrl) -> dict[str, Any]:
    """An action URL without its write-only secrets and without `null`s."""
    result: dict[str, Any] = without_nulls(
        {"id": stored.id, **without(stored.doc, frozenset(SECRET_FIELDS))}
    )
    return result
