"""Hostile SIP at full size: the robustness test's attack with larger counts, and its figures.

Runs `tests/integration/hostile.py`'s `attack()` against a fresh `vr-engine serve` (the
pjsua2 of this interpreter's venv: the PyPI wheel in .venv, the tuned build in .venv-tuned):
`--count` corpus messages over UDP (and over TCP when the engine listens on TCP), 20
re-INVITEs of a live dialog, two floods of `--flood` INVITEs, scanner requests, all during a
probe call; then a later call. Prints the figures as JSON and writes them to `--out`.

    .venv/bin/python bench/sip_hostile.py --count 20000 --flood 20000
    .venv-tuned/bin/python bench/sip_hostile.py --count 20000 --flood 20000 \\
        --out bench/results/sip_hostile_tuned.json

Exit status 1 when the probe or the later call was not transferred or the engine died.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.engine_helpers import (  # noqa: E402
    make_chirp,
    procs_in,
    start_engine,
    start_target,
)
from tests.integration.hostile import (  # noqa: E402
    attack,
    attack_seconds,
    hostile_config,
    summary,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="corpus messages per transport")
    parser.add_argument("--flood", type=int, default=20_000, help="INVITEs per flood")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/sip_hostile.json")
    args = parser.parse_args()

    import pjsua2

    build = getattr(pjsua2, "BUILD_INFO", None)
    with tempfile.TemporaryDirectory(prefix="vr-sip-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        with procs_in(tmp) as procs:
            # the target outlives the attack (its default lifetime is 10 minutes)
            lifetime = attack_seconds(args.count, args.flood) + 180
            target, port = start_target(procs, 200, "target200", duration=lifetime)
            greeting = make_chirp(tmp / "greeting.wav", 4.0)
            engine = start_engine(
                procs, hostile_config(port), name="engine", transfer_domain=f"127.0.0.1:{port}"
            )
            report = attack(
                procs,
                engine,
                target,
                greeting,
                count=args.count,
                flood_count=args.flood,
                seed=args.seed,
            )
            alive = engine.proc.popen.poll() is None
            log = engine.proc.stderr_text()
    figures = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "pjsua2": "tuned build" if build else "PyPI wheel",
        "pjproject": build.get("pjproject_version") if build else "2.15.1",
        "count": args.count,
        "flood": args.flood,
        **summary(report),
        "probe_transferred": report.probe_record.get("outcome") == "transferred",
        "later_transferred": report.later_record.get("outcome") == "transferred",
        "engine_alive": alive,
        "tracebacks_in_log": log.count("Traceback"),
    }
    text = json.dumps(figures, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    ok = figures["probe_transferred"] and figures["later_transferred"] and alive
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
