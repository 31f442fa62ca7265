"""Numerical agreement next to latency: each target's outputs against one reference on the same inputs.

The tolerance follows the precision the target reports it actually ran in (``tolerance_for``), so an
OpenVINO run that silently went bf16 is judged as bf16 and the report says so, rather than failing as fp32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekit.converters.validate import compare_outputs, tolerance_for


def _rel_l2(ref: np.ndarray, got: np.ndarray) -> float:
    """``||got - ref||_2 / ||ref||_2`` over the whole tensor (0 when both are zero)."""
    r64, g64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    norm = float(np.linalg.norm(r64))
    diff = float(np.linalg.norm(g64 - r64))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))


_NOT_CLASSES = ("embed", "hidden", "pool", "feature", "sentence")  # [batch, dim] outputs that are not class scores


def _top1(name: str, ref: np.ndarray, got: np.ndarray) -> float | None:
    """Fraction of rows whose argmax agrees, for classifier-shaped float outputs ``[batch, classes]``.

    An embedding is shaped like that too; its argmax means nothing, so outputs named like one are skipped.
    """
    if ref.ndim != 2 or ref.shape[1] < 2 or ref.dtype.kind != "f" or ref.shape != got.shape:
        return None
    if any(word in name.lower() for word in _NOT_CLASSES):
        return None
    return float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())


def fidelity_metrics(
    reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], precision: str, reference_name: str
) -> dict[str, Any]:
    """Cosine, max abs error, relative L2 error and top-1 agreement per output, judged at ``precision``."""
    tol = tolerance_for(precision)
    per_output = compare_outputs(reference, got, tol)
    for name, metrics in per_output.items():
        if "error" in metrics or name not in got:
            continue
        ref, value = np.asarray(reference[name]), np.asarray(got[name])
        metrics["rel_l2"] = _rel_l2(ref, value)
        metrics["top1_agreement"] = _top1(name, ref, value)
    measured = [m for m in per_output.values() if "error" not in m]
    top1 = [m["top1_agreement"] for m in measured if m.get("top1_agreement") is not None]
    return {
        "reference": reference_name,
        "precision": precision,
        "tolerance": {
            "atol": tol.atol if np.isfinite(tol.atol) else None,
            "rtol": tol.rtol if np.isfinite(tol.rtol) else None,
            "min_cosine": tol.min_cosine,
            "elementwise": tol.elementwise,
        },
        "passed": all(m.get("passed", False) for m in per_output.values()),
        "min_cosine": min((m["min_cosine"] for m in measured), default=None),
        "max_abs": max((m["max_abs"] for m in measured), default=None),
        "rel_l2": max((m["rel_l2"] for m in measured), default=None),
        "top1_agreement": min(top1, default=None),
        "outputs": per_output,
    }
