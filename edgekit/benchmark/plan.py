"""Everything decided before the first process starts: options checked, targets resolved, shapes fitted.

Bad usage (an unknown target, a shape the model cannot take, zero iterations) must fail here, in
milliseconds and with one line, rather than after minutes of measuring.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.benchmark.trust import check_source_choice, named_source, sources_per_model, trusted_source
from edgekit.errors import InputError, RuntimeUnavailableError
from edgekit.runtimes.base import ModelRef
from edgekit.specs import DEFAULT_DIM_SIZES, TensorSpec

MODES = ("latency", "throughput")
BASELINES = ("torch", "sentence-transformers")  # the second times SentenceTransformer.encode, with --texts only
TEXT_BATCH = 32  # --texts without --batch: Embedder.encode's and sentence-transformers' default batch size
FIDELITY_BATCH = 8  # samples compared per model: enough for a top-1 agreement to mean something


@dataclass(frozen=True)
class BenchConfig:
    """How to measure; the same for every model and target in one run."""

    iterations: int = 50
    duration_s: float = 2.0
    warmup_s: float = 1.0
    warmup_iterations: int = 5
    rounds: int = 3
    mode: str = "latency"
    threads: int | None = None
    precision: str | None = None
    baseline: str | None = None
    seed: int = 0
    cold_start: bool = True
    fidelity: bool = True
    allow_pickle: bool = False
    # the torch source for the baseline and the reference: named by the user (one for every model, or one per
    # model in order), or the recorded one when trust_source and its sha256 matches; never the manifest's alone
    baseline_sources: tuple[str, ...] = ()
    trust_source: bool = False
    timeout_s: float = 900.0
    max_iterations: int = 1_000_000
    lenient_shapes: bool = False  # several models: a --shape applies to the models that have that name
    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # --texts: time Embedder.encode on these texts at their natural lengths instead of Session.run on feeds
    texts: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _positive_int("iterations", self.iterations)
        _positive_int("rounds", self.rounds)
        _positive_int("max_iterations", self.max_iterations)
        if self.warmup_iterations < 0 or isinstance(self.warmup_iterations, bool):
            raise InputError(f"warm-up iterations must be 0 or more, got {self.warmup_iterations}")
        for name, value in (("duration", self.duration_s), ("warm-up", self.warmup_s)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.timeout_s <= 0:
            raise InputError(f"timeout must be positive, got {self.timeout_s}")
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; expected one of: {', '.join(MODES)}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise InputError(f"unknown baseline {self.baseline!r}; expected one of: {', '.join(BASELINES)}")
        if self.threads is not None:
            _positive_int("threads", self.threads)
        check_source_choice(self.baseline, self.baseline_sources, self.trust_source)
        self._check_text_mode()

    def _check_text_mode(self) -> None:
        """What does not go with ``--texts`` (and what needs it), refused before anything runs."""
        if not self.texts:
            if self.baseline == "sentence-transformers":
                raise InputError("--baseline sentence-transformers times SentenceTransformer.encode on real text:"
                                 " give --texts FILE")  # fmt: skip
            return
        if self.mode != "latency":
            raise InputError("--texts times Embedder.encode call by call; --mode throughput does not apply to it")
        if self.baseline == "torch":
            raise InputError("with --texts the baseline is the source model's own encode: use --baseline"
                             " sentence-transformers (--baseline torch times Session-style feeds)")  # fmt: skip
        if self.baseline and importlib.util.find_spec("sentence_transformers") is None:
            raise RuntimeUnavailableError("--baseline sentence-transformers needs sentence-transformers installed"
                                          " here: pip install sentence-transformers")  # fmt: skip


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class CasePlan:
    """One input configuration of one model: the batch and the size of every symbolic dim."""

    batch: int
    dims: dict[str, int]
    shapes: dict[str, list[int]]


@dataclass
class ModelPlan:
    """A model resolved and fitted: its ONNX file, specs, the torch source the user allowed (if any) and one
    case per batch."""

    path: Path
    name: str
    ref: ModelRef
    torch_source: str | None
    int_ranges: dict[str, tuple[int, int]]
    model_bytes: int
    cases: list[CasePlan]
    fidelity_dims: dict[str, int]


def resolve_targets(targets: Sequence[str] | None) -> list[str]:
    """The runtimes to time: those named (checked), or every available one."""
    from edgekit.runtimes import available_targets, runtime_entry

    if not targets:
        found = available_targets()
        if not found:
            raise RuntimeUnavailableError("no runtime is installed; install onnxruntime or openvino")
        return found
    out: list[str] = []
    for name in targets:
        if name == "torch":
            raise InputError("torch is not a runtime target; time the original model with --baseline torch")
        entry = runtime_entry(name)  # UnknownTargetError lists the known names
        if not entry.is_available():
            raise RuntimeUnavailableError(f"runtime {name!r} is not installed; install it with: {entry.install}")
        if name not in out:
            out.append(name)
    return out


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=D0xD1...`` (``input_ids=1x128``; a symbolic dim by name also works: ``seq=128``)."""
    name, sep, dims = text.partition("=")
    parts = [p for p in re.split(r"[x,]", dims.strip().lower())] if sep else []
    if not name.strip() or not parts or not all(re.fullmatch(r"[0-9]+", p.strip()) and int(p) > 0 for p in parts):
        raise InputError(f"bad --shape {text!r}; expected NAME=D0xD1... with positive sizes, e.g. input_ids=1x128")
    return name.strip(), tuple(int(p) for p in parts)


def parse_batches(text: str) -> tuple[int, ...]:
    """``--batch 1,8`` -> ``(1, 8)``."""
    items = [p.strip() for p in str(text).split(",") if p.strip()]
    if not items or not all(re.fullmatch(r"[0-9]+", p) and int(p) > 0 for p in items):
        raise InputError(f"bad --batch {text!r}; expected positive integers such as 1 or 1,8")
    return tuple(dict.fromkeys(int(p) for p in items))


def _batch_symbol(specs: Sequence[TensorSpec]) -> str | None:
    """The dim the batch size sets: one named ``batch``, else axis 0 when every input shares one symbol."""
    symbols = {d for s in specs for d in s.shape if isinstance(d, str)}
    if "batch" in symbols:
        return "batch"
    firsts = {s.shape[0] for s in specs if s.rank}
    return next(iter(firsts)) if len(firsts) == 1 and isinstance(next(iter(firsts)), str) else None


def fit_dims(
    specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]], base: Mapping[str, int], batch: int | None
) -> dict[str, int]:
    """Sizes of every symbolic dim so the given shapes and batch fit the model; :class:`InputError` if not."""
    by_name = {s.name: s for s in specs}
    symbols = {d for s in specs for d in s.shape if isinstance(d, str)}
    described = "; ".join(s.describe() for s in specs)
    dims = {k: v for k, v in base.items() if k in symbols}
    given: dict[str, tuple[int, str]] = {}
    for name, shape in shapes.items():
        if name not in by_name:
            if name in symbols and len(shape) == 1:
                given[name] = (shape[0], f"--shape {name}")
                continue
            raise InputError(f"--shape names {name!r}, which is neither an input nor a dim; inputs: {described}")
        spec = by_name[name]
        if len(shape) != spec.rank:
            raise InputError(f"--shape {name}: expected rank {spec.rank} ({spec.describe()}), got {len(shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise InputError(f"--shape {name}: dim {axis} is fixed at {want} in the model ({spec.describe()})")
            if isinstance(want, str):
                prev = given.get(want)
                if prev is not None and prev[0] != got:
                    raise InputError(f"--shape {name}: dim {want!r} is {got} but {prev[1]} gives {want}={prev[0]}")
                given[want] = (got, f"--shape {name}")
    dims.update({k: v for k, (v, _) in given.items()})
    bsym = _batch_symbol(specs)
    if batch is not None:
        if bsym is None:
            fixed = {s.shape[0] for s in specs if s.rank and isinstance(s.shape[0], int)}
            if fixed != {batch}:
                raise InputError(f"--batch {batch}: the model has no variable batch dim ({described})")
        else:
            dims[bsym] = batch
    elif bsym is not None and bsym not in given:
        dims[bsym] = 1
    for sym in symbols - dims.keys():
        dims[sym] = DEFAULT_DIM_SIZES.get(sym, 16)
    return dims


def default_int_ranges(specs: Sequence[TensorSpec]) -> dict[str, tuple[int, int]]:
    """For a bare ONNX without a manifest: masks are all ones, token types zero, other ids in [0, 100]."""
    out = {}
    for s in specs:
        if s.dtype.startswith(("int", "uint")):
            low = s.name.lower()
            out[s.name] = (1, 1) if "mask" in low else (0, 0) if "type" in low else (0, 100)
    return out


def onnx_file_bytes(path: Path) -> int:
    """Size of the ONNX file plus the external-data files it references (found by onnxfile's confined reader,
    which parses the model only when it can have external data)."""
    from edgekit.onnxfile import external_data_of

    return path.stat().st_size + sum(p.stat().st_size for p in external_data_of(path) if p.is_file())


def target_model_bytes(plan: ModelPlan, target: str) -> int:
    """The size of the file ``target`` runs: an artifact's variant for it (model.int8.onnx is a quarter of
    model.onnx), else the model."""
    manifest = plan.ref.manifest
    if manifest is None or not plan.path.is_dir():
        return plan.model_bytes
    from edgekit.artifact import variant_for

    name = variant_for(manifest, target)
    return plan.model_bytes if name == manifest.model else onnx_file_bytes(plan.path / name)


def plan_model(
    model: str | Path,
    shapes: Mapping[str, Sequence[int]],
    batches: Sequence[int] | None,
    config: BenchConfig,
    baseline_source: str | None = None,
) -> ModelPlan:
    """Resolve one model, decide the torch source bench may run for it (``baseline_source``: the one the user
    named for it), and fit every requested batch to it."""
    from edgekit.runtimes.loading import model_ref

    path = Path(model)
    ref = model_ref(path)
    manifest = ref.manifest
    torch_source = _torch_source(path, ref, baseline_source, config)
    if config.texts:
        return _text_plan(path, ref, torch_source, shapes, batches, config)
    known = shape_names(ref.inputs)
    shapes = {k: v for k, v in shapes.items() if k in known or not config.lenient_shapes}
    base = {k: int(v) for k, v in (manifest.dynamic_dims if manifest else {}).items() if k != "batch"}
    ranges = {**default_int_ranges(ref.inputs), **(manifest.int_ranges if manifest else {})}
    cases = []
    for batch in batches or (None,):
        dims = fit_dims(ref.inputs, shapes, base, batch)
        shape_of = {s.name: list(s.concrete_shape(dims)) for s in ref.inputs}
        bsym = _batch_symbol(ref.inputs)
        size = dims.get(bsym, batch or 1) if bsym else (batch or _fixed_batch(ref.inputs))
        cases.append(CasePlan(batch=int(size), dims=dims, shapes=shape_of))
    fidelity_dims = dict(cases[0].dims)
    bsym = _batch_symbol(ref.inputs)
    if bsym is not None:
        fidelity_dims[bsym] = max(fidelity_dims[bsym], FIDELITY_BATCH)
    name = path.name if path.is_dir() else path.stem
    return ModelPlan(path, name, ref, torch_source, ranges, onnx_file_bytes(ref.path), cases, fidelity_dims)


def _text_plan(
    path: Path,
    ref: ModelRef,
    torch_source: str | None,
    shapes: Mapping[str, Sequence[int]],
    batches: Sequence[int] | None,
    config: BenchConfig,
) -> ModelPlan:
    """``--texts``: the model must embed text; batches are texts per ``encode`` call (default 32), lengths are the
    texts' own."""
    from edgekit.runtimes.embedder import embedding_output_of

    if shapes:
        raise InputError("--shape does not apply with --texts: texts run at their natural lengths")
    embedding_output_of(path, ref)  # InputError for a model that is not a text-embedding artifact
    if config.baseline == "sentence-transformers" and not (torch_source and Path(torch_source).is_dir()):
        raise InputError(f"--baseline sentence-transformers loads a model directory; {torch_source} is not one")
    cases = [CasePlan(batch=b, dims={}, shapes={}) for b in batches or (TEXT_BATCH,)]
    name = path.name if path.is_dir() else path.stem
    return ModelPlan(path, name, ref, torch_source, {}, onnx_file_bytes(ref.path), cases, {})


def _torch_source(path: Path, ref: ModelRef, named: str | None, config: BenchConfig) -> str | None:
    """The one the user named, else the recorded one if trusted and its sha256 matches, else none."""
    if named is not None:
        return named_source(named, allow_pickle=config.allow_pickle)
    return trusted_source(path, ref.manifest) if config.trust_source else None


def shape_names(specs: Sequence[TensorSpec]) -> set[str]:
    """What ``--shape`` may name for a model: its inputs and its symbolic dims."""
    return {s.name for s in specs} | {d for s in specs for d in s.shape if isinstance(d, str)}


def plan_models(
    models: Sequence[str | Path],
    shapes: Mapping[str, Sequence[int]],
    batches: Sequence[int] | None,
    config: BenchConfig,
) -> list[ModelPlan]:
    """Plan every model. With several models a ``--shape`` applies to those that have that input or dim, and
    must fit at least one; with one model it must fit that one."""
    lenient = len(models) > 1
    named = sources_per_model(config.baseline_sources, len(models))
    each = replace(config, lenient_shapes=lenient)
    plans = [plan_model(m, shapes, batches, each, source) for m, source in zip(models, named, strict=True)]
    if lenient:
        known = set().union(*(shape_names(p.ref.inputs) for p in plans))
        unknown = sorted(set(shapes) - known)
        if unknown:
            raise InputError(f"--shape {unknown[0]!r} names no input or dim of any of the models")
    return plans


def _fixed_batch(specs: Sequence[TensorSpec]) -> int:
    firsts = [s.shape[0] for s in specs if s.rank and isinstance(s.shape[0], int)]
    return int(firsts[0]) if firsts else 1


def torch_available() -> bool:
    """Whether a torch reference can be loaded here, without importing torch."""
    return importlib.util.find_spec("torch") is not None
