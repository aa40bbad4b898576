"""Typed call records for the tests of the record sinks and the API's call routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.records import CallRecord, SipFacts

STARTED = datetime(2026, 1, 14, 9, 0, tzinfo=UTC)


def call_record(**fields: Any) -> CallRecord:
    """A record of a transferred call to 800 ("Main"), with `fields` changed."""
    values: dict[str, Any] = dict(
        session_id="s1",
        receptionist_id="r1",
        receptionist="Main",
        extension_number="800",
        caller_number="1001",
        caller_name="",
        source="127.0.0.1:5062",
        transport="udp",
        started_at=STARTED,
        answered_at=STARTED,
        ended_at=datetime(2026, 1, 14, 9, 1, tzinfo=UTC),
        outcome="transferred",
        reason="",
        transferred_to="201",
        transfer_sip_code=200,
        transfer_assumed=False,
        inputs=(),
        action_urls=(),
        transfers=(),
        menu_rules=(),
        night_mode=False,
        disa_pin_failures=0,
        disa_authenticated=False,
        digits_ignored=0,
        dtmf_methods={},
        sip=SipFacts(),
    )
    values.update(fields)
    return CallRecord(**values)
