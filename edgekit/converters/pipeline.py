"""``edgekit.convert``: source -> export -> parity gate -> artifact, written atomically.

Targets named for validation are checked to exist before any work starts, and the output directory is
claimed first, so bad input fails in milliseconds and never leaves a partial artifact behind. With
``quantize=...`` the stage in :mod:`edgekit.converters.quantize.variants` adds gated per-target model variants; an ONNX
file as the source skips torch (:mod:`edgekit.converters.onnx_source`).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.artifact import (
    MODEL_NAME,
    Manifest,
    Source,
    Stage,
    TextFacts,
    library_versions,
    platform_facts,
    staging_dir,
    write_manifest,
)
from edgekit.converters.calibration import CalibSource, find_tokenizer
from edgekit.converters.compress import compress as compress_source
from edgekit.converters.compress_request import CompressRequest
from edgekit.converters.export import ExportOptions, IOPlan, export_onnx, plan_io
from edgekit.converters.quantize.variants import QuantizeRequest, VariantsResult, build_variants
from edgekit.converters.recipe_options import RecipeCall, call_recipe, resolved_recipe
from edgekit.converters.validate import Case, TargetReport, build_cases, check_session, require_passed
from edgekit.errors import EdgekitError, ExportError, InputError, ValidationError
from edgekit.fidelity import TOLERANCES, output_kinds
from edgekit.runtimes import DEFAULT_TARGET, session_class
from edgekit.runtimes.base import ModelRef, SessionConfig
from edgekit.specs import TensorSpec
from edgekit.text import text_facts

ProgressFn = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def convert(
    source: str | Path,
    out: str | Path,
    *,
    input_specs: Sequence[TensorSpec] = (),
    dim_sizes: Mapping[str, int] | None = None,
    opset: int = 18,
    exporter: str = "auto",
    allow_pickle: bool = False,
    validate_targets: Sequence[str] = (),
    force: bool = False,
    progress: ProgressFn | None = None,
    quantize: str | QuantizeRequest = "none",
    calib_data: CalibSource | None = None,
    calib_samples: int = 200,
    calibration: str = "minmax",
    fidelity: str | None = None,
    targets: Sequence[str] = (),
    compress: CompressRequest | None = None,
    kinds: Mapping[str, str] | None = None,
    export: ExportOptions | None = None,
    seed: int = 0,
    recipe: RecipeCall | None = None,
) -> Manifest:
    """Convert a PyTorch source (or an ONNX file) into a validated artifact directory at ``out``.

    The ONNX model is checked on ONNX Runtime against torch (always) and on every ``validate_targets`` and
    ``targets`` runtime at the precision it really runs in; any failure raises :class:`ValidationError`.
    ``quantize`` (``int8-dynamic``, ``int8``, ``fp16`` or ``auto``) adds per-target variants, each gated the
    same way; ``calib_data`` is a path or an iterable of feed dicts, ``fidelity`` an expression such as
    ``"cosine>=0.99"``. ``compress`` prunes and/or distills the torch model first; the export gate then checks
    the compressed model, and its closeness to the original is recorded in the prune/distill stages.
    ``kinds`` marks outputs as ``classifier``, ``embedding`` or ``tensor`` (what the source declares, else
    float ``[batch, classes]`` outputs are classifiers); ``top1`` fidelity applies to classifiers only.

    The keywords are shorthands for the option objects the two paths take, which can be passed whole instead:
    ``export=ExportOptions(...)``, ``quantize=QuantizeRequest(...)``, ``compress=CompressRequest(...)``; ``seed``
    goes into the export and quantize options built from keywords (the option objects carry their own).

    The manifest records the call as a resolved recipe (:mod:`edgekit.converters.recipe`): ``recipe`` is the
    one being run (:func:`edgekit.converters.replay.convert_recipe`), else the call is written down as one.
    """
    compress, fidelity = _pruning_floor(compress, quantize, fidelity)
    request = _quantize_request(quantize, calib_data, calib_samples, calibration, fidelity, targets, seed)
    if compress is not None and compress.prune_until is not None:
        compress = dataclasses.replace(compress, quantize=request)  # --prune-until times what ships
    export = _export_options(export, input_specs, dim_sizes, opset, exporter, seed)
    variant_targets = request.variant_targets() if request.active else []
    checked = list(dict.fromkeys([DEFAULT_TARGET, *validate_targets, *request.targets, *variant_targets]))
    for t in checked:
        session_class(t)  # unknown or missing runtimes fail now, before the slow work
    call = recipe or call_recipe(source, Path(out), export, compress, request, validate_targets, kinds or {},
                                 allow_pickle)  # fmt: skip
    job = _Job(request, checked, dict(kinds or {}), force, progress or _quiet, call)
    from edgekit.converters.onnx_source import is_onnx_source

    if is_onnx_source(source):
        if compress is not None and compress.active:
            raise InputError("pruning and distillation need the PyTorch model, not an ONNX file")
        return _convert_onnx(Path(source), Path(out), job)
    return _convert_torch(source, Path(out), export, compress, allow_pickle, job)


def _pruning_floor(
    compress: CompressRequest | None, quantize: str | QuantizeRequest, fidelity: str | None
) -> tuple[CompressRequest | None, str | None]:
    """``fidelity`` with ``--prune-until`` is also the pruning search's floor; without ``--quantize`` only that.

    Returns the compress request with its floor, and the fidelity left for quantization."""
    if fidelity is None or compress is None or compress.prune_until is None:
        return compress, fidelity
    compress = dataclasses.replace(compress, fidelity=compress.fidelity or fidelity)
    return compress, (None if quantize == "none" else fidelity)


def _quantize_request(
    quantize: str | QuantizeRequest, calib_data: CalibSource | None, calib_samples: int, calibration: str,
    fidelity: str | None, targets: Sequence[str], seed: int,
) -> QuantizeRequest:  # fmt: skip
    """``quantize`` as given, or built from the quantize keywords; both at once is ambiguous."""
    if not isinstance(quantize, QuantizeRequest):
        return QuantizeRequest(quantize, calib_data, calib_samples, calibration, fidelity, tuple(targets), seed)
    if calib_data is not None or fidelity is not None or targets or (calib_samples, calibration) != (200, "minmax"):
        raise InputError("give quantize=QuantizeRequest(...) or the quantize keywords (calib_data, ...), not both")
    return quantize


def _export_options(
    export: ExportOptions | None, input_specs: Sequence[TensorSpec], dim_sizes: Mapping[str, int] | None,
    opset: int, exporter: str, seed: int,
) -> ExportOptions:  # fmt: skip
    """``export`` as given, or built from the export keywords; both at once is ambiguous."""
    if export is None:
        return ExportOptions(opset=opset, exporter=exporter, input_specs=tuple(input_specs), dim_sizes=dim_sizes or {},
                             seed=seed)  # fmt: skip
    if input_specs or dim_sizes or (opset, exporter) != (ExportOptions.opset, ExportOptions.exporter):
        raise InputError("give export=ExportOptions(...) or the export keywords (opset, exporter, ...), not both")
    return export


@dataclass(frozen=True)
class _Job:
    """What both paths need besides their source: the quantize request, targets to gate on, output kinds asked
    for, whether to replace the output, and where progress goes."""

    request: QuantizeRequest
    targets: list[str]  # DEFAULT_TARGET first
    kinds: Mapping[str, str]
    force: bool
    say: ProgressFn
    recipe: RecipeCall  # what the manifest records, resolved with what the run decided


def _convert_torch(
    source: str | Path, out: Path, export: ExportOptions, compress: CompressRequest | None, allow_pickle: bool,
    job: _Job,
) -> Manifest:  # fmt: skip
    """A PyTorch source: load, compress, export until an exporter passes the gate, validate, quantize, write."""
    say = job.say
    with staging_dir(out, force=job.force) as tmp:
        from edgekit.sources import load_source

        say(f"loading {source}")
        src = load_source(source, allow_pickle=allow_pickle)
        compress_stages: list[Stage] = []
        original = None
        if compress is not None and compress.active:
            src, compress_stages, original = compress_source(src, compress, say)
        say("probing dynamic dims")
        plan = plan_io(src, export)
        kinds = _checked_kinds(plan.outputs, src.output_kinds, job)
        names = [o.name for o in plan.outputs]
        cases = build_cases(src.module, plan.inputs, names, plan.example, plan.dim_sizes, plan.int_ranges)
        path = tmp / MODEL_NAME
        used, attempts, reports = _export_until_valid(src.module, plan, path, export, cases, kinds, say)
        ref = ModelRef(path=path, inputs=tuple(plan.inputs), outputs=tuple(plan.outputs))
        reports.update(_validated(ref, job.targets[1:], cases, kinds, say))
        for dest, src_file in src.extra_files.items():
            (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_file, tmp / dest)
        text = text_facts(tmp, src.metadata)
        variants = None
        if job.request.active:
            from edgekit.converters.torch_io import run_torch

            variants = build_variants(tmp, job.request, plan.inputs, lambda f: run_torch(src.module, f, names),
                                      cases, find_tokenizer(tmp), kinds, say, max_length_of(text))  # fmt: skip
            if original is not None:
                from edgekit.converters.compress_data import shipped_fidelity

                say("judging each shipped variant against the original model on held-out rows")
                if judged := shipped_fidelity(tmp, variants.variants, original, kinds):
                    variants.stage.metrics["fidelity_to_original"] = judged
        exported = Stage(
            name="export",
            params={"exporter": used, "opset": export.opset, "requested_exporter": export.exporter},
            metrics={"attempts": attempts, "notes": plan.fixed_notes},
        )
        return _write_artifact(
            tmp, job, variants,
            source=Source(kind=src.kind, ref=src.ref, sha256=src.sha256, metadata=src.metadata),
            inputs=[s.to_dict() for s in plan.inputs], outputs=[s.to_dict() for s in plan.outputs],
            output_kinds=kinds, precision="fp32", opset=export.opset, dynamic_dims=plan.dim_sizes,
            stages=[*compress_stages, exported], validation=reports, int_ranges=plan.int_ranges, text=text,
        )  # fmt: skip


def _convert_onnx(path: Path, out: Path, job: _Job) -> Manifest:
    """An ONNX source: copy and check it, validate it on the targets, and quantize it against itself."""
    from edgekit.converters.onnx_source import copy_model, copy_tokenizer, gate_cases, load_onnx_source, onnx_reference
    from edgekit.onnxfile import precision_of, read_onnx

    src = load_onnx_source(path)
    kinds = _checked_kinds(src.outputs, src.output_kinds, job)
    with staging_dir(out, force=job.force) as tmp:
        model = tmp / MODEL_NAME
        copy_model(src, model)
        copy_tokenizer(src, tmp)
        text = src.text or text_facts(tmp, {})
        precision = precision_of(read_onnx(model, check=False))
        if job.request.active and precision != "fp32":
            raise InputError(f"{path} is already {precision}; quantize its FP32 original instead")
        reference = onnx_reference(model)
        cases = gate_cases(src, reference)
        ref = ModelRef(path=model, inputs=tuple(src.inputs), outputs=tuple(src.outputs), precision=precision)
        reports = _validated(ref, job.targets, cases, kinds, job.say)
        variants = None
        if job.request.active:
            variants = build_variants(tmp, job.request, src.inputs, reference, cases, find_tokenizer(tmp), kinds,
                                      job.say, max_length_of(text))  # fmt: skip
        return _write_artifact(
            tmp, job, variants,
            source=Source(kind="onnx", ref=str(path.resolve()), sha256=src.sha256),
            inputs=[s.to_dict() for s in src.inputs], outputs=[s.to_dict() for s in src.outputs],
            output_kinds=kinds, precision=precision, opset=src.opset, stages=[], validation=reports,
            int_ranges=src.int_ranges, text=text,
        )  # fmt: skip


def _write_artifact(
    tmp: Path, job: _Job, variants: VariantsResult | None, *, stages: list[Stage],
    validation: Mapping[str, TargetReport], **fields: Any,
) -> Manifest:  # fmt: skip
    """The one manifest builder: the path's own fields, the quantize stage and its variants, every gate's
    report, the library and platform facts, and the resolved recipe; then the manifest is written and hashed."""
    reports = {**validation, **(variants.reports if variants else {})}
    all_stages = [*stages, *([variants.stage] if variants else [])]
    manifest = Manifest(
        **fields,
        stages=all_stages,
        recipe=resolved_recipe(job.recipe, fields["source"], all_stages, fields["output_kinds"]),
        variants=variants.variants if variants else {},
        variant_precisions=variants.precisions if variants else {},
        variant_cpu_flags=variants.cpu_flags if variants else {},
        validation={t: r.to_dict() for t, r in reports.items()},
        libraries=library_versions(),
        platform=platform_facts(),
    )
    job.say("writing artifact")
    return write_manifest(tmp, manifest)


def _validated(
    ref: ModelRef, targets: Sequence[str], cases: list[Case], kinds: Mapping[str, str], say: ProgressFn
) -> dict[str, TargetReport]:
    """The gate on every target in turn; the first failure raises :class:`ValidationError`."""
    reports = {}
    for t in targets:
        say(f"validating on {t}")
        reports[t] = _check_target(ref, t, cases, kinds)
        require_passed(reports[t])
    return reports


def _export_until_valid(
    module: Any, plan: IOPlan, path: Path, options: ExportOptions, cases: list[Case], kinds: Mapping[str, str],
    say: ProgressFn,
) -> tuple[str, list[dict[str, Any]], dict[str, TargetReport]]:  # fmt: skip
    """Try each exporter in order; the first whose model passes the ONNX Runtime parity gate wins."""
    attempts: list[dict[str, Any]] = []
    failed_gate: TargetReport | None = None
    for exporter in options.exporter_order():
        _remove_model_files(path)
        say(f"exporting with the {exporter} exporter (opset {options.opset})")
        try:
            rewrites = export_onnx(module, plan, path, exporter, options.opset)
            say(f"checking parity on {DEFAULT_TARGET}")
            ref = ModelRef(path=path, inputs=tuple(plan.inputs), outputs=tuple(plan.outputs))
            report = _check_target(ref, DEFAULT_TARGET, cases, kinds)
        except EdgekitError as exc:
            attempts.append({"exporter": exporter, "result": str(exc)})
            continue
        if report.passed:
            attempts.append({"exporter": exporter, "result": "ok", **({"rewrites": rewrites} if rewrites else {})})
            return exporter, attempts, {DEFAULT_TARGET: report}
        attempts.append({"exporter": exporter, "result": f"parity failed: {report.failure}"})
        failed_gate = failed_gate or report
    if failed_gate is not None:
        require_passed(failed_gate)
    summary = "; ".join(a["result"] for a in attempts)
    raise ExportError(f"no exporter produced a valid model: {summary}")


def _check_target(ref: ModelRef, target: str, cases: list[Case], kinds: Mapping[str, str]) -> TargetReport:
    """The gate on one target; a runtime that fails on valid input is a failed report, not a crash."""
    with session_class(target)(ref, SessionConfig()) as session:
        try:
            return check_session(session, cases, kinds)
        except ValidationError:
            raise
        except EdgekitError as exc:
            info = session.info()
            return TargetReport(target, info.precision, TOLERANCES["fp32"], passed=False, failure=str(exc))


def _checked_kinds(outputs: Sequence[TensorSpec], declared: Mapping[str, str], job: _Job) -> dict[str, str]:
    """Every output's kind; a fidelity goal that cannot apply to them (top1 without a classifier) fails now."""
    kinds = output_kinds(outputs, declared, job.kinds)
    if job.request.goal is not None:
        job.request.goal.check_applies(kinds)
    return dict(kinds)


def max_length_of(text: TextFacts | None) -> int | None:
    """The tokens a text model reads, as recorded (None: not a text model, or the tokenizer's own files say)."""
    return text.max_length if text is not None else None


def _remove_model_files(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
