"""The fleetward endpoint agent: features, the decision core, bundles, scanning.

The public names are re-exported lazily (`agent.reexport`): importing `agent.decision` does
not load the ONNX runtime that `agent.model` needs. Importing `agent` and any of its modules
pulls in no training, simulation or web code (`tests/test_layering.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

if TYPE_CHECKING:
    from agent.bundle import Manifest, Thresholds, read_manifest
    from agent.decision import Decision, DecisionContext, Mode, Reason, Verdict, decide
    from agent.errors import AgentError, BundleRejectedError, SelfTestError
    from agent.features import (
        FEATURE_NAMES,
        SCHEMA,
        VECTOR_LENGTH,
        extract_features,
        extract_file,
    )
    from agent.model import LoadedModel, ONNXScorer, load_bundle

__all__ = [
    "FEATURE_NAMES",
    "SCHEMA",
    "VECTOR_LENGTH",
    "AgentError",
    "BundleRejectedError",
    "Decision",
    "DecisionContext",
    "LoadedModel",
    "Manifest",
    "Mode",
    "ONNXScorer",
    "Reason",
    "SelfTestError",
    "Thresholds",
    "Verdict",
    "decide",
    "extract_features",
    "extract_file",
    "load_bundle",
    "read_manifest",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "agent.bundle": ["Manifest", "Thresholds", "read_manifest"],
        "agent.decision": [
            "Decision",
            "DecisionContext",
            "Mode",
            "Reason",
            "Verdict",
            "decide",
        ],
        "agent.errors": ["AgentError", "BundleRejectedError", "SelfTestError"],
        "agent.features": [
            "FEATURE_NAMES",
            "SCHEMA",
            "VECTOR_LENGTH",
            "extract_features",
            "extract_file",
        ],
        "agent.model": ["LoadedModel", "ONNXScorer", "load_bundle"],
    },
)
