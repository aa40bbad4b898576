"""The store: one SQLite file in the data directory, the source of truth once it exists.

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

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from pydantic import SecretStr, ValidationError

from engine.config import problems_from
from engine.errors import VrError
from engine.model import TRUSTED_STORE, ActionUrl, Receptionist
from engine.records import CallRecord, CallRecords

log = logging.getLogger("vr.store")

P = ParamSpec("P")
T = TypeVar("T")

DB_NAME = "vr-engine.db"
BLOB_DIR = "blobs"
UPLOAD_DIR = "uploads"
MEDIA_TYPE_WAV = "audio/vnd.wave"
MAX_TOP = 100
MAX_SKIP = 2**31 - 1
SECRET_FIELDS = ("password", "token", "signing_secret")


# --- errors ----------------------------------------------------------------------------------


class StoreError(VrError):
    """The store refused an operation; `detail` maps field paths to what is wrong."""

    def __init__(self, message: str, detail: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = dict(detail or {})


class NotFound(StoreError):
    """No such receptionist, action URL, file, upload or call record."""


class Conflict(StoreError):
    """The write would break uniqueness (extension number) or remove something in use."""


class Invalid(StoreError):
    """The request is well-formed but its values are not acceptable (every problem at once)."""


class Stale(Conflict):
    """A read-modify-write lost a race: the row changed since it was read."""


class TooLarge(StoreError):
    """An upload is over the size limit."""


class Forbidden(StoreError):
    """A credential of the request (the upload token) does not match."""


class RangeMismatch(StoreError):
    """An upload chunk does not start where the upload ends."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, {"Content-Range": message})
        self.size = size


# --- small helpers ---------------------------------------------------------------------------


def new_id() -> str:
    """An opaque resource id: url-safe base64 of 12 random bytes (16 characters)."""
    return secrets.token_urlsafe(12)


def now_text() -> str:
    """The current time as RFC 3339 UTC with milliseconds, e.g. 2026-01-14T09:00:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


# --- schema ----------------------------------------------------------------------------------

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
)
SCHEMA_VERSION = len(MIGRATIONS)


# --- the list-query language -----------------------------------------------------------------

Kind = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class Field:
    """A field clients may filter and order by: its SQL expression (a constant written here,
    never built from input) and its type."""

    sql: str
    kind: Kind = "str"


@dataclass(frozen=True)
class ListSpec:
    fields: Mapping[str, Field]
    search: tuple[str, ...]
    default_order: str


@dataclass(frozen=True)
class ListOptions:
    """PortSIP's list options, as given by the client."""

    filter: str | None = None
    search: str | None = None
    orderby: str | None = None
    skip: int = 0
    top: int = MAX_TOP


@dataclass(frozen=True)
class Page(Generic[T]):
    count: int
    items: list[T]


class QueryError(Invalid):
    """A filter, search or orderby the store cannot run; `detail` names the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}", {parameter: message})


_COMPARE_SQL = {
    "eq": "IS",
    "ne": "IS NOT",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
}
_FUNCTIONS = ("contains", "startswith", "endswith")
_TOKEN_RE = re.compile(r"\s+|'(?:[^']|'')*'|-?\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*|[(),]")
MAX_FILTER_CHARS = 2000
MAX_FILTER_DEPTH = 16
MAX_FILTER_TERMS = 64


@dataclass(frozen=True)
class _Token:
    kind: Literal["str", "num", "name", "punct"]
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise QueryError("filter", f"unterminated string starting at position {pos}")
            raise QueryError("filter", f"unexpected character {text[pos]!r} at position {pos}")
        chunk = match.group()
        if chunk.startswith("'"):
            tokens.append(_Token("str", chunk[1:-1].replace("''", "'"), pos))
        elif chunk[0].isdigit() or chunk[0] == "-":
            tokens.append(_Token("num", chunk, pos))
        elif chunk[0] in "(),":
            tokens.append(_Token("punct", chunk, pos))
        elif not chunk.isspace():
            tokens.append(_Token("name", chunk, pos))
        pos = match.end()
    return tokens


class _FilterCompiler:
    """Recursive descent over the OData-like grammar, emitting SQL with `?` placeholders:

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | func '(' field ',' string ')'
             | field op value
    op      := eq | ne | gt | ge | lt | le
    value   := 'text' | number | true | false | null
    """

    def __init__(self, text: str, fields: Mapping[str, Field]) -> None:
        self.tokens = _tokenize(text)
        self.fields = fields
        self.index = 0
        self.depth = 0
        self.terms = 0
        self.params: list[Any] = []

    def compile(self) -> str:
        if not self.tokens:
            raise QueryError("filter", "is empty")
        sql = self._or()
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            raise QueryError("filter", f"unexpected {token.text!r} at position {token.pos}")
        return sql

    # token access
    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise QueryError("filter", f"ends too early: expected {expected}")
        self.index += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "name" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def _punct(self, char: str) -> None:
        token = self._next(repr(char))
        if token.text != char or token.kind != "punct":
            raise QueryError("filter", f"expected {char!r} at position {token.pos}")

    # grammar
    def _or(self) -> str:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _and(self) -> str:
        parts = [self._unary()]
        while self._keyword("and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _unary(self) -> str:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise QueryError("filter", f"is nested more than {MAX_FILTER_DEPTH} levels deep")
        try:
            if self._keyword("not"):
                return f"(NOT {self._unary()})"
            token = self._peek()
            if token is not None and token.kind == "punct" and token.text == "(":
                self.index += 1
                inner = self._or()
                self._punct(")")
                return f"({inner})"
            return self._term()
        finally:
            self.depth -= 1

    def _term(self) -> str:
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise QueryError("filter", f"has more than {MAX_FILTER_TERMS} conditions")
        token = self._next("a field name or a function")
        if token.kind != "name":
            raise QueryError(
                "filter", f"expected a field name at position {token.pos}, not {token.text!r}"
            )
        following = self._peek()
        if token.text.lower() in _FUNCTIONS and following is not None and following.text == "(":
            return self._function(token.text.lower())
        spec = self._field(token)
        op_token = self._next("an operator (eq ne gt ge lt le)")
        op = op_token.text.lower()
        if op_token.kind != "name" or op not in _COMPARE_SQL:
            raise QueryError(
                "filter",
                f"expected an operator (eq ne gt ge lt le) at position {op_token.pos}, "
                f"not {op_token.text!r}",
            )
        value = self._value(token.text, spec)
        if value is None and op not in ("eq", "ne"):
            raise QueryError("filter", f"null can only be compared with eq or ne ({token.text})")
        if isinstance(value, bool) and op not in ("eq", "ne"):
            raise QueryError("filter", "true/false can only be compared with eq or ne")
        self.params.append(value)
        return f"{spec.sql} {_COMPARE_SQL[op]} ?"

    def _function(self, name: str) -> str:
        self._punct("(")
        field_token = self._next("a field name")
        spec = self._field(field_token)
        if spec.kind != "str":
            raise QueryError("filter", f"{name}() needs a text field; {field_token.text} is not")
        self._punct(",")
        value_token = self._next("a quoted text")
        if value_token.kind != "str":
            raise QueryError(
                "filter", f"{name}() needs a quoted text like 'abc' at position {value_token.pos}"
            )
        self._punct(")")
        text = value_token.text
        if text == "":
            return f"({spec.sql} IS NOT NULL)"
        if name == "contains":
            self.params.append(text)
            return f"(instr({spec.sql}, ?) > 0)"
        self.params += [text, text]
        if name == "startswith":
            return f"(substr({spec.sql}, 1, length(?)) = ?)"
        return f"(substr({spec.sql}, -length(?)) = ?)"

    def _field(self, token: _Token) -> Field:
        spec = self.fields.get(token.text) if token.kind == "name" else None
        if spec is None:
            raise QueryError(
                "filter",
                f"unknown field {token.text!r} at position {token.pos}; fields: "
                + ", ".join(sorted(self.fields)),
            )
        return spec

    def _value(self, field_name: str, spec: Field) -> Any:
        token = self._next("a value")
        value: Any
        if token.kind == "str":
            value = token.text
        elif token.kind == "num":
            value = float(token.text) if "." in token.text else int(token.text)
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise QueryError("filter", f"number out of range at position {token.pos}")
        elif token.kind == "name" and token.text.lower() in ("true", "false"):
            value = token.text.lower() == "true"
        elif token.kind == "name" and token.text.lower() == "null":
            return None
        else:
            raise QueryError(
                "filter",
                f"expected a value ('text', a number, true, false or null) at position "
                f"{token.pos}, not {token.text!r}",
            )
        expected: dict[Kind, tuple[type, ...]] = {
            "str": (str,),
            "int": (int,),
            "float": (int, float),
            "bool": (bool,),
        }
        if isinstance(value, bool) != (spec.kind == "bool") or not isinstance(
            value, expected[spec.kind]
        ):
            example = {"str": "'text'", "int": "a whole number", "float": "a number"}
            raise QueryError(
                "filter",
                f"{field_name} is compared with {example.get(spec.kind, 'true or false')}"
                f" (position {token.pos})",
            )
        return value


def compile_filter(text: str, fields: Mapping[str, Field]) -> tuple[str, list[Any]]:
    """A filter expression as (SQL condition, parameters). Raises QueryError."""
    if len(text) > MAX_FILTER_CHARS:
        raise QueryError("filter", f"is longer than {MAX_FILTER_CHARS} characters")
    compiler = _FilterCompiler(text, fields)
    sql = compiler.compile()
    return sql, compiler.params


def compile_orderby(text: str, fields: Mapping[str, Field]) -> str:
    """`name desc, extension_number` as an ORDER BY list. Raises QueryError."""
    terms = []
    items = [item.strip() for item in text.split(",")]
    if len(items) > 5:
        raise QueryError("orderby", "may name at most 5 fields")
    for item in items:
        words = item.split()
        if not words or len(words) > 2:
            raise QueryError("orderby", f"{item!r} is not 'field' or 'field asc|desc'")
        spec = fields.get(words[0])
        if spec is None:
            raise QueryError(
                "orderby", f"unknown field {words[0]!r}; fields: " + ", ".join(sorted(fields))
            )
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise QueryError("orderby", f"direction {words[1]!r} must be asc or desc")
        terms.append(f"{spec.sql} {direction.upper()}")
    return ", ".join(terms)


def compile_list(options: ListOptions, spec: ListSpec) -> tuple[str, list[Any], str]:
    """The WHERE condition, its parameters and the ORDER BY list of a list request."""
    if not 0 <= options.skip <= MAX_SKIP:
        raise QueryError("skip", f"must be between 0 and {MAX_SKIP}")
    if not 1 <= options.top <= MAX_TOP:
        raise QueryError("top", f"must be between 1 and {MAX_TOP}")
    conditions: list[str] = []
    params: list[Any] = []
    if options.filter is not None and options.filter.strip():
        sql, filter_params = compile_filter(options.filter, spec.fields)
        conditions.append(sql)
        params += filter_params
    if options.search is not None and options.search.strip():
        if len(options.search) > 256:
            raise QueryError("search", "is longer than 256 characters")
        needle = options.search.strip().casefold()
        conditions.append(
            "(" + " OR ".join(f"instr(vr_fold({column}), ?) > 0" for column in spec.search) + ")"
        )
        params += [needle] * len(spec.search)
    order = spec.default_order
    if options.orderby is not None and options.orderby.strip():
        order = compile_orderby(options.orderby, spec.fields) + ", " + spec.default_order
    return " AND ".join(conditions) or "1", params, order


RECEPTIONIST_LIST = ListSpec(
    fields={
        "id": Field("r.id"),
        "name": Field("r.name"),
        "extension_number": Field("r.extension_number"),
        "language": Field("json_extract(r.doc, '$.language')"),
        "enabled": Field("json_extract(r.doc, '$.enabled')", "bool"),
        "dtmf_interval": Field("json_extract(r.doc, '$.dtmf_interval')", "int"),
        "enable_pin": Field("json_extract(r.doc, '$.enable_pin')", "bool"),
        "enable_night_mode": Field("json_extract(r.doc, '$.enable_night_mode')", "bool"),
        "exclude_list": Field("json_extract(r.doc, '$.exclude_list')"),
        "prompt_file_id": Field("r.prompt_file_id"),
        "transfer_prompt_file_id": Field("r.transfer_prompt_file_id"),
        "created_at": Field("r.created_at"),
        "updated_at": Field("r.updated_at"),
    },
    search=("r.name", "r.extension_number"),
    default_order="r.rowid ASC",
)

FILE_LIST = ListSpec(
    fields={
        "id": Field("f.id"),
        "name": Field("f.name"),
        "size": Field("f.size", "int"),
        "duration": Field("f.duration", "float"),
        "media_type": Field("f.media_type"),
        "digest": Field("f.digest"),
        "created_at": Field("f.created_at"),
    },
    search=("f.name",),
    default_order="f.rowid ASC",
)

CALL_LIST = ListSpec(
    fields={
        "session_id": Field("c.session_id"),
        "receptionist_id": Field("c.receptionist_id"),
        "receptionist": Field("json_extract(c.doc, '$.receptionist')"),
        "extension_number": Field("c.extension_number"),
        "caller_number": Field("c.caller_number"),
        "caller_name": Field("json_extract(c.doc, '$.caller_name')"),
        "outcome": Field("c.outcome"),
        "reason": Field("json_extract(c.doc, '$.reason')"),
        "transferred_to": Field("json_extract(c.doc, '$.transferred_to')"),
        "transfer_sip_code": Field("json_extract(c.doc, '$.transfer_sip_code')", "int"),
        "started_at": Field("c.started_at"),
        "answered_at": Field("json_extract(c.doc, '$.answered_at')"),
        "ended_at": Field("c.ended_at"),
    },
    search=(
        "c.session_id",
        "c.caller_number",
        "c.extension_number",
        "json_extract(c.doc, '$.receptionist')",
    ),
    default_order="c.seq DESC",
)


# --- what the store returns ------------------------------------------------------------------


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


@dataclass(frozen=True)
class Snapshot:
    """What new calls are built from: receptionists by extension, prompt files by id.

    `version` grows with every write, so a consumer can ignore a snapshot older than one it
    already applied."""

    version: int
    receptionists: dict[str, Receptionist] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


_FILE_COLUMNS = "id, digest, name, size, duration, media_type, path, created_at"
_URL_COLUMNS = "id, receptionist_id, doc, revision, created_at, updated_at"


# --- the store -------------------------------------------------------------------------------


class Store:
    """The SQLite store of one data directory. Thread-safe; see the module doc string."""

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
        self._conn.create_function("vr_fold", 1, _fold, deterministic=True)
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
    def open(cls, data_dir: Path) -> Store:
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

    # --- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT), rolled back on any error."""
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot across several SELECTs)."""
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

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
                _dumps(receptionist_document(receptionist)),
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
                    _dumps(receptionist_document(receptionist)),
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
        where, params, order = compile_list(options, RECEPTIONIST_LIST)
        with self._read() as conn:
            count = conn.execute(
                f"SELECT COUNT(*) FROM receptionists r WHERE {where}", params
            ).fetchone()[0]
            rows = conn.execute(
                f"{self._RECEPTIONIST_SELECT} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, options.top, options.skip],
            ).fetchall()
        return Page(int(count), [self._receptionist_from(row) for row in rows])

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
                _dumps(action_url_document(action_url)),
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
                (_dumps(action_url_document(action_url)), now_text(), receptionist_id, url_id),
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
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)
            ).fetchone()
        return None if row is None else self._file_from(row)

    def file_by_digest(self, digest: str) -> FileInfo | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE digest = ?", (digest,)
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
        where, params, order = compile_list(options, FILE_LIST)
        with self._read() as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM files f WHERE {where}", params).fetchone()[
                0
            ]
            rows = conn.execute(
                f"SELECT {', '.join('f.' + c for c in _FILE_COLUMNS.split(', '))} FROM files f "
                f"WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, options.top, options.skip],
            ).fetchall()
        return Page(int(count), [info for row in rows if (info := self._file_from(row))])

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

    # --- upload sessions -----------------------------------------------------------------------

    def _upload_from(self, row: sqlite3.Row) -> UploadSession:
        return UploadSession(
            id=row["id"],
            token=row["token"],
            filename=row["filename"],
            temporary=bool(row["temporary"]),
            created_at=row["created_at"],
            touched_at=float(row["touched_at"]),
        )

    def create_upload(
        self,
        upload_id: str,
        token: str,
        filename: str,
        temporary: bool,
        now: float,
        max_sessions: int,
    ) -> UploadSession:
        with self._transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0]
            if count >= max_sessions:
                raise Conflict(
                    f"{count} uploads are in progress; complete or destroy one first",
                    {"uploads": f"at most {max_sessions} uploads may be open at once"},
                )
            conn.execute(
                "INSERT INTO uploads (id, token, filename, temporary, created_at, touched_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (upload_id, token, filename, int(temporary), now_text(), now),
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

    def upload_ids(self, *, touched_before: float | None = None) -> list[str]:
        with self._lock:
            if touched_before is None:
                rows = self._conn.execute("SELECT id FROM uploads").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT id FROM uploads WHERE touched_at < ?", (touched_before,)
                ).fetchall()
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
                    _dumps(record),
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
        where, params, order = compile_list(options, CALL_LIST)
        with self._read() as conn:
            count = conn.execute(
                f"SELECT COUNT(*) FROM call_records c WHERE {where}", params
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT c.doc FROM call_records c WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, options.top, options.skip],
            ).fetchall()
        return Page(int(count), [dict(json.loads(row["doc"])) for row in rows])

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


# --- functions the server uses ---------------------------------------------------------------


def receptionist_snapshot(store: Store) -> dict[str, Receptionist]:
    """Every stored receptionist by extension number, for `Runtime.set_receptionists`."""
    return store.snapshot().receptionists


def _wav_duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0


def _sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seed_from_config(
    store: Store, receptionists: Mapping[str, Receptionist], files: Mapping[str, Path]
) -> bool:
    """Import the configuration's receptionists into a store that was never seeded.

    `receptionists` and `files` are what `engine.server.prepare_prompt_files` returns: the
    configured receptionists with their prompt paths already turned into file ids, and those
    ids' converted WAVs. Once a store was seeded (even with nothing), the API is the source of
    truth and this does nothing. Returns whether it imported."""
    if store.seeded:
        return False
    stamp = now_text()
    infos = [
        FileInfo(
            id=file_id,
            digest=_sha256_file(path),
            name=path.name,
            size=path.stat().st_size,
            duration=_wav_duration(path),
            media_type=MEDIA_TYPE_WAV,
            path=path,
            created_at=stamp,
        )
        for file_id, path in files.items()
    ]
    seeded = store.seed(list(receptionists.values()), infos)
    if seeded:
        log.info(
            "store %s seeded with %d receptionist(s) and %d prompt file(s) from the configuration",
            store.path,
            len(receptionists),
            len(infos),
        )
    return seeded


class StoreCallRecords(CallRecords):
    """The runtime's record sink, backed by the store: `write` keeps the record in memory and
    queues its insert on the store's thread (the loop never waits for the fsync); `recent` and
    `total` start from what the store holds. Keeps at most `max_stored` records on disk."""

    def __init__(self, store: Store, keep: int = 1000, max_stored: int = 100_000) -> None:
        super().__init__(None, keep)
        self.store = store
        self.max_stored = max_stored
        self.recent.extend(store.recent_call_records(keep))
        self.total = store.call_record_count()
        self._since_prune = 0

    def write(self, record: CallRecord) -> None:
        document = record.document()
        self.recent.append(document)
        self.total += 1
        self._since_prune += 1
        try:
            future = self.store.submit(self.store.add_call_record, document)
            future.add_done_callback(_log_failure)
            if self._since_prune >= 1000:
                self._since_prune = 0
                self.store.submit(self.store.prune_call_records, self.max_stored).add_done_callback(
                    _log_failure
                )
        except RuntimeError:  # the store's thread is shut down
            log.error("call record %s not stored: the store is closed", record.session_id)


class StoreDisaSink:
    """Persists DISA failed calls and lock-outs on the store's thread (the loop never waits).

    At start, `store.disa_lockouts(now)` and `store.disa_failures(now - failure_window)` give
    back what was recorded before a restart."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def failure(self, key: str, at: float) -> None:
        self._submit(self.store.add_disa_failure, key, at)

    def locked(self, key: str, until: float) -> None:
        self._submit(self.store.put_disa_lockout, key, until)

    def _submit(self, fn: Callable[[str, float], None], key: str, value: float) -> None:
        try:
            self.store.submit(fn, key, value).add_done_callback(_log_failure)
        except RuntimeError:
            log.error("DISA state for %s not stored: the store is closed", key)


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        log.error("store write failed: %s", error)
