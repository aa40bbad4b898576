"""What the store returns: stored receptionists, action URLs, prompt files, upload sessions,
and the snapshot new calls are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.model import Receptionist


@dataclass(frozen=True)
class FileInfo:
    id: str
    digest: str
    name: str
    size: int
    duration: float
    media_type: str
    path: Path
    created_at: str


@dataclass(frozen=True)
class StoredReceptionist:
    id: str
    doc: dict[str, Any]
    created_at: str
    updated_at: str
    revision: int = 0
    prompt_file: FileInfo | None = None
    transfer_prompt_file: FileInfo | None = None


@dataclass(frozen=True)
class StoredActionUrl:
    id: str
    receptionist_id: str
    doc: dict[str, Any]
    created_at: str
    updated_at: str
    revision: int = 0


@dataclass(frozen=True)
class UploadSession:
    id: str
    token: str
    filename: str
    temporary: bool
    created_at: str
    touched_at: float
    owner: str = ""  # the fingerprint of the API token that started it


@dataclass(frozen=True)
class Snapshot:
    """What new calls are built from: receptionists by extension, prompt files by id.

    `version` grows with every write, so a consumer can ignore a snapshot older than one it
    already applied."""

    version: int
    receptionists: dict[str, Receptionist] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
