"""Prompt files as in PortSIP: `/api/blobs/uploads` (resumable uploads), `/api/blobs/{digest}`
(download of the converted WAV) and `/api/files` (the stored files).

`GET /api/blobs/{digest}` needs no token (PortSIP's `security: []`): the digest is the SHA-256
of the converted WAV or of the bytes uploaded, unguessable without the file.

Upload: `POST /api/blobs/uploads?filename=` → 202 with `PortSIP-Upload-ID`,
`PortSIP-Upload-Token`, `Location` and `Range` headers; `POST|PATCH …/{id}/append` with raw
bytes → 203; `GET …/{id}/status` → 204 with the same headers; `POST
…/{id}/complete?digest=sha256:<hex>` (an optional last chunk as the body) → 201 `{"id"}`;
`POST …/{id}/destroy` → 204. Append and complete need the `PortSIP-Upload-Token` header.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from engine.api.common import ApiContext, file_view, list_options
from engine.api.errors import invalid, not_found
from engine.store import ListOptions
from engine.uploads import UploadState, parse_digest

TOKEN_HEADER = "PortSIP-Upload-Token"


def token_owner(request: Request) -> str:
    """A fingerprint of the request's bearer token (checked by the auth middleware), which
    owns the upload sessions it starts; never the token itself."""
    credential = request.headers.get("authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(credential.encode()).hexdigest()[:16] if credential else ""


def _upload_headers(state: UploadState) -> dict[str, str]:
    return {
        "PortSIP-Upload-ID": state.id,
        TOKEN_HEADER: state.token,
        "Location": f"/api/blobs/uploads/{state.id}",
        "Range": f"0-{max(state.size - 1, 0)}",
    }


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise invalid({"Content-Length": "must be a number of bytes"})
    return int(value)


def blobs_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    store = ctx.store
    uploads = ctx.uploads

    @router.post("/api/blobs/uploads", status_code=202)
    async def start_upload(
        request: Request, filename: str | None = None, temporary: bool = False
    ) -> Response:
        state = await uploads.start(filename, temporary, token_owner(request))
        return Response(status_code=202, headers=_upload_headers(state))

    async def append(upload_id: str, request: Request) -> Response:
        state = await uploads.append(
            upload_id,
            request.headers.get(TOKEN_HEADER),
            request.stream(),
            content_length=_content_length(request),
            content_range=request.headers.get("content-range"),
        )
        return Response(status_code=203, headers=_upload_headers(state))

    # one route per method: an OpenAPI operationId must be unique
    for method in ("POST", "PATCH"):
        router.add_api_route(
            "/api/blobs/uploads/{upload_id}/append",
            append,
            methods=[method],
            status_code=203,
            operation_id=f"append_api_blobs_uploads__upload_id__append_{method.lower()}",
        )

    @router.get("/api/blobs/uploads/{upload_id}/status", status_code=204)
    async def upload_status(upload_id: str) -> Response:
        state = await uploads.status(upload_id)
        return Response(status_code=204, headers=_upload_headers(state))

    @router.post("/api/blobs/uploads/{upload_id}/complete", status_code=201)
    async def complete_upload(
        upload_id: str,
        request: Request,
        digest: Annotated[str | None, Query()] = None,
    ) -> Any:
        try:
            file_id, _created = await uploads.complete(
                upload_id,
                request.headers.get(TOKEN_HEADER),
                digest,
                request.stream(),
                content_length=_content_length(request),
            )
        except Exception:
            ctx.runtime.metrics.prompt_conversions.labels("refused").inc()
            raise
        ctx.runtime.metrics.prompt_conversions.labels("ok").inc()
        await ctx.refresh()
        return JSONResponse({"id": file_id}, status_code=201)

    @router.post("/api/blobs/uploads/{upload_id}/destroy", status_code=204)
    async def destroy_upload(upload_id: str) -> Response:
        await uploads.destroy(upload_id)
        return Response(status_code=204)

    @router.get("/api/blobs/{digest}")
    async def download(digest: str) -> Response:
        hex_digest = parse_digest(digest)
        # the converted file's digest (the `url` and `digest` we show), or the digest of the
        # bytes a client uploaded (what it can compute itself)
        info = await store.run(store.file_by_digest, hex_digest) or await store.run(
            store.file_by_source_digest, hex_digest
        )
        if info is None or not info.path.is_file():
            raise not_found(f"no blob with digest sha256:{hex_digest}")
        stem = info.name.rsplit(".", 1)[0] if "." in info.name else info.name
        return FileResponse(
            info.path,
            media_type="application/octet-stream",
            filename=f"{stem or 'prompt'}.wav",
            headers={"ETag": f'"sha256:{info.digest}"'},
        )

    @router.get("/api/files")
    async def list_files(options: Annotated[ListOptions, Depends(list_options)]) -> Any:
        page = await store.run(store.list_files, options)
        return {"count": page.count, "items": [file_view(info) for info in page.items]}

    @router.get("/api/files/{file_id}")
    async def get_file(file_id: str) -> Any:
        info = await store.run(store.get_file, file_id)
        if info is None:
            raise not_found(f"no file {file_id!r}")
        return file_view(info)

    @router.post("/api/files/{file_id}/destroy", status_code=204)
    async def destroy_file(file_id: str) -> Response:
        await ctx.write(store.delete_file, file_id)
        return Response(status_code=204)

    return router
