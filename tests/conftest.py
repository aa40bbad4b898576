"""Test-wide settings: hypothesis profiles that hold on a busy 2-core machine.

`ci` (chosen when `CI` is set, as `.ci/run` runs): no deadline, no `too_slow` or
`filter_too_much` health checks, derandomised (the same examples every run: a CI failure
reproduces), no example database. `dev` (otherwise): the same limits, random examples, so a
developer's runs keep exploring. `HYPOTHESIS_PROFILE` chooses one by name.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_LENIENT = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile("ci", derandomize=True, database=None, **_LENIENT)
settings.register_profile("dev", **_LENIENT)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)
