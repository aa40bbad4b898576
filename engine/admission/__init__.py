"""Admission: whether a new out-of-dialog request may become a call, decided in one place.

`policy.decide` is the one decision (scanners, SDP acceptability, per-source limits, the
allow-list, draining, unknown or disabled receptionists, capacity and pace), asked by the SIP
stack's door (`engine.telephony.pjsip.door`) with what it can read before pjsua creates a call,
and by the runtime with everything. `counters.AdmissionCounters` is the one thread-safe object
of counts both sides share. Nothing here does I/O or imports the SIP stack.
"""

from engine.admission.counters import RATE_LIMITED, UNACKNOWLEDGED, AdmissionCounters, RateLimiter
from engine.admission.policy import (
    RETRY_AFTER,
    Admit,
    Decision,
    NewRequest,
    RefusalKind,
    Refuse,
    ServerState,
    decide,
    describe,
    is_scanner,
    log_level,
    reserved_slots,
    scanner_fingerprint,
    source_allowed,
)

__all__ = [
    "RATE_LIMITED",
    "RETRY_AFTER",
    "UNACKNOWLEDGED",
    "AdmissionCounters",
    "Admit",
    "Decision",
    "NewRequest",
    "RateLimiter",
    "RefusalKind",
    "Refuse",
    "ServerState",
    "decide",
    "describe",
    "is_scanner",
    "log_level",
    "reserved_slots",
    "scanner_fingerprint",
    "source_allowed",
]
