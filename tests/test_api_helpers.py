"""Helpers shared by the API tests (no tests here): a runtime on a telephony fake, an API client
on a real SQLite store in a temporary directory that remembers every response body, and
audio files in several formats."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient

from engine.api import create_app
from engine.model import ServerSettings
from engine.prompts import PromptLibrary
from engine.records import CallRecords
from engine.runtime import Runtime
from engine.store import Snapshot, Store
from engine.uploads import UploadLimits

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PIN = "135790"


class NullTelephony:
    max_calls = 4

    def answer(self, call_id: str) -> None: ...
    def reject(
        self, call_id: str, sip_code: int, reason: str, *, retry_after: int | None = None
    ) -> None: ...
    def play(self, call_id: str, play_id: int, files: Sequence[Path]) -> None: ...
    def stop_playback(self, call_id: str) -> None: ...
    def transfer(self, call_id: str, refer_to: str) -> None: ...
    def hangup(self, call_id: str) -> None: ...


def make_runtime(server: ServerSettings | None = None) -> Runtime:
    return Runtime(
        server=server or ServerSettings(),
        receptionists={},
        telephony=NullTelephony(),
        prompts=PromptLibrary(),
        files={},
        action_urls=None,  # type: ignore[arg-type]  # no calls are made in API tests
        records=CallRecords(None),
    )


@dataclass
class Api:
    """A TestClient on a real store; every response body is kept in `bodies`."""

    client: TestClient
    store: Store
    runtime: Runtime
    data_dir: Path
    snapshots: list[Snapshot] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    serving: bool = True

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.bodies.append(response.content)
        self.bodies.append(repr(dict(response.headers)).encode())
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def create_ivr(self, **fields: Any) -> str:
        data = {"name": "Main", "extension_number": "800", **fields}
        response = self.post("/api/ivrs", json=data)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def upload(
        self,
        data: bytes,
        name: str = "prompt.wav",
        *,
        digest: str | None = None,
        chunk: int = 64 * 1024,
    ) -> httpx.Response:
        """The whole PortSIP upload dance; returns the `complete` response."""
        started = self.post("/api/blobs/uploads", params={"filename": name})
        assert started.status_code == 202, started.text
        upload_id = started.headers["PortSIP-Upload-ID"]
        token = started.headers["PortSIP-Upload-Token"]
        for offset in range(0, len(data), chunk):
            appended = self.post(
                f"/api/blobs/uploads/{upload_id}/append",
                content=data[offset : offset + chunk],
                headers={"PortSIP-Upload-Token": token},
            )
            if appended.status_code != 203:
                return appended
        if digest is None:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return self.post(
            f"/api/blobs/uploads/{upload_id}/complete",
            params={"digest": digest},
            headers={"PortSIP-Upload-Token": token},
        )

    def close(self) -> None:
        self.client.close()
        self.store.close()


def make_api(
    data_dir: Path,
    *,
    server: ServerSettings | None = None,
    limits: UploadLimits | None = None,
    token: str = TOKEN,
) -> Api:
    store = Store.open(data_dir)
    runtime = make_runtime(server)
    holder: dict[str, Api] = {}

    def on_change(snapshot: Snapshot) -> None:
        holder["api"].snapshots.append(snapshot)
        runtime.apply(snapshot.receptionists, snapshot.files)

    app = create_app(
        runtime,
        token=token,
        is_serving=lambda: holder["api"].serving,
        store=store,
        on_change=on_change,
        upload_limits=limits,
    )
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    api = Api(client=client, store=store, runtime=runtime, data_dir=data_dir)
    holder["api"] = api
    return api


# --- audio -------------------------------------------------------------------------------------


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def wav_float_stereo(seconds: float = 1.0) -> bytes:
    return encode(tone(seconds, 44100, 2), 44100, "WAV", "FLOAT")


def files_on_disk(data_dir: Path) -> list[Path]:
    """Every file under the blob and upload directories."""
    return sorted(
        path
        for sub in ("blobs", "uploads")
        for path in (data_dir / sub).rglob("*")
        if path.is_file()
    )


# PortSIP's error envelope, as JSON Schema (the reference names no error schema).
ERROR_ENVELOPE = {
    "type": "object",
    "required": ["errors"],
    "additionalProperties": False,
    "properties": {
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["code", "message", "detail"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                    "message": {"type": "string", "minLength": 1},
                    "detail": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        }
    },
}
