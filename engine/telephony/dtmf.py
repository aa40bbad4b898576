"""Each key press reported exactly once, whatever way pjsua indicates it (pure; no pjsua2).

pjsua 2.15 indicates an RFC 4733 key press once in `onDtmfDigit` and one or more times in
`onDtmfEvent`: a first indication with no flag, then `IS_UPDATE` updates, then
`IS_UPDATE|IS_END`; a SIP INFO key press arrives once in each. The adapter reports from
`onDtmfEvent` only, through `DtmfFilter.press`: indications flagged `IS_UPDATE` are skipped, and
a first indication repeated for the same RTP event (same digit and RTP timestamp) too.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.flow.events import DtmfMethod

# pjmedia_stream_dtmf_event_flags (pjmedia/stream.h); pjsua2's SWIG module does not export them.
DTMF_IS_UPDATE = 1 << 0
DTMF_IS_END = 1 << 1

VALID_DIGITS = frozenset("0123456789*#ABCD")


def valid_digit(digit: str) -> bool:
    """Whether `digit` is a key 0-9 * # A-D (upper case)."""
    return digit in VALID_DIGITS


@dataclass
class DtmfFilter:
    """One call's de-duplication of `onDtmfEvent` indications."""

    last_rfc4733: tuple[str, int] | None = None  # (digit, RTP timestamp) of the last press

    def press(self, digit: str, method: DtmfMethod, flags: int, timestamp: int) -> bool:
        """Whether this indication is a new key press to report (`digit` already valid)."""
        if method != "rfc4733":
            return True  # a SIP INFO request is one key press: pjsua indicates it once
        if flags & DTMF_IS_UPDATE:
            return False  # an update or the end of a press already reported
        if self.last_rfc4733 == (digit, timestamp):
            return False  # the same RTP event indicated again
        self.last_rfc4733 = (digit, timestamp)
        return True
