"""Audio conversion into the playback format: 8 kHz mono 16-bit PCM WAV, loudness-normalised.

Conversion happens once (at startup for configured prompt files, at upload for the API),
never per call. Decoding uses soundfile (WAV of any PCM/float width and rate, FLAC, OGG,
MP3); resampling uses soxr. Also the measure the tests and the benchmark use to compare what
a caller heard with a prompt (`aligned_correlation`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.errors import PromptError

PLAYBACK_RATE = 8000
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT_DBFS = -1.0
MAX_SECONDS = 600.0
SILENCE_DBFS = -60.0


def _dbfs(value: float) -> float:
    return float(20 * np.log10(max(value, 1e-12)))


def convert_for_playback(source: Path, target: Path) -> float:
    """Decode `source`, convert to the playback format and write `target` atomically.

    Returns the duration in seconds. Raises PromptError saying what is wrong with the file.
    """
    try:
        info = sf.info(str(source))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise PromptError(f"{source}: not a readable audio file ({error})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise PromptError(f"{source}: the file holds no audio")
    if info.frames / info.samplerate > MAX_SECONDS:
        raise PromptError(
            f"{source}: {info.frames / info.samplerate:.0f} s long; prompts may be at most "
            f"{MAX_SECONDS:.0f} s"
        )
    try:
        data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise PromptError(f"{source}: the audio could not be decoded ({error})") from None
    mono = data.mean(axis=1)
    if rate != PLAYBACK_RATE:
        mono = soxr.resample(mono, rate, PLAYBACK_RATE, quality="HQ")
    mono = normalise(mono, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, suffix=".wav.part")
    os.close(handle)
    try:
        sf.write(temp, mono, PLAYBACK_RATE, subtype="PCM_16", format="WAV")
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return len(mono) / PLAYBACK_RATE


def normalise(samples: np.ndarray, source: Path | str = "audio") -> np.ndarray:
    """Scale to TARGET_RMS_DBFS over the non-silent part, keeping peaks under the limit."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if _dbfs(peak) < SILENCE_DBFS:
        raise PromptError(f"{source}: the audio is silent")
    frame = PLAYBACK_RATE // 50
    usable = (
        samples[: len(samples) // frame * frame].reshape(-1, frame)
        if len(samples) >= frame
        else samples.reshape(1, -1)
    )
    frame_rms = np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1))
    active = frame_rms[frame_rms > peak * 10 ** (-40 / 20)]
    rms = float(np.sqrt(np.mean(active**2))) if active.size else peak
    gain = 10 ** (TARGET_RMS_DBFS / 20) / rms
    gain = min(gain, 10 ** (PEAK_LIMIT_DBFS / 20) / peak)
    return (samples * gain).astype(np.float32)


def global_lag(recording: np.ndarray, prompt: np.ndarray) -> int:
    """Index in `recording` where `prompt` starts, by FFT cross-correlation."""
    n = len(recording) + len(prompt)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(recording, size) * np.conj(np.fft.rfft(prompt, size)), size)
    return int(np.argmax(xc[: max(len(recording) - len(prompt) // 2, 1)]))


def aligned_correlation(
    recording: np.ndarray,
    prompt: np.ndarray,
    lag: int | None = None,
    *,
    window: int = PLAYBACK_RATE // 8,
    slack: int = PLAYBACK_RATE // 25,
) -> tuple[float, int]:
    """Normalised correlation of `prompt` with `recording` after alignment; and the lag.

    The recording is aligned globally (FFT cross-correlation), then each `window` samples
    (default 125 ms at 8 kHz) are re-aligned within ±`slack` (40 ms): a receiving jitter
    buffer may drop or repeat a 10-20 ms frame (more often on a loaded machine), which shifts
    everything after it and would otherwise ruin a single global alignment; short windows
    confine a slip to the window it is in. Parts of the prompt beyond the recording's end count
    as silence (lowering the result).
    """
    if lag is None:
        lag = global_lag(recording, prompt)
    aligned = np.zeros_like(prompt)
    for start in range(0, len(prompt), window):
        ref = prompt[start : start + window]
        best, best_dot = 0, -np.inf
        for shift in range(-slack, slack + 1):
            at = lag + start + shift
            if at < 0 or at + len(ref) > len(recording):
                continue
            dot = float(np.dot(recording[at : at + len(ref)], ref))
            if dot > best_dot:
                best, best_dot = shift, dot
        at = lag + start + best
        piece = recording[max(at, 0) : max(at, 0) + len(ref)]
        aligned[start : start + len(piece)] = piece
    a = aligned - aligned.mean()
    b = prompt - prompt.mean()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)), lag
