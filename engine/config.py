"""Loading and checking a configuration file (SPEC §7): YAML or JSON, every error at once.

A file has a `server:` section (`ServerSettings`) and a list `ivrs:` of receptionists with
PortSIP's field names; a receptionist may list its `action_urls` inline and give
`prompt_file` / `transfer_prompt_file` as paths relative to the file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from engine.errors import ConfigError, FieldProblem
from engine.model import ActionUrlType, Receptionist, ServerSettings, Strict
from engine.rules.masks import shadowed_entries
from engine.validation import problems_from


class ConfigReceptionist(Receptionist):
    """A receptionist as written in a configuration file."""

    prompt_file: str | None = None
    transfer_prompt_file: str | None = None

    @model_validator(mode="after")
    def _one_prompt_source(self) -> Self:
        for path_field, id_field in (
            ("prompt_file", "prompt_file_id"),
            ("transfer_prompt_file", "transfer_prompt_file_id"),
        ):
            if getattr(self, path_field) and getattr(self, id_field):
                raise ValueError(f"give either {path_field} or {id_field}, not both")
        return self


class ConfigFile(Strict):
    server: ServerSettings = ServerSettings()
    ivrs: list[ConfigReceptionist] = Field(default_factory=list)


def _cross_problems(data: dict[str, Any]) -> list[FieldProblem]:
    """Problems that span receptionists: duplicate extensions, unknown holiday names."""
    ivrs = data.get("ivrs")
    if not isinstance(ivrs, list):
        return []
    problems = []
    extensions = [str(i.get("extension_number")) for i in ivrs if isinstance(i, dict)]
    counts = Counter(extensions)
    for index, ivr in enumerate(ivrs):
        if isinstance(ivr, dict) and counts.get(str(ivr.get("extension_number")), 0) > 1:
            problems.append(
                FieldProblem(
                    f"ivrs[{index}].extension_number",
                    f"extension {ivr.get('extension_number')} is used by more than one "
                    "receptionist",
                )
            )
    server = data.get("server") if isinstance(data.get("server"), dict) else {}
    assert isinstance(server, dict)
    holidays = server.get("holidays")
    holiday_list = holidays if isinstance(holidays, list) else []
    known = {h.get("name") for h in holiday_list if isinstance(h, dict)}
    for index, ivr in enumerate(ivrs):
        rules = ivr.get("custom_forward_rules") if isinstance(ivr, dict) else None
        for r_index, rule in enumerate(rules if isinstance(rules, list) else []):
            names = rule.get("holidays") if isinstance(rule, dict) else None
            for h_index, name in enumerate(names if isinstance(names, list) else []):
                if isinstance(name, str) and name not in known:
                    problems.append(
                        FieldProblem(
                            f"ivrs[{index}].custom_forward_rules[{r_index}].holidays[{h_index}]",
                            f"no holiday named {name!r} in server.holidays",
                        )
                    )
    return problems


def _file_problems(config: ConfigFile, base: Path) -> list[FieldProblem]:
    problems = []
    for index, ivr in enumerate(config.ivrs):
        for field in ("prompt_file", "transfer_prompt_file"):
            value = getattr(ivr, field)
            if value and not (base / value).is_file():
                problems.append(
                    FieldProblem(f"ivrs[{index}].{field}", f"no such file: {base / value}")
                )
    return problems


def parse_config(data: Any, *, base: Path, source: str = "configuration") -> ConfigFile:
    """Validate already-parsed data. Raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([FieldProblem("", "must be a mapping with server: and ivrs:")], source)
    problems = _cross_problems(data)
    config: ConfigFile | None = None
    try:
        config = ConfigFile.model_validate(data)
    except ValidationError as error:
        problems = problems_from(error, model=ConfigFile) + problems
    if config is not None:
        problems += _file_problems(config, base)
    if problems or config is None:
        raise ConfigError(_dedupe(problems), source)
    return config


def _dedupe(problems: Iterable[FieldProblem]) -> list[FieldProblem]:
    return list(dict.fromkeys(problems))


def read_config_data(path: Path) -> Any:
    """The parsed (not yet validated) content of a YAML or JSON configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([FieldProblem("", f"cannot read: {error.strerror}")], str(path)) from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigError([FieldProblem("", f"not valid YAML/JSON: {error}")], str(path)) from None
    except yaml.YAMLError as error:
        problem = f"not valid YAML/JSON: {_yaml_problem(error)}"
        raise ConfigError([FieldProblem("", problem)], str(path)) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file that PyYAML's message quotes
    (that line may hold a PIN, a password or a token)."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return "the file cannot be parsed"
    parts = []
    for text, mark in ((error.context, error.context_mark), (error.problem, error.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text}{where}")
    return "; ".join(parts) or "the file cannot be parsed"


def load_config(path: Path) -> ConfigFile:
    """Read and validate a YAML or JSON configuration file."""
    return parse_config(read_config_data(path), base=path.parent, source=str(path))


def shadowing_problems(ivr: Receptionist) -> list[FieldProblem]:
    """Warnings, not errors: `exclude_list` and DTMF `dtmf_mask` entries of a receptionist
    that no caller can key in, because a menu rule without `#` fires at the first key(s) of
    every number they match (the demo blocked 1000-1099 beside a rule `1`). Paths relative
    to the receptionist (`exclude_list`, `action_urls[0].dtmf_mask`)."""
    keys = [rule.user_input for rule in ivr.custom_forward_rules if not rule.needs_hash]
    firing = ", ".join(sorted(k for k in keys if k.isdigit()))
    fields = [("exclude_list", ivr.exclude_list)]
    fields += [
        (f"action_urls[{n}].dtmf_mask", url.dtmf_mask)
        for n, url in enumerate(ivr.action_urls)
        if url.type is ActionUrlType.DTMF
    ]
    return [
        FieldProblem(
            name,
            f"{entry} can never be keyed in: every number it matches starts with a menu "
            f"rule's keys ({firing}), which fire at once; use other numbers or `#` rules "
            "(like 1#)",
        )
        for name, text in fields
        for entry in shadowed_entries(text, keys)
    ]
