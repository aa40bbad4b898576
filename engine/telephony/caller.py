"""A test SIP peer on pjsua2, run as its own process (one pjsua2 Endpoint per process).

Caller mode dials a receptionist, sends DTMF at given times, records what it hears and
prints one JSON summary line on stdout when it ends::

    python -m engine.telephony.caller --target sip:800@127.0.0.1:8922 \\
        --digits "1@2.0,1@2.3" --dtmf-method rfc4733 --record out.wav --duration 10

Listen mode is a transfer target: it answers (or rejects) each INVITE and prints one JSON
line per INVITE, until `--duration` ends or it is killed::

    python -m engine.telephony.caller --listen --local-port 5070 --answer-with 486

Everything runs on the main thread, which owns the pjsua2 Endpoint and loops on
`libHandleEvents`. Logs go to stderr; stdout carries only JSON lines. `build_parser()` and
`main(argv)` are the entry points for a `vr-engine dial` subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pjsua2 as pj

from engine.telephony.endpoint import SipSettings, endpoint_config
from engine.telephony.guard import clear_last_exception, guard
from engine.telephony.pjsip.build import IPV6_ONLY, pick_free_port
from engine.telephony.sipmsg import parse_invite

log = logging.getLogger(__name__)


def build_parser(prog: str = "python -m engine.telephony.caller") -> argparse.ArgumentParser:
    """Arguments of the test caller (`vr-engine dial` passes its own `prog`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Dial a SIP target, send DTMF, record what is heard; or act as a "
        "transfer target with --listen.",
    )
    p.add_argument("--target", help="SIP URI to call, e.g. sip:800@127.0.0.1:8922")
    p.add_argument(
        "--digits",
        default="",
        help='comma-separated digits, each optionally "@seconds" after the call is confirmed '
        '(e.g. "1@2.0,1@2.3"); digits without a time follow 0.6 s after the previous one',
    )
    p.add_argument(
        "--dtmf-method",
        choices=("rfc4733", "sip-info", "sip-info-dtmf"),
        default="rfc4733",
        help="sip-info sends INFO application/dtmf-relay, sip-info-dtmf INFO application/dtmf",
    )
    p.add_argument(
        "--digits-on-signal",
        default="",
        help="digits to send (0.3 s apart) each time the process gets SIGUSR1, e.g. when a "
        "test has finished what it does during the call",
    )
    p.add_argument("--dtmf-duration", type=int, default=160, help="tone length in ms")
    p.add_argument("--record", type=Path, help="write what the caller hears to this 8 kHz WAV")
    p.add_argument("--duration", type=float, default=10.0, help="hard limit on run time (s)")
    follow = p.add_mutually_exclusive_group()
    follow.add_argument(
        "--follow-refer",
        dest="follow_refer",
        action="store_true",
        default=True,
        help="on REFER, call the Refer-To target (default)",
    )
    follow.add_argument(
        "--no-follow-refer",
        dest="follow_refer",
        action="store_false",
        help="on REFER, accept it but do not call the target (see --refer-response)",
    )
    p.add_argument(
        "--refer-response",
        type=int,
        default=202,
        help="status to answer a REFER with (non-2xx rejects it)",
    )
    p.add_argument(
        "--transfer-hold",
        type=float,
        default=0.5,
        help="hang up the transferred call this many seconds after it is answered",
    )
    p.add_argument("--host", default="127.0.0.1", help="local address to bind and publish")
    p.add_argument("--local-port", type=int, default=0, help="local SIP port (0 = any)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--hangup-after", type=float, help="hang up S seconds after CONFIRMED")
    p.add_argument("--from-user", default="1001", help="user part of From")
    p.add_argument("--from-display", default="", help="display name in From")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME: VALUE",
        help="extra INVITE header (repeatable), e.g. 'X-Session-ID: abc'",
    )
    p.add_argument("--listen", action="store_true", help="act as a transfer target")
    p.add_argument("--answer-with", type=int, default=200, help="listen mode: final status")
    p.add_argument("--answer-delay", type=float, default=0.0, help="listen mode: delay (s)")
    p.add_argument("--log-level", type=int, default=1, help="pjsua log level 0-6 (stderr)")
    return p


# ---------------------------------------------------------------------------------------------


def parse_digits(spec: str) -> list[tuple[str, float]]:
    """`"1@2.0,1@2.3,#"` → [("1", 2.0), ("1", 2.3), ("#", 2.9)]."""
    out: list[tuple[str, float]] = []
    at = 0.4
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        digit, sep, when = item.partition("@")
        digit = digit.strip()
        if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {digit!r}")
        at = float(when) if sep else (at + 0.6 if out else 1.0)
        out.append((digit.upper(), at))
    return out


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def heard_seconds(path: Path, threshold: float = 0.01) -> float:
    """Seconds of 20 ms frames whose RMS exceeds `threshold` (full scale = 1.0)."""
    try:
        import numpy as np
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        log.warning("cannot read recording %s: %s", path, exc)
        return 0.0
    mono = data[:, 0]
    frame = max(int(rate) // 50, 1)
    n = len(mono) // frame
    if n == 0:
        return 0.0
    frames = mono[: n * frame].reshape(n, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return round(float(np.count_nonzero(rms > threshold)) * frame / float(rate), 3)


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    def write(self, entry: Any) -> None:
        with contextlib.suppress(BaseException):
            sys.stderr.write(str(entry.msg).rstrip() + "\n")


# ---------------------------------------------------------------------------------------------


class _PeerCall(pj.Call):  # type: ignore[misc]
    def __init__(self, app: Peer, account: Any, role: str, call_id: int = -1) -> None:
        super().__init__(account, call_id)
        self.app = app
        self.role = role  # "main", "transfer" or "incoming"
        self.confirmed_at: float | None = None
        self.disconnected = False
        self.audio: Any = None
        self.codes: list[int] = []

    def onCallState(self, prm: Any) -> None:
        guard("onCallState", lambda: self.app.on_call_state(self))

    def onCallMediaState(self, prm: Any) -> None:
        guard("onCallMediaState", lambda: self.app.on_media_state(self))

    def onCallTransferRequest(self, prm: Any) -> None:
        guard("onCallTransferRequest", lambda: self.app.on_transfer_request(self, prm))


class _PeerAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, app: Peer) -> None:
        super().__init__()
        self.app = app

    def onIncomingCall(self, prm: Any) -> None:
        guard("onIncomingCall", lambda: self.app.on_incoming(prm))


@dataclass
class _Summary:
    answered: bool = False
    invite_status: int = 0
    confirmed_at: float | None = None
    heard_seconds: float = 0.0
    refer_to: str | None = None
    transfer_notify_codes: list[int] = field(default_factory=list)
    transfer_call_status: int | None = None
    disconnect_code: int = 0
    disconnect_reason: str = ""
    digits_sent: list[dict[str, Any]] = field(default_factory=list)


class Peer:
    """One process's pjsua2 endpoint acting as caller or as listener (transfer target)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.stop_flag = False
        self.signalled = False  # SIGUSR1: send --digits-on-signal
        self.ep: Any = None
        self.account: Any = None
        self.writer: Any = None
        self.calls: list[_PeerCall] = []
        self.main: _PeerCall | None = None
        self.recorder: Any = None
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.deferred: list[Callable[[], None]] = []
        self.summary = _Summary()
        self.port = 0
        self.record_path: Path | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    # -- setup / teardown ---------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        a = self.args
        with contextlib.suppress(Exception):
            ctypes.CDLL(pj._pjsua2.__file__).pj_log_set_level(ctypes.c_int(0))
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        self.writer = _LogWriter()
        settings = SipSettings(
            max_calls=31, user_agent="vr-engine-test-caller", log_level=a.log_level
        )
        self.ep.libInit(endpoint_config(settings, self.writer))

        if a.listen:
            self.port = a.local_port or pick_free_port(a.host)
            udp_port = tcp_port = self.port
        else:
            udp_port, tcp_port = a.local_port, 0
        ipv6 = ":" in a.host
        udp_kind = pj.PJSIP_TRANSPORT_UDP6 if ipv6 else pj.PJSIP_TRANSPORT_UDP
        tcp_kind = pj.PJSIP_TRANSPORT_TCP6 if ipv6 else pj.PJSIP_TRANSPORT_TCP
        for kind, port in ((udp_kind, udp_port), (tcp_kind, tcp_port)):
            tcfg = pj.TransportConfig()
            tcfg.port = port
            tcfg.boundAddress = a.host
            tcfg.publicAddress = a.host
            tid = self.ep.transportCreate(kind, tcfg)
            if kind == udp_kind:
                self.port = int(self.ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for info in self.ep.codecEnum2():
            cid = str(info.codecId)
            prio = {"PCMU": 250, "PCMA": 240, "G722": 230}.get(cid.split("/")[0], 0)
            self.ep.codecSetPriority(cid, prio)

        acfg = pj.AccountConfig()
        display = f'"{a.from_display}" ' if a.from_display else ""
        host_part = f"[{a.host}]" if ipv6 else a.host
        acfg.idUri = f"{display}<sip:{a.from_user}@{host_part}:{self.port}>"
        acfg.mediaConfig.transportConfig.boundAddress = a.host
        acfg.mediaConfig.transportConfig.publicAddress = a.host
        acfg.mediaConfig.transportConfig.port = 0
        if ipv6:
            acfg.mediaConfig.ipv6Use = IPV6_ONLY
        self.account = _PeerAccount(self)
        self.account.create(acfg, True)

    def shutdown(self) -> None:
        try:
            self.hangup_main()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and any(not c.disconnected for c in self.calls):
                self.ep.libHandleEvents(10)
                self._run_deferred()
            for _ in range(5):
                self.ep.libHandleEvents(10)
        except BaseException:
            log.exception("error while hanging up")
            clear_last_exception()
        self._close_recorder()
        self.calls.clear()
        self.main = None
        self.deferred.clear()
        self.timers.clear()
        if self.account is not None:
            with contextlib.suppress(Exception):
                self.account.shutdown()
            self.account = None
        clear_last_exception()
        gc.collect()
        with contextlib.suppress(Exception):
            self.ep.libDestroy()
        self.ep = None

    def _close_recorder(self) -> None:
        if self.recorder is None:
            return
        if self.main is not None and self.main.audio is not None:
            with contextlib.suppress(Exception):
                self.main.audio.stopTransmit(self.recorder)
        self.recorder = None  # the WAV header is completed when the recorder is destroyed

    # -- main loop ----------------------------------------------------------------------------

    def at(self, delay: float, func: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, func))

    def _run_deferred(self) -> None:
        while self.deferred:
            work, self.deferred = self.deferred, []
            for item in work:
                guard("deferred", item)

    def _run_timers(self) -> None:
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        if due:
            self.timers = [t for t in self.timers if t[0] > now]
            for _, func in sorted(due, key=lambda t: t[0]):
                guard("timer", func)

    def loop(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.args.duration
        while not self.stop_flag and time.monotonic() < deadline and not done():
            self.ep.libHandleEvents(10)
            if self.signalled:
                self.signalled = False
                for i, digit in enumerate(self.args.digits_on_signal):
                    self.at(0.3 * i, lambda d=digit: self.send_digit(d))  # type: ignore[misc]
            self._run_timers()
            self._run_deferred()

    # -- caller mode --------------------------------------------------------------------------

    def dial(self) -> None:
        a = self.args
        target = str(a.target)
        if a.transport == "tcp" and "transport=" not in target.lower():
            target += ";transport=tcp"
        if a.record is not None:
            self.record_path = Path(a.record)
        else:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="vr-caller-")
            self.record_path = Path(self._tmpdir.name) / "heard.wav"
        call = _PeerCall(self, self.account, "main")
        self.calls.append(call)
        self.main = call
        prm = pj.CallOpParam(True)
        for raw in a.header:
            name, sep, value = str(raw).partition(":")
            if not sep:
                raise ValueError(f"--header needs NAME: VALUE, got {raw!r}")
            hdr = pj.SipHeader()
            hdr.hName = name.strip()
            hdr.hValue = value.strip()
            prm.txOption.headers.append(hdr)
        call.makeCall(target, prm)

    def caller_done(self) -> bool:
        return bool(self.calls) and all(c.disconnected for c in self.calls)

    def send_digit(self, digit: str) -> None:
        call = self.main
        if call is None or call.disconnected:
            return
        if self.args.dtmf_method == "sip-info-dtmf":
            req = pj.CallSendRequestParam()
            req.method = "INFO"
            req.txOption.contentType = "application/dtmf"
            req.txOption.msgBody = digit
            call.sendRequest(req)
            self.summary.digits_sent.append({"digit": digit, "at": round(self.now(), 3)})
            return
        prm = pj.CallSendDtmfParam()
        prm.digits = digit
        prm.duration = self.args.dtmf_duration
        prm.method = (
            pj.PJSUA_DTMF_METHOD_SIP_INFO
            if self.args.dtmf_method == "sip-info"
            else pj.PJSUA_DTMF_METHOD_RFC2833
        )
        call.sendDtmf(prm)
        self.summary.digits_sent.append({"digit": digit, "at": round(self.now(), 3)})

    def hangup_main(self) -> None:
        """Hang up every call (no pjsua2 object may outlive this frame: see shutdown)."""
        for call in self.calls:
            self._hangup(call)

    def on_call_state(self, call: _PeerCall) -> None:
        ci = call.getInfo()
        state, code = int(ci.state), int(ci.lastStatusCode)
        if call.role == "unfollowed":
            if state == pj.PJSIP_INV_STATE_DISCONNECTED:
                call.disconnected = True
                self.summary.transfer_call_status = code
            else:
                self._hangup(call)
            return
        if call.role == "transfer" and code and (not call.codes or call.codes[-1] != code):
            call.codes.append(code)
            self.summary.transfer_notify_codes.append(code)
        if state == pj.PJSIP_INV_STATE_CONFIRMED and call.confirmed_at is None:
            call.confirmed_at = self.now()
            if call.role == "main":
                self.summary.answered = True
                self.summary.invite_status = code or 200
                self.summary.confirmed_at = round(call.confirmed_at, 3)
                for digit, when in parse_digits(self.args.digits):
                    self.at(when, lambda d=digit: self.send_digit(d))  # type: ignore[misc]
                if self.args.hangup_after is not None:
                    self.at(float(self.args.hangup_after), self.hangup_main)
            elif call.role == "transfer":
                self.at(float(self.args.transfer_hold), lambda: self._hangup(call))
            elif call.role == "incoming":
                emit_json({"event": "confirmed", "at": round(self.now(), 3)})
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED and not call.disconnected:
            call.disconnected = True
            if call.role == "main":
                if not self.summary.answered:
                    self.summary.invite_status = code
                self.summary.disconnect_code = code
                self.summary.disconnect_reason = str(ci.lastReason)
                self._close_recorder()
                call.audio = None
            elif call.role == "transfer":
                self.summary.transfer_call_status = code
            elif call.role == "incoming":
                emit_json({"event": "disconnected", "code": code, "at": round(self.now(), 3)})
                self.deferred.append(lambda: self._forget(call))

    def _forget(self, call: _PeerCall) -> None:
        with contextlib.suppress(ValueError):
            self.calls.remove(call)

    def _hangup(self, call: _PeerCall) -> None:
        if not call.disconnected:
            with contextlib.suppress(Exception):
                call.hangup(pj.CallOpParam(True))

    def on_media_state(self, call: _PeerCall) -> None:
        ci = call.getInfo()
        for index, media in enumerate(ci.media):
            if int(media.type) == pj.PJMEDIA_TYPE_AUDIO and int(media.status) in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                call.audio = call.getAudioMedia(index)
                break
        if call.role != "main" or call.audio is None or self.record_path is None:
            return
        if self.recorder is None:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(str(self.record_path))
        call.audio.startTransmit(self.recorder)

    def on_transfer_request(self, call: _PeerCall, prm: Any) -> None:
        a = self.args
        self.summary.refer_to = str(prm.dstUri)
        emit_json({"event": "refer", "refer_to": self.summary.refer_to, "at": self.now()})
        prm.statusCode = a.refer_response
        if not 200 <= a.refer_response < 300:
            return
        # pjsua places the new call whenever it accepts a REFER, and pjsua2 crashes
        # (measured: SIGSEGV) unless the application hands it a Call object for it.
        new = _PeerCall(self, self.account, "transfer" if a.follow_refer else "unfollowed")
        self.calls.append(new)
        prm.newCall = new
        # --no-follow-refer: that call is hung up (CANCEL) on its first state change.

    # -- listen mode --------------------------------------------------------------------------

    def on_incoming(self, prm: Any) -> None:
        call = _PeerCall(self, self.account, "incoming", int(prm.callId))
        self.calls.append(call)
        info = parse_invite(str(prm.rdata.wholeMsg))
        code = int(self.args.answer_with)
        emit_json(
            {
                "event": "invite",
                "request_user": info.request_user,
                "from_user": info.from_user,
                "source": str(prm.rdata.srcAddress),
                "answer_with": code,
                "at": round(self.now(), 3),
            }
        )
        self.at(float(self.args.answer_delay), lambda: self._answer(call, code))

    def _answer(self, call: _PeerCall, code: int) -> None:
        if call.disconnected:
            return
        op = pj.CallOpParam(True)
        op.statusCode = code
        if 200 <= code < 300:
            call.answer(op)
        else:
            call.hangup(op)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="caller %(levelname)s %(message)s"
    )
    if not args.listen and not args.target:
        parser.error("--target is required unless --listen is given")
    try:
        parse_digits(args.digits)
        parse_digits(",".join(args.digits_on_signal))
    except ValueError as exc:
        build_parser().error(str(exc))

    peer = Peer(args)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        peer.stop_flag = True

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        peer.signalled = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        peer.start()
    except pj.Error as exc:
        log.error("cannot start SIP: %s", exc.info() if hasattr(exc, "info") else exc)
        peer.shutdown() if peer.ep is not None else None
        return 2
    if args.listen:
        emit_json({"event": "listening", "port": peer.port, "pid": os.getpid()})
        peer.loop(lambda: False)
        peer.shutdown()
        return 0
    try:
        peer.dial()
    except (pj.Error, ValueError) as exc:
        log.error("cannot dial %s: %s", args.target, getattr(exc, "reason", exc))
        peer.summary.invite_status = 0
    peer.loop(peer.caller_done)
    peer.shutdown()
    summary = peer.summary
    if peer.record_path is not None and peer.record_path.exists():
        summary.heard_seconds = heard_seconds(peer.record_path)
    if peer._tmpdir is not None:
        peer._tmpdir.cleanup()
    emit_json({"event": "summary", **summary.__dict__})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
