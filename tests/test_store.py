"""The SQLite store on real files: settings, migrations, receptionists (PIN hash only), action
URLs, files, call records, DISA lock-outs, seeding, and the list-query language compiled to
SQL over whitelisted fields (never interpolated)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import ActionUrl, Receptionist
from engine.rules.pin import verify_pin
from engine.store import (
    RECEPTIONIST_LIST,
    SCHEMA_VERSION,
    Conflict,
    Invalid,
    ListOptions,
    NotFound,
    QueryError,
    Store,
    StoreCallRecords,
    StoreError,
    compile_filter,
    compile_orderby,
    receptionist_snapshot,
    seed_from_config,
)
from tests.record_helpers import call_record

PIN = "135790"


def ivr(extension: str = "800", name: str = "Main", **fields: Any) -> Receptionist:
    return Receptionist.model_validate({"name": name, "extension_number": extension, **fields})


def crm_url(**fields: Any) -> ActionUrl:
    data = {
        "name": "crm",
        "enabled": True,
        "type": "DTMF",
        "dtmf_mask": "5000-5999",
        "url": "http://127.0.0.1:9/route",
        "auth": "DIGEST",
        "username": "crmuser1",
        "password": "crmpass1",
    }
    return ActionUrl.model_validate({**data, **fields})


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = Store.open(tmp_path)
    yield opened
    opened.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def put_wav(store: Store, name: str = "x.wav", seconds: float = 0.5, freq: float = 440.0) -> str:
    temp = store.upload_dir / f"{name}.tmp"
    t = np.arange(int(8000 * seconds)) / 8000
    sf.write(
        temp, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000, "PCM_16", format="WAV"
    )
    import hashlib

    digest = hashlib.sha256(temp.read_bytes()).hexdigest()
    file_id, created = store.install_file(temp, digest=digest, name=name, duration=seconds)
    assert created
    return file_id


# --- settings and migrations ---------------------------------------------------------------


def test_open_uses_wal_full_sync_foreign_keys_and_the_latest_schema(store: Store) -> None:
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.schema_version == SCHEMA_VERSION
    assert store.integrity_check() == "ok"
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_reopening_keeps_data_and_runs_no_migration_twice(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    rid = first.create_receptionist(ivr())
    first.close()
    second = Store.open(tmp_path)
    assert second.get_receptionist(rid) is not None
    assert second.schema_version == SCHEMA_VERSION
    second.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    with raw(tmp_path / "vr-engine.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this vr-engine supports"):
        Store.open(tmp_path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "vr-engine.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot"):
        Store.open(tmp_path)


# --- receptionists -------------------------------------------------------------------------


def test_only_the_pin_hash_is_stored(store: Store) -> None:
    rid = store.create_receptionist(ivr(pin=PIN))
    store.close()
    with raw(store.path) as conn:
        (doc,) = conn.execute("SELECT doc FROM receptionists WHERE id = ?", (rid,)).fetchone()
    assert PIN not in doc and PIN.encode() not in Path(store.path).read_bytes()
    stored_hash = json.loads(doc)["pin"]
    assert stored_hash.startswith("pbkdf2_sha256$") and verify_pin(stored_hash, PIN)


def test_snapshot_gives_validated_models_with_action_urls_in_order(store: Store) -> None:
    rid = store.create_receptionist(ivr(pin=PIN))
    first = store.create_action_url(rid, crm_url(name="first"))
    second = store.create_action_url(rid, crm_url(name="second", type="CALLER", caller_mask="ALL"))
    snapshot = store.snapshot()
    model = snapshot.receptionists["800"]
    assert model.id == rid
    assert [u.id for u in model.action_urls] == [first, second]
    assert model.action_urls[0].password is not None
    assert model.action_urls[0].password.get_secret_value() == "crmpass1"
    assert model.pin is not None and verify_pin(model.pin, PIN)
    assert receptionist_snapshot(store) == snapshot.receptionists


def test_versions_grow_with_every_write(store: Store) -> None:
    before = store.version
    rid = store.create_receptionist(ivr())
    store.update_receptionist(rid, ivr(name="Renamed"))
    assert store.version == before + 2
    assert store.snapshot().version == store.version


def test_extension_numbers_are_unique(store: Store) -> None:
    rid = store.create_receptionist(ivr("800"))
    with pytest.raises(Conflict) as caught:
        store.create_receptionist(ivr("800", name="Other"))
    assert "extension_number" in caught.value.detail
    other = store.create_receptionist(ivr("801"))
    with pytest.raises(Conflict):
        store.update_receptionist(other, ivr("800"))
    store.update_receptionist(rid, ivr("800", name="Same extension is fine"))


def test_unknown_prompt_files_are_refused(store: Store) -> None:
    with pytest.raises(Invalid) as caught:
        store.create_receptionist(ivr(prompt_file_id="nope", transfer_prompt_file_id="nada"))
    assert set(caught.value.detail) == {"prompt_file_id", "transfer_prompt_file_id"}
    assert store.receptionist_count() == 0


def test_update_and_delete_of_unknown_ids(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update_receptionist("missing", ivr())
    assert store.delete_receptionist("missing") is False
    with pytest.raises(NotFound):
        store.create_action_url("missing", crm_url())
    with pytest.raises(NotFound):
        store.list_action_urls("missing")


def test_deleting_a_receptionist_cascades_to_its_action_urls(store: Store) -> None:
    rid = store.create_receptionist(ivr())
    store.create_action_url(rid, crm_url())
    assert store.delete_receptionist(rid)
    with raw(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM action_urls").fetchone()[0] == 0


def test_a_stored_receptionist_that_no_longer_validates_is_skipped(store: Store) -> None:
    good = store.create_receptionist(ivr("800"))
    bad = store.create_receptionist(ivr("801"))
    with store._transaction() as conn:
        conn.execute(
            "UPDATE receptionists SET doc = json_set(doc, '$.dtmf_interval', 999) WHERE id = ?",
            (bad,),
        )
    snapshot = store.snapshot()
    assert [r.id for r in snapshot.receptionists.values()] == [good]


def test_writes_from_many_threads_are_serialized(store: Store) -> None:
    errors: list[BaseException] = []

    def create(start: int) -> None:
        try:
            for n in range(start, start + 20):
                store.create_receptionist(ivr(str(1000 + n)))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=create, args=(k * 20,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.receptionist_count() == 80


# --- files -----------------------------------------------------------------------------------


def test_files_in_use_cannot_be_deleted(store: Store) -> None:
    file_id = put_wav(store)
    rid = store.create_receptionist(ivr(prompt_file_id=file_id))
    with pytest.raises(Conflict, match="800"):
        store.delete_file(file_id)
    # the foreign key backs this up even for raw SQL
    with raw(store.path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    store.update_receptionist(rid, ivr())
    info = store.delete_file(file_id)
    assert not info.path.exists()
    assert store.get_file(file_id) is None
    with pytest.raises(NotFound):
        store.delete_file(file_id)


def test_installing_the_same_audio_twice_gives_the_same_file(store: Store) -> None:
    first = put_wav(store, "a.wav")
    temp = store.upload_dir / "again.tmp"
    temp.write_bytes(store.get_file(first).path.read_bytes())  # type: ignore[union-attr]
    digest = store.get_file(first).digest  # type: ignore[union-attr]
    again, created = store.install_file(temp, digest=digest, name="b.wav", duration=0.5)
    assert (again, created) == (first, False)
    assert not temp.exists()
    assert len(store.file_paths()) == 1


# --- call records ----------------------------------------------------------------------------


def record(session: str, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": session,
        "receptionist_id": "r1",
        "receptionist": "Main",
        "extension_number": "800",
        "caller_number": "1001",
        "started_at": "2026-01-14T09:00:00+00:00",
        "ended_at": "2026-01-14T09:01:00+00:00",
        "outcome": "transferred",
        "transferred_to": "201",
        **fields,
    }


def test_the_record_sink_writes_through_the_store_thread(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    sink = StoreCallRecords(store, keep=2)
    for n in range(3):
        sink.write(call_record(session_id=f"s{n}"))
    assert [r["session_id"] for r in sink.recent] == ["s1", "s2"]
    assert sink.total == 3
    store.close()  # waits for the queued inserts
    reopened = Store.open(tmp_path)
    again = StoreCallRecords(reopened, keep=10)
    assert again.total == 3 and [r["session_id"] for r in again.recent] == ["s0", "s1", "s2"]
    assert reopened.get_call_record("s1") == call_record(session_id="s1").document()
    assert reopened.get_call_record("nope") is None
    reopened.close()


def test_call_records_are_listed_newest_first_and_pruned(store: Store) -> None:
    for n in range(5):
        store.add_call_record(record(f"s{n}", outcome="hung_up_by_caller" if n % 2 else "x"))
    page = store.list_call_records(ListOptions())
    assert page.count == 5 and [r["session_id"] for r in page.items] == [
        "s4",
        "s3",
        "s2",
        "s1",
        "s0",
    ]
    page = store.list_call_records(ListOptions(filter="outcome eq 'hung_up_by_caller'"))
    assert [r["session_id"] for r in page.items] == ["s3", "s1"]
    assert store.prune_call_records(2) == 3
    assert [r["session_id"] for r in store.recent_call_records(10)] == ["s3", "s4"]


def test_a_repeated_session_id_returns_the_latest_record(store: Store) -> None:
    store.add_call_record(record("same", outcome="first"))
    store.add_call_record(record("same", outcome="second"))
    assert store.get_call_record("same")["outcome"] == "second"  # type: ignore[index]


# --- DISA ------------------------------------------------------------------------------------


def test_disa_lockouts_and_failures_persist(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    now = time.time()
    store.put_disa_lockout("number:1001", now + 60)
    store.put_disa_lockout("number:1001", now + 120)
    store.put_disa_lockout("source:192.0.2.1", now - 1)
    store.add_disa_failure("number:1002", now - 10)
    store.add_disa_failure("number:1002", now - 5000)
    store.close()
    store = Store.open(tmp_path)
    assert store.disa_lockouts(now) == {"number:1001": pytest.approx(now + 120)}
    assert store.disa_failures(now - 900) == {"number:1002": [pytest.approx(now - 10)]}
    store.prune_disa(now, 900)
    assert store.disa_failures(0) == {"number:1002": [pytest.approx(now - 10)]}
    store.close()


# --- seeding ---------------------------------------------------------------------------------


def test_seed_imports_once_then_the_store_is_the_source_of_truth(tmp_path: Path) -> None:
    prompt = tmp_path / "prompts" / "abc.wav"
    prompt.parent.mkdir()
    sf.write(prompt, np.zeros(800, dtype=np.float32) + 0.1, 8000, subtype="PCM_16")
    configured = {
        "800": ivr(
            pin=PIN,
            prompt_file_id="cfg-abc",
            action_urls=[crm_url().model_dump()],
        )
    }
    store = Store.open(tmp_path / "data")
    assert seed_from_config(store, configured, {"cfg-abc": prompt})
    snapshot = store.snapshot()
    seeded = snapshot.receptionists["800"]
    assert seeded.prompt_file_id == "cfg-abc" and len(seeded.action_urls) == 1
    assert snapshot.files == {"cfg-abc": prompt.resolve()}
    info = store.get_file("cfg-abc")
    assert info is not None and info.duration == pytest.approx(0.1)
    # the API deletes everything; a restart with the same configuration does not bring it back
    assert store.delete_receptionist(seeded.id or "")
    store.delete_file("cfg-abc")
    assert not seed_from_config(store, configured, {"cfg-abc": prompt})
    assert store.snapshot().receptionists == {}
    assert prompt.exists()  # a configured prompt outside the blob directory is not removed
    store.close()


def test_seed_does_not_import_into_a_store_already_in_use(store: Store) -> None:
    store.create_receptionist(ivr("900"))
    assert not seed_from_config(store, {"800": ivr()}, {})
    assert list(store.snapshot().receptionists) == ["900"]


# --- the list-query language -----------------------------------------------------------------


FIELDS = RECEPTIONIST_LIST.fields


@pytest.fixture
def populated(store: Store) -> Store:
    for extension, name, interval, enabled in [
        ("800", "Main", 2, True),
        ("801", "Mail desk", 5, True),
        ("802", "Support", 3, False),
        ("900", "Sales", 2, True),
        ("901", "O'Brien's line", 10, True),
    ]:
        store.create_receptionist(ivr(extension, name, dtmf_interval=interval, enabled=enabled))
    return store


def names(store: Store, **options: Any) -> list[str]:
    return [item.doc["name"] for item in store.list_receptionists(ListOptions(**options)).items]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("extension_number eq '800'", ["Main"]),
        ("extension_number eq '800' and startswith(name,'Ma')", ["Main"]),
        ("startswith(name,'Ma')", ["Main", "Mail desk"]),
        ("startswith(name,'ma')", []),  # case-sensitive, as OData
        ("endswith(name, 'desk')", ["Mail desk"]),
        ("contains(name,'ai')", ["Main", "Mail desk"]),
        ("contains(name,'')", ["Main", "Mail desk", "Support", "Sales", "O'Brien's line"]),
        ("name ne 'Main'", ["Mail desk", "Support", "Sales", "O'Brien's line"]),
        ("dtmf_interval gt 2", ["Mail desk", "Support", "O'Brien's line"]),
        ("dtmf_interval ge 3 and dtmf_interval le 5", ["Mail desk", "Support"]),
        ("dtmf_interval lt 3", ["Main", "Sales"]),
        ("enabled eq false", ["Support"]),
        ("extension_number eq '900' or extension_number eq '800'", ["Main", "Sales"]),
        ("(startswith(name,'S') or name eq 'Main') and dtmf_interval eq 2", ["Main", "Sales"]),
        ("not (dtmf_interval eq 2)", ["Mail desk", "Support", "O'Brien's line"]),
        ("name eq 'O''Brien''s line'", ["O'Brien's line"]),
        ("prompt_file_id eq null", ["Main", "Mail desk", "Support", "Sales", "O'Brien's line"]),
        ("prompt_file_id ne null", []),
        ("EXTENSION_NUMBER eq '800'".lower(), ["Main"]),
        ("extension_number EQ '800' AND name Eq 'Main'", ["Main"]),
    ],
)
def test_filters(populated: Store, expression: str, expected: list[str]) -> None:
    assert names(populated, filter=expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("pin eq 'x'", "unknown field 'pin'"),
        ("doc eq 'x'", "unknown field 'doc'"),
        ("name", "expected an operator"),
        ("name eq", "ends too early"),
        ("name like 'x'", "expected an operator"),
        ("name eq 'x", "unterminated string"),
        ('name eq "x"', "unexpected character"),
        ("name eq 'x' and", "ends too early"),
        ("name eq 'x')", "unexpected ')'"),
        ("(name eq 'x'", "expected ')'"),
        ("dtmf_interval eq '2'", "whole number"),
        ("name eq 2", "'text'"),
        ("enabled eq 1", "true or false"),
        ("enabled gt true", "only be compared with eq or ne"),
        ("name gt null", "null can only"),
        ("contains(dtmf_interval, '2')", "needs a text field"),
        ("contains(name, 2)", "needs a quoted text"),
        ("startswith name", "unknown field 'startswith'"),
        ("name eq 'a' name eq 'b'", "unexpected 'name'"),
        ("name eq 'a'; DROP TABLE receptionists", "unexpected character ';'"),
        ("name eq 'a' -- comment", "unexpected"),
        ("1 eq 1", "expected a field name"),
        ("name eq 99999999999999999999", "out of range"),
        ("(" * 40 + "name eq 'a'" + ")" * 40, "nested"),
        (" or ".join(["name eq 'a'"] * 70), "more than 64"),
        ("name eq '" + "x" * 2100 + "'", "longer than"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(
    populated: Store, expression: str, message: str
) -> None:
    with pytest.raises(QueryError) as caught:
        populated.list_receptionists(ListOptions(filter=expression))
    assert message in caught.value.detail["filter"]


@pytest.mark.parametrize(
    "expression",
    [
        "name eq '' or 1=1",
        "name eq 'x' or '1'='1'",
        "name eq ''' OR ''1''=''1'",
        "name eq 'x'/**/OR/**/1=1",
        "name eq 'x' UNION SELECT doc FROM receptionists",
        "sqlite_master eq 'x'",
        "json_extract(doc,'$.pin') eq 'x'",
    ],
)
def test_injection_attempts_are_refused_or_harmless(populated: Store, expression: str) -> None:
    try:
        result = names(populated, filter=expression)
    except QueryError:
        result = []
    assert result in ([],)
    assert populated.receptionist_count() == 5 and populated.integrity_check() == "ok"


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("name q'()\",;-*/ 0123456789andorxtsil_")), max_size=60)
)
def test_any_filter_text_compiles_to_runnable_sql_or_a_query_error(text: str) -> None:
    with sqlite3.connect(":memory:") as conn:
        conn.execute(
            "CREATE TABLE receptionists (id TEXT, name TEXT, extension_number TEXT, doc TEXT,"
            " prompt_file_id TEXT, transfer_prompt_file_id TEXT, created_at TEXT, updated_at TEXT)"
        )
        try:
            sql, params = compile_filter(text, FIELDS)
        except QueryError:
            return
        conn.execute(f"SELECT COUNT(*) FROM receptionists r WHERE {sql}", params).fetchone()


def test_search_orderby_skip_top(populated: Store) -> None:
    assert len(names(populated, filter="  ", search="", orderby="")) == 5
    with pytest.raises(QueryError, match="is empty"):
        compile_filter("  ", FIELDS)
    assert names(populated, search="MA") == ["Main", "Mail desk"]
    assert names(populated, search="90") == ["Sales", "O'Brien's line"]
    assert names(populated, orderby="name desc") == [
        "Support",
        "Sales",
        "O'Brien's line",
        "Main",
        "Mail desk",
    ]
    assert names(populated, orderby="dtmf_interval desc, name") == [
        "O'Brien's line",
        "Mail desk",
        "Support",
        "Main",
        "Sales",
    ]
    assert names(populated, orderby="extension_number", skip=1, top=2) == ["Mail desk", "Support"]
    page = populated.list_receptionists(ListOptions(filter="dtmf_interval eq 2", top=1))
    assert page.count == 2 and len(page.items) == 1
    for bad in ("pin", "name sideways", "name asc desc", "a,b,c,d,e,f", ""):
        if bad:
            with pytest.raises(QueryError):
                compile_orderby(bad, FIELDS)
    with pytest.raises(QueryError, match="top"):
        populated.list_receptionists(ListOptions(top=101))
    with pytest.raises(QueryError, match="skip"):
        populated.list_receptionists(ListOptions(skip=-1))


def test_the_disa_sink_persists_through_the_store_thread(tmp_path: Path) -> None:
    from engine.store import StoreDisaSink

    store = Store.open(tmp_path)
    sink = StoreDisaSink(store)
    now = time.time()
    sink.failure("source:192.0.2.7", now)
    sink.locked("source:192.0.2.7", now + 3600)
    store.close()
    sink.failure("source:192.0.2.7", now)  # after close: logged, not raised
    store = Store.open(tmp_path)
    sink = StoreDisaSink(store)
    sink.failure("number:1001", now)
    store.close()
    store = Store.open(tmp_path)
    assert store.disa_lockouts(now) == {"source:192.0.2.7": pytest.approx(now + 3600)}
    # a lock-out forgets the key's failed calls (as DisaLockouts does)
    assert store.disa_failures(now - 1) == {"number:1001": [pytest.approx(now)]}
    store.close()


def test_an_update_from_a_stale_read_is_refused(store: Store) -> None:
    from engine.store import Stale

    rid = store.create_receptionist(ivr())
    read = store.get_receptionist(rid)
    assert read is not None and read.revision == 0
    store.update_receptionist(rid, ivr(name="First"), revision=read.revision)
    with pytest.raises(Stale):
        store.update_receptionist(rid, ivr(name="Second"), revision=read.revision)
    url = store.create_action_url(rid, crm_url())
    stored_url = store.get_action_url(rid, url)
    assert stored_url is not None
    store.update_action_url(rid, url, crm_url(name="a"), revision=stored_url.revision)
    with pytest.raises(Stale):
        store.update_action_url(rid, url, crm_url(name="b"), revision=stored_url.revision)
    with pytest.raises(NotFound):
        store.update_action_url(rid, "nope", crm_url())
