"""Contract tests: our API's real responses validated against PortSIP's published OpenAPI document
(a copy in `tests/data/portsip-vr-openapi.json`, OpenAPI 3.1; `VR_PORTSIP_OPENAPI` overrides the
path). Our routes are the reference's under `/api`.

How: a TestClient drives the app on a real SQLite store (tests/test_api_helpers.py). Every
response is matched to the reference operation of its method and path; its status must be one the
reference declares for that operation (exact, or its `4XX` range); a JSON body is validated with
`jsonschema` (draft 2020-12, the dialect of OpenAPI 3.1; local `$ref`s inlined, `allOf` as is;
`readOnly` properties dropped from request schemas and `writeOnly` ones from response schemas; an
OpenAPI 3.0 `nullable` would become a `null` type — the reference has none). The reference gives
no error body schema, so every 4xx must use PortSIP's envelope
`{"errors": [{"code", "message", "detail"}]}`. Declared response headers are checked. Keys that
the reference does not declare are collected and must be among the documented extensions below,
so a new field cannot slip in unnoticed. Request payloads built from the reference's own
`example`/`default`/`enum` values are validated against its request schemas and must be accepted.

Operations checked (success and error responses of each):
- receptionists: `POST /ivrs`, `GET /ivrs`, `GET /ivrs/{id}`, `POST /ivrs/{id}`,
  `GET /ivrs/{id}/status`, `POST /ivrs/{id}/destroy`;
- action URLs: `POST /ivrs/{id}/action_urls`, `GET /ivrs/{id}/action_urls`,
  `GET|POST /ivrs/{id}/action_urls/{url_id}`, `POST /ivrs/{id}/action_urls/{url_id}/destroy`;
- this server: `GET /ivr_servers`, `GET /ivr_servers/{id}`, `POST /ivr_servers/{id}` (`enabled`),
  `GET /ivr_servers/{id}/status`;
- uploads and files: `POST /blobs/uploads`, `POST /blobs/uploads/{id}/append`,
  `POST /blobs/uploads/{id}/complete`, `GET /blobs/uploads/{id}/status`,
  `POST /blobs/uploads/{id}/destroy`, `GET /blobs/{digest}`, `GET /files`, `GET /files/{id}`,
  `POST /files/{id}/destroy`.

Not shared (the PBX's own registry of receptionist servers; this server only describes itself):
`POST /ivr_servers` (405), `POST /ivr_servers/{id}/destroy` (409: a server cannot destroy
itself), both in the error envelope.

Deliberate deviations (each is applied to the reference schema below, or listed as an extension):
- None in responses: the reference (OpenAPI 3.1) declares nothing nullable, so an unset optional
  field (forward rule `number`, `prompt_file_name`, action URL `username`, …) is absent, and the
  schemas are applied as they are. In a request, `null` means unset, as absence does.
- Menu rule `holidays` are names of the server's holidays (README), in requests and responses;
  PortSIP takes tenant holiday ids and returns holiday objects.
- Action URL `url`: the reference's `maxLength: 128` and `pattern: [a-z0-9]{6,64}` (copied from
  `username`; no URL matches it in full) are dropped: any http(s) URL up to 2048 characters.
- Write-only fields are never returned: the receptionist `pin` and the action URL `password`,
  `token` (the reference's response schemas list them).
- `POST /ivrs/{id}` and `POST /ivrs/{id}/action_urls/{url_id}` answer 200 with the updated
  resource (validated against the GET schema); the reference declares 200 without a body.
- `POST /ivrs/{id}/destroy` of an unknown id is 404 (the reference lists only 400, but 404 for
  every other unknown id); `POST /files/{id}/destroy` of a file in use is 409 (reference: 400/404).
- `/ivr_servers/{id}` accepts `local` or the server's name as id; `GET /ivr_servers` (always
  one item, this server) ignores the list options.
- `GET /blobs/uploads/{id}/status` (204) has no `Content-Length` (RFC 9110 forbids it on 204).
- Extensions (extra keys, listed in `EXTENSIONS`): receptionist `enabled`, `enable_night_mode`,
  `exclude_list`, `prompt_file_id`, `transfer_prompt_file_id` and the `description` of an
  outbound caller id as sent; `GET /ivrs` items are whole receptionists (the reference lists `id`,
  `name`, `extension_number`); action URL `idempotency` and a `count` in its list; file
  `duration`, `digest`, `url`; server status `active_calls`, `capacity`, `calls_total`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from engine.model import ServerSettings
from tests.test_api_helpers import ERROR_ENVELOPE, Api, make_api, wav_float_stereo

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PATH = Path(
    os.environ.get("VR_PORTSIP_OPENAPI", ROOT / "tests" / "data" / "portsip-vr-openapi.json")
)
PIN = "135790"
HOLIDAY = "Christmas"

HOLIDAY_NAME = {"type": "string", "minLength": 1, "maxLength": 64}

RECEPTIONIST_EXTENSIONS = {
    "enabled",
    "enable_night_mode",
    "exclude_list",
    "prompt_file_id",
    "transfer_prompt_file_id",
    "outbound_caller_ids[].description",
}
ACTION_URL_EXTENSIONS = {"idempotency"}
FILE_EXTENSIONS = {"duration", "digest", "url"}

# Keys beyond the reference's, per (method, reference path).
EXTENSIONS: dict[tuple[str, str], set[str]] = {
    ("get", "/ivrs/{id}"): RECEPTIONIST_EXTENSIONS,
    ("post", "/ivrs/{id}"): RECEPTIONIST_EXTENSIONS,
    ("get", "/ivrs"): {f"items[].{key}" for key in RECEPTIONIST_EXTENSIONS}
    | {
        # the list items carry the whole receptionist; the reference lists id, name, extension
        "items[].language",
        "items[].dtmf_interval",
        "items[].enable_pin",
        "items[].timeout_forward_rule",
        "items[].failure_forward_rule",
        "items[].night_mode_forward_rule",
        "items[].custom_forward_rules",
        "items[].outbound_caller_ids",
        "items[].prompt_file_name",
        "items[].prompt_file_size",
        "items[].prompt_file_url",
        "items[].transfer_prompt_file_name",
        "items[].transfer_prompt_file_size",
        "items[].transfer_prompt_file_url",
    },
    ("get", "/ivrs/{id}/action_urls"): {"count"}
    | {f"items[].{key}" for key in ACTION_URL_EXTENSIONS},
    ("get", "/ivrs/{id}/action_urls/{url_id}"): ACTION_URL_EXTENSIONS,
    ("post", "/ivrs/{id}/action_urls/{url_id}"): ACTION_URL_EXTENSIONS,
    ("get", "/files"): {f"items[].{key}" for key in FILE_EXTENSIONS},
    ("get", "/files/{id}"): FILE_EXTENSIONS,
    ("get", "/ivr_servers/{id}/status"): {"active_calls", "capacity", "calls_total"},
}

# Statuses the reference does not declare for an operation, and why we answer them.
STATUS_DEVIATIONS = {
    ("post", "/ivrs/{id}/destroy", 404): "unknown id: 404 as everywhere else",
    ("post", "/files/{id}/destroy", 409): "the file is used by a receptionist",
}

# Updates answer the updated resource; the reference declares no body.
UPDATE_BODY_AS = {
    ("post", "/ivrs/{id}"): ("get", "/ivrs/{id}"),
    ("post", "/ivrs/{id}/action_urls/{url_id}"): ("get", "/ivrs/{id}/action_urls/{url_id}"),
}

NOT_SERVED = {
    ("post", "/ivr_servers"),
    ("post", "/ivr_servers/{id}/destroy"),
}


# --- the reference, as JSON Schema ------------------------------------------------------------


def load_reference() -> dict[str, Any]:
    if not REFERENCE_PATH.is_file():
        pytest.fail(
            f"PortSIP's OpenAPI reference is not at {REFERENCE_PATH}; restore "
            "tests/data/portsip-vr-openapi.json or set VR_PORTSIP_OPENAPI"
        )
    data: dict[str, Any] = json.loads(REFERENCE_PATH.read_text())
    return data


def inline_refs(node: Any, root: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """Every local `$ref` replaced by (an allOf of) its target; siblings kept (OpenAPI 3.1)."""
    if isinstance(node, list):
        return [inline_refs(item, root, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        assert isinstance(ref, str) and ref.startswith("#/"), f"only local $refs: {ref}"
        assert ref not in seen, f"recursive $ref {ref}"
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: inline_refs(v, root, seen) for k, v in node.items() if k != "$ref"}
        return {"allOf": [inline_refs(target, root, (*seen, ref))], **siblings}
    return {key: inline_refs(value, root, seen) for key, value in node.items()}


def to_json_schema(node: Any, direction: str) -> Any:
    """An OpenAPI schema object as JSON Schema: `nullable` (3.0) as a null type; properties that
    are `readOnly` dropped in requests and `writeOnly` ones in responses."""
    if isinstance(node, list):
        return [to_json_schema(item, direction) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value, direction) for key, value in node.items()}
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    hidden = "readOnly" if direction == "request" else "writeOnly"
    properties = out.get("properties")
    if isinstance(properties, dict):
        dropped = {name for name, sub in properties.items() if sub.get(hidden) is True}
        out["properties"] = {k: v for k, v in properties.items() if k not in dropped}
        if "required" in out:
            out["required"] = [name for name in out["required"] if name not in dropped]
    return out


def with_deviations(node: Any) -> Any:
    """The reference schema with our documented deviations applied (see the docstring)."""
    if isinstance(node, list):
        return [with_deviations(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: with_deviations(value) for key, value in node.items()}
    properties = out.get("properties")
    if isinstance(properties, dict):
        if "holidays" in properties:
            properties["holidays"] = {"type": "array", "items": HOLIDAY_NAME}
        url = properties.get("url")
        if isinstance(url, dict) and url.get("pattern") == "[a-z0-9]{6,64}":
            properties["url"] = {
                **{k: v for k, v in url.items() if k not in ("pattern", "maxLength")},
                "maxLength": 2048,
            }
    return out


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMATS.checks("date_time")  # sic: PortSIP's spelling of date-time
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return (
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value) is not None
    )


def validate(instance: Any, schema: dict[str, Any], what: str) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    problems = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not problems, f"{what} violates the schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, p.absolute_path)) or '(root)'}: {p.message}" for p in problems
    )


def merged(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its `allOf` parts (recursively) merged into one set of properties; the
    non-null branch of an `anyOf` with null."""
    if "anyOf" in schema:
        branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(branches) == 1:
            return merged(branches[0])
    out = {k: v for k, v in schema.items() if k not in ("allOf", "properties")}
    properties: dict[str, Any] = {}
    for part in schema.get("allOf", []):
        part = merged(part)
        properties.update(part.get("properties", {}))
        out.update({k: v for k, v in part.items() if k != "properties"})
    properties.update(schema.get("properties", {}))
    if properties:
        out["properties"] = properties
    return out


def undeclared(instance: Any, schema: dict[str, Any], path: str = "") -> set[str]:
    """Paths (`items[].name`) of keys in `instance` that `schema` does not declare."""
    schema = merged(schema)
    found: set[str] = set()
    if isinstance(instance, dict) and "properties" in schema:
        for key, value in instance.items():
            at = f"{path}.{key}" if path else key
            if key in schema["properties"]:
                found |= undeclared(value, schema["properties"][key], at)
            else:
                found.add(at)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            found |= undeclared(item, schema["items"], f"{path}[]")
    return found


def example_of(schema: dict[str, Any], name: str, overrides: dict[str, Any]) -> Any:
    """A value built from the reference: its `example`, else `default`, else the first `enum`
    value; objects get every property. `overrides` (by property name) fills what the reference
    gives no example for, and ids that must exist on this server."""
    if name in overrides:
        return copy.deepcopy(overrides[name])
    schema = merged(schema)
    for key in ("example", "default"):
        if key in schema:
            return copy.deepcopy(schema[key])
    if "enum" in schema:
        return schema["enum"][0]
    if "properties" in schema:
        return {key: example_of(sub, key, overrides) for key, sub in schema["properties"].items()}
    kind = schema.get("type")
    if kind == "array":
        return [example_of(schema.get("items", {}), name, overrides)]
    if kind == "boolean":
        return True
    if kind == "integer":
        return schema.get("minimum", 1)
    raise AssertionError(f"the reference gives no example for {name!r}; add an override")


# --- matching responses to reference operations -------------------------------------------


class Contract:
    """PortSIP's reference, and the operations/statuses each test has checked."""

    def __init__(self) -> None:
        self.doc = load_reference()
        self.seen: set[tuple[str, str, int]] = set()

    def operations(self) -> set[tuple[str, str]]:
        return {
            (method, path)
            for path, ops in self.doc["paths"].items()
            for method in ops
            if method in ("get", "post", "put", "patch", "delete")
        }

    def match(self, url_path: str) -> str:
        """The reference path template of one of our URLs (`/api/ivrs/x` → `/ivrs/{id}`)."""
        assert url_path.startswith("/api/"), url_path
        parts = url_path.removeprefix("/api").split("/")
        best: tuple[int, str] | None = None
        for template in self.doc["paths"]:
            pattern = template.split("/")
            if len(pattern) != len(parts):
                continue
            literal = 0
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{"):
                    continue
                if want != got:
                    break
                literal += 1
            else:
                if best is None or literal > best[0]:
                    best = (literal, template)
        assert best is not None, f"{url_path} is not a path of the reference"
        return best[1]

    def operation(self, method: str, path: str) -> dict[str, Any]:
        op = self.doc["paths"][path].get(method)
        assert op is not None, f"the reference has no {method.upper()} {path}"
        return dict(op)

    def schema(self, method: str, path: str, status: int, direction: str) -> dict[str, Any]:
        op = self.operation(method, path)
        if direction == "request":
            raw = op["requestBody"]["content"]["application/json"]["schema"]
        else:
            raw = op["responses"][str(status)]["content"]["application/json"]["schema"]
        schema = to_json_schema(inline_refs(raw, self.doc), direction)
        return dict(with_deviations(schema))

    def request_schema(self, method: str, path: str) -> dict[str, Any]:
        return self.schema(method, path, 0, "request")

    def check_request(self, method: str, path: str, body: dict[str, Any]) -> None:
        """`body` is a PortSIP request: valid for the reference, no keys it does not declare."""
        schema = self.request_schema(method, path)
        validate(body, schema, f"request {method.upper()} {path}")
        assert not undeclared(body, schema), undeclared(body, schema)

    def check(self, response: httpx.Response) -> Any:
        """Check one of our responses against the reference; return its JSON body (or None)."""
        method = response.request.method.lower()
        path = self.match(response.request.url.path)
        status = response.status_code
        what = f"{method.upper()} {response.request.url.path} → {status}"
        op = self.operation(method, path)
        responses = op["responses"]
        key = next((k for k in (str(status), f"{status // 100}XX") if k in responses), None)
        if key is None:
            assert (method, path, status) in STATUS_DEVIATIONS, (
                f"{what}: the reference declares only {sorted(responses)} for {path}"
            )
        self.seen.add((method, path, status))
        declared = responses.get(key or "", {})
        for name, header in declared.get("headers", {}).items():
            value = response.headers.get(name)
            if name == "Content-Length" and status == 204:
                assert value is None, f"{what}: Content-Length on a 204"
                continue
            assert value is not None, f"{what}: no {name} header"
            if header.get("schema", {}).get("type") == "integer":
                assert value.isdigit(), f"{what}: {name}: {value!r} is not an integer"
        if status >= 400:
            assert response.headers["content-type"].startswith("application/json"), what
            body = response.json()
            validate(body, ERROR_ENVELOPE, what)
            return body
        content = declared.get("content", {})
        if "application/json" in content:
            body = response.json()
            schema = self.schema(method, path, status, "response")
            validate(body, schema, what)
            extra = undeclared(body, schema) - EXTENSIONS.get((method, path), set())
            assert not extra, f"{what}: keys the reference does not declare: {sorted(extra)}"
            return body
        if "application/octet-stream" in content:
            assert response.headers["content-type"] == "application/octet-stream", what
            assert response.content, f"{what}: empty download"
            return None
        if (method, path) in UPDATE_BODY_AS:
            get_method, get_path = UPDATE_BODY_AS[(method, path)]
            body = response.json()
            schema = self.schema(get_method, get_path, 200, "response")
            validate(body, schema, what)
            extra = undeclared(body, schema) - EXTENSIONS.get((method, path), set())
            assert not extra, f"{what}: keys the reference does not declare: {sorted(extra)}"
            return body
        assert response.content == b"", f"{what}: the reference declares no body"
        return None


@pytest.fixture
def contract() -> Contract:
    return Contract()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(
        tmp_path, server=ServerSettings(holidays=[{"name": HOLIDAY, "start": "--12-25"}])
    )
    yield made
    made.close()


def upload(api: Api, contract: Contract, data: bytes, name: str, *, bare_digest: bool) -> str:
    """The resumable upload, each step checked: create → append (2 chunks) → status →
    complete with the digest (bare hex as in the reference's example, or `sha256:<hex>`)."""
    started = api.post("/api/blobs/uploads", params={"filename": name})
    contract.check(started)
    assert started.status_code == 202
    upload_id = started.headers["PortSIP-Upload-ID"]
    token = {"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]}
    half = len(data) // 2
    for chunk in (data[:half], data[half:]):
        appended = api.post(f"/api/blobs/uploads/{upload_id}/append", content=chunk, headers=token)
        contract.check(appended)
        assert appended.status_code == 203
    status = api.get(f"/api/blobs/uploads/{upload_id}/status")
    contract.check(status)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{len(data) - 1}"
    hexdigest = hashlib.sha256(data).hexdigest()
    digest = hexdigest if bare_digest else f"sha256:{hexdigest}"
    completed = api.post(
        f"/api/blobs/uploads/{upload_id}/complete", params={"digest": digest}, headers=token
    )
    body = contract.check(completed)
    assert completed.status_code == 201, completed.text
    return str(body["id"])


def ivr_payload(contract: Contract, method: str, path: str, **overrides: Any) -> dict[str, Any]:
    """A receptionist request built from the reference's examples."""
    fill = {
        "name": "Reception",
        "extension_number": "850",
        "pin": PIN,
        "number": "201",
        "user_input": "1",
        "holidays": [HOLIDAY],  # deviation: holiday names, not PortSIP tenant holiday ids
        "caller_id": "+4930123456",
        "description": "main line",
        **overrides,
    }
    body = example_of(contract.request_schema(method, path), "body", fill)
    assert isinstance(body, dict)
    return body


ACTION_URL_FILL = {
    "name": "crm",
    "url": "https://crm.example.com/route",
    "headers": "X-Tenant:acme",
    "caller_mask": "",
    "dtmf_mask": "1000;2000;3000-4000",  # the reference's example in its description
    "username": "crmuser1",
    "password": "crmpass1",
    "token": "bearer-token-1",
}


# --- the tests --------------------------------------------------------------------------------


def test_the_reference_is_what_these_tests_assume(contract: Contract) -> None:
    """Every reference operation is either checked here or deliberately not served."""
    checked = {
        ("post", "/ivrs"),
        ("get", "/ivrs"),
        ("get", "/ivrs/{id}"),
        ("post", "/ivrs/{id}"),
        ("get", "/ivrs/{id}/status"),
        ("post", "/ivrs/{id}/destroy"),
        ("post", "/ivrs/{id}/action_urls"),
        ("get", "/ivrs/{id}/action_urls"),
        ("get", "/ivrs/{id}/action_urls/{url_id}"),
        ("post", "/ivrs/{id}/action_urls/{url_id}"),
        ("post", "/ivrs/{id}/action_urls/{url_id}/destroy"),
        ("get", "/ivr_servers"),
        ("get", "/ivr_servers/{id}"),
        ("post", "/ivr_servers/{id}"),
        ("get", "/ivr_servers/{id}/status"),
        ("post", "/blobs/uploads"),
        ("post", "/blobs/uploads/{id}/append"),
        ("post", "/blobs/uploads/{id}/complete"),
        ("get", "/blobs/uploads/{id}/status"),
        ("post", "/blobs/uploads/{id}/destroy"),
        ("get", "/blobs/{digest}"),
        ("get", "/files"),
        ("get", "/files/{id}"),
        ("post", "/files/{id}/destroy"),
    }
    assert contract.operations() == checked | NOT_SERVED
    assert contract.doc["openapi"].startswith("3.1")
    # the deviations patch what they claim to patch
    rule = contract.schema("get", "/ivrs/{id}", 200, "response")["properties"]
    assert rule["custom_forward_rules"]["items"]["properties"]["holidays"]["items"] == HOLIDAY_NAME
    raw = contract.operation("get", "/ivrs/{id}/action_urls/{url_id}")
    assert "[a-z0-9]{6,64}" in json.dumps(raw)


def test_a_portsip_receptionist_from_the_reference_examples_round_trips(
    api: Api, contract: Contract
) -> None:
    prompt = upload(api, contract, wav_float_stereo(1.0), "welcome.wav", bare_digest=True)
    hold = upload(api, contract, wav_float_stereo(0.5), "hold.wav", bare_digest=False)
    payload = ivr_payload(
        contract, "post", "/ivrs", prompt_file_id=prompt, transfer_prompt_file_id=hold
    )
    # the reference's own examples are in it
    assert payload["language"] == "en-US"
    assert payload["custom_forward_rules"][0]["office_hours"]["mode"] == "CUSTOM"
    assert payload["custom_forward_rules"][0]["office_hours"]["monday"]["ranges"] == [
        {"from": "09:00", "to": "17:00"}
    ]
    assert payload["outbound_caller_ids"][0]["provider_id"] == "NzAwNTUxOTA5NzczMTQ4MTYw"
    contract.check_request("post", "/ivrs", payload)

    created = api.post("/api/ivrs", json=payload)
    assert created.status_code == 201, created.text
    rid = contract.check(created)["id"]

    view = contract.check(api.get(f"/api/ivrs/{rid}"))
    for key, value in payload.items():
        if key == "pin":
            assert "pin" not in view  # write-only
            continue
        assert view[key] == value, key
    assert (
        view["prompt_file_name"] == "welcome.wav"
        and view["transfer_prompt_file_name"] == "hold.wav"
    )
    prompt_url = view["prompt_file_url"]
    assert isinstance(view["prompt_file_size"], int) and prompt_url.startswith("/api/blobs/")
    download = api.get(prompt_url)
    contract.check(download)
    assert download.status_code == 200 and download.content[:4] == b"RIFF"
    assert "attachment" in download.headers["Content-Disposition"]

    listed = contract.check(api.get("/api/ivrs", params={"filter": "extension_number eq '850'"}))
    assert listed["count"] == 1 and listed["items"] == [view]

    update = ivr_payload(contract, "post", "/ivrs/{id}", name="Front desk", number="202")
    update["prompt_file_id"], update["transfer_prompt_file_id"] = prompt, hold
    contract.check_request("post", "/ivrs/{id}", update)
    updated = api.post(f"/api/ivrs/{rid}", json=update)
    assert updated.status_code == 200, updated.text
    after = contract.check(updated)
    assert after["name"] == "Front desk" and after["extension_number"] == "850"
    assert after["timeout_forward_rule"]["number"] == "202"
    # our GET, sent back as it is (read-only fields included), is a valid update
    assert contract.check(api.post(f"/api/ivrs/{rid}", json=after)) == after

    assert contract.check(api.get(f"/api/ivrs/{rid}/status")) == {"status": "ONLINE"}
    model = api.runtime.receptionists["850"]
    assert model.name == "Front desk" and model.prompt_file_id == prompt

    destroyed = api.post(f"/api/ivrs/{rid}/destroy")
    assert destroyed.status_code == 204
    contract.check(destroyed)
    assert contract.check(api.get("/api/ivrs")) == {"count": 0, "items": []}


def test_the_live_change_payloads_are_portsip_requests(contract: Contract) -> None:
    """What the end-to-end test (tests/integration/test_engine_live_config.py) sends."""
    from tests.integration.test_engine_live_config import PORTSIP_IVR, menu

    contract.check_request("post", "/ivrs", PORTSIP_IVR)
    contract.check_request("post", "/ivrs/{id}", {"custom_forward_rules": menu("202")})
    contract.check_request("post", "/ivrs/{id}", {"prompt_file_id": "NzAwNTUxOTA5NzczMTQ4MTYw"})


def test_a_minimal_receptionist_leaves_unset_fields_out(api: Api, contract: Contract) -> None:
    """No `null` anywhere (the reference declares nothing nullable), and PortSIP's defaults."""
    payload = {"name": "Main", "extension_number": "800", "pin": PIN}
    contract.check_request("post", "/ivrs", payload)
    rid = contract.check(api.post("/api/ivrs", json=payload))["id"]
    view = contract.check(api.get(f"/api/ivrs/{rid}"))
    assert "null" not in json.dumps(view), view
    for name in ("prompt_file_name", "prompt_file_size", "prompt_file_url", "prompt_file_id"):
        assert name not in view
    assert "number" not in view["failure_forward_rule"]
    assert "non_office_hours_forward_rule" not in view
    assert contract.check(api.get("/api/ivrs"))["items"] == [view]
    # an action URL without credentials: no `username`
    url_id = contract.check(
        api.post(
            f"/api/ivrs/{rid}/action_urls",
            json={"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9/x"},
        )
    )["id"]
    got = contract.check(api.get(f"/api/ivrs/{rid}/action_urls/{url_id}"))
    assert "username" not in got and "null" not in json.dumps(got), got
    assert contract.check(api.get(f"/api/ivrs/{rid}/action_urls"))["items"] == [got]
    # PortSIP's defaults
    assert (view["language"], view["dtmf_interval"], view["enable_pin"]) == ("en-US", 2, True)
    assert view["timeout_forward_rule"]["timeout"] == 30
    assert view["timeout_forward_rule"]["repeat_times"] == 3


def test_action_urls_from_the_reference_examples(api: Api, contract: Contract) -> None:
    rid = api.create_ivr()
    payload = example_of(
        contract.request_schema("post", "/ivrs/{id}/action_urls"), "body", ACTION_URL_FILL
    )
    assert (payload["type"], payload["method"], payload["auth"]) == ("DTMF", "GET", "DISABLE")
    assert (payload["connection_timeout"], payload["request_timeout"]) == (2, 2)
    contract.check_request("post", "/ivrs/{id}/action_urls", payload)
    created = api.post(f"/api/ivrs/{rid}/action_urls", json=payload)
    assert created.status_code == 201, created.text
    url_id = contract.check(created)["id"]

    got = contract.check(api.get(f"/api/ivrs/{rid}/action_urls/{url_id}"))
    for key, value in payload.items():
        if key in ("password", "token"):
            assert key not in got  # write-only
        else:
            assert got[key] == value, key
    listed = contract.check(api.get(f"/api/ivrs/{rid}/action_urls"))
    assert listed["items"] == [got]

    change = {"enabled": True, "auth": "DIGEST", "method": "POST", "url": "http://127.0.0.1:9/x"}
    contract.check_request("post", "/ivrs/{id}/action_urls/{url_id}", change)
    updated = api.post(f"/api/ivrs/{rid}/action_urls/{url_id}", json=change)
    assert updated.status_code == 200, updated.text
    after = contract.check(updated)
    assert {k: after[k] for k in change} == change

    destroyed = api.post(f"/api/ivrs/{rid}/action_urls/{url_id}/destroy")
    assert destroyed.status_code == 204
    contract.check(destroyed)
    assert contract.check(api.get(f"/api/ivrs/{rid}/action_urls"))["items"] == []


def test_this_server_and_its_status(api: Api, contract: Contract) -> None:
    servers = contract.check(api.get("/api/ivr_servers"))
    [item] = servers["items"]
    assert item["type"] == "EXTERNAL"
    assert contract.check(api.get(f"/api/ivr_servers/{item['id']}")) == item
    for server_id in (item["id"], item["name"]):
        status = contract.check(api.get(f"/api/ivr_servers/{server_id}/status"))
        assert status["status"] == "ONLINE"
        assert status["cpu_usage"] >= 0 and 0 <= status["memory_usage"] <= 100
    # PortSIP's updateVrServer: disabled, the server is OFFLINE (new calls get 503) until enabled
    contract.check_request("post", "/ivr_servers/{id}", {"enabled": False})
    disabled = api.post("/api/ivr_servers/local", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    contract.check(disabled)
    assert contract.check(api.get("/api/ivr_servers/local/status"))["status"] == "OFFLINE"
    assert contract.check(api.get("/api/ivr_servers/local"))["enabled"] is False
    assert contract.check(api.post("/api/ivr_servers/local", json={"enabled": True})) is None
    assert contract.check(api.get("/api/ivr_servers/local/status"))["status"] == "ONLINE"
    api.serving = False
    assert contract.check(api.get("/api/ivr_servers/local/status"))["status"] == "OFFLINE"


def test_files_and_uploads(api: Api, contract: Contract) -> None:
    uploaded = wav_float_stereo(1.0)
    file_id = upload(api, contract, uploaded, "menu.wav", bare_digest=False)
    listed = contract.check(api.get("/api/files", params={"top": 10}))
    assert listed["count"] == 1
    info = contract.check(api.get(f"/api/files/{file_id}"))
    assert listed["items"] == [info]
    assert (info["name"], info["media_type"]) == ("menu.wav", "audio/vnd.wave")
    datetime.fromisoformat(info["created_at"])
    hexdigest = info["digest"].removeprefix("sha256:")
    for digest in (hexdigest, info["digest"]):  # the reference's example is bare hex
        download = api.get(f"/api/blobs/{digest}")
        contract.check(download)
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == hexdigest
    # the digest of the bytes uploaded (what a client can compute) gives the same converted file,
    # and the download needs no token (PortSIP: `security: []`)
    source = hashlib.sha256(uploaded).hexdigest()
    assert source != hexdigest
    for digest in (source, f"SHA256:{source.upper()}", hexdigest):
        download = api.client.get(f"/api/blobs/{digest}", headers={"Authorization": ""})
        contract.check(download)
        assert download.status_code == 200, digest
        assert hashlib.sha256(download.content).hexdigest() == hexdigest
        assert download.headers["ETag"] == f'"sha256:{hexdigest}"'

    # an upload abandoned with destroy
    started = api.post("/api/blobs/uploads", params={"filename": "x.wav", "temporary": "true"})
    contract.check(started)
    upload_id = started.headers["PortSIP-Upload-ID"]
    destroyed = api.post(f"/api/blobs/uploads/{upload_id}/destroy")
    assert destroyed.status_code == 204
    contract.check(destroyed)

    gone = api.post(f"/api/files/{file_id}/destroy")
    assert gone.status_code == 204
    contract.check(gone)
    assert contract.check(api.get("/api/files")) == {"count": 0, "items": []}


def test_error_responses(api: Api, contract: Contract) -> None:
    """Every shared operation's errors: a declared status and the error envelope."""
    rid = api.create_ivr(name="Main", extension_number="800")
    url_id = contract.check(
        api.post(
            f"/api/ivrs/{rid}/action_urls",
            json={"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9/x"},
        )
    )["id"]
    file_id = upload(api, contract, wav_float_stereo(0.5), "a.wav", bare_digest=False)
    api.post(f"/api/ivrs/{rid}", json={"prompt_file_id": file_id})
    missing = "NzAwNTUxOTA5NzczMTQ4MTYw"  # the reference's example id
    no_digest = "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882"

    expected: list[tuple[str, str, dict[str, Any], int, str]] = [
        (
            "POST",
            "/api/ivrs",
            {"json": {"name": "", "extension_number": "8"}},
            400,
            "VALIDATE_FAILED",
        ),
        (
            "POST",
            "/api/ivrs",
            {"json": {"name": "Two", "extension_number": "800"}},
            409,
            "CONFLICT",
        ),
        ("POST", "/api/ivrs", {"content": b"{not json"}, 400, "VALIDATE_FAILED"),
        ("GET", "/api/ivrs", {"params": {"top": 101}}, 400, "VALIDATE_FAILED"),
        ("GET", "/api/ivrs", {"params": {"filter": "pin eq '1'"}}, 400, "VALIDATE_FAILED"),
        ("GET", f"/api/ivrs/{missing}", {}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{missing}", {"json": {"name": "x"}}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{rid}", {"json": {"dtmf_interval": 0}}, 400, "VALIDATE_FAILED"),
        ("POST", f"/api/ivrs/{rid}", {"json": {"prompt_file_id": missing}}, 400, "VALIDATE_FAILED"),
        ("GET", f"/api/ivrs/{missing}/status", {}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{missing}/destroy", {}, 404, "NOT_FOUND"),
        ("GET", f"/api/ivrs/{missing}/action_urls", {}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{missing}/action_urls", {"json": {}}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{rid}/action_urls", {"json": {"name": "x"}}, 400, "VALIDATE_FAILED"),
        ("GET", f"/api/ivrs/{rid}/action_urls/{missing}", {}, 404, "NOT_FOUND"),
        (
            "POST",
            f"/api/ivrs/{rid}/action_urls/{url_id}",
            {"json": {"method": "PUT"}},
            400,
            "VALIDATE_FAILED",
        ),
        ("POST", f"/api/ivrs/{rid}/action_urls/{missing}", {"json": {}}, 404, "NOT_FOUND"),
        ("POST", f"/api/ivrs/{rid}/action_urls/{missing}/destroy", {}, 404, "NOT_FOUND"),
        ("GET", "/api/ivr_servers", {"headers": {"Authorization": ""}}, 401, "UNAUTHORIZED"),
        ("GET", f"/api/ivr_servers/{missing}", {}, 404, "NOT_FOUND"),
        ("GET", f"/api/ivr_servers/{missing}/status", {}, 404, "NOT_FOUND"),
        ("POST", "/api/blobs/uploads", {"params": {"temporary": "maybe"}}, 400, "VALIDATE_FAILED"),
        (
            "POST",
            "/api/blobs/uploads/no-such-upload/append",
            {"content": b"x", "headers": {"PortSIP-Upload-Token": "t"}},
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/api/blobs/uploads/no-such-upload/complete",
            {"params": {"digest": no_digest}},
            404,
            "NOT_FOUND",
        ),
        ("GET", "/api/blobs/uploads/no-such-upload/status", {}, 404, "NOT_FOUND"),
        ("POST", "/api/blobs/uploads/no-such-upload/destroy", {}, 404, "NOT_FOUND"),
        ("GET", f"/api/blobs/{no_digest}", {}, 404, "NOT_FOUND"),
        ("GET", "/api/blobs/not-a-digest", {}, 400, "VALIDATE_FAILED"),
        ("GET", "/api/files", {"params": {"skip": -1}}, 400, "VALIDATE_FAILED"),
        ("GET", f"/api/files/{missing}", {}, 404, "NOT_FOUND"),
        ("POST", f"/api/files/{missing}/destroy", {}, 404, "NOT_FOUND"),
        ("POST", f"/api/files/{file_id}/destroy", {}, 409, "CONFLICT"),
        # not served: the PBX's registry of servers
        ("POST", "/api/ivr_servers", {"json": {"name": "vr-2"}}, 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/api/ivr_servers/local", {"json": {"enabled": "no"}}, 400, "VALIDATE_FAILED"),
        ("POST", f"/api/ivr_servers/{missing}", {"json": {"enabled": False}}, 404, "NOT_FOUND"),
        ("POST", "/api/ivr_servers/local/destroy", {}, 409, "CONFLICT"),
    ]
    for method, url, kwargs, status, code in expected:
        response = api.request(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.text)
        if contract.match(url) and (method.lower(), contract.match(url)) in NOT_SERVED:
            validate(response.json(), ERROR_ENVELOPE, f"{method} {url}")
        else:
            contract.check(response)
        assert response.json()["errors"][0]["code"] == code, (method, url, response.text)

    # the upload steps' own errors: a wrong token, a wrong digest (nothing half-stored)
    data = wav_float_stereo(0.5)
    started = api.post("/api/blobs/uploads", params={"filename": "b.wav"})
    upload_id = started.headers["PortSIP-Upload-ID"]
    token = {"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]}
    wrong = api.post(
        f"/api/blobs/uploads/{upload_id}/append",
        content=data,
        headers={"PortSIP-Upload-Token": "x"},
    )
    assert wrong.status_code == 403
    contract.check(wrong)
    assert (
        api.post(f"/api/blobs/uploads/{upload_id}/append", content=data, headers=token).status_code
        == 203
    )
    refused = api.post(
        f"/api/blobs/uploads/{upload_id}/complete", params={"digest": no_digest}, headers=token
    )
    assert refused.status_code == 400
    assert "digest" in contract.check(refused)["errors"][0]["detail"]

    # without the token, in the envelope
    bare = api.client.get("/api/ivrs", headers={"Authorization": ""})
    assert bare.status_code == 401
    contract.check(bare)

    shared = contract.operations() - NOT_SERVED
    with_errors = {(m, p) for m, p, s in contract.seen if s >= 400}
    assert shared - with_errors == set(), sorted(shared - with_errors)
