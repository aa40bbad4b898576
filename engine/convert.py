"""Converting untrusted audio (prompt uploads) in a child process under resource limits.

libsndfile and its codecs parse whatever a client uploads. A crash or a memory blow-up in them
must cost one refused upload, not the server and every call on it; so the decode runs in a
child process (``python -m engine.convert``) and the parent only ever sees files it checked:

- The parent (`Converter.convert`, on the upload conversion thread) starts the child with a
  JSON request on stdin: source, an output path in a fresh work directory, the audio limits,
  the resource limits. It waits at most `timeout` seconds (then kills the child by its PID).
- The child (`main`) first applies its resource limits — address space (`memory_bytes`), CPU
  time, size of any file it writes (the output of `max_seconds` of playback audio plus a
  margin), no core dumps — and only then imports numpy, soundfile and soxr and looks at the
  file: ``soundfile.info`` against the limits (`info_problem`: rate, channels, duration,
  decoded size), then `engine.audio.convert_for_playback`. It answers with one JSON line on
  stdout: ``{"duration": seconds}`` or ``{"error": "what is wrong with the file"}``.
- The parent trusts nothing else from the child: it checks the output is a regular file, a
  plain 8 kHz mono 16-bit PCM WAV no larger than `max_seconds` of audio makes (pure Python,
  `playback_wav_seconds`), takes the duration from that header and moves the file to the
  target. A child killed by a signal, one that exits non-zero, runs out of memory or time or
  says nothing usable becomes a `ConversionRefused` naming the file and the reason ("the
  decoder crashed with SIGSEGV", "ran out of memory, over 1536 MiB", "took longer than 90 s").
  The work directory is removed whatever happens.

The limits contain crashes, hangs and memory or disk blow-ups of the decoder. They are no
security boundary against code running in the child (same user, same file system): that would
take a separate user, namespaces or seccomp around the same command.

`ConversionRefused` is the only exception `convert` raises for anything the file (or the decoder on
it) does; its message starts with the file's name and holds no server path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConversionRefused

log = logging.getLogger(__name__)

PLAYBACK_RATE = 8000  # engine.audio.PLAYBACK_RATE; not imported: the parent needs no numpy here
PLAYBACK_BYTES_PER_SECOND = PLAYBACK_RATE * 2
OUTPUT_MARGIN = 1 << 20
OUTPUT_NAME = "playback.wav"
MAX_REPLY = 1 << 16
MAX_MESSAGE = 1000
UNREADABLE = "not an audio file that can be read (WAV, FLAC, OGG or MP3)"


@dataclass(frozen=True)
class AudioLimits:
    """What an upload may be, checked from its header before anything is decoded."""

    max_seconds: float = 600.0
    max_channels: int = 8
    min_samplerate: int = 1000
    max_samplerate: int = 192_000
    # decoded samples (frames x channels): 10 minutes of 48 kHz stereo, about 230 MB as float32
    max_samples: int = 600 * 48_000 * 2

    def max_output_bytes(self) -> int:
        """The largest playback WAV `max_seconds` of audio can give (header and margin in)."""
        return math.ceil(self.max_seconds * PLAYBACK_RATE) * 2 + OUTPUT_MARGIN


@dataclass(frozen=True)
class ChildLimits:
    """Resources of one conversion child. `cpu_seconds` is CPU time (RLIMIT_CPU), `timeout`
    wall-clock time the parent waits before it kills the child."""

    memory_bytes: int = 1536 << 20
    cpu_seconds: int = 60
    timeout: float = 90.0


def info_problem(samplerate: int, channels: int, frames: int, limits: AudioLimits) -> str | None:
    """What makes a file with this header unacceptable under `limits`, or None."""
    if not limits.min_samplerate <= samplerate <= limits.max_samplerate:
        return (
            f"sample rate {samplerate} Hz is outside {limits.min_samplerate}-"
            f"{limits.max_samplerate} Hz"
        )
    if not 1 <= channels <= limits.max_channels:
        return f"{channels} channels; at most {limits.max_channels} are accepted"
    if frames <= 0:
        return "the file holds no audio"
    if frames / samplerate > limits.max_seconds:
        return (
            f"{frames / samplerate:.0f} s long; prompts may be at most {limits.max_seconds:.0f} s"
        )
    if frames * channels > limits.max_samples:
        return (
            f"{frames * channels} samples are too many to convert at once; "
            "shorten, downmix or resample it (e.g. to 48 kHz stereo)"
        )
    return None


def playback_wav_seconds(path: Path, max_bytes: int) -> float | None:
    """Duration of `path` if it is a RIFF WAVE file of 8 kHz mono 16-bit PCM audio, at most
    `max_bytes` long, whose data chunk lies within the file; None otherwise. Pure Python: this
    is how the parent checks what a child wrote."""
    if path.stat().st_size > max_bytes:
        return None
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    size = len(data)
    if size > max_bytes:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt_ok = 12, False
    while offset + 8 <= size:
        chunk_id = data[offset : offset + 4]
        chunk_size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = offset + 8
        if body + chunk_size > size:
            return None
        if chunk_id == b"fmt ":
            if chunk_size < 16:
                return None
            fields = struct.unpack("<HHIIHH", data[body : body + 16])
            fmt_ok = fields == (1, 1, PLAYBACK_RATE, PLAYBACK_BYTES_PER_SECOND, 2, 16)
        elif chunk_id == b"data":
            if not fmt_ok or chunk_size == 0 or chunk_size % 2:
                return None
            return chunk_size / PLAYBACK_BYTES_PER_SECOND
        offset = body + chunk_size + (chunk_size & 1)
    return None


# --- the parent ----------------------------------------------------------------------------------

_CRASHES = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE)


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


class Converter:
    """Converts untrusted files for playback, each in its own limited child process.

    `command` starts the child (default ``python -m engine.convert``); the request is written
    to its stdin. Thread-safe: each call has its own child and work directory."""

    def __init__(
        self,
        limits: AudioLimits | None = None,
        child: ChildLimits | None = None,
        *,
        command: Sequence[str] | None = None,
    ) -> None:
        self.limits = limits or AudioLimits()
        self.child = child or ChildLimits()
        self.command = list(command or [sys.executable, "-m", "engine.convert"])

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _package_root() + (os.pathsep + path if path else "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the child writes its output and nothing else
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        return env

    def convert(self, source: Path, target: Path, name: str) -> float:
        """Convert `source` into the playback WAV `target`; returns its duration in seconds.

        Raises ConversionRefused (message ``"<name>: <why>"``) for a file that cannot be
        converted, a decoder that crashed, ran out of memory or time, or a child that gave no usable
        answer. Leaves nothing behind but `target` on success."""
        work = Path(
            tempfile.mkdtemp(prefix=f"{target.stem}.", suffix=".convert", dir=target.parent)
        )
        try:
            output = work / OUTPUT_NAME
            request = {
                "source": str(source),
                "output": str(output),
                "name": name,
                "limits": asdict(self.limits),
                "child": asdict(self.child),
            }
            problem = self._run(request, source)
            if problem is not None:
                raise ConversionRefused(f"{name}: {problem}")
            seconds = (
                playback_wav_seconds(output, self.limits.max_output_bytes())
                if output.is_file() and not output.is_symlink()
                else None
            )
            if seconds is None:
                log.warning("conversion of %s: the child wrote no usable playback WAV", source)
                raise ConversionRefused(
                    f"{name}: the audio could not be decoded safely (the decoder gave no "
                    "usable result)"
                )
            os.replace(output, target)
            return seconds
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, request: dict[str, Any], source: Path) -> str | None:
        """Run one child; None if it converted the file, else what to tell the client."""
        unsafe = "the audio could not be decoded safely"
        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(),
                close_fds=True,
                start_new_session=True,  # no terminal signals from the server's session
            )
        except OSError as error:
            log.error("cannot start the conversion child %s: %s", self.command, error)
            return f"{unsafe} (the decoder could not be started; try again later)"
        try:
            stdout, stderr = process.communicate(
                json.dumps(request).encode(), timeout=self.child.timeout
            )
        except subprocess.TimeoutExpired:
            process.kill()  # this child, by its PID
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=5)
            process.wait()
            log.warning(
                "conversion of %s: killed the child %d after %g s",
                source,
                process.pid,
                self.child.timeout,
            )
            return f"{unsafe} (the decoder took longer than {self.child.timeout:g} s)"
        except BaseException:
            process.kill()
            process.wait()
            raise
        code = process.returncode
        reply = _parse_reply(stdout)
        if code == 0 and reply is not None:
            if "error" in reply:
                return str(reply["error"])[:MAX_MESSAGE]
            if "duration" in reply:
                return None
        tail = stderr.decode(errors="replace").strip()[-2000:]
        if code < 0:
            reason = self._signal_reason(-code)
        elif code != 0:
            reason = f"the decoder failed with exit status {code}"
        else:
            reason = "the decoder gave no result"
        log.warning("conversion of %s: %s; stderr: %s", source, reason, tail or "(empty)")
        return f"{unsafe} ({reason})"

    def _signal_reason(self, number: int) -> str:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number in _CRASHES:
            return f"the decoder crashed with {name}"
        if number == signal.SIGKILL:
            return "the decoder was killed (SIGKILL), most likely for running out of memory"
        if number == signal.SIGXCPU:
            return f"the decoder used more than {self.child.cpu_seconds} s of CPU time"
        if number == signal.SIGXFSZ:
            return "the decoder wrote more than a prompt can hold"
        return f"the decoder was stopped by {name}"


def _parse_reply(stdout: bytes) -> dict[str, Any] | None:
    """The child's answer: its last line of stdout as a JSON object, or None."""
    lines = stdout[-MAX_REPLY:].decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


# --- the child -----------------------------------------------------------------------------------


def apply_child_limits(child: ChildLimits, max_output_bytes: int) -> None:
    """Bound this process: address space, CPU time, size of files written, no core dumps."""
    for kind, soft, hard in (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_AS, child.memory_bytes, child.memory_bytes),
        (resource.RLIMIT_CPU, child.cpu_seconds, child.cpu_seconds + 5),
        (resource.RLIMIT_FSIZE, max_output_bytes, max_output_bytes),
    ):
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(kind, (soft, hard))


def _convert(source: Path, output: Path, name: str, limits: AudioLimits) -> dict[str, Any]:
    """Check and convert one file (in the child, under its limits): the reply to send."""
    import soundfile as sf

    from engine import audio
    from engine.errors import PromptError

    def problem(message: str) -> dict[str, Any]:
        # messages of engine.audio start with the path; the parent adds the name itself
        message = message.removeprefix(f"{source}: ").replace(str(source), name)
        return {"error": message.removeprefix(f"{name}: ")}

    try:
        info = sf.info(str(source))
    except Exception:  # libsndfile reports unknown and broken formats in several ways
        return {"error": UNREADABLE}
    found = info_problem(info.samplerate, info.channels, info.frames, limits)
    if found is not None:
        return {"error": found}
    try:
        return {"duration": audio.convert_for_playback(source, output)}
    except PromptError as error:
        return problem(str(error))


def main() -> int:
    """The child: read the request from stdin, convert, answer with one JSON line."""
    request = json.loads(sys.stdin.buffer.read(MAX_REPLY))
    limits = AudioLimits(**request["limits"])
    child = ChildLimits(**request["child"])
    apply_child_limits(child, limits.max_output_bytes())
    try:
        reply = _convert(Path(request["source"]), Path(request["output"]), request["name"], limits)
    except MemoryError:
        reply = {
            "error": "the audio could not be decoded safely (the decoder ran out of memory, "
            f"over {child.memory_bytes >> 20} MiB); shorten or downmix it"
        }
    except Exception as error:  # a decoder failing in a way engine.audio does not expect
        traceback.print_exc()
        reply = {
            "error": "the audio could not be decoded safely "
            f"(the decoder failed: {type(error).__name__})"
        }
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
