"""The data ``edgekit convert`` prunes and distils on: edgekit's corpus, the user's data, or both mixed.

A text model (one with a tokenizer) always has data: the bundled corpus (:mod:`edgekit.corpus`). Its train
split feeds distillation and data-aware importance; its evaluation split, plus the held-back share of the
user's data, is what every fidelity estimate here reads (the early stop, the before/after numbers in the
manifest). Nothing is judged on a sentence it was trained on. A model without a tokenizer distils on the
user's data only (``--distill-data``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import TOKENIZER_FILE
from edgekit.errors import ExportError, InputError

if TYPE_CHECKING:
    import torch

    from edgekit.sources import LoadedSource
    from edgekit.specs import TensorSpec

Feeds = dict[str, np.ndarray]
CORPUS_EVAL_TEXTS = 256  # held-out corpus sentences: enough for recall@10 (200), one quick pass per evaluation
USER_HELDOUT_MAX = 256
IMPORTANCE_SAMPLES = 256  # rows that data-aware importance reads: activations settle well before this


@dataclass
class CompressData:
    """Rows (one sample each, batch axis 1) to train on and to judge on, and where they came from."""

    train: list[Feeds]
    heldout: list[Feeds]
    facts: dict[str, Any] = field(default_factory=dict)

    def importance_batches(self, size: int = 16) -> Iterator[dict[str, torch.Tensor]]:
        """The first train rows as padded torch batches, for data-aware pruning importance."""
        from edgekit.converters.distill.data import collate, rows_from

        rows = rows_from(self.train[:IMPORTANCE_SAMPLES], "importance data")
        for start in range(0, len(rows), size):
            yield collate(rows[start : start + size]).feeds


def compress_data(
    src: LoadedSource, user_data: str | Path | None, corpus_texts: int, *, use_corpus: bool = True
) -> CompressData | None:
    """Train and held-out rows for ``src``: corpus (text models, ``use_corpus``) plus the user's data.

    None when there is nothing to read: a model without a tokenizer and no user data.
    """
    from edgekit.converters.distill.data import specs_from_examples

    assert src.example_inputs is not None
    specs = specs_from_examples(src.example_inputs, src.dynamic_dims)
    tokenizer = src.extra_files.get(TOKENIZER_FILE)
    train: list[Feeds] = []
    heldout: list[Feeds] = []
    facts: dict[str, Any] = {}
    if tokenizer is not None and use_corpus:
        train, heldout, facts["corpus"] = _corpus_rows(tokenizer, specs, corpus_texts)
    if user_data is not None:
        user_train, user_heldout = _user_rows(user_data, specs, tokenizer)
        train, heldout = _mixed(train, user_train), heldout + user_heldout
        facts["user_data"] = {"source": str(user_data), "train": len(user_train), "heldout": len(user_heldout)}
    if not train:
        return None
    facts.update(train_samples=len(train), heldout_samples=len(heldout))
    return CompressData(train, heldout, facts)


def _corpus_rows(tokenizer: Path, specs: Sequence[TensorSpec], n: int) -> tuple[list[Feeds], list[Feeds], dict]:
    """The first ``n`` train sentences (the file is in hash order: a fixed, unbiased sample) and eval ones."""
    from edgekit import corpus
    from edgekit.text import TextEncoder

    if n < 1:
        raise InputError(f"--distill-texts must be at least 1, got {n}")
    encoder = TextEncoder(tokenizer, specs)
    train_texts, eval_texts = corpus.train_texts()[:n], corpus.eval_texts()[:CORPUS_EVAL_TEXTS]
    train = [encoder.feeds([e]) for e in encoder.encodings(train_texts)]
    heldout = [encoder.feeds([e]) for e in encoder.encodings(eval_texts)]
    facts = {**corpus.corpus_facts(), "train_used": len(train), "eval_used": len(heldout)}
    return train, heldout, facts


def _user_rows(path: str | Path, specs: Sequence[TensorSpec], tokenizer: Path | None) -> tuple[list, list]:
    """The user's samples, a seeded fifth (at most 256) held back for fidelity, the rest to train on."""
    from edgekit.converters.distill.data import rows_from_path

    rows = rows_from_path(path, specs, tokenizer)
    if len(rows) < 2:
        raise InputError(f"distillation data {path} has {len(rows)} sample(s); need at least 2")
    order = np.random.default_rng(0).permutation(len(rows))
    n_held = max(1, min(len(rows) // 5, USER_HELDOUT_MAX))
    return [rows[i] for i in order[n_held:]], [rows[i] for i in order[:n_held]]


def _mixed(corpus_rows: list[Feeds], user_rows: list[Feeds]) -> list[Feeds]:
    """User rows spread evenly through the corpus rows, so even the first batches (importance) see both."""
    if not corpus_rows or not user_rows:
        return corpus_rows + user_rows
    rows = [(i / len(corpus_rows), 0, r) for i, r in enumerate(corpus_rows)]
    rows += [(i / len(user_rows), 1, r) for i, r in enumerate(user_rows)]
    return [r for _, _, r in sorted(rows, key=lambda x: (x[0], x[1]))]


def heldout_fidelity(
    teacher: Any, student: Any, rows: Sequence[Feeds], names: Sequence[str], *, embedding: bool,
    ks: Sequence[int] = (10,),
) -> dict[str, Any]:  # fmt: skip
    """Mean and min cosine of the student's first output to the teacher's on held-out rows, with recall@10 and
    Spearman for an embedding and a set large enough; what the manifest reports before and after distillation."""
    from edgekit.converters.distill.data import collate, rows_from
    from edgekit.converters.torch_io import run_torch, to_numpy_feeds
    from edgekit.fidelity import sample_cosines
    from edgekit.retrieval import retrieval_metrics

    if not rows:
        return {}
    torch_rows = rows_from(list(rows), "held-out data")
    ref: list[np.ndarray] = []
    got: list[np.ndarray] = []
    for start in range(0, len(torch_rows), 32):
        feeds = to_numpy_feeds(collate(torch_rows[start : start + 32]).feeds)
        ref.append(run_torch(teacher, feeds, names)[names[0]])
        got.append(run_torch(student, feeds, names)[names[0]])
    a, b = np.concatenate(ref), np.concatenate(got)
    cos = sample_cosines(a, b)
    out: dict[str, Any] = {"output": names[0], "samples": len(cos), "mean_cosine": float(cos.mean()),
                           "min_cosine": float(cos.min())}  # fmt: skip
    if embedding and a.ndim == 2:
        out.update(retrieval_metrics(a, b, ks))
    return out


@dataclass(frozen=True)
class OriginalOnHeldout:
    """The original model and the held-out rows, kept from before pruning: what ships is judged against the
    model the user started from, not only against the pruned one the quantize gate compares with."""

    module: Any
    rows: list[Feeds]
    names: list[str]

    def outputs(self) -> list[dict[str, np.ndarray]] | None:
        """The original's outputs on each row (None when its output count is unknown for this source)."""
        from edgekit.converters.torch_io import run_torch
        from edgekit.fidelity import run_all

        try:
            return run_all(lambda feeds: run_torch(self.module, feeds, self.names), self.rows)
        except ExportError:
            return None


def original_on_heldout(original: Any, data: CompressData | None, names: Sequence[str]) -> OriginalOnHeldout | None:
    """The original model with ``data``'s held-out rows (None without any); it runs only once a variant ships."""
    if data is None or not data.heldout:
        return None
    return OriginalOnHeldout(original, list(data.heldout), list(names))


def shipped_fidelity(
    artifact: Path, variants: dict[str, str], original: OriginalOnHeldout, kinds: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per target, the model file it loads judged on that runtime against the original on the held-out rows: the
    whole chain (prune, distill, quantize) in one number per metric."""
    from edgekit.fidelity import fidelity_metrics, run_all
    from edgekit.runtimes.loading import load, model_ref

    reference = original.outputs()
    if reference is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for target, file in variants.items():
        with load(model_ref(artifact / file), target=target) as session:
            got = run_all(session.run, original.rows)
        out[target] = {"file": file, **fidelity_metrics(reference, got, kinds)}
    return out
