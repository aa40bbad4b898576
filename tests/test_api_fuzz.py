"""Property-based fuzzing of the HTTP API with schemathesis, from the app's own OpenAPI document
(`GET /openapi.json`, behind the token).

Every operation of the document is fuzzed in schemathesis' positive mode (data that fits the
schemas) and negative mode (data that violates them), a bounded number of examples each
(`VR_FUZZ_EXAMPLES`, default 20: about 10 s in all), with the bearer token. For each request:
no 5xx, and every error (4xx) is PortSIP's envelope `{"errors": [{"code", "message", "detail"}]}`.

Our handlers read receptionist and action URL bodies themselves (to report every problem with
its field path), so the served document has no request bodies for them; before fuzzing, the test
adds the engine's own models as the bodies (with hints — digit patterns, known languages — so
that positive examples often pass validation and reach the store), raw bytes for upload chunks,
the `PortSIP-Upload-Token` header; and about half of the examples use the ids of a seeded
receptionist, action URL, file and open upload (with its token) as path parameters, so the fuzz
reaches existing resources and not only 404s. Each operation runs against a fresh store.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from engine.api import PUBLIC_PATHS
from engine.model import ActionUrl, Receptionist, ServerSettings
from tests.test_api_helpers import AUTH, ERROR_ENVELOPE, Api, make_api, wav_float_stereo

EXAMPLES = int(os.environ.get("VR_FUZZ_EXAMPLES", "20"))


# Every operation of our document (a new route must be added here, and so gets fuzzed).
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/status"),
    ("GET", "/api/ivr_servers"),
    ("GET", "/api/ivr_servers/{server_id}"),
    ("POST", "/api/ivr_servers/{server_id}"),
    ("POST", "/api/ivr_servers/{server_id}/destroy"),
    ("GET", "/api/ivr_servers/{server_id}/status"),
    ("GET", "/api/calls"),
    ("GET", "/api/calls/{session_id}"),
    ("GET", "/api/ivrs"),
    ("POST", "/api/ivrs"),
    ("GET", "/api/ivrs/{receptionist_id}"),
    ("POST", "/api/ivrs/{receptionist_id}"),
    ("GET", "/api/ivrs/{receptionist_id}/status"),
    ("GET", "/api/ivrs/{receptionist_id}/action_urls"),
    ("POST", "/api/ivrs/{receptionist_id}/action_urls"),
    ("GET", "/api/ivrs/{receptionist_id}/action_urls/{url_id}"),
    ("POST", "/api/ivrs/{receptionist_id}/action_urls/{url_id}"),
    ("POST", "/api/ivrs/{receptionist_id}/action_urls/{url_id}/destroy"),
    ("POST", "/api/ivrs/{receptionist_id}/destroy"),
    ("POST", "/api/blobs/uploads"),
    ("POST", "/api/blobs/uploads/{upload_id}/append"),
    ("PATCH", "/api/blobs/uploads/{upload_id}/append"),
    ("GET", "/api/blobs/uploads/{upload_id}/status"),
    ("POST", "/api/blobs/uploads/{upload_id}/complete"),
    ("POST", "/api/blobs/uploads/{upload_id}/destroy"),
    ("GET", "/api/blobs/{digest}"),
    ("GET", "/api/files"),
    ("GET", "/api/files/{file_id}"),
    ("POST", "/api/files/{file_id}/destroy"),
]

# Negative mode needs inputs that can be invalid: typed query parameters or a JSON body. (Path
# parameters and upload chunks are arbitrary strings and bytes: every value is valid input.)
NEGATABLE = {
    ("GET", "/api/calls"),
    ("GET", "/api/ivrs"),
    ("GET", "/api/files"),
    ("POST", "/api/ivrs"),
    ("POST", "/api/ivrs/{receptionist_id}"),
    ("POST", "/api/ivrs/{receptionist_id}/action_urls"),
    ("POST", "/api/ivrs/{receptionist_id}/action_urls/{url_id}"),
    ("POST", "/api/blobs/uploads"),
}
RUNS = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    (method, path, GenerationMode.NEGATIVE)
    for method, path in OPERATIONS
    if (method, path) in NEGATABLE
]

# Hints for the generated bodies: values of the right shape, so positive examples often pass.
DIGITS = {"type": "string", "pattern": "^[0-9]{3,6}$"}
HINTS: dict[str, dict[str, Any]] = {
    "extension_number": DIGITS,
    "number": {"anyOf": [DIGITS, {"type": "null"}]},
    "language": {"enum": ["en-US", "de", "en_US", "fr-FR", "xx-invalid"]},
    "pin": {"anyOf": [{"enum": ["135790", "2468013", "111111"]}, {"type": "null"}]},
    "user_input": {"type": "string", "pattern": "^[0-9*]{1,3}#?$"},
    "dtmf_mask": {"enum": ["", "5000-5999", "5***", "ALL", "1;2;3", "9-1"]},
    "caller_mask": {"enum": ["", "+4930*******", "ALL", "100-2000"]},
    "exclude_list": {"enum": ["", "1000-1099;2000", "x"]},
    "url": {"enum": ["http://127.0.0.1:9/x", "https://crm.example/route", "ftp://x"]},
    "headers": {"enum": ["", "X-A:1&X-B:2", "bad header"]},
    "from": {"enum": ["09:00", "13:30", "24:00"]},
    "to": {"enum": ["12:30", "17:00", "24:00", "08:00"]},
}


@dataclass
class Seeded:
    api: Api
    receptionist_id: str
    url_id: str
    file_id: str
    digest: str
    upload_id: str
    upload_token: str


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    server = ServerSettings(holidays=[{"name": "Christmas", "start": "--12-25"}])
    api = make_api(tmp_path, server=server)
    completed = api.upload(wav_float_stereo(0.5), "menu.wav")
    assert completed.status_code == 201, completed.text
    file_id = completed.json()["id"]
    digest = api.get(f"/api/files/{file_id}").json()["digest"]
    rid = api.create_ivr(pin="135790", prompt_file_id=None)
    url = api.post(
        f"/api/ivrs/{rid}/action_urls",
        json={"name": "crm", "type": "DTMF", "url": "http://127.0.0.1:9/x"},
    )
    assert url.status_code == 201, url.text
    started = api.post("/api/blobs/uploads", params={"filename": "part.wav"})
    yield Seeded(
        api=api,
        receptionist_id=rid,
        url_id=url.json()["id"],
        file_id=file_id,
        digest=digest,
        upload_id=started.headers["PortSIP-Upload-ID"],
        upload_token=started.headers["PortSIP-Upload-Token"],
    )
    api.close()


def our_document(api: Api) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def hinted(schema: Any) -> Any:
    """`schema` with the HINTS applied to properties of those names, and without the
    receptionist's `action_urls` (refused in a receptionist body; managed on their own)."""
    if isinstance(schema, list):
        return [hinted(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: hinted(value) for key, value in schema.items()}
    properties = out.get("properties")
    if isinstance(properties, dict):
        properties.pop("action_urls", None)
        for name, hint in HINTS.items():
            if name in properties:
                properties[name] = hint
    return out


def json_body(schema: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    schema = dict(schema)
    if partial:
        schema.pop("required", None)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def fuzzable(doc: dict[str, Any]) -> dict[str, Any]:
    """Our document plus what the fuzz needs (see the module docstring)."""
    doc = copy.deepcopy(doc)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    bodies: dict[str, dict[str, Any]] = {}
    for model in (Receptionist, ActionUrl):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = hinted(sub)
        bodies[model.__name__] = hinted(schema)
    paths = doc["paths"]
    paths["/api/ivrs"]["post"]["requestBody"] = json_body(bodies["Receptionist"], partial=False)
    paths["/api/ivrs/{receptionist_id}"]["post"]["requestBody"] = json_body(
        bodies["Receptionist"], partial=True
    )
    paths["/api/ivrs/{receptionist_id}/action_urls"]["post"]["requestBody"] = json_body(
        bodies["ActionUrl"], partial=False
    )
    paths["/api/ivrs/{receptionist_id}/action_urls/{url_id}"]["post"]["requestBody"] = json_body(
        bodies["ActionUrl"], partial=True
    )
    raw = {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    }
    token = {
        "name": "PortSIP-Upload-Token",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
    }
    for method in ("post", "patch"):
        append = paths["/api/blobs/uploads/{upload_id}/append"][method]
        append["requestBody"] = {**raw, "required": True}
        append["parameters"] = [*append.get("parameters", []), token]
    complete = paths["/api/blobs/uploads/{upload_id}/complete"]["post"]
    complete["requestBody"] = {**raw, "required": False}
    complete["parameters"] = [*complete.get("parameters", []), token]

    return doc


def test_our_openapi_document_is_served_and_well_formed(seeded: Seeded) -> None:
    api = seeded.api
    assert api.client.get("/openapi.json", headers={"Authorization": ""}).status_code == 401
    doc = our_document(api)
    assert doc["openapi"].startswith("3.")
    operations = [
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert sorted(operations) == sorted(OPERATIONS)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    # errors as they are answered: 400/401 in the envelope, never FastAPI's 422
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    error = doc["components"]["schemas"]["Error"]
    jsonschema.validate({"errors": [{"code": "X", "message": "m", "detail": {}}]}, error)
    for method, path in OPERATIONS:
        operation = doc["paths"][path][method.lower()]
        assert "422" not in operation["responses"], (method, path)
        if path not in PUBLIC_PATHS:
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
    # the fuzz document is a valid OpenAPI document for schemathesis
    schemathesis.openapi.from_dict(fuzzable(doc))


@pytest.mark.parametrize(
    ("method", "path", "mode"), RUNS, ids=[f"{m} {p} {mode.value}" for m, p, mode in RUNS]
)
def test_fuzz_no_server_errors_and_errors_in_the_envelope(
    seeded: Seeded, method: str, path: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_dict(fuzzable(our_document(seeded.api)))
    schema.app = seeded.api.client.app
    operation = schema[path][method]
    envelope = jsonschema.Draft202012Validator(ERROR_ENVELOPE)
    # half of the examples on the seeded resources (with the upload's token), half on any ids
    known = {
        "receptionist_id": seeded.receptionist_id,
        "url_id": seeded.url_id,
        "file_id": seeded.file_id,
        "upload_id": seeded.upload_id,
        "digest": seeded.digest,
        "server_id": "local",
        "session_id": "no-such-call",
    }
    names = [name for name in known if "{" + name + "}" in path]
    strategy = operation.as_strategy(generation_mode=mode)
    if names:
        on_seeded = operation.as_strategy(
            generation_mode=mode,
            path_parameters={name: known[name] for name in names},
            headers={"PortSIP-Upload-Token": seeded.upload_token} if "upload_id" in names else None,
        )
        strategy = on_seeded | strategy

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(headers=AUTH)
        what = f"{case.method} {case.formatted_path} {case.query or ''} → {response.status_code}"
        assert response.status_code < 500, f"{what}: {response.content[:500]!r}"
        if response.status_code >= 400:
            problems = list(envelope.iter_errors(response.json()))
            assert not problems, f"{what}: not the error envelope: {response.content[:500]!r}"

    run()
    assert seeded.api.store.integrity_check() == "ok"
