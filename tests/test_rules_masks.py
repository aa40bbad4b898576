"""Masks: examples as a table, then properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.rules.masks import mask_problems, parse_mask, shadowed_entries, split_entries

digits = st.text(alphabet="0123456789", min_size=1, max_size=12)


@pytest.mark.parametrize(
    ("mask", "value", "matches"),
    [
        ("101", "101", True),
        ("101", "1010", False),
        ("1000;2000;3000-4000", "2000", True),
        ("1000;2000;3000-4000", "3999", True),
        ("1000;2000;3000-4000", "4001", False),
        ("1000,2000", "2000", True),  # comma accepted too
        (" 1000 ; 2000 ", "2000", True),
        ("*****", "12345", True),
        ("*****", "1234", False),
        ("*****", "1234*", False),  # * in a mask is one digit, not the star key
        ("5***", "5012", True),
        ("5***", "6012", False),
        ("+49*", "+491", True),
        ("ALL", "", True),
        ("all", "*#9", True),
        ("", "101", False),
        # same-length bounds: leading zeros are significant, length is fixed
        ("0100-0199", "0150", True),
        ("0100-0199", "150", False),
        ("1000-1099", "01050", False),
        # different-length bounds: a number without leading zeros, compared by value
        ("100-2000", "150", True),
        ("100-2000", "1999", True),
        ("100-2000", "0150", False),
        ("100-2000", "99", False),
        ("100-2000", "2001", False),
        ("3000-4000", "35x0", False),
    ],
)
def test_mask_examples(mask: str, value: str, matches: bool) -> None:
    assert parse_mask(mask).matches(value) is matches


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        ("abc", "'abc' is not a number"),
        ("4000-3000", "runs backwards"),
        ("0999-0100", "runs backwards"),
        ("0001-99", "longer than the high bound"),
        ("1-2-3", "is not a number"),
        ("12*-20", "is not a number"),
    ],
)
def test_mask_syntax_errors_say_what_is_allowed(mask: str, problem: str) -> None:
    problems = mask_problems(mask)
    assert problems and problem in problems[0]
    with pytest.raises(ValueError, match=r"not a number|backwards|longer"):
        parse_mask(mask)


def test_every_bad_entry_is_reported() -> None:
    assert len(mask_problems("x;1;y;5-1")) == 3


@pytest.mark.parametrize(
    ("mask", "prefix", "could"),
    [
        ("5000-5999", "5", True),
        ("5000-5999", "50", True),
        ("5000-5999", "6", False),
        ("5000-5999", "50000", False),
        ("100-2000", "1", True),
        ("100-2000", "3", True),  # 300..399
        ("100-2000", "0", False),
        ("100-2000", "05", False),
        ("0-20", "0", True),
        ("100-150", "2", False),  # 2, 2x, 2xx all outside
        ("5***", "5", True),
        ("5***", "4", False),
        ("ALL", "999", True),
        ("101", "", True),
        ("3000-4000", "", True),
        ("3000-4000", "x", False),
    ],
)
def test_could_extend_to_match(mask: str, prefix: str, could: bool) -> None:
    assert parse_mask(mask).could_extend_to_match(prefix) is could


@given(digits)
def test_a_number_matches_only_itself(value: str) -> None:
    mask = parse_mask(value)
    assert mask.matches(value)
    assert not mask.matches(value + "0")
    assert not mask.matches(value[:-1])


@given(st.integers(1, 12), digits)
def test_all_stars_match_any_digits_of_that_length(n: int, value: str) -> None:
    assert parse_mask("*" * n).matches(value) is (len(value) == n)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**7))
def test_variable_length_range_is_numeric_comparison(a: int, b: int, value: int) -> None:
    low, high = min(a, b), max(a, b)
    if len(str(low)) == len(str(high)):
        return  # covered by the fixed-length property
    assert parse_mask(f"{low}-{high}").matches(str(value)) is (low <= value <= high)


@given(st.integers(1, 6), st.data())
def test_fixed_length_range_is_lexicographic_at_that_length(
    width: int, data: st.DataObject
) -> None:
    pad = st.text(alphabet="0123456789", min_size=width, max_size=width)
    low, high = sorted([data.draw(pad), data.draw(pad)])
    value = data.draw(st.text(alphabet="0123456789", min_size=1, max_size=width + 1))
    expected = len(value) == width and low <= value <= high
    assert parse_mask(f"{low}-{high}").matches(value) is expected


@given(st.lists(digits, min_size=1, max_size=5), st.sampled_from([";", ","]))
def test_a_list_matches_each_of_its_entries(values: list[str], sep: str) -> None:
    mask = parse_mask(sep.join(values))
    assert split_entries(sep.join(values)) == values
    assert all(mask.matches(v) for v in values)


@given(st.integers(0, 10**5), st.integers(0, 10**5), digits)
def test_prefix_check_agrees_with_matching(a: int, b: int, value: str) -> None:
    """If a value matches, every prefix of it could still match."""
    mask = parse_mask(f"{min(a, b)}-{max(a, b)};5*1")
    if mask.matches(value):
        assert all(mask.could_extend_to_match(value[:i]) for i in range(len(value) + 1))


@pytest.mark.parametrize(
    ("mask", "keys", "shadowed"),
    [
        ("1000-1099", ["1", "2", "0"], ["1000-1099"]),  # the old demo's exclude_list
        ("5000-5099", ["1", "2", "0"], []),
        ("1000-2099", ["1"], []),  # 2000-2099 can be keyed in
        ("1000-2099", ["1", "2"], ["1000-2099"]),
        ("12**;13**", ["12"], ["12**"]),  # a two-key rule shadows what starts with it
        ("1;10", ["1"], ["1", "10"]),
        ("100-999", ["1", "2", "3", "4", "5", "6", "7", "8", "9"], ["100-999"]),
        ("0100-0199", ["0"], ["0100-0199"]),
        ("ALL", ["1"], []),  # ALL matches numbers starting with other digits too
        ("1000-1099", [], []),
        ("1000-1099", ["*1", "1#"], []),  # a # rule waits; * keys start no number
        ("not a mask", ["1"], []),  # invalid masks are reported elsewhere
    ],
)
def test_shadowed_entries(mask: str, keys: list[str], shadowed: list[str]) -> None:
    assert shadowed_entries(mask, keys) == shadowed
