"""The console script's own edges: `--version`, and `dial --help` naming the command a user
typed (it said `python -m engine.telephony.caller`)."""

from __future__ import annotations

import importlib.metadata

import pytest

from engine.cli import main


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
