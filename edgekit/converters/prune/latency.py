"""Latency-aware pruning: prune in growing steps, export and time each step on the target, stop at the budget.

Torch-Pruning counts MACs, but what a device pays is latency on its runtime, and the two do not move together
(attention is memory bound; small GEMMs stop scaling). So each step is exported to ONNX and timed where it
will run, in a fresh process (edgekit.benchmark.measure_latency), on the example inputs' shape. Every step prunes the
original at the step's ratio (not the previous step's result), so a step's model does not depend on the path.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import ExportError, InputError, RuntimeUnavailableError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekit.benchmark.plan import BenchConfig
    from edgekit.converters.prune.options import PruneOptions, PruneResult
    from edgekit.sources import LoadedSource

_BUDGET = re.compile(r"^\s*latency\s*(<=?)\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|us)\s*$", re.IGNORECASE)
_MS_PER_UNIT = {"ms": 1.0, "s": 1000.0, "us": 0.001}
# one short round per step: prune-until compares each step against a budget, not candidates with each other
FAST_TIMING = {"warmup_iterations": 3, "warmup_s": 0.1, "iterations": 10, "duration_s": 0.5, "rounds": 1,
               "cold_start": False, "fidelity": False}  # fmt: skip


def parse_budget(text: str) -> float:
    """``"latency<=6ms"`` -> 6.0 (milliseconds); ``<`` and the units s, ms, us also parse."""
    match = _BUDGET.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(f"cannot read latency budget {text!r}; expected for example 'latency<=6ms'")
    value = float(match.group(2)) * _MS_PER_UNIT[match.group(3).lower()]
    if value <= 0:
        raise InputError(f"latency budget must be above zero, got {text!r}")
    return value


def step_ratios(step: float, max_ratio: float) -> list[float]:
    """step, 2*step, ... up to and including ``max_ratio``."""
    count = math.floor(max_ratio / step + 1e-9)
    ratios = [round(step * i, 6) for i in range(1, count + 1)]
    return ratios if ratios and math.isclose(ratios[-1], max_ratio) else [*ratios, round(max_ratio, 6)]


def prune_until(
    module: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    budget_ms: float,
    target: str,
    step: float = 0.1,
    max_ratio: float = 0.9,
    measure: Callable[[nn.Module], float] | None = None,
    *,
    options: PruneOptions | None = None,
    data: Iterable[dict[str, torch.Tensor]] | None = None,
    source: LoadedSource | None = None,
    timing: BenchConfig | None = None,
    work_dir: Path | None = None,
) -> PruneResult:
    """Prune ``module`` at ratios step, 2*step, ... <= ``max_ratio`` until ``measure(model)`` (default: export
    and time on ``target`` in its own process, p50 ms) is at most ``budget_ms``.

    ``options`` gives kind, importance, ignored layers...; its ``ratio`` is replaced by each step's, and an
    ``heads_ratio`` (and an explicit ``ffn_ratio``) caps that part. The plan's ``prune_until`` records every step
    (ratio, params, MACs, latency) and whether the budget was met; at ``max_ratio`` without meeting it, the
    most pruned model comes back with ``met: false``.
    """
    from edgekit.converters.prune.module import prune_module
    from edgekit.converters.prune.options import PruneOptions, check_ratio

    _check_budget(budget_ms)
    check_ratio("step", step)
    check_ratio("max_ratio", max_ratio)
    if step > max_ratio:
        raise InputError(f"step {step} is larger than max_ratio {max_ratio}")
    base = options or PruneOptions(ratio=step)
    batches = list(data) if data is not None else None  # every step reads it again
    with tempfile.TemporaryDirectory(prefix="edgekit-prune-") as tmp:
        timer = measure or TargetTimer(target, example_inputs, source, Path(work_dir or tmp), timing)
        result = _unpruned(module, example_inputs, base)
        steps = [_step_record(result, 0.0, timer(result.module))]
        for ratio in step_ratios(step, max_ratio) if steps[0]["latency_ms"] > budget_ms else []:
            result = prune_module(module, example_inputs, _at_ratio(base, ratio), batches)
            steps.append(_step_record(result, ratio, timer(result.module)))
            if steps[-1]["latency_ms"] <= budget_ms:
                break
    met = steps[-1]["latency_ms"] <= budget_ms
    how = "injected measure" if measure is not None else f"p50 on {target} in a separate process"
    result.plan["prune_until"] = {"budget_ms": budget_ms, "target": target, "met": met, "measured": how,
                                  "steps": steps}  # fmt: skip
    if not met:
        result.plan.setdefault("notes", []).append(
            f"latency budget {budget_ms} ms not met at max_ratio {max_ratio}: best {steps[-1]['latency_ms']} ms"
        )
    return result


def _check_budget(budget_ms: object) -> None:
    ok = isinstance(budget_ms, int | float) and not isinstance(budget_ms, bool) and math.isfinite(budget_ms)
    if not ok or budget_ms <= 0:
        raise InputError(f"latency budget must be a positive number of milliseconds, got {budget_ms!r}")


def _at_ratio(base: PruneOptions, ratio: float) -> PruneOptions:
    heads = min(base.heads_ratio, ratio)
    ffn = None if base.ffn_ratio is None else min(base.ffn_ratio, ratio)
    return dataclasses.replace(base, ratio=ratio, heads_ratio=heads, ffn_ratio=ffn)


def _unpruned(module: nn.Module, example_inputs: dict[str, torch.Tensor], base: PruneOptions) -> PruneResult:
    """Step 0: the original as a PruneResult, so a model already within budget comes back untouched."""
    from edgekit.converters.prune.common import check_example_inputs, count_params_macs
    from edgekit.converters.prune.macs import attention_counters
    from edgekit.converters.prune.options import PruneResult

    check_example_inputs(example_inputs)
    model = copy.deepcopy(module).eval()
    params, macs = count_params_macs(model, example_inputs, attention_counters(model))
    plan = {
        **base.to_dict(),
        "ratio": 0.0,
        "method": "none: the unpruned model meets the budget",
        "layers": [],
        "params_before": params, "params_after": params, "macs_before": macs, "macs_after": macs,
        "notes": [],
    }  # fmt: skip
    return PruneResult(module=model, plan=plan)


def _step_record(result: PruneResult, ratio: float, latency_ms: float) -> dict[str, Any]:
    return {"ratio": ratio, "params": result.params_after, "macs": result.macs_after,
            "latency_ms": round(float(latency_ms), 4)}  # fmt: skip


class TargetTimer:
    """Exports a model to ONNX and returns its p50 latency (ms) on ``target``, timed in a separate process."""

    def __init__(
        self,
        target: str,
        example_inputs: dict[str, torch.Tensor],
        source: LoadedSource | None,
        work_dir: Path,
        timing: BenchConfig | None = None,
    ) -> None:
        from edgekit.benchmark.plan import BenchConfig
        from edgekit.runtimes import runtime_entry

        entry = runtime_entry(target)  # unknown target: an error now, not after the first prune
        if not entry.is_available():
            raise RuntimeUnavailableError(f"runtime {target!r} is not installed; install it with: {entry.install}")
        self.target, self.example_inputs, self.source, self.work_dir = target, example_inputs, source, work_dir
        self.timing = timing or BenchConfig(**FAST_TIMING)
        self.calls = 0

    def __call__(self, module: nn.Module) -> float:
        from edgekit.benchmark.measure import Candidate, measure_latency

        self.calls += 1
        path = self.work_dir / f"prune_step{self.calls}.onnx"
        feeds = export_for_timing(module, self.example_inputs, self.source, path)
        job = Candidate(key="step", model=path, target=self.target)
        return measure_latency([job], feeds, self.timing)["step"].p50_ms


def export_for_timing(
    module: nn.Module, example_inputs: dict[str, torch.Tensor], source: LoadedSource | None, path: Path
) -> dict[str, np.ndarray]:
    """Export with edgekit's exporter (TorchScript, then dynamo) and return feeds at the example's shape."""
    from edgekit.converters.export import ExportOptions, export_onnx, plan_io
    from edgekit.converters.torch_io import to_numpy_feeds

    options = ExportOptions()
    plan = plan_io(_source_for(module, example_inputs, source), options)
    errors: list[str] = []
    for exporter in options.exporter_order():
        try:
            export_onnx(module, plan, path, exporter, options.opset)
            break
        except ExportError as exc:
            errors.append(str(exc))
    else:
        raise ExportError("; ".join(errors))
    feeds = to_numpy_feeds(example_inputs)
    fits = all(s.name in feeds and _fits(s.shape, feeds[s.name].shape) for s in plan.inputs)
    return feeds if fits else plan.example


def _fits(spec_shape: tuple[int | str, ...], shape: tuple[int, ...]) -> bool:
    same_rank = len(spec_shape) == len(shape)
    return same_rank and all(isinstance(d, str) or d == n for d, n in zip(spec_shape, shape, strict=False))


def _source_for(
    module: nn.Module, example_inputs: dict[str, torch.Tensor], source: LoadedSource | None
) -> LoadedSource:
    """The source's export facts with the pruned module; without a source, ones read off the example."""
    import torch

    from edgekit.sources import LoadedSource
    from edgekit.sources.examples import forward_names

    if source is not None:
        return dataclasses.replace(source, module=module)
    names = [n for n in forward_names(module) if n in example_inputs] or list(example_inputs)
    ranges = {
        k: (int(v.min()), int(v.max()))
        for k, v in example_inputs.items()
        if not v.is_floating_point() and v.dtype != torch.bool and v.numel()
    }
    return LoadedSource(
        module=module, example_inputs=dict(example_inputs), kind="python", ref="pruned model", sha256=None,
        input_names=names, int_ranges=ranges,
    )  # fmt: skip
