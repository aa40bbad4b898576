"""`vr-engine`: the one console script (serve, check-config, dial)."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.config import (
    ConfigFile,
    load_config,
    parse_config,
    read_config_data,
    shadowing_problems,
)
from engine.demo import with_demo_receptionist
from engine.errors import ConfigError, TelephonyBuildError, VrError


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="answer SIP calls for the configured receptionists",
        description="Serve receptionists over SIP. With --demo, or with no configuration at "
        "all, a demo receptionist answers on extension 800.",
    )
    serve.add_argument("--config", type=Path, help="YAML or JSON configuration file")
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    serve.add_argument("--demo", action="store_true", help="serve the demo receptionist (800)")
    serve.add_argument("--sip-host", help="address to bind and publish (default 127.0.0.1)")
    serve.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 8922)")
    serve.add_argument("--http-host", help="HTTP API address (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="HTTP API port (default 8923)")
    serve.add_argument(
        "--transfer-domain",
        help="HOST[:PORT] for Refer-To URIs (default: where each INVITE came from)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument(
        "--pjsip-log-level",
        type=int,
        default=1,
        choices=range(7),
        metavar="0-6",
        help="pjsip's own log detail, for diagnosis (default 1: errors); its lines above 2 are"
        " written at --log-level debug. 4 and above write whole SIP messages and key presses,"
        " PINs included: never leave it on",
    )


def engine_version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    try:
        return importlib.metadata.version("vr-engine")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: make install)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vr-engine", description="An open virtual receptionist (IVR) server for SIP PBXs."
    )
    parser.add_argument("--version", action="version", version=f"vr-engine {engine_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    check = sub.add_parser(
        "check-config", help="validate a configuration file and report every error"
    )
    check.add_argument("file", type=Path)
    sub.add_parser(
        "dial",
        help="a test caller: dial a receptionist, send digits, record what it hears",
        add_help=False,
    )
    return parser


def _check_config(path: Path) -> int:
    config = load_config(path)
    print(
        f"{path}: OK — {len(config.ivrs)} receptionist(s): "
        + ", ".join(f"{i.extension_number} ({i.name})" for i in config.ivrs)
    )
    for index, ivr in enumerate(config.ivrs):
        for problem in shadowing_problems(ivr):
            print(f"warning: ivrs[{index}].{problem.path}: {problem.message}", file=sys.stderr)
    return 0


def _load_for_serve(args: argparse.Namespace) -> ConfigFile:
    """The configuration to serve: the file (or the demo), with command-line overrides."""
    if args.config is not None:
        data, base, source = read_config_data(args.config), args.config.parent, str(args.config)
    else:
        data, base, source = {}, Path.cwd(), "demo configuration"
    if args.demo or args.config is None:
        data = with_demo_receptionist(data)
    server = data.setdefault("server", {}) if isinstance(data, dict) else None
    if isinstance(server, dict):
        for key in ("sip_host", "sip_port", "http_host", "http_port", "transfer_domain"):
            if getattr(args, key) is not None:
                server[key] = getattr(args, key)
    return parse_config(data, base=base, source=source)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dial"]:
        from engine.telephony.caller import main as dial_main

        return dial_main(argv[1:], prog="vr-engine dial")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "serve":
            config = _load_for_serve(args)
            from engine.server import serve

            base = args.config.parent if args.config else Path.cwd()
            return serve(
                config,
                data_dir=args.data_dir,
                log_level=args.log_level,
                pjsip_log_level=args.pjsip_log_level,
                base=base,
            )
    except (ConfigError, TelephonyBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except VrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
