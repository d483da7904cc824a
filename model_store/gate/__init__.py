"""The release gate: what a candidate bundle must pass before it is signed.

One room for the gate, split as pure core and thin shell: the judgement, pure checks over what
the candidate did on the golden set (`judgement`: `GateConfig`, `judge`, `GateReport`), the I/O
that gathers it, the golden set read from a corpus, the bundles scored and the backend asked for
the per-org surge (`run`: `load_golden`, `run_gate`, `backend_surge_predictor`), and the report
rendered as HTML and JSON (`report`). Signing, which runs the gate first, is
`model_store.repository`. Names are re-exported lazily (`agent.reexport`).
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
