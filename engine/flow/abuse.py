"""Defences at the door: known SIP scanners, and a per-source INVITE rate limit.

Pure: time is passed in. The runtime consults these before routing a call; a scanner gets a
bare 403, a source over its rate gets 503, and neither reaches a receptionist.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

# User-Agent substrings of well-known SIP scanners and password crackers (lower case).
SCANNER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sipsak",
    "vaxsipuseragent",
    "iwar",
    "sundayddr",
    "pplsip",
    "sivus",
    "svcrack",
    "svwar",
    "smap",
)


def is_scanner(user_agent: str) -> bool:
    agent = user_agent.lower()
    return any(name in agent for name in SCANNER_AGENTS)


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up.

    At most `max_keys` keys are remembered (least recently seen forgotten first), so a flood
    from many addresses cannot grow memory without bound.
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
