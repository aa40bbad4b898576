"""Whole-call scenarios for the call flow: every step of SPEC §3 and each failure of §4."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.flow.actions import (
    CancelActionUrl,
    DisaPinAccepted,
    DisaPinRejected,
    FilePrompt,
    Hangup,
    PlayPrompt,
    RequestActionUrl,
    StopPrompt,
    SystemPrompt,
    TimerName,
    Transfer,
    TransferKind,
)
from engine.flow.callflow import MAX_MENU_PLAYS, Phase
from engine.flow.events import (
    DigitReceived,
    FailureKind,
    PromptFinished,
    ServerHungUp,
    TimerFired,
)
from engine.flow.record import Outcome
from tests.flow_harness import PIN, Harness, fwd, menu, receptionist, server

G = SystemPrompt.GREETING


def url(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "crm",
        "enabled": True,
        "type": "DTMF",
        "url": "http://127.0.0.1:9000/route",
        "dtmf_mask": "5000-5999",
    }
    data.update(fields)
    return data


def started(ivr: Any = None, **kw: Any) -> Harness:
    h = Harness.start(ivr, **kw)
    h.answer()
    return h


# --- §3.4 greeting and barge-in ------------------------------------------------------------


def test_answer_plays_the_builtin_greeting_and_waits_for_digits() -> None:
    h = started()
    assert h.playing == (G,)
    assert h.flow.phase is Phase.GREETING
    assert h.timers == {}  # the no-input timeout starts when the greeting ends
    h.prompt_ends()
    assert h.flow.phase is Phase.MENU
    assert TimerName.NO_INPUT in h.timers


def test_uploaded_greeting_is_played_instead_of_the_builtin_one() -> None:
    h = started(receptionist(prompt_file_id="f-greet"))
    assert h.playing == (FilePrompt(file_id="f-greet"),)


def test_a_digit_stops_the_greeting_at_once_and_is_kept() -> None:
    h = started(receptionist(custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")]))
    out = h.press("1")
    assert isinstance(out[0], StopPrompt)
    assert h.transferred_to == "201"


# --- §3.5 collecting digits ----------------------------------------------------------------


def test_menu_rule_without_hash_fires_as_soon_as_digits_equal_it() -> None:
    h = started(receptionist(custom_forward_rules=[menu("21", "FORWARD_TO_NUMBER", "201")]))
    h.press("2")
    assert h.transfers == []
    h.press("1")
    assert h.transferred_to == "201"
    assert h.flow.record.inputs[-1].digits == "21"


def test_eleven_pressed_as_two_digits_is_eleven() -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("11", "FORWARD_TO_NUMBER", "211")],
    )
    h = started(ivr)
    h.press("11")
    assert h.transferred_to == "211"


@pytest.mark.parametrize(
    ("keys", "wait", "fires"),
    [
        ("5#", 0.0, True),  # # after N
        ("5", 3.0, True),  # 3 s of silence with the digits equal to N
        ("5", 2.9, False),
    ],
)
def test_hash_rule_fires_on_hash_or_after_three_seconds(
    keys: str, wait: float, fires: bool
) -> None:
    h = started(receptionist(custom_forward_rules=[menu("5#", "FORWARD_TO_NUMBER", "205")]))
    h.press(keys)
    h.wait(wait)
    assert (h.transferred_to == "205") is fires


def test_hash_rule_wait_is_three_seconds_even_with_a_long_dtmf_interval() -> None:
    ivr = receptionist(
        dtmf_interval=8, custom_forward_rules=[menu("5#", "FORWARD_TO_NUMBER", "205")]
    )
    h = started(ivr)
    h.press("5")
    h.wait(3)
    assert h.transferred_to == "205"


def test_hash_terminates_direct_dial_input_at_once() -> None:
    h = started()
    h.press("201#")
    assert h.transferred_to == "201"
    assert h.flow.record.inputs[-1].digits == "201#"


@pytest.mark.parametrize(
    ("interval", "wait", "done"), [(2, 2.0, True), (2, 1.9, False), (4, 3.9, False)]
)
def test_input_completes_after_dtmf_interval(interval: int, wait: float, done: bool) -> None:
    h = started(receptionist(dtmf_interval=interval))
    h.press("201")
    h.wait(wait)
    assert (h.transferred_to == "201") is done


def test_each_digit_restarts_the_interdigit_wait() -> None:
    h = started()
    h.press("2")
    h.wait(1.5)
    h.press("0")
    h.wait(1.5)
    h.press("1")
    h.wait(1.9)
    assert h.transfers == []
    h.wait(0.1)
    assert h.transferred_to == "201"


def test_input_of_64_digits_completes_without_waiting() -> None:
    h = started()
    h.press("1" * 64, gap=0)
    assert h.transferred_to == "1" * 64


# --- precedence: DTMF action URL -> menu rule -> direct dial -------------------------------


def test_dtmf_action_url_is_asked_before_the_menu_and_its_reply_decides() -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("5123", "FORWARD_TO_NUMBER", "300")], action_urls=[url()]
    )
    h = started(ivr)
    h.press("5123")
    assert h.transfers == []  # a DTMF URL could match: no immediate menu match
    h.wait(2)
    request = h.last_request()
    assert request.input == "5123"
    assert h.flow.phase is Phase.DECIDING
    h.reply("call", "222")
    assert h.transferred_to == "222"


def test_immediate_menu_match_waits_while_a_dtmf_mask_could_still_match() -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("5", "FORWARD_TO_NUMBER", "205")], action_urls=[url()]
    )
    h = started(ivr)
    h.press("5")
    assert h.transfers == []
    h.wait(2)  # "5" alone does not match 5000-5999: the menu rule decides
    assert h.actions_of(RequestActionUrl) == []
    assert h.transferred_to == "205"


def test_immediate_menu_match_when_no_dtmf_mask_can_match() -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")], action_urls=[url()]
    )
    h = started(ivr)
    h.press("1")
    assert h.transferred_to == "201"


def test_all_mask_takes_every_input_and_bypasses_the_menu() -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")],
        action_urls=[url(dtmf_mask="ALL")],
    )
    h = started(ivr)
    h.press("1#")
    assert h.last_request().input == "1"
    h.reply("call", "333")
    assert h.transferred_to == "333"


def test_disabled_dtmf_url_is_never_asked() -> None:
    h = started(receptionist(action_urls=[url(enabled=False)]))
    h.press("5123#")
    assert h.actions_of(RequestActionUrl) == []
    assert h.transferred_to == "5123"


def test_first_matching_dtmf_url_wins() -> None:
    ivr = receptionist(
        action_urls=[url(name="a", dtmf_mask="6*"), url(name="b", dtmf_mask="5***"), url(name="c")]
    )
    h = started(ivr)
    h.press("5123#")
    assert h.last_request().action_url.name == "b"


@pytest.mark.parametrize("kind", list(FailureKind))
def test_failed_dtmf_request_continues_as_if_no_url_matched(kind: FailureKind) -> None:
    ivr = receptionist(
        custom_forward_rules=[menu("5000#", "FORWARD_TO_NUMBER", "250")], action_urls=[url()]
    )
    h = started(ivr)
    h.press("5000#")
    h.fail_request(kind)
    assert h.transferred_to == "250"
    assert h.flow.record.action_urls[-1].result == kind.value


def test_failed_dtmf_request_falls_through_to_direct_dial() -> None:
    h = started(receptionist(action_urls=[url()]))
    h.press("5001#")
    h.fail_request(FailureKind.HTTP_STATUS)
    assert h.transferred_to == "5001"


def test_dtmf_url_without_reply_times_out_and_the_caller_goes_on() -> None:
    h = started(receptionist(action_urls=[url(request_timeout=2)]))
    h.press("5001#")
    request = h.last_request()
    h.wait(2.4)
    assert h.transfers == []
    h.wait(0.1)
    assert CancelActionUrl(request_id=request.request_id) in h.actions
    assert h.transferred_to == "5001"
    assert h.flow.record.action_urls[-1].result == "timeout"
    # a reply arriving after the guard is ignored
    assert h.reply("call", "999") == []


def test_zero_request_timeout_means_the_default_two_seconds() -> None:
    h = started(receptionist(action_urls=[url(request_timeout=0)]))
    h.press("5001#")
    assert h.timers[TimerName.ACTION_URL][0] == h.now + (h.timers[TimerName.ACTION_URL][0] - h.now)
    assert (h.timers[TimerName.ACTION_URL][0] - h.now).total_seconds() == 2.5


def test_dtmf_url_replies_hangup_and_the_call_ends() -> None:
    h = started(receptionist(action_urls=[url()]))
    h.press("5001#")
    h.reply("hangup")
    assert h.hung_up is not None
    assert h.flow.record.outcome is Outcome.SERVER_HUNG_UP
    assert h.clean()


def test_dtmf_url_replies_repeat_and_the_greeting_plays_again() -> None:
    h = started(receptionist(action_urls=[url()]))
    h.press("5001#")
    h.reply("repeat")
    assert h.playing == (G,)
    assert h.flow.phase is Phase.GREETING


def test_digits_while_a_url_decides_are_not_taken() -> None:
    h = started(receptionist(action_urls=[url()]))
    h.press("5001#")
    h.press("9")
    assert h.flow.record.digits_ignored == 1
    h.reply("call", "222")
    assert h.transferred_to == "222"


# --- §3.2 caller action URLs --------------------------------------------------------------


def caller_url(**fields: Any) -> dict[str, Any]:
    return url(type="CALLER", dtmf_mask="", caller_mask="1000-1999", **fields)


def test_caller_url_is_requested_on_answer_while_the_greeting_plays() -> None:
    h = started(receptionist(action_urls=[caller_url()]), caller="1001")
    assert h.last_request().input == ""
    assert h.playing == (G,)


def test_caller_url_is_not_requested_when_the_mask_does_not_match() -> None:
    h = started(receptionist(action_urls=[caller_url()]), caller="2001")
    assert h.actions_of(RequestActionUrl) == []


def test_caller_url_reply_call_takes_the_call_over_without_a_transfer_prompt() -> None:
    ivr = receptionist(action_urls=[caller_url()], transfer_prompt_file_id="f-hold")
    h = started(ivr)
    out = h.reply("call", "700")
    kinds = [type(a) for a in out]
    assert kinds.index(StopPrompt) < kinds.index(Transfer)
    assert h.transferred_to == "700"


def test_caller_url_reply_hangup_ends_the_call() -> None:
    h = started(receptionist(action_urls=[caller_url()]))
    h.reply("hangup")
    assert h.hung_up is not None


def test_caller_url_reply_repeat_restarts_the_greeting() -> None:
    h = started(receptionist(action_urls=[caller_url()]))
    first = h.play_id
    h.reply("repeat")
    assert h.play_id == first + 1 and h.playing == (G,)


def test_caller_urls_are_requested_one_after_another_on_failure() -> None:
    h = started(receptionist(action_urls=[caller_url(name="a"), caller_url(name="b")]))
    assert [r.action_url.name for r in h.actions_of(RequestActionUrl)] == ["a"]
    h.fail_request(FailureKind.CONNECT_ERROR)
    assert [r.action_url.name for r in h.actions_of(RequestActionUrl)] == ["a", "b"]
    h.fail_request(FailureKind.INVALID_JSON)
    assert h.flow.phase is Phase.GREETING  # the call went on normally throughout


def test_caller_input_decided_first_cancels_a_pending_caller_url() -> None:
    h = started(receptionist(action_urls=[caller_url()]))
    request = h.last_request()
    h.press("201#")
    assert CancelActionUrl(request_id=request.request_id) in h.actions
    assert h.transferred_to == "201"


def test_caller_url_reply_after_the_menu_decided_is_ignored() -> None:
    ivr = receptionist(
        action_urls=[caller_url()], custom_forward_rules=[menu("0", "DISA")], pin=PIN
    )
    h = started(ivr)
    request = h.last_request()
    h.press("0")
    assert CancelActionUrl(request_id=request.request_id) in h.actions
    assert h.reply("call", "700") == []


# --- §3.3 night mode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ivr_night", "server_night"), [(True, False), (False, True), (True, True)]
)
def test_night_mode_runs_the_night_rule_at_once_without_greeting(
    ivr_night: bool, server_night: bool
) -> None:
    ivr = receptionist(
        enable_night_mode=ivr_night,
        night_mode_forward_rule=fwd("FORWARD_TO_NUMBER", "100"),
        action_urls=[caller_url()],
    )
    h = started(ivr, srv=server(night_mode=server_night))
    assert h.actions_of(PlayPrompt) == []
    assert h.transferred_to == "100"
    assert h.actions_of(RequestActionUrl) == []  # decided: no caller URL is asked
    assert h.flow.record.night_mode


def test_night_mode_to_voicemail_uses_the_uri_template() -> None:
    ivr = receptionist(
        enable_night_mode=True, night_mode_forward_rule=fwd("FORWARD_TO_VOICEMAIL", "100")
    )
    h = started(ivr, srv=server(voicemail_uri_template="sip:vm-{number}@{domain}"))
    transfer = h.transfers[-1]
    assert transfer.kind is TransferKind.VOICEMAIL
    assert transfer.refer_to_template == "sip:vm-{number}@{domain}"
    assert transfer.destination == "100"


def test_night_mode_hangup_says_goodbye_then_hangs_up() -> None:
    h = started(receptionist(enable_night_mode=True, night_mode_forward_rule=fwd("HANGUP")))
    assert h.playing == (SystemPrompt.GOODBYE,)
    h.prompt_ends()
    assert h.hung_up is not None and h.clean()


def test_night_mode_repeat_plays_the_greeting() -> None:
    h = started(receptionist(enable_night_mode=True, night_mode_forward_rule=fwd("REPEAT")))
    assert h.playing == (G,)


# --- direct dialing and exclude_list -------------------------------------------------------


@pytest.mark.parametrize(
    ("exclude", "dialled", "blocked"),
    [
        ("1000-1099;2000", "1050", True),
        ("1000-1099;2000", "2000", True),
        ("1000-1099;2000", "1100", False),
        ("1000-1099,2000", "1099", True),
        ("3***", "3123", True),
        ("3***", "31234", False),
        ("", "800", True),  # the receptionist's own extension
        ("ALL", "201", True),
    ],
)
def test_exclude_list_blocks_direct_dialing(exclude: str, dialled: str, blocked: bool) -> None:
    h = started(receptionist(exclude_list=exclude))
    h.press(dialled + "#")
    if blocked:
        assert h.transfers == []
        assert h.playing == (SystemPrompt.EXTENSION_BLOCKED, G)
        assert h.flow.phase is Phase.GREETING
    else:
        assert h.transferred_to == dialled


@pytest.mark.parametrize("keys", ["9#", "42#", "12*3#", "#"])
def test_input_that_matches_nothing_plays_invalid_option_and_returns_to_menu(keys: str) -> None:
    h = started()
    h.press(keys)
    assert h.playing == (SystemPrompt.INVALID_OPTION, G)


def test_hash_alone_can_be_a_menu_rule() -> None:
    h = started(receptionist(custom_forward_rules=[menu("#", "FORWARD_TO_NUMBER", "299")]))
    h.press("#")
    assert h.transferred_to == "299"


# --- §3.6 no input and repeats -------------------------------------------------------------


def test_timeout_replays_the_greeting_repeat_times_then_runs_the_action() -> None:
    rule = {"timeout": 10, "repeat_times": 2, "action": "FORWARD_TO_NUMBER", "number": "100"}
    h = started(receptionist(timeout_forward_rule=rule))
    plays = 1
    for _ in range(2):
        h.prompt_ends()
        h.wait(9.9)
        assert h.actions_of(PlayPrompt).__len__() == plays
        h.wait(0.1)
        plays += 1
        assert h.playing == (G,)
    h.prompt_ends()
    h.wait(10)
    assert h.transferred_to == "100"
    assert len(h.actions_of(PlayPrompt)) == 3


def test_timeout_rule_without_transfer_prompt_even_when_one_is_set() -> None:
    rule = {"timeout": 5, "repeat_times": 0, "action": "FORWARD_TO_NUMBER", "number": "100"}
    h = started(receptionist(timeout_forward_rule=rule, transfer_prompt_file_id="f-hold"))
    h.prompt_ends()
    h.wait(5)
    assert h.transferred_to == "100"
    assert FilePrompt(file_id="f-hold") not in [
        p for a in h.actions_of(PlayPrompt) for p in a.prompts
    ]


def test_timeout_rule_hangup_says_goodbye() -> None:
    rule = {"timeout": 5, "repeat_times": 0, "action": "HANGUP"}
    h = started(receptionist(timeout_forward_rule=rule))
    h.prompt_ends()
    h.wait(5)
    assert h.playing == (SystemPrompt.GOODBYE,)
    h.prompt_ends()
    assert h.hung_up is not None
    assert h.flow.record.outcome is Outcome.SERVER_HUNG_UP


def test_invalid_input_counts_as_a_repeat() -> None:
    rule = {"timeout": 5, "repeat_times": 1, "action": "FORWARD_TO_NUMBER", "number": "100"}
    h = started(receptionist(timeout_forward_rule=rule))
    h.press("9#")  # invalid: uses the one repeat
    assert h.playing == (SystemPrompt.INVALID_OPTION, G)
    h.press("9#")  # repeats exhausted: the notice, then the timeout rule's action
    assert h.playing == (SystemPrompt.INVALID_OPTION,)
    h.prompt_ends()
    assert h.transferred_to == "100"


def test_timeout_rule_repeat_starts_a_new_cycle_but_the_menu_is_bounded() -> None:
    rule = {"timeout": 5, "repeat_times": 1, "action": "REPEAT"}
    h = started(receptionist(timeout_forward_rule=rule))
    for _ in range(MAX_MENU_PLAYS + 2):
        if h.playing == (G,):
            h.prompt_ends()
        h.wait(5)
    assert len([a for a in h.actions_of(PlayPrompt) if a.prompts == (G,)]) == MAX_MENU_PLAYS
    assert h.playing == (SystemPrompt.GOODBYE,)
    h.prompt_ends()
    assert h.hung_up is not None


# --- §3.7 transfers ------------------------------------------------------------------------


def test_transfer_prompt_plays_before_an_input_caused_transfer() -> None:
    ivr = receptionist(
        transfer_prompt_file_id="f-hold",
        custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")],
    )
    h = started(ivr)
    h.press("1")
    assert h.transfers == []
    assert h.playing == (FilePrompt(file_id="f-hold"),)
    h.press("2")  # ignored during the transfer prompt
    h.prompt_ends()
    assert h.transferred_to == "201"
    assert h.flow.phase is Phase.TRANSFERRING


def test_builtin_transfer_prompt_when_the_server_enables_it() -> None:
    h = started(srv=server(builtin_transfer_prompt=True))
    h.press("201#")
    assert h.playing == (SystemPrompt.TRANSFER_HOLD,)


def test_transfer_success_ends_our_leg() -> None:
    h = started()
    h.press("201#")
    h.transfer_progress(100)
    h.transfer_ok()
    assert h.hung_up is not None
    assert h.flow.record.outcome is Outcome.TRANSFERRED
    assert h.flow.record.transferred_to == "201"
    assert h.clean()


def test_answered_transfer_without_final_notify_is_taken_as_done() -> None:
    h = started(srv=server(transfer_assume_done_after=5))
    h.press("201#")
    h.transfer_progress(200)
    h.wait(4.9)
    assert h.hung_up is None
    h.wait(0.1)
    assert h.hung_up is not None
    assert h.flow.record.transfers[-1].result == "assumed"
    assert "no final NOTIFY" in h.flow.record.reason


def test_transfer_without_any_result_times_out_as_a_failure() -> None:
    ivr = receptionist(failure_forward_rule=fwd("FORWARD_TO_NUMBER", "100"))
    h = started(ivr, srv=server(transfer_timeout=20))
    h.press("201#")
    h.transfer_progress(180)
    h.wait(20)
    assert h.flow.record.transfers[0].sip_code == 408
    h.prompt_ends()
    assert h.transfers[-1].destination == "100"


def test_pbx_ending_the_call_after_accepting_the_refer_counts_as_transferred() -> None:
    h = started()
    h.press("201#")
    h.transfer_progress(100)
    h.hang_up()
    assert h.flow.record.outcome is Outcome.TRANSFERRED


@pytest.mark.parametrize("code", [404, 484])
def test_direct_dial_to_a_missing_extension_says_so_and_returns_to_menu(code: int) -> None:
    ivr = receptionist(failure_forward_rule=fwd("FORWARD_TO_NUMBER", "100"))
    h = started(ivr)
    h.press("299#")
    h.transfer_fails(code)
    assert h.playing == (SystemPrompt.EXTENSION_NOT_EXIST, G)
    assert h.flow.phase is Phase.GREETING
    assert len(h.transfers) == 1


@pytest.mark.parametrize("code", [486, 480, 503, 603])
def test_other_failures_run_the_failure_rule(code: int) -> None:
    ivr = receptionist(failure_forward_rule=fwd("FORWARD_TO_NUMBER", "100"))
    h = started(ivr)
    h.press("201#")
    h.transfer_fails(code)
    assert h.playing == (SystemPrompt.NOT_AVAILABLE,)  # said before the failure transfer
    h.prompt_ends()
    assert h.transferred_to == "100"


def test_a_menu_rule_target_failing_runs_the_failure_rule() -> None:
    ivr = receptionist(
        failure_forward_rule=fwd("FORWARD_TO_VOICEMAIL", "201"),
        custom_forward_rules=[menu("1", "FORWARD_TO_NUMBER", "201")],
    )
    h = started(ivr)
    h.press("1")
    h.transfer_fails(404)  # 404 from a menu rule is not "extension does not exist"
    h.prompt_ends()
    assert h.transfers[-1].kind is TransferKind.VOICEMAIL


def test_a_failing_failure_rule_hangs_up_never_loops() -> None:
    ivr = receptionist(failure_forward_rule=fwd("FORWARD_TO_NUMBER", "100"))
    h = started(ivr)
    h.press("201#")
    h.transfer_fails(486)
    h.prompt_ends()
    h.transfer_fails(486)
    assert h.playing == (SystemPrompt.NOT_AVAILABLE,)
    h.prompt_ends()
    assert h.hung_up is not None
    assert h.flow.record.outcome is Outcome.TRANSFER_FAILED
    assert len(h.transfers) == 2


def test_failure_rule_repeat_returns_to_the_menu() -> None:
    h = started(receptionist(failure_forward_rule=fwd("REPEAT")))
    h.press("201#")
    h.transfer_fails(486)
    assert h.playing == (SystemPrompt.NOT_AVAILABLE, G)


def test_failure_rule_hangup() -> None:
    h = started(receptionist(failure_forward_rule=fwd("HANGUP")))
    h.press("201#")
    h.transfer_fails(486)
    assert h.playing == (SystemPrompt.NOT_AVAILABLE, SystemPrompt.GOODBYE)
    h.prompt_ends()
    assert h.flow.record.outcome is Outcome.TRANSFER_FAILED


# --- §3.8 DISA -----------------------------------------------------------------------------


def disa_ivr(**fields: Any) -> Any:
    data: dict[str, Any] = {"pin": PIN, "custom_forward_rules": [menu("0", "DISA")]}
    data.update(fields)
    return receptionist(**data)


def test_disa_with_the_right_pin_asks_for_and_transfers_to_the_destination() -> None:
    h = started(disa_ivr())
    h.press("0")
    assert h.playing == (SystemPrompt.ENTER_PIN,)
    h.press(PIN + "#")
    assert DisaPinAccepted() in h.actions
    assert h.playing == (SystemPrompt.ENTER_DESTINATION,)
    h.press("201#")
    assert h.transferred_to == "201"


def test_disa_pin_completes_after_dtmf_interval_too() -> None:
    h = started(disa_ivr())
    h.press("0")
    h.prompt_ends()
    h.press(PIN)
    h.wait(2)
    assert h.playing == (SystemPrompt.ENTER_DESTINATION,)


def test_disa_wrong_pin_three_times_hangs_up() -> None:
    h = started(disa_ivr())
    h.press("0")
    for attempt in (1, 2):
        h.press("111222#"[:6] + "#")
        assert DisaPinRejected(attempt=attempt) in h.actions
        assert h.playing == (SystemPrompt.INVALID_PIN, SystemPrompt.ENTER_PIN)
    h.press("246800#")
    assert h.playing == (SystemPrompt.INVALID_PIN, SystemPrompt.GOODBYE)
    h.prompt_ends()
    assert h.hung_up is not None
    assert h.transfers == []
    assert h.flow.record.disa_pin_failures == 3


def test_pin_digits_never_leave_the_flow_in_clear() -> None:
    h = started(disa_ivr(action_urls=[url(dtmf_mask="ALL")]))
    h.press("0#")
    h.fail_request()
    h.press(PIN + "#")
    h.press("201#")
    pin_inputs = [i for i in h.flow.record.inputs if i.stage == "pin"]
    assert [i.digits for i in pin_inputs] == ["******"]
    text = repr(h.actions) + repr(h.flow.record)
    assert PIN not in text
    assert all(r.input != PIN for r in h.actions_of(RequestActionUrl))
    assert PIN not in repr(DigitReceived(at=h.now, digit="1"))


def test_disa_without_pin_goes_straight_to_the_destination() -> None:
    h = started(disa_ivr(enable_pin=False, pin=None))
    h.press("0")
    assert h.playing == (SystemPrompt.ENTER_DESTINATION,)


@pytest.mark.parametrize(
    ("allowed", "destination", "ok"),
    [
        (None, "201", True),
        (None, "20123", True),
        (None, "004930123456", False),  # external numbers need an explicit entry
        (None, "12", False),
        ("***;0049********", "004930123456", True),
    ],
)
def test_disa_destination_must_be_on_the_allow_list(
    allowed: str | None, destination: str, ok: bool
) -> None:
    srv = server(disa={"allowed_destinations": allowed} if allowed else {})
    h = started(disa_ivr(enable_pin=False, pin=None), srv=srv)
    h.press("0")
    h.press(destination + "#")
    if ok:
        assert h.transferred_to == destination
    else:
        assert h.transfers == []
        assert h.playing == (SystemPrompt.NOT_AVAILABLE, SystemPrompt.ENTER_DESTINATION)


def test_disa_refused_destinations_three_times_hang_up() -> None:
    h = started(disa_ivr(enable_pin=False, pin=None))
    h.press("0")
    for _ in range(3):
        h.press("0049301#")
    assert h.playing == (SystemPrompt.NOT_AVAILABLE, SystemPrompt.GOODBYE)


def test_disa_locked_out_caller_is_refused() -> None:
    h = started(disa_ivr(), disa_locked=True)
    h.press("0")
    assert h.playing == (SystemPrompt.NOT_AVAILABLE,)
    h.prompt_ends()
    assert h.hung_up is not None
    assert "locked" in h.flow.record.reason


def test_disa_silence_counts_as_an_attempt_but_not_as_a_wrong_pin() -> None:
    h = started(disa_ivr(timeout_forward_rule={"timeout": 5, "action": "HANGUP"}))
    h.press("0")
    h.prompt_ends()
    h.wait(5)
    assert h.playing == (SystemPrompt.INVALID_PIN, SystemPrompt.ENTER_PIN)
    assert h.actions_of(DisaPinRejected) == []


def test_disa_transfer_gets_the_transfer_prompt_and_failure_rule() -> None:
    ivr = disa_ivr(
        enable_pin=False,
        pin=None,
        transfer_prompt_file_id="f-hold",
        failure_forward_rule=fwd("HANGUP"),
    )
    h = started(ivr)
    h.press("0")
    h.press("201#")
    assert h.playing == (FilePrompt(file_id="f-hold"),)
    h.prompt_ends()
    h.transfer_fails(486)
    assert h.playing == (SystemPrompt.NOT_AVAILABLE, SystemPrompt.GOODBYE)


# --- office hours and holidays per menu rule -----------------------------------------------

HOURS = {
    day: {"enabled": True, "ranges": [{"from": "09:00", "to": "17:00"}]}
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday")
}


def hours_rule(**more: Any) -> dict[str, Any]:
    return menu(
        "1",
        "FORWARD_TO_NUMBER",
        "201",
        non_office_hours_forward_rule=fwd("FORWARD_TO_VOICEMAIL", "201"),
        **more,
    )


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 1, 14, 9, 0, tzinfo=UTC), "201"),  # Wed 10:00 CET
        (datetime(2026, 1, 14, 16, 0, tzinfo=UTC), "vm"),  # Wed 17:00 CET: closed (to is exclusive)
        (datetime(2026, 1, 14, 7, 59, tzinfo=UTC), "vm"),  # Wed 08:59 CET
        (datetime(2026, 1, 17, 10, 0, tzinfo=UTC), "vm"),  # Saturday
        # DST: on 2026-03-30 (Mon) 07:30 UTC is 09:30 CEST (open); a fixed UTC+1 would say 08:30.
        (datetime(2026, 3, 30, 7, 30, tzinfo=UTC), "201"),
        (datetime(2026, 10, 26, 7, 30, tzinfo=UTC), "vm"),  # back on CET: 08:30
    ],
)
def test_custom_office_hours_in_the_server_time_zone(when: datetime, expected: str) -> None:
    ivr = receptionist(custom_forward_rules=[hours_rule(office_hours={"mode": "CUSTOM", **HOURS})])
    h = started(ivr, at=when)
    h.press("1")
    transfer = h.transfers[-1]
    assert ("vm" if transfer.kind is TransferKind.VOICEMAIL else transfer.destination) == expected


def test_global_office_hours_come_from_the_server() -> None:
    ivr = receptionist(custom_forward_rules=[hours_rule()])
    saturday = datetime(2026, 1, 17, 10, 0, tzinfo=UTC)
    h = started(ivr, srv=server(office_hours=HOURS), at=saturday)
    h.press("1")
    assert h.transfers[-1].kind is TransferKind.VOICEMAIL
    h2 = started(ivr, srv=server(), at=saturday)  # no server office hours: always open
    h2.press("1")
    assert h2.transfers[-1].kind is TransferKind.NUMBER


@pytest.mark.parametrize(
    ("holiday", "hit"),
    [
        ({"name": "Xmas", "start": "--12-24", "end": "--12-26"}, True),
        ({"name": "Xmas", "start": "2026-12-25"}, True),
        ({"name": "Xmas", "start": "2025-12-25"}, False),
        ({"name": "Xmas", "start": "--12-31", "end": "--01-02"}, False),
        ({"name": "Xmas", "start": "--12-20", "end": "--01-02"}, True),
    ],
)
def test_holidays_are_checked_before_office_hours(holiday: dict[str, Any], hit: bool) -> None:
    rule = hours_rule(holidays=["Xmas"], holiday_forward_rule=fwd("FORWARD_TO_NUMBER", "999"))
    ivr = receptionist(custom_forward_rules=[rule])
    at = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)  # a Friday, inside office hours
    h = started(ivr, srv=server(office_hours=HOURS, holidays=[holiday]), at=at)
    h.press("1")
    assert (h.transferred_to == "999") is hit
    assert h.flow.record.menu_rules == [f"1:{'holiday' if hit else 'office_hours'}"]


def test_menu_rule_can_send_to_disa_out_of_hours() -> None:
    rule = menu(
        "1",
        "FORWARD_TO_NUMBER",
        "201",
        non_office_hours_forward_rule=fwd("DISA"),
        office_hours={"mode": "CUSTOM", **HOURS},
    )
    h = started(
        receptionist(custom_forward_rules=[rule], pin=PIN), at=datetime(2026, 1, 17, 12, tzinfo=UTC)
    )
    h.press("1")
    assert h.playing == (SystemPrompt.ENTER_PIN,)


# --- §3.9 hang-up at any moment ------------------------------------------------------------


def _to_greeting(h: Harness) -> None:
    pass


def _to_menu(h: Harness) -> None:
    h.prompt_ends()


def _mid_digits(h: Harness) -> None:
    h.press("20")


def _deciding(h: Harness) -> None:
    h.press("5001#")


def _pin(h: Harness) -> None:
    h.press("0")
    h.press("13")


def _transfer_prompt(h: Harness) -> None:
    h.press("1")


def _transferring(h: Harness) -> None:
    h.press("201#")


def _closing(h: Harness) -> None:
    h.press("0")
    for _ in range(3):
        h.press("111222#"[:6] + "#")


@pytest.mark.parametrize(
    "reach",
    [
        _to_greeting,
        _to_menu,
        _mid_digits,
        _deciding,
        _pin,
        _transfer_prompt,
        _transferring,
        _closing,
    ],
)
def test_caller_hang_up_at_any_moment_leaves_nothing_behind(reach: Any) -> None:
    ivr = receptionist(
        pin=PIN,
        transfer_prompt_file_id="f-hold",
        custom_forward_rules=[menu("0", "DISA"), menu("1", "FORWARD_TO_NUMBER", "201")],
        action_urls=[url(), caller_url(name="who")],
    )
    h = started(ivr)
    reach(h)
    h.hang_up()
    assert h.clean(), (h.timers, h.playing, h.requests)
    assert h.flow.phase is Phase.ENDED
    assert h.flow.record.ended_at == h.now
    assert h.flow.record.outcome is not None
    # nothing more happens after the end
    assert h.press("1") == []
    assert h.send(TimerFired(at=h.now, timer=TimerName.NO_INPUT, token=1)) == []


@pytest.mark.parametrize("reach", [_to_greeting, _mid_digits, _deciding, _transferring])
def test_a_call_ended_by_the_server_is_recorded_as_such(reach: Any) -> None:
    h = started(receptionist(action_urls=[url()]))
    reach(h)
    h.send(ServerHungUp(at=h.now, reason="server shutting down"))
    assert h.clean(), (h.timers, h.playing, h.requests)
    assert h.flow.record.outcome is Outcome.SERVER_HUNG_UP
    assert h.flow.record.reason == "server shutting down"
    assert h.flow.phase is Phase.ENDED


def test_hang_up_before_answer_records_the_caller() -> None:
    h = Harness.start()
    h.hang_up()
    assert h.flow.record.outcome is Outcome.CALLER_HUNG_UP
    assert h.flow.record.answered_at is None


# --- stale and out-of-order events ---------------------------------------------------------


def test_stale_prompt_finished_and_timer_are_ignored() -> None:
    h = started()
    old_play = h.play_id
    h.press("2")  # barge-in stops the greeting; inter-digit timer runs
    token = h.timers[TimerName.INTER_DIGIT][1]
    assert h.send(PromptFinished(at=h.now, play_id=old_play)) == []
    h.press("0")
    assert h.send(TimerFired(at=h.now, timer=TimerName.INTER_DIGIT, token=token)) == []


def test_transfer_events_outside_a_transfer_are_ignored() -> None:
    h = started()
    assert h.transfer_ok() == []
    assert h.transfer_fails(486) == []
    assert h.transfer_progress(200) == []


def test_answer_twice_is_harmless() -> None:
    h = started()
    assert h.answer() == []


def test_events_before_answer_do_nothing() -> None:
    h = Harness.start()
    assert h.press("1") == []
    assert h.flow.record.digits_ignored == 1


def test_every_hangup_action_comes_last() -> None:
    h = started(receptionist(action_urls=[url()]))
    h.press("5001#")
    out = h.reply("hangup")
    assert isinstance(out[-1], Hangup)
    assert not any(isinstance(a, Transfer) for a in out)
