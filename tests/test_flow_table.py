"""The call flow as a transition table: (state reached, event) -> (actions, next phase).

Each row names a state by the steps that reach it from a fresh call, the event to apply, the
actions expected (by type, with key fields) and the phase after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from engine.flow.actions import (
    Action,
    CancelActionUrl,
    CancelTimer,
    DisaPinAccepted,
    DisaPinRejected,
    Hangup,
    PlayPrompt,
    RequestActionUrl,
    StartTimer,
    StopPrompt,
    TimerName,
    Transfer,
)
from engine.flow.callflow import Phase
from engine.flow.events import DigitReceived, PromptFinished
from tests.flow_harness import PIN, Harness, fwd, menu, receptionist

IVR = receptionist(
    pin=PIN,
    transfer_prompt_file_id="f-hold",
    failure_forward_rule=fwd("FORWARD_TO_NUMBER", "100"),
    custom_forward_rules=[
        menu("1", "FORWARD_TO_NUMBER", "201"),
        menu("5#", "FORWARD_TO_NUMBER", "205"),
        menu("0", "DISA"),
    ],
    action_urls=[
        {
            "name": "crm",
            "enabled": True,
            "type": "DTMF",
            "dtmf_mask": "7***",
            "url": "http://127.0.0.1:1/x",
        },
    ],
)

Step = Callable[[Harness], Any]


def answered(h: Harness) -> None:
    h.answer()


def menu_waiting(h: Harness) -> None:
    h.answer()
    h.prompt_ends()


def in_pin(h: Harness) -> None:
    menu_waiting(h)
    h.press("0")


def in_destination(h: Harness) -> None:
    in_pin(h)
    h.press(PIN + "#")


def deciding(h: Harness) -> None:
    menu_waiting(h)
    h.press("7123#")


def transfer_prompt(h: Harness) -> None:
    menu_waiting(h)
    h.press("1")


def transferring(h: Harness) -> None:
    transfer_prompt(h)
    h.prompt_ends()


def digit(key: str) -> Callable[[Harness], list[Action]]:
    return lambda h: h.send(DigitReceived(at=h.now, digit=key))


def prompt_done(h: Harness) -> list[Action]:
    return h.send(PromptFinished(at=h.now, play_id=h.play_id))


def kinds(actions: list[Action]) -> list[str]:
    out = []
    for a in actions:
        match a:
            case StartTimer() | CancelTimer():
                out.append(f"{type(a).__name__}:{a.timer.value}")
            case PlayPrompt():
                out.append("Play:" + "+".join(str(getattr(p, "value", p)) for p in a.prompts))
            case Transfer():
                out.append(f"Transfer:{a.destination}")
            case _:
                out.append(type(a).__name__)
    return out


@dataclass(frozen=True)
class Row:
    name: str
    reach: Step | None
    event: Callable[[Harness], list[Action]]
    actions: list[str]
    phase: Phase


ROWS = [
    Row("answer", None, lambda h: h.answer(), ["Play:greeting"], Phase.GREETING),
    Row("greeting ends", answered, prompt_done, ["StartTimer:no_input"], Phase.MENU),
    Row(
        "barge-in with a menu key",
        answered,
        digit("1"),
        ["StopPrompt", "Play:FilePrompt(file_id='f-hold')"],
        Phase.TRANSFER_PROMPT,
    ),
    Row(
        "digit that starts an N# rule",
        menu_waiting,
        digit("5"),
        ["CancelTimer:no_input", "StartTimer:inter_digit"],
        Phase.MENU,
    ),
    Row(
        "no input",
        menu_waiting,
        lambda h: h.fire(TimerName.NO_INPUT),
        ["Play:greeting"],
        Phase.GREETING,
    ),
    Row(
        "# alone, no rule",
        menu_waiting,
        digit("#"),
        ["CancelTimer:no_input", "Play:invalid_option+greeting"],
        Phase.GREETING,
    ),
    Row(
        "DTMF URL input",
        menu_waiting,
        lambda h: h.press("7123#"),
        ["CancelTimer:no_input", "StartTimer:inter_digit"]
        + ["CancelTimer:inter_digit", "StartTimer:inter_digit"] * 3
        + ["CancelTimer:inter_digit", "RequestActionUrl", "StartTimer:action_url"],
        Phase.DECIDING,
    ),
    Row(
        "URL says call",
        deciding,
        lambda h: h.reply("call", "222"),
        ["CancelTimer:action_url", "Play:FilePrompt(file_id='f-hold')"],
        Phase.TRANSFER_PROMPT,
    ),
    Row(
        "URL fails: direct dial",
        deciding,
        lambda h: h.fail_request(),
        ["CancelTimer:action_url", "Play:FilePrompt(file_id='f-hold')"],
        Phase.TRANSFER_PROMPT,
    ),
    Row(
        "transfer prompt ends",
        transfer_prompt,
        prompt_done,
        ["Transfer:201", "StartTimer:transfer"],
        Phase.TRANSFERRING,
    ),
    Row(
        "transfer ok",
        transferring,
        lambda h: h.transfer_ok(),
        ["CancelTimer:transfer", "Hangup"],
        Phase.ENDED,
    ),
    Row(
        "transfer ringing", transferring, lambda h: h.transfer_progress(180), [], Phase.TRANSFERRING
    ),
    Row(
        "transfer answered, no final",
        transferring,
        lambda h: h.transfer_progress(200),
        ["StartTimer:transfer"],
        Phase.TRANSFERRING,
    ),
    Row(
        "transfer busy",
        transferring,
        lambda h: h.transfer_fails(486),
        ["CancelTimer:transfer", "Play:not_available"],
        Phase.TRANSFER_PROMPT,
    ),
    Row(
        "DISA key",
        menu_waiting,
        digit("0"),
        ["CancelTimer:no_input", "Play:enter_pin"],
        Phase.DISA_PIN,
    ),
    Row(
        "right PIN",
        in_pin,
        lambda h: h.press(PIN + "#")[-2:],
        ["DisaPinAccepted", "Play:enter_destination"],
        Phase.DISA_DESTINATION,
    ),
    Row(
        "wrong PIN",
        in_pin,
        lambda h: h.press("246802#")[-2:],
        ["DisaPinRejected", "Play:invalid_pin+enter_pin"],
        Phase.DISA_PIN,
    ),
    Row(
        "DISA destination",
        in_destination,
        lambda h: h.press("201#")[-2:],
        ["CancelTimer:inter_digit", "Play:FilePrompt(file_id='f-hold')"],
        Phase.TRANSFER_PROMPT,
    ),
    Row(
        "hang-up while deciding",
        deciding,
        lambda h: h.hang_up(),
        ["CancelTimer:action_url", "CancelActionUrl"],
        Phase.ENDED,
    ),
    Row("hang-up during greeting", answered, lambda h: h.hang_up(), ["StopPrompt"], Phase.ENDED),
    Row("digit while transferring", transferring, digit("3"), [], Phase.TRANSFERRING),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_transition(row: Row) -> None:
    h = Harness.start(IVR)
    if row.reach is not None:
        row.reach(h)
    out = row.event(h)
    assert kinds(out) == row.actions
    assert h.flow.phase is row.phase


def test_action_types_in_the_table_cover_the_union() -> None:
    seen = {a.split(":")[0] for r in ROWS for a in r.actions}
    expected = {
        "Play",
        "StopPrompt",
        "StartTimer",
        "CancelTimer",
        "RequestActionUrl",
        "CancelActionUrl",
        "Transfer",
        "Hangup",
        "DisaPinRejected",
        "DisaPinAccepted",
    }
    assert expected <= seen
    assert {CancelActionUrl, DisaPinAccepted, DisaPinRejected, Hangup, RequestActionUrl, StopPrompt}
