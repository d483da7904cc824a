"""Lazy re-exports for package `__init__` files (PEP 562), so one submodule stays light.

Importing `agent.decision` runs `agent/__init__.py` first; were the package's public names
imported there eagerly, every submodule would load with it (onnxruntime for `agent.model`,
httpx for `agent.telemetry.client`). The backend's store and the simulator's fold writer
need only the light modules, so the packages that re-export (`agent` and its rooms, `backend`,
`backend.server`, `backend.analysis`, `model_store`'s and `fleet_sim`'s rooms) name their
exports once, in an
`__init__.pyi` stub beside the `__init__.py` (`from .module import Name as Name`): type
checkers read it, and `lazy_loader.attach_stub` (SPEC 1) turns it into a module `__getattr__`
that imports a defining module on first use of one of its names. `tests/test_imports.py`
checks that the light imports stay light.
"""

from __future__ import annotations

from collections.abc import Callable

import lazy_loader

__all__ = ["export_order", "lazy_exports"]


def export_order(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order of `__all__`: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package` from the stub beside `init_file`.

    An unknown name raises `AttributeError`, which lets `from package import submodule` fall
    through to importing the submodule. `__all__` comes in RUF022 order (`export_order`).

    Raises:
        ValueError: no `__init__.pyi` beside `init_file`, or it imports from outside `package`.
    """
    getattr_, dir_, names = lazy_loader.attach_stub(package, init_file)
    return getattr_, dir_, sorted(names, key=export_order)
