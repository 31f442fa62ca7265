"""Assertions shared by tests that compare a runtime's outputs with a reference.

A runtime may compute in a lower precision than the graph asks for (OpenVINO runs FP32 models in bf16 by default
on CPUs with native bf16; TensorRT asked for precision="tf32" uses TF32 on Ampere and newer), so a comparison is
judged at the tolerance for the precision the session *reports*, never a fp32 literal written in the test.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgekit.fidelity import compare_outputs, tolerance_for
from edgekit.runtimes.base import Session


def assert_outputs_match(
    session: Session, reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], label: str = ""
) -> None:
    """Every output in ``reference`` is in ``got`` and within the tolerance of ``session``'s effective precision."""
    precision = session.info().precision
    metrics = compare_outputs(reference, got, tolerance_for(precision))
    failed = {name: m for name, m in metrics.items() if not m["passed"]}
    assert not failed, f"{label or session.info().target} at {precision}: {failed}"


def assert_output_matches(session: Session, reference: np.ndarray, got: np.ndarray, label: str = "") -> None:
    """:func:`assert_outputs_match` for a model with one output."""
    assert_outputs_match(session, {"output": np.asarray(reference)}, {"output": np.asarray(got)}, label)
