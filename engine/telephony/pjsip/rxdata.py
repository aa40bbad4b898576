"""A received request's raw text and source address, read out of its `pjsip_rx_data`.

Where pjsip_rx_data keeps the received text: pjsip_rx_data_get_info(rdata) returns, and
stores in the rx data, `msg_info.info`; in pjsip_rx_data (sip_types.h, 2.x) that field
follows `char *msg_buf; int len; pjsip_msg *msg;` (LP64: at info-24, info-16, info-8), and
msg_buf points into the rx data's own packet buffer, before msg_info. The offset of `info`
depends on build options (PJSIP_MAX_PKT_LEN), so it is found once, at run time, by looking
for the stored pointer, and checked on every request.

Every read is checked (the pointer found again, the lengths plausible, the source address's
fields against each other); when the layout is not the expected one, the reader says so once
and returns None, and the runtime applies what the door could not.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket

log = logging.getLogger(__name__)

RAW_SCAN_LIMIT = 1 << 18  # bytes of the rx data searched for msg_info.info (once)


def source_at(rdata: int, m: int) -> str | None:
    """`pkt_info`'s source address, read backwards from `msg_info` at `rdata + m` (see
    `RawLocator.source`); None unless every field agrees."""
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


class RawLocator:
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
                    "by the runtime (403, after pjsua's 100 Trying) instead of being ignored"
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
        found = source_at(rdata, m)
        if found is None:
            self.source_failed = True
            log.warning(
                "cannot read a request's source address in this pjsip build: the per-source "
                "limits act in the runtime, after pjsua has created the call"
            )
        return found
