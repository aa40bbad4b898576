"""Self-check of the installed pjsua2: what build it is, and what the engine will see.

Prints one JSON object: the build marker (`pjsua2._build_info`, absent in the PyPI wheel), the
call limit as the engine learns it (`pjsua_call_get_max_count()` through ctypes after
`libInit` with a larger `maxCalls`), whether every C symbol the engine calls through ctypes is
exported, and whether a SIP transport binds on ::1. With --require-tuned, exits 1 unless the
marker is there and the measured limit matches it.

Runs its own short-lived Endpoint, so run it in a process of its own (build.sh does).
"""

from __future__ import annotations

import ctypes
import json
import socket
import sys
from typing import Any

# the C functions engine/telephony/pjsua.py declares through ctypes
ENGINE_SYMBOLS = (
    "pj_log_set_level",
    "pjsua_call_get_max_count",
    "pjsua_call_get_count",
    "pjsip_rdata_get_dlg",
    "pjsip_dlg_respond",
    "pjsua_get_pjsip_endpt",
    "pjsip_endpt_register_module",
    "pjsip_endpt_unregister_module",
    "pjsip_endpt_create_pool",
    "pjsip_endpt_release_pool",
    "pjsip_retry_after_hdr_create",
    "pj_list_insert_before",
    "pjsip_rdata_get_tsx",
    "pjsip_rx_data_get_info",
    "pjsip_endpt_respond_stateless",
)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def main() -> int:
    require_tuned = "--require-tuned" in sys.argv[1:]
    import pjsua2 as pj

    out: dict[str, Any] = {"module": pj.__file__}
    build_info = None
    try:
        from pjsua2 import _build_info

        build_info = _build_info.BUILD_INFO
    except ImportError:
        pass
    out["tuned"] = build_info is not None
    out["version"] = getattr(pj, "__version__", None)
    if build_info is not None:
        out["pjproject_version"] = build_info["pjproject_version"]
        out["source"] = build_info["source"]
        out["production_ok"] = build_info["production_ok"]
        out["limits"] = build_info["limits"]
    so = pj._pjsua2.__file__
    lib = ctypes.CDLL(so)
    out["missing_symbols"] = [s for s in ENGINE_SYMBOLS if not hasattr(lib, s)]
    lib.pjsua_call_get_max_count.restype = ctypes.c_uint
    lib.pj_log_set_level.argtypes = [ctypes.c_int]
    lib.pj_log_set_level(0)

    ep = pj.Endpoint()
    ep.libCreate()
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 100000  # pjsua caps it at the build's PJSUA_MAX_CALLS
        cfg.logConfig.level = 0
        cfg.logConfig.consoleLevel = 0
        ep.libInit(cfg)
        out["max_calls"] = int(lib.pjsua_call_get_max_count())
        if ipv6_loopback():
            tcfg = pj.TransportConfig()
            tcfg.port = 0
            tcfg.boundAddress = "::1"
            try:
                ep.transportCreate(pj.PJSIP_TRANSPORT_UDP6, tcfg)
                out["ipv6_transport"] = True
            except pj.Error as exc:
                out["ipv6_transport"] = f"failed: {exc.info()}"
        else:
            out["ipv6_transport"] = "no ::1 on this machine"
        out["codecs"] = sorted(str(c.codecId) for c in ep.codecEnum2())
    finally:
        ep.libDestroy()
    print(json.dumps(out, indent=1))
    if require_tuned:
        problems = []
        if build_info is None:
            problems.append("the installed pjsua2 is not the tuned build (no pjsua2._build_info)")
        elif out["max_calls"] != build_info["limits"]["PJSUA_MAX_CALLS"]:
            problems.append(
                f"pjsua_call_get_max_count() = {out['max_calls']}, "
                f"the build says {build_info['limits']['PJSUA_MAX_CALLS']}"
            )
        if out["missing_symbols"]:
            problems.append(f"symbols the engine needs are not exported: {out['missing_symbols']}")
        for p in problems:
            print(f"pjsua2 self-check: {p}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
