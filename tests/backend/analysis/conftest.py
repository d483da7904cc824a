"""Analysis test fixtures: the shared history built under both extremes of the pseudonym draw."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import backend.store.sqlite as sqlite_store
from model_store.corpus import Corpus
from tests.backend.history import History, build_history
from tests.pseudonyms import CountingIds


@pytest.fixture(scope="module")
def twins(
    small_corpus: Corpus, bundles: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[int, History]]:
    """The shared history built twice: org pseudonyms drawn up (in creation order) and down."""
    got = {}
    for step in (1, -1):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sqlite_store, "secrets", CountingIds(step))
            got[step] = build_history(tmp_path_factory.mktemp(f"ids{step}"), small_corpus, bundles)
    yield got
    for h in got.values():
        h.store.close()
