"""Lazy re-exports for package `__init__` files (PEP 562), so one submodule stays light.

Importing `agent.decision` runs `agent/__init__.py` first; were the package's public names
imported there eagerly, every submodule would load with it (onnxruntime for `agent.model`,
httpx for `agent.telemetry.client`). The backend's store and the simulator's fold writer
need only the light modules, so `agent`, `agent.telemetry`, `backend` and `backend.analysis`
name their re-exports here and import each defining submodule on first use of one of its
names. Each package still lists the same names under `TYPE_CHECKING` for the type checker;
`tests/test_imports.py` checks the two lists agree and that the light imports stay light.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["lazy_reexport"]


def lazy_reexport(package: str, sources: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports `sources` (module -> names) lazily.

    The first access to a name imports its module and binds the name in the package, so later
    accesses are plain attribute reads. An unknown name raises `AttributeError`, which lets
    `from package import submodule` fall through to importing the submodule.
    """
    module_of = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> object:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
