"""The PIN policy and its storage."""

from __future__ import annotations

import pytest

from engine.rules.pin import hash_pin, is_pin_hash, mask_digits, pin_policy_problem, verify_pin


@pytest.mark.parametrize(
    ("pin", "problem"),
    [
        ("135790", None),
        ("2468013579", None),
        ("97531", "6 to 10 digits"),
        ("13579086420", "6 to 10 digits"),
        ("13a790", "only the digits"),
        (
            "\uff11\uff13\uff15\uff17\uff19\uff10",
            "only the digits",
        ),  # full-width digits are not ASCII digits
        ("135111", "three equal digits"),
        ("131113", "three equal digits"),
        ("120790", None),  # 1-2 is a run of two only
        ("123790", "consecutive"),
        ("579012", "consecutive"),  # 0-1-2
        ("135987", "consecutive"),  # descending 9-8-7
        ("143210", "consecutive"),
        ("890135", None),  # 8-9-0 does not wrap around
        ("135797", None),
    ],
)
def test_pin_policy(pin: str, problem: str | None) -> None:
    found = pin_policy_problem(pin)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert pin not in found  # a message never echoes the PIN


def test_hash_is_salted_and_verifies_in_constant_time() -> None:
    first, second = hash_pin("135790"), hash_pin("135790")
    assert first != second
    assert is_pin_hash(first)
    assert "135790" not in first
    assert verify_pin(first, "135790") and verify_pin(second, "135790")
    assert not verify_pin(first, "135791")
    assert not verify_pin(first, "")


@pytest.mark.parametrize(
    "stored", ["135790", "pbkdf2_sha256$x$00$00", "pbkdf2_sha256$10$zz$00", "pbkdf2_sha256$10$"]
)
def test_a_malformed_hash_never_verifies(stored: str) -> None:
    assert not verify_pin(stored, "135790")


def test_mask_digits() -> None:
    assert mask_digits("135790") == "******"
    assert mask_digits("") == ""
