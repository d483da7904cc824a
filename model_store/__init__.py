"""The model store: the synthetic corpus, training, calibration and the update repository.

This is the producer (signing) side; `agent` never imports it.
"""

from model_store.corpus import Corpus, SampleRecord, load_corpus, make_corpus
from model_store.errors import CorpusError, GateRefusedError, ModelStoreError, TrainingError
from model_store.gate import GateCheck, GateConfig, GateReport
from model_store.release import GoldenSet, load_golden, run_gate
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
