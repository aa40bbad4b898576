"""The pjsua adapter reports a call that pjsua ended without a DISCONNECTED state reaching the
adapter (seen once under an INVITE flood with the PyPI wheel) as ended, so that it does not
stay "active" for ever. No SIP here: the sweep runs on hand-made call states."""

from __future__ import annotations

import asyncio
import time

import pjsua2 as pj

from engine.telephony.base import CallDisconnected, TelephonyEvent
from engine.telephony.pjsua import RECONCILE_INTERVAL, PjsuaTelephony, _CallState


class FakeCall:
    def __init__(self, active: bool | None) -> None:
        self.active = active  # None: pjsua2 raises, the call id is gone

    def isActive(self) -> bool:
        if self.active is None:
            raise pj.Error()
        return self.active


def test_calls_ended_without_a_state_report_are_reported_once() -> None:
    loop = asyncio.new_event_loop()
    events: list[TelephonyEvent] = []
    adapter = PjsuaTelephony()
    adapter._loop, adapter._sink = loop, events.append
    old = time.monotonic() - 2 * RECONCILE_INTERVAL
    adapter._calls = {
        "gone": _CallState(key="gone", call=FakeCall(False), created=old),
        "raises": _CallState(key="raises", call=FakeCall(None), created=old),
        "active": _CallState(key="active", call=FakeCall(True), created=old),
        "young": _CallState(key="young", call=FakeCall(False)),  # just arrived: not yet
        "done": _CallState(key="done", call=FakeCall(False), created=old, disconnected=True),
    }
    try:
        adapter._reconcile()
        adapter._reconcile()  # within the interval: no second sweep
        adapter._last_reconcile = 0.0
        adapter._reconcile()  # a second sweep reports nothing twice
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    ended = [e for e in events if isinstance(e, CallDisconnected)]
    assert sorted(e.call_id for e in ended) == ["gone", "raises"]
    assert all(e.reason == "ended in the SIP stack" and e.by_remote for e in ended)
    assert adapter._calls["gone"].disconnected and not adapter._calls["active"].disconnected
    adapter._run_deferred()
    assert set(adapter._calls) == {"active", "young", "done"}
