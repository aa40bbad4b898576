"""Fuzz prompt uploads at scale: the corpus of tests/upload_corpus.py through the HTTP API.

    .venv/bin/python bench/upload_fuzz.py --count 2000

Builds `--count` hostile files (every crafted one — absurd headers, zip bombs of silence — plus
seeded random draws: random bytes, magic then random bytes, valid WAV/FLAC/OGG/MP3 files cut
short or with bytes overwritten) and a few valid ones, uploads each through the PortSIP blob
API of an in-process app on a real store in a temporary directory (every conversion in its own
limited child process, as in the server), and prints per kind how many were tried, refused
(400), accepted (201) and answered otherwise, the answers that break the rule (a 400 must be the
error envelope naming the file; "refused" files must get 400, valid ones 201; other statuses
must be 0), the total time, the slowest upload, the children's largest RSS and the server
process's RSS before and after. Exits 1 if any answer broke the rule.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_api_helpers import make_api
from tests.upload_corpus import ACCEPTED, EITHER, REFUSED, Case, corpus


def broken(case: Case, response: Any) -> str | None:
    status = response.status_code
    allowed = {REFUSED: {400}, ACCEPTED: {201}, EITHER: {201, 400}}[case.expect]
    if status not in allowed:
        return f"{status}, expected {sorted(allowed)}: {response.text[:200]}"
    if status == 400:
        errors = response.json().get("errors") or [{}]
        message = str(errors[0].get("detail", {}).get("file", ""))
        if errors[0].get("code") != "VALIDATE_FAILED" or not message.startswith(case.name):
            return f"400 without a message naming the file: {response.text[:200]}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="hostile files (default 2000)")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()

    started = time.monotonic()
    cases = corpus(args.count, args.seed)
    generated = time.monotonic() - started
    me = psutil.Process()
    table: dict[str, Counter[str]] = {}
    problems: list[str] = []
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory(prefix="vr-upload-fuzz-") as temp:
        api = make_api(Path(temp))
        with api.client:
            rss_before = me.memory_info().rss
            started = time.monotonic()
            for n, case in enumerate(cases, 1):
                began = time.monotonic()
                response = api.upload(case.data, case.name)
                took = time.monotonic() - began
                slowest = max(slowest, (took, case.name))
                api.bodies.clear()
                row = table.setdefault(case.kind, Counter())
                row["tried"] += 1
                status = response.status_code
                row[str(status) if status in (400, 201) else "other"] += 1
                problem = broken(case, response)
                left = sorted(p.name for p in api.store.upload_dir.iterdir())
                if problem is None and left:
                    problem = f"left {left} in the upload directory"
                if problem is not None:
                    row["broken"] += 1
                    problems.append(f"{case.name}: {problem}")
                if n % 250 == 0:
                    print(f"  {n}/{len(cases)} in {time.monotonic() - started:.0f} s", flush=True)
            elapsed = time.monotonic() - started
            healthy = api.get("/healthz").status_code
            rss_after = me.memory_info().rss
        api.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)

    print(f"\n{len(cases)} uploads ({args.count} hostile, seed {args.seed})")
    print(f"{'kind':<18}{'tried':>7}{'400':>7}{'201':>7}{'other':>7}{'broken':>8}")
    total: Counter[str] = Counter()
    for kind in sorted(table):
        row = table[kind]
        total.update(row)
        print(
            f"{kind:<18}{row['tried']:>7}{row['400']:>7}{row['201']:>7}{row['other']:>7}"
            f"{row['broken']:>8}"
        )
    print(
        f"{'total':<18}{total['tried']:>7}{total['400']:>7}{total['201']:>7}{total['other']:>7}"
        f"{total['broken']:>8}"
    )
    print(
        f"corpus built in {generated:.1f} s; uploads took {elapsed:.1f} s "
        f"({elapsed / len(cases) * 1000:.0f} ms each, slowest {slowest[0]:.2f} s: {slowest[1]})"
    )
    print(
        f"conversion children: max RSS {children.ru_maxrss / 1024:.0f} MiB, CPU "
        f"{children.ru_utime + children.ru_stime:.0f} s in all"
    )
    print(
        f"server process RSS {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB "
        f"after; /healthz after the run: {healthy}"
    )
    for problem in problems[:50]:
        print("BROKEN", problem)
    return 1 if problems or total["other"] or healthy != 200 else 0


if __name__ == "__main__":
    sys.exit(main())
