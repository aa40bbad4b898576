"""The journal: what the running server appends and reads back — resumable upload sessions,
call records, and DISA failed calls and lock-outs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from engine.errors import (
    Conflict,
)
from engine.store.db import Database, dumps, now_text
from engine.store.objects import UploadSession
from engine.store.query import CALL_LIST, ListOptions, Page


class Journal(Database):
    """Upload sessions, call records and DISA state."""

    # --- upload sessions -----------------------------------------------------------------------

    def _upload_from(self, row: sqlite3.Row) -> UploadSession:
        return UploadSession(
            id=row["id"],
            token=row["token"],
            filename=row["filename"],
            temporary=bool(row["temporary"]),
            created_at=row["created_at"],
            touched_at=float(row["touched_at"]),
            owner=row["owner"],
        )

    def create_upload(
        self,
        upload_id: str,
        token: str,
        filename: str,
        temporary: bool,
        now: float,
        max_sessions: int,
        owner: str = "",
    ) -> UploadSession:
        """A new upload session; Conflict when `owner` (an API token's fingerprint) has
        `max_sessions` open already."""
        with self._transaction() as conn:
            count = conn.execute(
                "SELECT COUNT(*) FROM uploads WHERE owner = ?", (owner,)
            ).fetchone()[0]
            if count >= max_sessions:
                raise Conflict(
                    f"{count} uploads of this API token are in progress; complete or destroy "
                    "one first",
                    {"uploads": f"at most {max_sessions} uploads per API token may be open"},
                )
            conn.execute(
                "INSERT INTO uploads "
                "(id, token, filename, temporary, created_at, touched_at, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, token, filename, int(temporary), now_text(), now, owner),
            )
        session = self.get_upload(upload_id)
        assert session is not None
        return session

    def get_upload(self, upload_id: str) -> UploadSession | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return None if row is None else self._upload_from(row)

    def delete_upload(self, upload_id: str) -> bool:
        with self._transaction() as conn:
            return bool(conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)).rowcount)

    def upload_ids(
        self, *, touched_before: float | None = None, owner: str | None = None
    ) -> list[str]:
        where: list[str] = []
        args: list[float | str] = []
        if touched_before is not None:
            where.append("touched_at < ?")
            args.append(touched_before)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        sql = "SELECT id FROM uploads" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [row["id"] for row in rows]

    # --- call records --------------------------------------------------------------------------

    def add_call_record(self, record: Mapping[str, Any]) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO call_records (session_id, receptionist_id, extension_number, "
                "caller_number, outcome, started_at, ended_at, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(record.get("session_id") or ""),
                    record.get("receptionist_id"),
                    record.get("extension_number"),
                    record.get("caller_number"),
                    record.get("outcome"),
                    record.get("started_at"),
                    record.get("ended_at"),
                    dumps(record),
                ),
            )
        return int(cursor.lastrowid or 0)

    def get_call_record(self, session_id: str) -> dict[str, Any] | None:
        """The latest record with this session id."""
        with self._lock:
            row = self._conn.execute(
                "SELECT doc FROM call_records WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
                (session_id,),
            ).fetchone()
        return None if row is None else dict(json.loads(row["doc"]))

    def list_call_records(self, options: ListOptions) -> Page[dict[str, Any]]:
        count, rows = self._list(
            options, CALL_LIST, "call_records c", "SELECT c.doc FROM call_records c"
        )
        return Page(count, [dict(json.loads(row["doc"])) for row in rows])

    def recent_call_records(self, limit: int) -> list[dict[str, Any]]:
        """The latest `limit` records, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc FROM call_records ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(json.loads(row["doc"])) for row in reversed(rows)]

    def call_record_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM call_records").fetchone()[0])

    def prune_call_records(self, keep: int) -> int:
        """Delete all but the latest `keep` records; return how many went."""
        with self._transaction() as conn:
            return int(
                conn.execute(
                    "DELETE FROM call_records WHERE seq <= "
                    "(SELECT seq FROM call_records ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (keep,),
                ).rowcount
            )

    # --- DISA lock-outs ------------------------------------------------------------------------

    def put_disa_lockout(self, key: str, locked_until: float) -> None:
        """Lock `key`; its failed calls are forgotten, as the in-memory policy does."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM disa_failures WHERE key = ?", (key,))
            conn.execute(
                "INSERT INTO disa_lockouts (key, locked_until) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET locked_until = excluded.locked_until",
                (key, locked_until),
            )

    def disa_lockouts(self, now: float) -> dict[str, float]:
        """Keys locked at `now`, with the time their lock ends."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, locked_until FROM disa_lockouts WHERE locked_until > ?", (now,)
            ).fetchall()
        return {row["key"]: float(row["locked_until"]) for row in rows}

    def add_disa_failure(self, key: str, at: float) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO disa_failures (key, at) VALUES (?, ?)", (key, at))

    def disa_failures(self, since: float) -> dict[str, list[float]]:
        """Failed DISA calls at or after `since`, by key, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, at FROM disa_failures WHERE at >= ? ORDER BY at", (since,)
            ).fetchall()
        failures: dict[str, list[float]] = {}
        for row in rows:
            failures.setdefault(row["key"], []).append(float(row["at"]))
        return failures

    def prune_disa(self, now: float, window: float) -> None:
        """Forget lock-outs that ended and failures older than `window` seconds."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM disa_lockouts WHERE locked_until <= ?", (now,))
            conn.execute("DELETE FROM disa_failures WHERE at < ?", (now - window,))
