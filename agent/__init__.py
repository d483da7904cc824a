"""The fleetward endpoint agent: features, the decision core, bundles, scanning.

Importing `agent` pulls in numpy and onnxruntime and nothing heavier: no training, simulation
or web code (`tests/test_layering.py` checks this in a fresh interpreter).
"""

from agent.bundle import Manifest, Thresholds, read_manifest
from agent.decision import Decision, DecisionContext, Mode, Reason, Verdict, decide
from agent.errors import AgentError, BundleRejectedError, SelfTestError
from agent.features import FEATURE_NAMES, SCHEMA, VECTOR_LENGTH, extract_features, extract_file
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
