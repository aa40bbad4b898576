"""How the adapter configures pjsua2: `SipSettings` (how the SIP stack listens) and the
builders of the endpoint, transport and account configurations, the codec priorities and the
text saying what limits the call slots. Called on the pjsua thread while the endpoint starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pjsua2 as pj

from engine.errors import TelephonyStartError
from engine.telephony.pjsip.build import IPV6_ONLY, TUNED_BUILD_HINT

DEFAULT_CODECS: tuple[tuple[str, int], ...] = (
    ("PCMU/8000", 250),
    ("PCMA/8000", 240),
    ("G722/16000", 230),
)


@dataclass(frozen=True, kw_only=True)
class SipSettings:
    """How the SIP stack listens. Codecs not listed in `codecs` are disabled (priority 0)."""

    host: str = "127.0.0.1"  # bound and published (Contact, Via, SDP) address
    port: int = 8922  # UDP and TCP share it; 0 = pick a free port for both
    udp: bool = True
    tcp: bool = True
    codecs: tuple[tuple[str, int], ...] = DEFAULT_CODECS  # (pjsua codec id prefix, priority)
    log_level: int = 1  # pjsua log level (0-6) sent to the `engine.telephony.pjsua` logger
    max_calls: int = 1000  # wanted concurrent calls; the build may allow fewer
    rtp_port: int = 4000  # first RTP port tried; pjsua moves up when it is taken
    user_agent: str = ""  # User-Agent of requests and answers; "" sends none
    start_timeout: float = 15.0


def endpoint_config(s: SipSettings, writer: Any) -> Any:
    """The `pj.EpConfig`: pjsua on one thread of ours, 8 kHz mono media, no sound device."""
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    # One slot above max_calls (pjsua caps it at the build's PJSUA_MAX_CALLS): see
    # PjsuaTelephony.max_calls.
    cfg.uaConfig.maxCalls = max(1, s.max_calls + 1)
    cfg.uaConfig.userAgent = s.user_agent
    cfg.logConfig.writer = writer
    cfg.logConfig.level = s.log_level
    cfg.logConfig.consoleLevel = s.log_level
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.channelCount = 1
    cfg.medConfig.noVad = True
    return cfg


def create_transports(ep: Any, s: SipSettings, port: int, ids: list[int]) -> list[str]:
    """Listen for SIP on `port` (UDP and/or TCP); append the transport ids to `ids`, return
    the names. Raises `TelephonyStartError` naming the address when a transport fails."""
    ipv6 = ":" in s.host
    kinds: list[tuple[str, int]] = []
    if s.udp:
        kinds.append(("UDP", pj.PJSIP_TRANSPORT_UDP6 if ipv6 else pj.PJSIP_TRANSPORT_UDP))
    if s.tcp:
        kinds.append(("TCP", pj.PJSIP_TRANSPORT_TCP6 if ipv6 else pj.PJSIP_TRANSPORT_TCP))
    for name, kind in kinds:
        tcfg = pj.TransportConfig()
        tcfg.port = port
        tcfg.boundAddress = s.host
        tcfg.publicAddress = s.host
        try:
            ids.append(int(ep.transportCreate(kind, tcfg)))
        except pj.Error as exc:
            raise TelephonyStartError(
                f"cannot listen for SIP/{name} on {s.host}:{port}: {exc.reason}"
                " (is another server using this port?)"
            ) from None
    return [name for name, _ in kinds]


def account_config(s: SipSettings, port: int) -> Any:
    """The local account every incoming call arrives on (no registration)."""
    ipv6 = ":" in s.host
    acfg = pj.AccountConfig()
    host_part = f"[{s.host}]" if ipv6 else s.host
    acfg.idUri = f"sip:receptionist@{host_part}:{port}"
    acfg.regConfig.registerOnAdd = False
    acfg.mediaConfig.transportConfig.boundAddress = s.host
    acfg.mediaConfig.transportConfig.publicAddress = s.host
    acfg.mediaConfig.transportConfig.port = s.rtp_port
    if ipv6:
        acfg.mediaConfig.ipv6Use = IPV6_ONLY
    return acfg


def configure_codecs(ep: Any, codecs: tuple[tuple[str, int], ...]) -> None:
    """Give each codec the priority of the first prefix in `codecs` it matches; disable (0)
    the others."""
    wanted = [(cid.lower(), prio) for cid, prio in codecs]
    for info in ep.codecEnum2():
        codec_id = str(info.codecId)
        priority = 0
        for prefix, prio in wanted:
            if codec_id.lower().startswith(prefix):
                priority = prio
                break
        ep.codecSetPriority(codec_id, priority)


def slots_text(s: SipSettings, slots: int) -> str:
    """What limits the calls (for the log), and how to raise it."""
    if slots < s.max_calls + 1:  # pjsua capped maxCalls at PJSUA_MAX_CALLS
        return (
            f"this build of pjsua2 carries at most {slots} concurrent calls "
            f"(PJSUA_MAX_CALLS); {TUNED_BUILD_HINT}"
        )
    return (
        f"max_calls = {s.max_calls} (pjsua has {slots} slots: one more, so that the "
        "runtime answers an over-limit call with its own 503)"
    )
