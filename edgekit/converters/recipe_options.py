"""A recipe and ``convert``'s option objects, both ways, and the resolved recipe every manifest stores.

``options_of`` turns a recipe into what :func:`edgekit.convert` takes; ``call_recipe`` writes any convert call
down as a recipe (so every artifact records one, however it was made); ``resolved_recipe`` completes it with
what the run decided: the source's kind and sha256, each data file's sha256, the exporter that passed, the
output kinds, prune's importance and distillation's loss where they were ``auto``, and ``--quantize auto``'s
choices. Keeping both directions here keeps them from drifting.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifact import Source, Stage
from edgekit.converters.compress_request import CompressRequest, default_prune_target
from edgekit.converters.export import ExportOptions
from edgekit.converters.quantize.variants import QuantizeRequest
from edgekit.converters.recipe import (
    AutoDecision,
    DataFile,
    DistillSection,
    ExportSection,
    PruneSection,
    QuantizeSection,
    Recipe,
    Recorded,
    SourceRef,
    recipe_data,
)
from edgekit.provenance import file_sha256, names_factory, split_factory
from edgekit.specs import parse_specs

# what a replay reproduces, per stage, as far as it has been checked (tests/test_recipe.py); said in every record
REPRODUCIBILITY = {
    "export": "byte-identical on replay with the same machine and library versions (tested)",
    "quantize": "int8-dynamic and static int8 (ONNX Runtime, minmax) byte-identical on replay (tested); auto's"
    " choices are recorded and rebuilt without timing (tested); NNCF writes identical files for identical inputs"
    " (tested); entropy/percentile calibration and fp16 not checked",
    "prune": "a fixed ratio replays byte-identical (tested: structured, l1, a CNN); prune.until (and its floor,"
    " prune.fidelity) decides by timing and short probe distillations and searches again on replay",
    "distill": "seeded (data order, initialisation) but not checked to be bit-identical; with distill.time the"
    " step count depends on the machine's speed",
}


@dataclass(frozen=True)
class RecipeCall:
    """A convert call as a recipe, before the run: the recipe and how it came to be (file, overrides)."""

    recipe: Recipe
    recorded: Recorded = field(default_factory=Recorded)


@dataclass(frozen=True)
class ConvertOptions:
    """What :func:`edgekit.convert` takes for a recipe, besides the source and the output."""

    export: ExportOptions
    quantize: QuantizeRequest
    compress: CompressRequest | None
    validate_targets: tuple[str, ...]
    kinds: Mapping[str, str]
    allow_pickle: bool


def options_of(recipe: Recipe) -> ConvertOptions:
    """A recipe (paths already resolved) as convert's option objects; their own checks raise InputError."""
    from edgekit.converters.quantize.frozen import AutoChoice

    export = ExportOptions(opset=recipe.export.opset, exporter=recipe.export.exporter,
                           input_specs=tuple(parse_specs(recipe.inputs)), dim_sizes=dict(recipe.dims),
                           seed=recipe.seed)  # fmt: skip
    q = recipe.quantize or QuantizeSection(mode="none")
    decisions = tuple(AutoChoice(d.target, d.scheme, tuple(d.excluded_nodes)) for d in q.decisions or ())
    request = QuantizeRequest(
        q.mode, q.calib_data.path if q.calib_data else None, q.calib_samples, q.calibration, q.fidelity,
        tuple(recipe.targets), seed=recipe.seed, decisions=decisions,
    )  # fmt: skip
    return ConvertOptions(export, request, _compress_of(recipe), tuple(recipe.validate_targets),
                          dict(recipe.output_kinds), recipe.allow_pickle)  # fmt: skip


def _compress_of(recipe: Recipe) -> CompressRequest | None:
    p, d = recipe.prune, recipe.distill
    if p is None and d is None:
        return None
    p = p or PruneSection()
    dd = d or DistillSection()
    return CompressRequest(
        prune=p.ratio, prune_until=p.until, prune_kind=p.kind, prune_heads=p.heads, prune_importance=p.importance,
        fidelity=p.fidelity, drop_layers=p.drop_layers, distill_hidden=dd.hidden,
        prune_target=default_prune_target(recipe.targets), distill=d is not None,
        distill_data=dd.data.path if dd.data else None, distill_texts=dd.texts, distill_epochs=dd.epochs,
        distill_steps=dd.steps, distill_time=dd.time, distill_loss=dd.loss, distill_lr=dd.lr,
        distill_batch_size=dd.batch_size, seed=recipe.seed,
    )  # fmt: skip


def call_recipe(
    source: str | os.PathLike[str], out: Path, export: ExportOptions, compress: CompressRequest | None,
    request: QuantizeRequest, validate_targets: Sequence[str], kinds: Mapping[str, str], allow_pickle: bool,
) -> RecipeCall:  # fmt: skip
    """A convert call written down as a recipe. Data given as Python objects cannot be: the record says so."""
    recorded = Recorded()
    quantize = None
    if request.active:
        calib, why = _data_file(request.calib_data, "calibration data")
        quantize = QuantizeSection(mode=request.mode, calib_data=calib, calib_samples=request.calib_samples,
                                   calibration=request.calibration, fidelity=request.fidelity)  # fmt: skip
        recorded = _not_replayable(recorded, why)
    prune, distill = None, None
    if compress is not None and compress.prunes:
        prune = PruneSection(ratio=compress.prune, until=compress.prune_until, kind=compress.prune_kind,
                             heads=compress.prune_heads, importance=compress.prune_importance,
                             drop_layers=compress.drop_layers, fidelity=compress.fidelity)  # fmt: skip
    if compress is not None and compress.distill:
        data, why = _data_file(compress.distill_data, "distillation data")
        distill = DistillSection(data=data, texts=compress.distill_texts, epochs=compress.distill_epochs,
                                 steps=compress.distill_steps, time=compress.distill_time, loss=compress.distill_loss,
                                 lr=compress.distill_lr, batch_size=compress.distill_batch_size,
                                 hidden=compress.distill_hidden)  # fmt: skip
        recorded = _not_replayable(recorded, why)
    targets = list(request.targets) or (request.variant_targets() if request.mode == "auto" else [])
    recipe = Recipe(
        source=SourceRef(ref=_absolute_ref(os.fspath(source))), output=str(Path(out).resolve()),
        allow_pickle=allow_pickle, inputs=[_spec_text(s) for s in export.input_specs], dims=dict(export.dim_sizes),
        output_kinds=dict(kinds), export=ExportSection(opset=export.opset, exporter=export.exporter),
        prune=prune, distill=distill, quantize=quantize, targets=targets, validate_targets=list(validate_targets),
        seed=export.seed,
    )  # fmt: skip
    return RecipeCall(recipe, recorded)


def resolved_recipe(call: RecipeCall, source: Source, stages: Sequence[Stage], kinds: Mapping[str, str]) -> dict:
    """The recipe a manifest stores: ``call``'s, with what the run decided and every data file's sha256."""
    recipe = call.recipe
    update: dict[str, Any] = {
        "source": SourceRef(ref=_absolute_ref(source.ref), kind=source.kind, sha256=source.sha256),
        "output_kinds": {**dict(kinds), **recipe.output_kinds},
    }
    export = next((s for s in stages if s.name == "export"), None)
    if export is not None:
        update["export"] = recipe.export.model_copy(update={"exporter": export.params["exporter"]})
    quant = next((s for s in stages if s.name == "quantize"), None)
    if recipe.quantize is not None:
        decisions = quant.metrics.get("decisions") if quant is not None else None
        update["quantize"] = recipe.quantize.model_copy(update={
            "calib_data": _hashed(recipe.quantize.calib_data),
            "decisions": [AutoDecision(**d) for d in decisions] if decisions else None,
        })  # fmt: skip
    prune = next((s for s in stages if s.name == "prune"), None)
    if recipe.prune is not None and prune is not None:  # "auto" importance as decided
        importance = prune.params.get("importance", recipe.prune.importance)  # layers dropped only: none ranked
        update["prune"] = recipe.prune.model_copy(update={"importance": importance})
    distill = next((s for s in stages if s.name == "distill"), None)
    if recipe.distill is not None:
        loss = distill.params["loss"] if distill is not None else recipe.distill.loss  # the default as decided
        hidden = bool(distill.params.get("hidden_layers")) if distill is not None else recipe.distill.hidden
        update["distill"] = recipe.distill.model_copy(
            update={"data": _hashed(recipe.distill.data), "loss": loss, "hidden": hidden}
        )
    stages_run = [s.name for s in stages]
    notes = {k: v for k, v in REPRODUCIBILITY.items() if k in stages_run}
    update["recorded"] = call.recorded.model_copy(update={"reproducibility": notes})
    return recipe_data(recipe.model_copy(update=update))


def data_sha256(path: Path) -> str:
    """sha256 of a data file, or of ``sha256  relative/path`` lines for every file under a directory."""
    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    lines = "".join(f"{file_sha256(p)}  {p.relative_to(path).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _hashed(data: DataFile | None) -> DataFile | None:
    if data is None:
        return None
    path = Path(data.path)
    return DataFile(path=str(path), sha256=data_sha256(path) if path.exists() else data.sha256)


def _data_file(source: Any, what: str) -> tuple[DataFile | None, str | None]:
    """A path as a recorded data file; anything else (feeds in memory) as the reason a replay cannot read it."""
    if source is None:
        return None, None
    if isinstance(source, str | os.PathLike):
        return DataFile(path=str(Path(source).resolve())), None
    return None, f"the {what} was given as Python objects, not a file"


def _not_replayable(recorded: Recorded, why: str | None) -> Recorded:
    return recorded if why is None else recorded.model_copy(update={"replayable": False, "not_replayable_because": why})


def _absolute_ref(ref: str) -> str:
    """A source reference with its path made absolute (``FILE.py:FUNCTION`` too); a module path stays as is."""
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser().resolve())
    factory = split_factory(ref)
    if factory is not None and names_factory(ref) and factory[0].endswith(".py"):
        return f"{Path(factory[0]).expanduser().resolve()}:{factory[1]}"
    return ref


def _spec_text(spec: Any) -> str:
    """A TensorSpec as ``--input`` takes it: ``x:float32[batch,3,32,32]``."""
    return f"{spec.name}:{spec.dtype}[{','.join(str(d) for d in spec.shape)}]"
