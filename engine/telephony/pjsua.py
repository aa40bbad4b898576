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
  adapter registers a pjsip module of its own (`_FullGate`, priority just below pjsua's) that
  answers such an INVITE `503` with `Retry-After` first, so every slot carries a call and
  `max_calls` reports them all.
* DTMF: an RFC 4733 key press arrives once in `onDtmfDigit` and one or more times in
  `onDtmfEvent` (first indication with no flag, then `IS_UPDATE` updates, then
  `IS_UPDATE|IS_END`); a SIP INFO key press arrives once in each. The adapter reports from
  `onDtmfEvent` only and skips indications flagged `IS_UPDATE` (plus an RTP-timestamp guard),
  so each press is reported exactly once.
* pjsua handles INFO `application/dtmf-relay` but answers INFO `application/dtmf` with 500;
  the adapter reads such an INFO in `onCallTsxState`, reports the digit and answers 200.
* A player's `onEof2` fires about 20 ms after the file's end; the next file starts on the next
  loop turn. A file that cannot be opened is logged and skipped; if none is left,
  `PlaybackFinished` is reported at once so the call flow never waits forever.

pjsua2 does not wrap `pjsua_call_get_max_count`, `pjsua_call_get_count`, `pjsip_dlg_respond`
or pjsip's module API; they are called through ctypes on the loaded `_pjsua2` module, from the
pjsua thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import ipaddress
import logging
import queue
import socket
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj
import psutil

from engine.errors import TelephonyStartError
from engine.flow.abuse import RateLimiter, is_scanner
from engine.flow.events import DtmfMethod
from engine.source_limits import SourceLimits
from engine.telephony.base import (
    CallConfirmed,
    CallDisconnected,
    CallId,
    DtmfDigit,
    EventSink,
    IncomingCall,
    PlaybackFinished,
    TelephonyEvent,
    TransferStatus,
)
from engine.telephony.sipmsg import (
    message_body,
    parse_host_port,
    parse_info_dtmf,
    parse_invite,
    sdp_problem,
    split_headers,
)

log = logging.getLogger(__name__)

# pjmedia_stream_dtmf_event_flags (pjmedia/stream.h); pjsua2's SWIG module does not export them.
DTMF_IS_UPDATE = 1 << 0
DTMF_IS_END = 1 << 1

# pj_status_t of a SIP status code: PJSIP_ERRNO_FROM_SIP_STATUS(code) = 170000 + code.
_PJSIP_ERRNO_START = 170000

_VALID_DIGITS = frozenset("0123456789*#ABCD")

DEFAULT_CODECS: tuple[tuple[str, int], ...] = (
    ("PCMU/8000", 250),
    ("PCMA/8000", 240),
    ("G722/16000", 230),
)


SMALL_BUILD_SLOTS = 4  # the PyPI wheel's PJSUA_MAX_CALLS

# pjsua 2.13+ names it PJSUA_IPV6_ENABLED_USE_IPV6_ONLY; 2.12 (Debian's ring tree, a tuned
# build's development source) has only PJSUA_IPV6_ENABLED, which means the same there.
IPV6_ONLY = getattr(pj, "PJSUA_IPV6_ENABLED_USE_IPV6_ONLY", None) or pj.PJSUA_IPV6_ENABLED


def build_has_ipv6() -> bool:
    """Whether this pjsua2 is compiled with IPv6: the tuned build says so in its marker
    (`pjsua2.BUILD_INFO`, build/pjsua2); the PyPI wheel has no marker and no working IPv6."""
    info = getattr(pj, "BUILD_INFO", None)
    return bool(isinstance(info, dict) and info.get("limits", {}).get("PJ_HAS_IPV6"))


RECONCILE_INTERVAL = 2.0  # seconds between sweeps for calls that ended unreported
SIP_UDP_RECEIVE_BUFFER = 4 << 20  # bytes asked for; the kernel caps it at net.core.rmem_max


def enlarge_receive_buffer(host: str, port: int) -> int:
    """Ask for a larger receive buffer on the SIP UDP socket (pjsip leaves the kernel's
    default, ~208 KiB): on loopback a 60 KB datagram takes ~128 KiB of it, so a burst of large
    messages made the kernel drop everything behind them, small INVITEs included (measured:
    90 % of 400 hostile datagrams a second dropped while the engine idled at 3 % CPU). Returns
    the size the kernel granted (0 if the socket was not found)."""
    try:
        for conn in psutil.Process().net_connections(kind="udp"):
            if conn.laddr and conn.laddr.port == port and conn.laddr.ip == host.strip("[]"):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.fromfd(conn.fd, family, socket.SOCK_DGRAM) as sock:  # a dup
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIP_UDP_RECEIVE_BUFFER)
                    granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
                log.debug("SIP UDP receive buffer: %d bytes", granted)
                return granted
    except (OSError, psutil.Error) as error:
        log.warning("cannot enlarge the SIP UDP receive buffer: %s", error)
    return 0


def build_survives_connection_floods() -> bool:
    """Whether a full ioqueue refuses a TCP connection instead of aborting the process.

    The PyPI wheel's pjlib keeps its debug assertions and a `select` ioqueue of 64 sockets in
    all: measured here, about 50 TCP connections within 32 s (each INVITE transaction keeps
    its connection for timer H) abort the engine in `pj_ioqueue_register_sock2` (pjproject
    issues 2617, 4935). The tuned build is compiled with NDEBUG and an epoll ioqueue of 8,192
    sockets, and says so in its marker (`pjsua2.BUILD_INFO["release_asserts_off"]`)."""
    info = getattr(pj, "BUILD_INFO", None)
    return bool(isinstance(info, dict) and info.get("release_asserts_off"))


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
    user_agent: str = "vr-engine"
    start_timeout: float = 15.0


# ---------------------------------------------------------------------------------------------
# pjsua2 subclasses: thin shims that forward to the adapter and swallow every exception.


def clear_last_exception() -> None:
    """An exception in a callback leaves `sys.last_*`, which would keep pjsua2 objects alive."""
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            with contextlib.suppress(AttributeError):
                delattr(sys, name)


def _guard(where: str, func: Callable[[], None]) -> None:
    """Run `func`, log and swallow any exception (never let one reach pjsua2)."""
    try:
        func()
    except BaseException:
        # Log text, not exc_info: a LogRecord kept by a handler would keep the traceback's
        # frames, and with them pjsua2 objects, alive on another thread.
        log.error("pjsua callback %s failed:\n%s", where, traceback.format_exc().rstrip())
        clear_last_exception()


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    def write(self, entry: Any) -> None:
        try:
            level = int(entry.level)
            msg = str(entry.msg)
            py_level = (
                logging.ERROR if level <= 1 else logging.WARNING if level == 2 else logging.DEBUG
            )
            if "RTP socket bind()" in msg:  # pjsua retries the next port by itself
                py_level = logging.DEBUG
            log.log(py_level, "pjsua: %s", msg.rstrip())
        except BaseException:
            clear_last_exception()


class _Endpoint(pj.Endpoint):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[PjsuaTelephony]) -> None:
        super().__init__()
        self._owner = owner

    def onRejectedIncomingCall(self, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner._on_rejected_incoming(prm)

        _guard("onRejectedIncomingCall", run)


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[PjsuaTelephony]) -> None:
        super().__init__()
        self._owner = owner

    def onIncomingCall(self, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner._on_incoming_call(self, prm)

        _guard("onIncomingCall", run)


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(
        self, owner: weakref.ref[PjsuaTelephony], account: Any, pj_call_id: int, key: CallId
    ) -> None:
        super().__init__(account, pj_call_id)
        self._owner = owner
        self.key = key

    def _forward(self, where: str, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                getattr(owner, where)(self.key, prm)

        _guard(where, run)

    def onCallState(self, prm: Any) -> None:
        self._forward("_on_call_state", prm)

    def onCallMediaState(self, prm: Any) -> None:
        self._forward("_on_call_media_state", prm)

    def onDtmfDigit(self, prm: Any) -> None:
        self._forward("_on_dtmf_digit", prm)

    def onDtmfEvent(self, prm: Any) -> None:
        self._forward("_on_dtmf_event", prm)

    def onCallTransferStatus(self, prm: Any) -> None:
        self._forward("_on_transfer_status", prm)

    def onCallTsxState(self, prm: Any) -> None:
        self._forward("_on_call_tsx_state", prm)

    def onCallRxOffer(self, prm: Any) -> None:
        # synchronous: pjsua reads prm.statusCode when this returns (200 or 488)
        self._forward("_on_call_rx_offer", prm)


class _Player(pj.AudioMediaPlayer):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[PjsuaTelephony], key: CallId, token: int) -> None:
        super().__init__()
        self._owner = owner
        self.key = key
        self.token = token

    def onEof2(self) -> None:
        # Never destroy a player inside its own callback: the adapter defers the work.
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner._on_player_eof(self.key, self.token)

        _guard("onEof2", run)


# ---------------------------------------------------------------------------------------------
# Per-call bookkeeping (pjsua thread only).


@dataclass(eq=False)
class _Playback:
    play_id: int
    files: list[Path]
    next_index: int = 0
    player: Any = None  # _Player while a file plays
    token: int = 0  # identifies `player`, so a late EOF of a stopped player is ignored


@dataclass(eq=False)
class _CallState:
    key: CallId
    call: Any  # _Call
    confirmed: bool = False
    disconnected: bool = False
    ended_by_us: bool = False
    audio: Any = None  # pj.AudioMedia of the active stream
    audio_slot: int = -1
    playback: _Playback | None = None
    last_rfc_dtmf: tuple[str, int] | None = None  # (digit, timestamp) of the last RFC 4733 press
    transfer_final_seen: bool = False
    pending_release: bool = False
    created: float = field(default_factory=time.monotonic)


def pick_free_port(host: str) -> int:
    """A port free for both UDP and TCP on `host` (pjsua cannot share an ephemeral one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise TelephonyStartError(f"no port free for both UDP and TCP on {host}")


def _sip_code_of(error: Any) -> int:
    status = int(getattr(error, "status", 0))
    code = status - _PJSIP_ERRNO_START
    return code if 100 <= code <= 699 else 500


def _error_text(error: BaseException) -> str:
    info = getattr(error, "info", None)
    if callable(info):
        with contextlib.suppress(Exception):
            return str(info()).strip()
    return str(error)


def _pjsua_lib() -> ctypes.CDLL | None:
    """The loaded `_pjsua2` shared object, for the C functions pjsua2 does not wrap."""
    try:
        lib = ctypes.CDLL(pj._pjsua2.__file__)
        lib.pj_log_set_level.argtypes = [ctypes.c_int]
        lib.pj_log_set_level.restype = None
        lib.pjsua_call_get_max_count.argtypes = []
        lib.pjsua_call_get_max_count.restype = ctypes.c_uint
        lib.pjsua_call_get_count.argtypes = []
        lib.pjsua_call_get_count.restype = ctypes.c_uint
        lib.pjsip_rdata_get_dlg.argtypes = [ctypes.c_void_p]
        lib.pjsip_rdata_get_dlg.restype = ctypes.c_void_p
        # pjsip_dlg_respond(dlg, rdata, st_code, st_text, hdr_list, body)
        lib.pjsip_dlg_respond.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.pjsip_dlg_respond.argtypes += [ctypes.c_void_p] * 3
        lib.pjsip_dlg_respond.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


def _bind_gate_symbols(lib: ctypes.CDLL) -> bool:
    """Declare the C functions `_FullGate` uses; False if the module does not export one."""
    try:
        lib.pjsip_rdata_get_sdp_info.argtypes = [ctypes.c_void_p]
        lib.pjsip_rdata_get_sdp_info.restype = ctypes.POINTER(_SdpInfo)
        lib.pjmedia_sdp_validate.argtypes = [ctypes.c_void_p]
        lib.pjmedia_sdp_validate.restype = ctypes.c_int
        lib.pjsua_get_pjsip_endpt.argtypes = []
        lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pjsip_endpt_register_module.restype = ctypes.c_int
        lib.pjsip_endpt_unregister_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pjsip_endpt_unregister_module.restype = ctypes.c_int
        lib.pjsip_endpt_create_pool.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.pjsip_endpt_create_pool.argtypes += [ctypes.c_size_t] * 2
        lib.pjsip_endpt_create_pool.restype = ctypes.c_void_p
        lib.pjsip_endpt_release_pool.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pjsip_endpt_release_pool.restype = None
        lib.pjsip_retry_after_hdr_create.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pjsip_retry_after_hdr_create.restype = ctypes.c_void_p
        lib.pj_list_insert_before.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pj_list_insert_before.restype = None
        lib.pjsip_rdata_get_tsx.argtypes = [ctypes.c_void_p]
        lib.pjsip_rdata_get_tsx.restype = ctypes.c_void_p
        lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
        lib.pjsip_rx_data_get_info.restype = ctypes.c_void_p  # the pointer is needed too
        # pjsip_endpt_respond_stateless(endpt, rdata, st_code, st_text, hdr_list, body)
        lib.pjsip_endpt_respond_stateless.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pjsip_endpt_respond_stateless.argtypes += [ctypes.c_int] + [ctypes.c_void_p] * 3
        lib.pjsip_endpt_respond_stateless.restype = ctypes.c_int
        return True
    except AttributeError:
        return False


# ---------------------------------------------------------------------------------------------
# A pjsip module that answers `503` when every pjsua call slot is busy.
#
# Layouts from pjproject 2.15.1, pjsip/include/pjsip/sip_module.h and pj/types.h (LP64):
#
#   struct pjsip_module {
#       PJ_DECL_LIST_MEMBER(struct pjsip_module);   prev, next            offsets 0, 8
#       pj_str_t name;                              { char *ptr; pj_ssize_t slen; }  16
#       int id;                                                                      32
#       int priority;                                                                36
#       pj_status_t (*load)(pjsip_endpoint*);  start, stop, unload              40..64
#       pj_bool_t (*on_rx_request)(pjsip_rx_data*);                                  72
#       pj_bool_t (*on_rx_response)(pjsip_rx_data*);                                 80
#       pj_status_t (*on_tx_request)(pjsip_tx_data*);  on_tx_response           88, 96
#       void (*on_tsx_state)(pjsip_transaction*, pjsip_event*);                     104
#   };                                                                   sizeof = 112
#
#   enum pjsip_module_priority { TRANSPORT_LAYER = 8, TSX_LAYER = 16, UA_PROXY_LAYER = 32,
#                                DIALOG_USAGE = 48, APPLICATION = 64 };
#
# pjsua's own module ("mod-pjsua", PJSIP_MOD_PRIORITY_APPLICATION) is where an out-of-dialog
# INVITE becomes a call, and where pjsua answers `486` when no call slot is free. The gate
# runs just before it, after the transaction layer and the UA layer have claimed
# retransmissions and in-dialog requests (a pjsip endpoint offers a request to its modules in
# ascending priority until one returns PJ_TRUE).

PJSIP_MOD_PRIORITY_APPLICATION = 64
FULL_GATE_PRIORITY = PJSIP_MOD_PRIORITY_APPLICATION - 1
FULL_RETRY_AFTER = 5  # seconds, in the 503's Retry-After
# New calls a second (and a burst) that a build whose ioqueue aborts when full may take: each
# new INVITE opens two media sockets before any callback, and a closed socket's ioqueue key
# is reused only 500 ms later (PJ_IOQUEUE_KEY_FREE_DELAY). The PyPI wheel has 64 keys in
# all; measured: a few dozen INVITEs within half a second aborted it. 10/s + 5 keeps at most
# 10 new calls (2 audio streams each: 40 keys) in that delay, plus 4 calls and the SIP socket.
FRAGILE_NEW_CALL_RATE = 10.0
FRAGILE_NEW_CALL_BURST = 5
FULL_LOG_INTERVAL = 10.0  # at most one warning per this many seconds (with the count)
TUNED_BUILD_HINT = "a tuned pjsua2 build raises it: make pjsua2 (README, Capacity)"

_RxRequestFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class _PjStrRef(ctypes.Structure):
    """A pj_str_t read in place (not NUL-terminated: use `ptr` with `slen`)."""

    _fields_ = [("ptr", ctypes.c_void_p), ("slen", ctypes.c_ssize_t)]


class _SdpInfo(ctypes.Structure):
    """pjsip_rdata_sdp_info (pjsip-ua/sip_inv.h): the INVITE's SDP body, as pjsip parsed it."""

    _fields_ = [("body", _PjStrRef), ("sdp_err", ctypes.c_int), ("sdp", ctypes.c_void_p)]


class _PjsipModule(ctypes.Structure):
    _fields_ = [
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("name", _PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p),
        ("start", ctypes.c_void_p),
        ("stop", ctypes.c_void_p),
        ("unload", ctypes.c_void_p),
        ("on_rx_request", _RxRequestFn),
        ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", ctypes.c_void_p),
        ("on_tx_response", ctypes.c_void_p),
        ("on_tsx_state", ctypes.c_void_p),
    ]


# Every module struct and C callback ever handed to pjsip stays referenced for the process
# lifetime: freeing one that pjsip still points to would crash on the next request.
_KEEP_ALIVE: list[object] = []


# Where pjsip_rx_data keeps the received text. pjsip_rx_data_get_info(rdata) returns, and
# stores in the rx data, `msg_info.info`; in pjsip_rx_data (sip_types.h, 2.x) that field
# follows `char *msg_buf; int len; pjsip_msg *msg;` (LP64: at info-24, info-16, info-8), and
# msg_buf points into the rx data's own packet buffer, before msg_info. The offset of `info`
# depends on build options (PJSIP_MAX_PKT_LEN), so it is found once, at run time, by looking
# for the stored pointer, and checked on every request.
ADMITTED_MEMORY = 4096  # Call-IDs of INVITEs the door let through, not yet reported by pjsua
RAW_SCAN_LIMIT = 1 << 18  # bytes of the rx data searched for msg_info.info (once)


def _source_at(rdata: int, m: int) -> str | None:
    """`pkt_info`'s source address, read backwards from `msg_info` at `rdata + m` (see
    `_RawLocator.source`); None unless every field agrees."""
    family = ctypes.c_uint16.from_address(rdata + m - 88).value
    sin_port = int.from_bytes(ctypes.string_at(rdata + m - 86, 2), "big")
    if family == socket.AF_INET:
        packed = ctypes.string_at(rdata + m - 84, 4)
    elif family == socket.AF_INET6:
        packed = ctypes.string_at(rdata + m - 80, 16)
    else:
        return None
    port = ctypes.c_int.from_address(rdata + m - 8).value
    name = ctypes.string_at(rdata + m - 56, 46).split(b"\0", 1)[0]
    try:
        address = ipaddress.ip_address(name.decode("ascii"))
    except ValueError:
        return None
    if not 0 < port < 65536 or port != sin_port or address.packed != packed:
        return None
    return str(address)


class _RawLocator:
    """Reads a received request's raw text out of its pjsip_rx_data (pjsua thread only)."""

    def __init__(self) -> None:
        self.offset: int | None = None  # of msg_info.info in pjsip_rx_data
        self.failed = False
        self.source_failed = False

    def _find(self, rdata: int, info: int) -> int | None:
        for offset in range(24, RAW_SCAN_LIMIT, 8):
            if ctypes.c_void_p.from_address(rdata + offset).value == info:
                return offset if self._plausible(rdata, offset) else None
        return None

    @staticmethod
    def _plausible(rdata: int, offset: int) -> bool:
        msg_buf = ctypes.c_void_p.from_address(rdata + offset - 24).value or 0
        length = ctypes.c_int.from_address(rdata + offset - 16).value
        return rdata < msg_buf < rdata + offset and 0 < length <= offset

    def raw(self, rdata: int, info: int) -> bytes | None:
        """The request's text, or None when the layout is not the expected one."""
        if self.failed:
            return None
        if self.offset is None:
            self.offset = self._find(rdata, info)
            if self.offset is None:
                self.failed = True
                log.warning(
                    "cannot read received SIP text in this pjsip build: scanners are refused "
                    "by the runtime (403) instead of being ignored"
                )
                return None
            log.debug("pjsip_rx_data.msg_info.info found at offset %d", self.offset)
        offset = self.offset
        if ctypes.c_void_p.from_address(rdata + offset).value != info or not self._plausible(
            rdata, offset
        ):
            return None
        msg_buf = ctypes.c_void_p.from_address(rdata + offset - 24).value or 0
        length = ctypes.c_int.from_address(rdata + offset - 16).value
        return ctypes.string_at(msg_buf, length)

    def source(self, rdata: int) -> str | None:
        """The address the request came from (`pkt_info.src_name`), or None when the layout is
        not the expected one. Call only after `raw` read this request's text.

        `pkt_info` ends where `msg_info` starts (M = offset of msg_info.info - 24), with
        `pj_ssize_t len` 8-aligned: then `src_addr` (pj_sockaddr) at M-88, `src_name`
        (char[46]) at M-56 and `int src_port` at M-8, whatever PJSIP_MAX_PKT_LEN is. Each read
        is checked against the others: the family, the port twice, the address twice."""
        if self.offset is None or self.source_failed:
            return None
        m = self.offset - 24
        found = _source_at(rdata, m)
        if found is None:
            self.source_failed = True
            log.warning(
                "cannot read a request's source address in this pjsip build: the per-source "
                "limits act in the runtime, after pjsua has created the call"
            )
        return found


class _FullGate:
    """The pjsip module that answers a new INVITE `503` + `Retry-After` when all slots are busy,
    or, on a build whose ioqueue aborts when full (the PyPI wheel), when new calls arrive
    faster than its sockets are recycled (`FRAGILE_NEW_CALL_RATE`).

    pjsua answers such an INVITE `486 Busy Here` before any Python callback; this module
    takes it first (only out-of-dialog INVITEs with no transaction, only when
    `pjsua_call_get_count() >= pjsua_call_get_max_count()`), so every slot carries a call
    and the caller still gets a clean `503`. Created, registered, called and unregistered on
    the pjsua thread only; `on_rx_request` never raises (any error → PJ_FALSE, pjsua decides).
    """

    def __init__(
        self,
        lib: ctypes.CDLL,
        limit_text: str,
        pace: RateLimiter | None,
        ipv6: bool,
        limits: SourceLimits | None = None,
    ) -> None:
        self._lib = lib
        self._limit_text = limit_text
        self._pace = pace  # new calls a second the build survives; None: no limit
        self._ipv6 = ipv6  # the media family of the server (for `sdp_problem`)
        self._limits = limits  # per source: applied here when the source address can be read
        self._admitted: OrderedDict[str, None] = OrderedDict()  # Call-IDs let through
        self.rejected = 0  # 503s
        self.paced = 0  # of `rejected`: refused by the pace, not by full slots
        self.source_refused = 0  # 503s for a source over its limits (rate, unacknowledged)
        self.bad_offers = 0  # 400/488s: an SDP offer pjmedia cannot carry
        self.scanners = 0  # requests of known SIP scanners, dropped without an answer
        self._raw = _RawLocator()
        self._logged = 0  # `rejected` when the last warning was written
        self._last_log = -FULL_LOG_INTERVAL
        self._endpt: int | None = None
        self._pool: int | None = None
        self._hdrs: Any = None
        self._callback = _RxRequestFn(self._on_rx_request)
        self._name = b"mod-vr-full-gate"
        self._module = _PjsipModule()
        self._module.name.ptr = self._name
        self._module.name.slen = len(self._name)
        self._module.id = -1
        self._module.priority = FULL_GATE_PRIORITY
        self._module.on_rx_request = self._callback
        self.registered = False
        _KEEP_ALIVE.extend((self._callback, self._module, self._name))

    def register(self) -> None:
        """Register with pjsua's endpoint (pjsua thread, after libStart). Raises on failure."""
        lib = self._lib
        endpt = lib.pjsua_get_pjsip_endpt()
        if not endpt:
            raise OSError("pjsua has no SIP endpoint")
        pool = lib.pjsip_endpt_create_pool(endpt, b"vr-full-gate", 512, 512)
        if not pool:
            raise OSError("cannot create a pool")
        hdr = lib.pjsip_retry_after_hdr_create(pool, FULL_RETRY_AFTER)
        if not hdr:
            lib.pjsip_endpt_release_pool(endpt, pool)
            raise OSError("cannot create a Retry-After header")
        # a pjsip_hdr list head: only its prev/next pointers are used by the list functions
        head = (ctypes.c_void_p * 8)()
        head[0] = head[1] = ctypes.addressof(head)
        lib.pj_list_insert_before(ctypes.addressof(head), hdr)
        self._endpt, self._pool, self._hdrs = endpt, pool, head
        _KEEP_ALIVE.append(head)
        status = lib.pjsip_endpt_register_module(endpt, ctypes.byref(self._module))
        if status != 0:
            self._release_pool()
            raise OSError(f"pjsip_endpt_register_module failed: pj_status {status}")
        self.registered = True
        log.debug(
            "call-slot gate registered as pjsip module %d, priority %d",
            self._module.id,
            self._module.priority,
        )

    def unregister(self) -> None:
        """Unregister and free the pool (pjsua thread, before libDestroy)."""
        if self.registered and self._endpt:
            self.registered = False
            status = self._lib.pjsip_endpt_unregister_module(
                self._endpt, ctypes.byref(self._module)
            )
            if status != 0:
                log.warning("pjsip_endpt_unregister_module failed: pj_status %d", status)
        self._release_pool()
        self.log_pending(force=True)

    def _release_pool(self) -> None:
        if self._pool and self._endpt:
            self._lib.pjsip_endpt_release_pool(self._endpt, self._pool)
        self._pool = None

    def _on_rx_request(self, rdata: int | None) -> int:
        try:
            lib = self._lib
            if not rdata or not self.registered:
                return 0
            if lib.pjsip_rdata_get_dlg(rdata) or lib.pjsip_rdata_get_tsx(rdata):
                return 0
            info = lib.pjsip_rx_data_get_info(rdata)  # "Request msg INVITE/cseq=1 (rdata…)"
            if not info:
                return 0
            raw = self._raw.raw(rdata, info)
            headers = split_headers(raw.decode("utf-8", "replace"))[1] if raw is not None else {}
            if any(is_scanner(agent) for agent in headers.get("user-agent", [])):
                self.scanners += 1  # no answer: to a scanner, nothing is listening here
                self.log_pending()
                return 1
            if not ctypes.string_at(info).startswith(b"Request msg INVITE/"):
                return 0
            code = self._offer_refusal(rdata)
            if code:
                if lib.pjsip_endpt_respond_stateless(self._endpt, rdata, code, None, None, None):
                    return 0  # not answered: leave the request to pjsua
                self.bad_offers += 1
                self.log_pending()
                return 1
            refusal, admitted = self._source_refusal(rdata, raw is not None)
            if refusal is not None:
                text = f"Service Unavailable ({refusal})".encode()
                reason = _PjStr(text, len(text))
                status = lib.pjsip_endpt_respond_stateless(
                    self._endpt, rdata, 503, ctypes.addressof(reason), None, None
                )
                if status != 0:
                    return 0  # not answered: leave the request to pjsua and the runtime
                self.source_refused += 1
                self.log_pending()
                return 1
            full = int(lib.pjsua_call_get_count()) >= int(lib.pjsua_call_get_max_count())
            paced = (
                not full and self._pace is not None and not self._pace.allow("", time.monotonic())
            )
            if not full and not paced:
                call_id = headers.get("call-id", [""])[0]
                if admitted and call_id:
                    self._admitted[call_id] = None
                    while len(self._admitted) > ADMITTED_MEMORY:
                        self._admitted.popitem(last=False)
                return 0
            status = lib.pjsip_endpt_respond_stateless(
                self._endpt, rdata, 503, None, ctypes.addressof(self._hdrs), None
            )
            if status != 0:
                return 0  # not answered: leave the request to pjsua (486)
            self.rejected += 1
            self.paced += paced
            self.log_pending()
            return 1
        except BaseException:
            clear_last_exception()
            return 0

    def _source_refusal(self, rdata: int, located: bool) -> tuple[str | None, bool]:
        """(why a new INVITE's source is over its limits or None, whether they were applied).
        `located`: the request's `msg_info` was found where expected (its text was read)."""
        if self._limits is None or not located:
            return None, False
        source = self._raw.source(rdata)
        if source is None:
            return None, False
        return self._limits.admit(source, time.monotonic()), True

    def take_admitted(self, call_id: str) -> bool:
        """Whether this module let the INVITE of `call_id` through after applying the
        per-source limits. pjsua reports an INVITE later, from a copy of its rx data (after
        creating its media), so the INVITEs let through are remembered by Call-ID (the last
        `ADMITTED_MEMORY` of them: pjsua may refuse one without reporting it)."""
        try:
            del self._admitted[call_id]
        except KeyError:
            return False
        return True

    def _offer_refusal(self, rdata: int) -> int:
        """400 when the INVITE's SDP does not parse, 488 when pjmedia could not carry it
        (`sdp_problem`), else 0. Checked here because pjsua opens the call's media sockets
        before any callback: measured, ten INVITEs a second with broken SDP bodies aborted the
        PyPI wheel's pjlib (its 64 ioqueue keys ran out) within 3 s."""
        sdp_info = self._lib.pjsip_rdata_get_sdp_info(rdata)
        if not sdp_info:
            return 0
        body = sdp_info.contents.body
        if body.slen <= 0 or not body.ptr:
            return 0  # no offer in the INVITE (the answer will carry it)
        if sdp_info.contents.sdp_err != 0 or not sdp_info.contents.sdp:
            return 400
        if self._lib.pjmedia_sdp_validate(sdp_info.contents.sdp) != 0:
            return 400  # what pjsua would answer too, after opening the media sockets
        text = ctypes.string_at(body.ptr, body.slen).decode("utf-8", "replace")
        return 488 if sdp_problem(text, ipv6=self._ipv6) is not None else 0

    def log_pending(self, force: bool = False) -> None:
        """Warn about rejections not yet logged, at most once per FULL_LOG_INTERVAL."""
        try:
            now = time.monotonic()
            total = self.rejected + self.source_refused + self.bad_offers + self.scanners
            new = total - self._logged
            if new <= 0 or (not force and now - self._last_log < FULL_LOG_INTERVAL):
                return
            self._last_log, self._logged = now, total
            log.warning(
                "turned away %d request(s) at the SIP stack's door; in all: %d INVITEs with 503"
                " (Retry-After %d s) for every call slot busy (%s), %d with 503 for new calls"
                " arriving faster than %s a second, %d with 503 for a source over its limits"
                " (sip_rate_limit), %d with 400/488 for an SDP offer the media stack cannot"
                " carry, %d requests of SIP scanners ignored",
                new,
                self.rejected - self.paced,
                FULL_RETRY_AFTER,
                self._limit_text,
                self.paced,
                f"{self._pace.rate:g}" if self._pace is not None else "any",
                self.source_refused,
                self.bad_offers,
                self.scanners,
            )
        except BaseException:
            clear_last_exception()


class PjsuaTelephony:
    """`engine.telephony.base.Telephony` on pjsua2 (see the module doc string)."""

    def __init__(
        self, settings: SipSettings | None = None, source_limits: SourceLimits | None = None
    ) -> None:
        self.settings = settings or SipSettings()
        self._source_limits = source_limits  # applied at the SIP stack's door when given
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
        self._lib = _pjsua_lib()
        self._gate: _FullGate | None = None
        self._rejected_full = 0  # of gates of earlier starts
        # pjsua-thread-only state
        self._ep: Any = None
        self._account: Any = None
        self._log_writer: Any = None
        self._transports: list[int] = []
        self._calls: dict[CallId, _CallState] = {}
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

        When every slot is busy, the adapter's pjsip module (`_FullGate`) answers a new INVITE
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

    def reject(self, call_id: CallId, sip_code: int, reason: str) -> None:
        self._submit(lambda: self._do_reject(call_id, sip_code, reason))

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
            return _error_text(exc)
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
            _guard("command", command)
        self._run_deferred()
        self._reconcile()
        self._publish_counts()

    def _run_deferred(self) -> None:
        while self._deferred:
            work, self._deferred = self._deferred, []
            for item in work:
                _guard("deferred", item)
        # players retired inside a callback are freed here, outside any pjsua callback
        self._retired_players.clear()

    def _publish_counts(self) -> None:
        players = sum(
            1 for st in self._calls.values() if st.playback and st.playback.player is not None
        )
        pjsua_calls = -1
        if self._lib is not None:
            with contextlib.suppress(Exception):
                pjsua_calls = int(self._lib.pjsua_call_get_count())
        gate = self._gate
        if gate is not None:
            gate.log_pending()
        self._counts = {
            "calls": len(self._calls),
            "players": players + len(self._retired_players),
            "pjsua_calls": pjsua_calls,
            "rejected_by_pjsua": self._rejected_by_pjsua,
            "rejected_full": self._rejected_full_total(),
        }

    def _rejected_full_total(self) -> int:
        gate = self._gate
        return self._rejected_full + (gate.rejected if gate is not None else 0)

    def _create_endpoint(self) -> None:
        s = self.settings
        if not (s.udp or s.tcp):
            raise TelephonyStartError("enable at least one of UDP and TCP")
        if self._lib is not None:
            # keep pjlib quiet until libInit installs our log writer
            self._lib.pj_log_set_level(0)
        port = s.port or pick_free_port(s.host)
        ep = _Endpoint(self._self_ref)
        self._ep = ep
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        # One slot above max_calls (pjsua caps it at the build's PJSUA_MAX_CALLS): see max_calls.
        cfg.uaConfig.maxCalls = max(1, s.max_calls + 1)
        cfg.uaConfig.userAgent = s.user_agent
        self._log_writer = _LogWriter()
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.level = s.log_level
        cfg.logConfig.consoleLevel = s.log_level
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.channelCount = 1
        cfg.medConfig.noVad = True
        ep.libInit(cfg)

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
                self._transports.append(int(ep.transportCreate(kind, tcfg)))
            except pj.Error as exc:
                raise TelephonyStartError(
                    f"cannot listen for SIP/{name} on {s.host}:{port}: {exc.reason}"
                    " (is another server using this port?)"
                ) from None
        self._bound_port = port
        if s.udp:
            enlarge_receive_buffer(s.host, port)
        ep.libStart()
        ep.audDevManager().setNullDev()

        self._configure_codecs()

        acfg = pj.AccountConfig()
        host_part = f"[{s.host}]" if ipv6 else s.host
        acfg.idUri = f"sip:receptionist@{host_part}:{port}"
        acfg.regConfig.registerOnAdd = False
        acfg.mediaConfig.transportConfig.boundAddress = s.host
        acfg.mediaConfig.transportConfig.publicAddress = s.host
        acfg.mediaConfig.transportConfig.port = s.rtp_port
        if ipv6:
            acfg.mediaConfig.ipv6Use = IPV6_ONLY
        account = _Account(self._self_ref)
        account.create(acfg, True)
        self._account = account

        if self._lib is not None:
            self._slots = int(self._lib.pjsua_call_get_max_count())
        else:  # pragma: no cover - the wheel exports the symbol
            self._slots = min(s.max_calls + 1, SMALL_BUILD_SLOTS)
        limit_text = self._limit_text()
        self._start_gate(limit_text)
        log.info(
            "SIP listening on %s:%d (%s), %d call slots, up to %d calls: %s",
            s.host,
            port,
            "/".join(n for n, _ in kinds),
            self._slots,
            self.max_calls,
            limit_text,
        )

    def _limit_text(self) -> str:
        s = self.settings
        if self._slots < s.max_calls + 1:  # pjsua capped maxCalls at PJSUA_MAX_CALLS
            return (
                f"this build of pjsua2 carries at most {self._slots} concurrent calls "
                f"(PJSUA_MAX_CALLS); {TUNED_BUILD_HINT}"
            )
        return (
            f"max_calls = {s.max_calls} (pjsua has {self._slots} slots: one more, so that the "
            "runtime answers an over-limit call with its own 503)"
        )

    def _start_gate(self, limit_text: str) -> None:
        """Install `_FullGate`; without it the caller over the limit gets pjsua's `486`, and a
        build whose ioqueue aborts when full has no pace on new calls."""
        if self._lib is None or not _bind_gate_symbols(self._lib):
            log.warning("call-slot gate unavailable (pjsip symbols): pjsua answers 486 when full")
            return
        pace = (
            None
            if build_survives_connection_floods()
            else RateLimiter(rate=FRAGILE_NEW_CALL_RATE, burst=FRAGILE_NEW_CALL_BURST)
        )
        gate = _FullGate(
            self._lib,
            limit_text,
            pace,
            ipv6=":" in self.settings.host,
            limits=self._source_limits,
        )
        try:
            gate.register()
        except Exception as exc:
            log.warning("call-slot gate not installed (%s): pjsua answers 486 when full", exc)
            return
        self._gate = gate

    def _stop_gate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is None:
            return
        try:
            gate.unregister()
        finally:
            self._rejected_full += gate.rejected

    def _configure_codecs(self) -> None:
        wanted = [(cid.lower(), prio) for cid, prio in self.settings.codecs]
        for info in self._ep.codecEnum2():
            codec_id = str(info.codecId)
            priority = 0
            for prefix, prio in wanted:
                if codec_id.lower().startswith(prefix):
                    priority = prio
                    break
            self._ep.codecSetPriority(codec_id, priority)

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
        self._deferred.clear()
        self._retired_players.clear()
        if self._account is not None:
            with contextlib.suppress(Exception):
                self._account.shutdown()
            self._account = None
        clear_last_exception()
        gc.collect()
        try:
            self._stop_gate()
        except BaseException:
            log.exception("could not unregister the call-slot gate")
        if self._ep is not None:
            try:
                self._ep.libDestroy()
            except BaseException:
                log.exception("libDestroy failed")
            self._ep = None
        self._log_writer = None
        self._publish_counts_after_destroy()

    def _publish_counts_after_destroy(self) -> None:
        self._counts = {
            "calls": 0,
            "players": 0,
            "pjsua_calls": 0,
            "rejected_by_pjsua": self._rejected_by_pjsua,
            "rejected_full": self._rejected_full_total(),
        }

    def _emit(self, event: TelephonyEvent) -> None:
        loop, sink = self._loop, self._sink
        if loop is None or sink is None:
            return
        try:
            loop.call_soon_threadsafe(sink, event)
        except RuntimeError:  # loop closed: nobody is listening any more
            log.debug("event dropped, loop closed: %r", event)

    # -- callbacks (pjsua thread) -------------------------------------------------------------

    def _on_rejected_incoming(self, prm: Any) -> None:
        self._rejected_by_pjsua += 1
        log.warning(
            "pjsua refused an incoming call itself: %d %s (from %s)",
            int(prm.statusCode),
            str(prm.reason),
            str(prm.remoteInfo),
        )

    def _on_incoming_call(self, account: Any, prm: Any) -> None:
        self._serial += 1
        key = f"c{self._serial}"
        call = _Call(self._self_ref, account, int(prm.callId), key)
        self._calls[key] = _CallState(key=key, call=call)
        rdata = prm.rdata
        whole = str(rdata.wholeMsg)
        info = parse_invite(whole)
        host, port = parse_host_port(str(rdata.srcAddress))
        # the gate refused such offers before pjsua saw them; without it, the runtime does (488)
        gate = self._gate
        admitted = gate is not None and gate.take_admitted(info.call_id)
        log.debug(
            "call %s: INVITE from %s:%d (per-source rate checked at the door: %s)",
            key,
            host,
            port,
            "yes" if admitted else "no",
        )
        problem = None
        if gate is None:
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
                admitted=admitted,
            )
        )

    def _on_call_rx_offer(self, key: CallId, prm: Any) -> None:
        """A re-INVITE or UPDATE offers new media: refuse it (488) when pjmedia could not
        carry it, before pjsua applies it (see `sdp_problem`)."""
        problem = sdp_problem(str(prm.offer.wholeSdp), ipv6=":" in self.settings.host)
        if problem is not None:
            prm.statusCode = 488
            log.warning("call %s: refused a new media offer with 488: %s", key, problem)

    def _on_call_state(self, key: CallId, prm: Any) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected:
            return
        ci = st.call.getInfo()
        state = int(ci.state)
        if state == pj.PJSIP_INV_STATE_CONFIRMED and not st.confirmed:
            st.confirmed = True
            self._emit(CallConfirmed(call_id=key))
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
        st.pending_release = True
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
            self._stop_player(st)

    def _on_call_media_state(self, key: CallId, prm: Any) -> None:
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
                    log.warning("call %s: no audio after a media change: %s", key, _error_text(exc))
                break
        if audio is None:
            return
        slot = int(audio.getPortId())
        changed = slot != st.audio_slot
        st.audio, st.audio_slot = audio, slot
        pb = st.playback
        if pb is None:
            return
        if pb.player is None:
            self._start_next_file(st)
        elif changed:
            try:
                pb.player.startTransmit(audio)
            except pj.Error as exc:
                log.warning("call %s: cannot reconnect prompt: %s", key, _error_text(exc))

    def _dtmf_method(self, method: int) -> DtmfMethod:
        return "sip-info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"

    def _on_dtmf_digit(self, key: CallId, prm: Any) -> None:
        # Reported through onDtmfEvent instead (see the module doc string); kept for tracing.
        st = self._calls.get(key)
        if st is not None:
            method = self._dtmf_method(int(prm.method))
            # digits are never logged: they may be a PIN
            log.debug("call %s: onDtmfDigit method=%s", key, method)

    def _on_dtmf_event(self, key: CallId, prm: Any) -> None:
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
        if digit not in _VALID_DIGITS:
            log.warning("call %s: ignoring a DTMF event that is not a key 0-9 * # A-D", key)
            return
        if method == "rfc4733":
            if flags & DTMF_IS_UPDATE:
                return  # an update or the end of a press already reported
            if st.last_rfc_dtmf == (digit, timestamp):
                return  # the same RTP event indicated again
            st.last_rfc_dtmf = (digit, timestamp)
        # a SIP INFO request is one key press: pjsua indicates it once here
        self._emit(DtmfDigit(call_id=key, digit=digit, method=method))

    def _on_call_tsx_state(self, key: CallId, prm: Any) -> None:
        """INFO `application/dtmf`: pjsua 2.15 handles only `application/dtmf-relay` itself.

        pjsua would answer this INFO `500` (no dialog usage claims it); the digit is taken
        from the request here and the INFO is answered `200` through pjsip's C API.
        """
        event = prm.e
        if int(event.type) != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = event.body.tsxState.tsx
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
        self._respond_in_dialog(rdata, 200)
        log.debug("call %s: INFO application/dtmf digit", key)
        if digit in _VALID_DIGITS:
            self._emit(DtmfDigit(call_id=key, digit=digit, method="sip-info"))

    def _respond_in_dialog(self, rdata: Any, code: int) -> None:
        lib = self._lib
        ptr = rdata.pjRxData
        if lib is None or ptr is None:
            return
        try:
            rdata_ptr = ctypes.c_void_p(int(ptr))
            dlg = lib.pjsip_rdata_get_dlg(rdata_ptr)
            if not dlg:
                return
            status = lib.pjsip_dlg_respond(dlg, rdata_ptr, code, None, None, None)
            if status != 0:
                log.warning("could not answer INFO: pj_status %d", status)
        except (TypeError, ValueError, AttributeError, OSError) as exc:
            log.warning("could not answer INFO: %s", exc)

    def _on_transfer_status(self, key: CallId, prm: Any) -> None:
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
        if final:
            st.transfer_final_seen = True

    def _on_player_eof(self, key: CallId, token: int) -> None:
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
            log.warning("call %s: answer failed: %s", key, _error_text(exc))

    def _do_reject(self, key: CallId, code: int, reason: str) -> None:
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
        st.ended_by_us = True
        try:
            st.call.hangup(prm)
        except pj.Error as exc:
            log.warning("call %s: reject failed: %s", key, _error_text(exc))

    def _do_hangup(self, key: CallId) -> None:
        st = self._live(key, "hangup")
        if st is None:
            return
        st.ended_by_us = True
        try:
            st.call.hangup(pj.CallOpParam(True))
        except pj.Error as exc:
            log.warning("call %s: hangup failed: %s", key, _error_text(exc))

    def _do_transfer(self, key: CallId, refer_to: str) -> None:
        st = self._live(key, "transfer")
        if st is None:
            return
        st.transfer_final_seen = False
        try:
            st.call.xfer(refer_to, pj.CallOpParam(True))
        except pj.Error as exc:
            text = _error_text(exc)
            log.warning("call %s: REFER to %s failed: %s", key, refer_to, text)
            self._emit(
                TransferStatus(call_id=key, sip_code=_sip_code_of(exc), reason=text, final=True)
            )

    def _do_play(self, key: CallId, play_id: int, files: list[Path]) -> None:
        st = self._live(key, "play")
        if st is None:
            return
        self._stop_player(st)
        st.playback = _Playback(play_id=play_id, files=files)
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
        pb = st.playback
        if pb is None or pb.player is None:
            return
        player, pb.player = pb.player, None
        if st.audio is not None:
            with contextlib.suppress(Exception):
                player.stopTransmit(st.audio)
        # freed at the end of this loop turn, never inside a pjsua callback
        self._retired_players.append(player)

    def _start_next_file(self, st: _CallState) -> None:
        pb = st.playback
        if pb is None or st.audio is None:
            return
        while pb.next_index < len(pb.files):
            path = pb.files[pb.next_index]
            pb.next_index += 1
            self._token += 1
            player = _Player(self._self_ref, st.key, self._token)
            try:
                player.createPlayer(str(path), pj.PJMEDIA_FILE_NO_LOOP)
                player.startTransmit(st.audio)
            except pj.Error as exc:
                log.error("call %s: cannot play %s: %s", st.key, path, _error_text(exc))
                self._retired_players.append(player)
                continue
            pb.player, pb.token = player, self._token
            return
        st.playback = None
        self._emit(PlaybackFinished(call_id=st.key, play_id=pb.play_id))

    def _advance_playback(self, key: CallId, token: int) -> None:
        st = self._calls.get(key)
        if st is None or st.disconnected or st.playback is None:
            return
        pb = st.playback
        if pb.player is None or pb.token != token:
            return  # EOF of a player that was already stopped
        self._stop_player(st)
        self._start_next_file(st)
