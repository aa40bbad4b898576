"""Importing the configuration file's receptionists and prompt files into a store that was
never seeded (after that, the API is the source of truth)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from engine.files import sha256_file
from engine.model import Receptionist
from engine.store.catalog import MEDIA_TYPE_WAV
from engine.store.db import now_text
from engine.store.interface import StoreBackend
from engine.store.objects import FileInfo

log = logging.getLogger(__name__)


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
