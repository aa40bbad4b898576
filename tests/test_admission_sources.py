"""Per-source INVITE limits shared by the SIP stack's door and the runtime, and the reading of
a request's source address out of pjsip's rx data (on a buffer laid out as pjsip lays it)."""

from __future__ import annotations

import ctypes
import socket
import threading

import pytest

from engine.admission import RATE_LIMITED, UNACKNOWLEDGED, AdmissionCounters
from engine.model import SipRateLimit
from engine.telephony.pjsip.rxdata import source_at


def limits(rate: float = 1, burst: int = 3, max_unconfirmed: int = 2) -> AdmissionCounters:
    return AdmissionCounters(
        SipRateLimit(invites_per_second=rate, burst=burst, max_unconfirmed=max_unconfirmed)
    )


def test_a_burst_then_the_rate() -> None:
    door = limits(rate=1, burst=3, max_unconfirmed=100)
    assert [door.source_refusal("10.0.0.1", 0.0) for _ in range(4)] == [
        None,
        None,
        None,
        RATE_LIMITED,
    ]
    assert door.source_refusal("10.0.0.2", 0.0) is None  # another source has its own bucket
    assert door.source_refusal("10.0.0.1", 0.5) == RATE_LIMITED
    assert door.source_refusal("10.0.0.1", 1.0) is None  # a token a second


def test_rate_zero_turns_the_rate_limit_off() -> None:
    door = limits(rate=0, burst=1, max_unconfirmed=100)
    assert all(door.source_refusal("10.0.0.1", 0.0) is None for _ in range(500))


def test_unacknowledged_calls_hold_a_source_back_until_settled() -> None:
    door = limits(rate=100, burst=100, max_unconfirmed=2)
    door.answered("10.0.0.1")
    door.answered("10.0.0.1")
    assert door.unconfirmed("10.0.0.1") == 2
    assert door.source_refusal("10.0.0.1", 0.0) == UNACKNOWLEDGED
    assert door.source_refusal("10.0.0.9", 0.0) is None
    door.settled("10.0.0.1")
    assert door.source_refusal("10.0.0.1", 0.0) is None
    door.settled("10.0.0.1")
    assert door.unconfirmed("10.0.0.1") == 0


def test_an_admitted_invite_is_checked_again_for_unacknowledged_calls_only() -> None:
    door = limits(rate=1, burst=1, max_unconfirmed=1)
    assert door.source_refusal("10.0.0.1", 0.0) is None  # at the door: the token is spent
    assert door.source_refusal("10.0.0.1", 0.0, rate=False) is None  # the runtime: no second token
    door.answered("10.0.0.1")
    assert door.source_refusal("10.0.0.1", 0.0, rate=False) == UNACKNOWLEDGED


def test_two_threads_keep_the_counts_exact() -> None:
    door = limits(rate=0, max_unconfirmed=10**6)

    def work() -> None:
        for _ in range(5000):
            door.answered("10.0.0.1")
            door.source_refusal("10.0.0.1", 0.0)
            door.settled("10.0.0.1")

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    door.answered("10.0.0.1")
    for thread in threads:
        thread.join()
    assert door.unconfirmed("10.0.0.1") == 1


# --- the source address in pjsip_rx_data -----------------------------------------------------

M = 200  # where msg_info starts in the fake rx data


def rx_data(
    host: str, port: int, *, sin_port: int | None = None, name: str | None = None
) -> ctypes.Array[ctypes.c_char]:
    """The tail of `pkt_info` as pjsip lays it out on a 64-bit build, before `msg_info`."""
    buf = ctypes.create_string_buffer(M + 64)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    base = ctypes.addressof(buf)
    ctypes.c_uint16.from_address(base + M - 88).value = family
    ctypes.memmove(base + M - 86, (port if sin_port is None else sin_port).to_bytes(2, "big"), 2)
    packed = socket.inet_pton(family, host)
    ctypes.memmove(base + M - (84 if family == socket.AF_INET else 80), packed, len(packed))
    text = (host if name is None else name).encode()
    ctypes.memmove(base + M - 56, text, len(text))
    ctypes.c_int.from_address(base + M - 8).value = port
    return buf


@pytest.mark.parametrize(
    ("host", "port", "kwargs", "expected"),
    [
        ("127.0.0.4", 5060, {}, "127.0.0.4"),
        ("192.0.2.10", 65535, {}, "192.0.2.10"),
        ("::1", 5062, {}, "::1"),
        ("2001:db8::7", 40000, {}, "2001:db8::7"),
        ("127.0.0.4", 5060, {"sin_port": 5061}, None),  # the two ports disagree
        ("127.0.0.4", 5060, {"name": "127.0.0.5"}, None),  # the name is another address
        ("127.0.0.4", 5060, {"name": "localhost"}, None),  # not an address at all
        ("127.0.0.4", 0, {}, None),
    ],
)
def test_the_source_address_is_read_only_when_every_field_agrees(
    host: str, port: int, kwargs: dict[str, object], expected: str | None
) -> None:
    buf = rx_data(host, port, **kwargs)  # type: ignore[arg-type]
    assert source_at(ctypes.addressof(buf), M) == expected


def test_an_unknown_family_is_not_read() -> None:
    buf = rx_data("127.0.0.4", 5060)
    ctypes.c_uint16.from_address(ctypes.addressof(buf) + M - 88).value = 1  # AF_UNIX
    assert source_at(ctypes.addressof(buf), M) is None
