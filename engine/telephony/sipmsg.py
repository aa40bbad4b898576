"""Small, pure parsers for the SIP text pjsua2 hands us (no SIP library imported).

pjsua2 gives an incoming INVITE as its whole message text (`SipRxData.wholeMsg`) and the
sender as `"host:port"` (`SipRxData.srcAddress`). These helpers pull out what
`engine.telephony.base.IncomingCall` carries; they never raise on odd input, they fall back
to empty values instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

Transport = Literal["udp", "tcp", "tls"]

# RFC 3261 §7.3.3 compact header forms that matter here.
_COMPACT = {
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "i": "call-id",
    "c": "content-type",
    "l": "content-length",
}


@dataclass(frozen=True, kw_only=True)
class InviteInfo:
    """The parts of an INVITE the runtime cares about."""

    request_user: str
    from_user: str
    from_display: str
    transport: Transport
    session_id: str | None
    user_agent: str


def split_headers(whole_msg: str) -> tuple[str, dict[str, list[str]]]:
    """Return the start line and the headers (lower-case full names, values in order)."""
    head = re.split(r"\r?\n\r?\n", whole_msg, maxsplit=1)[0]
    lines = re.split(r"\r?\n", head)
    start = lines[0].strip() if lines else ""
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # folded continuation line
            headers[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last = key
    return start, headers


def uri_user(uri: str) -> str:
    """User part of a `sip:`/`sips:`/`tel:` URI (percent-decoded), "" if it has none."""
    uri = uri.strip().strip("<>")
    scheme, sep, rest = uri.partition(":")
    if not sep:
        return ""
    scheme = scheme.lower()
    if scheme == "tel":
        return unquote(re.split(r"[;?]", rest, maxsplit=1)[0])
    if scheme not in ("sip", "sips"):
        return ""
    if "@" not in rest:
        return ""
    user = rest.split("@", 1)[0]
    user = user.split(":", 1)[0]  # drop a password
    user = user.split(";", 1)[0]  # drop user parameters (e.g. ;phone-context)
    return unquote(user)


def parse_name_addr(value: str) -> tuple[str, str]:
    """Split a From/To/Contact value into (display name, URI)."""
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        uri = value[lt + 1 : gt if gt > lt else len(value)]
        display = value[:lt].strip()
        if len(display) >= 2 and display[0] == '"' and display[-1] == '"':
            display = re.sub(r"\\(.)", r"\1", display[1:-1])
        return display, uri.strip()
    # addr-spec form: parameters after ';' belong to the header, not the URI
    return "", value.split(";", 1)[0].strip()


def via_transport(via: str) -> Transport:
    """Transport of the top Via (`SIP/2.0/UDP host…`)."""
    m = re.match(r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)", via)
    proto = m.group(1).lower() if m else "udp"
    if proto == "tls":
        return "tls"
    if proto in ("tcp", "ws", "wss", "sctp"):
        return "tcp"
    return "udp"


def parse_invite(whole_msg: str) -> InviteInfo:
    """Extract Request-URI user, caller, transport and PBX headers from an INVITE's text."""
    start, headers = split_headers(whole_msg)
    parts = start.split()
    request_uri = parts[1] if len(parts) >= 2 else ""

    from_display, from_uri = parse_name_addr(headers.get("from", [""])[0])
    vias = headers.get("via", [])
    top_via = vias[0].split(",", 1)[0] if vias else ""
    session = headers.get("x-session-id")
    return InviteInfo(
        request_user=uri_user(request_uri),
        from_user=uri_user(from_uri),
        from_display=from_display,
        transport=via_transport(top_via) if top_via else "udp",
        session_id=session[0] if session and session[0] else None,
        user_agent=headers.get("user-agent", [""])[0],
    )


def parse_host_port(address: str) -> tuple[str, int]:
    """`"1.2.3.4:5060"` or `"[::1]:5060"` → (host, port); port 0 when missing."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    return host, int(port) if port.isdigit() else 0


def parse_info_dtmf(whole_msg: str) -> str | None:
    """The digit of an INFO with `Content-Type: application/dtmf`, else None.

    The body is the bare digit (`5`) or, from some gateways, `Signal=5` lines like
    `application/dtmf-relay`. Digits are upper-cased; `*`/`#` kept; 10/11 mean `*`/`#`.
    """
    _, headers = split_headers(whole_msg)
    ctype = headers.get("content-type", [""])[0]
    if ctype.split(";", 1)[0].strip().lower() != "application/dtmf":
        return None
    parts = re.split(r"\r?\n\r?\n", whole_msg, maxsplit=1)
    body = parts[1] if len(parts) == 2 else ""
    m = re.search(r"(?im)^\s*signal\s*=\s*(\S+)", body)
    token = (m.group(1) if m else body).strip()
    if not token:
        return None
    if token in ("10", "11"):
        return "*" if token == "10" else "#"
    return token[0].upper()
