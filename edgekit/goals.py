"""Fidelity goals: the ``--fidelity`` expressions and how a set of measured metrics is judged against them.

``cosine>=0.99,recall@10>=0.95`` is a :class:`FidelityGoal` of :class:`FidelityTarget` s that must all hold.
The metrics themselves are measured in :mod:`edgekit.fidelity` (per-sample errors, cosines, top-1) and
:mod:`edgekit.retrieval` (recall@k, Spearman); this module only knows their names, their direction, and which
mean has a lower confidence bound that a conservative judgement (``--quantize auto``'s) reads instead: a
candidate whose mean cosine clears 0.99 by less than its sampling error has not shown it holds on other text.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit import retrieval
from edgekit.errors import InputError

HIGHER_IS_BETTER = {"cosine": True, "min_cosine": True, "top1": True, "max_abs": False, "rel_l2": False,
                    "spearman": True, "cosine_lcb": True}  # fmt: skip
# a mean's one-sided 95% lower confidence bound: what a conservative judgement (auto's) reads instead of it
LOWER_BOUNDS = {"cosine": "cosine_lcb"}


def higher_is_better(metric: str) -> bool | None:
    """Which way ``metric`` improves (``recall@k`` for any k included); None for a name that is no metric."""
    return True if retrieval.recall_k(metric) is not None else HIGHER_IS_BETTER.get(metric)


# ---------------------------------------------------------------------------------------------- expressions

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le}  # fmt: skip
_OPS["<"] = operator.lt
_EXAMPLE = "cosine>=0.99,recall@10>=0.95,spearman>=0.98"
_EXPR = re.compile(r"^\s*([a-z_0-9]+(?:@[0-9]+)?)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class FidelityTarget:
    """``metric op threshold``, for example ``cosine >= 0.99`` or ``recall@10 >= 0.95``."""

    metric: str
    op: str
    threshold: float

    def met(self, metrics: Mapping[str, float], *, conservative: bool = False) -> bool:
        """``conservative``: a mean must clear the threshold with its lower confidence bound where one is known."""
        value = metrics.get(LOWER_BOUNDS.get(self.metric, "") if conservative else "", metrics.get(self.metric))
        return value is not None and _OPS[self.op](float(value), self.threshold)

    def better(self, a: Mapping[str, float], b: Mapping[str, float]) -> bool:
        """Is ``a`` closer to the reference than ``b`` on this target's metric?"""
        va, vb = a.get(self.metric, np.nan), b.get(self.metric, np.nan)
        if np.isnan(vb):
            return not np.isnan(va)
        return bool(va > vb) if higher_is_better(self.metric) else bool(va < vb)

    def check_applies(self, kinds: Mapping[str, str]) -> None:
        """``top1`` needs class scores, recall/spearman embeddings: asking them of a model without is an InputError."""
        need = {"top1": "a classifier"}.get(self.metric) or retrieval.kind_needed(self.metric)
        if need is not None and (kind := need.split()[-1]) not in kinds.values():
            described = ", ".join(f"{n} ({k})" for n, k in kinds.items()) or "none"
            raise InputError(
                f"fidelity {self} needs {need} output, but the outputs are {described}: use cosine/rel_l2, "
                f"or mark an output with --output-kind NAME={kind}"
            )

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class FidelityGoal:
    """Fidelity targets that must all hold, for example ``cosine>=0.99,recall@10>=0.95,spearman>=0.98``."""

    targets: tuple[FidelityTarget, ...]

    def met(self, metrics: Mapping[str, float], *, conservative: bool = False) -> bool:
        return all(t.met(metrics, conservative=conservative) for t in self.targets)

    def better(self, a: Mapping[str, float], b: Mapping[str, float]) -> bool:
        """Is ``a`` closer to the goal than ``b``: more targets met, then the first target that tells them apart."""
        met_a, met_b = (sum(t.met(m) for t in self.targets) for m in (a, b))
        if met_a != met_b:
            return met_a > met_b
        return next((t.better(a, b) for t in self.targets if t.better(a, b) or t.better(b, a)), False)

    def check_applies(self, kinds: Mapping[str, str]) -> None:
        for t in self.targets:
            t.check_applies(kinds)

    def check_texts(self, n: int) -> None:
        """A retrieval metric over fewer held-back texts than it is defined on is an InputError, before any work."""
        for t in self.targets:
            retrieval.check_enough_texts(t.metric, n)

    @property
    def recall_ks(self) -> tuple[int, ...]:
        return retrieval.recall_ks(t.metric for t in self.targets)

    def values(self, metrics: Mapping[str, Any]) -> str:
        """``cosine=0.99123, recall@10=0.93000``: the goal's metrics as measured, for a one-line failure."""
        return ", ".join(f"{t.metric}={float(metrics.get(t.metric, np.nan)):.5f}" for t in self.targets)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.targets)


def parse_fidelity(expr: str) -> FidelityGoal:
    """Parse ``"cosine>=0.99"`` or several, comma-separated, all of which must hold; else an InputError.

    Metrics: cosine, min_cosine, top1 (classifiers), rel_l2, max_abs, and for embeddings recall@K and spearman.
    """
    return FidelityGoal(tuple(_parse_target(part, expr) for part in (expr or "").split(",")))


def _parse_target(part: str, expr: str) -> FidelityTarget:
    match, bad = _EXPR.match(part), f"bad fidelity expression {expr!r}"
    if not match:
        raise InputError(f"{bad}: expected METRIC>=VALUE or METRIC<=VALUE, comma-separated, e.g. {_EXAMPLE}")
    metric, op, raw = match.groups()
    higher = higher_is_better(metric)
    if higher is None:
        raise InputError(f"{bad}: unknown metric {metric!r} ({', '.join(HIGHER_IS_BETTER)}, recall@K)")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{bad}: {raw!r} is not a number") from None
    if higher != op.startswith(">"):
        raise InputError(f"{bad}: {metric} is bounded with {'>=' if higher else '<='}")
    low = -1.0 if metric == "spearman" else 0.0
    if higher and not low <= value <= 1.0:
        raise InputError(f"{bad}: {metric} lies in [{low:g}, 1]")
    return FidelityTarget(metric, op, value)
