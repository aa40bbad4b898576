"""The storage interface: what callers (the API, the uploads, the server, the sinks) use of a
store, and all they may use: the API, the uploads, the seeding and the sinks are typed with it,
so mypy checks both that they use nothing else and (where `engine.server` hands them the
SQLite `Store`) that `Store` implements it. A second backend (PostgreSQL) implements it without
touching callers. Operations are
synchronous and thread-safe; from the event loop they go through `run` / `submit`, which run
them on the store's worker thread in submission order.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from engine.model import ActionUrl, Receptionist
from engine.store.objects import (
    FileInfo,
    Snapshot,
    StoredActionUrl,
    StoredReceptionist,
    UploadSession,
)
from engine.store.query import ListOptions, Page

P = ParamSpec("P")
T = TypeVar("T")


class StoreBackend(Protocol):
    path: Path
    data_dir: Path
    blob_dir: Path
    upload_dir: Path

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store operation on the store's worker thread and await its result."""
        ...

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue a store operation on the worker thread without waiting for it."""
        ...

    def close(self) -> None:
        """Finish queued operations, checkpoint the WAL and close the connection."""
        ...

    def integrity_check(self) -> str: ...

    def pragma(self, name: str) -> Any:
        """The value of a read-only PRAGMA (journal_mode, synchronous, foreign_keys, …)."""
        ...

    @property
    def schema_version(self) -> int: ...

    @property
    def version(self) -> int:
        """Grows with every write to receptionists, action URLs and files."""
        ...

    @property
    def seeded(self) -> bool:
        """Whether the configuration was imported once (after that the API is the truth)."""
        ...

    def meta(self, key: str) -> str | None: ...

    def create_receptionist(
        self, receptionist: Receptionist, *, receptionist_id: str | None = None
    ) -> str:
        """Insert a validated receptionist (and any action URLs it lists); return its id."""
        ...

    def get_receptionist(self, receptionist_id: str) -> StoredReceptionist | None: ...

    def update_receptionist(
        self, receptionist_id: str, receptionist: Receptionist, *, revision: int | None = None
    ) -> None:
        """Replace a receptionist's document (its action URLs stay). With `revision`, only if"""
        ...

    def delete_receptionist(self, receptionist_id: str) -> bool:
        """Delete a receptionist and (cascade) its action URLs; False if there was none."""
        ...

    def list_receptionists(self, options: ListOptions) -> Page[StoredReceptionist]: ...

    def receptionist_count(self) -> int: ...

    def load_receptionist(
        self, doc: Mapping[str, Any], receptionist_id: str, action_urls: Sequence[StoredActionUrl]
    ) -> Receptionist:
        """A stored document as the validated model (the PIN hash accepted as stored)."""
        ...

    def snapshot(self) -> Snapshot:
        """Every receptionist (with its action URLs) by extension, every file by id."""
        ...

    def create_action_url(self, receptionist_id: str, action_url: ActionUrl) -> str: ...

    def list_action_urls(self, receptionist_id: str) -> list[StoredActionUrl]:
        """The action URLs of a receptionist in order. Raises NotFound."""
        ...

    def get_action_url(self, receptionist_id: str, url_id: str) -> StoredActionUrl | None: ...

    def update_action_url(
        self,
        receptionist_id: str,
        url_id: str,
        action_url: ActionUrl,
        *,
        revision: int | None = None,
    ) -> None:
        """Replace an action URL; with `revision` only if unchanged since (else Stale)."""
        ...

    def delete_action_url(self, receptionist_id: str, url_id: str) -> bool: ...

    def blob_path(self, digest: str) -> Path: ...

    def install_file(
        self,
        temp: Path,
        *,
        digest: str,
        name: str,
        duration: float,
        source_digest: str | None = None,
        file_id: str | None = None,
    ) -> tuple[str, bool]:
        """Move a converted (and fsynced) WAV into the blob directory and record it."""
        ...

    def get_file(self, file_id: str) -> FileInfo | None: ...

    def file_by_digest(self, digest: str) -> FileInfo | None: ...

    def file_by_source_digest(self, digest: str) -> FileInfo | None:
        """The file converted from uploaded bytes with this SHA-256 (hex)."""
        ...

    def missing_files(self, file_ids: Sequence[str]) -> set[str]:
        """Which of `file_ids` are not stored."""
        ...

    def list_files(self, options: ListOptions) -> Page[FileInfo]: ...

    def file_users(self, file_id: str) -> list[tuple[str, str, str]]:
        """(receptionist id, extension, field) of every receptionist using the file."""
        ...

    def delete_file(self, file_id: str) -> FileInfo:
        """Delete a file and its blob. Raises NotFound, or Conflict while a receptionist"""
        ...

    def file_paths(self) -> dict[str, Path]: ...

    def seed(self, receptionists: Sequence[Receptionist], files: Sequence[FileInfo]) -> bool:
        """Import receptionists and files into a store that was never seeded, in one"""
        ...

    def create_upload(
        self,
        upload_id: str,
        token: str,
        filename: str,
        temporary: bool,
        now: float,
        max_sessions: int,
        owner: str = "",
    ) -> UploadSession: ...

    def get_upload(self, upload_id: str) -> UploadSession | None: ...

    def delete_upload(self, upload_id: str) -> bool: ...

    def upload_ids(
        self, *, touched_before: float | None = None, owner: str | None = None
    ) -> list[str]: ...

    def add_call_record(self, record: Mapping[str, Any]) -> int: ...

    def get_call_record(self, session_id: str) -> dict[str, Any] | None:
        """The latest record with this session id."""
        ...

    def list_call_records(self, options: ListOptions) -> Page[dict[str, Any]]: ...

    def recent_call_records(self, limit: int) -> list[dict[str, Any]]:
        """The latest `limit` records, oldest first."""
        ...

    def call_record_count(self) -> int: ...

    def prune_call_records(self, keep: int) -> int:
        """Delete all but the latest `keep` records; return how many went."""
        ...

    def put_disa_lockout(self, key: str, locked_until: float) -> None:
        """Lock `key`; its failed calls are forgotten, as the in-memory policy does."""
        ...

    def disa_lockouts(self, now: float) -> dict[str, float]:
        """Keys locked at `now`, with the time their lock ends."""
        ...

    def add_disa_failure(self, key: str, at: float) -> None: ...

    def disa_failures(self, since: float) -> dict[str, list[float]]:
        """Failed DISA calls at or after `since`, by key, oldest first."""
        ...

    def prune_disa(self, now: float, window: float) -> None:
        """Forget lock-outs that ended and failures older than `window` seconds."""
        ...
