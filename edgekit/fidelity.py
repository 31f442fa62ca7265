"""The fidelity core: how edgekit judges whether one model's outputs match another's.

Every judgement in edgekit comes from here: the export gate, every quantized variant's gate, auto-quant's
choice, distillation's early stop and ``edgekit bench``. numpy only, so it runs on a device.

Error is measured relative to each output's own scale, so a correct conversion passes on any CPU (AVX2 and
AVX-512 kernels sum in different orders, which matters for outputs in the hundreds):

- ``rel_l2``: ``||got - ref||₂ / ||ref||₂`` per sample, the worst sample counts;
- ``max_rel``: ``max|got - ref| / max|ref|`` per sample (the largest error against the largest value);
- ``cosine`` per sample (each sample flattened); scale-blind, so it is never judged alone;
- ``top1``: argmax agreement over the last axis, for outputs of kind ``classifier`` only;
- ``recall@k`` and ``spearman`` over a set of texts, for ``embedding`` outputs only (:mod:`edgekit.retrieval`).

The kind of each output (``classifier``, ``embedding`` or ``tensor``) is decided at convert time and kept in
the manifest (:func:`output_kinds`), never guessed from an output's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgekit import retrieval
from edgekit.errors import InputError
from edgekit.goals import HIGHER_IS_BETTER as HIGHER_IS_BETTER  # the goals' half, re-exported for callers
from edgekit.goals import FidelityGoal as FidelityGoal
from edgekit.goals import FidelityTarget as FidelityTarget
from edgekit.goals import higher_is_better
from edgekit.goals import parse_fidelity as parse_fidelity

OutputKind = Literal["classifier", "embedding", "tensor"]
OUTPUT_KINDS: tuple[str, ...] = ("classifier", "embedding", "tensor")


# ---------------------------------------------------------------------------------------------- metrics


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, one per row; two zero rows count as 1, anything undefined as -1.

    THE cosine of edgekit. For one cosine per sample, pass ``a.reshape(len(a), -1)`` (see :func:`sample_cosines`).
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64).reshape(a64.shape)
    na, nb = np.linalg.norm(a64, axis=-1), np.linalg.norm(b64, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a64 * b64).sum(axis=-1) / (na * nb)
    cos = np.where((na == 0) & (nb == 0), 1.0, cos)
    return np.nan_to_num(cos, nan=-1.0, posinf=-1.0, neginf=-1.0)


def sample_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One cosine per sample (axis 0), each sample flattened; a 0-d or 1-d array is one sample."""
    a = np.asarray(a)
    rows = a.shape[0] if a.ndim > 1 else 1
    return cosines(a.reshape(rows, -1), np.asarray(b).reshape(rows, -1))


def _per_sample(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] if a.ndim > 1 else 1, -1)


def scaled_errors(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: ``||d||₂ / ||ref||₂`` and ``max|d| / max|ref|``; a zero reference measures the error itself."""
    r = _per_sample(np.asarray(ref, dtype=np.float64))
    d = np.abs(_per_sample(np.asarray(got, dtype=np.float64)) - r)
    norm, peak = np.linalg.norm(r, axis=1), np.abs(r).max(axis=1, initial=0.0)
    err_norm, err_peak = np.linalg.norm(d, axis=1), d.max(axis=1, initial=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_l2 = np.where(norm > 0, err_norm / norm, err_norm)
        max_rel = np.where(peak > 0, err_peak / peak, err_peak)
    return rel_l2, max_rel


def top1_matches(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per row, whether the argmax over the last axis agrees (the classifier rule)."""
    return np.asarray(np.argmax(ref, axis=-1) == np.argmax(got, axis=-1))


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Share of rows whose argmax over the last axis agrees."""
    return float(top1_matches(ref, got).mean())


def default_output_kind(dtype: str, shape: Sequence[int | str]) -> OutputKind:
    """The kind of an output nobody declared: float ``[batch, classes]`` reads as class scores, else a tensor.

    Sources that know better declare it (a sentence-transformers model's output is an ``embedding``), and the
    user can say ``--output-kind NAME=KIND``; the result is recorded in the manifest, so bench and convert agree.
    """
    classes = shape[-1] if len(shape) == 2 else None
    return (
        "classifier" if dtype.startswith(("float", "bfloat")) and isinstance(classes, int) and classes > 1 else "tensor"
    )


def output_kinds(
    outputs: Sequence[Any], declared: Mapping[str, str] | None = None, requested: Mapping[str, str] | None = None
) -> dict[str, OutputKind]:
    """The kind of every output (TensorSpec-like: ``name``, ``dtype``, ``shape``): asked for > declared > default."""
    names = {o.name for o in outputs}
    for source, kinds in (("--output-kind", requested or {}), ("the source", declared or {})):
        for name, kind in kinds.items():
            if name not in names:
                raise InputError(f"{source} names output {name!r}, but the model's outputs are {sorted(names)}")
            if kind not in OUTPUT_KINDS:
                raise InputError(f"output kind for {name!r} must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    merged = {**(declared or {}), **(requested or {})}
    return {o.name: merged.get(o.name) or default_output_kind(o.dtype, o.shape) for o in outputs}  # type: ignore[misc]


def parse_output_kinds(items: Sequence[str]) -> dict[str, str]:
    """``["logits=classifier", "emb=embedding"]`` -> a mapping; bad items are an InputError."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep or not name.strip() or kind.strip() not in OUTPUT_KINDS:
            raise InputError(f"bad output kind {item!r}: expected NAME=KIND with KIND one of {', '.join(OUTPUT_KINDS)}")
        out[name.strip()] = kind.strip()
    return out


# ---------------------------------------------------------------------------------------------- tolerance


@dataclass(frozen=True)
class Tolerance:
    """What an output must meet at one precision: scale-relative errors and cosines, per sample.

    ``mean_cosine`` bounds the average over every sample a gate ran (INT8: single samples may wander, the
    average may not). Bounds that are infinite do not apply.
    """

    rel_l2: float
    max_rel: float
    min_cosine: float
    mean_cosine: float = 0.0

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if math.isinf(v) else v) for k, v in vars(self).items()}

    def describe(self) -> str:
        bounds = [f"{k}<={v:g}" for k, v in (("rel_l2", self.rel_l2), ("max_rel", self.max_rel)) if math.isfinite(v)]
        return ", ".join([*bounds, f"min_cosine>={self.min_cosine}"])


# rel_l2 = 0.045 is cosine 0.999 for error orthogonal to the signal, 0.14 is 0.99, 0.31 is 0.95: the rel_l2
# bounds of the reduced precisions sit just above their cosines and catch what a cosine cannot (a scale error).
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel_l2=1e-4, max_rel=1e-3, min_cosine=0.9999),
    "fp16": Tolerance(rel_l2=0.05, max_rel=math.inf, min_cosine=0.999),
    "bf16": Tolerance(rel_l2=0.15, max_rel=math.inf, min_cosine=0.99),
    "int8": Tolerance(rel_l2=0.35, max_rel=math.inf, min_cosine=0.95, mean_cosine=0.98),
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance for an effective precision such as ``fp32``, ``bf16``, ``tf32`` or ``int8-qdq (fp32 ...)``."""
    p = precision.lower()
    for key in ("int8", "bf16", "fp16", "f16", "tf32"):
        if key in p:
            return TOLERANCES["fp16" if key in ("f16", "tf32") else key]  # tf32 keeps fp16's 10-bit mantissa
    return TOLERANCES["fp32"]


# ---------------------------------------------------------------------------------------------- comparing


def output_metrics(ref: np.ndarray, got: np.ndarray, kind: str = "tensor") -> dict[str, Any]:
    """Every metric of one output against its reference: max_abs, rel_l2, max_rel, cosines, top1 (classifiers).

    A missing, misshapen or non-finite output gives ``{"error": why}``.
    """
    ref, got = np.asarray(ref), np.asarray(got)
    if got.shape != ref.shape:
        return {"error": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    r64, g64 = ref.astype(np.float64), got.astype(np.float64)
    if not np.isfinite(g64).all() and np.isfinite(r64).all():
        return {"error": "non-finite values where the reference is finite"}
    rel_l2, max_rel = scaled_errors(r64, g64)
    cos = sample_cosines(r64, g64) if r64.size else np.ones(1)
    metrics: dict[str, Any] = {
        "max_abs": float(np.abs(r64 - g64).max()) if r64.size else 0.0,
        "rel_l2": float(rel_l2.max(initial=0.0)),
        "max_rel": float(max_rel.max(initial=0.0)),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
    }
    if kind == "classifier" and ref.ndim >= 1 and ref.size:
        metrics["top1"] = top1_agreement(r64, g64)
    if kind == "embedding" and ref.ndim >= 2:
        metrics.update(retrieval.retrieval_metrics(r64, g64))
    return metrics


def within(metrics: Mapping[str, Any], tol: Tolerance) -> bool:
    """Does one output's :func:`output_metrics` meet ``tol`` (per-sample bounds; the mean is judged by the caller)?"""
    if "error" in metrics:
        return False
    return (
        metrics["rel_l2"] <= tol.rel_l2
        and metrics["max_rel"] <= tol.max_rel
        and metrics["min_cosine"] >= tol.min_cosine
    )


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    tol: Tolerance,
    kinds: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per output of ``reference``: its metrics and whether it is within ``tol``."""
    out: dict[str, dict[str, Any]] = {}
    for name, ref in reference.items():
        metrics = output_metrics(ref, got[name], (kinds or {}).get(name, "tensor")) if name in got else {}
        metrics = metrics or {"error": "output missing"}
        out[name] = {**metrics, "passed": within(metrics, tol)}
    return out


def failure_detail(metrics: Mapping[str, Any], tol: Tolerance) -> str:
    """One line saying how an output missed ``tol``."""
    if "error" in metrics:
        return str(metrics["error"])
    return (
        f"rel_l2={metrics['rel_l2']:.3g}, max_rel={metrics['max_rel']:.3g}, min_cosine={metrics['min_cosine']:.6f}"
        f" (max_abs={metrics['max_abs']:.3g}; tolerance {tol.describe()})"
    )


# ---------------------------------------------------------------------------------------------- over samples

Feeds = dict[str, np.ndarray]


def fidelity_metrics(
    references: Sequence[Mapping[str, np.ndarray]],
    outputs: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str] | None = None,
    recall_ks: Sequence[int] = (retrieval.DEFAULT_K,),
) -> dict[str, Any]:
    """Metrics over held-back samples (one dict of outputs per sample, same order), the worst output deciding.

    ``cosine`` is the mean per-sample cosine, ``min_cosine`` the worst sample, ``rel_l2`` the worst sample's
    scale-relative error, ``top1`` the argmax agreement of classifier outputs, ``max_abs`` the largest error;
    for embedding outputs, ``recall@k`` (each k of ``recall_ks``) and ``spearman`` over every row of every
    sample taken as one set of texts, with ``retrieval_texts`` saying how many.
    """
    per_output: dict[str, dict[str, float]] = {}
    for name in references[0] if references else ():
        pairs = [(np.asarray(r[name]), np.asarray(o[name])) for r, o in zip(references, outputs, strict=True)]
        per_output[name] = _over_samples(pairs, (kinds or {}).get(name, "tensor"), recall_ks)
    if not per_output:
        return {"samples": 0}
    names = dict.fromkeys(m for v in per_output.values() for m in v)
    lowest = {m for m in names if higher_is_better(m) or m == retrieval.TEXTS_KEY}  # the worst is the least
    worst = {m: (min if m in lowest else max)(v[m] for v in per_output.values() if m in v) for m in names}
    return {**worst, "samples": len(references)}


def _over_samples(pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str, ks: Sequence[int]) -> dict[str, float]:
    cos = np.concatenate([sample_cosines(r, g) for r, g in pairs])
    rel = np.concatenate([scaled_errors(r, g)[0] for r, g in pairs])
    out = {
        "cosine": float(cos.mean()),
        "cosine_lcb": _lower_bound(cos),
        "min_cosine": float(cos.min()),
        "rel_l2": float(rel.max()),
        "max_abs": max(float(np.abs(r.astype(np.float64) - g).max(initial=0.0)) for r, g in pairs),
    }
    if kind == "classifier":
        out["top1"] = float(np.concatenate([top1_matches(r, g).ravel() for r, g in pairs]).mean())
    if kind == "embedding":
        stacked = [np.concatenate([_per_sample(p[i].astype(np.float64)) for p in pairs]) for i in (0, 1)]
        out.update(retrieval.retrieval_metrics(stacked[0], stacked[1], ks))
    return out


def _lower_bound(values: np.ndarray, z: float = 1.645) -> float:
    """One-sided 95% lower confidence bound of the mean (normal approximation); the mean for one value."""
    if values.size < 2:
        return float(values.mean())
    return float(values.mean() - z * values.std(ddof=1) / math.sqrt(values.size))


def run_all(run: Callable[[Feeds], Mapping[str, np.ndarray]], samples: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """Outputs for every sample, in order."""
    return [dict(run(s)) for s in samples]
