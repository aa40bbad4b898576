"""PortSIP's error envelope, ``{"errors": [{"code", "message", "detail"}]}``, for every error
the API answers: our own, the store's, FastAPI's request validation and Starlette's 404/405."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine.errors import ApiError
from engine.store import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RangeMismatch,
    StoreError,
    TooLarge,
)
from engine.validation import field_path

log = logging.getLogger(__name__)

VALIDATE_FAILED = "VALIDATE_FAILED"

_STORE_ERRORS: tuple[tuple[type[StoreError], int, str], ...] = (
    (NotFound, 404, "NOT_FOUND"),
    (Conflict, 409, "CONFLICT"),
    (Invalid, 400, VALIDATE_FAILED),
    (TooLarge, 413, "PAYLOAD_TOO_LARGE"),
    (Forbidden, 403, "FORBIDDEN"),
    (RangeMismatch, 416, "RANGE_NOT_SATISFIABLE"),
)
_HTTP_CODES = {
    400: VALIDATE_FAILED,
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"errors": [{"code": code, "message": message, "detail": dict(detail or {})}]},
        headers=dict(headers or {}),
    )


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def invalid(detail: Mapping[str, str]) -> ApiError:
    """A 400 listing every problem; the message repeats them for humans reading logs."""
    message = "; ".join(f"{path}: {problem}" for path, problem in detail.items())
    return ApiError(400, VALIDATE_FAILED, message or "the request is not valid", detail)


def _location(loc: tuple[int | str, ...]) -> str:
    """A request's error location as a field path, without FastAPI's `body`/`query`/… part."""
    parts = loc[1:] if loc and loc[0] in ("query", "path", "body", "header") else loc
    return field_path(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.detail, error.headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> JSONResponse:
        headers: dict[str, str] = {}
        if isinstance(error, RangeMismatch):
            headers["Range"] = f"0-{max(error.size - 1, 0)}"
        for kind, status, code in _STORE_ERRORS:
            if isinstance(error, kind):
                return error_response(status, code, error.message, error.detail, headers)
        log.error("store unavailable: %s", error)
        return error_response(503, "SERVICE_UNAVAILABLE", error.message)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        detail: dict[str, str] = {}
        for item in error.errors():
            path = _location(tuple(item.get("loc", ())))
            message = str(item.get("msg", "is not valid"))
            detail[path] = f"{detail[path]}; {message}" if path in detail else message
        message = "; ".join(f"{path}: {problem}" for path, problem in detail.items())
        return error_response(400, VALIDATE_FAILED, message, detail)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", "internal error; the server log has details")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, f"HTTP_{error.status_code}")
        try:
            default = HTTPStatus(error.status_code).phrase
        except ValueError:
            default = "error"
        message = error.detail if isinstance(error.detail, str) else default
        headers = dict(error.headers or {})
        if error.status_code == 405:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; this path takes {headers['Allow']}"
        return error_response(error.status_code, code, message, headers=headers)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path (Starlette's own 405
    names only the methods of the first route whose path matched). Asked of each route through
    `matches`, so included routers answer for their own routes."""
    methods = {
        method
        for method in _METHODS
        for route in request.app.router.routes
        if route.matches({**request.scope, "method": method})[0] is Match.FULL
    }
    return sorted(methods)
