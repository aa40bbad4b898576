"""The counters admission decides with, shared by the SIP stack's door and the runtime.

`AdmissionCounters` is the one thread-safe object both threads ask: the INVITE rate of each
source (a token bucket, `server.sip_rate_limit`), each source's answered calls still waiting
for their ACK, the pace of new calls a fragile build survives, and the INVITEs whose rate
token the door has spent already (by Call-ID, so the runtime does not charge them twice). One
lock guards all of it. Time is passed in.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from engine.model import SipRateLimit

RATE_LIMITED = "rate limit"
UNACKNOWLEDGED = "unacknowledged calls"
CHARGED_MEMORY = 4096  # Call-IDs the door charged, not yet reported by pjsua
STALE_AFTER = 2.0  # seconds an answered call may wait for its ACK before it counts as stale
IN_FLIGHT_FOR = 5.0  # seconds a charged INVITE counts as in flight before pjsua reports it
MAX_SOURCES = 10_000  # sources remembered as blocked or proven (least recent forgotten first)
PROVEN_FOR = 86400.0  # seconds a source that ACKed a call is exempt from the probing block


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up.

    At most `max_keys` keys are remembered (least recently seen forgotten first), so a flood
    from many addresses cannot grow memory without bound. Not thread-safe on its own.
    """

    rate: float
    burst: float
    max_keys: int = 10_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class AdmissionCounters:
    """Per-source INVITE rate and unacknowledged calls, the pace, and the charged INVITEs."""

    def __init__(self, limit: SipRateLimit | None, pace: RateLimiter | None = None) -> None:
        """`limit` None: no per-source limits (only the pace and the charged INVITEs)."""
        self.limit = limit
        self._lock = threading.Lock()
        self._rate = (
            RateLimiter(rate=limit.invites_per_second, burst=limit.burst)
            if limit is not None and limit.invites_per_second > 0
            else None
        )
        self._pace = pace
        self._misses = (
            RateLimiter(rate=limit.unknown_per_minute / 60.0, burst=limit.unknown_per_minute)
            if limit is not None and limit.unknown_per_minute > 0
            else None
        )
        self._blocked: OrderedDict[str, float] = OrderedDict()  # source → blocked until
        self._proven: OrderedDict[str, float] = OrderedDict()  # source → when it last ACKed
        self._unconfirmed: Counter[str] = Counter()
        self._answered_at: dict[str, dict[str, float]] = {}  # source → call → when answered
        self._charged: OrderedDict[str, str | None] = OrderedDict()  # Call-ID → source
        # source → Call-ID → when charged: `in_flight` reads one source's, not every charge
        self._charged_from: dict[str, dict[str, float]] = {}

    # --- asked by `decide` ------------------------------------------------------------------

    def source_refusal(self, source: str, now: float, *, rate: bool = True) -> str | None:
        """None when a new INVITE from `source` may go on, else why not (it gets 503).

        `rate=False`: the unacknowledged calls only, for an INVITE the door charged already
        (its rate token is spent; the calls it counted may have been answered since)."""
        if self.limit is None:
            return None
        with self._lock:
            if rate and self._rate is not None and not self._rate.allow(source, now):
                return RATE_LIMITED
            if self._unconfirmed[source] >= self.limit.max_unconfirmed:
                return UNACKNOWLEDGED
            return None

    def probing(self, source: str, now: float) -> bool:
        """Whether `source` is blocked for probing extensions (see `missed`)."""
        with self._lock:
            until = self._blocked.get(source)
            if until is None:
                return False
            if until <= now:
                del self._blocked[source]
                return False
            return True

    def acked(self, source: str, now: float) -> None:
        """A call from `source` got its ACK: the source has a two-way path to us (a forged
        source address cannot ACK: the 200 OK went elsewhere), so it is never blocked for
        probing — else 11 forged INVITEs could block a PBX's calls — for `PROVEN_FOR` s."""
        with self._lock:
            self._proven.pop(source, None)
            self._proven[source] = now
            while len(self._proven) > MAX_SOURCES:
                self._proven.popitem(last=False)

    def proven(self, source: str, now: float) -> bool:
        """Whether `source` ACKed a call in the last `PROVEN_FOR` s (see `acked`)."""
        with self._lock:
            at = self._proven.get(source)
            return at is not None and at > now - PROVEN_FOR

    def missed(self, source: str, now: float) -> bool:
        """`source` called an extension that does not exist. True when that was one too many
        (`unknown_per_minute`): the source is blocked from now for `unknown_block` s. A
        source that ACKed a call in the last `PROVEN_FOR` s is never blocked."""
        if self._misses is None or self.limit is None:
            return False
        if self.proven(source, now):
            return False
        with self._lock:
            if self._misses.allow(source, now):
                return False
            self._blocked.pop(source, None)
            self._blocked[source] = now + self.limit.unknown_block
            while len(self._blocked) > MAX_SOURCES:
                self._blocked.popitem(last=False)
            return True

    def set_pace(self, pace: RateLimiter | None) -> None:
        """The pace of new calls the SIP stack's build survives (set when it starts)."""
        with self._lock:
            self._pace = pace

    def pace_allows(self, now: float) -> bool:
        """Whether one more new call fits the pace (always, without a pace)."""
        if self._pace is None:
            return True
        with self._lock:
            return self._pace.allow("", now)

    @property
    def pace_rate(self) -> float | None:
        return self._pace.rate if self._pace is not None else None

    # --- the door's charged INVITEs ---------------------------------------------------------

    def charge(self, call_id: str, source: str | None = None, now: float = 0.0) -> None:
        """The door let the INVITE of `call_id` (from `source`, at `now`) through after
        spending its rate token.

        pjsua reports an INVITE later, from a copy of its rx data, so the runtime looks it up
        by Call-ID (the last `CHARGED_MEMORY`: pjsua may refuse one without reporting it).
        Until then it is in flight for `in_flight`."""
        if not call_id:
            return
        with self._lock:
            self._forget_charge(call_id)
            self._charged[call_id] = source
            if source is not None:
                self._charged_from.setdefault(source, {})[call_id] = now
            while len(self._charged) > CHARGED_MEMORY:
                self._forget_charge(next(iter(self._charged)))

    def take_charged(self, call_id: str) -> bool:
        """Whether the door charged `call_id` (and forget it)."""
        with self._lock:
            return self._forget_charge(call_id)

    def _forget_charge(self, call_id: str) -> bool:
        """Drop `call_id`'s charge (lock held); whether there was one."""
        if call_id not in self._charged:
            return False
        source = self._charged.pop(call_id)
        if source is not None:  # then `charge` filed it under its source
            charges = self._charged_from[source]
            del charges[call_id]
            if not charges:
                del self._charged_from[source]
        return True

    def in_flight(self, source: str, now: float) -> int:
        """New calls from `source` not confirmed yet: INVITEs the door let through in the last
        `IN_FLIGHT_FOR` s that pjsua has not reported, and answered calls without their ACK.
        A burst of INVITEs arrives faster than the runtime answers them, so both count."""
        with self._lock:
            charges = self._charged_from.get(source, {})
            charged = sum(1 for at in charges.values() if at > now - IN_FLIGHT_FOR)
            return charged + self._unconfirmed[source]

    # --- the runtime's answered calls -------------------------------------------------------

    def answered(self, source: str, call: str = "", now: float | None = None) -> None:
        """A call from `source` was answered: it waits for its ACK. With `call` and `now`
        its age is known too (see `stale_unconfirmed`)."""
        with self._lock:
            self._unconfirmed[source] += 1
            if call and now is not None:
                self._answered_at.setdefault(source, {})[call] = now

    def settled(self, source: str, call: str = "") -> None:
        """An answered call from `source` got its ACK, or ended first."""
        with self._lock:
            self._unconfirmed[source] -= 1
            if self._unconfirmed[source] <= 0:
                del self._unconfirmed[source]
            calls = self._answered_at.get(source)
            if calls is not None:
                calls.pop(call, None)
                if not calls:
                    del self._answered_at[source]

    def stale_unconfirmed(self, source: str, now: float, age: float = STALE_AFTER) -> int:
        """Answered calls from `source` still without their ACK `age` seconds later (a PBX
        ACKs within milliseconds; a silent peer never does)."""
        with self._lock:
            calls = self._answered_at.get(source, {})
            return sum(1 for at in calls.values() if at <= now - age)

    def unconfirmed(self, source: str) -> int:
        with self._lock:
            return self._unconfirmed[source]
