"""A prompt sequence on one call: files played one after another, once (pure; no pjsua2).

The adapter owns the players; this owns the order. `next_file` gives the file to play next
(None when the sequence is over), `started(token)` records which player now plays it, and
`is_current(token)` tells whether an end-of-file report belongs to that player — a late one of
a player that was stopped (a new `play`, a `stop_playback`) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class Playback:
    play_id: int
    files: list[Path]
    next_index: int = 0
    token: int | None = field(default=None)  # the player now playing, None between files

    def next_file(self) -> Path | None:
        """The next file to play (and move past it), or None when all were played."""
        self.token = None
        if self.next_index >= len(self.files):
            return None
        path = self.files[self.next_index]
        self.next_index += 1
        return path

    def started(self, token: int) -> None:
        self.token = token

    def stopped(self) -> None:
        self.token = None

    def is_current(self, token: int) -> bool:
        return self.token is not None and self.token == token
