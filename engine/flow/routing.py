"""Routing an INVITE (SPEC §3.1): answer it for a receptionist, or reject it with a SIP code."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.model import Receptionist


@dataclass(frozen=True, kw_only=True)
class Route:
    """`receptionist` to answer for, or a rejection `sip_code` with a `reason`."""

    receptionist: Receptionist | None = None
    sip_code: int = 200
    reason: str = ""


def source_allowed(source_host: str, allow: Sequence[str]) -> bool:
    """Whether `source_host` is in the allow-list of networks (an empty list allows all)."""
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(source_host.strip("[]"))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allow)


def route_call(
    request_user: str,
    receptionists: Mapping[str, Receptionist],
    *,
    source_host: str,
    allow: Sequence[str],
    draining: bool,
    active_calls: int,
    capacity: int,
) -> Route:
    """Decide what to do with an INVITE for `request_user`.

    Order: source not allowed → 403; draining → 503; unknown number → 404; receptionist
    disabled → 503; at capacity → 503.
    """
    if not source_allowed(source_host, allow):
        return Route(sip_code=403, reason="Forbidden")
    if draining:
        return Route(sip_code=503, reason="Service Unavailable (shutting down)")
    receptionist = receptionists.get(request_user)
    if receptionist is None:
        return Route(sip_code=404, reason="Not Found")
    if not receptionist.enabled:
        return Route(sip_code=503, reason="Service Unavailable (receptionist disabled)")
    if active_calls >= capacity:
        return Route(sip_code=503, reason="Service Unavailable (call limit reached)")
    return Route(receptionist=receptionist)
