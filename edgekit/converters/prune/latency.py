"""Latency-aware pruning: prune in growing steps, time each step on the target, stop at the budget; with a
fidelity probe, go on to the largest ratio that still keeps the fidelity floor.

Torch-Pruning counts MACs, but what a device pays is latency on its runtime, and the two do not move together
(attention is memory bound; small GEMMs stop scaling). So each step is exported to ONNX and timed where it
will run, as the model that ships (:mod:`edgekit.converters.prune.timing`). Every step prunes the original at the
step's ratio (not the previous step's result), so a step's model does not depend on the path.

The budget is a latency ceiling (``latency<=6ms``) or a speed-up over the unpruned model timed the same way
(``speedup>=1.3``). Fast enough is half the question: with a ``probe`` (what a short distillation of that
ratio keeps, judged on held-out rows), the first ratio that meets the budget and the larger ones after it are
probed in turn, stopping at the first that misses the floor, and the largest that passed wins.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.converters.prune.timing import FP32, Timing
from edgekit.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekit.benchmark.plan import BenchConfig
    from edgekit.converters.prune.options import PruneOptions, PruneResult
    from edgekit.sources import LoadedSource

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_LATENCY = re.compile(rf"^\s*latency\s*(<=?)\s*{_NUMBER}\s*(ms|s|us)\s*$", re.IGNORECASE)
_SPEEDUP = re.compile(rf"^\s*speedup\s*(>=?)\s*{_NUMBER}\s*x?\s*$", re.IGNORECASE)
_MS_PER_UNIT = {"ms": 1.0, "s": 1000.0, "us": 0.001}
MAX_PROBES = 3  # fidelity probes after the first ratio within budget: each is a short distillation
Measure = Callable[["nn.Module"], "float | Timing"]
Probe = Callable[[float, "PruneResult"], dict[str, Any]]  # (ratio, pruned) -> {"seconds", "fidelity", "met"}


@dataclass(frozen=True)
class Budget:
    """A latency ceiling in ms (``kind`` latency) or a speed-up floor over the unpruned model (``kind`` speedup)."""

    kind: str
    value: float

    def met(self, latency_ms: float, baseline_ms: float) -> bool:
        value = self.achieved(latency_ms, baseline_ms)
        return value <= self.value if self.kind == "latency" else value >= self.value

    def achieved(self, latency_ms: float, baseline_ms: float) -> float:
        """What the budget reads: the latency itself, or the speed-up over the unpruned model."""
        return latency_ms if self.kind == "latency" else baseline_ms / max(latency_ms, 1e-9)

    def reached(self, latency_ms: float, baseline_ms: float) -> str:
        """``5.1 ms`` or ``1.42x (5.1 ms)``: what a one-line message shows."""
        if self.kind == "latency":
            return f"{latency_ms:.3g} ms"
        return f"speed-up {self.achieved(latency_ms, baseline_ms):.3g}x ({latency_ms:.3g} ms)"

    def __str__(self) -> str:
        return f"latency<={self.value:g}ms" if self.kind == "latency" else f"speedup>={self.value:g}"


def parse_budget(text: str) -> Budget:
    """``"latency<=6ms"`` (``<`` and the units s, ms, us too) or ``"speedup>=1.3"``; else a one-line InputError."""
    example = "expected for example 'latency<=6ms' or 'speedup>=1.3'"
    latency = _LATENCY.match(text) if isinstance(text, str) else None
    speedup = _SPEEDUP.match(text) if isinstance(text, str) and latency is None else None
    if latency is None and speedup is None:
        raise InputError(f"cannot read latency budget {text!r}; {example}")
    if latency is not None:
        budget = Budget("latency", float(latency.group(2)) * _MS_PER_UNIT[latency.group(3).lower()])
    else:
        assert speedup is not None
        budget = Budget("speedup", float(speedup.group(2)))
    if budget.value <= 0:
        raise InputError(f"latency budget must be above zero, got {text!r}; {example}")
    return budget


def step_ratios(step: float, max_ratio: float) -> list[float]:
    """step, 2*step, ... up to and including ``max_ratio``."""
    count = math.floor(max_ratio / step + 1e-9)
    ratios = [round(step * i, 6) for i in range(1, count + 1)]
    return ratios if ratios and math.isclose(ratios[-1], max_ratio) else [*ratios, round(max_ratio, 6)]


def prune_until(
    module: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    budget: Budget | float,
    target: str,
    step: float = 0.1,
    max_ratio: float = 0.9,
    measure: Measure | None = None,
    *,
    options: PruneOptions | None = None,
    data: Iterable[dict[str, torch.Tensor]] | None = None,
    source: LoadedSource | None = None,
    timing: BenchConfig | None = None,
    work_dir: Path | None = None,
    scheme: str = FP32,
    calibration: Sequence[dict[str, np.ndarray]] = (),
    probe: Probe | None = None,
    max_probes: int = MAX_PROBES,
) -> PruneResult:
    """Prune ``module`` at ratios step, 2*step, ... <= ``max_ratio`` until ``measure(model)`` (default: export,
    quantize as ``scheme``, time on ``target`` in its own process, p50 ms) meets ``budget`` (a float: ms).

    ``options`` gives kind, importance, ignored layers...; its ``ratio`` is replaced by each step's, and an
    ``heads_ratio`` (and an explicit ``ffn_ratio``) caps that part. With ``probe``, the first ratio within budget
    and up to ``max_probes - 1`` larger ones are probed; the largest that passes comes back. The plan's
    ``prune_until`` records every step (ratio, params, MACs, latency, the model timed), every probe, and whether
    budget and floor were met; nothing meeting them comes back with ``met: false`` (the caller decides).
    """
    from edgekit.converters.prune.options import PruneOptions, check_ratio
    from edgekit.converters.prune.timing import TargetTimer

    budget = _as_budget(budget)
    check_ratio("step", step)
    check_ratio("max_ratio", max_ratio)
    if step > max_ratio:
        raise InputError(f"step {step} is larger than max_ratio {max_ratio}")
    base = options or PruneOptions(ratio=step)
    batches = list(data) if data is not None else None  # every step reads it again
    ratios = step_ratios(step, max_ratio)
    with tempfile.TemporaryDirectory(prefix="edgekit-prune-") as tmp:
        timer = measure or TargetTimer(target, example_inputs, source, Path(work_dir or tmp), timing, scheme=scheme,
                                       calibration=calibration)  # fmt: skip
        search = _Search(module, example_inputs, base, batches, budget, timer)
        ratio, result, met = search.scan(ratios)
        if probe is not None and met:
            result, met = search.probe_upward(ratio, result, ratios, probe, max_probes)
        elif probe is not None:
            search.decision = f"none: {budget} is not met up to max_ratio {max_ratio}"
    how = "injected measure" if measure is not None else f"p50 on {target} in a separate process"
    result.plan["prune_until"] = search.record(target, how, scheme, met, probe is not None)
    if not met:
        result.plan.setdefault("notes", []).append(search.decision or f"{budget} not met at max_ratio {max_ratio}")
    return result


def _as_budget(budget: Budget | float) -> Budget:
    """A Budget as given, or a number of milliseconds checked to be one."""
    if isinstance(budget, Budget):
        return budget
    ok = isinstance(budget, int | float) and not isinstance(budget, bool) and math.isfinite(budget)
    if not ok or budget <= 0:
        raise InputError(f"latency budget must be a positive number of milliseconds, got {budget!r}")
    return Budget("latency", float(budget))


class _Search:
    """The steps and probes of one ``prune_until`` run, each pruned from the original and timed the same way."""

    def __init__(
        self, module: nn.Module, example_inputs: dict[str, torch.Tensor], base: PruneOptions,
        batches: list[dict[str, torch.Tensor]] | None, budget: Budget, timer: Measure,
    ) -> None:  # fmt: skip
        self.module, self.example_inputs, self.base, self.batches = module, example_inputs, base, batches
        self.budget, self.timer = budget, timer
        self.steps: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []
        self.decision: str | None = None

    @property
    def baseline_ms(self) -> float:
        return float(self.steps[0]["latency_ms"])

    def step(self, ratio: float) -> tuple[PruneResult, bool]:
        """Prune the original at ``ratio`` (0: the original itself), time it, record it; and is it within budget?"""
        from edgekit.converters.prune.module import prune_module

        if ratio == 0.0:
            result = _unpruned(self.module, self.example_inputs, self.base)
        else:
            result = prune_module(self.module, self.example_inputs, _at_ratio(self.base, ratio), self.batches)
        timed = _as_timing(self.timer(result.module))
        self.steps.append(_step_record(result, ratio, timed))
        if self.budget.kind == "speedup":
            self.steps[-1]["speedup"] = round(self.budget.achieved(timed.latency_ms, self.baseline_ms), 4)
        return result, self.budget.met(timed.latency_ms, self.baseline_ms)

    def scan(self, ratios: Sequence[float]) -> tuple[float, PruneResult, bool]:
        """Ratios ascending from 0 until one is within budget: that one, else the largest."""
        ratio, (result, met) = 0.0, self.step(0.0)
        for ratio in ratios if not met else []:
            result, met = self.step(ratio)
            if met:
                break
        return ratio, result, met

    def probe_upward(
        self, first: float, result: PruneResult, ratios: Sequence[float], probe: Probe, max_probes: int
    ) -> tuple[PruneResult, bool]:
        """Probe ``first`` and larger ratios in turn until one misses budget or floor; the largest passing wins."""
        winner: tuple[float, PruneResult] | None = None
        stop = f"the probe cap ({max_probes}) was reached"
        cap = max_probes + (first == 0.0)  # the original's own probe is free: it is the reference
        for ratio in [first, *(r for r in ratios if r > first)][:cap]:
            within = True
            if ratio != first:
                result, within = self.step(ratio)
            if not within:
                stop = f"ratio {ratio:g} misses {self.budget}"
                break
            self.probes.append({"ratio": ratio, **probe(ratio, result)})
            if not self.probes[-1]["met"]:
                stop = f"ratio {ratio:g} misses the fidelity floor"
                break
            winner = (ratio, result)
        else:
            stop = stop if len(self.probes) == cap else "max_ratio was reached"
        return self._decided(first, winner, stop, result)

    def _decided(
        self, first: float, winner: tuple[float, PruneResult] | None, stop: str, last: PruneResult
    ) -> tuple[PruneResult, bool]:
        if winner is None:
            self.decision = f"none: ratio {first:g} is the first within {self.budget} and misses the fidelity floor"
            return last, False
        self.decision = f"ratio {winner[0]:g}: the largest probed ratio within the budget and the floor ({stop})"
        return winner[1], True

    def record(self, target: str, how: str, scheme: str, met: bool, probed: bool) -> dict[str, Any]:
        """The plan's ``prune_until``: the budget, every step and probe, and what was decided."""
        record: dict[str, Any] = {"budget": str(self.budget), "target": target, "met": met, "measured": how,
                                  "timed": scheme, "steps": self.steps}  # fmt: skip
        record["budget_ms" if self.budget.kind == "latency" else "speedup"] = self.budget.value
        if probed:
            record.update(probes=self.probes, decision=self.decision)
        return record


def _as_timing(value: float | Timing) -> Timing:
    """An injected measure may return plain milliseconds."""
    return value if isinstance(value, Timing) else Timing(float(value))


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


def _step_record(result: PruneResult, ratio: float, timed: Timing) -> dict[str, Any]:
    record = {"ratio": ratio, "params": result.params_after, "macs": result.macs_after,
              "latency_ms": round(float(timed.latency_ms), 4), "timed": timed.model}  # fmt: skip
    return {**record, "note": timed.note} if timed.note else record
