"""The corpus: the seeded sample families, the real benign files, and the corpus directory.

One room for what the models learn from: the generator that plans the families, draws their
samples, adds real benign files and writes and reads a corpus directory (`generator`: `Corpus`,
`make_corpus`, `load_corpus`), and its private builders: byte-level code, data and executable
containers (`_synth`), the string vocabularies by family (`_vocab`), the everyday benign data
(`_everyday`), package maintainer scripts (`_maintainer`) and the choice of real files from
directories (`_real`). The generator's public names are re-exported lazily (`agent.reexport`),
so `from model_store.corpus import Corpus` keeps working.
"""

from __future__ import annotations

from agent.reexport import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
