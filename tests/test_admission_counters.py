"""Scanner detection and the token bucket of the per-source INVITE rate limit."""

from __future__ import annotations

import pytest

from engine.admission import AdmissionCounters, RateLimiter, is_scanner
from engine.admission.counters import IN_FLIGHT_FOR


@pytest.mark.parametrize(
    ("agent", "scanner"),
    [
        ("friendly-scanner", True),
        ("sipvicious 0.3.4", True),
        ("SIPcli/v1.8", True),
        ("VaxSIPUserAgent/3.1", True),
        ("PortSIP PBX 22.1", False),
        ("Linphone/5.1 (belle-sip/5.1)", False),
        ("", False),
    ],
)
def test_scanner_user_agents(agent: str, scanner: bool) -> None:
    assert is_scanner(agent) is scanner


def test_a_burst_then_the_steady_rate() -> None:
    limiter = RateLimiter(rate=2, burst=5)
    assert [limiter.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("b", 0.0)  # another source has its own bucket
    assert limiter.allow("a", 0.5)  # one token back after 0.5 s at 2/s
    assert not limiter.allow("a", 0.5)
    assert [limiter.allow("a", 10.0) for _ in range(6)] == [True] * 5 + [False]


def test_memory_is_bounded_under_a_flood_from_many_sources() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=100)
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(limiter) == 100


def test_in_flight_counts_fresh_charges_and_unacked_calls_of_one_source() -> None:
    c = AdmissionCounters(None)
    c.charge("a", "10.0.0.5", 0.0)
    c.charge("b", "10.0.0.5", 1.0)
    c.charge("x", "10.0.0.9", 1.0)
    c.charge("unknown-source", None, 1.0)
    c.answered("10.0.0.5", "c", now=1.0)
    assert c.in_flight("10.0.0.5", 1.0) == 3
    assert c.in_flight("10.0.0.9", 1.0) == 1
    assert c.take_charged("a")  # pjsua reported it: the runtime's answer counts from now on
    assert c.in_flight("10.0.0.5", 1.0) == 2
    # a charge pjsua never reports stops counting after IN_FLIGHT_FOR
    assert c.in_flight("10.0.0.5", 1.0 + IN_FLIGHT_FOR + 0.1) == 1
    c.settled("10.0.0.5", "c")
    assert c.in_flight("10.0.0.5", 1.0 + IN_FLIGHT_FOR + 0.1) == 0
