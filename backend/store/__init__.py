"""Open the backend's store from one string: a file path (SQLite) or a `postgresql://` URL.

SQLite stays the embedded default; PostgreSQL is for a backend that outgrew one machine
(DESIGN.md, "Growing past one machine"). Both classes have the same public methods and
semantics (`tests/backend/test_store_postgres.py` holds them equal), so callers take
`AnyStore` and never branch on which one they got.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeAlias

from backend.store import Store

if TYPE_CHECKING:
    from backend.store_pg import PostgresStore

__all__ = ["AnyStore", "open_store"]

AnyStore: TypeAlias = "Store | PostgresStore"


def open_store(target: str | os.PathLike[str], *, synchronous: str = "FULL") -> AnyStore:
    """The store at `target`: PostgreSQL for a `postgresql://` URL, else a SQLite file.

    `synchronous` applies to SQLite only (PostgreSQL commits durably by its own settings).
    psycopg is imported only for a URL, so a SQLite-only install needs no `[postgres]` extra.
    """
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        try:
            from backend.store_pg import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "a postgresql:// store needs psycopg: pip install 'fleetward[postgres]'"
            ) from exc
        return PostgresStore(target)
    return Store(target, synchronous=synchronous)
