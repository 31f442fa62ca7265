"""Fidelity targets (``"cosine>=0.99"``) and the numbers they are judged on, over held-back samples.

``cosine`` is the mean per-sample cosine to the reference, ``min_cosine`` the worst sample, ``top1`` the share of
rows whose argmax agrees (classifiers), ``max_abs`` the largest element-wise error. With several outputs the
worst output decides.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.converters.validate import cosines
from edgekit.errors import InputError

Feeds = dict[str, np.ndarray]
HIGHER_IS_BETTER = {"cosine": True, "min_cosine": True, "top1": True, "max_abs": False}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_EXPR = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class FidelityTarget:
    """``metric op threshold``, for example ``cosine >= 0.99``."""

    metric: str
    op: str
    threshold: float

    def met(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        return value is not None and _OPS[self.op](float(value), self.threshold)

    def better(self, a: Mapping[str, float], b: Mapping[str, float]) -> bool:
        """Is ``a`` closer to the reference than ``b`` on this target's metric?"""
        va, vb = a.get(self.metric, np.nan), b.get(self.metric, np.nan)
        if np.isnan(vb):
            return not np.isnan(va)
        return bool(va > vb) if HIGHER_IS_BETTER[self.metric] else bool(va < vb)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_fidelity(expr: str) -> FidelityTarget:
    """Parse ``"cosine>=0.99"``, ``"top1>=0.99"`` or ``"max_abs<=1e-2"``; anything else is an InputError."""
    match = _EXPR.match(expr or "")
    hint = "expected METRIC>=VALUE or METRIC<=VALUE, e.g. cosine>=0.99, top1>=0.99, max_abs<=1e-2"
    if not match:
        raise InputError(f"bad fidelity expression {expr!r}: {hint}")
    metric, op, raw = match.groups()
    if metric not in HIGHER_IS_BETTER:
        raise InputError(f"bad fidelity expression {expr!r}: unknown metric {metric!r} ({', '.join(HIGHER_IS_BETTER)})")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"bad fidelity expression {expr!r}: {raw!r} is not a number") from None
    if HIGHER_IS_BETTER[metric] != op.startswith(">"):
        want = ">=" if HIGHER_IS_BETTER[metric] else "<="
        raise InputError(f"bad fidelity expression {expr!r}: {metric} is bounded with {want}")
    if metric != "max_abs" and not 0.0 <= value <= 1.0:
        raise InputError(f"bad fidelity expression {expr!r}: {metric} lies in [0, 1]")
    return FidelityTarget(metric, op, value)


def fidelity_metrics(references: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, Any]]) -> dict:
    """Metrics of ``outputs`` against ``references`` (same order, one dict per sample), worst output deciding."""
    per_output: dict[str, dict[str, float]] = {}
    for name in references[0] if references else ():
        refs = [np.asarray(r[name]) for r in references]
        got = [np.asarray(o[name]) for o in outputs]
        per_output[name] = _output_metrics(refs, got)
    if not per_output:
        return {"samples": 0}
    worst = {
        m: (min if HIGHER_IS_BETTER[m] else max)(v[m] for v in per_output.values() if m in v)
        for m in HIGHER_IS_BETTER
        if any(m in v for v in per_output.values())
    }
    return {**worst, "samples": len(references)}


def _output_metrics(refs: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> dict[str, float]:
    pairs = list(zip(refs, got, strict=True))
    cos = np.concatenate([cosines(r, g) if r.ndim > 1 else cosines(r[None], g[None]) for r, g in pairs])
    max_abs = max(float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max()) if r.size else 0.0 for r, g in pairs)
    out = {"cosine": float(cos.mean()), "min_cosine": float(cos.min()), "max_abs": max_abs}
    if all(r.ndim >= 2 and r.shape[-1] > 1 for r in refs):
        agree = [np.argmax(r, -1) == np.argmax(g, -1) for r, g in pairs]
        out["top1"] = float(np.concatenate([a.ravel() for a in agree]).mean())
    return out


def run_all(run: Callable[[Feeds], Mapping[str, np.ndarray]], samples: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """Outputs for every sample, in order."""
    return [dict(run(s)) for s in samples]
