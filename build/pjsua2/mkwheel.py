"""Package a built `_pjsua2` extension and its SWIG `pjsua2.py` as a `pjsua2-python` wheel.

The wheel has the PyPI wheel's layout (a `pjsua2` package whose `_pjsua2` submodule is the C
extension, so `pjsua2._pjsua2.__file__` is the shared object the engine opens with ctypes) and
adds `pjsua2._build_info`: the marker of a tuned build (`TUNED = True`, the compiled-in limits,
the pjproject version and where its source came from).

Version: `2.15.1.post1+vr.c<calls>.<source>` for a pjproject 2.15.1 build, so that it satisfies
vr-engine's `pjsua2-python==2.15.1.post1` pin (pip ignores local labels when matching) and a
later `pip install -e .` keeps it; `<pjproject version>+vr.c<calls>.<source>` otherwise (e.g.
`2.12.1+vr.c1024.ring`), which does not satisfy that pin: `pip install -e .` would put the PyPI
wheel back.

Standard library only; called by build.sh.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import pprint
import sys
import zipfile
from pathlib import Path

DIST = "pjsua2-python"

INIT_PY = '''\
"""pjsua2, the SWIG binding of pjproject: vr-engine's tuned build.

`pjsua2.BUILD_INFO` says what it is (pjproject version, source, compiled-in limits);
`pjsua2.TUNED` is True. Built by build/pjsua2/build.sh of vr-engine.
"""

from ._build_info import BUILD_INFO, PJSUA_MAX_CALLS, TUNED, __version__
from .pjsua2 import *  # noqa: F403

# the C extension itself: vr-engine calls the pjsua/pjsip functions that SWIG does not wrap
# through ctypes on this shared object
from . import _pjsua2  # noqa: E402
'''


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ext", type=Path, required=True)
    ap.add_argument("--py", type=Path, required=True)
    ap.add_argument("--pj-version", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--source-detail", required=True)
    ap.add_argument("--limits", type=Path, required=True)
    ap.add_argument("--configure", required=True)
    ap.add_argument("--ioqueue", required=True)
    ap.add_argument("--cflags", required=True)
    ap.add_argument("--swig", required=True)
    ap.add_argument("--cache-key", required=True)
    ap.add_argument("--build-seconds", type=int, required=True)
    ap.add_argument("--py-tag", required=True)
    ap.add_argument("--plat-tag", required=True)
    a = ap.parse_args()

    limits = json.loads(a.limits.read_text())
    calls = int(limits["PJSUA_MAX_CALLS"])
    local = f"vr.c{calls}.{a.source}"
    # 2.15.1: the version vr-engine's pyproject pins (pjsua2-python==2.15.1.post1)
    pinned = a.pj_version == "2.15.1"
    version = f"2.15.1.post1+{local}" if pinned else f"{a.pj_version}+{local}"
    production_ok = a.source == "upstream" and pinned
    info = {
        "tuned": True,
        "pjproject_version": a.pj_version,
        "source": a.source,
        "source_detail": a.source_detail,
        "production_ok": production_ok,
        "note": (
            "pjproject release build"
            if production_ok
            else "not the pinned upstream release: fine for development, CI and benchmarks"
            + (
                "; Debian's ring tree is pjproject 2.12.1 with Jami's patches (known CVEs fixed"
                " in later releases): NOT for production"
                if a.source == "ring"
                else ""
            )
        ),
        "limits": limits,
        "configure_flags": a.configure.split(),
        "ioqueue": a.ioqueue,
        "cflags": a.cflags.split(),
        # NDEBUG: pjlib's assertions are off, so a full ioqueue (a TCP connection flood)
        # refuses the connection instead of aborting the process
        "release_asserts_off": "-DNDEBUG" in a.cflags.split(),
        "swig": a.swig,
        "swig_threads": True,
        "cache_key": a.cache_key,
        "build_seconds": a.build_seconds,
        "python": a.py_tag,
        "platform": a.plat_tag,
    }
    build_info_py = (
        '"""Marker of vr-engine\'s tuned pjsua2 build (written by build/pjsua2/mkwheel.py)."""\n\n'
        f"TUNED = True\n__version__ = {version!r}\nPJSUA_MAX_CALLS = {calls}\n"
        f"BUILD_INFO = {pprint.pformat(info, width=96, sort_dicts=False)}\n"
    )
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {DIST}\n"
        f"Version: {version}\n"
        "Summary: pjsua2 (pjproject SWIG binding), vr-engine's tuned build: "
        f"{calls} calls, epoll, IPv6, no sound/video\n"
        "License: GPL-2.0-or-later\n"
        "Requires-Python: >=3.8\n"
        "\n"
        f"Built by vr-engine's build/pjsua2/build.sh from {a.source_detail}.\n"
    )
    tag = f"{a.py_tag}-{a.py_tag}-{a.plat_tag}"
    wheel_meta = (
        f"Wheel-Version: 1.0\nGenerator: vr-engine mkwheel.py\nRoot-Is-Purelib: false\nTag: {tag}\n"
    )
    dist_info = f"pjsua2_python-{version}.dist-info"
    files: list[tuple[str, bytes]] = [
        ("pjsua2/__init__.py", INIT_PY.encode()),
        ("pjsua2/_build_info.py", build_info_py.encode()),
        ("pjsua2/pjsua2.py", a.py.read_bytes()),
        (f"pjsua2/{a.ext.name}", a.ext.read_bytes()),
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel_meta.encode()),
        (f"{dist_info}/top_level.txt", b"pjsua2\n"),
    ]
    record = "\n".join(record_line(n, d) for n, d in files) + f"\n{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))

    a.out.mkdir(parents=True, exist_ok=True)
    wheel = a.out / f"pjsua2_python-{version}-{tag}.whl"
    tmp = wheel.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    tmp.rename(wheel)
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
