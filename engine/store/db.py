"""The store's SQLite plumbing: one connection (WAL, `synchronous=FULL`, foreign keys), the
numbered migrations of `engine.store.schema` applied at open, transactions, and the single
worker thread the event loop hands operations to (`run`, `submit`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

from engine.errors import (
    StoreError,
)
from engine.model import Receptionist
from engine.store.objects import FileInfo
from engine.store.query import ListOptions, ListSpec, compile_list
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DB_NAME = "vr-engine.db"
BLOB_DIR = "blobs"
UPLOAD_DIR = "uploads"


def new_id() -> str:
    """An opaque resource id: url-safe base64 of 12 random bytes (16 characters)."""
    return secrets.token_urlsafe(12)


def now_text() -> str:
    """The current time as RFC 3339 UTC with milliseconds, e.g. 2026-01-14T09:00:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


class Database:
    """The SQLite connection of one data directory: opening, migrating, transactions, the worker
    thread, and what every kind of row needs. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data_dir = path.parent
        self.blob_dir = self.data_dir / BLOB_DIR
        self.upload_dir = self.data_dir / UPLOAD_DIR
        self._lock = threading.RLock()
        self._version = 0
        self._closed = False
        self._models: dict[str, tuple[tuple[str, ...], Receptionist]] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        self.upload_dir.mkdir(exist_ok=True)
        if not path.exists():
            # The store holds action URL secrets: readable by the owner only.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {path}: {error}") from None
        self._conn.row_factory = sqlite3.Row
        self._conn.create_function("vr_fold", 1, fold, deterministic=True)
        try:
            self._configure()
            self._migrate()
        except sqlite3.Error as error:
            self._conn.close()
            raise StoreError(f"cannot use the store {path}: {error}") from None
        except StoreError:
            self._conn.close()
            raise
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vr-store"
        )

    @classmethod
    def open(cls, data_dir: Path) -> Self:
        """The store of `data_dir` (created, with its schema, on first use)."""
        return cls(data_dir / DB_NAME)

    def _configure(self) -> None:
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")

    def _migrate(self) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this vr-engine "
                f"supports ({SCHEMA_VERSION}); upgrade vr-engine or use another data directory"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as conn:
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(number)}")
            log.info("store %s: applied migration %d", self.path, number)

    @contextlib.contextmanager
    def _session(self, begin: str, on_error: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._conn.execute(begin)
            try:
                yield self._conn
            except BaseException:
                self._conn.execute(on_error)
                raise
            self._conn.execute("COMMIT")

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT), rolled back on any error."""
        return self._session("BEGIN IMMEDIATE", "ROLLBACK")

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A consistent read (one snapshot across several SELECTs)."""
        return self._session("BEGIN", "COMMIT")

    def _list(
        self, options: ListOptions, spec: ListSpec, table: str, select: str
    ) -> tuple[int, list[sqlite3.Row]]:
        """One page of a list (`select` is ``SELECT … FROM <table>``) and the count of all
        rows that match the options' filter and search, in one consistent read."""
        where, params, order = compile_list(options, spec)
        with self._read() as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()
            rows = conn.execute(
                f"{select} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, options.top, options.skip],
            ).fetchall()
        return int(count[0]), rows

    def _changed(self) -> None:
        with self._lock:
            self._version += 1

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store operation on the store's worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue a store operation on the worker thread without waiting for it."""
        return self._executor.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """Finish queued operations, checkpoint the WAL and close the connection."""
        self._executor.shutdown(wait=True)
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._closed = True

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def pragma(self, name: str) -> Any:
        """The value of a read-only PRAGMA (journal_mode, synchronous, foreign_keys, …)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    @property
    def schema_version(self) -> int:
        return int(self.pragma("user_version"))

    @property
    def version(self) -> int:
        """Grows with every write to receptionists, action URLs and files."""
        return self._version

    def _file_path(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.data_dir / path

    def _relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.data_dir.resolve()))
        except ValueError:
            return str(path.resolve())

    def _file_from(self, row: sqlite3.Row, prefix: str = "") -> FileInfo | None:
        if row[f"{prefix}id"] is None:
            return None
        return FileInfo(
            id=row[f"{prefix}id"],
            digest=row[f"{prefix}digest"],
            name=row[f"{prefix}name"],
            size=int(row[f"{prefix}size"]),
            duration=float(row[f"{prefix}duration"]),
            media_type=row[f"{prefix}media_type"],
            path=self._file_path(row[f"{prefix}path"]),
            created_at=row[f"{prefix}created_at"],
        )

    # --- meta ----------------------------------------------------------------------------------

    @property
    def seeded(self) -> bool:
        """Whether the configuration was imported once (after that the API is the truth)."""
        return self.meta("seeded_at") is not None

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row["value"])
