"""The torch-side stages of ``edgekit convert``: prune, then distill the pruned student from the original.

Both take and return the loaded source (its module replaced), and record what they did in a manifest stage,
including how close the compressed model stays to the original on the same inputs.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import Stage
from edgekit.errors import ExportError, InputError
from edgekit.runtimes import DEFAULT_TARGET

if TYPE_CHECKING:
    from edgekit.converters.compress_data import CompressData, OriginalOnHeldout
    from edgekit.converters.prune.latency import Probe
    from edgekit.converters.prune.options import PruneOptions, PruneResult
    from edgekit.converters.quantize.variants import QuantizeRequest
    from edgekit.goals import FidelityGoal
    from edgekit.sources import LoadedSource

ProgressFn = Callable[[str], None]
PRUNE_KINDS = ("structured", "unstructured", "2:4")
DATA_IMPORTANCES = ("activation", "taylor")  # importances that read data
DISTILL_TEXTS = 20_000  # corpus sentences per run: varied enough, and an epoch fits a few minutes on 2 cores


@dataclass(frozen=True)
class CompressRequest:
    """What the user asked of the torch-side stages (``--prune``, ``--prune-until``, ``--distill*``).

    ``prune`` thins FFN neurons (transformers) or conv channels (CNNs); attention heads go only when
    ``prune_heads`` says how many. ``distill`` trains the pruned student on edgekit's corpus (text models);
    ``distill_data`` adds the user's data to it and implies ``distill``. ``prune_importance`` ``auto`` ranks
    transformer neurons by their activations on that data, everything else by weight magnitude (l1).

    ``fidelity`` is ``--prune-until``'s floor (``--fidelity``): the largest ratio within the budget whose probe
    distillation keeps it wins, and the final model must keep it too. ``quantize`` is what ``convert`` quantizes
    the result with (it sets it): each ``--prune-until`` step is timed as that model. ``probe_seconds`` replaces
    a probe's time box (a sixth of ``distill_time``, at least a minute).
    """

    prune: float | None = None
    prune_until: str | None = None
    prune_kind: str = "structured"
    prune_heads: float | None = None
    prune_importance: str = "auto"
    prune_target: str = DEFAULT_TARGET
    distill: bool = False
    distill_data: str | Path | None = None
    distill_texts: int = DISTILL_TEXTS
    distill_epochs: int = 3
    distill_steps: int | None = None
    distill_time: str | None = None  # a time budget such as "20m": the step count is fitted to it
    distill_loss: str | None = None  # None: cosine for embedding outputs, kl for logits
    distill_lr: float = 1e-4
    distill_batch_size: int = 16
    seed: int = 0  # pruning's and distillation's random state (a recipe's seed)
    fidelity: str | None = None  # --prune-until's fidelity floor, e.g. "cosine>=0.92"
    quantize: QuantizeRequest | None = None  # set by convert: what ships, so what --prune-until times
    probe_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.prune is not None and self.prune_until is not None:
            raise InputError("give --prune RATIO or --prune-until EXPR, not both")
        if self.prune_kind not in PRUNE_KINDS:
            raise InputError(f"unknown --prune-kind {self.prune_kind!r}; expected one of: {', '.join(PRUNE_KINDS)}")
        from edgekit.converters.prune import IMPORTANCES, check_ratio

        if self.prune_importance not in ("auto", *IMPORTANCES):
            choices = ", ".join(("auto", *IMPORTANCES))
            raise InputError(f"unknown --prune-importance {self.prune_importance!r}; expected one of: {choices}")
        if self.prune is not None:
            check_ratio("--prune ratio", self.prune)
        if self.prune_heads is not None:
            check_ratio("--prune-heads ratio", self.prune_heads, allow_zero=True)
        if self.prune_until is not None and self.prune_kind != "structured":
            raise InputError("--prune-until needs structured pruning: sparsity does not change dense latency")
        if self.prune_until is not None:
            from edgekit.converters.prune.latency import parse_budget

            parse_budget(self.prune_until)  # a bad budget fails before the model loads
        if self.distill_data is not None:
            object.__setattr__(self, "distill", True)  # --distill-data implies --distill
        if self.distill and self.prune is None and self.prune_until is None:
            flag = "--distill-data" if self.distill_data is not None else "--distill"
            raise InputError(
                f"{flag} needs --prune or --prune-until: without a smaller student, distillation would train"
                " the model against itself (to distil into a student of your own, use `edgekit distill`)"
            )
        if self.distill_texts < 1:
            raise InputError(f"--distill-texts must be at least 1, got {self.distill_texts}")
        if self.distill_time is not None:
            from edgekit.converters.distill.options import parse_duration

            parse_duration(self.distill_time)
        if self.fidelity is not None:
            self._check_floor()

    def _check_floor(self) -> None:
        if self.prune_until is None:
            raise InputError("a pruning fidelity floor needs --prune-until (with --prune RATIO there is no search)")
        from edgekit.goals import parse_fidelity

        parse_fidelity(self.fidelity or "")  # a bad expression fails now, not after the search
        if self.probe_seconds is not None and not self.probe_seconds > 0:
            raise InputError(f"probe_seconds must be above zero, got {self.probe_seconds}")

    @property
    def floor(self) -> FidelityGoal | None:
        from edgekit.goals import parse_fidelity

        return parse_fidelity(self.fidelity) if self.fidelity is not None else None

    @property
    def active(self) -> bool:
        return self.prune is not None or self.prune_until is not None or self.distill


def default_prune_target(targets: Sequence[str]) -> str:
    """Where ``--prune-until`` times the model: the first runtime it is converted for, else ONNX Runtime."""
    return targets[0] if targets else "onnxruntime"


def compress_request(
    *,
    prune: float | None = None,
    prune_until: str | None = None,
    prune_kind: str = "structured",
    prune_heads: float | None = None,
    prune_importance: str = "auto",
    distill: bool = False,
    distill_data: str | Path | None = None,
    distill_texts: int = DISTILL_TEXTS,
    distill_epochs: int = 3,
    distill_steps: int | None = None,
    distill_time: str | None = None,
    distill_loss: str | None = None,
    distill_lr: float = 1e-4,
    targets: Sequence[str] = (),
    seed: int = 0,
) -> CompressRequest:
    """The torch-side stages ``convert``'s flags ask for, checked now so bad flags fail before any loading.

    ``targets`` are the runtimes the model is converted for; a latency budget is met on the first of them.
    """
    return CompressRequest(
        prune=prune, prune_until=prune_until, prune_kind=prune_kind, prune_heads=prune_heads,
        prune_importance=prune_importance, prune_target=default_prune_target(targets), distill=distill,
        distill_data=distill_data, distill_texts=distill_texts, distill_epochs=distill_epochs,
        distill_steps=distill_steps, distill_time=distill_time, distill_loss=distill_loss, distill_lr=distill_lr,
        seed=seed,
    )  # fmt: skip


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
    if request.prune is not None or request.prune_until is not None:
        student, stage = _prune(src, request, data, say)
        stages.append(stage)
        _record_heldout(stage, "fidelity_before_distillation", teacher, student, src, data, request)
    if request.distill:
        if data is None:
            raise InputError(
                "--distill trains on edgekit's English corpus, and this model has no tokenizer to read it;"
                " give --distill-data with samples for the model's inputs"
            )
        student, stage = _distill(src, student, request, data, say)
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
    batches = list(data.importance_batches()) if data is not None and options.importance in DATA_IMPORTANCES else None
    if request.prune_until is not None:
        result = _prune_until(src, request, data, options, batches, say)
    else:
        say(f"pruning ({request.prune_kind}, ratio {ratio:g}, importance {options.importance})")
        result = prune_module(src.module, src.example_inputs, options, batches)
    say(result.summary())
    if batches is not None:
        result.plan["importance_data"] = {"samples": sum(len(next(iter(b.values()))) for b in batches),
                                          "from": "distillation train rows"}  # fmt: skip
    return result.module, Stage(name="prune", params=options.to_dict(), metrics=result.plan)


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
            student, _ = _distill(src, copy.deepcopy(student), request, data, _quiet, max_seconds=seconds)
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
    max_seconds: float | None = None,
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
    )  # fmt: skip
    say(f"distilling ({loss}, {len(train)} train / {len(val)} held-out samples)")
    result = distill(student, src.module, train, val or None, options, input_specs=specs)
    metrics = {**result.summary(), "held_out_samples": len(val), "train_samples": len(train), "data": data.facts}
    return result.student, Stage(name="distill", params={"loss": loss, **_jsonable(options)}, metrics=metrics)


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
