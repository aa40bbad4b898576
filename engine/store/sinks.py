"""The runtime's sinks backed by the store: call records and DISA state, written on the
store's worker thread so the event loop never waits for an fsync."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from engine.records import CallRecord, CallRecords
from engine.store.interface import StoreBackend

log = logging.getLogger(__name__)


class StoreCallRecords(CallRecords):
    """The runtime's record sink, backed by the store: `write` keeps the record in memory and
    queues its insert on the store's thread (the loop never waits for the fsync); `recent` and
    `total` start from what the store holds. Keeps at most `max_stored` records on disk."""

    def __init__(self, store: StoreBackend, keep: int = 1000, max_stored: int = 100_000) -> None:
        super().__init__(None, keep)
        self.store = store
        self.max_stored = max_stored
        self.recent.extend(store.recent_call_records(keep))
        self.total = store.call_record_count()
        self._since_prune = 0

    def write(self, record: CallRecord) -> None:
        document = record.document()
        self.recent.append(document)
        self.total += 1
        self._since_prune += 1
        try:
            future = self.store.submit(self.store.add_call_record, document)
            future.add_done_callback(_log_failure)
            if self._since_prune >= 1000:
                self._since_prune = 0
                self.store.submit(self.store.prune_call_records, self.max_stored).add_done_callback(
                    _log_failure
                )
        except RuntimeError:  # the store's thread is shut down
            log.error("call record %s not stored: the store is closed", record.session_id)


class StoreDisaSink:
    """Persists DISA failed calls and lock-outs on the store's thread (the loop never waits).

    At start, `store.disa_lockouts(now)` and `store.disa_failures(now - failure_window)` give
    back what was recorded before a restart."""

    def __init__(self, store: StoreBackend) -> None:
        self.store = store

    def failure(self, key: str, at: float) -> None:
        self._submit(self.store.add_disa_failure, key, at)

    def locked(self, key: str, until: float) -> None:
        self._submit(self.store.put_disa_lockout, key, until)

    def _submit(self, fn: Callable[[str, float], None], key: str, value: float) -> None:
        try:
            self.store.submit(fn, key, value).add_done_callback(_log_failure)
        except RuntimeError:
            log.error("DISA state for %s not stored: the store is closed", key)


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        log.error("store write failed: %s", error)
