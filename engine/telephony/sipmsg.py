"""Small, pure parsers for the SIP text pjsua2 hands us (no SIP library imported).

pjsua2 gives an incoming INVITE as its whole message text (`SipRxData.wholeMsg`) and the
sender as `"host:port"` (`SipRxData.srcAddress`). These helpers pull out what
`engine.telephony.base.IncomingCall` carries; they never raise on odd input, they fall back
to empty values instead.
"""

from __future__ import annotations

import ipaddress
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
    call_id: str = ""
    from_header: str = ""  # the From and Contact values as sent (for scanner fingerprints)
    contact: str = ""


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


def header_tag(value: str) -> str | None:
    """The `tag` parameter of a From/To value (`<sip:a@b>;tag=x` or `sip:a@b;tag=x`), or None
    when it has none (a request out of any dialog)."""
    value = value.strip()
    if "<" in value:
        params = value[value.rfind(">") + 1 :] if ">" in value else ""
    else:
        params = value.split(";", 1)[1] if ";" in value else ""
    for param in params.split(";"):
        name, _, tag = param.partition("=")
        if name.strip().lower() == "tag" and tag.strip():
            return tag.strip()
    return None


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
        call_id=headers.get("call-id", [""])[0],
        from_header=headers.get("from", [""])[0],
        contact=", ".join(headers.get("contact", [])),
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
    ctype, body = message_body(whole_msg)
    if ctype != "application/dtmf":
        return None
    m = re.search(r"(?im)^\s*signal\s*=\s*(\S+)", body)
    token = (m.group(1) if m else body).strip()
    if not token:
        return None
    if token in ("10", "11"):
        return "*" if token == "10" else "#"
    return token[0].upper()


def message_body(whole_msg: str) -> tuple[str, str]:
    """(Content-Type without parameters, lower case; body) of a SIP message's text."""
    _, headers = split_headers(whole_msg)
    ctype = headers.get("content-type", [""])[0].split(";", 1)[0].strip().lower()
    parts = re.split(r"\r?\n\r?\n", whole_msg, maxsplit=1)
    return ctype, parts[1] if len(parts) == 2 else ""


def _address_problem(value: str, ipv6: bool) -> str | None:
    """Why a `c=` value (`IN IP4 192.0.2.1[/ttl]`) cannot carry our media, or None."""
    fields = value.split()
    if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6"):
        return f"c={value[:60]!r} is not IN IP4/IP6 <address>"
    family, address = fields[1], fields[2].split("/", 1)[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f"c={value[:60]!r}: {address[:45]!r} is not an IP address"
    if (family == "IP4") != (parsed.version == 4):
        return f"c={value[:60]!r}: the address is not {family}"
    if (parsed.version == 6) != ipv6:
        return f"c={value[:60]!r}: this server carries IPv{6 if ipv6 else 4} media only"
    return None


# pjsua opens two media sockets for each audio stream of an offer before any callback; a call
# here uses one stream (two: RTP/SAVP + RTP/AVP offers of phones that try SRTP first).
MAX_SDP_MEDIA = 8
MAX_SDP_AUDIO = 2


def sdp_problem(sdp: str, *, ipv6: bool = False) -> str | None:
    """Why an SDP offer cannot set up this server's media, or None.

    Checked before pjsua sees the offer: a connection address that is not an IP address of
    the server's family, or an audio stream without one, puts pjmedia in a state where the
    PyPI wheel's pjlib aborts the process (measured: a re-INVITE moving the media to
    `c=IN IP4 999.1.1.1` or `c=IN IP4 ::1`, then `pj_sockaddr_get_len` asserts). Ports must
    be 0-65535; at most MAX_SDP_AUDIO audio streams and MAX_SDP_MEDIA m= lines (each audio
    stream costs two sockets of the wheel's 64). Other oddities are left to pjsua."""
    session_c: str | None = None
    media: list[tuple[str, str | None]] = []  # (m= line, its c= value)
    for raw in re.split(r"\r?\n", sdp):
        line = raw.strip()
        if line.startswith("m="):
            media.append((line[2:], None))
        elif line.startswith("c="):
            if media:
                media[-1] = (media[-1][0], line[2:])
            else:
                session_c = line[2:]
    if not media:
        return "the SDP has no m= line"
    if len(media) > MAX_SDP_MEDIA:
        return f"the SDP has {len(media)} m= lines; at most {MAX_SDP_MEDIA} are accepted"
    audio = 0
    for m_value, c_value in media:
        fields = m_value.split()
        port = fields[1].split("/", 1)[0] if len(fields) >= 2 else ""
        if not port.isdigit() or int(port) > 65535:
            return f"m={m_value[:60]!r} has no valid port"
        if fields[0] != "audio" or int(port) == 0:
            continue
        audio += 1
        if audio > MAX_SDP_AUDIO:
            return f"the SDP offers more than {MAX_SDP_AUDIO} audio streams"
        connection = c_value or session_c
        if connection is None:
            return f"m={m_value[:60]!r} has no c= connection address"
        problem = _address_problem(connection, ipv6)
        if problem is not None:
            return problem
    return None
