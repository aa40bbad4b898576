"""The console script's own edges: `--version`, and `dial --help` naming the command a user
typed (it said `python -m engine.telephony.caller`)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.demo import demo_receptionist


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"vr-engine {importlib.metadata.version('vr-engine')}"


def test_dial_help_names_vr_engine_dial(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dial", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vr-engine dial ")
    assert "python -m" not in out


def test_dial_errors_name_it_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dial"])  # neither --target nor --listen
    assert exit_.value.code == 2
    assert "vr-engine dial: error: --target is required" in capsys.readouterr().err


def test_check_config_warns_about_entries_a_menu_key_shadows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old demo's mistake (issue 13, item 8), caught for every configuration: rules `1`,
    `2`, `0` fire at the first key, so `1000-1099` in exclude_list can never be dialled."""
    old_demo = {**demo_receptionist(), "exclude_list": "1000-1099;5000-5099"}
    old_demo["action_urls"] = [
        {"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9/x", "dtmf_mask": "2500"}
    ]
    path = tmp_path / "vr.json"
    path.write_text(json.dumps({"ivrs": [old_demo]}))
    assert main(["check-config", str(path)]) == 0  # a warning, not an error
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("warning: ivrs[0].exclude_list: 1000-1099 can never be keyed in")
    assert err[1].startswith("warning: ivrs[0].action_urls[0].dtmf_mask: 2500 can never")
    # today's demo has nothing to warn about
    path.write_text(json.dumps({"ivrs": [demo_receptionist()]}))
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().err == ""
