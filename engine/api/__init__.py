"""The HTTP API: PortSIP-compatible resources (receptionists, action URLs, prompt uploads and
files, receptionist server status) and call records.

Handlers talk to the store (through its worker thread) and read the runtime's state; they never
talk to pjsua2. Every route but `/healthz` and blob downloads needs
`Authorization: Bearer <token>`. Errors use PortSIP's envelope
`{"errors": [{"code", "message", "detail"}]}`. After every successful write a fresh snapshot
of receptionists and files goes to `on_change` (by default: applied to the runtime, so the
next call uses it; calls in progress keep theirs).

Without a store (`store=None`) only the status routes and the runtime's in-memory call records
are served; the resource routes answer 503.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Annotated, Any

import psutil
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.api.blobs import blobs_router
from engine.api.common import ApiContext, apply_to_runtime, list_options, read_object
from engine.api.errors import error_response, install_error_handlers, invalid, not_found
from engine.api.ivrs import ivrs_router
from engine.api.view import RuntimeView
from engine.errors import ApiError
from engine.store import ListOptions, Snapshot, StoreBackend
from engine.uploads import UploadLimits, Uploads

__all__ = ["SERVER_ID", "create_app"]

SERVER_ID = "local"
# PortSIP serves blobs without a token; a digest (SHA-256 of the converted file) is unguessable.
PUBLIC_PATHS = frozenset({"/healthz", "/api/blobs/{digest}"})


def is_public(path: str) -> bool:
    """`/healthz` and `GET /api/blobs/<digest>` need no token; everything else does."""
    if path == "/healthz":
        return True
    parts = path.split("/")
    return len(parts) == 4 and parts[1:3] == ["api", "blobs"] and parts[3] not in ("", "uploads")


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "message", "detail"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "detail": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        }
    },
}


class _App(FastAPI):
    """FastAPI whose OpenAPI document tells the truth about errors and authentication: an
    invalid request is answered 400 with PortSIP's envelope (not FastAPI's 422 schema), and
    every route but the public ones needs the bearer token (401)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        doc = super().openapi()
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        schemas["Error"] = ERROR_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in doc.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses["400"] = {"description": "Invalid request", "content": content}
                if path not in PUBLIC_PATHS:
                    operation["security"] = [{"bearer": []}]
                    responses["401"] = {"description": "No or wrong token", "content": content}
        return doc


class BearerAuth:
    """ASGI middleware: every request but the public paths needs the API token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
                    break
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credential.strip(), self.token
            ):
                response = error_response(
                    401,
                    "UNAUTHORIZED",
                    "send Authorization: Bearer <API token>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _status_router(runtime: RuntimeView, is_serving: Callable[[], bool]) -> APIRouter:
    router = APIRouter()
    process = psutil.Process(os.getpid())
    process.cpu_percent(None)

    def server_status() -> dict[str, Any]:
        cpu = process.cpu_percent(None) / max(psutil.cpu_count() or 1, 1)
        return {
            "cpu_usage": round(cpu),
            "memory_usage": round(psutil.virtual_memory().percent),
            "status": (
                "ONLINE" if is_serving() and not runtime.draining and runtime.enabled else "OFFLINE"
            ),
            "active_calls": runtime.active_calls,
            "capacity": runtime.capacity,
            "calls_total": runtime.calls_total,
        }

    def server_item() -> dict[str, Any]:
        return {
            "id": SERVER_ID,
            "name": runtime.server.name,
            "type": "EXTERNAL",
            "enabled": runtime.enabled,
            "ipv4": runtime.server.sip_host,
        }

    def known(server_id: str) -> None:
        if server_id not in (SERVER_ID, runtime.server.name):
            raise not_found(f"no receptionist server {server_id!r}")

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/api/ivr_servers")
    async def list_servers(
        options: Annotated[ListOptions, Depends(list_options)],
    ) -> dict[str, Any]:
        items = [server_item()][options.skip : options.skip + options.top]
        return {"count": 1, "items": items}

    @router.post("/api/ivr_servers/{server_id}")
    async def update_server(server_id: str, request: Request) -> Response:
        """PortSIP's updateVrServer: `{"enabled": false}` takes the server OFFLINE (new calls
        get 503, calls in progress finish), `true` ONLINE again."""
        known(server_id)
        body = await read_object(request)
        detail = {name: "unknown field" for name in sorted(set(body) - {"enabled"})}
        enabled = body.get("enabled", True)  # PortSIP's default
        if not isinstance(enabled, bool):
            detail["enabled"] = "must be true or false"
        if detail:
            raise invalid(detail)
        runtime.set_enabled(enabled)
        return Response(status_code=200)

    @router.post("/api/ivr_servers/{server_id}/destroy")
    async def destroy_server(server_id: str) -> None:
        known(server_id)
        raise ApiError(
            409,
            "CONFLICT",
            "a receptionist server cannot destroy itself: disable it "
            '(POST /api/ivr_servers/{id} {"enabled": false}) or stop the service',
        )

    @router.get("/api/ivr_servers/{server_id}")
    async def get_server(server_id: str) -> dict[str, Any]:
        known(server_id)
        return server_item()

    @router.get("/api/ivr_servers/{server_id}/status")
    async def ivr_server_status(server_id: str) -> dict[str, Any]:
        known(server_id)
        return server_status()

    @router.get("/api/status")
    async def status() -> dict[str, Any]:
        return server_status()

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def _calls_router(runtime: RuntimeView, store: StoreBackend | None) -> APIRouter:
    router = APIRouter(prefix="/api/calls")

    @router.get("")
    async def calls(options: Annotated[ListOptions, Depends(list_options)]) -> Any:
        if store is not None:
            page = await store.run(store.list_call_records, options)
            return {"count": page.count, "items": page.items}
        items = list(reversed(runtime.recent_records()))
        return {"count": len(items), "items": items[options.skip : options.skip + options.top]}

    @router.get("/{session_id}")
    async def call(session_id: str) -> Any:
        if store is not None:
            record = await store.run(store.get_call_record, session_id)
        else:
            record = next(
                (r for r in reversed(runtime.recent_records()) if r["session_id"] == session_id),
                None,
            )
        if record is None:
            raise not_found(f"no call record {session_id!r}")
        return record

    return router


def _no_store_router() -> APIRouter:
    router = APIRouter()

    async def unavailable() -> None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", "this server runs without a store")

    for path in ("/api/ivrs{rest:path}", "/api/blobs{rest:path}", "/api/files{rest:path}"):
        router.add_api_route(path, unavailable, methods=["GET", "POST", "PATCH"])
    return router


def create_app(
    runtime: RuntimeView,
    *,
    token: str,
    is_serving: Callable[[], bool],
    store: StoreBackend | None = None,
    on_change: Callable[[Snapshot], None] | None = None,
    upload_limits: UploadLimits | None = None,
) -> FastAPI:
    """The API app. `on_change` gets a snapshot after every successful write (default: apply
    it to `runtime`); `app.state.context` holds the `ApiContext` when a store is given."""
    app = _App(title="vr-engine", version="0.1.0", docs_url=None, redoc_url=None)
    app.add_middleware(BearerAuth, token=token)
    install_error_handlers(app)
    app.include_router(_status_router(runtime, is_serving))
    app.include_router(_calls_router(runtime, store))
    if store is None:
        app.include_router(_no_store_router())
        return app
    context = ApiContext(
        store=store,
        runtime=runtime,
        is_serving=is_serving,
        on_change=on_change or apply_to_runtime(runtime),
        uploads=Uploads(store, upload_limits),
    )
    app.state.context = context
    app.include_router(ivrs_router(context))
    app.include_router(blobs_router(context))
    return app
