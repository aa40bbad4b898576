"""Live configuration through the HTTP API, end to end: a real `vr-engine serve`, real callers,
a real transfer target (listen mode, reached through `--transfer-domain`).

The engine starts from a configuration with one receptionist (860, which only seeds the new data
directory). Then, through the API only, in this order (the tests share one engine and run in
file order):

1. `POST /api/ivrs` with a PortSIP payload (the reference's field examples, adapted) for 850 →
   a call to 850 is answered at once and menu digit 1 is transferred to the rule's target (201);
2. a prompt uploaded with PortSIP's resumable upload (create → append in chunks → complete with
   the sha256 digest; a 16 kHz chirp made here) and set as `prompt_file_id` → the next call hears
   it (aligned correlation ≥ 0.9);
3. a call in progress keeps its rules: a call starts on a long greeting, rule 1 is changed to 202
   while it plays, the digit pressed in that call goes to 201, a new call's to 202;
4. `POST /api/ivrs/{id}/destroy` → the next INVITE to 850 gets 404;
5. after a restart on the same data directory (SIGTERM, exit 0, start again with the same
   configuration file) everything created through the API is still there (same GET bodies) and
   answers calls with its uploaded prompt; what the API deleted (850, and the configuration's
   860) stays deleted: the configuration did not seed the data directory again.
"""

from __future__ import annotations

import hashlib
import json
import signal
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.audio import aligned_correlation
from tests.integration.engine_helpers import (
    RATE,
    TOKEN,
    Engine,
    Proc,
    Procs,
    dial,
    make_chirp,
    procs_in,
    read_wav,
    start_engine,
    start_target,
    summary_of,
    wait_invite,
)

pytestmark = pytest.mark.integration

ENGINE = "engine-live"
PROMPT_SECONDS = 3.0
LONG_SECONDS = 8.0
CONFIG = {
    "server": {"name": "vr-live", "shutdown_grace": 2, "transfer_timeout": 10},
    "ivrs": [{"name": "From the configuration", "extension_number": "860"}],
}


def forward(number: str) -> dict[str, Any]:
    return {"action": "FORWARD_TO_NUMBER", "number": number}


def menu(number: str) -> list[dict[str, Any]]:
    """Rule 1 → `number`, open at all times (GLOBAL hours; the server sets none)."""
    return [
        {
            "user_input": "1",
            "office_hours": {"mode": "GLOBAL"},
            "office_hours_forward_rule": forward(number),
            "non_office_hours_forward_rule": forward(number),
        }
    ]


# PortSIP's `POST /ivrs` request, with the reference's example values where it gives one
# (language, provider id, defaults), adapted: extension 850, rule 1 → 201 at all hours.
PORTSIP_IVR: dict[str, Any] = {
    "name": "Live reception",
    "extension_number": "850",
    "language": "en-US",
    "dtmf_interval": 2,
    "enable_pin": True,
    "pin": "135790",
    "timeout_forward_rule": {"timeout": 30, "repeat_times": 3, "action": "HANGUP"},
    "failure_forward_rule": {"action": "HANGUP"},
    "night_mode_forward_rule": {"action": "HANGUP"},
    "custom_forward_rules": menu("201"),
    "outbound_caller_ids": [
        {"provider_id": "NzAwNTUxOTA5NzczMTQ4MTYw", "caller_id": "+4930123456", "description": ""}
    ],
}


# --- the HTTP API ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Message  # case-insensitive
    body: Any


def http(
    engine: Engine,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    data: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    url = f"http://127.0.0.1:{engine.http_port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    if json_body is not None:
        data = json.dumps(json_body).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, error.headers
    body = (
        json.loads(raw)
        if raw and got.get("Content-Type", "").startswith("application/json")
        else raw
    )
    return Reply(status, got, body)


def ok(reply: Reply, status: int) -> Any:
    assert reply.status == status, (reply.status, reply.body)
    return reply.body


def upload(engine: Engine, path: Path, chunk: int = 32 * 1024) -> str:
    """PortSIP's resumable upload: create → append (chunks) → complete?digest=sha256:<hex>."""
    data = path.read_bytes()
    started = http(engine, "POST", "/api/blobs/uploads", params={"filename": path.name})
    ok(started, 202)
    upload_id = started.headers["PortSIP-Upload-ID"]
    token = {"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]}
    for offset in range(0, len(data), chunk):
        piece = data[offset : offset + chunk]
        appended = http(
            engine,
            "POST",
            f"/api/blobs/uploads/{upload_id}/append",
            data=piece,
            headers={**token, "Content-Type": "application/octet-stream"},
        )
        ok(appended, 203)
        assert appended.headers["Range"] == f"0-{offset + len(piece) - 1}"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    completed = http(
        engine,
        "POST",
        f"/api/blobs/uploads/{upload_id}/complete",
        params={"digest": digest},
        headers=token,
    )
    return str(ok(completed, 201)["id"])


# --- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    procs: Procs
    tmp: Path
    target: Proc
    target_port: int
    engine: Engine
    prompt: np.ndarray
    prompt_path: Path
    long_prompt_path: Path
    ids: dict[str, str] = field(default_factory=dict)

    def destination(self, number: str) -> str:
        return f"sip:{number}@127.0.0.1:{self.target_port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("live_config")
    with procs_in(tmp) as procs:
        target, port = start_target(procs, 200, "target")
        prompt_path = tmp / "welcome16k.wav"
        prompt = make_chirp(prompt_path, PROMPT_SECONDS, 350, 3200, rate=16000)
        long_prompt_path = tmp / "long.wav"
        make_chirp(long_prompt_path, LONG_SECONDS, 400, 2800)
        engine = start_engine(procs, CONFIG, name=ENGINE, transfer_domain=f"127.0.0.1:{port}")
        world = World(procs, tmp, target, port, engine, prompt, prompt_path, long_prompt_path)
        yield world
        # the engine serving at the end (the restarted one, normally) stops cleanly too
        world.engine.proc.signal(signal.SIGTERM)
        assert world.engine.proc.finish(15) == 0, world.engine.proc.stderr_tail()


@dataclass
class Call:
    proc: Proc
    session: str
    user: str
    record_path: Path | None


_users = iter(range(7730100, 7739999))


def call(
    world: World, extension: str, *args: str, record: bool = False, duration: float = 20.0
) -> Call:
    session = f"live-{uuid.uuid4().hex[:10]}"
    user = str(next(_users))
    path = world.tmp / f"{session}.wav" if record else None
    extra = ["--record", str(path)] if path is not None else []
    proc = dial(
        world.procs,
        world.engine,
        extension,
        *args,
        *extra,
        name=f"caller-{extension}",
        session=session,
        from_user=user,
        duration=duration,
    )
    return Call(proc, session, user, path)


def assert_transferred(world: World, c: Call, number: str) -> dict[str, Any]:
    summary = summary_of(c.proc)
    assert summary["answered"] and summary["invite_status"] == 200, summary
    assert summary["refer_to"] == world.destination(number), summary
    assert wait_invite(world.target, c.user)["request_user"] == number
    record = world.engine.record(c.session)
    assert record["outcome"] == "transferred" and record["transferred_to"] == number, record
    return summary


def assert_not_found(world: World, extension: str) -> None:
    c = call(world, extension, duration=10)
    summary = summary_of(c.proc)
    assert summary["answered"] is False and summary["invite_status"] == 404, summary


def assert_hears(world: World, c: Call) -> None:
    summary = summary_of(c.proc)
    assert summary["answered"], summary
    assert c.record_path is not None
    corr, lag = aligned_correlation(read_wav(c.record_path), world.prompt)
    assert corr >= 0.9, f"correlation {corr:.3f} with the uploaded prompt"
    assert lag / RATE < 0.3, f"the prompt started {lag / RATE:.2f} s after the answer"


# --- 1-4: live changes -------------------------------------------------------------------------


def test_the_configuration_seeded_the_new_data_directory(world: World) -> None:
    items = ok(http(world.engine, "GET", "/api/ivrs"), 200)["items"]
    assert [item["extension_number"] for item in items] == ["860"]
    world.ids["seeded"] = items[0]["id"]


def test_a_receptionist_created_through_the_api_answers_at_once(world: World) -> None:
    assert_not_found(world, "850")
    created = ok(http(world.engine, "POST", "/api/ivrs", json_body=PORTSIP_IVR), 201)
    world.ids["850"] = created["id"]
    # no restart: the next call is answered, digit 1 → the rule's target
    c = call(world, "850", "--digits", "1@1.0")
    assert_transferred(world, c, "201")


def test_an_uploaded_prompt_is_heard_on_the_next_call(world: World) -> None:
    rid = world.ids["850"]
    file_id = upload(world.engine, world.prompt_path)
    world.ids["prompt"] = file_id
    info = ok(http(world.engine, "GET", f"/api/files/{file_id}"), 200)
    assert info["name"] == world.prompt_path.name
    view = ok(
        http(world.engine, "POST", f"/api/ivrs/{rid}", json_body={"prompt_file_id": file_id}), 200
    )
    assert view["prompt_file_id"] == file_id and view["prompt_file_name"] == world.prompt_path.name
    c = call(world, "850", "--hangup-after", f"{PROMPT_SECONDS + 0.6}", record=True)
    assert_hears(world, c)


def test_a_call_in_progress_keeps_its_rules(world: World) -> None:
    rid = world.ids["850"]
    long_id = upload(world.engine, world.long_prompt_path)
    ok(http(world.engine, "POST", f"/api/ivrs/{rid}", json_body={"prompt_file_id": long_id}), 200)
    world.engine.wait_idle()

    press_at = 5.0  # the 8 s greeting is still playing
    old = call(world, "850", "--digits", f"1@{press_at}")
    world.engine.wait_active(1)  # the old call is in progress
    changed = http(
        world.engine, "POST", f"/api/ivrs/{rid}", json_body={"custom_forward_rules": menu("202")}
    )
    acknowledged = datetime.now(UTC)
    assert (
        ok(changed, 200)["custom_forward_rules"][0]["office_hours_forward_rule"]["number"] == "202"
    )
    new = call(world, "850", "--digits", "1@1.0")
    assert_transferred(world, old, "201")
    assert_transferred(world, new, "202")
    # the old call was answered before the change was acknowledged, its digit came after
    record = world.engine.record(old.session)
    assert datetime.fromisoformat(record["answered_at"]) < acknowledged, (record, acknowledged)
    [digit] = record["inputs"]
    assert datetime.fromisoformat(digit["at"]) > acknowledged, (digit, acknowledged)


def test_a_destroyed_receptionist_is_404_at_once(world: World) -> None:
    world.engine.wait_idle()
    # before: what must survive the restart, created through the API
    created = ok(
        http(
            world.engine,
            "POST",
            "/api/ivrs",
            json_body={
                **PORTSIP_IVR,
                "name": "Survivor",
                "extension_number": "851",
                "prompt_file_id": world.ids["prompt"],
                "custom_forward_rules": menu("203"),
            },
        ),
        201,
    )
    world.ids["851"] = created["id"]
    ok(
        http(
            world.engine,
            "POST",
            f"/api/ivrs/{created['id']}/action_urls",
            json_body={
                "name": "crm",
                "enabled": False,
                "type": "DTMF",
                "method": "POST",
                "dtmf_mask": "5000-5999",
                "url": "http://127.0.0.1:9/route",
            },
        ),
        201,
    )
    assert ok(http(world.engine, "POST", f"/api/ivrs/{world.ids['seeded']}/destroy"), 204) == b""
    assert ok(http(world.engine, "POST", f"/api/ivrs/{world.ids['850']}/destroy"), 204) == b""
    ok(http(world.engine, "GET", f"/api/ivrs/{world.ids['850']}"), 404)
    assert_not_found(world, "850")
    assert_not_found(world, "860")


# --- 5: restart --------------------------------------------------------------------------------


def snapshot(engine: Engine, rid: str) -> dict[str, Any]:
    return {
        "ivrs": ok(http(engine, "GET", "/api/ivrs"), 200),
        "action_urls": ok(http(engine, "GET", f"/api/ivrs/{rid}/action_urls"), 200),
        "files": ok(http(engine, "GET", "/api/files"), 200),
    }


def test_after_a_restart_everything_is_still_there_and_nothing_is_seeded_again(
    world: World,
) -> None:
    rid = world.ids["851"]
    before = snapshot(world.engine, rid)
    assert [item["extension_number"] for item in before["ivrs"]["items"]] == ["851"]
    assert before["action_urls"]["count"] == 1 and before["files"]["count"] == 2

    old = world.engine
    old.wait_idle()
    old.proc.signal(signal.SIGTERM)
    assert old.proc.finish(15) == 0, old.proc.stderr_tail()
    world.engine = start_engine(
        world.procs, CONFIG, name=ENGINE, transfer_domain=f"127.0.0.1:{world.target_port}"
    )
    assert world.engine.data_dir == old.data_dir
    assert "only seed a new data directory" in world.engine.proc.stderr_text()

    assert snapshot(world.engine, rid) == before
    ready = world.engine.proc.wait_line("vr-engine ready:", 1)
    assert "851 (Survivor)" in ready and "860" not in ready and "850" not in ready, ready

    # it answers with its uploaded prompt and its rule
    c = call(world, "851", "--digits", f"1@{PROMPT_SECONDS + 0.3}", record=True)
    summary = summary_of(c.proc)
    assert summary["refer_to"] == world.destination("203"), summary
    assert c.record_path is not None
    recording = read_wav(c.record_path)[: int(PROMPT_SECONDS * RATE) + RATE // 4]
    corr, _ = aligned_correlation(recording, world.prompt)
    assert corr >= 0.9, f"correlation {corr:.3f} with the uploaded prompt after the restart"
    assert world.engine.record(c.session)["transferred_to"] == "203"
    # deleted through the API: still gone (the configuration's 860 was not seeded again)
    assert_not_found(world, "850")
    assert_not_found(world, "860")
