"""Routing of INVITEs (SPEC §3.1, through admission's `decide`) and the DISA lock-out policy,
as tables."""

from __future__ import annotations

import pytest

from engine.admission import Admit, NewRequest, ServerState, decide, source_allowed
from engine.lockout import DisaLockouts
from engine.model import DisaSettings
from tests.flow_harness import receptionist

IVRS = {"800": receptionist(), "801": receptionist(extension_number="801", enabled=False)}


@pytest.mark.parametrize(
    ("user", "source", "allow", "draining", "active", "capacity", "code"),
    [
        ("800", "127.0.0.1", [], False, 0, 4, 200),
        ("999", "127.0.0.1", [], False, 0, 4, 404),
        ("801", "127.0.0.1", [], False, 0, 4, 503),  # disabled
        ("800", "127.0.0.1", [], True, 0, 4, 503),  # draining
        ("999", "127.0.0.1", [], True, 0, 4, 503),  # draining wins over unknown
        ("800", "127.0.0.1", [], False, 4, 4, 503),  # at capacity
        ("800", "127.0.0.1", [], False, 3, 4, 200),
        ("800", "192.0.2.7", ["10.0.0.0/8"], False, 0, 4, 403),
        ("999", "192.0.2.7", ["10.0.0.0/8"], False, 0, 4, 403),  # 403 before 404
        ("800", "10.1.2.3", ["10.0.0.0/8", "::1"], False, 0, 4, 200),
    ],
)
def test_routing(
    user: str, source: str, allow: list[str], draining: bool, active: int, capacity: int, code: int
) -> None:
    decision = decide(
        NewRequest(request_user=user, source_host=source, user_agent="PBX"),
        ServerState(
            allow=allow,
            draining=draining,
            receptionists=IVRS,
            calls=active,
            capacity=capacity,
        ),
        None,
        0.0,
    )
    assert (200 if isinstance(decision, Admit) else decision.sip_code) == code
    assert (isinstance(decision, Admit) and decision.receptionist is not None) is (code == 200)


@pytest.mark.parametrize(
    ("host", "allow", "ok"),
    [
        ("::1", ["::1"], True),
        ("[::1]", ["::/0"], True),
        ("::2", ["::1"], False),
        ("x", ["::1"], False),
    ],
)
def test_source_allowed(host: str, allow: list[str], ok: bool) -> None:
    assert source_allowed(host, allow) is ok


def test_five_failed_calls_in_the_window_lock_number_and_source() -> None:
    locks = DisaLockouts(DisaSettings(max_failed_calls=5, failure_window=900, lockout=3600))
    for i in range(4):
        assert locks.record_failed_call("1001", "192.0.2.1", now=100.0 * i) == []
    assert not locks.is_locked("1001", "192.0.2.1", now=400)
    assert locks.record_failed_call("1001", "192.0.2.1", now=500) == [
        "number:1001",
        "source:192.0.2.1",
    ]
    assert locks.is_locked("1001", "192.0.2.9", now=501)  # same number, other address
    assert locks.is_locked("2002", "192.0.2.1", now=501)  # same address, other number
    assert not locks.is_locked("2002", "192.0.2.9", now=501)
    assert not locks.is_locked("1001", "192.0.2.1", now=500 + 3600)


def test_failures_outside_the_window_do_not_count() -> None:
    locks = DisaLockouts(DisaSettings(max_failed_calls=3, failure_window=60, lockout=600))
    for t in (0, 61, 122, 183):
        locks.record_failed_call("1001", "h", now=float(t))
    assert not locks.is_locked("1001", "h", now=184)
    assert locks.locked(now=184) == {}
