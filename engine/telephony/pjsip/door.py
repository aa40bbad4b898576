"""The door: a pjsip module in front of pjsua that asks admission about every new
out-of-dialog request before pjsua creates anything for it.

pjsua opens a new INVITE's media sockets and, when every call slot is busy, answers it
`486 Busy Here` — both before any Python callback. This module runs just before pjsua's own
("mod-pjsua", priority APPLICATION), after the transaction and UA layers have claimed
retransmissions and in-dialog requests (a pjsip endpoint offers a request to its modules in
ascending priority until one returns PJ_TRUE). For each new request it reads what it can — the
text (User-Agent, Call-ID), the source address, the SDP offer as pjsip parsed it, pjsua's call
counts — asks `engine.admission.decide`, and carries the refusal out statelessly: nothing for
a silent one, else the code and reason phrase (with `Retry-After` when the refusal has one).
What it cannot read, the runtime applies after pjsua (the same decision, with every fact).
An ACK that matched no dialog is consumed here, never passed on (see `_on_rx_request`).

Created, registered, called and unregistered on the pjsua thread only; `on_rx_request` never
raises (any error → PJ_FALSE: pjsua decides). Refusals are summed up in one warning at most
every `LOG_INTERVAL` seconds, so a flood cannot flood the log.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.admission import (
    RETRY_AFTER,
    AdmissionCounters,
    Admit,
    NewRequest,
    RefusalKind,
    ServerState,
    decide,
)
from engine.telephony.guard import clear_last_exception
from engine.telephony.pjsip.rxdata import RawLocator
from engine.telephony.pjsip.symbols import (
    KEEP_ALIVE,
    PJSIP_MOD_PRIORITY_APPLICATION,
    PjsipModule,
    PjStr,
    RxRequestFn,
)
from engine.telephony.sipmsg import header_tag, sdp_problem, split_headers

log = logging.getLogger(__name__)

DOOR_PRIORITY = PJSIP_MOD_PRIORITY_APPLICATION - 1
LOG_INTERVAL = 10.0  # at most one warning per this many seconds (with the counts)


class Door:
    """The pjsip module (see the module doc string). `limit_text` says what limits the call
    slots and how to raise them (for the log). The pace of new calls, if the build needs one
    (an ioqueue that aborts when full), is the counters' (`AdmissionCounters.set_pace`)."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        counters: AdmissionCounters,
        *,
        limit_text: str,
        ipv6: bool,
        on_stray_ack: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self._lib = lib
        self._on_stray_ack = on_stray_ack  # (SIP Call-ID, source host), on the pjsua thread
        self._counters = counters
        self._limit_text = limit_text
        self._ipv6 = ipv6  # the media family of the server (for `sdp_problem`)
        self.refused: Counter[RefusalKind] = Counter()
        self._raw = RawLocator()
        self._logged = 0  # refusals when the last warning was written
        self._last_log = -LOG_INTERVAL
        self._endpt: int | None = None
        self._pool: int | None = None
        self._retry_after: Any = None  # a pjsip_hdr list head holding one Retry-After
        self._callback = RxRequestFn(self._on_rx_request)
        self._name = b"mod-vr-door"
        self._module = PjsipModule()
        self._module.name.ptr = self._name
        self._module.name.slen = len(self._name)
        self._module.id = -1
        self._module.priority = DOOR_PRIORITY
        self._module.on_rx_request = self._callback
        self.registered = False
        KEEP_ALIVE.extend((self._callback, self._module, self._name))

    @property
    def rejected_full(self) -> int:
        """INVITEs answered 503 + Retry-After: every call slot busy, or over the pace."""
        return self.refused[RefusalKind.FULL] + self.refused[RefusalKind.PACE]

    def register(self) -> None:
        """Register with pjsua's endpoint (pjsua thread, after libStart). Raises on failure."""
        lib = self._lib
        endpt = lib.pjsua_get_pjsip_endpt()
        if not endpt:
            raise OSError("pjsua has no SIP endpoint")
        pool = lib.pjsip_endpt_create_pool(endpt, b"vr-door", 512, 512)
        if not pool:
            raise OSError("cannot create a pool")
        hdr = lib.pjsip_retry_after_hdr_create(pool, RETRY_AFTER)
        if not hdr:
            lib.pjsip_endpt_release_pool(endpt, pool)
            raise OSError("cannot create a Retry-After header")
        # a pjsip_hdr list head: only its prev/next pointers are used by the list functions
        head = (ctypes.c_void_p * 8)()
        head[0] = head[1] = ctypes.addressof(head)
        lib.pj_list_insert_before(ctypes.addressof(head), hdr)
        self._endpt, self._pool, self._retry_after = endpt, pool, head
        KEEP_ALIVE.append(head)
        status = lib.pjsip_endpt_register_module(endpt, ctypes.byref(self._module))
        if status != 0:
            self._release_pool()
            raise OSError(f"pjsip_endpt_register_module failed: pj_status {status}")
        self.registered = True
        log.debug(
            "the door is registered as pjsip module %d, priority %d",
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

    # --- a new request ----------------------------------------------------------------------

    def _on_rx_request(self, rdata: int | None) -> int:
        try:
            lib = self._lib
            if not rdata or not self.registered:
                return 0
            if lib.pjsip_rdata_get_dlg(rdata) or lib.pjsip_rdata_get_tsx(rdata):
                return 0  # in a dialog, or a retransmission: not new
            info = lib.pjsip_rx_data_get_info(rdata)  # "Request msg INVITE/cseq=1 (rdata…)"
            if not info:
                return 0
            request, located, tagless = self._facts(rdata, info)
            if request.method == "ACK":
                # An ACK that reached us matched no dialog and no transaction: it is never
                # answered, and it must not reach pjsua, whose merged-request check answers a
                # To-tag-less one and aborts the process (pjsip asserts that no response is
                # created for an ACK). Tag-less with a call's Call-ID: that call can never be
                # confirmed (PROTOS c07-sip's teardown ACKs): the runtime is told.
                if tagless and request.call_id and self._on_stray_ack is not None:
                    self._on_stray_ack(request.call_id, request.source_host)
                return 1
            now = time.monotonic()
            decision = decide(
                request,
                ServerState(
                    calls=int(lib.pjsua_call_get_count()),
                    capacity=int(lib.pjsua_call_get_max_count()),
                    capacity_text=self._limit_text,
                    pace=True,  # the counters have one only where the build needs it
                ),
                self._counters,
                now,
            )
            if isinstance(decision, Admit):
                if located:
                    self._counters.charge(request.call_id, request.source_host, now)
                return 0
            if not decision.silent:
                text = decision.reason.encode()
                reason = PjStr(text, len(text))
                hdrs = ctypes.addressof(self._retry_after) if decision.retry_after else None
                status = lib.pjsip_endpt_respond_stateless(
                    self._endpt, rdata, decision.sip_code, ctypes.addressof(reason), hdrs, None
                )
                if status != 0:
                    return 0  # not answered: leave the request to pjsua and the runtime
            self.refused[decision.kind] += 1
            self.log_pending()
            return 1
        except BaseException:
            clear_last_exception()
            return 0

    def _facts(self, rdata: int, info: int) -> tuple[NewRequest, bool, bool]:
        """What the door can read of a request, whether it is an INVITE whose source address
        was read (then the per-source limits apply here, and it is charged if admitted), and
        whether its To header was read and has no tag."""
        words = ctypes.string_at(info).split(b" ", 3)  # Request msg INVITE/cseq=1 (rdata…)
        method = words[2].split(b"/", 1)[0].decode("ascii", "replace") if len(words) > 2 else ""
        raw = self._raw.raw(rdata, info)
        tagless = False
        if raw is None:
            user_agent = call_id = from_header = contact = None
        else:
            headers = split_headers(raw.decode("utf-8", "replace"))[1]
            user_agent = ", ".join(headers.get("user-agent", []))
            call_id = headers.get("call-id", [""])[0]
            from_header = headers.get("from", [""])[0]
            contact = ", ".join(headers.get("contact", []))
            to = headers.get("to", [])
            tagless = bool(to) and header_tag(to[0]) is None
        source = (
            self._raw.source(rdata) if raw is not None and method in ("INVITE", "ACK") else None
        )
        offer = self._offer_refusal(rdata) if method == "INVITE" else None
        request = NewRequest(
            method=method,
            call_id=call_id or "",
            user_agent=user_agent,
            from_header=from_header,
            contact=contact,
            source_host=source,
            offer=offer,
        )
        located = source is not None and method == "INVITE"
        return request, located, tagless

    def _offer_refusal(self, rdata: int) -> tuple[int, str] | None:
        """(400, why) when the INVITE's SDP does not parse, (488, why) when pjmedia could not
        carry it (`sdp_problem`), else None. Checked here because pjsua opens the call's media
        sockets before any callback: measured, ten INVITEs a second with broken SDP bodies
        aborted the PyPI wheel's pjlib (its 64 ioqueue keys ran out) within 3 s."""
        sdp_info = self._lib.pjsip_rdata_get_sdp_info(rdata)
        if not sdp_info:
            return None
        body = sdp_info.contents.body
        if body.slen <= 0 or not body.ptr:
            return None  # no offer in the INVITE (the answer will carry it)
        if sdp_info.contents.sdp_err != 0 or not sdp_info.contents.sdp:
            return 400, "the SDP offer does not parse"
        if self._lib.pjmedia_sdp_validate(sdp_info.contents.sdp) != 0:
            return 400, "the SDP offer is not valid"  # pjsua would answer 400 too, later
        text = ctypes.string_at(body.ptr, body.slen).decode("utf-8", "replace")
        problem = sdp_problem(text, ipv6=self._ipv6)
        return (488, problem) if problem is not None else None

    # --- the log ----------------------------------------------------------------------------

    def log_pending(self, force: bool = False) -> None:
        """Warn about refusals not yet logged, at most once per LOG_INTERVAL."""
        try:
            now = time.monotonic()
            total = sum(self.refused.values())
            new = total - self._logged
            if new <= 0 or (not force and now - self._last_log < LOG_INTERVAL):
                return
            self._last_log, self._logged = now, total
            rate = self._counters.pace_rate
            log.warning(
                "turned away %d request(s) at the SIP stack's door; in all: %d INVITEs with 503"
                " (Retry-After %d s) for every call slot busy (%s), %d with 503 for new calls"
                " arriving faster than %s a second, %d with 503 for a source over its limits"
                " (sip_rate_limit), %d with 400/488 for an SDP offer the media stack cannot"
                " carry, %d requests of SIP scanners ignored, %d INVITEs with 503 for the last free"
                " call slots, kept for sources whose calls were ACKed",
                new,
                self.refused[RefusalKind.FULL],
                RETRY_AFTER,
                self._limit_text,
                self.refused[RefusalKind.PACE],
                f"{rate:g}" if rate is not None else "any",
                self.refused[RefusalKind.SOURCE_LIMIT],
                self.refused[RefusalKind.BAD_OFFER],
                self.refused[RefusalKind.SCANNER],
                self.refused[RefusalKind.RESERVED],
            )
        except BaseException:
            clear_last_exception()
