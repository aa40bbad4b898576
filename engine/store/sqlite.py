"""The SQLite store of one data directory: the catalog and the journal on one connection."""

from __future__ import annotations

from engine.store.catalog import Catalog
from engine.store.journal import Journal


class Store(Catalog, Journal):
    """The SQLite store of one data directory (see `engine.store`). Thread-safe."""
