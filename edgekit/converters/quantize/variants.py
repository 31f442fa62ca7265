"""The quantize stage of ``convert``: calibration data in, per-target model variants out, each one gated.

A variant is an extra model file next to the FP32 ``model.onnx`` (``model.int8.onnx``...); the manifest maps
each target to the file it should load. Every variant passes the same parity gate as export, against the same
reference (torch, or the FP32 ONNX for an ONNX source), at its precision's tolerance, on the gate's inputs and
on held-back real samples.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import MODEL_NAME, Stage
from edgekit.converters.calibration import (
    CalibrationOptions,
    CalibrationSet,
    CalibSource,
    check_source_exists,
    load_calibration,
)
from edgekit.converters.quantize.model import ensure_node_names, quantize_model
from edgekit.converters.quantize.options import CALIBRATION_METHODS, CLI_MODES, QuantizeOptions, variant_file
from edgekit.converters.validate import Case, TargetReport, check_session, require_passed
from edgekit.cpu import cpu_model, numeric_cpu_flags, speed_flags_for
from edgekit.errors import InputError, ValidationError
from edgekit.fidelity import FidelityGoal, fidelity_metrics, parse_fidelity, run_all
from edgekit.retrieval import DEFAULT_K
from edgekit.runtimes import DEFAULT_TARGET
from edgekit.specs import TensorSpec

if TYPE_CHECKING:
    from edgekit.converters.quantize.frozen import AutoChoice

Feeds = dict[str, np.ndarray]
Reference = Callable[[Feeds], dict[str, np.ndarray]]
ProgressFn = Callable[[str], None]
GATE_HELDOUT = 16  # held-back samples added to the parity gate of each variant


@dataclass(frozen=True)
class QuantizeRequest:
    """What ``convert`` was asked to do about precision; checked before any slow work."""

    mode: str = "none"
    calib_data: CalibSource | None = None
    calib_samples: int = 200
    calibration: str = "minmax"
    fidelity: str | None = None
    targets: tuple[str, ...] = ()
    seed: int = 0  # the calibration/held-back split
    decisions: tuple[AutoChoice, ...] = ()  # auto: recorded choices to rebuild instead of searching (a replay)

    def __post_init__(self) -> None:
        if self.mode not in CLI_MODES:
            raise InputError(f"unknown --quantize {self.mode!r}; expected one of: {', '.join(CLI_MODES)}")
        if self.calibration not in CALIBRATION_METHODS:
            raise InputError(f"unknown --calibration {self.calibration!r}; expected {', '.join(CALIBRATION_METHODS)}")
        if self.fidelity is not None:
            parse_fidelity(self.fidelity)
        if self.mode in ("int8", "auto") and self.calib_data is None:
            raise InputError(
                f"--quantize {self.mode} needs calibration data: --calib-data PATH (.npz/.npy files, a directory "
                "of them, or a text file with one sample per line for text models)"
            )
        if self.mode == "none" and (self.calib_data is not None or self.fidelity is not None):
            raise InputError("--calib-data and --fidelity need --quantize (int8-dynamic, int8, fp16 or auto)")
        if self.decisions and self.mode != "auto":
            raise InputError(f"recorded auto decisions apply to --quantize auto, not {self.mode}")
        if self.decisions:
            from edgekit.converters.quantize.frozen import checked_choices

            checked_choices(self.decisions, self.variant_targets())  # before the slow work, not after export
        CalibrationOptions(samples=self.calib_samples)
        check_source_exists(self.calib_data)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def goal(self) -> FidelityGoal | None:
        if self.fidelity is not None:
            return parse_fidelity(self.fidelity)
        return parse_fidelity("cosine>=0.99") if self.mode == "auto" else None

    def variant_targets(self) -> list[str]:
        """Auto: the named targets, else every CPU runtime installed here; otherwise the default runtime plus those
        named."""
        if self.mode == "auto" and not self.targets:
            from edgekit.converters.quantize.auto import default_auto_targets

            return default_auto_targets()
        return list(dict.fromkeys(self.targets if self.mode == "auto" else [DEFAULT_TARGET, *self.targets]))


@dataclass
class VariantsResult:
    variants: dict[str, str]  # target -> file
    precisions: dict[str, str]  # file -> precision
    stage: Stage
    reports: dict[str, TargetReport]  # "target:file" -> gate report
    cpu_flags: dict[str, list[str]] = field(default_factory=dict)  # target -> what its auto choice needs


def build_variants(
    artifact: Path, request: QuantizeRequest, inputs: Sequence[TensorSpec], reference: Reference,
    gate_cases: Sequence[Case], tokenizer: Path | None, kinds: Mapping[str, str], say: ProgressFn,
    max_length: int | None = None,
) -> VariantsResult:  # fmt: skip
    """Quantize the artifact's base model as requested, gate every variant, and describe it all as a Stage.

    ``kinds`` says which outputs are classifiers, embeddings or plain tensors (what top-1 applies to);
    ``max_length`` is the tokens a text model reads (the manifest's), so text calibration and held-back
    fidelity see the lengths the model will run at."""
    base = artifact / MODEL_NAME
    ensure_node_names(base)
    data = _calibration(request, inputs, tokenizer, max_length, say)
    if data is not None and request.goal is not None:
        request.goal.check_texts(len(data.heldout))  # recall@10 of 8 held-back texts: say so before quantizing
    refs = [reference(f) for f in data.heldout] if data is not None else []
    params: dict[str, Any] = {
        "mode": request.mode,
        "calibration": request.calibration,
        "fidelity": request.fidelity,
        "targets": request.variant_targets(),
        "data": data.summary() if data else None,
    }
    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-", dir=artifact.parent) as work:
        if request.mode == "auto":
            variants, metrics = _auto(artifact, base, Path(work), request, data, refs, kinds, say)
        else:
            variants, metrics = _single(artifact, base, request, data, refs, kinds, say)
    precisions = {f: _precision(artifact / f) for f in set(variants.values())}
    heldout_cases = [Case(f"heldout[{i}]", f, r) for i, (f, r) in enumerate(zip(data.heldout, refs, strict=True))
                     ][:GATE_HELDOUT] if data else []  # fmt: skip
    reports = _gate(artifact, variants, [*gate_cases, *heldout_cases], kinds, say)
    metrics["variants"] = variants
    flags = _cpu_flags(variants, precisions)
    metrics["decided_on"] = {"cpu_model": cpu_model(), "cpu_flags": numeric_cpu_flags(), "variant_cpu_flags": flags}
    stage = Stage(name="quantize", params=params, metrics=metrics)
    return VariantsResult(variants, precisions, stage, reports, flags)


def _cpu_flags(variants: Mapping[str, str], precisions: Mapping[str, str]) -> dict[str, list[str]]:
    """Per CPU target whose variant is not the base model: the CPU features it was judged (and, by auto, timed)
    with, recorded so a CPU without them loads the base model instead.

    Without INT8 dot products (VNNI, AMX) INT8 is slower, and worse: the INT8 kernels there sum u8 x s8 products in
    pairs saturating at 16 bits (AVX2 ``vpmaddubsw``), so 8-bit weights judged faithful on a VNNI CPU can be far
    less so (see :func:`edgekit.cpu.int8_products_saturate`). Any mode, not only auto: an explicit INT8 variant
    was judged on those kernels too."""
    from edgekit.runtimes import runtime_capabilities

    out = {}
    for target, file in variants.items():
        if file != MODEL_NAME and "cpu" in runtime_capabilities(target).device_kinds:
            needed = speed_flags_for(precisions[file])
            if needed:
                out[target] = needed
    return out


def _calibration(
    request: QuantizeRequest, inputs: Sequence[TensorSpec], tokenizer: Path | None, max_length: int | None,
    say: ProgressFn,
) -> CalibrationSet | None:  # fmt: skip
    if request.calib_data is None:
        return None
    say("reading calibration data")
    options = CalibrationOptions(samples=request.calib_samples, max_length=max_length, seed=request.seed)
    return load_calibration(request.calib_data, inputs, options, tokenizer=tokenizer)


def _single(
    artifact: Path, base: Path, request: QuantizeRequest, data: CalibrationSet | None, refs: list,
    kinds: Mapping[str, str], say: ProgressFn,
) -> tuple[dict[str, str], dict[str, Any]]:  # fmt: skip
    """One scheme for every target; static INT8 gets one file per activation scheme the targets take."""
    variants: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    for options, targets in scheme_groups(request).items():
        file = variant_file(options.mode, symmetric=options.activation_symmetric)
        say(f"quantizing ({request.mode}{', symmetric activations' if options.activation_symmetric else ''})")
        result = quantize_model(base, artifact / file, options, data.calibration if data else ())
        metrics.setdefault("results", {})[file] = result.summary()
        if data is not None and data.heldout:
            ks = request.goal.recall_ks if request.goal is not None else (DEFAULT_K,)
            fid = {t: _heldout_fidelity(result.path, t, data.heldout, refs, kinds, ks) for t in targets}
            metrics.setdefault("heldout_fidelity", {}).update(fid)
            _require_goal(request, fid)
        variants.update(dict.fromkeys(targets, file))
    return variants, metrics


def scheme_groups(request: QuantizeRequest) -> dict[QuantizeOptions, list[str]]:
    """The options each target's variant is made with, and the targets that share them.

    Static INT8 activations are uint8 with a zero point (what CPU runtimes run fastest and most faithfully)
    except for targets whose INT8 takes zero point 0 only (``int8_symmetric_only``, TensorRT): those get a
    second model with symmetric int8 activations. Other modes are one model for all.
    """
    from edgekit.runtimes import runtime_capabilities

    groups: dict[QuantizeOptions, list[str]] = {}
    for target in request.variant_targets():
        symmetric = request.mode == "int8" and runtime_capabilities(target).int8_symmetric_only
        options = QuantizeOptions(mode=request.mode, calibration=request.calibration, activation_symmetric=symmetric)
        groups.setdefault(options, []).append(target)
    return groups


def _require_goal(request: QuantizeRequest, fidelity: Mapping[str, Mapping[str, float]]) -> None:
    goal = request.goal
    for t, m in fidelity.items():
        if goal is not None and not goal.met(m):
            raise ValidationError(
                f"{request.mode} model misses {goal} on {t}: {goal.values(m)} on {m['samples']} held-back samples"
            )


def _auto(
    artifact: Path, base: Path, work: Path, request: QuantizeRequest, data: CalibrationSet | None, refs: list,
    kinds: Mapping[str, str], say: ProgressFn,
) -> tuple[dict[str, str], dict[str, Any]]:  # fmt: skip
    from edgekit.converters.quantize.auto import AutoOptions, auto_quantize, keep_files
    from edgekit.converters.quantize.frozen import choice_records, decisions_of, rebuild_choices

    assert data is not None and request.goal is not None  # checked by QuantizeRequest
    targets = tuple(request.variant_targets())
    options = AutoOptions(fidelity=request.goal, targets=targets, calibration=request.calibration, output_kinds=kinds)
    if request.decisions:  # a replay: the recorded choices, rebuilt without timing or searching
        result, fidelity = rebuild_choices(base, work, data, refs, request.decisions, options, say)
        decisions = choice_records(request.decisions, targets)
        extra: dict[str, Any] = {"replayed_decisions": True, "heldout_fidelity": fidelity}
    else:
        result = auto_quantize(base, work, data, refs, latency_feeds(data), options, say)
        decisions, extra = decisions_of(result), {"search": result.search}
    variants = keep_files(result, artifact, base.name)
    metrics = {"goal": str(request.goal), "chosen": result.chosen, "candidates": result.candidates}
    return variants, {**metrics, "decisions": decisions, **extra}


def latency_feeds(data: CalibrationSet) -> Feeds:
    """The largest sample seen (for text, a packed full-length sequence): what latency is measured on."""
    samples = [*data.calibration, *data.heldout]
    return max(samples, key=lambda f: sum(v.size for v in f.values()))


def _heldout_fidelity(
    path: Path, target: str, heldout: Sequence[Feeds], refs: Sequence[dict], kinds: Mapping[str, str],
    ks: Sequence[int],
) -> dict[str, float]:  # fmt: skip
    """Fidelity on the held-back samples; for embedding outputs recall@k and spearman over all of them."""
    from edgekit.runtimes.loading import load, model_ref

    with load(model_ref(path), target=target) as session:
        return fidelity_metrics(refs, run_all(session.run, heldout), kinds, ks)


def _gate(
    artifact: Path, variants: Mapping[str, str], cases: Sequence[Case], kinds: Mapping[str, str], say: ProgressFn
) -> dict:
    from edgekit.runtimes.loading import load, model_ref

    reports = {}
    for target, file in variants.items():
        if file == MODEL_NAME:
            continue  # the FP32 model passed the export gate on every target already
        say(f"validating {file} on {target}")
        with load(model_ref(artifact / file), target=target) as session:
            report = check_session(session, cases, kinds)
        reports[f"{target}:{file}"] = report
        require_passed(report)
    return reports


def _precision(path: Path) -> str:
    from edgekit.onnxfile import precision_of, read_onnx

    return precision_of(read_onnx(path, check=False))
