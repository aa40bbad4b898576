"""Hostile prompt uploads through the real HTTP API, and the conversion child failing in every
way it can.

The fuzz corpus (tests/upload_corpus.py, seeded) holds every crafted file — absurd WAV, RF64,
FLAC, OGG and MP3 headers, zip bombs of silence — and random draws: random bytes, a format's
magic then random bytes, valid files cut short or with bytes overwritten. Each must get a clean
400 in PortSIP's error envelope naming the file (or, for a cut or mutated file that is still
audio, a 201 with a proper playback WAV), never anything else; nothing may be left in the upload
directory; the server must go on serving, a valid upload included. VR_UPLOAD_FUZZ_COUNT sets
how many hostile files (default `upload_corpus.CI_COUNT`); bench/upload_fuzz.py runs thousands.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
import soundfile as sf

from engine.convert import (
    AudioLimits,
    ChildLimits,
    Converter,
    info_problem,
    playback_wav_seconds,
)
from engine.errors import ConversionRefused
from engine.store import Store
from engine.uploads import Uploads
from tests.test_api_helpers import ERROR_ENVELOPE, Api, make_api
from tests.upload_corpus import ACCEPTED, CI_COUNT, EITHER, REFUSED, Case, corpus, encode, tone

FUZZ_COUNT = int(os.environ.get("VR_UPLOAD_FUZZ_COUNT", CI_COUNT))

# what some crafted files must be refused for (the label is the file name after the number)
REASONS = {
    "wav-rate-1": "sample rate 1 Hz is outside",
    "wav-channels-9": "9 channels; at most 8",
    "wav-data-size-ffffffff": "announces 4294967295 bytes",
    "rf64-ds64-data-2^63": "announces 9223372036854775808 bytes",
    "flac-rate-2^20-1": "sample rate 1048575 Hz",
    "flac-total-2^36-1": "s long; prompts may be at most 600 s",
    "bomb-flac-2h-48k": "7200 s long; prompts may be at most 600 s",
    "bomb-flac-header": "s long; prompts may be at most 600 s",
    "bomb-ogg-12min": "720 s long",
    "mp3-xing-frames-ffffffff": "s long; prompts may be at most 600 s",
}


def leftovers(api: Api) -> list[str]:
    """Whatever is in the upload directory (files and directories)."""
    return sorted(path.name for path in api.store.upload_dir.iterdir())


def child_processes() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if child.is_running()]


def check_response(api: Api, case: Case, response: Any) -> str | None:
    """What is wrong with the server's answer to `case`, or None."""
    status = response.status_code
    allowed = {REFUSED: {400}, ACCEPTED: {201}, EITHER: {201, 400}}[case.expect]
    if status not in allowed:
        return f"{case.name}: {status} (expected {sorted(allowed)}): {response.text[:300]}"
    if status == 400:
        body = response.json()
        jsonschema.validate(body, ERROR_ENVELOPE)
        problem = body["errors"][0]
        if problem["code"] != "VALIDATE_FAILED" or set(problem["detail"]) != {"file"}:
            return f"{case.name}: unexpected error {problem}"
        if not problem["detail"]["file"].startswith(f"{case.name}: "):
            return f"{case.name}: the message does not name the file: {problem}"
        if str(api.data_dir) in response.text or "Traceback" in response.text:
            return f"{case.name}: the message leaks server internals: {problem}"
        label = case.name.split("-", 1)[1].rsplit(".", 1)[0]
        if label in REASONS and REASONS[label] not in problem["detail"]["file"]:
            return f"{case.name}: refused for the wrong reason: {problem['detail']['file']}"
    else:
        info = api.get(f"/api/files/{response.json()['id']}").json()
        stored = sf.info(io.BytesIO(api.get(info["url"]).content))
        if (stored.samplerate, stored.channels, stored.subtype) != (8000, 1, "PCM_16"):
            return f"{case.name}: stored as {stored}"
    return None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(tmp_path)
    with made.client:  # one event loop serves every request, as in the server
        yield made
    made.close()


def test_hostile_uploads_get_clean_400s_and_the_server_keeps_serving(api: Api) -> None:
    cases = corpus(FUZZ_COUNT)
    assert sum(case.expect != ACCEPTED for case in cases) >= FUZZ_COUNT
    failures: list[str] = []
    outcomes: Counter[tuple[str, int]] = Counter()
    for case in cases:
        response = api.upload(case.data, case.name)
        outcomes[case.kind, response.status_code] += 1
        problem = check_response(api, case, response)
        if problem is None and leftovers(api):
            problem = f"{case.name}: left {leftovers(api)} in the upload directory"
        if problem is not None:
            failures.append(problem)
    assert not failures, "\n".join(failures)
    # the refusals were refusals of what they should be, not of everything
    assert outcomes["valid", 201] == sum(case.kind == "valid" for case in cases) >= 4
    assert outcomes["bomb", 400] >= 3
    # and the server goes on serving
    assert api.get("/healthz").status_code == 200
    after = api.upload(encode(tone(0.5, 16000, freq=620), 16000, "WAV", "PCM_16"), "after.wav")
    assert after.status_code == 201, after.text
    assert api.get(f"/api/files/{after.json()['id']}").json()["name"] == "after.wav"
    assert api.store.upload_ids() == [] and leftovers(api) == []
    assert child_processes() == []


# --- the converter and its child -----------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def engine_main_with(convert: str) -> list[str]:
    """The real child (limits applied by engine.convert.main) with the decoder replaced."""
    return python(
        "import sys, engine.audio, engine.convert\n"
        f"engine.audio.convert_for_playback = {convert}\n"
        "sys.exit(engine.convert.main())"
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "uploads" / "u1.part"
    path.parent.mkdir()
    path.write_bytes(encode(tone(0.3, 16000), 16000, "WAV", "PCM_16"))
    return path


def refusal(converter: Converter, source: Path) -> str:
    target = source.with_suffix(".wav")
    with pytest.raises(ConversionRefused) as refused:
        converter.convert(source, target, "hello.wav")
    assert not target.exists()
    assert sorted(p.name for p in source.parent.iterdir()) == [source.name]  # no work dir
    assert child_processes() == []
    message = refused.value.message
    assert message.startswith("hello.wav: ") and str(source.parent) not in message
    return message


def test_the_real_child_converts_and_the_parent_checks_its_output(source: Path) -> None:
    target = source.with_suffix(".wav")
    seconds = Converter().convert(source, target, "hello.wav")
    assert seconds == pytest.approx(0.3, abs=0.01)
    assert playback_wav_seconds(target, 1 << 20) == seconds
    info = sf.info(str(target))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert sorted(p.name for p in source.parent.iterdir()) == sorted([source.name, target.name])


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            "could not be decoded safely (the decoder crashed with SIGSEGV)",
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGABRT)",
            "(the decoder crashed with SIGABRT)",
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "(the decoder was killed (SIGKILL), most likely for running out of memory)",
        ),
        ("import sys; sys.exit(3)", "(the decoder failed with exit status 3)"),
        ("print('not json')", "(the decoder gave no result)"),
        ("print('[1, 2]')", "(the decoder gave no result)"),
        # says it converted, wrote nothing
        ("print('{\"duration\": 1.0}')", "(the decoder gave no usable result)"),
    ],
    ids=["SIGSEGV", "SIGABRT", "SIGKILL", "exit-3", "no-json", "json-not-object", "no-output"],
)
def test_a_child_that_crashes_or_says_nothing_usable_is_a_refusal(
    source: Path, code: str, reason: str
) -> None:
    message = refusal(Converter(command=python(code)), source)
    assert reason in message, message


def test_the_parent_refuses_output_that_is_not_a_playback_wav(source: Path) -> None:
    # a child that lies: it writes a 44.1 kHz stereo WAV and claims success
    code = (
        "import json, sys, numpy, soundfile\n"
        "request = json.load(sys.stdin)\n"
        "soundfile.write(request['output'], numpy.zeros((4410, 2)), 44100, 'PCM_16')\n"
        "print(json.dumps({'duration': 0.1}))"
    )
    assert "(the decoder gave no usable result)" in refusal(Converter(command=python(code)), source)


def test_a_child_that_takes_too_long_is_killed(source: Path) -> None:
    started = time.monotonic()
    converter = Converter(
        child=ChildLimits(timeout=1.0), command=python("import time; time.sleep(60)")
    )
    message = refusal(converter, source)
    assert "could not be decoded safely (the decoder took longer than 1 s)" in message
    assert time.monotonic() - started < 15


def test_the_child_runs_under_a_cpu_time_limit(source: Path) -> None:
    converter = Converter(
        child=ChildLimits(cpu_seconds=1, timeout=30),
        command=engine_main_with("lambda source, target: sum(__import__('itertools').count())"),
    )
    assert "(the decoder used more than 1 s of CPU time)" in refusal(converter, source)


def test_the_child_runs_under_a_memory_limit(source: Path) -> None:
    # 2 GiB in one allocation, under a 512 MiB address-space limit
    converter = Converter(
        child=ChildLimits(memory_bytes=512 << 20),
        command=engine_main_with("lambda source, target: bytearray(2 << 30)"),
    )
    message = refusal(converter, source)
    assert "could not be decoded safely (the decoder ran out of memory, over 512 MiB)" in message


def test_a_decoder_failing_unexpectedly_is_a_refusal(source: Path) -> None:
    converter = Converter(command=engine_main_with("lambda source, target: 1 / 0"))
    assert "(the decoder failed: ZeroDivisionError)" in refusal(converter, source)


def test_a_child_that_cannot_start_is_a_refusal(source: Path) -> None:
    converter = Converter(command=[str(source.parent / "no-such-python")])
    assert "the decoder could not be started" in refusal(converter, source)


def test_the_child_reports_what_is_wrong_without_server_paths(tmp_path: Path) -> None:
    part = tmp_path / "secret-dir" / "u2.part"
    part.parent.mkdir()
    cases = {
        b"not audio at all" * 10: "not an audio file that can be read",
        encode(tone(0.2, 8000) * 0, 8000, "WAV", "PCM_16"): "the audio is silent",
        encode(tone(3.0, 8000), 8000, "FLAC", "PCM_16"): "3 s long; prompts may be at most 2 s",
    }
    converter = Converter(AudioLimits(max_seconds=2.0))
    for data, reason in cases.items():
        part.write_bytes(data)
        with pytest.raises(ConversionRefused) as refused:
            converter.convert(part, part.with_suffix(".wav"), "x.flac")
        assert refused.value.message.startswith(f"x.flac: {reason}")
        assert "secret-dir" not in refused.value.message


def test_an_upload_whose_decoder_crashes_is_a_400_and_the_server_goes_on(api: Api) -> None:
    uploads: Uploads = api.client.app.state.context.uploads  # type: ignore[attr-defined]
    real = uploads.converter
    data = encode(tone(0.4, 8000), 8000, "WAV", "PCM_16")
    uploads.converter = Converter(
        command=python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    )
    crashed = api.upload(data, "crash.wav")
    assert crashed.status_code == 400, crashed.text
    jsonschema.validate(crashed.json(), ERROR_ENVELOPE)
    assert crashed.json()["errors"][0]["detail"]["file"] == (
        "crash.wav: the audio could not be decoded safely (the decoder crashed with SIGSEGV)"
    )
    assert leftovers(api) == [] and api.store.upload_ids() == []
    uploads.converter = real
    assert api.upload(data, "fine.wav").status_code == 201


def test_a_conversion_directory_left_by_a_crash_is_removed_at_start(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        work = store.upload_dir / "0a9c.x1y2.convert"
        work.mkdir()
        (work / "playback.wav").write_bytes(b"half a conversion")
        Uploads(store).close()
        assert list(store.upload_dir.iterdir()) == []
    finally:
        store.close()


# --- the pure checks -----------------------------------------------------------------------------


def test_info_problem() -> None:
    limits = AudioLimits(max_seconds=10, max_samples=100_000)
    assert info_problem(8000, 1, 8000, limits) is None
    assert info_problem(0, 1, 8000, limits) == "sample rate 0 Hz is outside 1000-192000 Hz"
    assert info_problem(8000, 0, 8000, limits) == "0 channels; at most 8 are accepted"
    assert info_problem(8000, 65535, 8000, limits) == "65535 channels; at most 8 are accepted"
    assert info_problem(8000, 1, 0, limits) == "the file holds no audio"
    assert info_problem(8000, 1, 2**62, limits) is not None
    assert "s long; prompts may be at most 10 s" in str(info_problem(8000, 1, 88_000, limits))
    assert "too many to convert" in str(info_problem(48000, 8, 48000, limits))


def test_playback_wav_seconds_accepts_only_8khz_mono_pcm16(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    for rate, channels, subtype, expected in [
        (8000, 1, "PCM_16", 0.5),
        (16000, 1, "PCM_16", None),
        (8000, 2, "PCM_16", None),
        (8000, 1, "PCM_24", None),
        (8000, 1, "FLOAT", None),
    ]:
        sf.write(path, tone(0.5, rate, channels), rate, subtype, format="WAV")
        assert playback_wav_seconds(path, 1 << 20) == expected, (rate, channels, subtype)
    sf.write(path, tone(0.5, 8000), 8000, "PCM_16", format="WAV")
    assert playback_wav_seconds(path, 1000) is None  # over the size bound
    data = path.read_bytes()
    path.write_bytes(data[:-2])  # data chunk past the end
    assert playback_wav_seconds(path, 1 << 20) is None
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    assert playback_wav_seconds(path, 1 << 20) is None
