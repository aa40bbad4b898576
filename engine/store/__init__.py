"""The store: one SQLite file in the data directory, the source of truth once it exists.

Layout: `db` (the connection, migrations from `schema`, transactions, the worker thread),
`catalog` (receptionists, action URLs, prompt files, snapshots), `journal` (upload sessions,
call records, DISA state), `query` (the list-query language), `objects` (what it returns),
`seed` (importing a configuration once), `sinks` (the runtime's record and lock-out sinks),
`sqlite.Store` (the facade: catalog and journal on one connection) and `interface.StoreBackend`
(the operations callers use, which a second backend implements). The errors it raises are in
`engine.errors` (`StoreError` and its kinds).

It owns the receptionists (a JSON document of the validated model, the PIN as its salted hash
only), their action URLs, prompt files (rows here, converted WAVs in ``<data>/blobs``), resumable
upload sessions, call records and DISA lock-outs; the list-query language of the API
(``filter``/``search``/``orderby``/``skip``/``top``), compiled to SQL with bound parameters over
whitelisted fields only; and the snapshots of receptionists and prompt files that new calls use.

Durability: WAL with ``synchronous=FULL``. Every commit appends to the WAL and fsyncs it before
returning, so a write that got a 2xx survives ``kill -9`` *and* a power cut. (``NORMAL`` would
survive a process crash too — the WAL pages are in the OS cache — but could lose the last
commits on power loss; writes here are rare and small, one fsync each is cheap.) Foreign keys
are on; schema changes are numbered migrations below, applied in one transaction each and
recorded in ``PRAGMA user_version``.

Threading: one connection, guarded by a lock, each operation a single short transaction. From
the asyncio loop, go through :meth:`Store.run`, which runs an operation on the store's single
worker thread: the loop never waits for an fsync, and operations run in submission order
(a record written with :meth:`Store.submit` is visible to any read submitted after it).
"""

from __future__ import annotations

from engine.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QueryError,
    RangeMismatch,
    Stale,
    StoreError,
    TooLarge,
)
from engine.store.catalog import (
    MEDIA_TYPE_WAV,
    SECRET_FIELDS,
    action_url_document,
    receptionist_document,
)
from engine.store.db import (
    BLOB_DIR,
    DB_NAME,
    UPLOAD_DIR,
    new_id,
    now_text,
)
from engine.store.interface import (
    StoreBackend,
)
from engine.store.objects import (
    FileInfo,
    Snapshot,
    StoredActionUrl,
    StoredReceptionist,
    UploadSession,
)
from engine.store.query import (
    CALL_LIST,
    FILE_LIST,
    MAX_SKIP,
    MAX_TOP,
    RECEPTIONIST_LIST,
    Field,
    ListOptions,
    ListSpec,
    Page,
    compile_filter,
    compile_list,
    compile_orderby,
)
from engine.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
)
from engine.store.seed import (
    configured_file_id,
    receptionist_snapshot,
    seed_from_config,
    seeding_differences,
)
from engine.store.sinks import (
    StoreCallRecords,
    StoreDisaSink,
)
from engine.store.sqlite import (
    Store,
)

__all__ = [
    "BLOB_DIR",
    "CALL_LIST",
    "DB_NAME",
    "FILE_LIST",
    "MAX_SKIP",
    "MAX_TOP",
    "MEDIA_TYPE_WAV",
    "MIGRATIONS",
    "RECEPTIONIST_LIST",
    "SCHEMA_VERSION",
    "SECRET_FIELDS",
    "UPLOAD_DIR",
    "Conflict",
    "Field",
    "FileInfo",
    "Forbidden",
    "Invalid",
    "ListOptions",
    "ListSpec",
    "NotFound",
    "Page",
    "QueryError",
    "RangeMismatch",
    "Snapshot",
    "Stale",
    "Store",
    "StoreBackend",
    "StoreCallRecords",
    "StoreDisaSink",
    "StoreError",
    "StoredActionUrl",
    "StoredReceptionist",
    "TooLarge",
    "UploadSession",
    "action_url_document",
    "compile_filter",
    "compile_list",
    "compile_orderby",
    "configured_file_id",
    "new_id",
    "now_text",
    "receptionist_document",
    "receptionist_snapshot",
    "seed_from_config",
    "seeding_differences",
]
