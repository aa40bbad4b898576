"""The HTTP API on a real SQLite store: PortSIP's paths, verbs, envelopes and list options for
receptionists and action URLs, field-path errors, 401/404/409, live changes, server status,
call records — and no response ever carrying a PIN, its hash or an action URL secret."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.flow.record import InputRecord
from engine.model import ServerSettings
from engine.records import CallRecord
from engine.rules.pin import verify_pin
from engine.store import StoreCallRecords
from tests.record_helpers import call_record as typed_record
from tests.test_api_helpers import PIN, TOKEN, Api, make_api

SECRETS = ("crmpass1", "bearer-token-secret", "signing-secret-0123456789")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    server = ServerSettings(holidays=[{"name": "Christmas", "start": "--12-25"}])
    made = make_api(tmp_path, server=server)
    yield made
    # Nothing any test received may contain a PIN, its hash or an action URL secret.
    for body in made.bodies:
        assert PIN.encode() not in body
        assert b"pbkdf2" not in body
        for secret in SECRETS:
            assert secret.encode() not in body
    made.close()


def errors(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1
    error = body["errors"][0]
    assert set(error) == {"code", "message", "detail"}
    return dict(error)


DISA_MENU = [
    {"user_input": "0", "office_hours_forward_rule": {"action": "DISA"}},
    {
        "user_input": "1",
        "holidays": ["Christmas"],
        "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": "201"},
    },
]


# --- authentication --------------------------------------------------------------------------


def test_every_route_but_health_and_blob_downloads_needs_the_token(api: Api) -> None:
    bare = api.client
    assert bare.get("/healthz", headers={"Authorization": ""}).status_code == 200
    # like PortSIP: a blob is downloaded by its digest alone (unknown here: 404, not 401)
    assert bare.get("/api/blobs/" + "0" * 64, headers={"Authorization": ""}).status_code == 404
    for method, url in [
        ("GET", "/api/ivrs"),
        ("POST", "/api/ivrs"),
        ("GET", "/api/files"),
        ("POST", "/api/blobs/uploads"),
        ("GET", "/api/blobs/uploads/x/status"),
        ("GET", "/api/calls"),
        ("GET", "/api/ivr_servers"),
        ("GET", "/metrics"),
        ("GET", "/api/no/such/route"),
    ]:
        for headers in (
            {"Authorization": ""},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            response = bare.request(method, url, headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert errors(response)["code"] == "UNAUTHORIZED"
            assert response.headers["WWW-Authenticate"] == "Bearer"


# --- receptionists ---------------------------------------------------------------------------


def test_create_read_update_destroy(api: Api) -> None:
    created = api.post(
        "/api/ivrs",
        json={
            "name": "Main",
            "extension_number": "800",
            "pin": PIN,
            "custom_forward_rules": DISA_MENU,
        },
    )
    assert created.status_code == 201
    assert set(created.json()) == {"id"}
    rid = created.json()["id"]
    assert isinstance(rid, str) and len(rid) == 16

    got = api.get(f"/api/ivrs/{rid}")
    assert got.status_code == 200
    view = got.json()
    assert view["id"] == rid and view["name"] == "Main" and view["extension_number"] == "800"
    # PortSIP's defaults
    assert view["language"] == "en-US" and view["dtmf_interval"] == 2
    assert view["enable_pin"] is True and view["enable_night_mode"] is False
    assert view["timeout_forward_rule"] == {
        "action": "HANGUP",
        "timeout": 30,
        "repeat_times": 3,
    }
    assert "prompt_file_id" not in view and "prompt_file_url" not in view
    assert "pin" not in view and "action_urls" not in view

    listed = api.get("/api/ivrs").json()
    assert listed == {"count": 1, "items": [view]}

    # partial update: only the name changes; the PIN (hash) is kept
    updated = api.post(f"/api/ivrs/{rid}", json={"name": "Reception"})
    assert updated.status_code == 200
    assert updated.json() == {**view, "name": "Reception"}
    model = api.runtime.receptionists["800"]
    assert model.name == "Reception" and model.pin and verify_pin(model.pin, PIN)

    # a new PIN in clear replaces the hash
    assert api.post(f"/api/ivrs/{rid}", json={"pin": "246809"}).status_code == 200
    model = api.runtime.receptionists["800"]
    assert model.pin and verify_pin(model.pin, "246809") and not verify_pin(model.pin, PIN)

    # a GET echoed back (with its read-only fields) is a valid update
    echoed = api.get(f"/api/ivrs/{rid}").json()
    assert api.post(f"/api/ivrs/{rid}", json=echoed).status_code == 200

    destroyed = api.post(f"/api/ivrs/{rid}/destroy")
    assert destroyed.status_code == 204 and destroyed.content == b""
    assert api.get(f"/api/ivrs/{rid}").status_code == 404
    assert api.get("/api/ivrs").json() == {"count": 0, "items": []}
    assert api.runtime.receptionists == {}


def test_a_pin_hash_from_a_client_is_not_accepted_as_a_pin(api: Api) -> None:
    rid = api.create_ivr(pin=PIN)
    stolen = api.store.snapshot().receptionists["800"].pin
    response = api.post(f"/api/ivrs/{rid}", json={"pin": stolen})
    assert response.status_code == 400
    assert "pin" in errors(response)["detail"]
    bad_create = api.post("/api/ivrs", json={"name": "X", "extension_number": "801", "pin": stolen})
    assert bad_create.status_code == 400


def test_every_problem_is_reported_at_once_with_its_field_path(api: Api) -> None:
    response = api.post(
        "/api/ivrs",
        json={
            "name": "",
            "extension_number": "80",
            "dtmf_interval": 0,
            "pin": "123456",
            "prompt_file_id": "no-such-file",
            "custom_forward_rules": [
                {"user_input": "1", "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER"}},
                {
                    "user_input": "2",
                    "holidays": ["Easter"],
                    "office_hours_forward_rule": {"action": "HANGUP"},
                },
            ],
            "timeout_forward_rule": {"action": "DISA"},
            "colour": "blue",
            "action_urls": [],
        },
    )
    assert response.status_code == 400
    error = errors(response)
    assert error["code"] == "VALIDATE_FAILED"
    assert set(error["detail"]) == {
        "name",
        "extension_number",
        "dtmf_interval",
        "pin",
        "prompt_file_id",
        "custom_forward_rules[0].office_hours_forward_rule",
        "custom_forward_rules[1].holidays[0]",
        "timeout_forward_rule.action",
        "colour",
        "action_urls",
    }
    assert "needs a number" in error["detail"]["custom_forward_rules[0].office_hours_forward_rule"]
    assert "consecutive" in error["detail"]["pin"]
    assert "unknown field" in error["detail"]["colour"]
    assert api.store.receptionist_count() == 0 and api.snapshots == []


def test_a_rule_of_the_whole_receptionist_is_reported_under_its_field(api: Api) -> None:
    response = api.post(
        "/api/ivrs",
        json={"name": "M", "extension_number": "800", "custom_forward_rules": DISA_MENU},
    )
    assert response.status_code == 400
    assert "pin is required" in errors(response)["detail"]["pin"]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "is empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
def test_bodies_that_are_not_json_objects(api: Api, content: bytes, detail: str) -> None:
    response = api.post("/api/ivrs", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert detail in errors(response)["detail"]["body"]


def test_a_huge_body_is_refused(api: Api) -> None:
    response = api.post("/api/ivrs", content=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert response.status_code == 413
    assert errors(response)["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_ids_are_404(api: Api) -> None:
    rid = api.create_ivr()
    for method, url in [
        ("GET", "/api/ivrs/nope"),
        ("POST", "/api/ivrs/nope"),
        ("POST", "/api/ivrs/nope/destroy"),
        ("GET", "/api/ivrs/nope/status"),
        ("GET", "/api/ivrs/nope/action_urls"),
        ("POST", "/api/ivrs/nope/action_urls"),
        ("GET", f"/api/ivrs/{rid}/action_urls/nope"),
        ("POST", f"/api/ivrs/{rid}/action_urls/nope"),
        ("POST", f"/api/ivrs/{rid}/action_urls/nope/destroy"),
        ("GET", "/api/files/nope"),
        ("POST", "/api/files/nope/destroy"),
        ("GET", "/api/calls/nope"),
        ("GET", "/api/ivr_servers/nope"),
        ("GET", "/api/ivr_servers/nope/status"),
        ("GET", "/api/nothing/here"),
    ]:
        response = api.request(method, url, json={"name": "x"})
        assert response.status_code == 404, (method, url, response.text)
        assert errors(response)["code"] == "NOT_FOUND"


def test_wrong_method_uses_the_envelope(api: Api) -> None:
    response = api.request("DELETE", "/api/ivrs")
    assert response.status_code == 405
    assert errors(response)["code"] == "METHOD_NOT_ALLOWED"


def test_a_405_allows_exactly_the_methods_of_its_path(api: Api) -> None:
    """For every path of the API (our OpenAPI document), every other method is a 405 whose
    `Allow` lists exactly the methods that path serves — also where one path has a GET route
    and a POST route of its own (Starlette's 405 named only the first)."""
    paths = api.client.app.openapi()["paths"]
    assert {"/api/ivrs/{receptionist_id}", "/api/ivr_servers/{server_id}"} <= set(paths)
    patterns = {t: re.compile(re.sub(r"\{[^}]+\}", "[^/]+", t) + "$") for t in paths}
    for template in paths:
        url = re.sub(r"\{[^}]+\}", "x", template)
        # a URL can match more than one template (`/api/blobs/uploads` is also a digest)
        served = sorted(
            {m.upper() for t, ops in paths.items() if patterns[t].match(url) for m in ops}
        )
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - set(served)):
            response = api.request(method, url)
            assert response.status_code == 405, (method, url, response.status_code)
            assert response.headers["Allow"] == ", ".join(served), (method, url)
            assert errors(response)["code"] == "METHOD_NOT_ALLOWED"
            assert ", ".join(served) in errors(response)["message"]
    # the paths with a GET and a POST route each
    for url in ("/api/ivrs/x", "/api/ivr_servers/local", "/api/ivrs/x/action_urls/y"):
        assert api.request("PUT", url).headers["Allow"] == "GET, POST", url


def test_a_second_receptionist_on_an_extension_is_a_conflict(api: Api) -> None:
    first = api.create_ivr(extension_number="800")
    response = api.post("/api/ivrs", json={"name": "Other", "extension_number": "800"})
    assert response.status_code == 409
    error = errors(response)
    assert error["code"] == "CONFLICT" and first in error["detail"]["extension_number"]
    second = api.create_ivr(extension_number="801")
    moved = api.post(f"/api/ivrs/{second}", json={"extension_number": "800"})
    assert moved.status_code == 409
    assert api.post(f"/api/ivrs/{first}", json={"extension_number": "802"}).status_code == 200
    assert api.post(f"/api/ivrs/{second}", json={"extension_number": "800"}).status_code == 200
    assert sorted(api.runtime.receptionists) == ["800", "802"]


# --- live changes ----------------------------------------------------------------------------


def test_every_write_hands_a_newer_snapshot_to_the_hook(api: Api) -> None:
    rid = api.create_ivr()
    api.post(f"/api/ivrs/{rid}", json={"name": "B"})
    url = api.post(
        f"/api/ivrs/{rid}/action_urls",
        json={"name": "crm", "type": "CALLER", "url": "http://127.0.0.1:9/x"},
    ).json()["id"]
    api.post(f"/api/ivrs/{rid}/action_urls/{url}/destroy")
    api.post(f"/api/ivrs/{rid}/destroy")
    versions = [s.version for s in api.snapshots]
    assert len(versions) == 5 and versions == sorted(set(versions))
    assert [list(s.receptionists) for s in api.snapshots] == [["800"]] * 4 + [[]]
    assert [len(s.receptionists["800"].action_urls) for s in api.snapshots[:4]] == [0, 0, 1, 0]
    # failed writes publish nothing
    api.post("/api/ivrs", json={"name": ""})
    api.post("/api/ivrs/nope/destroy")
    assert len(api.snapshots) == 5


# --- list options ----------------------------------------------------------------------------


@pytest.fixture
def five(api: Api) -> Api:
    for extension, name in [
        ("800", "Main"),
        ("801", "Mail desk"),
        ("802", "Support"),
        ("900", "Sales"),
        ("901", "Night line"),
    ]:
        api.create_ivr(extension_number=extension, name=name)
    return api


def listed(api: Api, **params: Any) -> tuple[int, list[str]]:
    response = api.get("/api/ivrs", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["count"], [item["name"] for item in body["items"]]


def test_list_options(five: Api) -> None:
    assert listed(five, filter="extension_number eq '800' and startswith(name,'Ma')") == (
        1,
        ["Main"],
    )
    assert listed(five, filter="startswith(name,'Ma') or endswith(name, 'line')") == (
        3,
        ["Main", "Mail desk", "Night line"],
    )
    assert listed(five, filter="contains(name,'a') and extension_number ge '900'") == (
        1,
        ["Sales"],
    )
    assert listed(five, search="ma") == (2, ["Main", "Mail desk"])
    assert listed(five, search="90") == (2, ["Sales", "Night line"])
    assert listed(five, orderby="name desc") == (
        5,
        ["Support", "Sales", "Night line", "Main", "Mail desk"],
    )
    assert listed(five, orderby="name", skip=1, top=2) == (5, ["Main", "Night line"])
    assert listed(five, skip=10) == (5, [])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"top": 101}, "top"),
        ({"top": 0}, "top"),
        ({"top": "many"}, "top"),
        ({"skip": -1}, "skip"),
        ({"filter": "pin eq '135790'"}, "filter"),
        ({"filter": "name eq 'a' or 1=1"}, "filter"),
        ({"filter": "name eq 'a'; DROP TABLE receptionists; --"}, "filter"),
        ({"orderby": "doc desc"}, "orderby"),
        ({"orderby": "name; DROP TABLE receptionists"}, "orderby"),
    ],
)
def test_bad_list_options_are_400(five: Api, params: dict[str, Any], field: str) -> None:
    response = five.get("/api/ivrs", params=params)
    assert response.status_code == 400
    error = errors(response)
    assert error["code"] == "VALIDATE_FAILED" and field in error["detail"]
    assert five.get("/api/ivrs").json()["count"] == 5
    assert five.store.integrity_check() == "ok"


def test_a_quote_inside_a_value_is_just_a_character(five: Api) -> None:
    assert listed(five, filter="name eq 'x'' or ''1''=''1'") == (0, [])
    assert listed(five, search="' or 1=1 --") == (0, [])


# --- status ----------------------------------------------------------------------------------


def test_receptionist_status_follows_the_server_and_enabled(api: Api) -> None:
    rid = api.create_ivr()
    assert api.get(f"/api/ivrs/{rid}/status").json() == {"status": "ONLINE"}
    api.post(f"/api/ivrs/{rid}", json={"enabled": False})
    assert api.get(f"/api/ivrs/{rid}/status").json() == {"status": "OFFLINE"}
    api.post(f"/api/ivrs/{rid}", json={"enabled": True})
    api.serving = False
    assert api.get(f"/api/ivrs/{rid}/status").json() == {"status": "OFFLINE"}


def test_ivr_servers_list_this_server_as_external(api: Api) -> None:
    servers = api.get("/api/ivr_servers").json()
    assert servers["count"] == 1
    item = servers["items"][0]
    assert item["type"] == "EXTERNAL" and item["id"] == "local"
    assert api.get("/api/ivr_servers/local").json() == item
    status = api.get(f"/api/ivr_servers/{item['name']}/status").json()
    assert status["status"] == "ONLINE"
    assert isinstance(status["cpu_usage"], int) and isinstance(status["memory_usage"], int)
    api.serving = False
    assert api.get("/api/ivr_servers/local/status").json()["status"] == "OFFLINE"
    assert api.get("/api/status").json()["status"] == "OFFLINE"


# --- action URLs -----------------------------------------------------------------------------


CRM = {
    "name": "crm",
    "enabled": True,
    "type": "DTMF",
    "method": "POST",
    "dtmf_mask": "5000-5999",
    "url": "http://127.0.0.1:9000/route",
    "auth": "DIGEST",
    "username": "crmuser1",
    "password": "crmpass1",
    "signing_secret": "signing-secret-0123456789",
}


def test_action_urls_crud_with_write_only_secrets(api: Api) -> None:
    rid = api.create_ivr()
    created = api.post(f"/api/ivrs/{rid}/action_urls", json=CRM)
    assert created.status_code == 201 and set(created.json()) == {"id"}
    url_id = created.json()["id"]
    view = api.get(f"/api/ivrs/{rid}/action_urls/{url_id}").json()
    assert view["id"] == url_id and view["username"] == "crmuser1" and view["auth"] == "DIGEST"
    assert not {"password", "token", "signing_secret"} & set(view)
    assert view["connection_timeout"] == 2 and view["request_timeout"] == 2
    assert api.get(f"/api/ivrs/{rid}/action_urls").json() == {"count": 1, "items": [view]}
    # the runtime gets the secrets it needs
    runtime_url = api.runtime.receptionists["800"].action_urls[0]
    assert runtime_url.password is not None
    assert runtime_url.password.get_secret_value() == "crmpass1"

    # partial update keeps the password; switching to BEARER needs a token
    updated = api.post(f"/api/ivrs/{rid}/action_urls/{url_id}", json={"enabled": False})
    assert updated.status_code == 200 and updated.json()["enabled"] is False
    assert api.runtime.receptionists["800"].action_urls[0].password is not None
    refused = api.post(f"/api/ivrs/{rid}/action_urls/{url_id}", json={"auth": "BEARER"})
    assert refused.status_code == 400 and "token" in errors(refused)["detail"]
    bearer = api.post(
        f"/api/ivrs/{rid}/action_urls/{url_id}",
        json={"auth": "BEARER", "token": "bearer-token-secret"},
    )
    assert bearer.status_code == 200 and "token" not in bearer.json()

    assert api.post(f"/api/ivrs/{rid}/action_urls/{url_id}/destroy").status_code == 204
    assert api.get(f"/api/ivrs/{rid}/action_urls").json() == {"count": 0, "items": []}
    assert api.runtime.receptionists["800"].action_urls == []


def test_action_url_problems_have_field_paths(api: Api) -> None:
    rid = api.create_ivr()
    response = api.post(
        f"/api/ivrs/{rid}/action_urls",
        json={
            "name": "x",
            "type": "PHONE",
            "url": "ftp://x",
            "auth": "BASIC",
            "username": "UPPER",
            "connection_timeout": 99,
            "headers": "no colon",
        },
    )
    assert response.status_code == 400
    detail = errors(response)["detail"]
    assert {"type", "url", "username", "connection_timeout", "headers"} <= set(detail)


def test_action_urls_of_one_receptionist_are_not_reachable_through_another(api: Api) -> None:
    first = api.create_ivr(extension_number="800")
    second = api.create_ivr(extension_number="801")
    url_id = api.post(f"/api/ivrs/{first}/action_urls", json=CRM).json()["id"]
    assert api.get(f"/api/ivrs/{second}/action_urls/{url_id}").status_code == 404
    assert api.post(f"/api/ivrs/{second}/action_urls/{url_id}/destroy").status_code == 404
    assert api.get(f"/api/ivrs/{first}/action_urls/{url_id}").status_code == 200


def test_destroying_a_receptionist_removes_its_action_urls(api: Api) -> None:
    rid = api.create_ivr()
    url_id = api.post(f"/api/ivrs/{rid}/action_urls", json=CRM).json()["id"]
    api.post(f"/api/ivrs/{rid}/destroy")
    assert api.get(f"/api/ivrs/{rid}/action_urls/{url_id}").status_code == 404


# --- call records ----------------------------------------------------------------------------


def call_record(session: str, outcome: str, caller: str) -> CallRecord:
    return typed_record(
        session_id=session,
        caller_number=caller,
        started_at=datetime(2026, 1, 14, 9, 0, int(session[-1]), tzinfo=UTC),
        outcome=outcome,
        inputs=(
            InputRecord(
                at=datetime(2026, 1, 14, 9, 0, 9, tzinfo=UTC), stage="pin", digits="******"
            ),
        ),
    )


def test_call_records_from_the_store(api: Api) -> None:
    sink = StoreCallRecords(api.store)
    sink.write(call_record("s1", "transferred", "1001"))
    sink.write(call_record("s2", "hung_up_by_caller", "1002"))
    sink.write(call_record("s3", "transferred", "1003"))
    body = api.get("/api/calls").json()
    assert body["count"] == 3 and [r["session_id"] for r in body["items"]] == ["s3", "s2", "s1"]
    body = api.get("/api/calls", params={"filter": "outcome eq 'transferred'", "top": 1}).json()
    assert body["count"] == 2 and [r["session_id"] for r in body["items"]] == ["s3"]
    body = api.get("/api/calls", params={"search": "1002"}).json()
    assert [r["session_id"] for r in body["items"]] == ["s2"]
    body = api.get("/api/calls", params={"orderby": "started_at"}).json()
    assert [r["session_id"] for r in body["items"]] == ["s1", "s2", "s3"]
    assert (
        api.get("/api/calls/s2").json() == call_record("s2", "hung_up_by_caller", "1002").document()
    )
    assert api.get("/api/calls", params={"top": 101}).status_code == 400


def test_the_response_scan_would_catch_a_leak(tmp_path: Path) -> None:
    """The fixture's scan is meaningful: the stored document does hold the hash."""
    made = make_api(tmp_path)
    rid = made.create_ivr(pin=PIN)
    with made.store._read() as conn:
        (doc,) = conn.execute("SELECT doc FROM receptionists WHERE id = ?", (rid,)).fetchone()
    assert "pbkdf2" in json.loads(doc)["pin"]
    assert all(b"pbkdf2" not in body for body in made.bodies)
    made.close()


def test_an_empty_prompt_file_id_means_none(api: Api) -> None:
    rid = api.create_ivr(prompt_file_id="", transfer_prompt_file_id="")
    view = api.get(f"/api/ivrs/{rid}").json()
    assert "prompt_file_id" not in view and "transfer_prompt_file_id" not in view


def test_without_a_store_only_status_and_in_memory_calls_are_served() -> None:
    from fastapi.testclient import TestClient

    from engine.api import create_app
    from tests.test_api_helpers import AUTH, make_runtime

    runtime = make_runtime()
    runtime.records.write(typed_record(session_id="s1", outcome="transferred"))
    client = TestClient(create_app(runtime, token=TOKEN, is_serving=lambda: True), headers=AUTH)
    assert client.get("/api/status").status_code == 200
    assert client.get("/api/calls").json() == {
        "count": 1,
        "items": [typed_record(session_id="s1", outcome="transferred").document()],
    }
    assert client.get("/api/calls/s1").status_code == 200
    assert client.get("/api/calls/s2").status_code == 404
    for method, url in [
        ("GET", "/api/ivrs"),
        ("POST", "/api/ivrs/x/destroy"),
        ("GET", "/api/files"),
    ]:
        response = client.request(method, url)
        assert response.status_code == 503
        assert response.json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE"


def test_an_unexpected_error_is_a_500_in_the_envelope(api: Api, monkeypatch: Any) -> None:
    from fastapi.testclient import TestClient

    def broken(*args: Any) -> None:
        raise RuntimeError("boom with a secret crmpass1")

    monkeypatch.setattr(api.store, "list_receptionists", broken)
    client = TestClient(api.client.app, headers=api.client.headers, raise_server_exceptions=False)
    response = client.get("/api/ivrs")
    assert response.status_code == 500
    assert errors(response)["code"] == "INTERNAL_ERROR"
    assert b"crmpass1" not in response.content


def test_concurrent_partial_updates_lose_nothing(api: Api) -> None:
    import threading

    rid = api.create_ivr()
    changes = [
        {"name": "Renamed"},
        {"dtmf_interval": 7},
        {"language": "de-DE"},
        {"exclude_list": "1000-1099"},
        {"enable_night_mode": True},
        {"enable_pin": False},
    ]
    codes: list[int] = []
    with api.client:  # one event loop: the requests interleave at every await
        threads = [
            threading.Thread(
                target=lambda c=c: codes.append(api.post(f"/api/ivrs/{rid}", json=c).status_code)
            )
            for c in changes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    view = api.get(f"/api/ivrs/{rid}").json()
    assert codes == [200] * len(changes)
    for change in changes:  # no lost update
        assert all(view[key] == value for key, value in change.items()), change
    assert len(api.client.app.state.context.updates) == 0


def test_metrics_in_prometheus_text_format(api: Api) -> None:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE vr_calls_active gauge" in response.text
    assert "# TYPE vr_prompt_conversions_total counter" in response.text


def test_the_server_list_validates_its_options(api: Api) -> None:
    """Issue 13, item 7: `top=101` was ignored on /ivr_servers."""
    assert api.get("/api/ivr_servers", params={"top": 101}).status_code == 400
    assert api.get("/api/ivr_servers", params={"skip": 1}).json() == {"count": 1, "items": []}
