"""What the installed pjsua2 build can do, and the socket tuning it needs.

The PyPI wheel has 4 call slots, no working IPv6 and a `select` ioqueue of 64 sockets with
debug assertions on (a connection flood aborts it); the tuned build (build/pjsua2) says what it
has in its marker `pjsua2.BUILD_INFO`.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pjsua2 as pj
import psutil

from engine.errors import TelephonyStartError
from engine.telephony.pjsip.symbols import bind_door_symbols, pjsua_lib

log = logging.getLogger(__name__)

SMALL_BUILD_SLOTS = 4  # the PyPI wheel's PJSUA_MAX_CALLS

# pjsua 2.13+ names it PJSUA_IPV6_ENABLED_USE_IPV6_ONLY; 2.12 (Debian's ring tree, a tuned
# build's development source) has only PJSUA_IPV6_ENABLED, which means the same there.
IPV6_ONLY = getattr(pj, "PJSUA_IPV6_ENABLED_USE_IPV6_ONLY", None) or pj.PJSUA_IPV6_ENABLED


def build_has_ipv6() -> bool:
    """Whether this pjsua2 is compiled with IPv6: the tuned build says so in its marker
    (`pjsua2.BUILD_INFO`, build/pjsua2); the PyPI wheel has no marker and no working IPv6."""
    info = getattr(pj, "BUILD_INFO", None)
    return bool(isinstance(info, dict) and info.get("limits", {}).get("PJ_HAS_IPV6"))


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


# New calls a second (and a burst) that a build whose ioqueue aborts when full may take: each
# new INVITE opens two media sockets before any callback, and a closed socket's ioqueue key
# is reused only 500 ms later (PJ_IOQUEUE_KEY_FREE_DELAY). The PyPI wheel has 64 keys in
# all; measured: a few dozen INVITEs within half a second aborted it. 10/s + 5 keeps at most
# 10 new calls (2 audio streams each: 40 keys) in that delay, plus 4 calls and the SIP socket.
FRAGILE_NEW_CALL_RATE = 10.0
FRAGILE_NEW_CALL_BURST = 5
TUNED_BUILD_HINT = "a tuned pjsua2 build raises it: make pjsua2 (README, Capacity)"


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


# What SWIG's `-threads` adds to a module: its callbacks take the GIL (PyGILState_Ensure) and
# its calls into pjsua release it (PyEval_SaveThread). A module generated without it calls
# back into Python from the pjsua thread without the GIL and aborts the process on the first
# call ("PyThreadState_Get: ... the GIL is released", in onEof2).
SWIG_THREAD_SYMBOLS = (b"PyGILState_Ensure", b"PyEval_SaveThread")
BUILD_FIX = "install a build the engine can drive: make pjsua2 (or make pjsua2-pypi)"


def swig_threads_problem(module: bytes, name: str) -> str | None:
    """Why the shared object `module` (its bytes) cannot be driven from the pjsua thread, or
    None. Looks for the names SWIG's `-threads` makes it import (in its dynamic string table,
    each between NUL bytes)."""
    missing = [s.decode() for s in SWIG_THREAD_SYMBOLS if b"\0" + s + b"\0" not in module]
    if not missing:
        return None
    return (
        f"{name} was generated by SWIG without -threads (it does not use "
        f"{', '.join(missing)}): its callbacks would abort the engine on the first call"
    )


def build_problems() -> list[str]:
    """What the installed pjsua2 lacks that the engine relies on: SWIG thread support, the C
    functions it calls through ctypes (`engine.telephony.pjsip.symbols`). Empty: all there."""
    problems = []
    module = Path(pj._pjsua2.__file__)
    try:
        problem = swig_threads_problem(module.read_bytes(), module.name)
    except OSError as error:
        problem = f"cannot read {module}: {error.strerror}"
    if problem is not None:
        problems.append(problem)
    lib = pjsua_lib()
    if lib is None:
        problems.append(
            f"{module.name} does not export the pjsua functions the engine calls "
            "(pjsua_call_get_count, pjsip_dlg_respond, ...)"
        )
    elif not bind_door_symbols(lib):
        problems.append(
            f"{module.name} does not export the pjsip functions of the SIP door "
            "(pjsip_endpt_register_module, pjsip_endpt_respond_stateless, ...)"
        )
    return problems
