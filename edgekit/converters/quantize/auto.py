"""``--quantize auto``: the fastest scheme per target that still meets a fidelity target on held-back data.

For each target, candidate schemes are tried in order of expected speed there (dynamic INT8 first on ONNX
Runtime's CPU provider, static QDQ for OpenVINO and TensorRT, FP16 for TensorRT). A scheme that misses the
target on held-back samples gets a sensitivity search: first its activation x activation MatMuls (attention
scores; small in FLOPs, and where a runtime's lower precision elsewhere hurts most: NNCF's INT8 Q.K^T under
OpenVINO's bf16 loses long sentences) are kept in float as one step, then the most sensitive weight nodes, 1, 2,
4, ... of them (up to half), each step judged on the real outputs of every target, until it meets the target. Latency is
then measured on each target in fresh processes, candidates alternating, with the FP32 model as the baseline;
the fastest candidate that meets the target wins (FP32 itself wins where no quantized model is faster); when the
candidates within the noise of the winner are all timed again, longer, before one is taken. The CPU the
choice was made on is recorded with the CPU features the winner is fast because of (INT8: VNNI/AMX), so a CPU
without them loads the FP32 model instead (``edgekit.artifact.variant_for``). A mean
cosine target is met only when the 95% lower confidence bound of the mean over the held-back samples clears it. Every
candidate's fidelity and latency is kept for the manifest. No quantized candidate meeting the target on a
target is a :class:`ValidationError` carrying the best candidate's numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmark.measure import CANDIDATE_TIMING, Candidate, measure_latency
from edgekit.benchmark.plan import BenchConfig
from edgekit.converters.calibration import CalibrationSet
from edgekit.converters.quantize.model import quantize_model
from edgekit.converters.quantize.options import QuantizeOptions, QuantizeResult
from edgekit.errors import InputError, ValidationError
from edgekit.fidelity import FidelityGoal, fidelity_metrics, parse_fidelity, run_all, tolerance_for
from edgekit.goals import higher_is_better
from edgekit.runtimes import DEFAULT_TARGET

Feeds = dict[str, np.ndarray]
ProgressFn = Callable[[str], None]
BASELINE = "fp32"
NEAR_TIE = 0.05  # candidates whose p50s are closer than this (or than their rounds' spread) are timed again
# schemes per target, in order of expected speed there
CANDIDATES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("int8-dynamic", "int8"),
    # int8-nncf* where NNCF is installed (the nncf extra); -sym: NNCF's performance preset (symmetric
    # activations), which OpenVINO's CPU runs on its faster INT8 kernels (MiniLM on AMX: ~19% less FC time)
    "openvino": ("int8", "int8-nncf", "int8-nncf-sym"),
    "tensorrt": ("int8-sym", "fp16"),
}


def candidates_for(target: str) -> tuple[str, ...]:
    """The schemes ``auto`` tries on ``target`` here: its candidates whose engine is installed."""
    from edgekit.converters.quantize.nncf_engine import nncf_available

    return tuple(s for s in CANDIDATES[target] if not s.startswith("int8-nncf") or nncf_available())


def default_auto_targets() -> list[str]:
    """Every CPU runtime installed here that auto has candidates for: the registry says which, not a list here."""
    from edgekit.runtimes import available_targets

    return [t for t in available_targets("cpu") if t in CANDIDATES]


def scheme_options(scheme: str, calibration: str) -> QuantizeOptions:
    """The quantization options behind a scheme name."""
    if scheme == "int8-sym":  # TensorRT: int8 activations with zero point 0 as well
        return QuantizeOptions(mode="int8", calibration=calibration, activation_symmetric=True)
    if scheme == "int8":
        return QuantizeOptions(mode="int8", calibration=calibration)
    if scheme == "int8-nncf":  # NNCF calibrates its own way (MinMax with its own range estimators)
        return QuantizeOptions(mode="int8", engine="nncf")
    if scheme == "int8-nncf-sym":
        return QuantizeOptions(mode="int8", engine="nncf", activation_symmetric=True)
    return QuantizeOptions(mode=scheme)


@dataclass(frozen=True)
class AutoOptions:
    fidelity: FidelityGoal = field(default_factory=lambda: parse_fidelity("cosine>=0.99"))
    targets: tuple[str, ...] = (DEFAULT_TARGET,)
    calibration: str = "minmax"
    latency: BenchConfig = CANDIDATE_TIMING  # how candidates are timed: the bench's method, shorter rounds
    sensitivity_samples: int = 16
    max_excluded_fraction: float = 0.5
    output_kinds: Mapping[str, str] = field(default_factory=dict)  # which outputs are classifiers (top1)

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in CANDIDATES]
        if unknown:
            raise InputError(f"--quantize auto has no candidates for target {unknown[0]!r} ({', '.join(CANDIDATES)})")


@dataclass
class Step:
    """One quantized model of a scheme: which nodes stayed float, its file, and its fidelity per target."""

    scheme: str
    excluded: list[str]
    result: QuantizeResult
    fidelity: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class AutoResult:
    variants: dict[str, Path]  # target -> chosen file (the base model for FP32)
    candidates: list[dict[str, Any]]
    chosen: dict[str, str]  # target -> scheme
    search: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # scheme -> every step tried


class _Context:
    """What every step needs: the base model, data, references, and where to write."""

    def __init__(self, base: Path, work: Path, data: CalibrationSet, refs: list[dict], opts: AutoOptions, say: Any):
        self.base, self.work, self.data, self.refs, self.opts, self.say = base, work, data, refs, opts, say

    def fidelity(self, path: Path, target: str) -> dict[str, float]:
        from edgekit.runtimes.loading import load, model_ref

        with load(model_ref(path), target=target) as session:
            outputs = run_all(session.run, self.data.heldout)
            precision = session.info().precision
        pooled = fidelity_metrics(self.refs, outputs, self.opts.output_kinds, self.opts.fidelity.recall_ks)
        judged = worst_over_sources(pooled, self.data.heldout_slices(), self.refs, outputs, self.opts.output_kinds)
        return {**judged, "within_gate": within_gate(judged, precision)}


def within_gate(metrics: Mapping[str, Any], precision: str) -> bool:
    """Whether every held-back sample is within the parity gate's per-sample bounds for ``precision``: a
    candidate whose mean meets the goal while one sample falls out of the gate would fail the convert later."""
    tol = tolerance_for(precision)
    return metrics.get("min_cosine", 0.0) >= tol.min_cosine and metrics.get("rel_l2", np.inf) <= tol.rel_l2


# per-sample metrics a source can be worse on; set metrics (recall, spearman) need the whole held-back set
_PER_SAMPLE = ("cosine", "cosine_lcb", "min_cosine", "rel_l2", "max_abs", "top1")


def worst_over_sources(
    pooled: dict[str, Any], slices: Mapping[str, slice], refs: Sequence[dict], outputs: Sequence[dict],
    kinds: Mapping[str, str],
) -> dict[str, Any]:  # fmt: skip
    """The pooled metrics with each per-sample metric replaced by its worst source's: held-back text like the
    calibration text flatters a model, so a goal must hold on the other text too (``by_source`` keeps each)."""
    if len(slices) < 2:
        return pooled
    by_source = {name: fidelity_metrics(refs[cut], outputs[cut], kinds) for name, cut in slices.items()}
    out = dict(pooled)
    for metric in (m for m in _PER_SAMPLE if m in pooled):
        values = [m[metric] for m in by_source.values() if metric in m]
        out[metric] = (min if higher_is_better(metric) else max)(values)
    out["by_source"] = {name: {k: m[k] for k in _PER_SAMPLE if k in m} | {"samples": m["samples"]}
                        for name, m in by_source.items()}  # fmt: skip
    return out


def auto_quantize(
    base: Path, work: Path, data: CalibrationSet, references: list[dict], latency_feeds: Feeds,
    options: AutoOptions, say: ProgressFn,
) -> AutoResult:  # fmt: skip
    """Search candidates for every target in ``options.targets``; see the module docstring."""
    if not data.heldout:
        raise InputError("--quantize auto needs held-back samples: give at least 3 calibration samples")
    options.fidelity.check_texts(len(data.heldout))
    ctx = _Context(base, work, data, references, options, say)
    schemes = _schemes(options.targets)
    steps = {s: _search(ctx, s, [t for t in options.targets if s in candidates_for(t)]) for s in schemes}
    picks = {t: {s: _pick_step(steps[s], t, options.fidelity) for s in candidates_for(t)} for t in options.targets}
    baseline = {t: ctx.fidelity(base, t) for t in options.targets}
    latencies = _latencies(ctx, picks, latency_feeds)
    records, chosen, variants = [], {}, {}
    for t in options.targets:
        rows = _rows(t, picks[t], baseline[t], latencies[t], options.fidelity)
        records.extend(rows)
        best = _settle_near_tie(ctx, t, rows, _choose(t, rows, options.fidelity), latency_feeds)
        chosen[t] = best["scheme"]
        variants[t] = base if best["scheme"] == BASELINE else Path(best["path"])
    search = {s: [{"kept_float": len(st.excluded), "fidelity": st.fidelity} for st in steps[s]] for s in steps}
    return AutoResult(variants, records, chosen, search)


def _meets(goal: FidelityGoal, metrics: Mapping[str, Any]) -> bool:
    """Auto's judgement: a mean must clear the goal with its lower confidence bound, so that a candidate that
    just scrapes past on the held-back samples (and would miss on other text) is not taken; and every sample
    must be within the parity gate the chosen variant has to pass."""
    return goal.met(metrics, conservative=True) and bool(metrics.get("within_gate", True))


def _schemes(targets: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(s for t in targets for s in candidates_for(t)))


def _search(ctx: _Context, scheme: str, targets: list[str]) -> list[Step]:
    """Quantize, then keep the most sensitive nodes in float until every target meets the fidelity target."""
    opts = scheme_options(scheme, ctx.opts.calibration)
    ranges = ctx.work / f"{scheme}.ranges.json"
    ctx.say(f"auto: quantizing {scheme}")
    first = quantize_model(ctx.base, ctx.work / f"{scheme}.0.onnx", opts, ctx.data.calibration, ranges=ranges)
    steps = [_judge(ctx, Step(scheme, [], first), targets)]
    if all(_meets(ctx.opts.fidelity, steps[0].fidelity[t]) for t in targets) or opts.mode == "fp16":
        return steps
    from edgekit.converters.quantize.sensitivity import rank_nodes

    group = _activation_matmul_step(ctx, scheme, opts, first, ranges, targets)
    kept: list[str] = []  # the activation x activation MatMuls, when keeping them in float helped
    if group is not None:
        steps.append(group)
        if all(_meets(ctx.opts.fidelity, group.fidelity[t]) for t in targets):
            return steps
        if _helped(ctx.opts.fidelity, steps[0], group, targets):
            kept = group.excluded
    ctx.say(f"auto: {scheme} misses {ctx.opts.fidelity}; ranking layer sensitivity")
    samples = ctx.data.calibration[: ctx.opts.sensitivity_samples]
    ranking = [n for n, _ in rank_nodes(ctx.base, first.path, first.quantized_nodes, samples)]
    k, limit = 1, min(max(1, int(len(ranking) * ctx.opts.max_excluded_fraction)), len(ranking) - 1)
    while k <= limit:  # never every node: a model with nothing quantized is the FP32 baseline
        excluded = [*kept, *ranking[:k]]
        ctx.say(f"auto: {scheme} with the {k} most sensitive node(s) in float")
        dst = ctx.work / f"{scheme}.{k}.onnx"
        result = quantize_model(ctx.base, dst, opts.excluding(excluded), ctx.data.calibration, ranges=ranges)
        pending = [t for t in targets if not any(_meets(ctx.opts.fidelity, s.fidelity.get(t, {})) for s in steps)]
        steps.append(_judge(ctx, Step(scheme, excluded, result), pending))
        if all(any(_meets(ctx.opts.fidelity, s.fidelity.get(t, {})) for s in steps) for t in targets):
            break
        k *= 2
    return steps


def _activation_matmul_step(
    ctx: _Context, scheme: str, opts: QuantizeOptions, first: QuantizeResult, ranges: Path, targets: list[str]
) -> Step | None:
    """``first`` with its activation x activation MatMuls kept in float, judged; None when it has none."""
    from edgekit.converters.quantize.sensitivity import activation_matmuls

    pairs = activation_matmuls(first.path)
    if not pairs:
        return None
    ctx.say(f"auto: {scheme} with its {len(pairs)} activation x activation MatMul(s) in float")
    dst = ctx.work / f"{scheme}.a.onnx"
    result = quantize_model(ctx.base, dst, opts.excluding(pairs), ctx.data.calibration, ranges=ranges)
    return _judge(ctx, Step(scheme, pairs, result), targets)


def _helped(goal: FidelityGoal, before: Step, after: Step, targets: Sequence[str]) -> bool:
    """Whether ``after`` is more faithful than ``before`` on every target (per the goal; min cosine breaks ties)."""

    def better(t: str) -> bool:
        a, b = after.fidelity[t], before.fidelity[t]
        return goal.better(a, b) or a.get("min_cosine", 0.0) > b.get("min_cosine", 0.0)

    return all(better(t) for t in targets)


def _judge(ctx: _Context, step: Step, targets: Sequence[str]) -> Step:
    for t in targets:
        step.fidelity[t] = ctx.fidelity(step.result.path, t)
    return step


def _pick_step(steps: list[Step], target: str, goal: FidelityGoal) -> Step:
    """The first (least excluded, so fastest) step meeting the goal on ``target``, else the most faithful."""
    judged = [s for s in steps if target in s.fidelity]
    for s in judged:
        if _meets(goal, s.fidelity[target]):
            return s
    best = judged[0]
    for s in judged[1:]:
        if goal.better(s.fidelity[target], best.fidelity[target]):
            best = s
    return best


def _latencies(ctx: _Context, picks: Mapping[str, Mapping[str, Step]], feeds: Feeds) -> dict[str, dict]:
    """Per target: the FP32 baseline and each candidate, alternating, each run in its own process."""
    out = {}
    for target, by_scheme in picks.items():
        ctx.say(f"auto: timing {len(by_scheme) + 1} models on {target}")
        jobs = [Candidate(BASELINE, ctx.base, target)]
        jobs += [Candidate(s, step.result.path, target) for s, step in by_scheme.items()]
        out[target] = measure_latency(jobs, feeds, ctx.opts.latency)
    return out


def _rows(target: str, picks: Mapping[str, Step], baseline: dict, lat: Mapping[str, Any], goal: FidelityGoal) -> list:
    base_ms = lat[BASELINE].p50_ms
    # the FP32 graph runs at the target's default precision (OpenVINO: bf16 where the CPU has it natively), and
    # is judged and timed so: a candidate like any other, with its effective precision recorded
    rows = [{"target": target, "scheme": BASELINE, "file": None, "path": None, "excluded_nodes": [],
             "precision": lat[BASELINE].precision or "fp32",
             "fidelity": baseline, "meets": _meets(goal, baseline), "latency": lat[BASELINE].to_dict(),
             "speedup_vs_fp32": 1.0}]  # fmt: skip
    for scheme, step in picks.items():
        fid = step.fidelity[target]
        rows.append({
            "target": target, "scheme": scheme, "file": step.result.path.name, "path": str(step.result.path),
            "precision": step.result.precision, "excluded_nodes": step.excluded, "fidelity": fid,
            "meets": _meets(goal, fid), "latency": lat[scheme].to_dict(),
            "speedup_vs_fp32": round(base_ms / lat[scheme].p50_ms, 3) if lat[scheme].p50_ms else None,
        })  # fmt: skip
    return rows


def _choose(target: str, rows: list[dict], goal: FidelityGoal) -> dict:
    quantized = [r for r in rows if r["scheme"] != BASELINE]
    meeting = [r for r in quantized if r["meets"]]
    if not meeting:
        best = quantized[0]
        for r in quantized[1:]:
            if goal.better(r["fidelity"], best["fidelity"]):
                best = r
        raise ValidationError(
            f"--quantize auto: no candidate meets {goal} on {target}; best was {best['scheme']} "
            f"({goal.values(best['fidelity'])} with "
            f"{len(best['excluded_nodes'])} node(s) kept in float, p50 {best['latency']['p50_ms']:.2f} ms)"
        )
    fastest = min([*meeting, rows[0]], key=lambda r: r["latency"]["p50_ms"])
    fastest["chosen"] = True
    return fastest


def _spread(row: Mapping[str, Any]) -> float:
    rounds = row["latency"].get("rounds_p50_ms") or []
    p50 = row["latency"]["p50_ms"]
    return (max(rounds) - min(rounds)) / p50 if len(rounds) > 1 and p50 else 0.0


def _settle_near_tie(ctx: _Context, target: str, rows: list[dict], best: dict, feeds: Feeds) -> dict:
    """When other candidates are within the noise of the winner (:data:`NEAR_TIE`, or the rounds' own spread), time
    all of them again together with twice the rounds and take the fastest: a choice within noise would be a coin
    toss, and a third candidate as close as the runner-up deserves the same second look."""
    others = [r for r in rows if r is not best and (r["meets"] or r["scheme"] == BASELINE)]
    close = [r for r in others if _margin(best, r) <= max(NEAR_TIE, _spread(best), _spread(r))]
    if not close:
        return best
    contenders = [best, *sorted(close, key=lambda r: r["latency"]["p50_ms"])]
    names = ", ".join(r["scheme"] for r in contenders)
    ctx.say(f"auto: {names} within {max(_margin(best, r) for r in close):.1%} on {target}; timing them again")
    latency = ctx.opts.latency
    config = replace(latency, rounds=2 * latency.rounds, duration_s=2 * latency.duration_s)
    jobs = [Candidate(r["scheme"], Path(r["path"]) if r["path"] else ctx.base, target) for r in contenders]
    again = measure_latency(jobs, feeds, config)
    for r in contenders:
        r["remeasured"] = again[r["scheme"]].to_dict()
    winner = min(contenders, key=lambda r: r["remeasured"]["p50_ms"])
    best.pop("chosen", None)
    winner["chosen"] = True
    return winner


def _margin(best: Mapping[str, Any], other: Mapping[str, Any]) -> float:
    """How much slower ``other`` timed than ``best`` (0.05: 5%)."""
    return other["latency"]["p50_ms"] / best["latency"]["p50_ms"] - 1


def keep_files(result: AutoResult, artifact: Path, base_name: str) -> dict[str, str]:
    """Copy each target's chosen model into the artifact; ``{target: file name}``. Unchosen files stay behind."""
    names: dict[Path, str] = {}
    variants = {}
    for target, path in result.variants.items():
        if path.name == base_name and path.parent == artifact:
            variants[target] = base_name
            continue
        if path not in names:
            scheme = result.chosen[target]
            name = f"model.{scheme}.onnx"
            n = 2
            while name in names.values():
                name, n = f"model.{scheme}.{n}.onnx", n + 1
            names[path] = name
            shutil.copy2(path, artifact / name)
        variants[target] = names[path]
    for row in result.candidates:
        row.pop("path", None)
        row["file"] = variants[row["target"]] if row.get("chosen") else None  # unchosen models are not kept
    return variants
