"""Latency statistics with one stated definition, shared by every target and every report format.

Percentiles use numpy's ``linear`` method (Hyndman & Fan type 7: the value at rank ``(n - 1) * q`` with linear
interpolation between the two nearest samples), so p90 of ``1..100`` is 90.1. The standard deviation is the
sample one (``ddof=1``), and the CV is ``std / mean``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgekit.errors import InputError

PERCENTILE_METHOD = "numpy.percentile(method='linear'), Hyndman-Fan type 7: rank (n-1)*q, linear interpolation"
HIGH_CV = 0.10  # above this the spread is too wide to trust a single number: the report says so
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a set of latencies, all in milliseconds."""

    n: int
    min: float
    mean: float
    std: float
    cv: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @property
    def high_cv(self) -> bool:
        return self.cv > HIGH_CV

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
    """Statistics of ``samples_ms``; raises :class:`InputError` on an empty set (nothing was measured)."""
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        raise InputError("no latency samples to summarize")
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, PERCENTILES, method="linear"))
    return LatencyStats(
        n=int(data.size),
        min=float(data.min()),
        mean=mean,
        std=std,
        cv=std / mean if mean > 0 else 0.0,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(data.max()),
    )


def paired_ratio(baseline: Sequence[float], target: Sequence[float]) -> float | None:
    """Median over rounds of ``baseline[i] / target[i]``: a ratio measured side by side, round by round.

    Rounds where either side is missing or zero are skipped; ``None`` when no round has both.
    """
    ratios = [b / t for b, t in zip(baseline, target, strict=False) if b and t and b > 0 and t > 0]
    return float(np.median(ratios)) if ratios else None
