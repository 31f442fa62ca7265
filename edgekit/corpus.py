"""The English corpus edgekit ships for distillation: sentences from WordNet 3.0, with a fixed split.

A pruned encoder relearns what it lost from varied text, and a user should not have to bring any. The corpus
(``edgekit/data/corpus``, built by ``tools/make_corpus.py``) holds WordNet's example sentences and its glosses
turned into sentences. The split into train and evaluation is fixed by a hash of each sentence: distillation
trains on :func:`train_texts` only, and every fidelity estimate reads :func:`eval_texts`, so nothing is tuned on
the sentences it is judged on. Reading needs the standard library only (no torch, no numpy).
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import Any

from edgekit.errors import RuntimeUnavailableError

CORPUS_NAME = "wordnet-3.0"
TRAIN_FILE = "wordnet-train.txt.gz"
EVAL_FILE = "wordnet-eval.txt.gz"
LICENSE_FILE = "LICENSE-WordNet"


def train_texts() -> tuple[str, ...]:
    """The training split: what distillation may learn from."""
    return _read(TRAIN_FILE)


def eval_texts() -> tuple[str, ...]:
    """The evaluation split: what fidelity is measured on, never trained on."""
    return _read(EVAL_FILE)


def corpus_facts() -> dict[str, Any]:
    """Name and split sizes, for the manifest of a model distilled on the corpus."""
    return {"name": CORPUS_NAME, "train_texts": len(train_texts()), "eval_texts": len(eval_texts())}


@functools.cache
def _read(name: str) -> tuple[str, ...]:
    """One split's sentences, read once per process (a tuple, so no caller can change the cached copy)."""
    path = resources.files("edgekit").joinpath("data", "corpus", name)
    try:
        with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            return tuple(line.rstrip("\n") for line in f if line.strip())
    except FileNotFoundError as exc:
        missing = f"edgekit's corpus file {name} is missing from this install; reinstall edgekit"
        raise RuntimeUnavailableError(missing) from exc
