"""Action URLs on real calls: a real engine process, real callers, a real HTTP server.

- digits matching a DTMF URL; the server replies `call 222` and the caller is transferred
  to 222;
- a CALLER URL replying `hangup` ends the call;
- a URL that never answers (request_timeout 2 s): the caller reaches the menu target after
  at most 2 s (+ slack) of waiting, while another call at the same time is transferred by
  its own URL without delay.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.http_servers import Handler, LoopbackServer, Seen
from tests.integration.engine_helpers import (
    Engine,
    Procs,
    dial,
    procs_in,
    start_engine,
    start_target,
    summary_of,
    wait_invite,
)

pytestmark = pytest.mark.integration


def route(handler: Handler, seen: Seen) -> None:
    body = seen.json()
    destination = "222" if body["input"].startswith("5") else "100"
    handler.reply_json({"status_code": 200, "action": "call", "destination": destination})


def who(handler: Handler, seen: Seen) -> None:
    handler.reply_json({"status_code": 200, "action": "hangup"})


def never(handler: Handler, seen: Seen) -> None:
    handler.server.stopping.wait(30)
    handler.reply_json({"status_code": 200, "action": "call", "destination": "999"})


def menu(user_input: str, number: str) -> dict[str, Any]:
    return {
        "user_input": user_input,
        "office_hours_forward_rule": {"action": "FORWARD_TO_NUMBER", "number": number},
    }


def config(http: LoopbackServer) -> dict[str, Any]:
    return {
        "server": {"name": "vr-urls", "shutdown_grace": 2},
        "ivrs": [
            {
                "name": "CRM routed",
                "extension_number": "800",
                "dtmf_interval": 1,
                "action_urls": [
                    {
                        "name": "crm",
                        "enabled": True,
                        "type": "DTMF",
                        "method": "POST",
                        "dtmf_mask": "5000-5999",
                        "url": http.url("/route"),
                    },
                    {
                        "name": "blocklist",
                        "enabled": True,
                        "type": "CALLER",
                        "method": "GET",
                        "caller_mask": "3333",
                        "url": http.url("/who"),
                    },
                ],
            },
            {
                "name": "Slow CRM",
                "extension_number": "801",
                "dtmf_interval": 1,
                "custom_forward_rules": [menu("6001#", "210")],
                "action_urls": [
                    {
                        "name": "stalled",
                        "enabled": True,
                        "type": "DTMF",
                        "method": "GET",
                        "dtmf_mask": "6***",
                        "url": http.url("/never"),
                        "request_timeout": 2,
                    },
                ],
            },
        ],
    }


class World:
    def __init__(self, procs: Procs, http: LoopbackServer) -> None:
        self.procs = procs
        self.http = http
        self.target, self.target_port = start_target(procs, 200, "target")
        self.engine: Engine = start_engine(
            procs,
            config(http),
            name="engine-urls",
            transfer_domain=f"127.0.0.1:{self.target_port}",
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("urls")
    with (
        LoopbackServer({"/route": route, "/who": who, "/never": never}) as http,
        procs_in(tmp) as procs,
    ):
        yield World(procs, http)


def call(world: World, extension: str, digits: str, from_user: str) -> tuple[Any, str]:
    session = f"url-{uuid.uuid4().hex[:10]}"
    proc = dial(
        world.procs,
        world.engine,
        extension,
        "--digits",
        digits,
        name=f"caller-{from_user}",
        session=session,
        from_user=from_user,
        duration=15,
    )
    return proc, session


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_dtmf_url_reply_call_transfers_the_caller(world: World) -> None:
    proc, session = call(world, "800", "5@1.0,0,0,1,#", "4001")
    summary = summary_of(proc)
    assert summary["refer_to"] == f"sip:222@127.0.0.1:{world.target_port}", summary
    assert wait_invite(world.target, "4001")["request_user"] == "222"
    record = world.engine.record(session)
    assert record["outcome"] == "transferred" and record["transferred_to"] == "222"
    [request] = world.http.requests_for(session)
    assert request.method == "POST"
    assert request.json() == {
        "from": "4001",
        "to": "800",
        "input": "5001",
        "from_name": "",
        "account_name": "CRM routed",
        "session_id": session,
    }
    [url_record] = record["action_urls"]
    assert (url_record["name"], url_record["result"], url_record["http_status"]) == (
        "crm",
        "call",
        200,
    )


def test_caller_url_reply_hangup_ends_the_call(world: World) -> None:
    proc, session = call(world, "800", "", "3333")
    summary = summary_of(proc)
    assert summary["answered"] is True and summary["refer_to"] is None, summary
    record = world.engine.record(session)
    assert record["outcome"] == "hung_up_by_server", record
    assert record["sip"]["disconnected_by"] == "server"
    [request] = world.http.requests_for(session)
    assert request.method == "GET" and request.params["input"] == ""
    assert record["action_urls"][0]["result"] == "hangup"


def test_a_stalled_url_delays_only_its_own_call_by_at_most_its_timeout(world: World) -> None:
    stalled, stalled_session = call(world, "801", "6@1.0,0,0,1,#", "4101")
    other, other_session = call(world, "800", "5@1.3,1,2,3,#", "4102")
    other_summary, stalled_summary = summary_of(other), summary_of(stalled)
    assert other_summary["refer_to"] == f"sip:222@127.0.0.1:{world.target_port}"
    assert stalled_summary["refer_to"] == f"sip:210@127.0.0.1:{world.target_port}"

    other_record = world.engine.record(other_session)
    other_wait = (
        at(other_record["transfers"][0]["at"]) - at(other_record["inputs"][-1]["at"])
    ).total_seconds()
    assert other_wait < 0.5, other_record  # its own URL answered at once

    record = world.engine.record(stalled_session)
    waited = (at(record["transfers"][0]["at"]) - at(record["inputs"][-1]["at"])).total_seconds()
    assert 2.0 <= waited <= 2.5 + 0.3, record  # request_timeout 2 s, guard 0.5 s, slack 0.3 s
    assert record["action_urls"][0]["result"] == "timeout"
    assert record["menu_rules"] == ["6001#:office_hours"]
    assert wait_invite(world.target, "4101")["request_user"] == "210"
    print(json.dumps({"other_wait_s": other_wait, "stalled_wait_s": waited}))
