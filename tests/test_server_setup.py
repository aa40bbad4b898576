"""Start-up checks of `vr-engine serve` that need no SIP: addresses, tokens, prompt files."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.config import parse_config
from engine.errors import PromptError, TelephonyError
from engine.model import ServerSettings
from engine.rules.pin import verify_pin
from engine.server import (
    api_token,
    check_sip_host,
    check_sip_host_is_local,
    prepare_prompt_files,
    sip_transports,
)
from engine.store import Store, seed_from_config, seeding_differences


@pytest.mark.parametrize(
    ("host", "message"),
    [("::1", "IPv6"), ("0.0.0.0", "not an address callers can reach"), ("pbx.local", "IP address")],
)
def test_sip_host_must_be_a_reachable_ipv4_address(
    host: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.server.build_has_ipv6", lambda: False)  # the PyPI wheel
    with pytest.raises(TelephonyError, match=message):
        check_sip_host(host)


def test_sip_host_ipv4_is_fine() -> None:
    check_sip_host("192.0.2.20")


@pytest.mark.parametrize("host", ["::1", "[::1]", "2001:db8::20"])
def test_sip_host_ipv6_is_fine_with_an_ipv6_build(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engine.server.build_has_ipv6", lambda: True)  # the tuned build
    check_sip_host(host)
    with pytest.raises(TelephonyError, match="not an address callers can reach"):
        check_sip_host("::")


def test_a_sip_host_this_machine_does_not_have_is_refused_naming_its_own() -> None:
    """Issue 13, item 13: it ended in a bare `OSError: [Errno 99]` after creating the data
    directory."""
    with pytest.raises(TelephonyError, match="not an address of this machine") as refused:
        check_sip_host_is_local("203.0.113.5")
    assert "127.0.0.1" in str(refused.value)
    check_sip_host_is_local("127.0.0.1")


def test_serve_refuses_a_foreign_sip_host_before_creating_the_data_directory(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--demo",
            "--sip-host",
            "203.0.113.5",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "not an address of this machine" in out.stderr and "Traceback" not in out.stderr
    assert not data.exists()


def test_api_token_is_generated_once_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VR_API_TOKEN", raising=False)
    config = parse_config({}, base=tmp_path)
    first = api_token(config, tmp_path)
    assert len(first) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "api-token").st_mode) == 0o600
    assert api_token(config, tmp_path) == first
    monkeypatch.setenv("VR_API_TOKEN", "from-env-1234")
    assert api_token(config, tmp_path) == "from-env-1234"
    configured = parse_config({"server": {"api_token": "from-config-1"}}, base=tmp_path)
    assert api_token(configured, tmp_path) == "from-config-1"


def test_configured_prompt_files_are_converted_once(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "main.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 16000)
    config = parse_config(
        {
            "ivrs": [
                {
                    "name": "Main",
                    "extension_number": "800",
                    "prompt_file": "main.wav",
                    "transfer_prompt_file": "main.wav",
                    "pin": "135790",
                }
            ]
        },
        base=tmp_path,
    )
    data = tmp_path / "data"
    receptionists, files = prepare_prompt_files(config, tmp_path, data)
    ivr = receptionists["800"]
    assert ivr.prompt_file_id == ivr.transfer_prompt_file_id
    assert ivr.prompt_file_id is not None
    converted = files[ivr.prompt_file_id]
    info = sf.info(str(converted))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert ivr.pin_hash is not None and verify_pin(ivr.pin_hash, "135790")
    mtime = converted.stat().st_mtime_ns
    prepare_prompt_files(config, tmp_path, data)  # again: not converted a second time
    assert converted.stat().st_mtime_ns == mtime


def test_seeding_differences_name_every_changed_field(tmp_path: Path) -> None:
    """The file that seeded a store, compared with it: nothing; each edit: its field path."""
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "main.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 16000)
    raw = {
        "ivrs": [
            {
                "name": "Main",
                "extension_number": "800",
                "prompt_file": "main.wav",
                "pin": "135790",
                "custom_forward_rules": [
                    {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}}
                ],
                "action_urls": [
                    {"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9/x", "dtmf_mask": "5"}
                ],
            }
        ]
    }
    config = parse_config(raw, base=tmp_path)
    store = Store.open(tmp_path / "data")
    try:
        seed_from_config(store, *prepare_prompt_files(config, tmp_path, tmp_path / "data"))
        stored = store.snapshot().receptionists
        assert seeding_differences(config.ivrs, tmp_path, stored) == []
        # the PIN hash has a new salt at every load: never a difference
        assert seeding_differences(parse_config(raw, base=tmp_path).ivrs, tmp_path, stored) == []

        edited = parse_config(
            {
                "ivrs": [
                    {
                        **raw["ivrs"][0],
                        "name": "Front desk",
                        "action_urls": [{**raw["ivrs"][0]["action_urls"][0], "dtmf_mask": "6"}],
                    },
                    {"name": "New", "extension_number": "801"},
                ]
            },
            base=tmp_path,
        )
        sf.write(tmp_path / "main.wav", 0.3 * np.sin(2 * np.pi * 500 * t), 16000)
        assert seeding_differences(edited.ivrs, tmp_path, stored) == [
            "ivrs[0] (extension 800): action_urls[0].dtmf_mask, name, prompt_file",
            "ivrs[1] (extension 801): not in the data directory (deleted through the API?)",
        ]
    finally:
        store.close()


def test_an_unusable_prompt_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    config = parse_config(
        {"ivrs": [{"name": "Main", "extension_number": "800", "prompt_file": "bad.wav"}]},
        base=tmp_path,
    )
    with pytest.raises(PromptError, match=r"bad\.wav"):
        prepare_prompt_files(config, tmp_path, tmp_path / "data")


def test_a_prompt_file_id_without_a_store_stops_start_up(tmp_path: Path) -> None:
    config = parse_config(
        {"ivrs": [{"name": "Main", "extension_number": "800", "prompt_file_id": "abc"}]},
        base=tmp_path,
    )
    with pytest.raises(PromptError, match="not a known file"):
        prepare_prompt_files(config, tmp_path, tmp_path / "data")


@pytest.mark.parametrize(
    ("configured", "survives", "expected", "warned"),
    [
        (None, False, ("udp",), False),  # the PyPI wheel: TCP would be a crash door
        (None, True, ("udp", "tcp"), False),  # the tuned build refuses excess connections
        (("udp", "tcp"), False, ("udp", "tcp"), True),  # asked for: served, with a warning
        (("udp", "tcp"), True, ("udp", "tcp"), False),
        (("tcp",), True, ("tcp",), False),
        (("udp",), False, ("udp",), False),
    ],
)
def test_sip_transports_default_to_what_the_build_survives(
    configured: tuple[str, ...] | None,
    survives: bool,
    expected: tuple[str, ...],
    warned: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("engine.server.build_survives_connection_floods", lambda: survives)
    settings = ServerSettings.model_validate(
        {} if configured is None else {"sip_transports": list(configured)}
    )
    with caplog.at_level(logging.WARNING, logger="engine.server"):
        assert sip_transports(settings) == expected
    assert any("abort the whole engine" in r.getMessage() for r in caplog.records) is warned


@pytest.mark.parametrize(
    ("argv", "level"),
    [([], 1), (["--pjsip-log-level", "0"], 0), (["--pjsip-log-level", "5"], 5)],
)
def test_the_pjsip_log_level_reaches_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], level: int
) -> None:
    import engine.server
    from engine.cli import main

    seen: dict[str, object] = {}

    def fake_serve(config: object, **kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(engine.server, "serve", fake_serve)
    assert main(["serve", "--demo", "--data-dir", str(tmp_path), *argv]) == 0
    assert seen["pjsip_log_level"] == level


def test_a_pjsip_log_level_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--demo", "--pjsip-log-level", "7"])
    assert exit_info.value.code == 2
    assert "--pjsip-log-level" in capsys.readouterr().err
