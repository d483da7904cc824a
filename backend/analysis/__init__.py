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

from agent.reexport import lazy_exports

# Eager: `export` is both a submodule and a function here; importing the submodule later
# must not replace the function (export.py imports pyarrow only when called).
from backend.analysis.export import ExportResult as ExportResult
from backend.analysis.export import export as export

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
