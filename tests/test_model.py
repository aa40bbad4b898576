"""Validation of the receptionist model and of configuration files: every rule, every path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.cli import main
from engine.config import load_config, parse_config
from engine.errors import ConfigError
from engine.model import (
    TRUSTED_STORE,
    ActionUrl,
    ForwardRule,
    MenuForwardRule,
    Receptionist,
    ServerSettings,
)
from engine.rules.pin import verify_pin

BASE = {"name": "Main", "extension_number": "800"}


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, base=Path("."))
    return {p.path: p.message for p in caught.value.problems}


def ivr_problems(**fields: Any) -> dict[str, str]:
    return problems({"ivrs": [{**BASE, **fields}]})


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"name": ""}, "ivrs[0].name", "at least 1"),
        ({"name": "x" * 65}, "ivrs[0].name", "at most 64"),
        ({"extension_number": "80"}, "ivrs[0].extension_number", "3 to 64 digits"),
        ({"extension_number": "8a0"}, "ivrs[0].extension_number", "3 to 64 digits"),
        ({"extension_number": "1" * 65}, "ivrs[0].extension_number", "3 to 64 digits"),
        ({"language": "english"}, "ivrs[0].language", "BCP 47"),
        ({"language": "en-US-"}, "ivrs[0].language", "BCP 47"),
        ({"dtmf_interval": 0}, "ivrs[0].dtmf_interval", "greater than or equal to 1"),
        ({"pin": "12345"}, "ivrs[0].pin", "6 to 10 digits"),
        ({"pin": "111357"}, "ivrs[0].pin", "three equal"),
        ({"pin": "135789"}, "ivrs[0].pin", "consecutive"),
        ({"pin": 135790}, "ivrs[0].pin", "quoted string"),
        ({"exclude_list": "1000-999x"}, "ivrs[0].exclude_list", "not a number"),
        ({"exclude_list": "x" * 256}, "ivrs[0].exclude_list", "at most 255"),
        (
            {"timeout_forward_rule": {"action": "JUMP"}},
            "ivrs[0].timeout_forward_rule.action",
            "'FORWARD_TO_NUMBER', 'FORWARD_TO_VOICEMAIL', 'REPEAT', 'HANGUP' or 'DISA'",
        ),
        (
            {"timeout_forward_rule": {"action": "DISA"}},
            "ivrs[0].timeout_forward_rule.action",
            "only allowed in menu rules",
        ),
        (
            {"timeout_forward_rule": {"repeat_times": -1}},
            "ivrs[0].timeout_forward_rule.repeat_times",
            "greater than or equal to 0",
        ),
        (
            {"timeout_forward_rule": {"timeout": 0}},
            "ivrs[0].timeout_forward_rule.timeout",
            "greater than or equal to 1",
        ),
        (
            {"failure_forward_rule": {"action": "FORWARD_TO_NUMBER"}},
            "ivrs[0].failure_forward_rule",
            "needs a number",
        ),
        (
            {"night_mode_forward_rule": {"action": "FORWARD_TO_VOICEMAIL", "number": "1 00"}},
            "ivrs[0].night_mode_forward_rule.number",
            "a number of up to 64",
        ),
        (
            {"custom_forward_rules": [{"user_input": "1"}]},
            "ivrs[0].custom_forward_rules[0].office_hours_forward_rule",
            "is required",
        ),
        (
            {
                "custom_forward_rules": [
                    {"user_input": "1#2", "office_hours_forward_rule": {"action": "HANGUP"}}
                ]
            },
            "ivrs[0].custom_forward_rules[0].user_input",
            "optionally ending with #",
        ),
        (
            {
                "custom_forward_rules": [
                    {"user_input": "1", "office_hours_forward_rule": {"action": "HANGUP"}}
                ]
                * 2
            },
            "ivrs[0].custom_forward_rules",
            "two menu rules",
        ),
        (
            {
                "custom_forward_rules": [
                    {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}}
                ]
            },
            "ivrs[0]",
            "pin is required",
        ),
        (
            {
                "custom_forward_rules": [
                    {
                        "user_input": "1",
                        "office_hours_forward_rule": {"action": "HANGUP"},
                        "office_hours": {
                            "mode": "CUSTOM",
                            "monday": {
                                "enabled": True,
                                "ranges": [{"from": "18:00", "to": "09:00"}],
                            },
                        },
                    }
                ]
            },
            "ivrs[0].custom_forward_rules[0].office_hours.monday.ranges[0]",
            "crosses midnight",
        ),
        (
            {
                "custom_forward_rules": [
                    {
                        "user_input": "1",
                        "office_hours_forward_rule": {"action": "HANGUP"},
                        "office_hours": {
                            "mode": "CUSTOM",
                            "monday": {"ranges": [{"from": "9:00", "to": "25:00"}]},
                        },
                    }
                ]
            },
            "ivrs[0].custom_forward_rules[0].office_hours.monday.ranges[0].from",
            "HH:MM",
        ),
        (
            {
                "custom_forward_rules": [
                    {
                        "user_input": "1",
                        "office_hours_forward_rule": {"action": "HANGUP"},
                        "office_hours": {"mode": "LOCAL"},
                    }
                ]
            },
            "ivrs[0].custom_forward_rules[0].office_hours.mode",
            "'GLOBAL' or 'CUSTOM'",
        ),
        ({"colour": "blue"}, "ivrs[0].colour", "unknown field"),
        ({"prompt_file": "nope.wav"}, "ivrs[0].prompt_file", "no such file"),
        ({"prompt_file": "a.wav", "prompt_file_id": "x"}, "ivrs[0]", "not both"),
    ],
)
def test_receptionist_field_rules(fields: dict[str, Any], path: str, message: str) -> None:
    found = ivr_problems(**fields)
    assert path in found, found
    assert message in found[path]


def action_url(**fields: Any) -> dict[str, Any]:
    data = {"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9000/x"}
    data.update(fields)
    return data


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"type": "SMS"}, "type", "'DTMF' or 'CALLER'"),
        ({"method": "PUT"}, "method", "'GET' or 'POST'"),
        ({"auth": "NTLM"}, "auth", "'DISABLE', 'BASIC', 'DIGEST' or 'BEARER'"),
        ({"url": "ftp://x"}, "url", "http:// or https://"),
        ({"url": ""}, "url", "at least 1"),
        ({"auth": "BASIC", "username": "crmuser1"}, "", "needs password"),
        ({"auth": "DIGEST"}, "", "needs username and password"),
        ({"auth": "BASIC", "username": "Admin1", "password": "secret99"}, "username", "lowercase"),
        ({"auth": "BASIC", "username": "admin1", "password": "short"}, "password", "6 to 64"),
        ({"auth": "BEARER"}, "", "needs a token"),
        ({"headers": "X-A:1&broken"}, "headers", "name:value"),
        ({"headers": "X A:1"}, "headers", "name:value"),
        ({"connection_timeout": -1}, "connection_timeout", "greater than or equal to 0"),
        ({"request_timeout": 61}, "request_timeout", "less than or equal to 60"),
        ({"dtmf_mask": "5-1"}, "dtmf_mask", "backwards"),
        ({"enabled": True}, "", "needs a dtmf_mask"),
        ({"enabled": True, "type": "CALLER"}, "", "needs a caller_mask"),
    ],
)
def test_action_url_field_rules(fields: dict[str, Any], path: str, message: str) -> None:
    found = ivr_problems(action_urls=[action_url(**fields)])
    full = "ivrs[0].action_urls[0]" + (f".{path}" if path else "")
    assert full in found, found
    assert message in found[full]


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "server.timezone", "IANA time zone"),
        ({"sip_port": 70000}, "server.sip_port", "less than or equal to 65535"),
        ({"sip_allow": ["10.0.0.0/8", "not-an-ip"]}, "server.sip_allow", "not-an-ip"),
        ({"voicemail_uri_template": "sip:vm@pbx"}, "server.voicemail_uri_template", "{number}"),
        (
            {"voicemail_uri_template": "sip:{number}@{host}"},
            "server.voicemail_uri_template",
            "placeholders",
        ),
        ({"transfer_domain": "pbx example"}, "server.transfer_domain", "HOST:PORT"),
        (
            {"disa": {"allowed_destinations": "00-"}},
            "server.disa.allowed_destinations",
            "not a number",
        ),
        ({"disa": {"pin_attempts": 0}}, "server.disa.pin_attempts", "greater than or equal to 1"),
        (
            {"holidays": [{"name": "x", "start": "2026-13-01"}]},
            "server.holidays[0].start",
            "YYYY-MM-DD",
        ),
        (
            {"holidays": [{"name": "x", "start": "2026-12-26", "end": "2026-12-24"}]},
            "server.holidays[0]",
            "before start",
        ),
        (
            {"holidays": [{"name": "x", "start": "--12-26", "end": "2026-12-24"}]},
            "server.holidays[0]",
            "both",
        ),
        ({"office_hours": {"funday": {}}}, "server.office_hours.funday", "unknown field"),
    ],
)
def test_server_setting_rules(fields: dict[str, Any], path: str, message: str) -> None:
    found = problems({"server": fields})
    assert path in found, found
    assert message in found[path]


def test_every_error_of_a_file_is_reported_at_once_with_its_path() -> None:
    found = problems(
        {
            "server": {"timezone": "Nowhere/Else"},
            "ivrs": [
                {
                    **BASE,
                    "pin": "111111",
                    "language": "??",
                    "custom_forward_rules": [
                        {
                            "user_input": "1",
                            "holidays": ["Xmas"],
                            "office_hours_forward_rule": {"action": "HANGUP"},
                        }
                    ],
                },
                {"name": "Two", "extension_number": "800"},
                {"extension_number": "x"},
            ],
        }
    )
    assert set(found) >= {
        "server.timezone",
        "ivrs[0].pin",
        "ivrs[0].language",
        "ivrs[0].custom_forward_rules[0].holidays[0]",
        "ivrs[0].extension_number",
        "ivrs[1].extension_number",
        "ivrs[2].name",
        "ivrs[2].extension_number",
    }
    assert "used by more than one" in found["ivrs[1].extension_number"]


def test_the_pin_is_hashed_at_once_and_never_shown() -> None:
    ivr = Receptionist.model_validate({**BASE, "pin": "135790"})
    assert ivr.pin_hash is not None and verify_pin(ivr.pin_hash, "135790")
    assert "135790" not in repr(ivr) and "135790" not in ivr.model_dump_json()
    # a stored hash is accepted back only from our own store
    again = Receptionist.model_validate(
        {**BASE, "pin": ivr.pin_hash}, context={TRUSTED_STORE: True}
    )
    assert again.pin_hash == ivr.pin_hash
    with pytest.raises(ValueError, match="only the digits"):
        Receptionist.model_validate({**BASE, "pin": ivr.pin_hash})


def test_secrets_are_not_in_reprs() -> None:
    url = ActionUrl.model_validate(
        action_url(auth="DIGEST", username="crmuser1", password="crmpass1")
    )
    bearer = ActionUrl.model_validate(action_url(auth="BEARER", token="tok-123-secret"))
    server = ServerSettings.model_validate({"api_token": "api-secret-1"})
    text = repr(url) + repr(bearer) + repr(server) + url.model_dump_json() + str(server)
    for secret in ("crmpass1", "tok-123-secret", "api-secret-1"):
        assert secret not in text


def test_defaults_follow_portsip() -> None:
    ivr = Receptionist.model_validate(BASE)
    assert (ivr.language, ivr.dtmf_interval, ivr.enable_pin, ivr.enable_night_mode) == (
        "en-US",
        2,
        True,
        False,
    )
    assert (ivr.timeout_forward_rule.timeout, ivr.timeout_forward_rule.repeat_times) == (30, 3)
    url = ActionUrl.model_validate(action_url())
    assert (url.enabled, url.connection_timeout, url.request_timeout, url.auth.value) == (
        False,
        2,
        2,
        "DISABLE",
    )
    assert ServerSettings().sip_port == 8922 and ServerSettings().http_port == 8923


def test_language_tags_are_normalised() -> None:
    assert Receptionist.model_validate({**BASE, "language": "EN-us"}).language == "en-US"
    assert Receptionist.model_validate({**BASE, "language": "de-AT"}).language == "de-AT"
    assert Receptionist.model_validate({**BASE, "language": "en_US"}).language == "en-US"


# --- files and the command line -------------------------------------------------------------

GOOD = """
server:
  name: vr-1
  timezone: Europe/Berlin
  holidays: [{name: Xmas, start: "--12-25"}]
ivrs:
  - name: Main
    extension_number: "800"
    pin: "135790"
    prompt_file: main.wav
    custom_forward_rules:
      - {user_input: "1", holidays: [Xmas], office_hours_forward_rule: {action: FORWARD_TO_NUMBER, number: "201"}}
      - {user_input: "0", office_hours_forward_rule: {action: DISA}}
    action_urls:
      - {name: crm, enabled: true, type: DTMF, method: POST, dtmf_mask: "5000-5999",
         url: "http://127.0.0.1:9000/route", auth: DIGEST, username: crmuser1, password: crmpass1}
"""

BAD = """
server: {timezone: Nowhere}
ivrs:
  - {name: Main, extension_number: "80", pin: "123456", dtmf_interval: 0}
"""


def test_load_a_good_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "main.wav").write_bytes(b"RIFF")
    path = tmp_path / "vr.yaml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.ivrs[0].action_urls[0].username == "crmuser1"
    assert config.server.holiday("Xmas") is not None


def test_a_json_file_works_too(tmp_path: Path) -> None:
    path = tmp_path / "vr.json"
    path.write_text('{"ivrs": [{"name": "Main", "extension_number": "800"}]}')
    assert load_config(path).ivrs[0].extension_number == "800"


@pytest.mark.parametrize(
    ("text", "message"),
    [("ivrs: [", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping")],
)
def test_unparseable_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "vr.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "main.wav").write_bytes(b"RIFF")
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    assert main(["check-config", str(good)]) == 0
    assert "800 (Main)" in capsys.readouterr().out
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for line in (
        "server.timezone:",
        "ivrs[0].extension_number:",
        "ivrs[0].pin:",
        "ivrs[0].dtmf_interval:",
    ):
        assert line in err
    assert "4 error(s)" in err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 2


def test_serve_refuses_an_invalid_file_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "ivrs[0].pin:" in run.stderr and "server.timezone:" in run.stderr
    assert "135790" not in run.stderr + run.stdout


@pytest.mark.parametrize("action", ["HANGUP", "REPEAT"])
def test_an_empty_number_is_absent_for_actions_that_need_none(action: str) -> None:
    """Issue 13, item 7: PortSIP's forms send `{action: HANGUP, number: ""}`."""
    for model in (ForwardRule, MenuForwardRule):
        rule = model.model_validate({"action": action, "number": ""})
        assert rule.number is None


def test_an_empty_number_still_fails_where_a_number_is_needed() -> None:
    with pytest.raises(ValidationError, match="needs a number"):
        ForwardRule.model_validate({"action": "FORWARD_TO_NUMBER", "number": "  "})


def test_an_unknown_field_names_the_known_one_it_is_closest_to() -> None:
    """Issue 13, item 13: unknown configuration fields got no "did you mean"."""
    data = {
        "server": {"sip_prot": 5060, "disa": {"max_faild_calls": 2}},
        "ivrs": [
            {
                "name": "Main",
                "extension_number": "800",
                "promt_file": "x.wav",
                "zzz": 1,
                "custom_forward_rules": [
                    {"user_inptu": "1", "office_hours_forward_rule": {"action": "HANGUP"}}
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(data, base=Path("."), source="vr.yaml")
    text = str(refused.value)
    assert "server.sip_prot: unknown field (did you mean 'sip_port'?)" in text
    assert "server.disa.max_faild_calls: unknown field (did you mean 'max_failed_calls'?)" in text
    assert "ivrs[0].promt_file: unknown field (did you mean 'prompt_file'?)" in text
    assert "custom_forward_rules[0].user_inptu: unknown field (did you mean 'user_input'?)" in text
    assert "ivrs[0].zzz: unknown field\n" in text + "\n"  # nothing close: no guess
