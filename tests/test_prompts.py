"""Built-in system prompts: the shipped files, their audio format and the language fallback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engine import prompts as prompts_module
from engine.prompts import (
    DEFAULT_PROMPTS_DIR,
    SYSTEM_PROMPT_NAMES,
    PromptError,
    PromptLibrary,
    default_prompts_dir,
)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
MANIFEST: dict[str, Any] = json.loads((PROMPTS_DIR / "manifest.json").read_text("utf-8"))
LANGUAGES: list[str] = list(MANIFEST["languages"])
REQUIRED_LANGUAGES = {
    "en-US",
    "it-IT",
    "es-ES",
    "de-DE",
    "nl-NL",
    "vi-VN",
    "fr-FR",
    "ru-RU",
    "ja-JP",
}
ALL_FILES = [(tag, name) for tag in LANGUAGES for name in SYSTEM_PROMPT_NAMES]

SAMPLE_RATE = 8000
MAX_SECONDS = 8.0
MIN_SECONDS = 0.3
MIN_ACTIVE_LEVEL_DBFS = -30.0
SILENCE_DBFS = -50.0  # 5 ms windows quieter than this count as silence
MAX_LEADING_SILENCE_S = 0.050
MAX_TRAILING_SILENCE_S = 0.150
PEAK_LIMIT_DBFS = -1.0
LEVEL_SPREAD_DB = 1.5


@pytest.fixture(scope="module")
def library() -> PromptLibrary:
    return PromptLibrary(PROMPTS_DIR)


# --------------------------------------------------------------------------- measurement
# Deliberately independent of prompts/generate (different frame size), so the test checks
# the result rather than re-running the generator's own arithmetic.


def _window_dbfs(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x) // window
    rms = np.sqrt(np.mean(x[: n * window].reshape(n, window) ** 2, axis=1))
    levels: np.ndarray = 20 * np.log10(np.maximum(rms, 1e-12))
    return levels


def active_level_dbfs(x: np.ndarray) -> float:
    """Gated RMS over 20 ms windows: drop < -70 dBFS, then < (gated mean - 15.9 dB)."""
    power = 10 ** (_window_dbfs(x, SAMPLE_RATE // 50) / 10)
    power = power[power > 1e-7]
    gate = power.mean() * 10 ** (-15.9 / 10)
    return float(10 * np.log10(power[power >= gate].mean()))


def read(tag: str, name: str) -> np.ndarray:
    samples, rate = sf.read(PROMPTS_DIR / tag / f"{name}.wav", dtype="float64")
    assert rate == SAMPLE_RATE
    return np.asarray(samples)


# --------------------------------------------------------------------------- manifest


def test_system_prompt_names() -> None:
    assert SYSTEM_PROMPT_NAMES == (
        "greeting",
        "invalid_option",
        "extension_not_exist",
        "extension_blocked",
        "transfer_hold",
        "enter_pin",
        "invalid_pin",
        "enter_destination",
        "not_available",
        "goodbye",
    )
    assert MANIFEST["prompts"] == list(SYSTEM_PROMPT_NAMES)


def test_shipped_languages(library: PromptLibrary) -> None:
    assert library.languages() == LANGUAGES
    assert len(LANGUAGES) >= 11
    assert set(LANGUAGES) >= REQUIRED_LANGUAGES
    assert library.default_language == "en-US"


@pytest.mark.parametrize("tag", LANGUAGES)
def test_every_language_has_every_prompt(tag: str) -> None:
    lang = MANIFEST["languages"][tag]
    assert isinstance(lang["voice"], str) and lang["voice"]
    assert sorted(lang["texts"]) == sorted(SYSTEM_PROMPT_NAMES)
    assert set(lang.get("speak", {})) <= set(SYSTEM_PROMPT_NAMES)
    for name in SYSTEM_PROMPT_NAMES:
        assert lang["texts"][name].strip(), name
        assert (PROMPTS_DIR / tag / f"{name}.wav").is_file(), name
    extra = {p.name for p in (PROMPTS_DIR / tag).iterdir()} - {
        f"{n}.wav" for n in SYSTEM_PROMPT_NAMES
    }
    assert not extra


@pytest.mark.parametrize("tag", [t for t in LANGUAGES if t != "en-US"])
def test_texts_are_translated(tag: str) -> None:
    english = MANIFEST["languages"]["en-US"]["texts"]
    texts = MANIFEST["languages"][tag]["texts"]
    assert all(texts[n] != english[n] for n in SYSTEM_PROMPT_NAMES)


@pytest.mark.parametrize(
    ("tag", "script"),
    [("ru-RU", "CYRILLIC"), ("ja-JP", "HIRAGANA"), ("zh-CN", "CJK UNIFIED"), ("vi-VN", "LATIN")],
)
def test_texts_use_native_script(tag: str, script: str) -> None:
    if tag not in MANIFEST["languages"]:
        pytest.skip(f"{tag} not shipped")
    text = "".join(MANIFEST["languages"][tag]["texts"].values())
    letters = [c for c in text if c.isalpha()]
    native = [c for c in letters if unicodedata.name(c, "").startswith(script)]
    if script == "HIRAGANA":  # Japanese mixes kana and kanji
        native += [c for c in letters if unicodedata.name(c, "").startswith(("KATAKANA", "CJK"))]
    assert len(native) / len(letters) > 0.9


def test_generate_check_passes() -> None:
    """The WAVs match manifest.json (stamps.json) and pass the generator's own checks."""
    result = subprocess.run(
        [sys.executable, str(PROMPTS_DIR / "generate"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all prompts ok" in result.stdout


def test_generate_check_detects_stale_and_missing(tmp_path: Path) -> None:
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, copy)
    manifest = json.loads((copy / "manifest.json").read_text("utf-8"))
    manifest["languages"]["fr-FR"]["texts"]["goodbye"] = "Au revoir et à bientôt."
    (copy / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    (copy / "nl-NL" / "goodbye.wav").unlink()
    result = subprocess.run(
        [sys.executable, str(copy / "generate"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "fr-FR/goodbye.wav: stale" in result.stdout
    assert "nl-NL/goodbye.wav: missing" in result.stdout


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(("tag", "name"), ALL_FILES, ids=[f"{t}/{n}" for t, n in ALL_FILES])
def test_prompt_audio(tag: str, name: str) -> None:
    info = sf.info(PROMPTS_DIR / tag / f"{name}.wav")
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        SAMPLE_RATE,
        1,
    )
    x = read(tag, name)
    seconds = len(x) / SAMPLE_RATE
    assert MIN_SECONDS < seconds < MAX_SECONDS
    assert active_level_dbfs(x) > MIN_ACTIVE_LEVEL_DBFS
    assert 20 * np.log10(np.max(np.abs(x))) <= PEAK_LIMIT_DBFS + 0.05

    loud = np.flatnonzero(_window_dbfs(x, SAMPLE_RATE // 200) > SILENCE_DBFS)
    window_s = 1 / 200
    assert loud[0] * window_s <= MAX_LEADING_SILENCE_S
    assert seconds - (loud[-1] + 1) * window_s <= MAX_TRAILING_SILENCE_S


def test_prompts_loudness_normalised() -> None:
    levels = {f"{t}/{n}": active_level_dbfs(read(t, n)) for t, n in ALL_FILES}
    median = float(np.median(list(levels.values())))
    assert -23.0 < median < -17.0  # the generator targets -20 dBFS
    outliers = {k: round(v, 1) for k, v in levels.items() if abs(v - median) > LEVEL_SPREAD_DB}
    assert not outliers, f"median {median:.1f} dBFS"


# --------------------------------------------------------------------------- lookup


FALLBACKS = [
    ("en-US", "en-US"),
    ("EN-us", "en-US"),
    ("en_US", "en-US"),
    ("en", "en-US"),
    ("en-GB", "en-US"),
    ("en-Latn-US", "en-US"),
    ("de", "de-DE"),
    ("de-DE", "de-DE"),
    ("de-AT", "de-DE"),
    ("de-CH", "de-DE"),
    ("fr-CA", "fr-FR"),
    ("fr-BE", "fr-FR"),
    ("it", "it-IT"),
    ("it-CH", "it-IT"),
    ("es-MX", "es-ES"),
    ("es-419", "es-ES"),
    ("nl-BE", "nl-NL"),
    ("vi", "vi-VN"),
    ("ru", "ru-RU"),
    ("ja", "ja-JP"),
    ("JA-jp", "ja-JP"),
    ("pt", "pt-BR"),
    ("pt-PT", "pt-BR"),
    ("pl", "pl-PL"),
    ("tr", "tr-TR"),
    ("sv-FI", "sv-SE"),
    ("zh", "zh-CN"),
    ("zh-Hans-CN", "zh-CN"),
    ("cmn", "zh-CN"),  # Mandarin, folded into its macrolanguage
    ("zh-Hant-TW", "zh-CN"),  # another script, but the same spoken language
    ("de-CH-1996", "de-DE"),  # variant subtag
    ("en-US-u-ca-gregory", "en-US"),  # extension
    ("xx", "en-US"),  # unknown language
    ("uk", "en-US"),  # never another language, however close
    ("ca", "en-US"),
    ("yue", "en-US"),
    ("und", "en-US"),
    ("x-private", "en-US"),
    ("", "en-US"),  # not a tag at all
    ("not a tag!", "en-US"),
]


@pytest.mark.parametrize(("requested", "expected"), FALLBACKS)
def test_resolve_language(library: PromptLibrary, requested: str, expected: str) -> None:
    assert library.resolve_language(requested) == expected
    path = library.path(requested, "greeting")
    assert path == PROMPTS_DIR / expected / "greeting.wav"
    assert path.is_file()


def test_text_follows_resolution(library: PromptLibrary) -> None:
    assert library.text("de-AT", "goodbye") == MANIFEST["languages"]["de-DE"]["texts"]["goodbye"]
    assert library.text("xx", "goodbye") == "Goodbye."


def make_library(root: Path, tags: list[str], **manifest: Any) -> Path:
    """A fake prompts directory: manifest plus empty files (the library checks existence)."""
    content = {
        "prompts": list(SYSTEM_PROMPT_NAMES),
        "default_language": "en-US",
        "languages": {
            tag: {"voice": "x", "texts": {n: f"{tag} {n}" for n in SYSTEM_PROMPT_NAMES}}
            for tag in tags
        },
        **manifest,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(content), "utf-8")
    for tag in tags:
        (root / tag).mkdir(exist_ok=True)
        for name in SYSTEM_PROMPT_NAMES:
            (root / tag / f"{name}.wav").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("de-AT", "de-DE"),  # the language's most likely region wins a tie
        ("de-CH", "de-CH"),
        ("de", "de-DE"),
        ("pt", "pt-BR"),
        ("pt-AO", "pt-PT"),  # CLDR: closer to European Portuguese
        ("zh-HK", "zh-TW"),  # same script (Hant) first
        ("zh-SG", "zh-CN"),
        ("sr-Latn", "sr-Cyrl"),
        ("en-GB", "en-US"),
    ],
)
def test_resolve_among_several_regions(tmp_path: Path, requested: str, expected: str) -> None:
    tags = ["en-US", "de-DE", "de-CH", "pt-BR", "pt-PT", "zh-CN", "zh-TW", "sr-Cyrl"]
    library = PromptLibrary(make_library(tmp_path, tags))
    assert library.resolve_language(requested) == expected


def test_missing_file_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, copy)
    (copy / "de-DE" / "invalid_pin.wav").unlink()
    with pytest.raises(PromptError) as excinfo:
        PromptLibrary(copy)
    message = str(excinfo.value)
    assert str(Path("de-DE") / "invalid_pin.wav") in message
    assert "prompts/generate --lang de-DE" in message


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="manifest"):
        PromptLibrary(tmp_path)


@pytest.mark.parametrize(
    ("tags", "overrides", "match"),
    [
        (["en-US", "de-de"], {}, "not a standard BCP 47 tag"),
        (["de-DE"], {}, "default language en-US"),
        (["en-US"], {"prompts": ["greeting"]}, "system prompts not listed"),
        (["en-US"], {"languages": {"en-US": {"voice": "x"}}}, "malformed"),
    ],
)
def test_bad_manifest_is_reported(
    tmp_path: Path, tags: list[str], overrides: dict[str, Any], match: str
) -> None:
    with pytest.raises(PromptError, match=match):
        PromptLibrary(make_library(tmp_path, tags, **overrides))


def test_unknown_prompt_name(library: PromptLibrary) -> None:
    with pytest.raises(PromptError, match="unknown prompt name 'welcome'"):
        library.path("en-US", "welcome")
    with pytest.raises(PromptError, match="unknown prompt name"):
        library.text("de-DE", "greeting.wav")


def test_default_prompts_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VR_PROMPTS_DIR", raising=False)
    assert default_prompts_dir() == PROMPTS_DIR
    assert isinstance(DEFAULT_PROMPTS_DIR, Path)

    make_library(tmp_path, ["en-US"])
    monkeypatch.setenv("VR_PROMPTS_DIR", str(tmp_path))
    assert prompts_module.default_prompts_dir() == tmp_path
    assert PromptLibrary().languages() == ["en-US"]
    assert PromptLibrary().path("de-DE", "goodbye") == tmp_path / "en-US" / "goodbye.wav"
