"""Analysis over the stored aggregates: golden labels, rescoring, transition reports, export.

`labels` keeps the golden-label history; `rescore` re-runs feature extraction, scoring and the
agent's own decision over history as of each sample's time; `transition` predicts the
false-positive surge of a model version change (with `transition_columns`, its columnar reader,
and `transition_allowlist`, the mitigation); `export` writes the store as Parquet for `spark`,
which runs rescoring and transitions as PySpark jobs over the same functions. The HTML pages
are drawn with `backend.report`; the `fleetward rescore | transition | labels | export`
commands are `backend.analysis.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.reexport import lazy_reexport

# Eager: `export` is both a submodule and a function here; importing the submodule later
# must not replace the function (export.py imports pyarrow only when called).
from backend.analysis.export import ExportResult, export

if TYPE_CHECKING:
    from backend.analysis.labels import (
        ImportResult,
        LabelBook,
        LabelChange,
        LabelFileError,
        LabelSink,
        LabelSource,
        LabelValue,
        import_labels,
        parse_label_file,
        parse_label_record,
    )
    from backend.analysis.pages import (
        rescore_page,
        transition_page,
        write_rescore_report,
        write_transition_report,
    )
    from backend.analysis.rescore import (
        AsOfRule,
        RescoreConfig,
        RescoreConfigError,
        RescoreSummary,
        Stage,
        load_config,
        run_rescore,
    )
    from backend.analysis.spark import (
        predict_transition_spark,
        run_rescore_spark,
        spark_session,
    )
    from backend.analysis.transition import (
        OrgTransition,
        SweepPoint,
        TransitionCheck,
        TransitionReport,
        check_transition,
        predict_from_shadow,
        predict_transition,
    )
    from backend.analysis.transition_allowlist import (
        AllowlistCandidate,
        AllowlistConfig,
        AllowlistDecision,
        FlipEvidence,
        admit_flips,
        evidence_allowlist,
        gather_flip_evidence,
    )

__all__ = [
    "AllowlistCandidate",
    "AllowlistConfig",
    "AllowlistDecision",
    "AsOfRule",
    "ExportResult",
    "FlipEvidence",
    "ImportResult",
    "LabelBook",
    "LabelChange",
    "LabelFileError",
    "LabelSink",
    "LabelSource",
    "LabelValue",
    "OrgTransition",
    "RescoreConfig",
    "RescoreConfigError",
    "RescoreSummary",
    "Stage",
    "SweepPoint",
    "TransitionCheck",
    "TransitionReport",
    "admit_flips",
    "check_transition",
    "evidence_allowlist",
    "export",
    "gather_flip_evidence",
    "import_labels",
    "load_config",
    "parse_label_file",
    "parse_label_record",
    "predict_from_shadow",
    "predict_transition",
    "predict_transition_spark",
    "rescore_page",
    "run_rescore",
    "run_rescore_spark",
    "spark_session",
    "transition_page",
    "write_rescore_report",
    "write_transition_report",
]

__getattr__ = lazy_reexport(
    __name__,
    {
        "backend.analysis.labels": [
            "ImportResult",
            "LabelBook",
            "LabelChange",
            "LabelFileError",
            "LabelSink",
            "LabelSource",
            "LabelValue",
            "import_labels",
            "parse_label_file",
            "parse_label_record",
        ],
        "backend.analysis.pages": [
            "rescore_page",
            "transition_page",
            "write_rescore_report",
            "write_transition_report",
        ],
        "backend.analysis.rescore": [
            "AsOfRule",
            "RescoreConfig",
            "RescoreConfigError",
            "RescoreSummary",
            "Stage",
            "load_config",
            "run_rescore",
        ],
        "backend.analysis.spark": [
            "predict_transition_spark",
            "run_rescore_spark",
            "spark_session",
        ],
        "backend.analysis.transition": [
            "OrgTransition",
            "SweepPoint",
            "TransitionCheck",
            "TransitionReport",
            "check_transition",
            "predict_from_shadow",
            "predict_transition",
        ],
        "backend.analysis.transition_allowlist": [
            "AllowlistCandidate",
            "AllowlistConfig",
            "AllowlistDecision",
            "FlipEvidence",
            "admit_flips",
            "evidence_allowlist",
            "gather_flip_evidence",
        ],
    },
)
