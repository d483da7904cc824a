"""The backend's store: one Protocol, a SQLite and a PostgreSQL implementation, one opener.

SQLite stays the embedded default; PostgreSQL is for a backend that outgrew one machine
(DESIGN.md, "Growing past one machine"). `AggregateStore` names every public operation; both
classes implement all of it with the same semantics (`tests/backend/store/test_store_postgres.py`
runs one suite over both), so callers take an `AggregateStore` and never branch on which one
they got. `open_store` picks the dialect from one string.

- `_base`: what both share (result types, token hashing, the policy compare-and-set);
- `_encoded`: aggregate rows as integer codes into small tables (`Store.ingest_encoded`);
- `sqlite`: `Store`, the only module that speaks SQLite's SQL;
- `postgres`: `PostgresStore` over psycopg 3 (imported only for a `postgresql://` URL).

Decision record: docs/adr/0005-one-store-protocol.md.
"""

from __future__ import annotations

import os
from typing import TypeAlias

from backend.store._base import (
    AggregateColumns,
    EndpointCredentials,
    EnrollToken,
    IngestResult,
    OrgCreated,
    PolicyRecord,
    Principal,
    Publish,
    StoreStats,
    TokenInfo,
    TokenKind,
    hash_token,
    is_postgres_url,
    token_id_of,
)
from backend.store._encoded import EncodedAggregates
from backend.store._protocol import AggregateStore
from backend.store.sqlite import Store

__all__ = [
    "AggregateColumns",
    "AggregateStore",
    "AnyStore",
    "EncodedAggregates",
    "EndpointCredentials",
    "EnrollToken",
    "IngestResult",
    "OrgCreated",
    "PolicyRecord",
    "Principal",
    "Publish",
    "Store",
    "StoreStats",
    "TokenInfo",
    "TokenKind",
    "hash_token",
    "is_postgres_url",
    "open_store",
    "token_id_of",
]

AnyStore: TypeAlias = AggregateStore  # the name callers used before the Protocol


def open_store(target: str | os.PathLike[str], *, synchronous: str = "FULL") -> AggregateStore:
    """The store at `target`: PostgreSQL for a `postgresql://` URL, else a SQLite file.

    `synchronous` applies to SQLite only (PostgreSQL commits durably by its own settings).
    psycopg is imported only for a URL, so a SQLite-only install needs no `[postgres]` extra.

    Raises:
        RuntimeError: a URL was given but psycopg is not installed.
    """
    if is_postgres_url(target):
        try:
            from backend.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "a postgresql:// store needs psycopg: pip install 'fleetward[postgres]'"
            ) from exc
        assert isinstance(target, str)
        return PostgresStore(target)
    return Store(target, synchronous=synchronous)


def __getattr__(name: str) -> object:
    """`PostgresStore` on first use, so importing the package never needs psycopg."""
    if name == "PostgresStore":
        from backend.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
