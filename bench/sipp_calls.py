"""The sipp side of the load benchmark: the UAC scenario, the RFC 4733 digit stream, and the
readers of sipp's result files.

Each sipp call: INVITE (RTD 1 starts) → 200 (RTD 1 ends) → ACK → listens to the greeting for
`listen_ms` → plays the digits as RFC 4733 events, payload type 96 (RTD 2 starts when the
stream starts) → REFER from the engine (RTD 2 ends) → 202 → NOTIFY `100 Trying` → NOTIFY
`200 OK` (terminated) → the engine's BYE → 200. The scenario plays the transferee: it accepts
the REFER and reports a successful transfer itself instead of calling the Refer-To target, so
the engine does everything it does for a real blind transfer (REFER, NOTIFY handling, BYE) and
sipp counts the REFERs. A rejected INVITE (any code in `REJECT_CODES`) is ACKed and counted by
code; a call without a REFER in time, or without the engine's BYE, hangs up itself and is
counted as such.

Standard library only; `load.py` drives it.
"""

from __future__ import annotations

import csv
import struct
from dataclasses import dataclass, field
from pathlib import Path

REJECT_CODES = (400, 403, 404, 408, 480, 486, 488, 500, 502, 503, 603)
DTMF_PT = 96  # sipp's own DTMF uses 96 too; the SDP offer maps it to telephone-event
DIGIT_MS = 160  # tone length of each digit
GAP_MS = 100  # silence between digits
EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13}
EVENT_CODES |= {"C": 14, "D": 15}


def digit_onsets_ms(digits: str) -> list[int]:
    """When each digit's first RTP packet is sent, relative to the stream's first packet."""
    return [i * (DIGIT_MS + GAP_MS) for i in range(len(digits))]


def write_dtmf_pcap(path: Path, digits: str, ssrc: int = 0x5652454E) -> None:
    """A pcap (Ethernet/IPv4/UDP) of RFC 4733 events for `digits`, one RTP stream.

    Each digit: packets every 20 ms with growing duration, the first with the marker bit,
    then three end packets (E bit); one sequence and one timestamp base for the whole
    string (a sipp call replays it once: distinct events, never the same one twice).
    """
    packets: list[tuple[float, bytes]] = []
    seq = 1000
    base_ts = 160000
    for onset, digit in zip(digit_onsets_ms(digits), digits, strict=True):
        event = EVENT_CODES[digit.upper()]
        timestamp = base_ts + onset * 8
        steps = DIGIT_MS // 20
        for k in range(steps):
            duration = (k + 1) * 160
            packets.append(
                (onset + k * 20, _rtp(seq, timestamp, ssrc, event, False, duration, k == 0))
            )
            seq += 1
        for _ in range(3):
            packets.append(
                (onset + DIGIT_MS, _rtp(seq, timestamp, ssrc, event, True, DIGIT_MS * 8, False))
            )
            seq += 1
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
        for at_ms, rtp in packets:
            frame = _ethernet_ipv4_udp(rtp)
            sec, usec = 1_700_000_000 + int(at_ms // 1000), int(at_ms % 1000) * 1000
            fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            fh.write(frame)


def _rtp(seq: int, ts: int, ssrc: int, event: int, end: bool, duration: int, marker: bool) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | DTMF_PT, seq & 0xFFFF, ts, ssrc)
    volume = 10
    payload = struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)
    return header + payload


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ethernet_ipv4_udp(payload: bytes) -> bytes:
    src, dst = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    udp = struct.pack("!HHHH", 6000, 6002, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + udp


# ---------------------------------------------------------------------------------------------
# the scenario


@dataclass
class Scenario:
    xml: str
    # scenario element index (as sipp numbers them in its counts file) of each outcome
    index: dict[str, int] = field(default_factory=dict)


_HDR_FROM = (
    'From: "bench" <sip:bench[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
)
_HDR_TO_INVITE = "To: <sip:[service]@[remote_ip]:[remote_port]>"
_HDR_TO = "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]"
_CONTACT = "Contact: <sip:bench[call_number]@[local_ip]:[local_port]>"


def build_scenario(
    *, listen_ms: int, pcap: Path, refer_timeout_ms: int, bye_timeout_ms: int
) -> Scenario:
    """The UAC scenario (see the module doc string) and where each outcome sits in it."""
    elements: list[tuple[str | None, str]] = []  # (label before it, element xml)
    index: dict[str, int] = {}

    def add(xml: str, *, key: str | None = None, label: str | None = None) -> int:
        at = len(elements)
        elements.append((label, xml))
        if key:
            index[key] = at
        return at

    add(
        f"""<send retrans="500" start_rtd="1"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_HDR_FROM}
{_HDR_TO_INVITE}
Call-ID: [call_id]
CSeq: 1 INVITE
{_CONTACT}
Max-Forwards: 70
User-Agent: vr-engine-bench
Subject: vr-engine load benchmark
Content-Type: application/sdp
Content-Length: [len]

v=0
o=bench 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 {DTMF_PT}
a=rtpmap:0 PCMU/8000
a=rtpmap:{DTMF_PT} telephone-event/8000
a=fmtp:{DTMF_PT} 0-16
a=ptime:20
a=sendrecv
]]></send>""",
        key="invite",
    )
    for code in (100, 180, 183):
        add(f'<recv response="{code}" optional="true"/>')
    for code in REJECT_CODES:
        add(f'<recv response="{code}" optional="true" next="rejected"/>', key=f"rejected_{code}")
    add(
        """<recv response="200" rtd="1"><action>
<ereg regexp="sip:[^&gt;]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>
</action></recv>""",
        key="answered",
    )
    add(
        f"""<send><![CDATA[
ACK [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_HDR_FROM}
{_HDR_TO}
Call-ID: [call_id]
CSeq: 1 ACK
{_CONTACT}
Max-Forwards: 70
Content-Length: 0
]]></send>"""
    )
    add(f'<pause milliseconds="{listen_ms}"/>')
    add(
        f"""<nop start_rtd="2"><action><exec play_pcap_audio="{pcap}"/></action></nop>""",
        key="digits",
    )
    add(
        f'<recv request="REFER" rtd="2" timeout="{refer_timeout_ms}" ontimeout="norefer"/>',
        key="refer",
    )
    add(
        f"""<send><![CDATA[
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
{_CONTACT}
Content-Length: 0
]]></send>"""
    )
    for cseq, (frag, state) in enumerate(
        (
            ("SIP/2.0 100 Trying", "active;expires=60"),
            ("SIP/2.0 200 OK", "terminated;reason=noresource"),
        ),
        start=2,
    ):
        add(
            f"""<send><![CDATA[
NOTIFY [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_HDR_FROM}
{_HDR_TO}
Call-ID: [call_id]
CSeq: {cseq} NOTIFY
{_CONTACT}
Max-Forwards: 70
Event: refer
Subscription-State: {state}
Content-Type: message/sipfrag;version=2.0
Content-Length: [len]

{frag}
]]></send>"""
        )
        add('<recv response="200"/>')
    add(
        f'<recv request="BYE" timeout="{bye_timeout_ms}" ontimeout="nobye"/>',
        key="engine_bye",
    )
    add(
        """<send next="end"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>""",
        key="completed",
    )
    # rejected: ACK the final response (same branch as the INVITE, element 0)
    at = len(elements)
    add(
        f"""<send next="end"><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-{at}]
{_HDR_FROM}
{_HDR_TO}
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>""",
        label="rejected",
        key="rejected_ack",
    )
    for label, cseq in (("norefer", 2), ("nobye", 4)):
        add(
            f"""<send><![CDATA[
BYE [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{_HDR_FROM}
{_HDR_TO}
Call-ID: [call_id]
CSeq: {cseq} BYE
{_CONTACT}
Max-Forwards: 70
Content-Length: 0
]]></send>""",
            label=label,
            key=f"{label}_bye",
        )
        add('<recv response="200" timeout="5000" next="end"/>')
    body = []
    for label, xml in elements:
        if label:
            body.append(f'<label id="{label}"/>')
        body.append(xml)
    body.append('<label id="end"/>')
    body.append('<ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000"/>')
    xml = (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<scenario name="vr-engine bench: greeting, RFC 4733 digits, REFER">\n'
        + "\n".join(body)
        + "\n</scenario>\n"
    )
    return Scenario(xml=xml, index=index)


# ---------------------------------------------------------------------------------------------
# sipp's result files


def read_counts(path: Path) -> dict[int, dict[str, int]]:
    """`-trace_counts`: the last line, per scenario element index → {column: value}."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, last = rows[0], rows[-1]
    out: dict[int, dict[str, int]] = {}
    for name, value in zip(header, last, strict=False):
        head, _, rest = name.partition("_")
        if not head.isdigit() or not value.strip().lstrip("-").isdigit():
            continue
        # e.g. "0_INVITE_Sent", "15_200_Recv", "19_REFER_Timeout" (0-based element index)
        idx = int(head)
        kind = rest.rsplit("_", 1)[-1]
        out.setdefault(idx, {})[kind] = out.get(idx, {}).get(kind, 0) + int(value)
    return out


def read_rtt(path: Path) -> dict[int, list[float]]:
    """`-trace_rtt`: every response time (ms), by RTD number."""
    values: dict[int, list[float]] = {}
    if not path.exists():
        return values
    with path.open() as fh:
        for line in fh:
            parts = line.strip().split(";")
            if len(parts) < 3 or not parts[2].strip().isdigit():
                continue
            try:
                values.setdefault(int(parts[2]), []).append(float(parts[1]))
            except ValueError:
                continue
    return values


def read_stat_last(path: Path) -> dict[str, str]:
    """`-trace_stat`: the last line as {column: value}."""
    with path.open(newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter=";") if r]
    return dict(zip(rows[0], rows[-1], strict=False))
