"""The HTTP API: PortSIP-compatible status endpoints and call records.

Handlers read the runtime's state; they never talk to pjsua2. Every route but `/healthz`
needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from engine.runtime import Runtime

SERVER_ID = "local"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"errors": [{"code": code, "message": message, "detail": {}}]}
    )


def create_app(runtime: Runtime, *, token: str, is_serving: Callable[[], bool]) -> FastAPI:
    app = FastAPI(title="vr-engine", version="0.1.0", docs_url=None, redoc_url=None)
    process = psutil.Process(os.getpid())
    process.cpu_percent(None)

    @app.middleware("http")
    async def bearer_auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path != "/healthz":
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                return _error(401, "UNAUTHORIZED", "send Authorization: Bearer <API token>")
        return await call_next(request)

    def server_status() -> dict[str, Any]:
        cpu = process.cpu_percent(None) / max(psutil.cpu_count() or 1, 1)
        return {
            "cpu_usage": round(cpu),
            "memory_usage": round(psutil.virtual_memory().percent),
            "status": "ONLINE" if is_serving() and not runtime.draining else "OFFLINE",
            "active_calls": len(runtime.calls),
            "capacity": runtime.capacity,
            "calls_total": runtime.counters["calls_total"],
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/ivr_servers")
    async def list_servers() -> dict[str, Any]:
        item = {
            "id": SERVER_ID,
            "name": runtime.server.name,
            "type": "EXTERNAL",
            "enabled": True,
            "ipv4": runtime.server.sip_host,
        }
        return {"count": 1, "items": [item]}

    @app.get("/api/ivr_servers/{server_id}/status")
    async def ivr_server_status(server_id: str) -> Any:
        if server_id not in (SERVER_ID, runtime.server.name):
            return _error(404, "NOT_FOUND", f"no receptionist server {server_id!r}")
        return server_status()

    @app.get("/api/status")
    async def status() -> dict[str, Any]:
        return server_status()

    @app.get("/api/calls")
    async def calls(skip: int = 0, top: int = 100) -> dict[str, Any]:
        if not 0 < top <= 100 or skip < 0:
            raise HTTPException(400, "top must be 1-100 and skip >= 0")
        items = list(reversed(runtime.records.recent))
        return {"count": len(items), "items": items[skip : skip + top]}

    @app.get("/api/calls/{session_id}")
    async def call(session_id: str) -> Any:
        for record in runtime.records.recent:
            if record["session_id"] == session_id:
                return record
        return _error(404, "NOT_FOUND", f"no call record {session_id!r}")

    return app
