"""The hypothesis profile in force cannot fail a test for being slow on a busy machine
(issue 13, item 10: `test_parse_reply_accepts_only_the_contract` failed a health check)."""

from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import HealthCheck, settings


def test_no_deadline_and_no_slowness_health_check() -> None:
    current = settings()
    assert current.deadline is None
    assert HealthCheck.too_slow in current.suppress_health_check


def test_ci_runs_are_derandomised() -> None:
    probe = (
        "import tests.conftest; from hypothesis import settings; "
        "print(settings().derandomize, settings().database)"
    )
    env = {**os.environ, "CI": "true"}
    env.pop("HYPOTHESIS_PROFILE", None)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["True", "None"]
