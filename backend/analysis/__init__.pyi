"""The names `backend.analysis` re-exports (for type checkers and `agent.reexport`)."""

from .export import (
    ExportResult as ExportResult,
    export as export,
)
from .labels import (
    ImportResult as ImportResult,
    LabelBook as LabelBook,
    LabelChange as LabelChange,
    LabelFileError as LabelFileError,
    LabelSink as LabelSink,
    LabelSource as LabelSource,
    LabelValue as LabelValue,
    import_labels as import_labels,
    parse_label_file as parse_label_file,
    parse_label_record as parse_label_record,
)
from .pages import (
    rescore_page as rescore_page,
    transition_page as transition_page,
    write_rescore_report as write_rescore_report,
    write_transition_report as write_transition_report,
)
from .rescore import (
    AsOfRule as AsOfRule,
    RescoreConfig as RescoreConfig,
    RescoreConfigError as RescoreConfigError,
    RescoreSummary as RescoreSummary,
    Stage as Stage,
    load_config as load_config,
    run_rescore as run_rescore,
)
from .spark import (
    predict_transition_spark as predict_transition_spark,
    run_rescore_spark as run_rescore_spark,
    spark_session as spark_session,
)
from .transition import (
    OrgTransition as OrgTransition,
    SweepPoint as SweepPoint,
    TransitionCheck as TransitionCheck,
    TransitionReport as TransitionReport,
    check_transition as check_transition,
    predict_from_shadow as predict_from_shadow,
    predict_transition as predict_transition,
)
from .transition_allowlist import (
    AllowlistCandidate as AllowlistCandidate,
    AllowlistConfig as AllowlistConfig,
    AllowlistDecision as AllowlistDecision,
    FlipEvidence as FlipEvidence,
    admit_flips as admit_flips,
    evidence_allowlist as evidence_allowlist,
    gather_flip_evidence as gather_flip_evidence,
)
