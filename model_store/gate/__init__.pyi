"""The names `model_store.gate` re-exports (for type checkers and `agent.reexport`)."""

from .judgement import (
    CHECKS as CHECKS,
    CanaryFacts as CanaryFacts,
    GateCheck as GateCheck,
    GateConfig as GateConfig,
    GateInputs as GateInputs,
    GateReport as GateReport,
    GoldenLabels as GoldenLabels,
    ModelScores as ModelScores,
    PairStats as PairStats,
    SchemaFacts as SchemaFacts,
    ScoreHistogram as ScoreHistogram,
    check_schema as check_schema,
    judge as judge,
    ks_statistic as ks_statistic,
    negative_flip_rate as negative_flip_rate,
    surge_pairs as surge_pairs,
)
from .report import (
    HTML_NAME as HTML_NAME,
    JSON_NAME as JSON_NAME,
    render_html as render_html,
    write_gate_report as write_gate_report,
)
from .run import (
    GOLDEN_SPLIT as GOLDEN_SPLIT,
    GoldenSet as GoldenSet,
    SurgePredictor as SurgePredictor,
    backend_surge_predictor as backend_surge_predictor,
    load_golden as load_golden,
    run_gate as run_gate,
)
