"""The fleetward endpoint agent: features, the decision core, bundles, scanning.

The public names are re-exported lazily (`agent.reexport`): importing `agent.decision` does
not load the ONNX runtime that `agent.model` needs. Importing `agent` and any of its modules
pulls in no training, simulation or web code (`tests/test_layering.py`).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
