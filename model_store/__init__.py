"""The model store: the synthetic corpus, training, calibration and the update repository.

This is the producer (signing) side; `agent` never imports it. Split by role, so each
behaviour has one room:
- `train` (training, calibration, ONNX export and bundling), `cli` (`fleetward corpus ...`,
  `fleetward model ...`), `errors`, `_clock`;
- `corpus/`: what the models learn from, the seeded synthetic families and the real benign
  files, written to and read from a corpus directory;
- `gate/`: the release gate a bundle passes before it is signed, its judgement, the golden set
  and scores it judges, and its report;
- `repository/`: the signed TUF update repository (keys, metadata, publishing, rotation) and
  `fleetward repo ...`.
"""

from model_store.corpus import Corpus, SampleRecord, load_corpus, make_corpus
from model_store.errors import CorpusError, GateRefusedError, ModelStoreError, TrainingError
from model_store.gate import GateCheck, GateConfig, GateReport, GoldenSet, load_golden, run_gate
from model_store.train import TrainConfig, TrainResult, recipe_for_version, train_model

__all__ = [
    "Corpus",
    "CorpusError",
    "GateCheck",
    "GateConfig",
    "GateRefusedError",
    "GateReport",
    "GoldenSet",
    "ModelStoreError",
    "SampleRecord",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "load_corpus",
    "load_golden",
    "make_corpus",
    "recipe_for_version",
    "run_gate",
    "train_model",
]
