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

from collections.abc import Callable, Mapping, Sequence

import lazy_loader

__all__ = ["lazy_reexport"]


def lazy_reexport(package: str, sources: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports `sources` (module -> names) lazily.

    `lazy_loader.attach` (SPEC 1) does the work; the table names each defining module in full,
    as the package's `TYPE_CHECKING` imports do (`tests/test_imports.py` compares the two). The
    first access to a name imports its module; an unknown name raises `AttributeError`, which
    lets `from package import submodule` fall through to importing the submodule.

    Raises:
        ValueError: a source module is not inside `package`.
    """
    prefix = f"{package}."
    relative: dict[str, list[str]] = {}
    for module, names in sources.items():
        if not module.startswith(prefix):
            raise ValueError(f"{module} is not a module of {package}")
        relative[module.removeprefix(prefix)] = list(names)
    getattr_, _, _ = lazy_loader.attach(package, submod_attrs=relative)
    return getattr_  # type: ignore[no-any-return]
