"""The parity gate: does the converted model compute what the torch model computes?

Always against the original torch outputs, on the example inputs and on fresh inputs at other sizes of every
dynamic dim. The tolerance follows the precision the target actually ran in (reported by the Session) and is
relative to each output's scale (:mod:`edgekit.fidelity`); a failure is a :class:`ValidationError`, never a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import ValidationError
from edgekit.fidelity import Tolerance, compare_outputs, failure_detail, tolerance_for
from edgekit.specs import TensorSpec


@dataclass
class Case:
    """One set of inputs the gate runs, with the torch reference outputs for it."""

    name: str
    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]


@dataclass
class TargetReport:
    target: str
    precision: str
    tolerance: Tolerance
    cases: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = True
    min_cosine: float = 1.0
    max_abs: float = 0.0
    rel_l2: float = 0.0
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "tolerance": self.tolerance.to_dict(), "cases": list(self.cases)}


def build_cases(
    module: Any,
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    example: dict[str, np.ndarray],
    dim_sizes: Mapping[str, int],
    int_ranges: Mapping[str, tuple[int, int]],
    seed: int = 0,
) -> list[Case]:
    """The example plus fresh random inputs with every dynamic dim larger, and smaller where it can be."""
    from edgekit.converters.torch_io import feeds_at_sizes, run_torch

    cases = [Case("example", example, run_torch(module, example, output_names))]
    variants: list[dict[str, int]] = []
    if dim_sizes:
        variants.append({s: n + (1 if s == "batch" else 5) for s, n in dim_sizes.items()})
        smaller = {s: max(1, n - (1 if s == "batch" else 4)) for s, n in dim_sizes.items()}
        if smaller != dict(dim_sizes):
            variants.append(smaller)
    else:
        variants.append({})
    for i, sizes in enumerate(variants, start=1):
        feeds = feeds_at_sizes(inputs, example, sizes, int_ranges, seed + 100 + i)
        label = ",".join(f"{k}={v}" for k, v in sizes.items()) or "random"
        cases.append(Case(label, feeds, run_torch(module, feeds, output_names)))
    widest = max(cases, key=lambda c: c.feeds[MASK_INPUT].shape[0] if MASK_INPUT in c.feeds else 0)
    padded = padded_feeds(widest.feeds)
    if padded is not None:
        cases.append(Case("padded", padded, run_torch(module, padded, output_names)))
    return cases


MASK_INPUT = "attention_mask"  # the name text models (Hugging Face, sentence-transformers) give their padding mask


def padded_feeds(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """``feeds`` with rows padded to different lengths (mask 0 at the end), for models with an attention mask.

    Random cases have all-ones masks, so a model that mishandles padding (an export that baked in a "mask is
    all ones" branch, say) passes them; real batches of text are padded. Row 0 stays full, row i loses i/(n+1)
    of its positions (at least one token kept). None when there is no 2-D mask or nothing could be padded.
    """
    mask = feeds.get(MASK_INPUT)
    if mask is None or mask.ndim != 2 or mask.shape[0] < 2 or mask.shape[1] < 2:
        return None
    rows, seq = mask.shape
    padded = np.ones_like(mask)
    for i in range(1, rows):
        padded[i, max(1, seq - (i * seq) // (rows + 1)) :] = 0
    return {**feeds, MASK_INPUT: padded}


def check_session(session: Any, cases: Sequence[Case], kinds: Mapping[str, str] | None = None) -> TargetReport:
    """Run every case on ``session`` and compare with the torch reference at its precision's tolerance."""
    info = session.info()
    tol = tolerance_for(info.precision)
    report = TargetReport(target=info.target, precision=info.precision, tolerance=tol)
    means: list[float] = []
    for case in cases:
        metrics = compare_outputs(case.reference, session.run(case.feeds), tol, kinds)
        report.cases.append({"name": case.name, "outputs": metrics})
        for name, m in metrics.items():
            if "min_cosine" in m:
                means.append(m["mean_cosine"])
                report.min_cosine = min(report.min_cosine, m["min_cosine"])
                report.max_abs = max(report.max_abs, m["max_abs"])
                report.rel_l2 = max(report.rel_l2, m["rel_l2"])
            if not m["passed"] and report.passed:
                report.passed = False
                report.failure = f"output {name!r} on {case.name} inputs: {failure_detail(m, tol)}"
    if report.passed and means and float(np.mean(means)) < tol.mean_cosine:
        report.passed = False
        report.failure = f"mean cosine {float(np.mean(means)):.6f} over {len(means)} cases < {tol.mean_cosine}"
    return report


def require_passed(report: TargetReport) -> None:
    if not report.passed:
        raise ValidationError(f"parity gate failed on {report.target} ({report.precision}): {report.failure}")
