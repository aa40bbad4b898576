"""Every row of the README's "Calling the demo" table, as a real call to `vr-engine serve --demo`.

The engine serves the demo receptionist only (no configuration file) with
`--transfer-domain 127.0.0.1:<target>`, so each transfer reaches a listen-mode target that
answers 200 and names the Request-URI user it was asked for. Callers are separate
`engine.telephony.caller` processes; at most 4 calls at once (the PyPI wheel's call slots).
A second engine, with the server's office hours closed every day, checks the row's out-of-hours
half (201's voicemail).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.demo import DEMO_EXTENSION, DEMO_PIN, demo_receptionist
from engine.rules.masks import parse_mask
from tests.integration.engine_helpers import (
    Engine,
    Proc,
    Procs,
    dial,
    invites_from,
    keys,
    procs_in,
    start_engine,
    start_target,
    summary_of,
    wait_invite,
)

pytestmark = pytest.mark.integration

_users = itertools.count(5557100)


@dataclass
class Demo:
    procs: Procs
    engine: Engine
    target: Proc
    port: int


def _serve_demo(procs: Procs, name: str, server: dict[str, Any]) -> tuple[Engine, Proc, int]:
    target, port = start_target(procs, 200, f"{name}-target")
    config = {"server": server} if server else {}
    engine = start_engine(
        procs,
        config,
        name=name,
        transfer_domain=f"127.0.0.1:{port}",
        extra_args=("--demo",),
    )
    return engine, target, port


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with procs_in(tmp_path_factory.mktemp("demo")) as procs:
        engine, target, port = _serve_demo(procs, "demo", {})
        yield Demo(procs, engine, target, port)


@dataclass
class Placed:
    proc: Proc
    session: str
    user: str


def place(demo: Demo, digits: str, *, hang_up_after: float | None, duration: float) -> Placed:
    session = f"demo-{uuid.uuid4().hex[:10]}"
    user = str(next(_users))
    args = ["--digits", digits] if digits else []
    if hang_up_after is not None:
        args += ["--hangup-after", f"{hang_up_after:.2f}"]
    proc = dial(
        demo.procs,
        demo.engine,
        DEMO_EXTENSION,
        *args,
        name="demo-caller",
        session=session,
        from_user=user,
        duration=duration,
    )
    return Placed(proc, session, user)


def transferred_to(demo: Demo, placed: Placed) -> str:
    """The destination the caller was transferred to; the target got its INVITE."""
    summary = summary_of(placed.proc, timeout=40)
    assert summary["answered"] is True, summary
    refer_to = summary["refer_to"]
    assert refer_to is not None, summary
    user, host = refer_to.removeprefix("sip:").split("@", 1)
    assert host == f"127.0.0.1:{demo.port}", refer_to
    invite = wait_invite(demo.target, placed.user)
    assert invite["request_user"] == user
    rec = demo.engine.record(placed.session)
    assert rec["outcome"] == "transferred" and rec["transferred_to"] == user.lstrip("*"), rec
    return str(user)


def test_the_demo_is_the_one_the_table_describes() -> None:
    """The table's facts, read from the demo itself (so a change to one shows in the other)."""
    ivr = demo_receptionist()
    rules = {r["user_input"]: r for r in ivr["custom_forward_rules"]}
    assert set(rules) == {"1", "2", "0"}
    assert rules["1"]["office_hours_forward_rule"] == {
        "action": "FORWARD_TO_NUMBER",
        "number": "201",
    }
    assert rules["1"]["non_office_hours_forward_rule"]["action"] == "FORWARD_TO_VOICEMAIL"
    assert rules["0"]["office_hours_forward_rule"]["action"] == "DISA"
    assert ivr["pin"] == DEMO_PIN == "135790"
    assert ivr["exclude_list"] == "5000-5099"
    # every blocked extension can be dialled at all: none starts with a menu key
    assert not any(str(n)[0] in rules for n in range(5000, 5100))
    blocked = parse_mask(ivr["exclude_list"])
    assert blocked.matches("5050") and not blocked.matches("4050")
    assert ivr["timeout_forward_rule"] == {"timeout": 10, "repeat_times": 2, "action": "HANGUP"}


def test_menu_keys_disa_and_direct_dial(demo: Demo) -> None:
    """Rows `1`, `2`, `0` (DISA) and direct dial with `#` and with a 2 s pause: 4 calls at once."""
    calls = {
        "201": place(demo, "1@1.0", hang_up_after=None, duration=20),
        "202": place(demo, "2@1.0", hang_up_after=None, duration=20),
        "345": place(
            demo,
            ",".join(["0@1.0", keys(DEMO_PIN + "#", 2.0), keys("345#", 6.0)]),
            hang_up_after=None,
            duration=30,
        ),
        "3456": place(demo, keys("3456", 1.0), hang_up_after=None, duration=20),
    }
    for destination, placed in calls.items():
        assert transferred_to(demo, placed) == destination
    disa = demo.engine.record(calls["345"].session)
    assert [i["stage"] for i in disa["inputs"]] == ["menu", "pin", "disa_destination"]
    assert disa["inputs"][1]["digits"] == "*" * len(DEMO_PIN), "the PIN is masked"
    pause = demo.engine.record(calls["3456"].session)
    assert pause["transfers"][0]["origin"] == "direct_dial"
    assert [i["digits"] for i in pause["inputs"]] == ["3456"]  # complete after the 2 s pause


def test_a_blocked_extension_is_refused_and_a_menu_key_wins_over_an_extension(demo: Demo) -> None:
    """`5050#` is in 5000-5099: no transfer, the menu again. `1050`: rule 1 at the first key."""
    blocked = place(demo, keys("5050#", 1.0), hang_up_after=8.0, duration=20)
    first_key = place(demo, keys("1050", 1.0), hang_up_after=None, duration=20)
    assert transferred_to(demo, first_key) == "201"
    summary = summary_of(blocked.proc)
    assert summary["answered"] and summary["refer_to"] is None, summary
    rec = demo.engine.record(blocked.session)
    assert [i["digits"] for i in rec["inputs"]] == ["5050#"]
    assert rec["transfers"] == [] and rec["outcome"] == "hung_up_by_caller", rec
    assert not invites_from(demo.target, blocked.user)


def test_no_input_repeats_the_greeting_twice_then_says_goodbye(demo: Demo) -> None:
    started = time.monotonic()
    silent = place(demo, "", hang_up_after=None, duration=75)
    summary = summary_of(silent.proc, timeout=90)
    took = time.monotonic() - started
    assert summary["answered"] and summary["refer_to"] is None, summary
    rec = demo.engine.record(silent.session)
    assert rec["outcome"] == "hung_up_by_server", rec
    assert rec["inputs"] == [] and rec["transfers"] == []
    # greeting, 10 s, greeting, 10 s, greeting, 10 s, goodbye: at least the three waits
    assert 30 <= took <= 75, took


def test_out_of_office_hours_key_1_reaches_201s_voicemail(tmp_path_factory: Any) -> None:
    """The row's second half: the server's office hours closed every day."""
    with procs_in(tmp_path_factory.mktemp("demo_closed")) as procs:
        engine, target, port = _serve_demo(procs, "demo-closed", {"office_hours": {}})
        closed = Demo(procs, engine, target, port)
        placed = place(closed, "1@1.0", hang_up_after=None, duration=20)
        assert transferred_to(closed, placed) == "*201"  # voicemail_uri_template sip:*{number}@
