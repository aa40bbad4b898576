"""The pjsip and pjsua C functions pjsua2 does not wrap, declared through ctypes on the loaded
`_pjsua2` module, and the structure layouts the door hands to pjsip.

`pjsua_lib()` declares what the adapter always uses (log level, call counts, answering an
in-dialog request, ending an un-ACKed call's session); `bind_door_symbols()` what the door
needs (module registration, SDP info, stateless answers), False when the build does not
export one of them.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import pjsua2 as pj

log = logging.getLogger(__name__)

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

# pj_status_t of a SIP status code: PJSIP_ERRNO_FROM_SIP_STATUS(code) = 170000 + code.
PJSIP_ERRNO_START = 170000

RxRequestFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class PjStrRef(ctypes.Structure):
    """A pj_str_t read in place (not NUL-terminated: use `ptr` with `slen`)."""

    _fields_ = [("ptr", ctypes.c_void_p), ("slen", ctypes.c_ssize_t)]


class SdpInfo(ctypes.Structure):
    """pjsip_rdata_sdp_info (pjsip-ua/sip_inv.h): the INVITE's SDP body, as pjsip parsed it."""

    _fields_ = [("body", PjStrRef), ("sdp_err", ctypes.c_int), ("sdp", ctypes.c_void_p)]


class PjsipModule(ctypes.Structure):
    _fields_ = [
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("name", PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p),
        ("start", ctypes.c_void_p),
        ("stop", ctypes.c_void_p),
        ("unload", ctypes.c_void_p),
        ("on_rx_request", RxRequestFn),
        ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", ctypes.c_void_p),
        ("on_tx_response", ctypes.c_void_p),
        ("on_tsx_state", ctypes.c_void_p),
    ]


# Every module struct and C callback ever handed to pjsip stays referenced for the process
# lifetime: freeing one that pjsip still points to would crash on the next request.
KEEP_ALIVE: list[object] = []


def pjsua_lib() -> ctypes.CDLL | None:
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
        # ending a call that never got its ACK without waiting for its BYE to time out
        lib.pjsip_dlg_inc_lock.argtypes = [ctypes.c_void_p]
        lib.pjsip_dlg_inc_lock.restype = None
        lib.pjsip_dlg_dec_lock.argtypes = [ctypes.c_void_p]
        lib.pjsip_dlg_dec_lock.restype = None
        lib.pjsip_tsx_get_dlg.argtypes = [ctypes.c_void_p]
        lib.pjsip_tsx_get_dlg.restype = ctypes.c_void_p
        lib.pjsip_dlg_get_inv_session.argtypes = [ctypes.c_void_p]
        lib.pjsip_dlg_get_inv_session.restype = ctypes.c_void_p
        # pjsip_inv_terminate(inv, st_code, notify)
        lib.pjsip_inv_terminate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.pjsip_inv_terminate.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


def bind_door_symbols(lib: ctypes.CDLL) -> bool:
    """Declare the C functions the door uses; False if the module does not export one."""
    try:
        lib.pjsip_rdata_get_sdp_info.argtypes = [ctypes.c_void_p]
        lib.pjsip_rdata_get_sdp_info.restype = ctypes.POINTER(SdpInfo)
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


def transaction_dialog(lib: ctypes.CDLL | None, tsx: Any) -> int | None:
    """The pjsip dialog (address) of a transaction (a `pj.SipTransaction`), or None."""
    ptr = getattr(tsx, "pjTransaction", None)
    if lib is None or ptr is None:
        return None
    try:
        dlg = lib.pjsip_tsx_get_dlg(ctypes.c_void_p(int(ptr)))
    except (TypeError, ValueError, AttributeError, OSError):
        return None
    return int(dlg) if dlg else None


def terminate_session(lib: ctypes.CDLL, dialog: int, code: int) -> int:
    """End the INVITE session of `dialog` at once, sending nothing more (pjsip_inv_terminate,
    with pjsua told as for any disconnect). pjsua thread only; the dialog must be alive (its
    call not disconnected). The pj_status, or -1 when the dialog has no session."""
    dlg = ctypes.c_void_p(dialog)
    lib.pjsip_dlg_inc_lock(dlg)
    try:
        inv = lib.pjsip_dlg_get_inv_session(dlg)
        if not inv:
            return -1
        return int(lib.pjsip_inv_terminate(inv, code, 1))
    finally:
        lib.pjsip_dlg_dec_lock(dlg)


def respond_in_dialog(lib: ctypes.CDLL | None, rdata: Any, code: int) -> None:
    """Answer an in-dialog request (a `pj.SipRxData`) with `code`, through its dialog."""
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
