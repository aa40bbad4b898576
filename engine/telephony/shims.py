"""The pjsua2 subclasses of the adapter: thin shims that forward each callback to the adapter
(held by a weak reference, so a shim never keeps it alive) inside `guard`, so that no exception
ever reaches pjsua2; and the reading of a `pjsua2.Error`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any

import pjsua2 as pj

from engine.telephony.base import CallId
from engine.telephony.guard import clear_last_exception, guard
from engine.telephony.pjsip.symbols import PJSIP_ERRNO_START

log = logging.getLogger("engine.telephony.pjsua")  # pjsua's own log, as the adapter's


class LogWriter(pj.LogWriter):  # type: ignore[misc]
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


class Endpoint(pj.Endpoint):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[Any]) -> None:
        super().__init__()
        self._owner = owner

    def onRejectedIncomingCall(self, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner.on_rejected_incoming(prm)

        guard("onRejectedIncomingCall", run)


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[Any]) -> None:
        super().__init__()
        self._owner = owner

    def onIncomingCall(self, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner.on_incoming_call(self, prm)

        guard("onIncomingCall", run)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[Any], account: Any, pj_call_id: int, key: CallId) -> None:
        super().__init__(account, pj_call_id)
        self._owner = owner
        self.key = key

    def _forward(self, where: str, prm: Any) -> None:
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                getattr(owner, where)(self.key, prm)

        guard(where, run)

    def onCallState(self, prm: Any) -> None:
        self._forward("on_call_state", prm)

    def onCallMediaState(self, prm: Any) -> None:
        self._forward("on_call_media_state", prm)

    def onDtmfDigit(self, prm: Any) -> None:
        self._forward("on_dtmf_digit", prm)

    def onDtmfEvent(self, prm: Any) -> None:
        self._forward("on_dtmf_event", prm)

    def onCallTransferStatus(self, prm: Any) -> None:
        self._forward("on_transfer_status", prm)

    def onCallTsxState(self, prm: Any) -> None:
        self._forward("on_call_tsx_state", prm)

    def onCallRxOffer(self, prm: Any) -> None:
        # synchronous: pjsua reads prm.statusCode when this returns (200 or 488)
        self._forward("on_call_rx_offer", prm)


class Player(pj.AudioMediaPlayer):  # type: ignore[misc]
    def __init__(self, owner: weakref.ref[Any], key: CallId, token: int) -> None:
        super().__init__()
        self._owner = owner
        self.key = key
        self.token = token

    def onEof2(self) -> None:
        # Never destroy a player inside its own callback: the adapter defers the work.
        def run() -> None:
            owner = self._owner()
            if owner is not None:
                owner.on_player_eof(self.key, self.token)

        guard("onEof2", run)


def sip_code_of(error: Any) -> int:
    status = int(getattr(error, "status", 0))
    code = status - PJSIP_ERRNO_START
    return code if 100 <= code <= 699 else 500


def error_text(error: BaseException) -> str:
    info = getattr(error, "info", None)
    if callable(info):
        with contextlib.suppress(Exception):
            return str(info()).strip()
    return str(error)
