"""The pure SIP text parsers behind `IncomingCall` and INFO `application/dtmf`."""

from __future__ import annotations

import pytest

from engine.telephony.sipmsg import (
    header_tag,
    message_body,
    parse_host_port,
    parse_info_dtmf,
    parse_invite,
    parse_name_addr,
    sdp_problem,
    uri_user,
)

INVITE = (
    "INVITE sip:800@192.0.2.5:8922;transport=tcp SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1,SIP/2.0/UDP 10.0.0.1\r\n"
    'From: "Doe, John \\"JD\\"" <sip:%2B4930123@pbx.example;user=phone>;tag=abc\r\n'
    "To: <sip:800@192.0.2.5>\r\n"
    "X-Session-ID: 6f1c-22\r\n"
    "User-Agent: PortSIP PBX 22.0\r\n"
    "Content-Type: application/sdp\r\n"
    "\r\n"
    "v=0\r\n"
)


def test_parse_invite_fields() -> None:
    info = parse_invite(INVITE)
    assert info.request_user == "800"
    assert info.from_user == "+4930123"
    assert info.from_display == 'Doe, John "JD"'
    assert info.transport == "tcp"
    assert info.session_id == "6f1c-22"
    assert info.user_agent == "PortSIP PBX 22.0"


def test_parse_invite_compact_headers_and_missing_values() -> None:
    msg = "INVITE sip:900@h SIP/2.0\nv: SIP/2.0/UDP h2\nf: sip:1001@h2;tag=1\n\n"
    info = parse_invite(msg)
    assert (info.request_user, info.from_user, info.from_display) == ("900", "1001", "")
    assert info.transport == "udp"
    assert info.session_id is None and info.user_agent == ""


def test_parse_invite_never_raises_on_garbage() -> None:
    info = parse_invite("garbage")
    assert info.request_user == "" and info.from_user == "" and info.transport == "udp"


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:201@127.0.0.1:5060", "201"),
        ("<sips:alice:secret@example.com>", "alice"),
        ("sip:example.com", ""),
        ("tel:+1-555-0100;phone-context=x", "+1-555-0100"),
        ("mailto:x@y", ""),
    ],
)
def test_uri_user(uri: str, user: str) -> None:
    assert uri_user(uri) == user


def test_parse_name_addr_forms() -> None:
    assert parse_name_addr("Bob <sip:b@h>;tag=1") == ("Bob", "sip:b@h")
    assert parse_name_addr("sip:b@h;tag=1") == ("", "sip:b@h")


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:5060", ("127.0.0.1", 5060)), ("[::1]:5070", ("::1", 5070)), ("h", ("h", 0))],
)
def test_parse_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(addr) == expected


@pytest.mark.parametrize(
    ("ctype", "body", "digit"),
    [
        ("application/dtmf", "5", "5"),
        ("application/dtmf", "#\r\n", "#"),
        ("application/dtmf", "Signal=a\r\nDuration=160\r\n", "A"),
        ("application/dtmf", "11", "#"),
        ("application/dtmf-relay", "Signal=5\r\n", None),  # pjsua handles this one itself
        ("application/dtmf", "", None),
    ],
)
def test_parse_info_dtmf(ctype: str, body: str, digit: str | None) -> None:
    msg = f"INFO sip:r@h SIP/2.0\r\nContent-Type: {ctype}\r\n\r\n{body}"
    assert parse_info_dtmf(msg) == digit


SDP_OK = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
AUDIO = "m=audio 4000 RTP/AVP 0\r\n"


@pytest.mark.parametrize(
    ("sdp", "ipv6", "problem"),
    [
        (SDP_OK + AUDIO, False, None),
        (SDP_OK.replace("192.0.2.1\r\nt", "0.0.0.0\r\nt") + AUDIO, False, None),  # old hold
        (SDP_OK + "m=audio 0 RTP/AVP 0\r\n", False, None),  # a refused stream needs no address
        (SDP_OK + "m=video 4002 RTP/AVP 31\r\nc=IN IP4 nowhere\r\n" + AUDIO, False, None),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.7/127\r\n", False, None),
        ("v=0\r\nc=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 0\r\n", True, None),
        (SDP_OK.replace("c=IN IP4 192.0.2.1", "c=IN IP4 999.1.1.1") + AUDIO, False, "not an IP"),
        (SDP_OK.replace("c=IN IP4 192.0.2.1", "c=IN IP4 ::1") + AUDIO, False, "not IP4"),
        (SDP_OK.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ::1") + AUDIO, False, "IPv4 media only"),
        ("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n", True, "IPv6 media only"),
        (SDP_OK.replace("c=IN IP4 192.0.2.1", "c=XX IP4 192.0.2.1") + AUDIO, False, "IN IP4/IP6"),
        (SDP_OK.replace("c=IN IP4 192.0.2.1\r\n", "") + AUDIO, False, "no c= connection"),
        (SDP_OK + "m=audio 99999 RTP/AVP 0\r\n", False, "no valid port"),
        (SDP_OK + "m=audio -1 RTP/AVP 0\r\n", False, "no valid port"),
        (SDP_OK + "m=audio\r\n", False, "no valid port"),
        (SDP_OK, False, "no m= line"),
        (SDP_OK + AUDIO * 2, False, None),  # RTP/SAVP + RTP/AVP offers
        (SDP_OK + AUDIO * 3, False, "more than 2 audio streams"),
        (SDP_OK + "m=video 0 RTP/AVP 31\r\n" * 8 + AUDIO, False, "at most 8"),
        ("\x00\xff garbage", False, "no m= line"),
    ],
)
def test_sdp_problem(sdp: str, ipv6: bool, problem: str | None) -> None:
    found = sdp_problem(sdp, ipv6=ipv6)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_message_body() -> None:
    msg = "INVITE sip:800@h SIP/2.0\r\nContent-Type: Application/SDP; x=1\r\n\r\nv=0\r\n"
    assert message_body(msg) == ("application/sdp", "v=0\r\n")
    assert message_body("OPTIONS sip:h SIP/2.0\r\n") == ("", "")


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("<sip:800@192.0.2.5>;tag=abc", "abc"),
        ('"Front; desk" <sip:800@192.0.2.5;tag=not-this>;TAG=x1', "x1"),
        ("<sip:800@192.0.2.5>", None),
        ("<sip:800@192.0.2.5;tag=uri-param>", None),  # a URI parameter is not the header's
        ("sip:800@192.0.2.5;tag=t9 ", "t9"),
        ("sip:800@192.0.2.5", None),
        ("<sip:800@192.0.2.5>;tag=", None),
        ("<sip:800@192.0.2.5>;x=1;tag=k", "k"),
        ("", None),
    ],
)
def test_header_tag(value: str, tag: str | None) -> None:
    assert header_tag(value) == tag
