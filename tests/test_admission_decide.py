"""Admission's one decision, as a table: every refusal with its code, reason phrase and whether
it is silent, in the documented order; and the same answer whichever side asks (the SIP
stack's door with what it can read, or the runtime with everything)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.admission import (
    RETRY_AFTER,
    AdmissionCounters,
    Admit,
    NewRequest,
    RateLimiter,
    RefusalKind,
    Refuse,
    ServerState,
    decide,
    describe,
    log_level,
    reserved_slots,
)
from engine.model import SipRateLimit
from tests.flow_harness import receptionist

IVRS = {"800": receptionist(), "801": receptionist(extension_number="801", enabled=False)}
PBX = "10.0.0.5"

# what the runtime knows: everything
RUNTIME = ServerState(allow=["10.0.0.0/8"], receptionists=IVRS, calls=0, capacity=4)
INVITE = NewRequest(call_id="a@pbx", user_agent="PortSIP PBX", source_host=PBX, request_user="800")


def counters(**limit: float) -> AdmissionCounters:
    return AdmissionCounters(SipRateLimit.model_validate(limit))


# (case, request changes, state changes, kind, code, reason, silent, retry_after)
REFUSALS = [
    (
        "scanner",
        {"user_agent": "friendly-scanner"},
        {},
        RefusalKind.SCANNER,
        403,
        "Forbidden",
        True,
        None,
    ),
    (
        "scanner OPTIONS",
        {"method": "OPTIONS", "user_agent": "sipvicious 0.3"},
        {},
        RefusalKind.SCANNER,
        403,
        "Forbidden",
        True,
        None,
    ),
    (
        "unparsable SDP",
        {"offer": (400, "no c= line")},
        {},
        RefusalKind.BAD_OFFER,
        400,
        "Bad Request",
        False,
        None,
    ),
    (
        "SDP the media cannot carry",
        {"offer": (488, "c=IN IP4 999.1.1.1")},
        {},
        RefusalKind.BAD_OFFER,
        488,
        "Not Acceptable Here",
        False,
        None,
    ),
    (
        "not in sip_allow",
        {"source_host": "192.0.2.7"},
        {},
        RefusalKind.NOT_ALLOWED,
        403,
        "Forbidden",
        False,
        None,
    ),
    (
        "draining",
        {},
        {"draining": True},
        RefusalKind.DRAINING,
        503,
        "Service Unavailable (shutting down)",
        False,
        None,
    ),
    (
        "server disabled",
        {},
        {"enabled": False},
        RefusalKind.SERVER_DISABLED,
        503,
        "Service Unavailable (server disabled)",
        False,
        None,
    ),
    (
        "unknown extension",
        {"request_user": "999"},
        {},
        RefusalKind.UNKNOWN_EXTENSION,
        404,
        "Not Found",
        False,
        None,
    ),
    (
        "disabled",
        {"request_user": "801"},
        {},
        RefusalKind.DISABLED,
        503,
        "Service Unavailable (receptionist disabled)",
        False,
        None,
    ),
    (
        "full",
        {},
        {"calls": 4},
        RefusalKind.FULL,
        503,
        "Service Unavailable (call limit reached)",
        False,
        RETRY_AFTER,
    ),
]


@pytest.mark.parametrize(
    ("case", "req", "state", "kind", "code", "reason", "silent", "retry_after"),
    REFUSALS,
    ids=[row[0] for row in REFUSALS],
)
def test_every_refusal(
    case: str,
    req: dict[str, object],
    state: dict[str, object],
    kind: RefusalKind,
    code: int,
    reason: str,
    silent: bool,
    retry_after: int | None,
) -> None:
    decision = decide(replace(INVITE, **req), replace(RUNTIME, **state), counters(), 0.0)  # type: ignore[arg-type]
    assert isinstance(decision, Refuse), case
    assert (decision.kind, decision.sip_code, decision.reason) == (kind, code, reason)
    assert (decision.silent, decision.retry_after) == (silent, retry_after)


def test_a_source_over_its_limits_gets_503_rate_then_unacknowledged() -> None:
    c = counters(invites_per_second=1, burst=1, max_unconfirmed=1)
    assert isinstance(decide(INVITE, RUNTIME, c, 0.0), Admit)
    over = decide(INVITE, RUNTIME, c, 0.0)
    assert isinstance(over, Refuse) and over.kind is RefusalKind.SOURCE_LIMIT
    assert (over.sip_code, over.reason, over.silent) == (
        503,
        "Service Unavailable (rate limit)",
        False,
    )
    c.answered(PBX)
    later = decide(INVITE, RUNTIME, c, 10.0)
    assert isinstance(later, Refuse)
    assert later.reason == "Service Unavailable (unacknowledged calls)"


def test_an_invite_the_door_charged_spends_no_second_token() -> None:
    c = counters(invites_per_second=1, burst=1)
    door = NewRequest(call_id="a@pbx", user_agent="PBX", source_host=PBX)
    assert isinstance(decide(door, ServerState(capacity=4), c, 0.0), Admit)
    c.charge("a@pbx")
    charged = replace(RUNTIME, charged=c.take_charged("a@pbx"))
    assert isinstance(decide(INVITE, charged, c, 0.0), Admit)
    assert not c.take_charged("a@pbx")  # taken once
    assert isinstance(decide(INVITE, RUNTIME, c, 0.0), Refuse)  # not charged: over the rate


def test_the_pace_applies_only_where_asked_for() -> None:
    c = AdmissionCounters(None, pace=RateLimiter(rate=10, burst=2))
    door = ServerState(capacity=4, pace=True)
    request = NewRequest(user_agent="PBX", source_host=PBX)
    assert [isinstance(decide(request, door, c, 0.0), Admit) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    paced = decide(request, door, c, 0.0)
    assert isinstance(paced, Refuse) and paced.kind is RefusalKind.PACE
    assert (paced.sip_code, paced.retry_after) == (503, RETRY_AFTER)
    assert "faster than 10 a second" in paced.detail
    assert isinstance(decide(request, ServerState(capacity=4), c, 0.0), Admit)  # not asked


def test_the_order_of_the_rules() -> None:
    everything_wrong = replace(
        INVITE,
        user_agent="friendly-scanner",
        offer=(488, "x"),
        source_host="192.0.2.7",
        request_user="999",
    )
    state = replace(RUNTIME, draining=True, calls=4)
    kinds = []
    request = everything_wrong
    for fix in (
        {"user_agent": "PBX"},
        {"offer": None},
        {"source_host": PBX},
    ):
        decision = decide(request, state, counters(), 0.0)
        assert isinstance(decision, Refuse)
        kinds.append(decision.kind)
        request = replace(request, **fix)  # type: ignore[arg-type]
    for fix_state in ({"draining": False}, {}):
        decision = decide(request, state, counters(), 0.0)
        assert isinstance(decision, Refuse)
        kinds.append(decision.kind)
        state = replace(state, **fix_state)  # type: ignore[arg-type]
    request = replace(request, request_user="801")
    decision = decide(request, state, counters(), 0.0)
    assert isinstance(decision, Refuse)
    kinds.append(decision.kind)
    decision = decide(replace(request, request_user="800"), state, counters(), 0.0)
    assert isinstance(decision, Refuse)
    kinds.append(decision.kind)
    assert kinds == [
        RefusalKind.SCANNER,
        RefusalKind.BAD_OFFER,
        RefusalKind.NOT_ALLOWED,
        RefusalKind.DRAINING,
        RefusalKind.UNKNOWN_EXTENSION,
        RefusalKind.DISABLED,
        RefusalKind.FULL,
    ]


@pytest.mark.parametrize("user_agent", ["friendly-scanner", "sipvicious 0.3.4", "SIPcli/v1.8"])
def test_a_scanner_is_treated_the_same_at_the_door_and_in_the_runtime(user_agent: str) -> None:
    """The door knows the text but not the routing; the runtime knows everything: both get the
    same silent 403."""
    door = decide(
        NewRequest(user_agent=user_agent, source_host=PBX, call_id="s"),
        ServerState(capacity=4, pace=True),
        counters(),
        0.0,
    )
    runtime = decide(replace(INVITE, user_agent=user_agent), RUNTIME, counters(), 0.0)
    assert door == runtime
    assert isinstance(door, Refuse) and door.silent and door.sip_code == 403


def test_the_door_leaves_routing_and_the_allow_list_to_the_runtime() -> None:
    door = NewRequest(user_agent="PBX", source_host="192.0.2.7")  # request_user unknown
    assert decide(door, ServerState(capacity=4), counters(), 0.0) == Admit(receptionist=None)
    assert decide(NewRequest(method="OPTIONS"), ServerState(capacity=0), None, 0.0) == Admit()


def test_an_admitted_invite_names_its_receptionist() -> None:
    decision = decide(INVITE, RUNTIME, counters(), 0.0)
    assert decision == Admit(receptionist=IVRS["800"])


def test_each_refusal_has_one_log_line() -> None:
    full = decide(INVITE, replace(RUNTIME, calls=4, capacity_text="make pjsua2"), None, 0.0)
    assert isinstance(full, Refuse)
    line = describe(full, INVITE, "10.0.0.5:5060")
    assert line == (
        "rejecting INVITE for 800 from 10.0.0.5:5060 with 503 "
        "Service Unavailable (call limit reached): make pjsua2"
    )
    assert log_level(full) == "WARNING"
    for kind in RefusalKind:
        assert log_level(Refuse(kind=kind, sip_code=503, reason="x")) in {
            "DEBUG",
            "INFO",
            "WARNING",
        }


# (what the scanner sent, whether it is recognised) — sipvicious' defaults and tricks, and
# ordinary callers that must not be taken for one
FINGERPRINTS = [
    ({"user_agent": "friendly-scanner"}, True),
    ({"user_agent": "", "from_header": '"sipvicious"<sip:100@1.1.1.1>;tag=3938'}, True),  # svmap -c
    (
        {"user_agent": "Linphone/5.1", "from_header": '"sipvicious"<sip:100@192.0.2.1>'},
        True,
    ),  # faked UA
    (
        {
            "user_agent": "Zoiper",
            "from_header": '"ann"<sip:100@10.0.0.5>',
            "contact": "sip:123@1.1.1.1",
        },
        True,
    ),
    ({"user_agent": "", "from_header": "<sip:100@1.1.1.1>;tag=1"}, True),
    # svwar -c -m INVITE: no User-Agent, From = To = the extension probed, a tag of its own
    (
        {
            "user_agent": "",
            "from_header": '"799"<sip:799@127.0.0.1>;tag=3739390134323339383831303232',
        },
        True,
    ),
    ({"user_agent": "", "from_header": "<sip:1001@10.0.0.5>;tag=" + (b"x\x011234567").hex()}, True),
    # a stack whose tags are random hex bytes may end in \x01 and a digit: not a scanner
    (
        {"user_agent": "", "from_header": "<sip:1001@10.0.0.5>;tag=9f3ce2a7d1b04c8e6a5d01" + "35"},
        False,
    ),
    (
        {"user_agent": "", "from_header": "<sip:1001@10.0.0.5>;tag=" + (b"\x9f\x01123456").hex()},
        False,
    ),
    (
        {"user_agent": "", "from_header": "<sip:1001@10.0.0.5>;tag=a5f3c2d1e0b94f7c"},
        False,
    ),  # hex, no \x01
    ({"user_agent": "", "from_header": "<sip:1001@10.0.0.5>;tag=3739390134323z"}, False),
    (
        {"user_agent": "PortSIP PBX", "from_header": '"Osmaplan Diwari" <sip:1001@10.0.0.5>;tag=a'},
        False,
    ),
    (
        {
            "user_agent": "",
            "from_header": "<sip:1001@10.1.1.1>;tag=a",
            "contact": "<sip:1001@10.1.1.10:5060>",
        },
        False,
    ),
    ({"user_agent": None, "from_header": None, "contact": None}, False),  # nothing could be read
]


@pytest.mark.parametrize(("fields", "scanner"), FINGERPRINTS)
def test_scanner_fingerprints_beyond_the_user_agent(
    fields: dict[str, str | None], scanner: bool
) -> None:
    request = replace(INVITE, **fields)  # type: ignore[arg-type]
    decision = decide(request, RUNTIME, counters(), 0.0)
    assert (isinstance(decision, Refuse) and decision.kind is RefusalKind.SCANNER) is scanner
    if scanner:  # OPTIONS and REGISTER too, at the door as in the runtime
        door = decide(
            replace(request, method="OPTIONS", request_user=None), ServerState(), None, 0.0
        )
        assert isinstance(door, Refuse) and door.silent


@pytest.mark.parametrize(
    ("capacity", "reserved"), [(1, 0), (2, 1), (4, 1), (19, 1), (20, 2), (1000, 100)]
)
def test_reserved_slots(capacity: int, reserved: int) -> None:
    assert reserved_slots(capacity) == reserved


def test_a_source_with_a_call_stuck_unacked_cannot_take_the_last_slot() -> None:
    """Issue 13, item 1: four un-ACKed INVITEs from one source took all 4 slots of the wheel."""
    c = counters(max_unconfirmed=20)
    c.answered(PBX, "stuck", now=0.0)  # answered at 0 s, never ACKed
    c.answered(PBX, "fresh", now=9.0)  # answered 1 s ago: its ACK may be on its way
    three_busy = replace(RUNTIME, calls=3)
    refused = decide(INVITE, three_busy, c, 10.0)
    assert isinstance(refused, Refuse) and refused.kind is RefusalKind.RESERVED
    assert (refused.sip_code, refused.retry_after) == (503, RETRY_AFTER)
    other = replace(INVITE, source_host="10.0.0.6")  # another source gets the last slot
    assert isinstance(decide(other, three_busy, c, 10.0), Admit)
    assert isinstance(decide(INVITE, replace(RUNTIME, calls=2), c, 10.0), Admit)  # not the last
    c.settled(PBX, "stuck")  # its ACK came (or it ended)
    assert isinstance(decide(INVITE, three_busy, c, 10.0), Admit)  # "fresh" is not stale yet
    assert c.stale_unconfirmed(PBX, 10.0) == 0 and c.stale_unconfirmed(PBX, 11.0) == 1


def test_a_burst_from_one_source_cannot_take_the_last_slot() -> None:
    """Four INVITEs at once from a source that never ACKs took all 4 slots of the wheel: none
    is 2 s old when the fourth arrives, but three are in flight (charged by the door, not yet
    reported by pjsua, or answered without their ACK)."""
    c = counters(max_unconfirmed=20)
    door = replace(RUNTIME, receptionists=None, allow=None)
    for n in range(3):
        state = replace(door, calls=n)
        request = replace(INVITE, call_id=f"burst-{n}")
        assert isinstance(decide(request, state, c, 0.01 * n), Admit), n
        c.charge(request.call_id, PBX, 0.01 * n)
    assert c.in_flight(PBX, 0.03) == 3
    fourth = decide(replace(INVITE, call_id="burst-3"), replace(door, calls=3), c, 0.03)
    assert isinstance(fourth, Refuse) and fourth.kind is RefusalKind.RESERVED
    other = replace(INVITE, call_id="elsewhere", source_host="10.0.0.6")
    assert isinstance(decide(other, replace(door, calls=3), c, 0.03), Admit)
    # one call in flight (a PBX starting a call while its last ACK is on its way) may take it
    d = counters(max_unconfirmed=20)
    d.answered(PBX, "one", now=0.0)
    assert isinstance(decide(INVITE, replace(door, calls=3), d, 0.1), Admit)
    d.charge("two", PBX, 0.1)  # a second one in flight: a burst
    assert isinstance(decide(INVITE, replace(door, calls=3), d, 0.1), Refuse)
    # a PBX that ACKed a call before may start calls in a burst (four callers at once)
    d.acked(PBX, 0.05)
    assert isinstance(decide(INVITE, replace(door, calls=3), d, 0.1), Admit)
    # but not while one of its answered calls waits for the ACK 2 s or more
    assert isinstance(decide(INVITE, replace(door, calls=3), d, 2.5), Refuse)


def test_a_source_probing_extensions_cannot_tell_them_apart() -> None:
    """Issue 13, item 2: a scanner that mimics a phone told 200 from 404 at the rate limit's
    pace. After `unknown_per_minute` misses (a burst of as many), one more blocks the source:
    every INVITE from it gets the same 404, existing extensions included."""
    c = counters(unknown_per_minute=3, unknown_block=600)
    open_server = replace(RUNTIME, allow=None)
    scanner = replace(INVITE, source_host="192.0.2.7")
    kinds = [
        decide(replace(scanner, request_user=f"{n:03d}"), open_server, c, 1.0)
        for n in range(100, 105)
    ]
    assert [k.kind for k in kinds if isinstance(k, Refuse)] == [
        RefusalKind.UNKNOWN_EXTENSION,
        RefusalKind.UNKNOWN_EXTENSION,
        RefusalKind.UNKNOWN_EXTENSION,
        RefusalKind.PROBE_BLOCKED,
        RefusalKind.PROBING,
    ]
    existing = decide(scanner, open_server, c, 2.0)  # 800 exists
    assert isinstance(existing, Refuse) and existing.kind is RefusalKind.PROBING
    unknown = kinds[0]
    assert isinstance(unknown, Refuse)
    assert (
        (existing.sip_code, existing.reason)
        == (unknown.sip_code, unknown.reason)
        == (
            404,
            "Not Found",
        )
    )
    assert log_level(kinds[3]) == "WARNING" and "600 s" in kinds[3].detail  # type: ignore[union-attr]
    # other sources are not affected; the block ends
    assert isinstance(decide(INVITE, open_server, c, 2.0), Admit)
    assert isinstance(decide(scanner, open_server, c, 601.5), Admit)
    # the door does not route: it never judges probing
    door = replace(open_server, receptionists=None)
    blocked = counters(unknown_per_minute=1)
    for n in range(3):
        decide(replace(scanner, request_user=f"9{n}9"), open_server, blocked, 1.0)
    assert isinstance(decide(scanner, door, blocked, 1.5), Admit)
    assert isinstance(decide(scanner, open_server, blocked, 1.5), Refuse)


@pytest.mark.parametrize("case", ["allowed", "acked", "off"])
def test_who_is_never_blocked_for_probing(case: str) -> None:
    """Sources in `sip_allow`; sources that ACKed a call (a forged address cannot, so forged
    INVITEs cannot block a PBX); everyone with `unknown_per_minute: 0`."""
    c = counters(unknown_per_minute=0 if case == "off" else 1)
    server = RUNTIME if case == "allowed" else replace(RUNTIME, allow=None)
    if case == "acked":
        c.acked(PBX, 0.0)
    for n in range(20):
        refused = decide(replace(INVITE, request_user=f"{n:03d}"), server, c, 1.0)
        assert isinstance(refused, Refuse) and refused.kind is RefusalKind.UNKNOWN_EXTENSION
    assert isinstance(decide(INVITE, server, c, 1.0), Admit)
