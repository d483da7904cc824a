"""Fleet-sim fixtures: a data directory holding the session's small corpus and v1/v2 bundles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


@pytest.fixture(scope="session")
def sim_data(small_corpus, bundles, tmp_path_factory) -> Path:
    """A `--data` directory (corpus/ and bundles/v1, v2) linking the session's assets."""
    root = tmp_path_factory.mktemp("simdata")
    os.symlink(small_corpus.root, root / "corpus")
    (root / "bundles").mkdir()
    for v, path in bundles.items():
        os.symlink(path, root / "bundles" / f"v{v}")
    return root


@pytest.fixture(scope="session")
def sim_bundles(bundles) -> dict[str, Path]:
    return {f"v{v}": p for v, p in bundles.items()}
