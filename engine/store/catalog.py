"""The catalog: receptionists, their action URLs and prompt files (rows here, converted WAVs
in ``<data>/blobs``), the import of a configuration once, and the snapshots new calls use.
Every write bumps the store's version.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, ValidationError

from engine.errors import (
    Conflict,
    Invalid,
    NotFound,
    Stale,
)
from engine.files import fsync_dir
from engine.model import TRUSTED_STORE, ActionUrl, Receptionist
from engine.store.db import Database, dumps, new_id, now_text
from engine.store.objects import FileInfo, Snapshot, StoredActionUrl, StoredReceptionist
from engine.store.query import FILE_LIST, RECEPTIONIST_LIST, ListOptions, Page
from engine.validation import problems_from

log = logging.getLogger(__name__)

MEDIA_TYPE_WAV = "audio/vnd.wave"
SECRET_FIELDS = ("password", "token", "signing_secret")
_FILE_COLUMNS = "id, digest, name, size, duration, media_type, path, created_at"
_URL_COLUMNS = "id, receptionist_id, doc, revision, created_at, updated_at"


def receptionist_document(receptionist: Receptionist) -> dict[str, Any]:
    """What is stored for a receptionist: the validated model without id and action URLs.

    The `pin` in it is the salted hash the model made at validation, never the PIN in clear.
    """
    return receptionist.model_dump(mode="json", by_alias=True, exclude={"id", "action_urls"})


def action_url_document(action_url: ActionUrl) -> dict[str, Any]:
    """What is stored for an action URL: the validated model without id, secrets readable
    (the runtime needs them to authenticate to the CRM)."""
    doc = action_url.model_dump(mode="json", exclude={"id"})
    for name in SECRET_FIELDS:
        secret = getattr(action_url, name)
        doc[name] = secret.get_secret_value() if isinstance(secret, SecretStr) else None
    return doc


class Catalog(Database):
    """Receptionists, action URLs and prompt files."""

    # --- receptionists -------------------------------------------------------------------------

    _RECEPTIONIST_SELECT = (
        "SELECT r.id, r.doc, r.revision, r.created_at, r.updated_at, "
        + ", ".join(f"pf.{c} AS pf_{c}" for c in _FILE_COLUMNS.split(", "))
        + ", "
        + ", ".join(f"tf.{c} AS tf_{c}" for c in _FILE_COLUMNS.split(", "))
        + " FROM receptionists r"
        " LEFT JOIN files pf ON pf.id = r.prompt_file_id"
        " LEFT JOIN files tf ON tf.id = r.transfer_prompt_file_id"
    )

    def _receptionist_from(self, row: sqlite3.Row) -> StoredReceptionist:
        return StoredReceptionist(
            id=row["id"],
            doc=json.loads(row["doc"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            revision=int(row["revision"]),
            prompt_file=self._file_from(row, "pf_"),
            transfer_prompt_file=self._file_from(row, "tf_"),
        )

    def _check_references(
        self, conn: sqlite3.Connection, receptionist: Receptionist, own_id: str | None
    ) -> None:
        problems: dict[str, str] = {}
        for name in ("prompt_file_id", "transfer_prompt_file_id"):
            file_id = getattr(receptionist, name)
            if (
                file_id is not None
                and not conn.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone()
            ):
                problems[name] = f"no file with id {file_id!r} (upload it at /api/blobs/uploads)"
        if problems:
            raise Invalid("unknown file id", problems)
        row = conn.execute(
            "SELECT id, name FROM receptionists WHERE extension_number = ? AND id IS NOT ?",
            (receptionist.extension_number, own_id),
        ).fetchone()
        if row is not None:
            raise Conflict(
                f"extension {receptionist.extension_number} is already used by receptionist "
                f"{row['id']} ({row['name']})",
                {
                    "extension_number": f"extension {receptionist.extension_number} is already "
                    f"used by receptionist {row['id']}"
                },
            )

    def _insert_receptionist(
        self, conn: sqlite3.Connection, receptionist: Receptionist, receptionist_id: str
    ) -> None:
        self._check_references(conn, receptionist, None)
        stamp = now_text()
        conn.execute(
            "INSERT INTO receptionists (id, extension_number, name, prompt_file_id, "
            "transfer_prompt_file_id, doc, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                receptionist_id,
                receptionist.extension_number,
                receptionist.name,
                receptionist.prompt_file_id,
                receptionist.transfer_prompt_file_id,
                dumps(receptionist_document(receptionist)),
                stamp,
                stamp,
            ),
        )
        for action_url in receptionist.action_urls:
            self._insert_action_url(conn, receptionist_id, action_url, action_url.id or new_id())

    def create_receptionist(
        self, receptionist: Receptionist, *, receptionist_id: str | None = None
    ) -> str:
        """Insert a validated receptionist (and any action URLs it lists); return its id.

        Raises Conflict (extension taken) or Invalid (unknown prompt file)."""
        new = receptionist_id or new_id()
        with self._transaction() as conn:
            self._insert_receptionist(conn, receptionist, new)
        self._changed()
        return new

    def get_receptionist(self, receptionist_id: str) -> StoredReceptionist | None:
        with self._lock:
            row = self._conn.execute(
                self._RECEPTIONIST_SELECT + " WHERE r.id = ?", (receptionist_id,)
            ).fetchone()
        return None if row is None else self._receptionist_from(row)

    def update_receptionist(
        self, receptionist_id: str, receptionist: Receptionist, *, revision: int | None = None
    ) -> None:
        """Replace a receptionist's document (its action URLs stay). With `revision`, only if
        nobody changed it since it was read at that revision (else Stale). Raises NotFound,
        Conflict, Invalid or Stale."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT revision FROM receptionists WHERE id = ?", (receptionist_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no receptionist {receptionist_id!r}")
            if revision is not None and row["revision"] != revision:
                raise Stale(f"receptionist {receptionist_id} changed meanwhile; read it again")
            self._check_references(conn, receptionist, receptionist_id)
            conn.execute(
                "UPDATE receptionists SET extension_number = ?, name = ?, prompt_file_id = ?, "
                "transfer_prompt_file_id = ?, doc = ?, updated_at = ?, revision = revision + 1 "
                "WHERE id = ?",
                (
                    receptionist.extension_number,
                    receptionist.name,
                    receptionist.prompt_file_id,
                    receptionist.transfer_prompt_file_id,
                    dumps(receptionist_document(receptionist)),
                    now_text(),
                    receptionist_id,
                ),
            )
        self._changed()

    def delete_receptionist(self, receptionist_id: str) -> bool:
        """Delete a receptionist and (cascade) its action URLs; False if there was none."""
        with self._transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM receptionists WHERE id = ?", (receptionist_id,)
            ).rowcount
        if deleted:
            self._changed()
        return bool(deleted)

    def list_receptionists(self, options: ListOptions) -> Page[StoredReceptionist]:
        count, rows = self._list(
            options, RECEPTIONIST_LIST, "receptionists r", self._RECEPTIONIST_SELECT
        )
        return Page(count, [self._receptionist_from(row) for row in rows])

    def receptionist_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM receptionists").fetchone()[0])

    def load_receptionist(
        self, doc: Mapping[str, Any], receptionist_id: str, action_urls: Sequence[StoredActionUrl]
    ) -> Receptionist:
        """A stored document as the validated model (the PIN hash accepted as stored)."""
        data = {
            **doc,
            "id": receptionist_id,
            "action_urls": [{**url.doc, "id": url.id} for url in action_urls],
        }
        return Receptionist.model_validate(data, context={TRUSTED_STORE: True})

    def snapshot(self) -> Snapshot:
        """Every receptionist (with its action URLs) by extension, every file by id.

        A stored receptionist that no longer validates (after an upgrade of the rules) is left
        out with an error in the log rather than stopping the server. Models of receptionists
        whose stored text did not change since the last snapshot are reused (they are frozen),
        so a write costs one validation, not one per receptionist."""
        with self._read() as conn:
            version = self._version
            rows = conn.execute("SELECT id, doc FROM receptionists ORDER BY rowid").fetchall()
            url_rows = conn.execute(
                f"SELECT {_URL_COLUMNS} FROM action_urls ORDER BY position, rowid"
            ).fetchall()
            file_rows = conn.execute("SELECT id, path FROM files").fetchall()
        urls: dict[str, list[sqlite3.Row]] = {}
        for row in url_rows:
            urls.setdefault(row["receptionist_id"], []).append(row)
        receptionists: dict[str, Receptionist] = {}
        cache: dict[str, tuple[tuple[str, ...], Receptionist]] = {}
        for row in rows:
            own_urls = urls.get(row["id"], [])
            key = (row["doc"], *(f"{u['id']}:{u['doc']}" for u in own_urls))
            cached = self._models.get(row["id"])
            if cached is not None and cached[0] == key:
                model = cached[1]
            else:
                try:
                    model = self.load_receptionist(
                        json.loads(row["doc"]),
                        row["id"],
                        [self._action_url_from(u) for u in own_urls],
                    )
                except ValidationError as error:
                    # paths and messages only: the error's own text would repeat the values
                    log.error(
                        "receptionist %s in the store is not valid, skipped: %s",
                        row["id"],
                        "; ".join(str(problem) for problem in problems_from(error)),
                    )
                    continue
                except ValueError:
                    log.error("receptionist %s in the store is not valid JSON, skipped", row["id"])
                    continue
            cache[row["id"]] = (key, model)
            receptionists[model.extension_number] = model
        self._models = cache
        files = {row["id"]: self._file_path(row["path"]) for row in file_rows}
        return Snapshot(version=version, receptionists=receptionists, files=files)

    # --- action URLs ---------------------------------------------------------------------------

    def _action_url_from(self, row: sqlite3.Row) -> StoredActionUrl:
        return StoredActionUrl(
            id=row["id"],
            receptionist_id=row["receptionist_id"],
            doc=json.loads(row["doc"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            revision=int(row["revision"]),
        )

    def _insert_action_url(
        self, conn: sqlite3.Connection, receptionist_id: str, action_url: ActionUrl, url_id: str
    ) -> None:
        position = conn.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM action_urls WHERE receptionist_id = ?",
            (receptionist_id,),
        ).fetchone()[0]
        stamp = now_text()
        conn.execute(
            "INSERT INTO action_urls (id, receptionist_id, position, doc, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                url_id,
                receptionist_id,
                position,
                dumps(action_url_document(action_url)),
                stamp,
                stamp,
            ),
        )

    def _require_receptionist(self, conn: sqlite3.Connection, receptionist_id: str) -> None:
        if not conn.execute(
            "SELECT 1 FROM receptionists WHERE id = ?", (receptionist_id,)
        ).fetchone():
            raise NotFound(f"no receptionist {receptionist_id!r}")

    def create_action_url(self, receptionist_id: str, action_url: ActionUrl) -> str:
        new = new_id()
        with self._transaction() as conn:
            self._require_receptionist(conn, receptionist_id)
            self._insert_action_url(conn, receptionist_id, action_url, new)
            conn.execute(
                "UPDATE receptionists SET updated_at = ? WHERE id = ?",
                (now_text(), receptionist_id),
            )
        self._changed()
        return new

    def list_action_urls(self, receptionist_id: str) -> list[StoredActionUrl]:
        """The action URLs of a receptionist in order. Raises NotFound."""
        with self._read() as conn:
            self._require_receptionist(conn, receptionist_id)
            rows = conn.execute(
                f"SELECT {_URL_COLUMNS} FROM action_urls "
                "WHERE receptionist_id = ? ORDER BY position, rowid",
                (receptionist_id,),
            ).fetchall()
        return [self._action_url_from(row) for row in rows]

    def get_action_url(self, receptionist_id: str, url_id: str) -> StoredActionUrl | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_URL_COLUMNS} FROM action_urls WHERE receptionist_id = ? AND id = ?",
                (receptionist_id, url_id),
            ).fetchone()
        return None if row is None else self._action_url_from(row)

    def update_action_url(
        self,
        receptionist_id: str,
        url_id: str,
        action_url: ActionUrl,
        *,
        revision: int | None = None,
    ) -> None:
        """Replace an action URL; with `revision` only if unchanged since (else Stale)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT revision FROM action_urls WHERE receptionist_id = ? AND id = ?",
                (receptionist_id, url_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no action URL {url_id!r} of receptionist {receptionist_id!r}")
            if revision is not None and row["revision"] != revision:
                raise Stale(f"action URL {url_id} changed meanwhile; read it again")
            conn.execute(
                "UPDATE action_urls SET doc = ?, updated_at = ?, revision = revision + 1 "
                "WHERE receptionist_id = ? AND id = ?",
                (dumps(action_url_document(action_url)), now_text(), receptionist_id, url_id),
            )
        self._changed()

    def delete_action_url(self, receptionist_id: str, url_id: str) -> bool:
        with self._transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM action_urls WHERE receptionist_id = ? AND id = ?",
                (receptionist_id, url_id),
            ).rowcount
        if deleted:
            self._changed()
        return bool(deleted)

    # --- files ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / f"{digest}.wav"

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
        """Move a converted (and fsynced) WAV into the blob directory and record it.

        Returns (file id, created). A file with the same digest already stored is reused and
        `temp` removed. On any error `temp` and a half-installed blob are removed."""
        target = self.blob_path(digest)
        with self._lock:
            try:
                existing = self.file_by_digest(digest)
                if existing is not None:
                    return existing.id, False
                info = FileInfo(
                    id=file_id or new_id(),
                    digest=digest,
                    name=name,
                    size=temp.stat().st_size,
                    duration=duration,
                    media_type=MEDIA_TYPE_WAV,
                    path=target,
                    created_at=now_text(),
                )
                os.replace(temp, target)
                fsync_dir(self.blob_dir)
                try:
                    with self._transaction() as conn:
                        self._insert_file_row(conn, info, source_digest)
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
            finally:
                temp.unlink(missing_ok=True)
        self._changed()
        return info.id, True

    def _insert_file_row(
        self, conn: sqlite3.Connection, info: FileInfo, source_digest: str | None
    ) -> None:
        conn.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}, source_digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                info.id,
                info.digest,
                info.name,
                info.size,
                info.duration,
                info.media_type,
                self._relative(info.path),
                info.created_at,
                source_digest,
            ),
        )

    def get_file(self, file_id: str) -> FileInfo | None:
        return self._file_where("id", file_id)

    def file_by_digest(self, digest: str) -> FileInfo | None:
        return self._file_where("digest", digest)

    def file_by_source_digest(self, digest: str) -> FileInfo | None:
        return self._file_where("source_digest", digest)

    def _file_where(
        self, column: Literal["id", "digest", "source_digest"], value: str
    ) -> FileInfo | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE {column} = ? ORDER BY created_at LIMIT 1",
                (value,),
            ).fetchone()
        return None if row is None else self._file_from(row)

    def missing_files(self, file_ids: Sequence[str]) -> set[str]:
        """Which of `file_ids` are not stored."""
        with self._lock:
            return {
                file_id
                for file_id in file_ids
                if not self._conn.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone()
            }

    def list_files(self, options: ListOptions) -> Page[FileInfo]:
        select = f"SELECT {', '.join('f.' + c for c in _FILE_COLUMNS.split(', '))} FROM files f"
        count, rows = self._list(options, FILE_LIST, "files f", select)
        return Page(count, [info for row in rows if (info := self._file_from(row))])

    def file_users(self, file_id: str) -> list[tuple[str, str, str]]:
        """(receptionist id, extension, field) of every receptionist using the file."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, extension_number, prompt_file_id, transfer_prompt_file_id "
                "FROM receptionists WHERE prompt_file_id = ? OR transfer_prompt_file_id = ?",
                (file_id, file_id),
            ).fetchall()
        users = []
        for row in rows:
            for name in ("prompt_file_id", "transfer_prompt_file_id"):
                if row[name] == file_id:
                    users.append((row["id"], row["extension_number"], name))
        return users

    def delete_file(self, file_id: str) -> FileInfo:
        """Delete a file and its blob. Raises NotFound, or Conflict while a receptionist
        uses it."""
        with self._lock:
            info = self.get_file(file_id)
            if info is None:
                raise NotFound(f"no file {file_id!r}")
            users = self.file_users(file_id)
            if users:
                named = ", ".join(f"{ext} ({name})" for _, ext, name in users)
                raise Conflict(
                    f"file {file_id} is used by receptionist(s) {named}; point them to another "
                    "file first",
                    {"id": f"used by receptionist(s) {named}"},
                )
            try:
                with self._transaction() as conn:
                    conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            except sqlite3.IntegrityError:
                raise Conflict(f"file {file_id} is in use", {"id": "in use"}) from None
            if info.path.parent.resolve() == self.blob_dir.resolve():
                info.path.unlink(missing_ok=True)
                fsync_dir(self.blob_dir)
        self._changed()
        return info

    def file_paths(self) -> dict[str, Path]:
        with self._lock:
            rows = self._conn.execute("SELECT id, path FROM files").fetchall()
        return {row["id"]: self._file_path(row["path"]) for row in rows}

    # --- seeding -------------------------------------------------------------------------------

    def seed(self, receptionists: Sequence[Receptionist], files: Sequence[FileInfo]) -> bool:
        """Import receptionists and files into a store that was never seeded, in one
        transaction; mark it seeded. Returns whether anything was imported."""
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM meta WHERE key = 'seeded_at'").fetchone():
                return False
            used = bool(
                conn.execute(
                    "SELECT EXISTS(SELECT 1 FROM receptionists) OR EXISTS(SELECT 1 FROM files)"
                ).fetchone()[0]
            )
            if not used:
                for info in files:
                    self._insert_file_row(conn, info, None)
                for receptionist in receptionists:
                    self._insert_receptionist(conn, receptionist, receptionist.id or new_id())
            conn.execute("INSERT INTO meta (key, value) VALUES ('seeded_at', ?)", (now_text(),))
        self._changed()
        return not used
