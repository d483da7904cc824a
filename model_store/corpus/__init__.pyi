"""The names `model_store.corpus` re-exports (for type checkers and `agent.reexport`)."""

from .generator import (
    FAMILIES as FAMILIES,
    FIELD_ONLY_FAMILIES as FIELD_ONLY_FAMILIES,
    N_INHOUSE as N_INHOUSE,
    REAL_FAMILY as REAL_FAMILY,
    SUPPLEMENT_FAMILIES as SUPPLEMENT_FAMILIES,
    Corpus as Corpus,
    Family as Family,
    SampleRecord as SampleRecord,
    load_corpus as load_corpus,
    make_corpus as make_corpus,
)
