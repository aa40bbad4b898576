"""The typed call record is the schema of the record document: its fields are the document's
keys, the store's call-list filters name only its fields, and unset SIP facts stay out."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from engine.flow.record import InputRecord
from engine.records import CallRecord, CallRecords, SipFacts
from engine.store import CALL_LIST
from tests.record_helpers import call_record

FIELDS = {f.name for f in dataclasses.fields(CallRecord)}


def test_the_document_has_one_key_per_field() -> None:
    doc = call_record().document()
    assert set(doc) == FIELDS
    assert json.loads(json.dumps(doc)) == doc  # JSON-ready as it is


def test_the_store_filters_name_only_record_fields() -> None:
    for name, spec in CALL_LIST.fields.items():
        assert name in FIELDS, name
        for path in re.findall(r"\$\.([a-z_]+)", spec.sql):
            assert path in FIELDS, (name, path)


def test_values_become_json_values() -> None:
    at = datetime(2026, 1, 14, 9, 0, 5, tzinfo=UTC)
    doc = call_record(
        inputs=(InputRecord(at=at, stage="pin", digits="******"),), menu_rules=("1:matched",)
    ).document()
    assert doc["inputs"] == [
        {"at": "2026-01-14T09:00:05+00:00", "stage": "pin", "digits": "******"}
    ]
    assert doc["menu_rules"] == ["1:matched"]
    assert doc["started_at"] == "2026-01-14T09:00:00+00:00"


def test_only_the_sip_facts_that_happened_are_in_the_document() -> None:
    assert SipFacts().document() == {}
    facts = SipFacts(disconnect_code=200, disconnected_by="caller", transfer_notify_codes=[100])
    assert facts.document() == {
        "disconnect_code": 200,
        "disconnected_by": "caller",
        "transfer_notify_codes": [100],
    }


def test_the_file_sink_writes_the_document(tmp_path: Path) -> None:
    sink = CallRecords(tmp_path / "calls.jsonl", keep=1)
    sink.write(call_record(session_id="a"))
    sink.write(call_record(session_id="b"))
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["session_id"] for line in lines] == ["a", "b"]
    assert list(sink.recent) == [call_record(session_id="b").document()] and sink.total == 2
