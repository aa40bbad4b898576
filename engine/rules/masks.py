"""Number masks: `dtmf_mask`, `caller_mask` and `exclude_list`.

Syntax: entries separated by `;` (or `,`), blanks ignored. An entry is
- `ALL` — matches any input;
- a number, `101` or `+4930123` — matches exactly that string;
- a pattern with `*` standing for exactly one digit, `5***` — matches any 4 digits starting with 5;
- a range `lo-hi` of plain digits:
  * bounds of the same length (`1000-1099`, `0100-0199`): the input must have exactly that
    many digits and lie between them (leading zeros are significant);
  * bounds of different lengths (`100-2000`): the input must be a number written without
    leading zeros whose value lies between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_NUMBER = re.compile(r"^\+?[0-9*]{1,64}$")
_RANGE = re.compile(r"^([0-9]{1,64})-([0-9]{1,64})$")


@dataclass(frozen=True)
class _All:
    def matches(self, value: str) -> bool:
        return True

    def could_extend_to_match(self, prefix: str) -> bool:
        return True


@dataclass(frozen=True)
class _Pattern:
    """A number, possibly with `*` wildcards (one digit each)."""

    text: str

    def matches(self, value: str) -> bool:
        if len(value) != len(self.text):
            return False
        return all(
            v in "0123456789" if p == "*" else p == v for p, v in zip(self.text, value, strict=True)
        )

    def could_extend_to_match(self, prefix: str) -> bool:
        if len(prefix) > len(self.text):
            return False
        return _Pattern(self.text[: len(prefix)]).matches(prefix)


@dataclass(frozen=True)
class _Range:
    low: str
    high: str

    @property
    def fixed_length(self) -> bool:
        return len(self.low) == len(self.high)

    def matches(self, value: str) -> bool:
        if not value.isdigit() or not value.isascii():
            return False
        if self.fixed_length:
            return len(value) == len(self.low) and self.low <= value <= self.high
        if value != str(int(value)):
            return False
        return int(self.low) <= int(value) <= int(self.high)

    def could_extend_to_match(self, prefix: str) -> bool:
        if prefix == "":
            return True
        if not prefix.isdigit() or not prefix.isascii():
            return False
        if self.fixed_length:
            n = len(prefix)
            if n > len(self.low):
                return False
            lo = prefix + "0" * (len(self.low) - n)
            hi = prefix + "9" * (len(self.low) - n)
            return lo <= self.high and hi >= self.low
        if prefix.startswith("0") and prefix != "0":
            return False
        if prefix == "0":
            return int(self.low) == 0
        low, high = int(self.low), int(self.high)
        # Completing `prefix` with k more digits covers [p*10^k, (p+1)*10^k - 1].
        for extra in range(len(self.high) - len(prefix) + 1):
            first = int(prefix) * 10**extra
            last = (int(prefix) + 1) * 10**extra - 1
            if first <= high and last >= low:
                return True
        return False


_Entry = _All | _Pattern | _Range


@dataclass(frozen=True)
class Mask:
    """A parsed mask. An empty mask matches nothing."""

    entries: tuple[_Entry, ...]

    def matches(self, value: str) -> bool:
        return any(entry.matches(value) for entry in self.entries)

    def could_extend_to_match(self, prefix: str) -> bool:
        """Whether `prefix` plus more digits could still match (used for digit collection)."""
        return any(entry.could_extend_to_match(prefix) for entry in self.entries)

    @property
    def is_empty(self) -> bool:
        return not self.entries

    @property
    def matches_all(self) -> bool:
        return any(isinstance(entry, _All) for entry in self.entries)


def split_entries(text: str) -> list[str]:
    """The raw entries of a mask string, separators `;` and `,`, blanks dropped."""
    return [part.strip() for part in re.split(r"[;,]", text) if part.strip()]


def mask_problems(text: str) -> list[str]:
    """Every syntax problem of a mask string, as messages; empty when valid."""
    problems = []
    for raw in split_entries(text):
        if raw.upper() == "ALL":
            continue
        if _NUMBER.match(raw):
            continue
        found = _RANGE.match(raw)
        if found:
            low, high = found.groups()
            if int(low) > int(high) or (len(low) == len(high) and low > high):
                problems.append(f"range {raw!r} runs backwards (write it low-high)")
            elif len(low) > len(high):
                problems.append(f"range {raw!r}: the low bound is longer than the high bound")
            continue
        problems.append(
            f"entry {raw!r} is not a number, a range like 3000-4000, a pattern like 5*** "
            "(* = one digit) or ALL"
        )
    return problems


def parse_mask(text: str) -> Mask:
    """Parse a mask string. Raises ValueError naming every bad entry."""
    problems = mask_problems(text)
    if problems:
        raise ValueError("; ".join(problems))
    entries: list[_Entry] = []
    for raw in split_entries(text):
        if raw.upper() == "ALL":
            entries.append(_All())
            continue
        found = _RANGE.match(raw)
        if found:
            entries.append(_Range(found.group(1), found.group(2)))
        else:
            entries.append(_Pattern(raw))
    return Mask(tuple(entries))


def shadowed_entries(text: str, keys: Iterable[str]) -> list[str]:
    """The entries of mask `text` that no caller can ever key in, because every number they
    match starts with one of `keys` — menu rules without `#`, which fire as soon as the
    digits equal them (SPEC §5): with a rule `1`, `1000-1099` is out of reach."""
    digit_keys = frozenset(k for k in keys if k.isdigit() and k.isascii())
    if not digit_keys or mask_problems(text):
        return []
    depth = max(len(k) for k in digit_keys)
    shadowed = []
    for raw in split_entries(text):
        (entry,) = parse_mask(raw).entries
        if not isinstance(entry, _All) and not _reachable(entry, "", digit_keys, depth):
            shadowed.append(raw)
    return shadowed


def _reachable(entry: _Entry, prefix: str, keys: frozenset[str], depth: int) -> bool:
    """Whether some number `entry` matches starts with `prefix` and with no key."""
    if prefix in keys or (prefix and not entry.could_extend_to_match(prefix)):
        return False
    if len(prefix) >= depth or (prefix and entry.matches(prefix)):
        return True
    return any(_reachable(entry, prefix + digit, keys, depth) for digit in "0123456789")
