"""Prompt uploads as in PortSIP (``/api/blobs/uploads``): resumable sessions, checked and
converted once into the playback format.

A session is a row in the store's ``uploads`` table plus ``<data>/uploads/<id>.part``. Chunks
are appended as they come, each bounded by the size limit. ``complete`` then, on a dedicated
conversion thread (the loop keeps serving calls): checks the SHA-256 digest the client sent and
refuses a WAV whose header announces more audio than the file holds (truncated, or a hostile
header claiming gigabytes) — both pure Python, in this process. The uploaded bytes themselves
are only ever parsed by a child process (`engine.convert`) under memory, CPU-time and file-size
limits and a wall-clock timeout: it checks channels, rate, duration and decoded size with
``soundfile.info`` before decoding anything, then converts with
``engine.audio.convert_for_playback`` into ``<data>/uploads/<id>.*.convert/``. A refusal, a
crash, a memory blow-up or a timeout of that child is a 400 naming the file; the server goes on.
This process then checks the child's output is a plain 8 kHz mono 16-bit WAV, moves it to
``<data>/uploads/<id>.wav`` and fsyncs it; the store moves it to ``<data>/blobs/<digest>.wav``
and inserts the ``files`` row: playback only ever reads files we converted and checked.
Whatever happens, the session, its part file and any partial conversion are removed: a failed
upload leaves nothing behind, a completed one exactly one file and one row.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import math
import os
import re
import secrets
import shutil
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from engine.convert import AudioLimits, ChildLimits, Converter
from engine.errors import ConversionRefused
from engine.files import sha256_file
from engine.keyed_locks import KeyedLocks
from engine.store import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RangeMismatch,
    StoreBackend,
    TooLarge,
)

log = logging.getLogger(__name__)

UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DIGEST_RE = re.compile(r"^(?:[sS][hH][aA]256:)?([0-9a-fA-F]{64})$")
CONTENT_RANGE_RE = re.compile(r"^(?:bytes\s+)?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 600.0
    max_channels: int = 8
    min_samplerate: int = 1000
    max_samplerate: int = 192_000
    # decoded samples (frames x channels): 10 minutes of 48 kHz stereo, about 230 MB as float32
    max_samples: int = 600 * 48_000 * 2
    max_sessions: int = 32
    session_ttl: float = 3600.0  # an upload idle this long (no chunk appended) is discarded
    # the conversion child: address space, CPU time, wall-clock time before it is killed
    convert_memory_bytes: int = 1536 << 20
    convert_cpu_seconds: int = 60
    convert_timeout: float = 90.0

    def converter(self) -> Converter:
        """The converter these limits describe."""
        return Converter(
            AudioLimits(
                max_seconds=self.max_seconds,
                max_channels=self.max_channels,
                min_samplerate=self.min_samplerate,
                max_samplerate=self.max_samplerate,
                max_samples=self.max_samples,
            ),
            ChildLimits(
                memory_bytes=self.convert_memory_bytes,
                cpu_seconds=self.convert_cpu_seconds,
                timeout=self.convert_timeout,
            ),
        )


@dataclass(frozen=True)
class UploadState:
    id: str
    token: str
    filename: str
    size: int


@dataclass(frozen=True)
class _Converted:
    path: Path
    digest: str  # of the converted WAV
    duration: float
    source_digest: str  # of the bytes uploaded


def parse_digest(value: str | None) -> str:
    """`sha256:<hex>` (the prefix in any case, as `SHA256:<HEX>`) or plain `<hex>` (64 hex
    digits) as lowercase hex. Raises Invalid."""
    match = DIGEST_RE.fullmatch((value or "").strip())
    if match is None:
        raise Invalid(
            "digest must be sha256:<64 hex digits>",
            {"digest": "give the SHA-256 of the uploaded data as sha256:<64 hex digits>"},
        )
    return match.group(1).lower()


def clean_filename(name: str | None) -> str:
    """The last path component of `name`, printable characters only, at most 255."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:255] or "prompt"


def wav_problem(path: Path) -> str | None:
    """Why a RIFF/RIFX/RF64 WAVE file cannot be right (a data chunk that runs past the end of
    the file, no data chunk), or None; None too for files that are not WAV at all."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:] != b"WAVE":
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        offset = 12
        ds64_data_size: int | None = None
        for _ in range(256):
            handle.seek(offset)
            header = handle.read(8)
            if len(header) < 8:
                return "the WAV file ends before its audio data: it is truncated"
            chunk_id = header[:4]
            (chunk_size,) = struct.unpack(endian + "I", header[4:])
            if chunk_id == b"ds64":
                body = handle.read(24)
                if len(body) == 24:
                    (ds64_data_size,) = struct.unpack("<Q", body[8:16])
            if chunk_id == b"data":
                if chunk_size == 0xFFFFFFFF and ds64_data_size is not None:
                    chunk_size = ds64_data_size
                held = size - offset - 8
                if chunk_size > held:
                    return (
                        f"the WAV header announces {chunk_size} bytes of audio but the file holds "
                        f"{held}: it is truncated or its header is wrong; export it again"
                    )
                if chunk_size == 0:
                    return "the WAV file holds no audio (its data chunk is empty)"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
            if offset > size:
                return f"the WAV chunk {chunk_id!r} runs past the end of the file: it is truncated"
    return "the WAV file has too many chunks before its audio data"


async def _read_capped(body: AsyncIterator[bytes], limit: int) -> bytes | None:
    """The whole body, or None as soon as it is longer than `limit` bytes."""
    data = bytearray()
    async for chunk in body:
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def _append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


class Uploads:
    """Upload sessions of one store. Use from the asyncio loop.

    `converter` converts the uploaded files (default: ``limits.converter()``)."""

    def __init__(
        self,
        store: StoreBackend,
        limits: UploadLimits | None = None,
        clock: Callable[[], float] = time.time,
        *,
        converter: Converter | None = None,
    ) -> None:
        self.store = store
        self.limits = limits or UploadLimits()
        self.clock = clock
        self.converter = converter or self.limits.converter()
        self._locks = KeyedLocks()
        self._converter = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vr-convert"
        )
        self.recover()

    # --- housekeeping --------------------------------------------------------------------------

    def part_path(self, upload_id: str) -> Path:
        return self.store.upload_dir / f"{upload_id}.part"

    def _temp_wav(self, upload_id: str) -> Path:
        return self.store.upload_dir / f"{upload_id}.wav"

    def _remove_files(self, upload_id: str) -> None:
        self.part_path(upload_id).unlink(missing_ok=True)
        self._temp_wav(upload_id).unlink(missing_ok=True)

    def _discard(self, upload_id: str) -> None:
        """Forget a session: its row, its part file, any partial conversion (sync)."""
        self.store.delete_upload(upload_id)
        self._remove_files(upload_id)

    def expire(self) -> int:
        """Discard sessions idle for longer than the session TTL: started before it and no
        chunk appended since (the part file's mtime tells; sync)."""
        cutoff = self.clock() - self.limits.session_ttl
        discarded = 0
        for upload_id in self.store.upload_ids(touched_before=cutoff):
            part = self.part_path(upload_id)
            if part.exists() and part.stat().st_mtime >= cutoff:
                continue
            self._discard(upload_id)
            discarded += 1
        return discarded

    def _last_activity(self, upload_id: str) -> float | None:
        """When the session was started or last got a chunk (the part file's mtime)."""
        session = self.store.get_upload(upload_id)
        if session is None:
            return None
        part = self.part_path(upload_id)
        mtime = part.stat().st_mtime if part.exists() else 0.0
        return max(session.touched_at, mtime)

    def next_expiry(self, owner: str | None = None) -> float | None:
        """In how many seconds the first open session (of `owner`) expires if it stays idle
        (sync)."""
        ids = self.store.upload_ids(owner=owner)
        times = [t for i in ids if (t := self._last_activity(i)) is not None]
        if not times:
            return None
        return max(0.0, min(times) + self.limits.session_ttl - self.clock())

    def recover(self) -> None:
        """After a restart: expire old sessions and remove files no session or file row owns —
        half-written conversions and their work directories, blobs moved in just before a
        crash (sync)."""
        self.expire()
        live = {self.part_path(upload_id).name for upload_id in self.store.upload_ids()}
        for path in self.store.upload_dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name not in live:
                path.unlink(missing_ok=True)
        known = {path.resolve() for path in self.store.file_paths().values()}
        for path in self.store.blob_dir.iterdir():
            if path.is_file() and path.resolve() not in known:
                log.info("removing %s: no file record owns it", path)
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._converter.shutdown(wait=True)

    # --- sessions ------------------------------------------------------------------------------

    async def _session(self, upload_id: str, token: str | None) -> UploadState:
        session = (
            await self.store.run(self.store.get_upload, upload_id)
            if UPLOAD_ID_RE.fullmatch(upload_id)
            else None
        )
        if session is None:
            raise NotFound(
                f"no upload {upload_id!r}: it completed, expired or was destroyed; start a new one"
            )
        if token is not None and not hmac.compare_digest(session.token, token):
            raise Forbidden(
                "the PortSIP-Upload-Token header does not match this upload",
                {"PortSIP-Upload-Token": "does not match this upload"},
            )
        path = self.part_path(upload_id)
        size = path.stat().st_size if path.exists() else 0
        return UploadState(session.id, session.token, session.filename, size)

    async def start(
        self, filename: str | None, temporary: bool = False, owner: str = ""
    ) -> UploadState:
        """A new upload session for `owner` (the fingerprint of the API token that asks: the
        limit of open sessions counts per token)."""
        await self.store.run(self.expire)
        upload_id = str(uuid.uuid4())
        token = secrets.token_urlsafe(24)
        self.part_path(upload_id).touch()
        try:
            session = await self.store.run(
                self.store.create_upload,
                upload_id,
                token,
                clean_filename(filename),
                temporary,
                self.clock(),
                self.limits.max_sessions,
                owner,
            )
        except Conflict as full:
            self.part_path(upload_id).unlink(missing_ok=True)
            wait = await self.store.run(self.next_expiry, owner)
            if wait is None:
                raise
            when = (
                f"the first idle one expires in {math.ceil(wait)} s "
                f"(uploads idle for {self.limits.session_ttl:g} s are discarded)"
            )
            raise Conflict(
                f"{full.message}; {when}", {**full.detail, "retry_after": when}
            ) from None
        except BaseException:
            self.part_path(upload_id).unlink(missing_ok=True)
            raise
        return UploadState(session.id, session.token, session.filename, 0)

    async def status(self, upload_id: str) -> UploadState:
        return await self._session(upload_id, None)

    async def destroy(self, upload_id: str) -> None:
        async with self._locks.hold(upload_id):
            await self._session(upload_id, None)
            await self.store.run(self._discard, upload_id)

    async def _append(
        self,
        state: UploadState,
        body: AsyncIterator[bytes],
        content_length: int | None,
        content_range: str | None,
    ) -> UploadState:
        if content_range:
            match = CONTENT_RANGE_RE.fullmatch(content_range.strip())
            if match is None:
                raise Invalid(
                    "Content-Range must be <start>-<end>",
                    {"Content-Range": "must be <start>-<end> (bytes, inclusive)"},
                )
            if int(match.group(1)) != state.size:
                raise RangeMismatch(
                    f"the upload holds {state.size} bytes; the next chunk must start there",
                    state.size,
                )
        remaining = self.limits.max_bytes - state.size
        data = None
        if content_length is None or content_length <= remaining:
            data = await _read_capped(body, remaining)
        if data is None:
            await self.store.run(self._discard, state.id)
            raise TooLarge(
                f"uploads may be at most {self.limits.max_bytes} bytes; the upload was discarded",
                {"file": f"larger than {self.limits.max_bytes} bytes"},
            )
        if data:
            await asyncio.to_thread(_append_bytes, self.part_path(state.id), data)
        return UploadState(state.id, state.token, state.filename, state.size + len(data))

    async def append(
        self,
        upload_id: str,
        token: str | None,
        body: AsyncIterator[bytes],
        *,
        content_length: int | None = None,
        content_range: str | None = None,
    ) -> UploadState:
        """Append a chunk. Raises NotFound, Forbidden, RangeMismatch, TooLarge (which discards
        the session), Invalid."""
        async with self._locks.hold(upload_id):
            state = await self._session(upload_id, token or "")
            return await self._append(state, body, content_length, content_range)

    async def complete(
        self,
        upload_id: str,
        token: str | None,
        digest: str | None,
        body: AsyncIterator[bytes],
        *,
        content_length: int | None = None,
    ) -> tuple[str, bool]:
        """Finish an upload (with an optional last chunk): check, convert, store.

        `digest` is optional, as in PortSIP's document: without one (or with an empty one) the
        data is taken as uploaded, and its SHA-256 is computed here. Returns (file id,
        created); an upload identical to a stored file returns that file. The session is gone
        afterwards, whatever the outcome."""
        expected = parse_digest(digest) if digest else None
        async with self._locks.hold(upload_id):
            state = await self._session(upload_id, token or "")
            try:
                state = await self._append(state, body, content_length, None)
                loop = asyncio.get_running_loop()
                converted = await loop.run_in_executor(
                    self._converter, self._check_and_convert, state, expected
                )
                return await self.store.run(
                    self.store.install_file,
                    converted.path,
                    digest=converted.digest,
                    name=state.filename,
                    duration=converted.duration,
                    source_digest=converted.source_digest,
                )
            finally:
                with contextlib.suppress(Exception):
                    await self.store.run(self._discard, upload_id)

    # --- checking and converting (on the conversion thread; decoding in a child process) -----

    def _check_and_convert(self, state: UploadState, expected: str | None) -> _Converted:
        part = self.part_path(state.id)
        name = state.filename
        size = part.stat().st_size
        if size == 0:
            raise Invalid("the upload is empty", {"file": "is empty: append data first"})
        actual = sha256_file(part)
        if expected is not None and actual != expected:
            raise Invalid(
                "the digest does not match the uploaded data",
                {
                    "digest": f"the {size} uploaded bytes have digest sha256:{actual}, not "
                    f"sha256:{expected}; upload the file again"
                },
            )
        problem = wav_problem(part)
        if problem is not None:
            raise Invalid(f"{name}: {problem}", {"file": f"{name}: {problem}"})
        target = self._temp_wav(state.id)
        try:
            duration = self.converter.convert(part, target, name)
        except ConversionRefused as refused:
            raise Invalid(refused.message, {"file": refused.message}) from None
        _fsync_file(target)
        return _Converted(target, sha256_file(target), duration, actual)
