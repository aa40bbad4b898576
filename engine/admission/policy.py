"""The admission decision for a new out-of-dialog request: `decide(request, server, counters,
now) -> Admit | Refuse`.

One function, asked twice: by the SIP stack's door (a pjsip module on the pjsua thread, before
pjsua creates anything) with what it can read of the request, and by the runtime (on the
event loop, once pjsua reports the INVITE) with everything, routing included. A fact that is
`None` is not known to the asker and its rule is skipped; the other side applies it. So a
rule has one home and one refusal, whoever asks: a scanner gets the same `Refuse` at the door
and in the runtime.

Order (the first rule that refuses decides):

    scanner User-Agent      any method  403 silent   (no answer where none was sent yet)
    -- only INVITEs go on --
    SDP offer               400 / 488   the offer does not parse / the media stack cannot carry it
    per-source limits       503         over `sip_rate_limit` (rate, unacknowledged calls)
    not in `sip_allow`      403
    draining                503         shutting down
    server disabled         503         the receptionist server's `enabled` is false
    probing (blocked)       404         a source that called too many unknown extensions
    unknown extension       404         (one too many blocks the source: `sip_rate_limit`)
    receptionist disabled   503
    every call slot busy    503 + Retry-After
    the last free slots     503 + Retry-After  kept for sources without calls stuck unACKed
    pace                    503 + Retry-After  (builds whose ioqueue aborts when full)

Pure but for `counters` (thread-safe token buckets and counts; time is passed in).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.admission.counters import AdmissionCounters
from engine.model import Receptionist
from engine.telephony.sipmsg import parse_name_addr

RETRY_AFTER = 5  # seconds, in the 503's Retry-After when every call slot is busy

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


# Scanner names that no caller's display name contains by chance (SCANNER_AGENTS also has
# short ones such as "smap" and "iwar", fine in a User-Agent, not in a person's name).
SCANNER_DISPLAY_NAMES = (
    "sipvicious",
    "friendly-scanner",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sipsak",
    "vaxsipuseragent",
    "svwar",
    "svcrack",
)

# The address SIP scanners put in From, To and Contact by default (sipvicious:
# `"sipvicious"<sip:100@1.1.1.1>`, Contact `sip:123@1.1.1.1`): a public DNS resolver's, never
# a SIP peer's own.
SCANNER_HOSTS = ("1.1.1.1",)
_URI_HOST = re.compile(r"sips?:(?:[^@;>\s]*@)?\[?([^\]:;>\s]+)", re.IGNORECASE)


_TAG = re.compile(r";\s*tag=([0-9a-fA-F]+)")


def _sipvicious_tag(from_header: str) -> bool:
    """Whether the From tag is one sipvicious makes (svmap, svwar, svcrack alike): the hex of
    `<printable data>\\x01<6-10 random digits>`."""
    found = _TAG.search(from_header)
    if found is None or len(found.group(1)) % 2:
        return False
    head, sep, tail = bytes.fromhex(found.group(1)).rpartition(b"\x01")
    # the random part is str(getrandbits(32)): 6 to 10 digits but once in ~40,000 tags; the
    # data part printable. A tag of random hex bytes has this shape once in ~10^13.
    printable = all(0x20 <= byte < 0x7F for byte in head)
    return bool(sep) and 6 <= len(tail) <= 10 and tail.isdigit() and printable


# A source with this many new calls not yet confirmed (a burst) cannot take the reserved
# slots, unless it ACKed a call before: a PBX starts calls in bursts too (four callers at
# once), and a source that never ACKed is the silent flood the reserve is for.
BURST_IN_FLIGHT = 2


def reserved_slots(capacity: int) -> int:
    """Call slots kept for sources without stale unacknowledged calls: one in ten, at least
    one (none for a single slot), so that a silent source cannot take every slot."""
    return 0 if capacity < 2 else max(1, capacity // 10)


def is_scanner(user_agent: str) -> bool:
    agent = user_agent.lower()
    return any(name in agent for name in SCANNER_AGENTS)


def scanner_fingerprint(request: NewRequest) -> str | None:
    """Which mark of a known SIP scanner `request` carries, or None: a scanner's User-Agent,
    a scanner's name as the From display name (sipvicious sends one even when told to fake
    or drop its User-Agent), the From tag sipvicious' tools make, or a scanner's default
    address in From or Contact."""
    if request.user_agent is not None and is_scanner(request.user_agent):
        return "a SIP scanner's User-Agent"
    from_header = request.from_header or ""
    display = parse_name_addr(from_header)[0].lower()
    if any(name in display for name in SCANNER_DISPLAY_NAMES):
        return "a SIP scanner's From display name"
    if _sipvicious_tag(from_header):
        return "a SIP scanner's From tag"
    for value in (from_header, request.contact or ""):
        if any(host in SCANNER_HOSTS for host in _URI_HOST.findall(value)):
            return "a SIP scanner's default address in From or Contact"
    return None


def source_allowed(source_host: str, allow: Sequence[str]) -> bool:
    """Whether `source_host` is in the allow-list of networks (an empty list allows all)."""
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(source_host.strip("[]"))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allow)


class RefusalKind(StrEnum):
    SCANNER = "scanner"
    BAD_OFFER = "bad_offer"
    SOURCE_LIMIT = "source_limit"
    NOT_ALLOWED = "not_allowed"
    DRAINING = "draining"
    SERVER_DISABLED = "server_disabled"
    UNKNOWN_EXTENSION = "unknown_extension"
    PROBE_BLOCKED = "probe_blocked"  # the miss that blocks a source probing extensions
    PROBING = "probing"  # an INVITE of a blocked source: 404 whatever it calls
    DISABLED = "receptionist_disabled"
    FULL = "full"
    RESERVED = "reserved"
    PACE = "pace"


@dataclass(frozen=True, kw_only=True)
class NewRequest:
    """What the asker knows of a new out-of-dialog request; `None`: not known here."""

    method: str = "INVITE"
    call_id: str = ""
    user_agent: str | None = None  # None: the request's text could not be read
    from_header: str | None = None  # the From value as sent (None: not read)
    contact: str | None = None  # the Contact values as sent (None: not read)
    source_host: str | None = None  # None: the source address could not be read
    offer: tuple[int, str] | None = None  # (400 or 488, why) when the SDP offer is refused
    request_user: str | None = None  # None: routing is not decided here (the door)


@dataclass(frozen=True, kw_only=True)
class ServerState:
    """What the asker knows of the server; `None`: the rule is not applied here."""

    allow: Sequence[str] | None = None  # `server.sip_allow`
    draining: bool = False
    enabled: bool = True  # the receptionist server's `enabled` (POST /api/ivr_servers/{id})
    receptionists: Mapping[str, Receptionist] | None = None
    calls: int = 0  # calls in progress
    capacity: int | None = None  # calls that may be in progress
    capacity_text: str = ""  # what limits the capacity and how to raise it, for the log
    charged: bool = False  # the door spent this INVITE's rate token already
    pace: bool = False  # apply the counters' pace of new calls


@dataclass(frozen=True, kw_only=True)
class Admit:
    receptionist: Receptionist | None = None  # None where routing is not decided (the door)


@dataclass(frozen=True, kw_only=True)
class Refuse:
    kind: RefusalKind
    sip_code: int
    reason: str  # the reason phrase sent
    detail: str = ""  # why, for the log (never the request's content beyond what is safe)
    silent: bool = False  # send no answer where none was sent yet
    retry_after: int | None = None


Decision = Admit | Refuse


def decide(
    request: NewRequest, server: ServerState, counters: AdmissionCounters | None, now: float
) -> Decision:
    """Admit `request` or refuse it (see the module doc string for the order)."""
    fingerprint = scanner_fingerprint(request)
    if fingerprint is not None:
        return Refuse(
            kind=RefusalKind.SCANNER,
            sip_code=403,
            reason="Forbidden",
            detail=fingerprint,
            silent=True,
        )
    if request.method != "INVITE":
        return Admit()
    if request.offer is not None:
        code, why = request.offer
        reason = "Bad Request" if code == 400 else "Not Acceptable Here"
        return Refuse(kind=RefusalKind.BAD_OFFER, sip_code=code, reason=reason, detail=why)
    if counters is not None and request.source_host is not None:
        over = counters.source_refusal(request.source_host, now, rate=not server.charged)
        if over is not None:
            return Refuse(
                kind=RefusalKind.SOURCE_LIMIT,
                sip_code=503,
                reason=f"Service Unavailable ({over})",
                detail=f"the source is over sip_rate_limit ({over})",
            )
    return _route(request, server, counters, now)


def _route(
    request: NewRequest, server: ServerState, counters: AdmissionCounters | None, now: float
) -> Decision:
    if (
        server.allow is not None
        and request.source_host is not None
        and not source_allowed(request.source_host, server.allow)
    ):
        return Refuse(
            kind=RefusalKind.NOT_ALLOWED,
            sip_code=403,
            reason="Forbidden",
            detail="the source is not in sip_allow",
        )
    if server.draining:
        return Refuse(
            kind=RefusalKind.DRAINING, sip_code=503, reason="Service Unavailable (shutting down)"
        )
    if not server.enabled:
        return Refuse(
            kind=RefusalKind.SERVER_DISABLED,
            sip_code=503,
            reason="Service Unavailable (server disabled)",
            detail="the receptionist server is disabled (POST /api/ivr_servers/{id})",
        )
    receptionist = None
    if server.receptionists is not None and request.request_user is not None:
        # Probing is judged where routing is (the runtime), so that a blocked source's 404
        # for an existing extension is sent the way every 404 is (after pjsua's 100 Trying).
        # Sources in `sip_allow` (when set) are trusted.
        prober = request.source_host
        if server.allow and prober is not None and source_allowed(prober, server.allow):
            prober = None
        if counters is not None and prober is not None and counters.probing(prober, now):
            return Refuse(
                kind=RefusalKind.PROBING,
                sip_code=404,
                reason="Not Found",
                detail="the source is blocked for probing extensions (sip_rate_limit)",
            )
        receptionist = server.receptionists.get(request.request_user)
        if receptionist is None:
            if counters is not None and prober is not None and counters.missed(prober, now):
                block = counters.limit.unknown_block if counters.limit else 0
                return Refuse(
                    kind=RefusalKind.PROBE_BLOCKED,
                    sip_code=404,
                    reason="Not Found",
                    detail=(
                        "the source called more extensions that do not exist than "
                        "sip_rate_limit.unknown_per_minute allows: every INVITE from it "
                        f"gets 404 for {block} s, existing extensions included"
                    ),
                )
            return Refuse(kind=RefusalKind.UNKNOWN_EXTENSION, sip_code=404, reason="Not Found")
        if not receptionist.enabled:
            return Refuse(
                kind=RefusalKind.DISABLED,
                sip_code=503,
                reason="Service Unavailable (receptionist disabled)",
            )
    if server.capacity is not None and server.calls >= server.capacity:
        return Refuse(
            kind=RefusalKind.FULL,
            sip_code=503,
            reason="Service Unavailable (call limit reached)",
            detail=server.capacity_text,
            retry_after=RETRY_AFTER,
        )
    if (
        server.capacity is not None
        and counters is not None
        and request.source_host is not None
        and server.capacity - server.calls <= reserved_slots(server.capacity)
        and (
            counters.stale_unconfirmed(request.source_host, now) > 0
            or (
                counters.in_flight(request.source_host, now) >= BURST_IN_FLIGHT
                and not counters.proven(request.source_host, now)
            )
        )
    ):
        return Refuse(
            kind=RefusalKind.RESERVED,
            sip_code=503,
            reason="Service Unavailable (call limit reached)",
            detail=(
                "the last free call slots are kept for sources whose answered calls were "
                "ACKed; this source has a call waiting for its ACK for 2 s or more, or "
                f"{BURST_IN_FLIGHT} or more new calls not confirmed yet and no call it ACKed"
            ),
            retry_after=RETRY_AFTER,
        )
    if server.pace and counters is not None and not counters.pace_allows(now):
        rate = counters.pace_rate
        return Refuse(
            kind=RefusalKind.PACE,
            sip_code=503,
            reason="Service Unavailable",
            detail=f"new calls arrive faster than {rate:g} a second",
            retry_after=RETRY_AFTER,
        )
    return Admit(receptionist=receptionist)


# Levels of the one log line a refusal gets in the runtime (the door sums its refusals up in one
# periodic warning instead: a flood must not flood the log).
_LOG_LEVELS = {
    RefusalKind.SCANNER: "DEBUG",
    RefusalKind.SOURCE_LIMIT: "DEBUG",
    RefusalKind.BAD_OFFER: "INFO",
    RefusalKind.NOT_ALLOWED: "INFO",
    RefusalKind.UNKNOWN_EXTENSION: "INFO",
    RefusalKind.PROBE_BLOCKED: "WARNING",
    RefusalKind.PROBING: "DEBUG",
    RefusalKind.DRAINING: "WARNING",
    RefusalKind.SERVER_DISABLED: "INFO",
    RefusalKind.DISABLED: "WARNING",
    RefusalKind.FULL: "WARNING",
    RefusalKind.RESERVED: "WARNING",
    RefusalKind.PACE: "WARNING",
}


def log_level(refusal: Refuse) -> str:
    """The level (a `logging` level name) of a refusal's log line."""
    return _LOG_LEVELS[refusal.kind]


def describe(refusal: Refuse, request: NewRequest, source: str) -> str:
    """The refusal's log line: what was refused, from where, with what, and why."""
    target = f" for {request.request_user}" if request.request_user else ""
    why = f": {refusal.detail}" if refusal.detail else ""
    return (
        f"rejecting {request.method}{target} from {source} with {refusal.sip_code} "
        f"{refusal.reason}{why}"
    )
