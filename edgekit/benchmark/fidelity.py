"""Numerical agreement next to latency: each target's outputs against one reference on the same inputs.

Judged by the fidelity core at the precision the target reports it actually ran in, so an OpenVINO run that
silently went bf16 is judged as bf16 and the report says so, rather than failing as fp32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgekit.fidelity import compare_outputs, tolerance_for
from edgekit.retrieval import DEFAULT_K, SPEARMAN, TEXTS_KEY, recall_name

RECALL_10 = recall_name(DEFAULT_K)


def fidelity_report(
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    precision: str,
    reference_name: str,
    kinds: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Per output and worst over outputs: cosine, max abs, relative L2 error, top-1 (classifier outputs only),
    recall@10 and spearman with the number of texts they were measured over (embedding outputs only)."""
    tol = tolerance_for(precision)
    per_output = compare_outputs(reference, got, tol, kinds)
    measured = [m for m in per_output.values() if "error" not in m]
    for metrics in measured:
        metrics["top1_agreement"] = metrics.pop("top1", None)
    top1 = [m["top1_agreement"] for m in measured if m["top1_agreement"] is not None]
    retrieval = {key: [m[key] for m in measured if key in m] for key in (RECALL_10, SPEARMAN, TEXTS_KEY)}
    return {
        "reference": reference_name,
        "precision": precision,
        "tolerance": tol.to_dict(),
        "passed": all(m["passed"] for m in per_output.values()),
        "min_cosine": min((m["min_cosine"] for m in measured), default=None),
        "max_abs": max((m["max_abs"] for m in measured), default=None),
        "rel_l2": max((m["rel_l2"] for m in measured), default=None),
        "top1_agreement": min(top1, default=None),
        # embedding outputs over a set of texts (>= RETRIEVAL_MIN_TEXTS for text artifacts); None where not measured
        **{key: min(values, default=None) for key, values in retrieval.items()},
        "outputs": per_output,
    }
