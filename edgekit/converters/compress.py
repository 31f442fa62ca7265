"""The torch-side stages of ``edgekit convert``: prune, then distill the pruned student from the original.

Both take and return the loaded source (its module replaced), and record what they did in a manifest stage,
including how close the compressed model stays to the original on the same inputs.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import Stage
from edgekit.converters.compress_request import DATA_IMPORTANCES, CompressRequest
from edgekit.errors import ExportError, InputError

if TYPE_CHECKING:
    from edgekit.converters.compress_data import CompressData, OriginalOnHeldout
    from edgekit.converters.prune.latency import Probe
    from edgekit.converters.prune.options import PruneOptions, PruneResult
    from edgekit.goals import FidelityGoal
    from edgekit.sources import LoadedSource

ProgressFn = Callable[[str], None]


def compress(
    src: LoadedSource, request: CompressRequest, say: ProgressFn
) -> tuple[LoadedSource, list[Stage], OriginalOnHeldout | None]:
    """Prune and/or distill ``src.module``; the original stays the teacher and the fidelity reference.

    Fidelity before and after distillation is measured on held-out data only (corpus evaluation split and the
    user's held-back share), never on what importance or distillation read. Also returned: the original model
    with those rows, to judge the variants that finally ship against (it runs only once one ships).
    """
    from edgekit.converters.compress_data import original_on_heldout

    if src.example_inputs is None:
        raise InputError(f"pruning and distillation need example inputs; {src.ref} gives none")
    data = _data(src, request, say)
    original = original_on_heldout(src.module, data, src.output_names or ["output"])
    teacher, student, stages = src.module, src.module, []
    if request.prunes:
        student, stage = _prune(src, request, data, say)
        stages.append(stage)
        _record_heldout(stage, "fidelity_before_distillation", teacher, student, src, data, request)
    if request.distill:
        if data is None:
            raise InputError(
                "--distill trains on edgekit's English corpus, and this model has no tokenizer to read it;"
                " give --distill-data with samples for the model's inputs"
            )
        student, stage = _distill(src, student, request, data, say, hidden=_hidden_pairs(request, student, stages))
        stages.append(stage)
        _record_heldout(stage, "fidelity_after_distillation", teacher, student, src, data, request)
    if request.floor is not None:
        _require_final_floor(stages, request)
    fidelity = _fidelity_to(teacher, student, src)
    stages[-1].metrics["fidelity_to_original_on_examples"] = fidelity
    return dataclasses.replace(src, module=student), stages, original


def _data(src: LoadedSource, request: CompressRequest, say: ProgressFn) -> CompressData | None:
    """Corpus and user rows; without distillation only the few corpus sentences importance reads."""
    from edgekit.converters.compress_data import IMPORTANCE_SAMPLES, compress_data

    corpus_texts = request.distill_texts if request.distill else IMPORTANCE_SAMPLES
    data = compress_data(src, request.distill_data, corpus_texts)
    if data is not None:
        say(f"data: {data.facts['train_samples']} train / {data.facts['heldout_samples']} held-out samples")
    return data


def _record_heldout(
    stage: Stage, key: str, teacher: Any, student: Any, src: LoadedSource, data: CompressData | None,
    request: CompressRequest,
) -> None:  # fmt: skip
    if data is None or not data.heldout:
        return
    try:
        stage.metrics[key] = _heldout(teacher, student, src, data, request)
    except ExportError:  # output count unknown for this source: the stage metrics still say what was done
        return


def _heldout(teacher: Any, student: Any, src: LoadedSource, data: CompressData, request: CompressRequest) -> dict:
    """Fidelity on the held-out rows, with the recall@k the floor names (if any)."""
    from edgekit.converters.compress_data import heldout_fidelity
    from edgekit.retrieval import DEFAULT_K

    names = src.output_names or ["output"]
    embedding = (request.distill_loss or _default_loss(src)) != "kl"
    ks = request.floor.recall_ks if request.floor is not None else ()
    return heldout_fidelity(teacher, student, data.heldout, names, embedding=embedding, ks=ks or (DEFAULT_K,))


def _require_final_floor(stages: list[Stage], request: CompressRequest) -> None:
    """The chosen model, fully distilled (or pruned only), against the floor; recorded in the prune plan."""
    from edgekit.converters.prune import parse_budget
    from edgekit.converters.prune_floor import require_final

    assert request.floor is not None and request.prune_until is not None
    key = "fidelity_after_distillation" if request.distill else "fidelity_before_distillation"
    measured = stages[-1].metrics.get(key, {})
    require_final(stages[0].metrics["prune_until"], measured, request.floor, parse_budget(request.prune_until))


def _importance(request: CompressRequest, src: LoadedSource, data: CompressData | None) -> str:
    """``auto``: activations on data for transformer neurons and heads; weight magnitude (l1) otherwise."""
    if request.prune_importance != "auto":
        return request.prune_importance
    if data is None or request.prune_kind != "structured":
        return "l1"
    from edgekit.converters.prune.transformer import find_units

    units = find_units(src.module)
    return "activation" if units.attention or units.ffn else "l1"


def _prune(
    src: LoadedSource, request: CompressRequest, data: CompressData | None, say: ProgressFn
) -> tuple[Any, Stage]:
    from edgekit.converters.prune import PruneOptions, prune_module

    assert src.example_inputs is not None
    ratio = request.prune if request.prune is not None else 0.1
    options = PruneOptions(
        ratio=ratio, kind=request.prune_kind, importance=_importance(request, src, data),
        heads_ratio=request.prune_heads or 0.0, seed=request.seed,
    )  # fmt: skip
    ranks = request.prune is not None or request.prune_until is not None  # neurons/channels, not only layers
    reads_data = ranks and data is not None and options.importance in DATA_IMPORTANCES
    batches = list(data.importance_batches()) if reads_data and data is not None else None
    dropped = _drop_layers(src, request.drop_layers, data, say) if request.drop_layers else None
    if request.prune_until is not None:
        result = _prune_until(src, request, data, options, batches, say)
    elif request.prune is not None:
        say(f"pruning ({request.prune_kind}, ratio {ratio:g}, importance {options.importance})")
        result = prune_module(src.module if dropped is None else dropped.module, src.example_inputs, options, batches)
    else:
        assert dropped is not None
        result = dropped
    if dropped is not None and result is not dropped:  # before: the model as given, not after dropping layers
        result.plan.update({k: dropped.plan[k] for k in ("params_before", "macs_before", "layers_dropped")})
        result.plan["notes"] = [*dropped.plan["notes"], *result.plan.get("notes", [])]
    say(result.summary())
    if batches is not None:
        result.plan["importance_data"] = {"samples": sum(len(next(iter(b.values()))) for b in batches),
                                          "from": "distillation train rows"}  # fmt: skip
    params = {**(options.to_dict() if ranks else {}), "drop_layers": request.drop_layers}
    return result.module, Stage(name="prune", params=params, metrics=result.plan)


def _drop_layers(src: LoadedSource, count: int, data: CompressData | None, say: ProgressFn) -> PruneResult:
    """A copy of the model without ``count`` encoder layers, those the output misses least on the train rows."""
    from edgekit.converters.prune import PruneResult
    from edgekit.converters.prune.common import count_params_macs
    from edgekit.converters.prune.layers import drop_layers
    from edgekit.converters.prune.macs import attention_counters

    assert src.example_inputs is not None
    if data is None:
        raise InputError(
            "--drop-layers measures each layer's effect on data: this model has no tokenizer for edgekit's corpus;"
            " give --distill-data with samples for the model's inputs"
        )
    model = copy.deepcopy(src.module).eval()
    params_before, macs_before = count_params_macs(model, src.example_inputs, attention_counters(model))
    say(f"dropping {count} encoder layer(s), measuring each one's effect on the train rows")
    plan = drop_layers(model, count, list(data.importance_batches()))
    params_after, macs_after = count_params_macs(model, src.example_inputs, attention_counters(model))
    say(f"dropped layers {plan['dropped']} of {plan['layers_before']}: output cosine {plan['mean_cosine_after']:.4f}"
        f" on {plan['samples']} rows")  # fmt: skip
    return PruneResult(module=model, plan={
        "kind": "structured", "importance": "measured effect", "method": "encoder layers dropped",
        "layers_dropped": plan, "params_before": params_before, "params_after": params_after,
        "macs_before": macs_before, "macs_after": macs_after,
        "notes": [f"encoder layers {plan['dropped']} removed whole (chosen by their measured effect)"],
    })  # fmt: skip


def _hidden_pairs(request: CompressRequest, student: Any, stages: list[Stage]) -> list[tuple[str, str]]:
    """(student layer, teacher layer) for intermediate-layer losses: every kept layer against the teacher layer it
    was made from; none when turned off, or (auto) when the model has no transformer layer stack."""
    if request.distill_hidden is False:
        return []
    from edgekit.converters.prune.layers import find_layer_stack, layer_pairs

    prune = next((s for s in stages if s.name == "prune"), None)
    dropped = prune.metrics.get("layers_dropped") if prune is not None else None
    if dropped is not None:
        return layer_pairs(dropped["stack"], dropped["kept"])
    stack = find_layer_stack(student)
    if stack is None and request.distill_hidden:
        raise InputError("--distill-hidden matches encoder layers, and this model has no transformer layer stack")
    if stack is None:
        return []
    return layer_pairs(stack.name, range(len(stack.layers)))


def _prune_until(
    src: LoadedSource, request: CompressRequest, data: CompressData | None, options: PruneOptions,
    batches: list[Any] | None, say: ProgressFn,
) -> PruneResult:  # fmt: skip
    """The budgeted search, each step timed as the model that ships; with a floor, probed and judged."""
    from edgekit.converters.prune import parse_budget, prune_until
    from edgekit.converters.prune.timing import timing_scheme
    from edgekit.converters.prune_floor import check_floor, require_search_met, timing_calibration

    assert src.example_inputs is not None and request.prune_until is not None
    budget, goal = parse_budget(request.prune_until), request.floor
    if goal is not None:
        check_floor(goal, data)
    scheme = timing_scheme(request.quantize.mode if request.quantize else "none", request.prune_target)
    say(f"pruning until {budget} on {request.prune_target} (timing the {scheme} model)")
    probe = _fidelity_probe(src, request, data, goal, say) if goal is not None and data is not None else None
    result = prune_until(
        src.module, src.example_inputs, budget, request.prune_target, options=options, data=batches, source=src,
        scheme=scheme, calibration=timing_calibration(request.quantize, src, data), probe=probe,
    )  # fmt: skip
    if goal is not None:
        result.plan["prune_until"]["floor"] = str(goal)
        require_search_met(result.plan["prune_until"], budget, goal)
    return result


def _fidelity_probe(
    src: LoadedSource, request: CompressRequest, data: CompressData, goal: FidelityGoal, say: ProgressFn
) -> Probe:
    """What one ratio keeps: a copy of its pruned model distilled for a short time box (when distillation is on),
    judged on the held-out rows."""
    from edgekit.converters.distill.options import parse_duration
    from edgekit.converters.prune_floor import goal_view, probe_seconds

    budget = parse_duration(request.distill_time) if request.distill_time is not None else None
    seconds = probe_seconds(budget, request.probe_seconds)

    def probe(ratio: float, result: PruneResult) -> dict[str, Any]:
        start, student = time.perf_counter(), result.module
        if request.distill and ratio > 0:
            hidden = _hidden_pairs(request, student, [])
            student, _ = _distill(src, copy.deepcopy(student), request, data, _quiet, seconds, hidden)
        measured = _heldout(src.module, student, src, data, request)
        met = goal.met(goal_view(measured))
        say(f"probe at ratio {ratio:g}: {goal.values(goal_view(measured))} ({'meets' if met else 'misses'} {goal})")
        took = round(time.perf_counter() - start, 2)
        return {
            "seconds": took,
            "time_box_s": seconds if student is not result.module else None,
            "fidelity": measured,
            "met": met,
        }

    return probe


def _quiet(_: str) -> None:
    return None


def _distill(
    src: LoadedSource, student: Any, request: CompressRequest, data: CompressData, say: ProgressFn,
    max_seconds: float | None = None, hidden: Sequence[tuple[str, str]] = (),
) -> tuple[Any, Stage]:  # fmt: skip
    from edgekit.converters.distill import DistillOptions, distill
    from edgekit.converters.distill.data import specs_from_examples
    from edgekit.converters.distill.options import parse_duration

    assert src.example_inputs is not None
    specs = specs_from_examples(src.example_inputs, src.dynamic_dims)
    train, val = data.train, data.heldout
    loss = request.distill_loss or _default_loss(src)
    options = DistillOptions(
        loss=loss, epochs=request.distill_epochs, max_steps=request.distill_steps, lr=request.distill_lr,
        batch_size=request.distill_batch_size, project_outputs=False, progress=False, seed=request.seed,
        max_seconds=max_seconds or (parse_duration(request.distill_time) if request.distill_time is not None else None),
        features=tuple(hidden), feature_loss="cosine", feature_projection="when_widths_differ",
    )  # fmt: skip
    layers = f", hidden states of {len(hidden)} layers" if hidden else ""
    say(f"distilling ({loss}{layers}, {len(train)} train / {len(val)} held-out samples)")
    result = distill(student, src.module, train, val or None, options, input_specs=specs)
    metrics = {**result.summary(), "held_out_samples": len(val), "train_samples": len(train), "data": data.facts}
    params = {"loss": loss, **_jsonable(options), "hidden_layers": [list(p) for p in hidden]}
    return result.student, Stage(name="distill", params=params, metrics=metrics)


def _default_loss(src: LoadedSource) -> str:
    """KL for logits, cosine for sentence embeddings, MSE for anything else (always well defined)."""
    names = src.output_names or []
    if any("logit" in n for n in names):
        return "kl"
    if src.kind == "sentence_transformers" or any("embedding" in n for n in names):
        return "cosine"
    return "mse"


def _fidelity_to(teacher: Any, student: Any, src: LoadedSource) -> dict[str, float]:
    """Cosine of the compressed model's outputs to the original's on the example inputs."""
    from edgekit.converters.torch_io import run_torch, to_numpy_feeds
    from edgekit.fidelity import sample_cosines

    assert src.example_inputs is not None
    feeds = to_numpy_feeds(src.example_inputs)
    names = src.output_names or ["output"]
    try:
        ref = run_torch(teacher, feeds, names)
        got = run_torch(student, feeds, names)
    except Exception:  # output count unknown for this source: the stage metrics still say what was done
        return {}
    cos = np.concatenate([sample_cosines(ref[n], got[n]) for n in names])
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}


def _jsonable(options: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(options).items() if isinstance(v, int | float | str | bool | None)}
