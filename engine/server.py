"""`vr-engine serve`: start the SIP stack, the runtime and the HTTP API on one event loop,
and stop them cleanly on SIGINT/SIGTERM (new calls get 503, calls in progress may finish
within `shutdown_grace` seconds, then the rest are hung up)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import uvicorn

from engine.action_urls import ActionUrlClient
from engine.admission import AdmissionCounters
from engine.api import create_app
from engine.audio import convert_for_playback
from engine.config import ConfigFile, ConfigReceptionist, shadowing_problems
from engine.errors import (
    PromptError,
    TelephonyBuildError,
    TelephonyError,
    TelephonyStartError,
    VrError,
)
from engine.files import sha256_file
from engine.model import TRUSTED_STORE, Receptionist, ServerSettings
from engine.prompts import PromptLibrary
from engine.runtime import Runtime, format_host
from engine.store import (
    Store,
    StoreBackend,
    StoreCallRecords,
    StoreDisaSink,
    configured_file_id,
    seed_from_config,
    seeding_differences,
)
from engine.telephony.pjsip.build import (
    BUILD_FIX,
    build_has_ipv6,
    build_problems,
    build_survives_connection_floods,
)
from engine.telephony.pjsua import PjsuaTelephony, SipSettings

log = logging.getLogger(__name__)
TOKEN_FILE = "api-token"


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` drains calls first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpcore's debug log would print request headers, Authorization included
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_prompt_files(
    config: ConfigFile, base: Path, data_dir: Path
) -> tuple[dict[str, Receptionist], dict[str, Path]]:
    """Convert configured prompt files once into `data_dir/prompts`; snapshot receptionists."""
    files: dict[str, Path] = {}
    receptionists: dict[str, Receptionist] = {}
    for ivr in config.ivrs:
        updates: dict[str, str] = {}
        for path_field, id_field in (
            ("prompt_file", "prompt_file_id"),
            ("transfer_prompt_file", "transfer_prompt_file_id"),
        ):
            value = getattr(ivr, path_field)
            if value:
                source = base / value
                digest = sha256_file(source)
                file_id = configured_file_id(digest)
                target = data_dir / "prompts" / f"{digest}.wav"
                if not target.exists():
                    seconds = convert_for_playback(source, target)
                    log.info("converted %s (%.1f s) for playback", source, seconds)
                files[file_id] = target
                updates[id_field] = file_id
            elif getattr(ivr, id_field):
                raise PromptError(
                    f"receptionist {ivr.extension_number}: {id_field} {getattr(ivr, id_field)!r} "
                    "is not a known file; give prompt files as paths (prompt_file: …)"
                )
        receptionists[ivr.extension_number] = to_receptionist(ivr, updates)
    return receptionists, files


def to_receptionist(ivr: ConfigReceptionist, updates: dict[str, str]) -> Receptionist:
    data = ivr.model_dump(exclude={"prompt_file", "transfer_prompt_file"})
    data.update(updates)
    return Receptionist.model_validate(data, context={TRUSTED_STORE: True})


def api_token(config: ConfigFile, data_dir: Path) -> str:
    """The configured token, `VR_API_TOKEN`, or one generated once into the data directory."""
    if config.server.api_token is not None:
        return config.server.api_token.get_secret_value()
    if os.environ.get("VR_API_TOKEN"):
        return os.environ["VR_API_TOKEN"]
    path = data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    log.info("generated an API token in %s (set VR_API_TOKEN to choose one)", path)
    return token


def bind_http(host: str, port: int) -> socket.socket:
    """The HTTP API's listening socket, bound before anything else starts (port 0: any)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise VrError(
            f"cannot listen for HTTP on {host}:{port}: {error.strerror}; "
            "choose another --http-port or stop the other server"
        ) from None
    sock.setblocking(False)
    return sock


def check_sip_host(host: str) -> None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise TelephonyError(f"--sip-host {host!r} must be an IP address") from None
    if address.version == 6 and not build_has_ipv6():
        raise TelephonyError(
            "IPv6 calls fail with the PyPI pjsua2 wheel (measured: 500, or an abort with IPv6 "
            "media); serve IPv4, or install the tuned pjsua2 build (make pjsua2), which has IPv6"
        )
    if address.is_unspecified:
        raise TelephonyError(
            f"--sip-host {host} is not an address callers can reach: give the address to "
            "bind and publish in Contact/SDP (e.g. the server's LAN address)"
        )


def check_sip_host_is_local(host: str) -> None:
    """Refuse an address this machine does not have (binding to it would fail with a bare
    `Errno 99` once pjsua starts), naming the addresses it has."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((bare, 0))
    except OSError as error:
        own = sorted(
            {
                a.address.split("%", 1)[0]
                for addrs in psutil.net_if_addrs().values()
                for a in addrs
                if a.family == family
            }
        )
        raise TelephonyError(
            f"--sip-host {host} is not an address of this machine ({error.strerror}); "
            f"use one of: {', '.join(own) or 'none found'} (behind NAT, bind the local address)"
        ) from None


TCP_FLOOD_WARNING = (
    "SIP over TCP with the PyPI pjsua2 wheel: about 50 TCP connections within 32 s abort the "
    "whole engine (its pjlib asserts when its 64 sockets run out), so anyone who can reach "
    "the SIP port can end every call; serve UDP only (sip_transports: [udp]), keep the port "
    "behind a firewall, or install the tuned build (make pjsua2), which refuses excess "
    "connections instead"
)


def sip_transports(settings: ServerSettings) -> tuple[str, ...]:
    """The SIP transports to listen on: the configured ones; by default UDP, and TCP when the
    SIP stack refuses excess connections instead of aborting (the tuned build). TCP asked for
    explicitly on a build that aborts is served, with a warning."""
    if settings.sip_transports is None:
        return ("udp", "tcp") if build_survives_connection_floods() else ("udp",)
    if "tcp" in settings.sip_transports and not build_survives_connection_floods():
        log.warning(TCP_FLOOD_WARNING)
    return tuple(settings.sip_transports)


SEEDING_DIFFERS = (
    "the configuration file differs from %s, which is what is served (a file's receptionists "
    "only seed a new data directory): %s. To apply the file, change that through the API "
    "(POST /api/ivrs/{id}) or serve with a new --data-dir"
)

PJSIP_LOG_WARNING = (
    "pjsip log level %d writes whole SIP messages and key presses (PINs included) to the log "
    "(at --log-level debug): for diagnosis only, never in production"
)


def serve(
    config: ConfigFile,
    *,
    data_dir: Path,
    log_level: str = "info",
    pjsip_log_level: int = 1,
    base: Path | None = None,
) -> int:
    setup_logging(log_level)
    if pjsip_log_level >= 4:
        log.warning(PJSIP_LOG_WARNING, pjsip_log_level)
    settings = config.server
    problems = build_problems()
    if problems:
        raise TelephonyBuildError(
            "this pjsua2 cannot serve calls: " + "; ".join(problems) + f". {BUILD_FIX}"
        )
    check_sip_host(settings.sip_host)
    check_sip_host_is_local(settings.sip_host)
    data_dir.mkdir(parents=True, exist_ok=True)
    prompts = PromptLibrary()
    store = Store.open(data_dir)
    try:
        seeded_before = store.seeded
        if not seeded_before:
            configured, configured_files = prepare_prompt_files(
                config, base or Path.cwd(), data_dir
            )
            seed_from_config(store, configured, configured_files)
        snapshot = store.snapshot()
        if seeded_before and config.ivrs:
            differences = seeding_differences(
                config.ivrs, base or Path.cwd(), snapshot.receptionists
            )
            for line in differences:
                log.warning(SEEDING_DIFFERS, store.path, line)
            if not differences:
                log.info(
                    "%s holds the receptionists (the API is the source of truth); the "
                    "configuration's receptionists only seed a new data directory",
                    store.path,
                )
        for ivr in snapshot.receptionists.values():
            for problem in shadowing_problems(ivr):
                log.warning(
                    "receptionist %s: %s: %s", ivr.extension_number, problem.path, problem.message
                )
            resolved = prompts.resolve_language(ivr.language)
            if resolved != ivr.language:
                log.info(
                    "receptionist %s: language %s uses the %s prompts",
                    ivr.extension_number,
                    ivr.language,
                    resolved,
                )
        token = api_token(config, data_dir)
        return asyncio.run(
            _serve(
                config,
                snapshot.receptionists,
                snapshot.files,
                prompts,
                token,
                data_dir,
                store,
                pjsip_log_level=pjsip_log_level,
            )
        )
    finally:
        store.close()


async def _serve(
    config: ConfigFile,
    receptionists: dict[str, Receptionist],
    files: dict[str, Path],
    prompts: PromptLibrary,
    token: str,
    data_dir: Path,
    store: StoreBackend,
    *,
    pjsip_log_level: int = 1,
) -> int:
    settings = config.server
    loop = asyncio.get_running_loop()
    transports = sip_transports(settings)
    admission = AdmissionCounters(settings.sip_rate_limit)
    telephony = PjsuaTelephony(
        SipSettings(
            host=settings.sip_host,
            port=settings.sip_port,
            udp="udp" in transports,
            tcp="tcp" in transports,
            max_calls=settings.max_calls or 1000,
            rtp_port=settings.rtp_port,
            log_level=pjsip_log_level,
            user_agent=settings.sip_user_agent,
        ),
        admission,
    )
    http_socket = bind_http(settings.http_host, settings.http_port)
    client = ActionUrlClient()
    now = time.time()
    store.prune_disa(now, settings.disa.failure_window)
    runtime = Runtime(
        server=settings,
        receptionists=receptionists,
        telephony=telephony,
        prompts=prompts,
        files=files,
        action_urls=client,
        records=StoreCallRecords(store),
        lockout_sink=StoreDisaSink(store),
        admission=admission,
    )
    runtime.lockouts.restore(
        store.disa_lockouts(now), store.disa_failures(now - settings.disa.failure_window)
    )
    try:
        await loop.run_in_executor(None, telephony.start, loop, runtime.on_event)
    except TelephonyStartError as error:
        http_socket.close()
        await client.aclose()
        raise TelephonyError(str(error)) from None
    serving = True
    app = create_app(runtime, token=token, is_serving=lambda: serving, store=store)
    http = _HttpServer(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="off",
        )
    )
    http_task = loop.create_task(http.serve(sockets=[http_socket]))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    http_port = http_socket.getsockname()[1]
    print(
        f"vr-engine ready: SIP {'+'.join(transports)} "
        f"{format_host(settings.sip_host)}:{telephony.bound_port}, HTTP http://{settings.http_host}:"
        f"{http_port}, receptionists: "
        + ", ".join(f"{r.extension_number} ({r.name})" for r in receptionists.values())
        + f", capacity {runtime.capacity} calls",
        flush=True,
    )
    await stop.wait()
    log.info("stopping: new calls get 503")
    await runtime.drain(settings.shutdown_grace)
    serving = False
    http.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await http_task
    await loop.run_in_executor(None, telephony.stop, 2.0)
    await client.aclose()
    app.state.context.uploads.close()
    log.info("stopped")
    return 0
