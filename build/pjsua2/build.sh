#!/usr/bin/env bash
# Build vr-engine's tuned pjsua2 (raised call limits, epoll, IPv6, no sound/video/TLS/SRTP) as a
# wheel, cache it, and install it into the venv in place of the PyPI `pjsua2-python` wheel.
#
#   build/pjsua2/build.sh [install|wheel|check|restore|clean] [--force]
#
#   install  (default) build the wheel unless it is cached, install it, run the self-check
#   wheel    build (or find) the wheel and print its path
#   check    self-check of the pjsua2 installed in $PYTHON (prints its build facts as JSON)
#   restore  put the PyPI wheel (the version pyproject.toml pins) back
#   clean    remove the cached wheels, sources and work trees
#   --force  rebuild even if a wheel for the same recipe and source is cached
#
# Sources (PJSUA2_SOURCE, default auto):
#   upstream  the pjproject release tarball pinned below by version and sha256 (needs internet)
#   path      PJPROJECT_SRC=/path/to/pjproject-X.Y.tar.gz or an unpacked tree
#   ring      Debian's `ring` source package (pjproject 2.12.1 with Jami's patches; Debian's
#             repack lacks the GSM, iLBC, Speex and G.722.1 sources). Only the package registry
#             is needed: adds a deb-src entry if apt has none, then `apt-get source
#             --download-only ring`. Fine for development, CI and benchmarks; NOT for
#             production (older than 2.15, known CVEs fixed since): build `upstream` there.
#   auto      path if PJPROJECT_SRC is set; else upstream (cached tarball, or a download);
#             else, if the download fails, ring.
#
# Other settings: PYTHON (default: the repo's .venv/bin/python), PJSUA2_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/vr-engine/pjsua2), JOBS (default: nproc), KEEP_WORK=1 keeps the
# build tree, PJSUA2_UPSTREAM_URL / PJSUA2_UPSTREAM_SHA256 override the pin (mirrors, tests).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

PJ_UPSTREAM_VERSION=2.15.1
PJ_UPSTREAM_URL=${PJSUA2_UPSTREAM_URL:-https://github.com/pjsip/pjproject/archive/refs/tags/${PJ_UPSTREAM_VERSION}.tar.gz}
PJ_UPSTREAM_SHA256=${PJSUA2_UPSTREAM_SHA256:-8f3bd99caf003f96ed8038b8a36031eb9d8cd9eaea1eaff7e01c2eef6bd55706}

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE=${PJSUA2_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vr-engine/pjsua2}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
SOURCE=${PJSUA2_SOURCE:-auto}

# Everything pjproject offers that a SIP receptionist does not use is off. The codecs kept are
# G.711 (PCMU/PCMA) and G.722, the engine's DEFAULT_CODECS.
CONFIGURE_FLAGS=(
  --enable-epoll
  --disable-sound --disable-video --disable-ext-sound
  --disable-ssl --disable-darwin-ssl
  --disable-gsm-codec --disable-ilbc-codec --disable-speex-codec --disable-speex-aec
  --disable-g7221-codec --disable-l16-codec
  --disable-opencore-amr --disable-silk --disable-opus --disable-bcg729
  --disable-sdl --disable-ffmpeg --disable-v4l2 --disable-openh264 --disable-vpx
  --disable-libyuv --disable-libwebrtc --disable-android-mediacodec
)
# NDEBUG: a release build. pjlib's debug assertions abort the process on conditions it then
# handles as errors, e.g. a full ioqueue when a flood of TCP connections arrives (pjproject
# issues 2617, 4935): with NDEBUG the connection is refused and every call goes on.
OPT_CFLAGS="-O2 -fPIC -g0 -DNDEBUG"
SWIG_FLAGS=(-c++ -python -threads -w312)

say() { printf 'pjsua2: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s; }

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

ACTION=install
FORCE=0
for arg in "$@"; do
  case "$arg" in
    install|wheel|check|restore|clean) ACTION=$arg ;;
    --force) FORCE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

[ -x "$PYTHON" ] || die "no Python at $PYTHON (run 'make install' first, or set PYTHON)"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------
# check / restore / clean

run_check() {
  "$PYTHON" "$HERE/selfcheck.py" "$@"
}

if [ "$ACTION" = check ]; then
  run_check --require-tuned
  exit $?
fi

if [ "$ACTION" = restore ]; then
  pin=$(grep -o '"pjsua2-python[^"]*"' "$ROOT/pyproject.toml" | tr -d '"')
  [ -n "$pin" ] || die "no pjsua2-python requirement in pyproject.toml"
  say "reinstalling $pin from PyPI"
  "$PYTHON" -m pip install --quiet --force-reinstall --no-deps "$pin"
  run_check || true
  exit 0
fi

if [ "$ACTION" = clean ]; then
  say "removing $CACHE"
  rm -rf "$CACHE"
  exit 0
fi

mkdir -p "$CACHE/wheels" "$CACHE/src" "$CACHE/work"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

PY_TAG=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
PLAT_TAG=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')

# The cache key: the recipe (this script, config_site.h, the packaging helpers), the source's
# identity and the Python ABI. A cached wheel is reused only when all of them match.
recipe_hash() {
  cat "$HERE/build.sh" "$HERE/config_site.h" "$HERE/mkwheel.py" "$HERE/selfcheck.py" \
    | sha256sum | cut -c1-16
}

cache_key() { # $1 = source identity
  printf '%s\n%s\n%s\n%s\n' "$(recipe_hash)" "$1" "$PY_TAG" "$PLAT_TAG" | sha256sum | cut -c1-16
}

cached_wheel() { # $1 = key; prints the path of a cached wheel, if any
  local f
  for f in "$CACHE/wheels/$1"/*.whl; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# sources. Each fetch_* leaves an unpacked pjproject tree at $WORK/pjproject and sets
# SRC_KIND / SRC_DETAIL.

upstream_tarball="$CACHE/src/pjproject-$PJ_UPSTREAM_VERSION.tar.gz"

download_upstream() {
  if [ -f "$upstream_tarball" ] && [ "$(sha256_of "$upstream_tarball")" = "$PJ_UPSTREAM_SHA256" ]; then
    return 0
  fi
  rm -f "$upstream_tarball"
  say "downloading $PJ_UPSTREAM_URL"
  local tmp="$upstream_tarball.part"
  if command -v curl >/dev/null; then
    curl -fsSL --connect-timeout 15 --max-time 600 -o "$tmp" "$PJ_UPSTREAM_URL" || { rm -f "$tmp"; return 1; }
  elif command -v wget >/dev/null; then
    wget -q -T 30 -O "$tmp" "$PJ_UPSTREAM_URL" || { rm -f "$tmp"; return 1; }
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "$PJ_UPSTREAM_URL" "$tmp" || { rm -f "$tmp"; return 1; }
  fi
  local got
  got=$(sha256_of "$tmp")
  if [ "$got" != "$PJ_UPSTREAM_SHA256" ]; then
    rm -f "$tmp"
    die "sha256 mismatch for $PJ_UPSTREAM_URL: got $got, want $PJ_UPSTREAM_SHA256"
  fi
  mv "$tmp" "$upstream_tarball"
}

find_tree() { # $1 = directory; prints the pjproject tree inside it (has version.mak + pjlib/)
  local d
  while IFS= read -r d; do
    d=$(dirname "$d")
    [ -d "$d/pjlib" ] && [ -d "$d/pjsip-apps/src/swig" ] && { echo "$d"; return 0; }
  done < <(find "$1" -maxdepth 8 -name version.mak -not -path '*/third_party/*' | sort)
  return 1
}

unpack_to_work() { # $1 = tarball or tree
  rm -rf "$WORK/src" "$WORK/pjproject"
  mkdir -p "$WORK/src"
  if [ -d "$1" ]; then
    local tree
    tree=$(find_tree "$1") || die "$1 is not a pjproject tree (no version.mak, pjlib/, pjsip-apps/src/swig)"
    cp -a "$tree" "$WORK/pjproject"
  else
    tar -xf "$1" -C "$WORK/src"
    local tree
    tree=$(find_tree "$WORK/src") || die "$1 holds no pjproject tree"
    mv "$tree" "$WORK/pjproject"
  fi
  rm -rf "$WORK/src"
}

path_identity() {
  local src=$1
  [ -e "$src" ] || die "PJPROJECT_SRC=$src does not exist"
  if [ -d "$src" ]; then
    # content hash of the tree (build outputs of an earlier in-tree build would change it too)
    echo "tree:$( (cd "$src" && find . -type f ! -path './.git/*' -print0 | sort -z \
      | xargs -0 sha256sum) | sha256sum | cut -c1-32)"
  else
    echo "tarball:$(sha256_of "$src")"
  fi
}

ring_orig() { ls "$CACHE/src/ring/"ring_*.orig.tar.gz 2>/dev/null | sort | tail -n1; }

download_ring() {
  [ -n "$(ring_orig)" ] && return 0
  command -v apt-get >/dev/null || die "PJSUA2_SOURCE=ring needs apt-get (a Debian machine)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "PJSUA2_SOURCE=ring needs root (apt-get) or sudo"
    sudo=sudo
  fi
  if ! apt-cache showsrc ring 2>/dev/null | grep -q '^Package: ring'; then
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    say "adding a deb-src entry for Debian $codename (apt has no source for ring)"
    $sudo tee /etc/apt/sources.list.d/vr-engine-deb-src.sources >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    $sudo apt-get update -qq
    apt-cache showsrc ring 2>/dev/null | grep -q '^Package: ring' \
      || die "apt still has no source package 'ring' (deb-src entry for this release?)"
  fi
  mkdir -p "$CACHE/src/ring"
  say "apt-get source --download-only ring (about 30 MB)"
  (cd "$CACHE/src/ring" && $sudo apt-get source --download-only -qq ring >/dev/null 2>&1) \
    || (cd "$CACHE/src/ring" && $sudo apt-get source --download-only ring)
  [ -n "$(ring_orig)" ] || die "apt-get source ring gave no orig tarball"
}

unpack_ring() {
  local orig
  orig=$(ring_orig)
  rm -rf "$WORK/src" "$WORK/pjproject"
  mkdir -p "$WORK/src"
  tar -xzf "$orig" -C "$WORK/src" --wildcards '*/daemon/contrib/tarballs-unpacked/pjproject-*'
  local tree
  tree=$(find_tree "$WORK/src") || die "$orig has no pjproject tree under daemon/contrib/tarballs-unpacked"
  mv "$tree" "$WORK/pjproject"
  rm -rf "$WORK/src"
  local dsc
  dsc=$(ls "$CACHE/src/ring/"ring_*.dsc 2>/dev/null | sort | tail -n1)
  SRC_DETAIL="Debian source package $(basename "${dsc:-$orig}" .dsc), $(basename "$tree")"
}

# ---------------------------------------------------------------------------------------------
# resolve the source and the cache key

resolve_source() {
  case "$SOURCE" in
    auto)
      if [ -n "${PJPROJECT_SRC:-}" ]; then
        SOURCE=path
      elif [ "$FORCE" = 0 ] && cached_wheel "$(cache_key "upstream:$PJ_UPSTREAM_VERSION:$PJ_UPSTREAM_SHA256")" >/dev/null; then
        SOURCE=upstream
      elif download_upstream; then
        SOURCE=upstream
      else
        say "the upstream tarball could not be downloaded: falling back to Debian's ring source package"
        say "(pjproject 2.12.1 + Jami patches: fine for development, CI and benchmarks, not production)"
        SOURCE=ring
      fi
      ;;
    upstream|path|ring) ;;
    *) die "PJSUA2_SOURCE=$SOURCE: use auto, upstream, path or ring" ;;
  esac
  case "$SOURCE" in
    upstream) SRC_ID="upstream:$PJ_UPSTREAM_VERSION:$PJ_UPSTREAM_SHA256" ;;
    path)
      [ -n "${PJPROJECT_SRC:-}" ] || die "PJSUA2_SOURCE=path needs PJPROJECT_SRC"
      SRC_ID="path:$(path_identity "$PJPROJECT_SRC")"
      ;;
    ring) SRC_ID="ring" ;;  # whatever version apt has; --force rebuilds after a Debian update
  esac
  KEY=$(cache_key "$SRC_ID")
  WORK="$CACHE/work/$KEY"
}

# ---------------------------------------------------------------------------------------------
# build

LOG=""
step() { # $1 = label, rest = command; output to $LOG, tail shown on failure
  local label=$1; shift
  local t0
  t0=$(now)
  say "$label ..."
  if ! "$@" >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "$label failed (full log: $LOG)"
  fi
  say "$label: $(( $(now) - t0 )) s"
}

pj_var() { # $1 = build.mak variable
  make --no-print-directory -s -C "$WORK/pjproject/pjsip-apps/src/swig/python" -f vr-vars.mak "print-$1"
}

# pjproject before 2.14 (the ring tree is 2.12.1): when epoll reports a socket readable that
# has no read posted yet (an RTP/RTCP socket between its creation and media start, or after
# media stop), pj_ioqueue_poll() sleeps for the whole poll timeout - 500 ms in pjmedia's media
# thread, which receives RTP for every call. Measured here: the first 480 ms of each call's
# audio lost, DTMF late. Upstream later capped that sleep at 10 ms; this applies the same cap.
backport_epoll_sleep_cap() {
  local f=$1/pjlib/src/pj/ioqueue_epoll.c
  if grep -q 'if (delay > 10) delay = 10;' "$f"; then
    return 0  # already capped (later upstream releases)
  fi
  perl -0pi -e 's/(if \(count > 0 && !event_cnt && msec > 0\) \{)\s*\n(\s*)pj_thread_sleep\(msec\);/$1\n$2\/* vr-engine backport: cap the sleep at 10 ms  (as later upstream releases do) *\/\n$2pj_thread_sleep(msec > 10 ? 10 : msec);/' "$f"
  if grep -q 'pj_thread_sleep(msec > 10 ? 10 : msec);' "$f"; then
    say "backported: epoll ioqueue sleeps at most 10 ms on unhandled events"
  else
    say "warning: could not cap the epoll ioqueue sleep in $f (media may stall for 500 ms)"
  fi
}

build_wheel() {
  local t_start
  t_start=$(now)
  command -v swig >/dev/null || die "swig is missing (Debian: apt-get install swig)"
  command -v g++ >/dev/null || die "g++ is missing (Debian: apt-get install build-essential)"
  local pyinc
  pyinc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$pyinc/Python.h" ] || die "no Python.h in $pyinc (Debian's python3-dev for /usr/bin/python3)"

  rm -rf "$CACHE/work/"*  # this build's tree and any left by an earlier failed one
  mkdir -p "$WORK"
  LOG="$WORK/build.log"
  : >"$LOG"
  say "building from source '$SOURCE' in $WORK (log: $LOG)"
  case "$SOURCE" in
    upstream)
      download_upstream || die "cannot download $PJ_UPSTREAM_URL (no internet? try PJSUA2_SOURCE=ring or PJPROJECT_SRC=...)"
      unpack_to_work "$upstream_tarball"
      SRC_DETAIL="pjproject $PJ_UPSTREAM_VERSION release tarball (sha256 $PJ_UPSTREAM_SHA256)"
      ;;
    path)
      unpack_to_work "$PJPROJECT_SRC"
      SRC_DETAIL="$PJPROJECT_SRC"
      ;;
    ring)
      download_ring
      unpack_ring
      ;;
  esac
  local pj=$WORK/pjproject
  PJ_VERSION=$(sed -n 's/^export PJ_VERSION_\(MAJOR\|MINOR\|REV\) *:= *\([0-9]*\).*/\2/p' "$pj/version.mak" | paste -sd.)
  say "pjproject $PJ_VERSION: $SRC_DETAIL"

  cp "$HERE/config_site.h" "$pj/pjlib/include/pj/config_site.h"
  chmod +x "$pj/configure" "$pj/aconfigure" 2>/dev/null || true
  backport_epoll_sleep_cap "$pj"

  (cd "$pj" && step "configure" env CFLAGS="$OPT_CFLAGS" CXXFLAGS="$OPT_CFLAGS" \
    ./configure "${CONFIGURE_FLAGS[@]}")
  (cd "$pj" && step "make dep" make dep)
  (cd "$pj" && step "make lib (-j$JOBS)" make -j"$JOBS" lib)

  local swigdir=$pj/pjsip-apps/src/swig/python
  cat >"$swigdir/vr-vars.mak" <<'EOF'
include ../../../../build.mak
print-%:
	@echo '$($*)'
EOF
  (cd "$swigdir" && step "swig" swig "${SWIG_FLAGS[@]}" \
    -I../../../../pjlib/include -I../../../../pjlib-util/include -I../../../../pjmedia/include \
    -I../../../../pjsip/include -I../../../../pjnath/include \
    -o pjsua2_wrap.cpp ../pjsua2.i)

  local ext_suffix cxxflags ldflags ldlibs
  ext_suffix=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  cxxflags=$(pj_var APP_CXXFLAGS)
  ldflags=$(pj_var APP_LDXXFLAGS)
  ldlibs=$(pj_var APP_LDXXLIBS)
  # shellcheck disable=SC2086  # word splitting of the flag lists is wanted
  (cd "$swigdir" && step "compile _pjsua2$ext_suffix" ${CXX:-g++} -shared -fPIC $cxxflags \
    -I"$pyinc" -Wno-deprecated-declarations pjsua2_wrap.cpp -o "_pjsua2$ext_suffix" \
    $ldflags $ldlibs -Wl,-s)

  # the limits as the compiler sees them (config_site.h + pjproject's own defaults)
  cat >"$WORK/limits.c" <<'EOF'
#include <pjsua-lib/pjsua.h>
#include <pjsua-lib/pjsua_internal.h>
#include <stdio.h>
int main(void) {
    printf("{\"PJSUA_MAX_CALLS\": %d, \"PJSUA_MAX_PLAYERS\": %d, \"PJSUA_MAX_RECORDERS\": %d,"
           " \"PJSUA_MAX_CONF_PORTS\": %d, \"PJ_IOQUEUE_MAX_HANDLES\": %d,"
           " \"PJSIP_MAX_TSX_COUNT\": %d, \"PJSIP_MAX_DIALOG_COUNT\": %d,"
           " \"PJ_HAS_IPV6\": %d, \"PJMEDIA_HAS_SRTP\": %d, \"PJMEDIA_HAS_VIDEO\": %d,"
           " \"PJ_IOQUEUE_MAX_EVENTS_IN_SINGLE_POLL\": %d, \"PJSUA_MAX_CALL_MEDIA\": %d,"
           " \"sizeof_pjsua_call\": %d}\n",
           (int)PJSUA_MAX_CALLS, (int)PJSUA_MAX_PLAYERS, (int)PJSUA_MAX_RECORDERS,
           (int)PJSUA_MAX_CONF_PORTS, (int)PJ_IOQUEUE_MAX_HANDLES, (int)PJSIP_MAX_TSX_COUNT,
           (int)PJSIP_MAX_DIALOG_COUNT, (int)PJ_HAS_IPV6, (int)PJMEDIA_HAS_SRTP,
           (int)PJMEDIA_HAS_VIDEO, (int)PJ_IOQUEUE_MAX_EVENTS_IN_SINGLE_POLL,
           (int)PJSUA_MAX_CALL_MEDIA, (int)sizeof(pjsua_call));
    return 0;
}
EOF
  local cflags
  cflags=$(pj_var APP_CFLAGS)
  # shellcheck disable=SC2086
  step "read the compiled-in limits" ${CC:-gcc} $cflags "$WORK/limits.c" -o "$WORK/limits"
  "$WORK/limits" >"$WORK/limits.json"
  say "limits: $(cat "$WORK/limits.json")"

  local ioqueue
  ioqueue=$(grep -o 'ioqueue_[a-z]*\.o' "$pj/pjlib/build/os-auto.mak" | head -n1 || true)
  ioqueue=${ioqueue%.o}

  local build_seconds=$(( $(now) - t_start ))
  mkdir -p "$CACHE/wheels/$KEY"
  step "assemble the wheel" "$PYTHON" "$HERE/mkwheel.py" \
    --out "$CACHE/wheels/$KEY" \
    --ext "$swigdir/_pjsua2$ext_suffix" --py "$swigdir/pjsua2.py" \
    --pj-version "$PJ_VERSION" --source "$SOURCE" --source-detail "$SRC_DETAIL" \
    --limits "$WORK/limits.json" --configure "${CONFIGURE_FLAGS[*]}" --ioqueue "${ioqueue:-?}" \
    --cflags "$OPT_CFLAGS" \
    --swig "$(swig -version | sed -n 's/^SWIG Version //p')" --cache-key "$KEY" \
    --build-seconds "$build_seconds" --py-tag "$PY_TAG" --plat-tag "$PLAT_TAG"
  say "built in $(( $(now) - t_start )) s"
  if [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
  fi
}

# ---------------------------------------------------------------------------------------------

resolve_source
WHEEL=""
if [ "$FORCE" = 0 ] && WHEEL=$(cached_wheel "$KEY"); then
  say "cached wheel for source '$SOURCE' ($SRC_ID): $WHEEL"
else
  rm -rf "$CACHE/wheels/$KEY"
  build_wheel
  WHEEL=$(cached_wheel "$KEY") || die "no wheel was produced"
  # keep the three newest wheels (other recipes, sources, Pythons); older ones go
  ls -1dt "$CACHE/wheels/"*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
fi

if [ "$ACTION" = wheel ]; then
  echo "$WHEEL"
  exit 0
fi

say "installing $(basename "$WHEEL") into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install --quiet --no-deps --force-reinstall --no-index "$WHEEL"
run_check --require-tuned
