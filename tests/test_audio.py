"""Converting prompt files into the playback format (8 kHz mono PCM16, normalised)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio import PLAYBACK_RATE, TARGET_RMS_DBFS, convert_for_playback
from engine.errors import PromptError


def tone(rate: int, seconds: float = 1.0, channels: int = 1, amp: float = 0.05) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = amp * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype"),
    [
        (44100, 2, "WAV", "FLOAT"),
        (48000, 1, "WAV", "PCM_24"),
        (16000, 1, "FLAC", "PCM_16"),
        (8000, 1, "WAV", "PCM_U8"),
        (22050, 2, "OGG", "VORBIS"),
    ],
)
def test_any_common_format_becomes_the_playback_format(
    tmp_path: Path, rate: int, channels: int, fmt: str, subtype: str
) -> None:
    source = tmp_path / f"in.{fmt.lower()}"
    sf.write(source, tone(rate, channels=channels), rate, format=fmt, subtype=subtype)
    target = tmp_path / "out.wav"
    seconds = convert_for_playback(source, target)
    info = sf.info(str(target))
    assert (info.samplerate, info.channels, info.subtype) == (PLAYBACK_RATE, 1, "PCM_16")
    assert seconds == pytest.approx(1.0, abs=0.02)
    data, _ = sf.read(str(target))
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(data**2)))
    assert rms_dbfs == pytest.approx(TARGET_RMS_DBFS, abs=1.0)
    # the tone survives resampling: its spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(data))
    assert np.argmax(spectrum) * PLAYBACK_RATE / len(data) == pytest.approx(440, abs=3)


def test_silence_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "quiet.wav"
    sf.write(source, np.zeros(8000), 8000)
    with pytest.raises(PromptError, match="silent"):
        convert_for_playback(source, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("content", [b"", b"not audio at all", b"RIFF\xff\xff\xff\x7fWAVEfmt "])
def test_garbage_is_refused_and_nothing_is_left(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "bad.wav"
    source.write_bytes(content)
    with pytest.raises(PromptError, match=r"bad\.wav"):
        convert_for_playback(source, tmp_path / "out.wav")
    assert list(tmp_path.iterdir()) == [source]
