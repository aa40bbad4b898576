"""The store's schema: numbered migrations, applied in order at open and recorded in
`PRAGMA user_version`."""

from __future__ import annotations

# Each migration is a list of statements, applied in one transaction; never edit a released one,
# add the next.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            duration REAL NOT NULL,
            media_type TEXT NOT NULL,
            path TEXT NOT NULL,
            source_digest TEXT,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE receptionists (
            id TEXT PRIMARY KEY,
            extension_number TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            prompt_file_id TEXT REFERENCES files(id),
            transfer_prompt_file_id TEXT REFERENCES files(id),
            doc TEXT NOT NULL,
            revision INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        "CREATE INDEX receptionists_prompt ON receptionists(prompt_file_id)",
        "CREATE INDEX receptionists_transfer_prompt ON receptionists(transfer_prompt_file_id)",
        """CREATE TABLE action_urls (
            id TEXT PRIMARY KEY,
            receptionist_id TEXT NOT NULL REFERENCES receptionists(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            doc TEXT NOT NULL,
            revision INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        "CREATE INDEX action_urls_receptionist ON action_urls(receptionist_id, position)",
        """CREATE TABLE uploads (
            id TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            filename TEXT NOT NULL,
            temporary INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            touched_at REAL NOT NULL)""",
        """CREATE TABLE call_records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            receptionist_id TEXT,
            extension_number TEXT,
            caller_number TEXT,
            outcome TEXT,
            started_at TEXT,
            ended_at TEXT,
            doc TEXT NOT NULL)""",
        "CREATE INDEX call_records_session ON call_records(session_id)",
        "CREATE INDEX call_records_started ON call_records(started_at)",
        """CREATE TABLE disa_lockouts (key TEXT PRIMARY KEY, locked_until REAL NOT NULL)""",
        """CREATE TABLE disa_failures (key TEXT NOT NULL, at REAL NOT NULL)""",
        "CREATE INDEX disa_failures_key ON disa_failures(key, at)",
    ),
    # 2: a prompt can be downloaded by the digest of the bytes uploaded, too; the limit of open
    # uploads counts per API token (its fingerprint; '' for sessions from before)
    (
        "CREATE INDEX files_source_digest ON files(source_digest)",
        "ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
