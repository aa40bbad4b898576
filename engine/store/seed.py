"""Importing the configuration file's receptionists and prompt files into a store that was
never seeded (after that, the API is the source of truth)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.files import sha256_file
from engine.model import Receptionist
from engine.store.catalog import MEDIA_TYPE_WAV
from engine.store.db import now_text
from engine.store.interface import StoreBackend
from engine.store.objects import FileInfo
from engine.validation import field_path

log = logging.getLogger(__name__)


def configured_file_id(digest: str) -> str:
    """The file id seeding gives a prompt file of the configuration (from its SHA-256)."""
    return f"cfg-{digest[:24]}"


def receptionist_snapshot(store: StoreBackend) -> dict[str, Receptionist]:
    """Every stored receptionist by extension number, for `Runtime.apply`."""
    return store.snapshot().receptionists


def _wav_duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0


def seed_from_config(
    store: StoreBackend, receptionists: Mapping[str, Receptionist], files: Mapping[str, Path]
) -> bool:
    """Import the configuration's receptionists into a store that was never seeded.

    `receptionists` and `files` are what `engine.server.prepare_prompt_files` returns: the
    configured receptionists with their prompt paths already turned into file ids, and those
    ids' converted WAVs. Once a store was seeded (even with nothing), the API is the source of
    truth and this does nothing. Returns whether it imported."""
    if store.seeded:
        return False
    stamp = now_text()
    infos = [
        FileInfo(
            id=file_id,
            digest=sha256_file(path),
            name=path.name,
            size=path.stat().st_size,
            duration=_wav_duration(path),
            media_type=MEDIA_TYPE_WAV,
            path=path,
            created_at=stamp,
        )
        for file_id, path in files.items()
    ]
    seeded = store.seed(list(receptionists.values()), infos)
    if seeded:
        log.info(
            "store %s seeded with %d receptionist(s) and %d prompt file(s) from the configuration",
            store.path,
            len(receptionists),
            len(infos),
        )
    return seeded


# Not compared: the PIN (the file's is hashed with a new salt at every load; only hashes are
# kept) and secrets (shown masked by the model); prompt files are compared by content.
# Ids are given by the store.
_NOT_COMPARED: dict[str, Any] = {
    "id": True,
    "pin": True,
    "prompt_file": True,
    "transfer_prompt_file": True,
    "action_urls": {"__all__": {"id"}},
}
_PROMPTS = (("prompt_file", "prompt_file_id"), ("transfer_prompt_file", "transfer_prompt_file_id"))
MAX_PATHS = 6


def _differing_paths(a: Any, b: Any, at: tuple[int | str, ...]) -> list[tuple[int | str, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            path
            for key in sorted(set(a) | set(b), key=str)
            for path in _differing_paths(a.get(key), b.get(key), (*at, key))
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            path
            for index, (x, y) in enumerate(zip(a, b, strict=True))
            for path in _differing_paths(x, y, (*at, index))
        ]
    return [] if a == b else [at]


def seeding_differences(
    configured: Sequence[Receptionist], base: Path, stored: Mapping[str, Receptionist]
) -> list[str]:
    """How the configuration file's receptionists differ from those of a data directory that
    was seeded before (which is what gets served): one line per receptionist of the file that
    is missing or different, naming its fields (`ivrs[0] (extension 800): dtmf_interval, …`).

    A configured prompt file is compared by content with the stored one; receptionists that
    exist only in the data directory (created through the API) are not differences."""
    lines: list[str] = []
    for index, ivr in enumerate(configured):
        where = f"ivrs[{index}] (extension {ivr.extension_number})"
        current = stored.get(ivr.extension_number)
        if current is None:
            lines.append(f"{where}: not in the data directory (deleted through the API?)")
            continue
        mine = ivr.model_dump(mode="json", exclude=_NOT_COMPARED)
        theirs = current.model_dump(mode="json", exclude=_NOT_COMPARED)
        named_by_path: dict[str, str] = {}  # a prompt's id field → the path field given
        for path_field, id_field in _PROMPTS:
            value = getattr(ivr, path_field, None)
            if isinstance(value, str) and value:
                source = base / value
                mine[id_field] = (
                    configured_file_id(sha256_file(source)) if source.is_file() else value
                )
                named_by_path[id_field] = path_field
        paths = [field_path(p) for p in _differing_paths(mine, theirs, ())]
        paths = [named_by_path.get(path, path) for path in paths]
        if paths:
            shown = ", ".join(paths[:MAX_PATHS])
            more = f" and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else ""
            lines.append(f"{where}: {shown}{more}")
    return lines
