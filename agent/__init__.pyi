"""The names `agent` re-exports (for type checkers and `agent.reexport`)."""

from .bundle import (
    Manifest as Manifest,
    Thresholds as Thresholds,
    read_manifest as read_manifest,
)
from .decision import (
    Decision as Decision,
    DecisionContext as DecisionContext,
    Mode as Mode,
    Reason as Reason,
    Verdict as Verdict,
    decide as decide,
)
from .errors import (
    AgentError as AgentError,
    BundleRejectedError as BundleRejectedError,
    SelfTestError as SelfTestError,
)
from .features import (
    FEATURE_NAMES as FEATURE_NAMES,
    SCHEMA as SCHEMA,
    VECTOR_LENGTH as VECTOR_LENGTH,
    extract_features as extract_features,
    extract_file as extract_file,
)
from .model import (
    LoadedModel as LoadedModel,
    ONNXScorer as ONNXScorer,
    load_bundle as load_bundle,
)
