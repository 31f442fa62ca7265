"""Retrieval-grade fidelity for embeddings: do search results survive compression, not only the vectors?

A cosine of 0.99 to the reference per vector says little about search: a small error that is the same in every
vector leaves every ranking intact, while a smaller one that differs from text to text can swap neighbours.
So embedding outputs are also judged by what a user's search sees, each model in its own space:

- ``recall@k``: a text's neighbours are the ``k`` most cosine-similar *other* texts of the set (itself
  excluded); recall@k is ``|N_model ∩ N_reference| / k``, averaged over texts;
- ``spearman``: the rank correlation of the pairwise cosine similarities over all pairs ``i < j`` (ties take
  their average rank), i.e. whether the model orders every pair the way the reference does.

Both need a set of texts, not one: below ``k + 1`` texts recall@k is undefined (an InputError), and below
:data:`RETRIEVAL_MIN_TEXTS` it is reported with its ``retrieval_texts`` count but is a coarse number (with 50
texts, 10 neighbours are a fifth of the set). numpy only, vectorised, ``O(n²)`` memory: fine for a few
thousand texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from edgekit.errors import InputError

DEFAULT_K = 10
# Below this many texts the neighbours of a text are a large share of the whole set (10 of 200 is 5%), so
# recall@10 stops measuring *nearest* neighbours; edgekit's held-back sets are sized to reach it.
RETRIEVAL_MIN_TEXTS = 200
SPEARMAN = "spearman"
TEXTS_KEY = "retrieval_texts"  # how many texts the retrieval metrics were computed over
_RECALL = re.compile(r"^recall@([1-9][0-9]*)$")


def recall_name(k: int) -> str:
    return f"recall@{k}"


def recall_k(metric: str) -> int | None:
    """``k`` of a ``recall@k`` metric name, else None."""
    match = _RECALL.match(metric)
    return int(match.group(1)) if match else None


def recall_ks(metrics: Iterable[str]) -> tuple[int, ...]:
    """The ``k`` of every recall metric named, and :data:`DEFAULT_K` (recall@10 is always reported)."""
    return tuple(sorted({DEFAULT_K, *(k for m in metrics if (k := recall_k(m)) is not None)}))


def is_retrieval_metric(metric: str) -> bool:
    """Whether ``metric`` judges a set of embeddings (needs an ``embedding`` output and enough texts)."""
    return metric == SPEARMAN or recall_k(metric) is not None


def kind_needed(metric: str) -> str | None:
    """``"an embedding"`` (the output kind, with its article) for a retrieval metric: the others judge any output."""
    return "an embedding" if is_retrieval_metric(metric) else None


def texts_needed(metric: str) -> int:
    """The fewest texts a retrieval metric is defined on: ``k + 1`` for recall@k, 3 (two pairs) for Spearman."""
    k = recall_k(metric)
    return k + 1 if k is not None else 3


def check_enough_texts(metric: str, n: int) -> None:
    """One-line InputError when ``n`` texts are too few for ``metric`` (any other metric needs no set)."""
    if not is_retrieval_metric(metric):
        return
    need = texts_needed(metric)
    if n < need:
        why = f"each text's {need - 1} neighbours are other texts" if metric != SPEARMAN else "it ranks pairs"
        raise InputError(f"{metric} needs at least {need} held-back texts ({why}), got {n}")


def _rows(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)


def similarities(x: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``x`` (each row flattened); a zero row is 0 to everything."""
    rows = _rows(x)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return np.nan_to_num(unit @ unit.T, nan=0.0)


def neighbours(sim: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` most similar other rows; equal similarities go to the lower index."""
    masked = sim.copy()
    np.fill_diagonal(masked, -np.inf)
    return np.argsort(-masked, axis=1, kind="stable")[:, :k]


def recall_at_k(reference: np.ndarray, got: np.ndarray, k: int = DEFAULT_K) -> float:
    """Mean share of each text's ``k`` reference neighbours that are among its ``k`` neighbours in ``got``.

    Rows are texts (same order in both); each side's neighbours come from its own similarities.
    """
    ref, out = _rows(reference), _rows(got)
    if ref.shape[0] != out.shape[0]:
        raise InputError(f"recall@{k} compares the same texts: {ref.shape[0]} reference rows, {out.shape[0]} rows")
    if k < 1:
        raise InputError(f"recall@k needs k >= 1, got {k}")
    check_enough_texts(recall_name(k), ref.shape[0])
    n = ref.shape[0]
    in_ref = np.zeros((n, n), dtype=bool)
    in_ref[np.arange(n)[:, None], neighbours(similarities(ref), k)] = True
    hits = in_ref[np.arange(n)[:, None], neighbours(similarities(out), k)].sum(axis=1)
    return float(hits.mean() / k)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the average of their ranks (as ``scipy.stats.rankdata``)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    ordered = v[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each run of equal values starts
    group = np.cumsum(first) - 1
    starts = np.r_[np.flatnonzero(first), v.size]  # 0-based start of each run, then n
    mean_rank = (starts[:-1] + starts[1:] + 1) / 2.0  # average of 1-based ranks start+1 .. end
    ranks = np.empty_like(v)
    ranks[order] = mean_rank[group]
    return ranks


def spearman_of(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two equal-length vectors; 1.0 when both are constant, 0.0 when only one is."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0.0:
        return 1.0 if not ra.any() and not rb.any() else 0.0
    return float((ra * rb).sum() / denom)


def similarity_spearman(reference: np.ndarray, got: np.ndarray) -> float:
    """Spearman correlation of the pairwise cosine similarities (all pairs ``i < j``) of two embeddings of a set."""
    ref, out = _rows(reference), _rows(got)
    if ref.shape[0] != out.shape[0]:
        raise InputError(f"spearman compares the same texts: {ref.shape[0]} reference rows, {out.shape[0]} rows")
    check_enough_texts(SPEARMAN, ref.shape[0])
    upper = np.triu_indices(ref.shape[0], k=1)
    return spearman_of(similarities(ref)[upper], similarities(out)[upper])


def retrieval_metrics(reference: np.ndarray, got: np.ndarray, ks: Sequence[int] = (DEFAULT_K,)) -> dict[str, float]:
    """``recall@k`` for each ``k`` and ``spearman`` where the set is large enough, with ``retrieval_texts``.

    No more texts than the smallest ``k`` (a gate's few random rows) is no set of texts: nothing is reported.
    Beyond that, undefined metrics are left out rather than raised: a report shows what could be measured, and
    a fidelity goal that asks for one checks the count first (:func:`check_enough_texts`).
    """
    ref, out = _rows(reference), _rows(got)
    n = ref.shape[0]
    if n <= min(ks, default=DEFAULT_K):
        return {}
    metrics: dict[str, float] = {TEXTS_KEY: n}
    for k in sorted(set(ks)):
        if n >= texts_needed(recall_name(k)):
            metrics[recall_name(k)] = recall_at_k(ref, out, k)
    if n >= texts_needed(SPEARMAN):
        metrics[SPEARMAN] = similarity_spearman(ref, out)
    return metrics
