"""The parity gate: does the converted model compute what the torch model computes?

Always against the original torch outputs, on the example inputs and on fresh inputs at other sizes of every
dynamic dim. The tolerance follows the precision the target actually ran in (reported by the Session), and a
failure is a :class:`ValidationError`, never a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import ValidationError
from edgekit.specs import TensorSpec


@dataclass(frozen=True)
class Tolerance:
    """Element-wise ``|a - b| <= atol + rtol * |ref|`` (fp32 only), a minimum per-sample cosine, and a minimum
    mean cosine over every sample the gate ran (INT8: single samples may wander, the average may not)."""

    atol: float
    rtol: float
    min_cosine: float
    elementwise: bool = True
    mean_cosine: float = 0.0


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.999, elementwise=False),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.99, elementwise=False),
    "int8": Tolerance(atol=math.inf, rtol=math.inf, min_cosine=0.95, elementwise=False, mean_cosine=0.98),
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance for an effective precision string such as ``fp32``, ``bf16`` or ``int8-qdq (fp32 ...)``."""
    p = precision.lower()
    for key in ("int8", "bf16", "fp16", "f16", "tf32"):
        if key in p:
            return TOLERANCES["fp16" if key in ("f16", "tf32") else key]  # tf32 keeps fp16's 10-bit mantissa
    return TOLERANCES["fp32"]


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
    failure: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tolerance"] = {k: (None if math.isinf(v) else v) if isinstance(v, float) else v
                          for k, v in asdict(self.tolerance).items()}  # fmt: skip
        return d


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (axis 0), each sample flattened; two zero vectors count as 1."""
    a64 = np.asarray(a, dtype=np.float64).reshape(a.shape[0] if a.ndim > 1 else 1, -1)
    b64 = np.asarray(b, dtype=np.float64).reshape(a64.shape)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    dot = (a64 * b64).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    cos = np.where((na == 0) & (nb == 0), 1.0, cos)
    return np.nan_to_num(cos, nan=-1.0)


def compare_outputs(
    reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tol: Tolerance
) -> dict[str, dict[str, Any]]:
    """Per output: max abs error, mean/min cosine, whether it is within ``tol``."""
    out: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        if name not in got:
            out[name] = {"passed": False, "error": "output missing"}
            continue
        value = np.asarray(got[name])
        if value.shape != ref.shape:
            out[name] = {"passed": False, "error": f"shape {list(value.shape)} != reference {list(ref.shape)}"}
            continue
        r64, v64 = ref.astype(np.float64), value.astype(np.float64)
        if not np.isfinite(v64).all() and np.isfinite(r64).all():
            out[name] = {"passed": False, "error": "non-finite values where the reference is finite"}
            continue
        diff = np.abs(r64 - v64)
        max_abs = float(diff.max()) if diff.size else 0.0
        cos = cosines(r64, v64) if r64.dtype.kind == "f" and r64.size else np.ones(1)
        within = bool((diff <= tol.atol + tol.rtol * np.abs(r64)).all()) if tol.elementwise else True
        ok = within and float(cos.min()) >= tol.min_cosine
        out[name] = {
            "max_abs": max_abs,
            "mean_cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
            "elementwise_ok": within,
            "passed": ok,
        }
    return out


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
    return cases


def check_session(session: Any, cases: Sequence[Case]) -> TargetReport:
    """Run every case on ``session`` and compare with the torch reference at its precision's tolerance."""
    info = session.info()
    tol = tolerance_for(info.precision)
    report = TargetReport(target=info.target, precision=info.precision, tolerance=tol)
    means: list[float] = []
    for case in cases:
        got = session.run(case.feeds)
        metrics = compare_outputs(case.reference, got, tol)
        report.cases.append({"name": case.name, "outputs": metrics})
        for name, m in metrics.items():
            if "min_cosine" in m:
                means.append(m["mean_cosine"])
                report.min_cosine = min(report.min_cosine, m["min_cosine"])
                report.max_abs = max(report.max_abs, m["max_abs"])
            if not m["passed"] and report.passed:
                report.passed = False
                detail = m.get("error") or (
                    f"max_abs={m['max_abs']:.3g}, min_cosine={m['min_cosine']:.6f} "
                    f"(tolerance atol={tol.atol:g} rtol={tol.rtol:g} cosine>={tol.min_cosine})"
                )
                report.failure = f"output {name!r} on {case.name} inputs: {detail}"
    if report.passed and means and float(np.mean(means)) < tol.mean_cosine:
        report.passed = False
        report.failure = f"mean cosine {float(np.mean(means)):.6f} over {len(means)} cases < {tol.mean_cosine}"
    return report


def require_passed(report: TargetReport) -> None:
    if not report.passed:
        raise ValidationError(f"parity gate failed on {report.target} ({report.precision}): {report.failure}")
