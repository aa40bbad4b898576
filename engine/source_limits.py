"""Per-source INVITE limits (`server.sip_rate_limit`), shared by two threads.

The SIP stack's door (a pjsip module on the pjsua thread, `engine.telephony.pjsua`) asks
`admit` before pjsua creates anything for a new INVITE, so that a flood from one source is
refused statelessly; the runtime (event loop) counts the answered calls still waiting for
their ACK (`answered` / `settled`) and asks `admit` again before answering: in full for the
INVITEs the door could not check, for the unacknowledged calls only for the others (the door
may have let a burst through before the runtime answered any of it). One lock guards both.
"""

from __future__ import annotations

import threading
from collections import Counter

from engine.flow.abuse import RateLimiter
from engine.model import SipRateLimit

RATE_LIMITED = "rate limit"
UNACKNOWLEDGED = "unacknowledged calls"


class SourceLimits:
    """The INVITE rate of each source address and its answered calls not yet ACKed."""

    def __init__(self, limit: SipRateLimit) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._rate = (
            RateLimiter(rate=limit.invites_per_second, burst=limit.burst)
            if limit.invites_per_second > 0
            else None
        )
        self._unconfirmed: Counter[str] = Counter()

    def admit(self, source: str, now: float, *, rate: bool = True) -> str | None:
        """None when a new INVITE from `source` may go on, else why not (it gets 503).

        `rate=False`: the unacknowledged calls only, for an INVITE the door admitted already
        (its rate token is spent; the calls it counted may have been answered since)."""
        with self._lock:
            if rate and self._rate is not None and not self._rate.allow(source, now):
                return RATE_LIMITED
            if self._unconfirmed[source] >= self.limit.max_unconfirmed:
                return UNACKNOWLEDGED
            return None

    def answered(self, source: str) -> None:
        """A call from `source` was answered: it waits for its ACK."""
        with self._lock:
            self._unconfirmed[source] += 1

    def settled(self, source: str) -> None:
        """An answered call from `source` got its ACK, or ended first."""
        with self._lock:
            self._unconfirmed[source] -= 1
            if self._unconfirmed[source] <= 0:
                del self._unconfirmed[source]

    def unconfirmed(self, source: str) -> int:
        with self._lock:
            return self._unconfirmed[source]
