"""`/api/ivrs` and `/api/ivrs/{id}/action_urls`: PortSIP's receptionist resources.

Create is `POST /api/ivrs` → 201 `{"id"}`; update is `POST /api/ivrs/{id}` with the fields to
replace (the rest stays; the whole receptionist is validated again); delete is
`POST …/destroy` → 204. A PIN arrives in clear, is checked against the PIN policy and stored
as its hash only; no response ever carries it. Action URLs are managed only under their
receptionist (an `action_urls` field in a receptionist body is refused).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from engine.api.common import (
    ACTION_URL_READ_ONLY,
    ACTION_URL_ROOT_FIELDS,
    RECEPTIONIST_READ_ONLY,
    RECEPTIONIST_ROOT_FIELDS,
    ApiContext,
    action_url_view,
    list_options,
    read_object,
    receptionist_view,
    validation_detail,
    without,
)
from engine.api.errors import invalid, not_found
from engine.model import TRUSTED_STORE, ActionUrl, Receptionist
from engine.store import ListOptions, StoredReceptionist


def _validate_receptionist(
    data: dict[str, Any], *, trusted: bool
) -> tuple[Receptionist | None, dict[str, str]]:
    try:
        context = {TRUSTED_STORE: True} if trusted else None
        return Receptionist.model_validate(data, context=context), {}
    except ValidationError as error:
        return None, validation_detail(error, RECEPTIONIST_ROOT_FIELDS)


def _validate_action_url(data: dict[str, Any]) -> ActionUrl:
    try:
        return ActionUrl.model_validate(data)
    except ValidationError as error:
        raise invalid(validation_detail(error, ACTION_URL_ROOT_FIELDS)) from None


def ivrs_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/api/ivrs")
    store = ctx.store

    def reference_problems(data: dict[str, Any]) -> dict[str, str]:
        """Unknown prompt file ids and holiday names (store thread)."""
        problems: dict[str, str] = {}
        for name in ("prompt_file_id", "transfer_prompt_file_id"):
            value = data.get(name)
            if isinstance(value, str) and value and store.missing_files([value]):
                problems[name] = f"no file with id {value!r} (upload it at /api/blobs/uploads)"
        known = {holiday.name for holiday in ctx.runtime.server.holidays}
        rules = data.get("custom_forward_rules")
        for r_index, rule in enumerate(rules if isinstance(rules, list) else []):
            names = rule.get("holidays") if isinstance(rule, dict) else None
            for h_index, name in enumerate(names if isinstance(names, list) else []):
                if isinstance(name, str) and name not in known:
                    problems[f"custom_forward_rules[{r_index}].holidays[{h_index}]"] = (
                        f"no holiday named {name!r} in the server's holidays"
                    )
        return problems

    async def checked(data: dict[str, Any], *, trusted: bool) -> Receptionist:
        problems: dict[str, str] = {}
        for name in ("prompt_file_id", "transfer_prompt_file_id"):
            if data.get(name) == "":
                data = {**data, name: None}  # an empty id means "no file", as null does
        if "action_urls" in data:
            problems["action_urls"] = "manage action URLs at /api/ivrs/{id}/action_urls"
            data = without(data, frozenset({"action_urls"}))
        # off the loop: a PIN in clear is hashed here (PBKDF2, tens of milliseconds)
        model, model_problems = await asyncio.to_thread(
            _validate_receptionist, data, trusted=trusted
        )
        problems.update(model_problems)
        problems.update(await store.run(reference_problems, data))
        if problems or model is None:
            raise invalid(problems)
        return model

    async def stored_or_404(receptionist_id: str) -> StoredReceptionist:
        stored = await store.run(store.get_receptionist, receptionist_id)
        if stored is None:
            raise not_found(f"no receptionist {receptionist_id!r}")
        return stored

    @router.get("")
    async def list_ivrs(options: Annotated[ListOptions, Depends(list_options)]) -> Any:
        page = await store.run(store.list_receptionists, options)
        return {"count": page.count, "items": [receptionist_view(item) for item in page.items]}

    @router.post("", status_code=201)
    async def create_ivr(request: Request) -> Any:
        data = without(await read_object(request), RECEPTIONIST_READ_ONLY)
        model = await checked(data, trusted=False)
        new_id = await ctx.write(store.create_receptionist, model)
        return JSONResponse({"id": new_id}, status_code=201)

    @router.get("/{receptionist_id}")
    async def get_ivr(receptionist_id: str) -> Any:
        return receptionist_view(await stored_or_404(receptionist_id))

    @router.post("/{receptionist_id}")
    async def update_ivr(receptionist_id: str, request: Request) -> Any:
        body = without(await read_object(request), RECEPTIONIST_READ_ONLY)
        async with ctx.updates.hold(f"ivr:{receptionist_id}"):
            stored = await stored_or_404(receptionist_id)
            # A PIN in the body is new (in clear, checked by the policy); otherwise the stored
            # hash is carried over and accepted as such.
            model = await checked({**stored.doc, **body}, trusted="pin" not in body)
            # the revision guards against a writer outside this process (409 if it changed)
            await ctx.write(
                store.update_receptionist, receptionist_id, model, revision=stored.revision
            )
        return receptionist_view(await stored_or_404(receptionist_id))

    @router.post("/{receptionist_id}/destroy", status_code=204)
    async def destroy_ivr(receptionist_id: str) -> Response:
        if not await ctx.write(store.delete_receptionist, receptionist_id):
            raise not_found(f"no receptionist {receptionist_id!r}")
        return Response(status_code=204)

    @router.get("/{receptionist_id}/status")
    async def ivr_status(receptionist_id: str) -> Any:
        stored = await stored_or_404(receptionist_id)
        online = ctx.serving() and stored.doc.get("enabled", True) is not False
        return {"status": "ONLINE" if online else "OFFLINE"}

    # --- action URLs -----------------------------------------------------------------------

    @router.get("/{receptionist_id}/action_urls")
    async def list_action_urls(receptionist_id: str) -> Any:
        urls = await store.run(store.list_action_urls, receptionist_id)
        return {"count": len(urls), "items": [action_url_view(url) for url in urls]}

    @router.post("/{receptionist_id}/action_urls", status_code=201)
    async def create_action_url(receptionist_id: str, request: Request) -> Any:
        data = without(await read_object(request), ACTION_URL_READ_ONLY)
        await stored_or_404(receptionist_id)
        model = _validate_action_url(data)
        new_id = await ctx.write(store.create_action_url, receptionist_id, model)
        return JSONResponse({"id": new_id}, status_code=201)

    @router.get("/{receptionist_id}/action_urls/{url_id}")
    async def get_action_url(receptionist_id: str, url_id: str) -> Any:
        stored = await store.run(store.get_action_url, receptionist_id, url_id)
        if stored is None:
            raise not_found(f"no action URL {url_id!r} of receptionist {receptionist_id!r}")
        return action_url_view(stored)

    @router.post("/{receptionist_id}/action_urls/{url_id}")
    async def update_action_url(receptionist_id: str, url_id: str, request: Request) -> Any:
        body = without(await read_object(request), ACTION_URL_READ_ONLY)
        async with ctx.updates.hold(f"url:{receptionist_id}:{url_id}"):
            stored = await store.run(store.get_action_url, receptionist_id, url_id)
            if stored is None:
                raise not_found(f"no action URL {url_id!r} of receptionist {receptionist_id!r}")
            model = _validate_action_url({**stored.doc, **body})
            await ctx.write(
                store.update_action_url, receptionist_id, url_id, model, revision=stored.revision
            )
        updated = await store.run(store.get_action_url, receptionist_id, url_id)
        if updated is None:
            raise not_found(f"no action URL {url_id!r} of receptionist {receptionist_id!r}")
        return action_url_view(updated)

    @router.post("/{receptionist_id}/action_urls/{url_id}/destroy", status_code=204)
    async def destroy_action_url(receptionist_id: str, url_id: str) -> Response:
        if not await ctx.write(store.delete_action_url, receptionist_id, url_id):
            raise not_found(f"no action URL {url_id!r} of receptionist {receptionist_id!r}")
        return Response(status_code=204)

    return router
