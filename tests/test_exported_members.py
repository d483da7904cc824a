"""Every module declares a sorted `__all__` whose names exist (the httpx habit)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["agent", "model_store", "backend", "fleet_sim", "fleetward"]


def _modules():
    for name in PACKAGES:
        try:
            pkg = importlib.import_module(name)
        except ImportError:
            continue
        yield pkg.__name__
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            if info.name.endswith("__main__"):
                continue
            yield info.name


def _isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_all_is_declared_sorted_and_complete(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} declares no __all__"
    assert list(exported) == sorted(exported, key=_isort_key), f"{module}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names missing attributes: {missing}"
