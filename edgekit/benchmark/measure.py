"""``measure_latency``: the bench's method as one call, for decisions made while converting.

Auto-quantization and ``--prune-until`` choose between candidate models by speed on a target. They time
them exactly as ``edgekit bench`` does: each candidate in its own fresh worker process (ONNX Runtime's
spinning threads and OpenVINO steal each other's cores inside one process), warm-up by count and by time,
every sample kept, rounds alternating across candidates (A B C A B C) so drift on a shared machine hits all
alike. The headline is the median over rounds of each round's p50.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmark.plan import BenchConfig
from edgekit.benchmark.runner import run_worker, timing_request
from edgekit.benchmark.stats import summarize
from edgekit.errors import BackendError

Feeds = Mapping[str, np.ndarray]

# Choosing between candidates needs a stable ranking, not a report: short rounds, no cold start or fidelity.
CANDIDATE_TIMING = BenchConfig(
    iterations=10, duration_s=1.0, warmup_s=0.2, warmup_iterations=5, rounds=2, cold_start=False, fidelity=False,
    timeout_s=300.0,
)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One model file to time on one target; ``key`` names it in the result.

    For the torch eager baseline, ``target`` is ``"torch"``, ``source`` names the PyTorch source and ``model``
    is the artifact whose input and output specs it has, as ``edgekit bench --baseline torch`` times it."""

    key: str
    model: Path
    target: str
    source: str | None = None

    def request(self) -> dict[str, Any]:
        return {"model": str(self.model), **({"options": {"source": self.source}} if self.source else {})}


@dataclass
class LatencyResult:
    """Per-round p50s and the headline (their median), in milliseconds, with what the target reported."""

    p50_ms: float
    p90_ms: float
    rounds_p50_ms: list[float] = field(default_factory=list)
    samples_ms: list[list[float]] = field(default_factory=list)  # every timed run, per round
    iterations: int = 0
    precision: str = ""

    @property
    def spread(self) -> float:
        """How far apart this candidate's rounds were: (max - min) / median of the per-round p50s."""
        if len(self.rounds_p50_ms) < 2 or not self.p50_ms:
            return 0.0
        return (max(self.rounds_p50_ms) - min(self.rounds_p50_ms)) / self.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure_latency(
    candidates: Sequence[Candidate], feeds: Feeds, config: BenchConfig = CANDIDATE_TIMING
) -> dict[str, LatencyResult]:
    """``{candidate.key: LatencyResult}``: every candidate once per round, each in its own process, alternating.

    A candidate that fails to load or run is a :class:`BackendError` naming it: a choice made without one
    of its options would be a silent wrong answer.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-latency-") as work:
        feeds_path = Path(work) / "feeds.npz"
        np.savez(feeds_path, **{k: np.asarray(v) for k, v in feeds.items()})
        answers: dict[str, list[dict[str, Any]]] = {c.key: [] for c in candidates}
        for _ in range(config.rounds):
            for c in candidates:
                request = {**timing_request(c.target, config), **c.request(), "feeds": str(feeds_path)}
                answers[c.key].append(_checked(run_worker(request, config.timeout_s), c))
    return {key: _combine(rounds) for key, rounds in answers.items()}


def _checked(answer: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
    if not answer.get("ok"):
        why = f"{answer.get('stage', 'worker')}: {answer.get('error', 'failed')}"
        raise BackendError(f"latency measurement of {candidate.model.name} on {candidate.target} failed: {why}")
    return answer


def _combine(rounds: list[dict[str, Any]]) -> LatencyResult:
    stats = [summarize([ns / 1e6 for ns in r["samples_ns"]]) for r in rounds]
    return LatencyResult(
        p50_ms=float(statistics.median(s.p50 for s in stats)),
        p90_ms=float(statistics.median(s.p90 for s in stats)),
        rounds_p50_ms=[round(s.p50, 4) for s in stats],
        samples_ms=[[round(ns / 1e6, 4) for ns in r["samples_ns"]] for r in rounds],
        iterations=sum(s.n for s in stats),
        precision=str((rounds[-1].get("info") or {}).get("precision", "")),
    )
