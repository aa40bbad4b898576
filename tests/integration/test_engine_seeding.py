"""A configuration file edited after it seeded the data directory (issue 13, item 13): the
engine serves the data directory, as documented, and warns naming what differs and how to
apply it. Two real `vr-engine serve` starts on one data directory."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine_helpers import procs_in, start_engine

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {
    "server": {"name": "seeding"},
    "ivrs": [
        {
            "name": "Main",
            "extension_number": "830",
            "dtmf_interval": 2,
            "custom_forward_rules": [
                {
                    "user_input": "1",
                    "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "201"},
                }
            ],
        },
        {"name": "Other", "extension_number": "831"},
    ],
}


def test_an_edited_seeding_config_is_named_in_a_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with procs_in(tmp_path) as procs:
        first = start_engine(procs, CONFIG, name="seed-1", data_dir=data_dir)
        assert "differs" not in first.proc.stderr_text()
        first.proc.stop()

        # the same file again: nothing differs, nothing to warn about
        again = start_engine(procs, CONFIG, name="seed-2", data_dir=data_dir)
        assert "differs" not in again.proc.stderr_text()
        again.proc.stop()

        edited = copy.deepcopy(CONFIG)
        edited["ivrs"][0]["dtmf_interval"] = 4
        edited["ivrs"][0]["custom_forward_rules"][0]["office_hours_forward_rule"]["number"] = "202"
        edited["ivrs"].append({"name": "New", "extension_number": "832"})
        changed = start_engine(procs, edited, name="seed-3", data_dir=data_dir)
        log = changed.proc.stderr_text()
        warnings = [line for line in log.splitlines() if "differs from" in line]
        assert len(warnings) == 2, log
        assert (
            "ivrs[0] (extension 830): custom_forward_rules[0].office_hours_forward_rule.number, "
            "dtmf_interval." in warnings[0]
        ), warnings[0]
        assert "ivrs[2] (extension 832): not in the data directory" in warnings[1]
        for line in warnings:
            assert "POST /api/ivrs/{id}" in line and "--data-dir" in line
            assert "WARNING" in line
        # what is served is the data directory, unchanged
        status, items = changed.get("/api/ivrs")
        assert status == 200
        served = {item["extension_number"]: item for item in items["items"]}
        assert set(served) == {"830", "831"}
        assert served["830"]["dtmf_interval"] == 2
        changed.proc.stop()
