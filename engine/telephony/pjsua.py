"""`Telephony` on pjsua2: the only module of the server that imports pjsua2.

One dedicated thread owns the pjsua2 `Endpoint` (`threadCnt = 0`, `mainThreadOnly = True`) and
loops on `libHandleEvents(10)`; between two turns it runs the commands that the asyncio side
queued (`answer`, `play`, …), then the work that callbacks deferred (releasing a finished
call, advancing a prompt sequence). No other thread ever calls pjsua2, and pjsua2 objects
(`Call`, `AudioMediaPlayer`) are only referenced from that thread's tables, so they are
created, used and freed on it; `stop` frees them all before `libDestroy()` (the order of
PJSUA2-NOTES.md). Callbacks turn into `engine.telephony.base` events delivered on the asyncio
loop with `call_soon_threadsafe`, in the order pjsua produced them; the adapter makes no
decisions.

Facts of pjsua 2.15.1 this module relies on (measured, see tests/integration):

* An incoming INVITE gets `100 Trying` from pjsua before `onIncomingCall`; nothing else is
  sent until `answer`/`reject`.
* pjsua refuses an INVITE by itself, before any callback, when all of its call slots are busy
  (`486 Busy Here`; only `Endpoint.onRejectedIncomingCall` hears of it afterwards). The
  adapter registers a pjsip module of its own (`engine.telephony.pjsip.door`, priority just
  below pjsua's) that asks admission about every new request first, so every slot carries a
  call, `max_calls` reports them all, and a caller over the limit gets `503` + `Retry-After`.
* DTMF: each key press is reported exactly once (`engine.telephony.dtmf`).
* pjsua handles INFO `application/dtmf-relay` but answers INFO `application/dtmf` with 500;
  the adapter reads such an INFO in `onCallTsxState`, reports the digit and answers 200.
* A player's `onEof2` fires about 20 ms after the file's end; the next file of the sequence
  (`engine.telephony.playback`) starts on the next loop turn. A file that cannot be opened is
  logged and skipped; if none is left, `PlaybackFinished` is reported at once so the call
  flow never waits forever.

pjsua2 does not wrap `pjsua_call_get_max_count`, `pjsua_call_get_count`, `pjsip_dlg_respond`
or pjsip's module API; they are called through ctypes (`engine.telephony.pjsip`), from the
pjsua thread only. The pjsua2 subclasses are in `engine.telephony.shims`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

from engine.admission import AdmissionCounters, RateLimiter
from engine.errors import TelephonyStartError
from engine.flow.events import DtmfMethod
from engine.telephony.base import (
    CallConfirmed,
    CallDisconnected,
    CallId,
    DtmfDigit,
    EventSink,
    IncomingCall,
    PlaybackFinished,
    StrayAck,
    TelephonyEvent,
    TransferStatus,
)
from engine.telephony.dtmf import DtmfFilter, valid_digit
from engine.telephony.endpoint import (
    SipSettings,
    account_config,
    configure_codecs,
    create_transports,
    endpoint_config,
    slots_text,
)
from engine.telephony.guard import clear_last_exception, guard
from engine.telephony.pjsip.build import (
    FRAGILE_NEW_CALL_BURST,
    FRAGILE_NEW_CALL_RATE,
    SMALL_BUILD_SLOTS,
    build_survives_connection_floods,
    enlarge_receive_buffer,
    pick_free_port,
)
from engine.telephony.pjsip.door import Door
from engine.telephony.pjsip.symbols import (
    bind_door_symbols,
    pjsua_lib,
    respond_in_dialog,
    terminate_session,
    transaction_dialog,
)
from engine.telephony.playback import Playback
from engine.telephony.shims import (
    Account,
    Call,
    Endpoint,
    LogWriter,
    Player,
    error_text,
    sip_code_of,
)
from engine.telephony.sipmsg import (
    message_body,
    parse_host_port,
    parse_info_dtmf,
    parse_invite,
    sdp_problem,
)

__all__ = ["RECONCILE_INTERVAL", "PjsuaTelephony", "SipSettings"]

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 2.0  # seconds between sweeps for calls that ended unreported
UNCONFIRMED_END_CODE = 408  # the disconnect code of a call ended before its ACK came


@dataclass(eq=False)
class _CallState:
    """One call's SIP-side state (pjsua thread only): the pjsua2 objects the adapter keeps
    alive for it, and what it must remember between callbacks."""

    key: CallId
    call: Any  # shims.Call
    confirmed: bool = False
    disconnected: bool = False
    ended_by_us: bool = False
    audio: Any = None  # pj.AudioMedia of the active stream
    audio_slot: int = -1
    playback: Playback | None = None
    player: Any = None  # shims.Player while a file of `playback` plays
    dtmf: DtmfFilter = field(default_factory=DtmfFilter)
    created: float = field(default_factory=time.monotonic)
    sip_call_id: str = ""
    dialog: int | None = None  # the pjsip dialog (address; alive until the call disconnects)


class PjsuaTelephony:
    """`engine.telephony.base.Telephony` on pjsua2 (see the module doc string)."""

    def __init__(
        self, settings: SipSettings | None = None, admission: AdmissionCounters | None = None
    ) -> None:
        self.settings = settings or SipSettings()
        # shared with the runtime; without it the door applies no per-source limits
        self._admission = admission or AdmissionCounters(None)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: TelephonyStartError | None = None
        self._stop_requested = threading.Event()
        self._grace = 2.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: EventSink | None = None
        self._bound_port = 0
        self._slots = 0
        self._counts: dict[str, int] = {
            "calls": 0,
            "players": 0,
            "pjsua_calls": 0,
            "rejected_by_pjsua": 0,
            "rejected_full": 0,
        }
        self._rejected_by_pjsua = 0
        self._lib = pjsua_lib()
        self._door: Door | None = None
        self._rejected_full = 0  # of doors of earlier starts
        # pjsua-thread-only state
        self._ep: Any = None
        self._account: Any = None
        self._log_writer: Any = None
        self._transports: list[int] = []
        self._calls: dict[CallId, _CallState] = {}
        # SIP Call-ID → call, for the door's stray ACKs (a flood of them must not scan every
        # call); the latest call of a Call-ID a second INVITE reused
        self._by_sip_call_id: dict[str, CallId] = {}
        self._retired_players: list[Any] = []
        self._deferred: list[Callable[[], None]] = []
        self._last_reconcile = 0.0
        self._serial = 0
        self._token = 0
        self._self_ref = weakref.ref(self)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def bound_port(self) -> int:
        """The SIP port UDP and TCP listen on (the chosen one when `port` was 0)."""
        return self._bound_port

    @property
    def max_calls(self) -> int:
        """Concurrent calls the runtime may answer: every pjsua call slot, at most
        `SipSettings.max_calls`.

        When every slot is busy, the adapter's pjsip module (`Door`) answers a new INVITE
        `503` + `Retry-After` itself, before pjsua would answer `486`; no slot is kept in
        reserve for that. When the build has more slots than `max_calls`, pjsua gets one slot
        above `max_calls`, so that the runtime sees the over-limit call and answers it with its
        own `503`.
        """
        return max(0, min(self._slots, self.settings.max_calls))

    def start(self, loop: asyncio.AbstractEventLoop, sink: EventSink) -> None:
        """Start the pjsua thread; return once SIP listens, or raise `TelephonyStartError`."""
        if self._thread is not None:
            raise RuntimeError("PjsuaTelephony.start called twice")
        self._loop = loop
        self._sink = sink
        self._thread = threading.Thread(target=self._thread_main, name="pjsua", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.settings.start_timeout):
            self._stop_requested.set()
            raise TelephonyStartError("the SIP stack did not start in time")
        if self._start_error is not None:
            self._thread.join(10.0)
            raise self._start_error

    def stop(self, grace: float = 2.0) -> None:
        """Hang up every call, wait up to `grace` s for them to end, then destroy pjsua."""
        thread = self._thread
        if thread is None:
            return
        self._grace = grace
        self._stop_requested.set()
        thread.join(grace + 15.0)
        if thread.is_alive():
            log.error("pjsua thread did not stop in time")

    def debug_counts(self) -> dict[str, int]:
        """Sizes of the adapter's tables as of the pjsua thread's last loop turn."""
        return dict(self._counts)

    # -- commands (any thread; executed on the pjsua thread) -------------------------------

    def answer(self, call_id: CallId) -> None:
        self._submit(lambda: self._do_answer(call_id))

    def reject(
        self, call_id: CallId, sip_code: int, reason: str, *, retry_after: int | None = None
    ) -> None:
        self._submit(lambda: self._do_reject(call_id, sip_code, reason, retry_after))

    def play(self, call_id: CallId, play_id: int, files: Sequence[Path]) -> None:
        paths = [Path(f) for f in files]
        self._submit(lambda: self._do_play(call_id, play_id, paths))

    def stop_playback(self, call_id: CallId) -> None:
        self._submit(lambda: self._do_stop_playback(call_id))

    def transfer(self, call_id: CallId, refer_to: str) -> None:
        self._submit(lambda: self._do_transfer(call_id, refer_to))

    def hangup(self, call_id: CallId) -> None:
        self._submit(lambda: self._do_hangup(call_id))

    def _submit(self, command: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive() or self._stop_requested.is_set():
            log.warning("telephony is not running; command dropped")
            return
        self._commands.put(command)

    # -- the pjsua thread -------------------------------------------------------------------

    def _try_create_endpoint(self) -> str | None:
        """Create the endpoint; on failure return the message (never keep the exception:
        its traceback holds this frame's pjsua2 objects, which must die on this thread)."""
        try:
            self._create_endpoint()
        except TelephonyStartError as exc:
            return str(exc)
        except pj.Error as exc:
            return error_text(exc)
        except BaseException as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _thread_main(self) -> None:
        error = self._try_create_endpoint()
        clear_last_exception()
        if error is not None:
            self._start_error = TelephonyStartError(error)
            self._destroy_endpoint()
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop_requested.is_set():
                self._ep.libHandleEvents(10)
                self._turn()
        except BaseException:
            log.exception("pjsua thread loop failed")
            clear_last_exception()
        finally:
            self._shutdown()

    def _turn(self) -> None:
        """One loop turn after `libHandleEvents`: commands, then deferred work, then counts."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            guard("command", command)
        self._run_deferred()
        self._reconcile()
        self._publish_counts()

    def _run_deferred(self) -> None:
        while self._deferred:
            work, self._deferred = self._deferred, []
            for item in work:
                guard("deferred", item)
        # players retired inside a callback are freed here, outside any pjsua callback
        self._retired_players.clear()

    def _publish_counts(self, *, destroyed: bool = False) -> None:
        players = sum(1 for st in self._calls.values() if st.player is not None)
        pjsua_calls = 0 if destroyed else -1
        if self._lib is not None and not destroyed:
            with contextlib.suppress(Exception):
                pjsua_calls = int(self._lib.pjsua_call_get_count())
        door = self._door
        if door is not None:
            door.log_pending()
        self._counts = {
            "calls": len(self._calls),
            "players": players + len(self._retired_players),
            "pjsua_calls": pjsua_calls,
            "rejected_by_pjsua": self._rejected_by_pjsua,
            "rejected_full": self._rejected_full_total(),
        }

    def _rejected_full_total(self) -> int:
        door = self._door
        return self._rejected_full + (door.rejected_full if door is not None else 0)

    def _create_endpoint(self) -> None:
        s = self.settings
        if not (s.udp or s.tcp):
            raise TelephonyStartError("enable at least one of UDP and TCP")
        if self._lib is not None:
            # keep pjlib quiet until libInit installs our log writer
            self._lib.pj_log_set_level(0)
        port = s.port or pick_free_port(s.host)
        ep = Endpoint(self._self_ref)
        self._ep = ep
        ep.libCreate()
        self._log_writer = LogWriter()
        cfg = endpoint_config(s, self._log_writer)
        ep.libInit(cfg)

        kinds = create_transports(ep, s, port, self._transports)
        self._bound_port = port
        if s.udp:
            enlarge_receive_buffer(s.host, port)
        ep.libStart()
        ep.audDevManager().setNullDev()

        configure_codecs(ep, s.codecs)

        account = Account(self._self_ref)
        account.create(account_config(s, port), True)
        self._account = account

        if self._lib is not None:
            self._slots = int(self._lib.pjsua_call_get_max_count())
        else:  # pragma: no cover - the wheel exports the symbol
            self._slots = min(s.max_calls + 1, SMALL_BUILD_SLOTS)
        limit_text = slots_text(s, self._slots)
        self._start_door(limit_text)
        log.info(
            "SIP listening on %s:%d (%s), %d call slots, up to %d calls: %s",
            s.host,
            port,
            "/".join(kinds),
            self._slots,
            self.max_calls,
            limit_text,
        )

    def _start_door(self, limit_text: str) -> None:
        """Install the door (`engine.telephony.pjsip.door`); without it the caller over the
        limit gets pjsua's `486`, and a build whose ioqueue aborts when full has no pace."""
        if self._lib is None or not bind_door_symbols(self._lib):
            log.warning("the SIP door is unavailable (pjsip symbols): pjsua answers 486 when full")
            return
        if not build_survives_connection_floods():
            self._admission.set_pace(
                RateLimiter(rate=FRAGILE_NEW_CALL_RATE, burst=FRAGILE_NEW_CALL_BURST)
            )
        door = Door(
            self._lib,
            self._admission,
            limit_text=limit_text,
            ipv6=":" in self.settings.host,
            on_stray_ack=self._on_stray_ack,
        )
        try:
            door.register()
        except Exception as exc:
            log.warning("the SIP door is not installed (%s): pjsua answers 486 when full", exc)
            return
        self._door = door

    def _stop_door(self) -> None:
        door, self._door = self._door, None
        if door is None:
            return
        try:
            door.unregister()
        finally:
            self._rejected_full += door.rejected_full

    def _shutdown(self) -> None:
        """Hang up all, drain, drop references, collect, destroy (PJSUA2-NOTES order)."""
        try:
            self._hangup_all()
            deadline = time.monotonic() + max(self._grace, 0.0)
            while time.monotonic() < deadline and any(
                not st.disconnected for st in self._calls.values()
            ):
                self._ep.libHandleEvents(10)
                self._run_deferred()
                self._reconcile()
                self._publish_counts()
            # a few more turns to flush BYE/ACK transactions and deferred releases
            for _ in range(5):
                self._ep.libHandleEvents(10)
                self._run_deferred()
            while True:  # commands queued meanwhile are dropped
                try:
                    self._commands.get_nowait()
                except queue.Empty:
                    break
        except BaseException:
            log.exception("error while hanging up calls at shutdown")
            clear_last_exception()
        finally:
            self._destroy_endpoint()

    def _hangup_all(self) -> None:
        # A helper of its own: a loop variable left in `_shutdown`'s frame would keep a Call
        # alive past libDestroy(), and freeing it then aborts the process.
        for st in list(self._calls.values()):
            if not st.disconnected:
                st.ended_by_us = True
                with contextlib.suppress(Exception):
                    st.call.hangup(pj.CallOpParam(True))

    def _stop_all_players(self) -> None:
        for st in list(self._calls.values()):
            self._stop_player(st)

    def _destroy_endpoint(self) -> None:
        self._stop_all_players()
        self._calls.clear()
        self._by_sip_call_id.clear()
        self._deferred.clear()
        self._retired_players.clear()
        if self._account is not None:
            with contextlib.suppress(Exception):
                self._account.shutdown()
            self._account = None
        clear_last_exception()
        gc.collect()
        try:
            self._stop_door()
        except BaseException:
            log.exception("could not unregister the SIP door")
        if self._ep is not None:
            try:
                self._ep.libDestroy()
            except BaseException:
                log.exception("libDestroy failed")
            self._ep = None
        self._log_writer = None
        self._publish_counts(destroyed=True)

    def _emit(self, event: TelephonyEvent) -> None:
        loop, sink = self._loop, self._sink
        if loop is None or sink is None:
            return
        try:
            loop.call_soon_threadsafe(sink, event)
        except RuntimeError:  # loop closed: nobody is listening any more
            log.debug("event dropped, loop closed: %r", event)

    # -- callbacks (pjsua thread) -------------------------------------------------------------

    def on_rejected_incoming(self, prm: Any) -> None:
        self._rejected_by_pjsua += 1
        log.warning(
            "pjsua refused an incoming call itself: %d %s (from %s)",
            int(prm.statusCode),
            str(prm.reason),
            str(prm.remoteInfo),
        )

    def on_incoming_call(self, account: Any, prm: Any) -> None:
        self._serial += 1
        key = f"c{self._serial}"
        call = Call(self._self_ref, account, int(prm.callId), key)
        self._calls[key] = _CallState(key=key, call=call)
        rdata = prm.rdata
        whole = str(rdata.wholeMsg)
        info = parse_invite(whole)
        self._calls[key].sip_call_id = info.call_id
        self._by_sip_call_id[info.call_id] = key
        host, port = parse_host_port(str(rdata.srcAddress))
        log.debug("call %s: INVITE from %s:%d", key, host, port)
        problem = None
        if self._door is None:  # the door refuses such offers before pjsua; else the runtime
            ctype, body = message_body(whole)
            if ctype == "application/sdp":
                problem = sdp_problem(body, ipv6=":" in self.settings.host)
        self._emit(
            IncomingCall(
                call_id=key,
                request_user=info.request_user,
                from_user=info.from_user,
                from_display=info.from_display,
                source_host=host,
                source_port=port,
                transport=info.transport,
                session_id=info.session_id,
                user_agent=info.user_agent,
                offer_problem=problem,
                sip_call_id=info.call_id,
                from_header=info.from_header,
                contact=info.contact,
            )
        )

    def _on_stray_ack(self, sip_call_id: str, source_host: str | None) -> None:
        """The door consumed an ACK without a To tag (pjsua thread): tell the runtime which
        call it names, if one that is not confirmed yet."""
        st = self._calls.get(self._by_sip_call_id.get(sip_call_id, ""))
        if st is not None and not st.confirmed and not st.disconnected:
            self._emit(StrayAck(call_id=st.key, source_host=source_host))

    def on_call_rx_offer(self, key: CallId, prm: Any) -> None:
        """A re-INVITE or UPDATE offers new media: refuse it (488) when pjmedia could not
        carry it, before pjsua applies it (see `sdp_problem`)."""
        problem = sdp_problem(str(prm.offer.wholeSdp), ipv6=":" in self.settings.host)
        if problem is not None:
            prm.statusCode = 488
            log.warning("call %s: refused a new media offer with 488: %s", key, problem)

    def on_call_state(self, key: CallId, prm: Any) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected:
            return
        ci = st.call.getInfo()
        state = int(ci.state)
        if state == pj.PJSIP_INV_STATE_CONFIRMED and not st.confirmed:
            st.confirmed = True
            # pjsua reports a negotiated stream (onCallMediaState) before CONFIRMED
            self._emit(CallConfirmed(call_id=key, media=st.audio is not None))
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._disconnected(st, int(ci.lastStatusCode), str(ci.lastReason))

    def _disconnected(self, st: _CallState, sip_code: int, reason: str) -> None:
        """The call is over: report it once, release its objects after this turn."""
        key = st.key
        st.disconnected = True
        # the call's bridge port is gone: no stopTransmit (pjsua 2.12 logs PJ_EINVAL)
        st.audio = None
        self._stop_player(st)
        st.playback = None
        self._emit(
            CallDisconnected(
                call_id=key, sip_code=sip_code, reason=reason, by_remote=not st.ended_by_us
            )
        )
        # release the Call object after this callback has returned
        self._deferred.append(lambda: self._release(key))

    def _reconcile(self) -> None:
        """Calls pjsua has ended without a DISCONNECTED state reaching us (seen once under an
        INVITE flood with the PyPI wheel: the hang-up at shutdown then said "INVITE session
        already terminated" and the call stayed active for ever) are reported as ended."""
        now = time.monotonic()
        if now - self._last_reconcile < RECONCILE_INTERVAL:
            return
        self._last_reconcile = now
        for st in list(self._calls.values()):
            if st.disconnected or now - st.created < RECONCILE_INTERVAL:
                continue
            try:
                active = bool(st.call.isActive())
            except pj.Error:
                active = False
            if not active:
                log.warning("call %s: ended in the SIP stack without a state report", st.key)
                self._disconnected(st, 0, "ended in the SIP stack")

    def _release(self, key: CallId) -> None:
        st = self._calls.pop(key, None)
        if st is not None:
            if self._by_sip_call_id.get(st.sip_call_id) == key:
                del self._by_sip_call_id[st.sip_call_id]
            self._stop_player(st)

    def on_call_media_state(self, key: CallId, prm: Any) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected:
            return
        ci = st.call.getInfo()
        audio = None
        for index, media in enumerate(ci.media):
            if int(media.type) == pj.PJMEDIA_TYPE_AUDIO and int(media.status) in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                try:
                    audio = st.call.getAudioMedia(index)
                except pj.Error as exc:
                    log.warning("call %s: no audio after a media change: %s", key, error_text(exc))
                break
        if audio is None:
            return
        slot = int(audio.getPortId())
        changed = slot != st.audio_slot
        st.audio, st.audio_slot = audio, slot
        pb = st.playback
        if pb is None:
            return
        if st.player is None:
            self._start_next_file(st)
        elif changed:
            try:
                st.player.startTransmit(audio)
            except pj.Error as exc:
                log.warning("call %s: cannot reconnect prompt: %s", key, error_text(exc))

    def _dtmf_method(self, method: int) -> DtmfMethod:
        return "sip-info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"

    def on_dtmf_digit(self, key: CallId, prm: Any) -> None:
        # Reported through onDtmfEvent instead (see the module doc string); kept for tracing.
        st = self._calls.get(key)
        if st is not None:
            method = self._dtmf_method(int(prm.method))
            # digits are never logged: they may be a PIN
            log.debug("call %s: onDtmfDigit method=%s", key, method)

    def on_dtmf_event(self, key: CallId, prm: Any) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected:
            return
        digit = str(prm.digit).upper()
        flags = int(prm.flags)
        timestamp = int(prm.timestamp)
        method = self._dtmf_method(int(prm.method))
        log.debug(
            "call %s: onDtmfEvent method=%s flags=%d ts=%d dur=%d",
            key,
            method,
            flags,
            timestamp,
            int(prm.duration),
        )
        if not valid_digit(digit):
            log.warning("call %s: ignoring a DTMF event that is not a key 0-9 * # A-D", key)
            return
        if not st.dtmf.press(digit, method, flags, timestamp):
            return
        self._emit(DtmfDigit(call_id=key, digit=digit, method=method))

    def on_call_tsx_state(self, key: CallId, prm: Any) -> None:
        """INFO `application/dtmf`: pjsua 2.15 handles only `application/dtmf-relay` itself.

        pjsua would answer this INFO `500` (no dialog usage claims it); the digit is taken
        from the request here and the INFO is answered `200` through pjsip's C API.
        """
        event = prm.e
        if int(event.type) != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = event.body.tsxState.tsx
        st = self._calls.get(key)
        if st is not None and st.dialog is None and not st.disconnected:
            # the call's dialog, for ending it before its ACK (`_end_unconfirmed`)
            st.dialog = transaction_dialog(self._lib, tsx)
        if (
            int(tsx.role) != pj.PJSIP_ROLE_UAS
            or str(tsx.method).upper() != "INFO"
            or int(tsx.state) != pj.PJSIP_TSX_STATE_TRYING
            or int(event.body.tsxState.type) != pj.PJSIP_EVENT_RX_MSG
        ):
            return
        rdata = event.body.tsxState.src.rdata
        digit = parse_info_dtmf(str(rdata.wholeMsg))
        if digit is None:
            return
        st = self._calls.get(key)
        if st is None or st.disconnected:
            return
        respond_in_dialog(self._lib, rdata, 200)
        log.debug("call %s: INFO application/dtmf digit", key)
        if valid_digit(digit):
            self._emit(DtmfDigit(call_id=key, digit=digit, method="sip-info"))

    def on_transfer_status(self, key: CallId, prm: Any) -> None:
        st = self._calls.get(key)
        final = bool(prm.finalNotify)
        if final:
            prm.cont = False
        if st is None or st.disconnected:
            return  # CallDisconnected stays the call's last event
        self._emit(
            TransferStatus(
                call_id=key, sip_code=int(prm.statusCode), reason=str(prm.reason), final=final
            )
        )

    def on_player_eof(self, key: CallId, token: int) -> None:
        self._deferred.append(lambda: self._advance_playback(key, token))

    # -- command bodies (pjsua thread) --------------------------------------------------------

    def _live(self, key: CallId, what: str) -> _CallState | None:
        st = self._calls.get(key)
        if st is None or st.disconnected:
            log.debug("%s ignored: call %s is unknown or finished", what, key)
            return None
        return st

    def _do_answer(self, key: CallId) -> None:
        st = self._live(key, "answer")
        if st is None:
            return
        prm = pj.CallOpParam(True)
        prm.statusCode = 200
        try:
            st.call.answer(prm)
        except pj.Error as exc:
            log.warning("call %s: answer failed: %s", key, error_text(exc))

    def _do_reject(self, key: CallId, code: int, reason: str, retry_after: int | None) -> None:
        st = self._live(key, "reject")
        if st is None:
            return
        if st.confirmed:
            log.warning("call %s: reject of an answered call; hanging up instead", key)
        if not 300 <= code <= 699:
            log.warning("call %s: reject code %d is not 3xx-6xx; using 603", key, code)
            code = 603
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        prm.reason = reason
        if retry_after is not None:
            header = pj.SipHeader()
            header.hName, header.hValue = "Retry-After", str(retry_after)
            prm.txOption.headers.append(header)
        st.ended_by_us = True
        try:
            st.call.hangup(prm)
        except pj.Error as exc:
            log.warning("call %s: reject failed: %s", key, error_text(exc))

    def _do_hangup(self, key: CallId) -> None:
        st = self._live(key, "hangup")
        if st is None:
            return
        st.ended_by_us = True
        if not st.confirmed and self._end_unconfirmed(st):
            return
        try:
            st.call.hangup(pj.CallOpParam(True))
        except pj.Error as exc:
            log.warning("call %s: hangup failed: %s", key, error_text(exc))

    def _end_unconfirmed(self, st: _CallState) -> bool:
        """End an answered call whose ACK never came, at once and without a BYE; whether it
        ended. pjsua's hangup would send the BYE only once the 2xx retransmissions end, then
        retransmit it to the silent peer for another 32 s, keeping the call slot all that
        time (measured on the wheel: slots busy for 65 s after four un-ACKed INVITEs)."""
        if self._lib is None or st.dialog is None:
            return False
        status = terminate_session(self._lib, st.dialog, UNCONFIRMED_END_CODE)
        if status != 0:
            log.debug("call %s: could not end the un-ACKed session: pj_status %d", st.key, status)
        return st.disconnected

    def _do_transfer(self, key: CallId, refer_to: str) -> None:
        st = self._live(key, "transfer")
        if st is None:
            return
        try:
            st.call.xfer(refer_to, pj.CallOpParam(True))
        except pj.Error as exc:
            text = error_text(exc)
            log.warning("call %s: REFER to %s failed: %s", key, refer_to, text)
            self._emit(
                TransferStatus(call_id=key, sip_code=sip_code_of(exc), reason=text, final=True)
            )

    def _do_play(self, key: CallId, play_id: int, files: list[Path]) -> None:
        st = self._live(key, "play")
        if st is None:
            return
        self._stop_player(st)
        st.playback = Playback(play_id=play_id, files=files)
        if st.audio is not None:
            self._start_next_file(st)

    def _do_stop_playback(self, key: CallId) -> None:
        st = self._live(key, "stop_playback")
        if st is None:
            return
        self._stop_player(st)
        st.playback = None

    # -- playback helpers (pjsua thread) ------------------------------------------------------

    def _stop_player(self, st: _CallState) -> None:
        player, st.player = st.player, None
        if player is None:
            return
        if st.playback is not None:
            st.playback.stopped()
        if st.audio is not None:
            with contextlib.suppress(Exception):
                player.stopTransmit(st.audio)
        # freed at the end of this loop turn, never inside a pjsua callback
        self._retired_players.append(player)

    def _start_next_file(self, st: _CallState) -> None:
        pb = st.playback
        if pb is None or st.audio is None:
            return
        while (path := pb.next_file()) is not None:
            self._token += 1
            player = Player(self._self_ref, st.key, self._token)
            try:
                player.createPlayer(str(path), pj.PJMEDIA_FILE_NO_LOOP)
                player.startTransmit(st.audio)
            except pj.Error as exc:
                log.error("call %s: cannot play %s: %s", st.key, path, error_text(exc))
                self._retired_players.append(player)
                continue
            st.player = player
            pb.started(self._token)
            return
        st.playback = None
        self._emit(PlaybackFinished(call_id=st.key, play_id=pb.play_id))

    def _advance_playback(self, key: CallId, token: int) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected or st.playback is None:
            return
        if st.player is None or not st.playback.is_current(token):
            return  # EOF of a player that was already stopped
        self._stop_player(st)
        self._start_next_file(st)
