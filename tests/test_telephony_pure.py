"""The adapter's pure parts, without pjsua2: DTMF de-duplication and prompt sequencing."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.telephony.dtmf import DTMF_IS_END, DTMF_IS_UPDATE, DtmfFilter, valid_digit
from engine.telephony.playback import Playback

# (indications of onDtmfEvent as (digit, method, flags, timestamp), the digits reported)
DTMF_CASES = [
    (
        "one RFC 4733 press",
        [
            ("5", "rfc4733", 0, 160),
            ("5", "rfc4733", DTMF_IS_UPDATE, 160),
            ("5", "rfc4733", DTMF_IS_UPDATE | DTMF_IS_END, 160),
        ],
        ["5"],
    ),
    ("a first indication repeated", [("5", "rfc4733", 0, 160), ("5", "rfc4733", 0, 160)], ["5"]),
    (
        "the same key pressed twice",
        [("5", "rfc4733", 0, 160), ("5", "rfc4733", 0, 1760)],
        ["5", "5"],
    ),
    ("two keys", [("1", "rfc4733", 0, 160), ("2", "rfc4733", 0, 160)], ["1", "2"]),
    ("only updates (the first was lost)", [("7", "rfc4733", DTMF_IS_UPDATE, 160)], []),
    (
        "SIP INFO presses are each new",
        [("#", "sip-info", 0, 0), ("#", "sip-info", 0, 0)],
        ["#", "#"],
    ),
    (
        "INFO between RTP events",
        [("1", "rfc4733", 0, 160), ("1", "sip-info", 0, 0), ("1", "rfc4733", 0, 160)],
        ["1", "1"],
    ),
]


@pytest.mark.parametrize(
    ("case", "indications", "reported"), DTMF_CASES, ids=[c[0] for c in DTMF_CASES]
)
def test_each_key_press_is_reported_once(
    case: str, indications: list[tuple[str, str, int, int]], reported: list[str]
) -> None:
    dtmf = DtmfFilter()
    out = [d for d, method, flags, ts in indications if dtmf.press(d, method, flags, ts)]  # type: ignore[arg-type]
    assert out == reported, case


@pytest.mark.parametrize(
    ("digit", "ok"),
    [
        ("0", True),
        ("9", True),
        ("*", True),
        ("#", True),
        ("A", True),
        ("D", True),
        ("E", False),
        ("a", False),
        ("", False),
        ("12", False),
    ],
)
def test_valid_digits(digit: str, ok: bool) -> None:
    assert valid_digit(digit) is ok


def test_a_sequence_plays_each_file_once_in_order() -> None:
    pb = Playback(play_id=1, files=[Path("a.wav"), Path("b.wav")])
    assert pb.next_file() == Path("a.wav")
    pb.started(7)
    assert pb.is_current(7) and not pb.is_current(6)
    assert pb.next_file() == Path("b.wav")
    assert not pb.is_current(7)  # between files: an EOF of the old player is late
    pb.started(8)
    assert pb.next_file() is None
    assert pb.next_file() is None


def test_a_stopped_player_s_late_end_is_not_current() -> None:
    pb = Playback(play_id=2, files=[Path("a.wav")])
    pb.next_file()
    pb.started(3)
    pb.stopped()
    assert not pb.is_current(3)


def test_an_empty_sequence_is_over_at_once() -> None:
    assert Playback(play_id=3, files=[]).next_file() is None
