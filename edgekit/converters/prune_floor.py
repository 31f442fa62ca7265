"""The fidelity floor of ``convert --prune-until ... --fidelity ...``: how long a probe distils, what data times a
quantized step, how measured fidelity is judged, and the one-line failure when nothing meets budget and floor.

A ratio that is fast enough is only worth shipping if the pruned model, once distilled, still computes what the
original does. Distilling every candidate fully would cost the whole budget per ratio, so each is probed with a
short, time-boxed distillation (a sixth of the distillation budget, at least a minute) and judged on held-out
rows only; the winner is then distilled fully and judged again. The goal objects are
:mod:`edgekit.goals`' own: a probe's metrics are renamed to the goal's names, never re-parsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import InputError, ValidationError
from edgekit.retrieval import recall_k

if TYPE_CHECKING:
    from edgekit.converters.compress_data import CompressData
    from edgekit.converters.prune.latency import Budget
    from edgekit.converters.quantize.variants import QuantizeRequest
    from edgekit.goals import FidelityGoal
    from edgekit.sources import LoadedSource

Feeds = dict[str, np.ndarray]
PROBE_MIN_SECONDS = 60.0
PROBE_SHARE = 6  # a probe distils for this fraction of the distillation time budget (at least PROBE_MIN_SECONDS)
TIMING_CALIBRATION = 32  # samples that calibrate a static-INT8 step for timing: ranges matter little to speed
FLOOR_METRICS = ("cosine", "min_cosine", "spearman")  # what held-out fidelity measures, besides recall@k


def probe_seconds(distill_time: float | None, override: float | None = None) -> float:
    """A probe's time box: ``override`` when set, else a sixth of the distillation budget, at least a minute."""
    if override is not None:
        return float(override)
    return max(PROBE_MIN_SECONDS, (distill_time or 0.0) / PROBE_SHARE)


def check_floor(goal: FidelityGoal, data: CompressData | None) -> None:
    """The floor reads held-out rows and metrics they give; anything else is bad input, before any pruning."""
    if data is None or not data.heldout:
        raise InputError(
            "--fidelity with --prune-until is judged on held-out rows: give --distill-data (or a model with a"
            " tokenizer, which reads edgekit's corpus)"
        )
    unknown = [t.metric for t in goal.targets if t.metric not in FLOOR_METRICS and recall_k(t.metric) is None]
    if unknown:
        raise InputError(
            f"--prune-until's fidelity floor reads {', '.join(FLOOR_METRICS)} and recall@K, not {unknown[0]}"
        )
    goal.check_texts(len(data.heldout))


def goal_view(measured: Mapping[str, Any]) -> dict[str, float]:
    """Held-out fidelity under the goal's names: its ``mean_cosine`` is the goal's ``cosine``."""
    view = {k: float(v) for k, v in measured.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if "mean_cosine" in view:
        view["cosine"] = view["mean_cosine"]
    return view


def timing_calibration(quantize: QuantizeRequest | None, src: LoadedSource, data: CompressData | None) -> list[Feeds]:
    """A few dozen samples to calibrate a static-INT8 step for timing: convert's calibration data, else the rows
    pruning reads; none when neither reads (the step is then timed in FP32, and says so)."""
    if quantize is not None and quantize.calib_data is not None:
        try:
            return _calibration_subset(quantize, src)
        except InputError:
            pass  # the quantize stage reports this data's problem itself; timing falls back to the train rows
    return list(data.train[:TIMING_CALIBRATION]) if data is not None else []


def _calibration_subset(quantize: QuantizeRequest, src: LoadedSource) -> list[Feeds]:
    from edgekit.artifact import TOKENIZER_FILE
    from edgekit.converters.calibration import CalibrationOptions, load_calibration
    from edgekit.converters.distill.data import specs_from_examples

    assert src.example_inputs is not None and quantize.calib_data is not None
    specs = specs_from_examples(src.example_inputs, src.dynamic_dims)
    options = CalibrationOptions(samples=TIMING_CALIBRATION, seed=quantize.seed)
    tokenizer = src.extra_files.get(TOKENIZER_FILE)
    return list(load_calibration(quantize.calib_data, specs, options, tokenizer=tokenizer).calibration)


def require_search_met(record: Mapping[str, Any], budget: Budget, goal: FidelityGoal) -> None:
    """Nothing within budget, or the first ratio within it misses the floor: one line with the best candidate."""
    if record["met"]:
        return
    base = float(record["steps"][0]["latency_ms"])
    head = f"--prune-until {budget} with fidelity floor {goal} on {record['target']}"
    if not record.get("probes"):
        last = record["steps"][-1]
        raise ValidationError(
            f"{head}: no ratio meets the budget; the most pruned, ratio {last['ratio']:g}, reaches"
            f" {budget.reached(last['latency_ms'], base)} (fidelity not probed)"
        )
    probe = record["probes"][0]
    step = next(s for s in record["steps"] if s["ratio"] == probe["ratio"])
    raise ValidationError(
        f"{head}: the smallest ratio within budget, {probe['ratio']:g} ({budget.reached(step['latency_ms'], base)}),"
        f" reaches {goal.values(goal_view(probe['fidelity']))} after a {probe['seconds']:g} s probe"
    )


def require_final(record: dict[str, Any], measured: Mapping[str, Any], goal: FidelityGoal, budget: Budget) -> None:
    """The winner after full distillation: recorded in ``record`` (``final``), and below the floor an error."""
    view = goal_view(measured)
    record["final"] = {"fidelity": dict(measured), "met": goal.met(view)}
    if record["final"]["met"]:
        return
    ratio = _winner_ratio(record)
    step = next((s for s in record["steps"] if s["ratio"] == ratio), record["steps"][-1])
    reached = budget.reached(step["latency_ms"], float(record["steps"][0]["latency_ms"]))
    raise ValidationError(
        f"--prune-until {budget} with fidelity floor {goal}: the distilled model at ratio {ratio:g} ({reached})"
        f" reaches {goal.values(view)} on {measured.get('samples', 0)} held-out rows"
    )


def _winner_ratio(record: Mapping[str, Any]) -> float:
    passed: Sequence[Mapping[str, Any]] = [p for p in record.get("probes", []) if p["met"]]
    return float(passed[-1]["ratio"]) if passed else float(record["steps"][-1]["ratio"])
