"""``edgekit.convert``: source -> export -> parity gate -> artifact, written atomically.

Targets named for validation are checked to exist before any work starts, and the output directory is
claimed first, so bad input fails in milliseconds and never leaves a partial artifact behind. With
``quantize=...`` the stage in :mod:`edgekit.converters.variants` adds gated per-target model variants; an ONNX
file as the source skips torch (:mod:`edgekit.converters.onnx_source`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.artifact import (
    MODEL_NAME,
    Manifest,
    Source,
    Stage,
    library_versions,
    platform_facts,
    staging_dir,
    write_manifest,
)
from edgekit.converters.calibration import CalibSource, find_tokenizer
from edgekit.converters.compress import CompressRequest
from edgekit.converters.compress import compress as compress_source
from edgekit.converters.export import ExportOptions, IOPlan, export_onnx, plan_io
from edgekit.converters.validate import Case, TargetReport, build_cases, check_session, require_passed
from edgekit.converters.variants import QuantizeRequest, build_variants
from edgekit.errors import EdgekitError, ExportError, InputError, ValidationError
from edgekit.fidelity import TOLERANCES, output_kinds
from edgekit.runtimes import DEFAULT_TARGET, session_class
from edgekit.runtimes.base import ModelRef, SessionConfig
from edgekit.specs import TensorSpec

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
    quantize: str = "none",
    calib_data: CalibSource | None = None,
    calib_samples: int = 200,
    calibration: str = "minmax",
    fidelity: str | None = None,
    targets: Sequence[str] = (),
    compress: CompressRequest | None = None,
    kinds: Mapping[str, str] | None = None,
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
    """
    say = progress or _quiet
    request = QuantizeRequest(quantize, calib_data, calib_samples, calibration, fidelity, tuple(targets))
    options = ExportOptions(opset=opset, exporter=exporter, input_specs=tuple(input_specs), dim_sizes=dim_sizes or {})
    variant_targets = request.variant_targets() if request.active else []
    targets = list(dict.fromkeys([DEFAULT_TARGET, *validate_targets, *targets, *variant_targets]))
    for t in targets:
        session_class(t)  # unknown or missing runtimes fail now, before the slow work
    from edgekit.converters.onnx_source import is_onnx_source

    if is_onnx_source(source):
        if compress is not None and compress.active:
            raise InputError("pruning and distillation need the PyTorch model, not an ONNX file")
        return _convert_onnx(Path(source), Path(out), request, targets, force, kinds or {}, say)
    with staging_dir(Path(out), force=force) as tmp:
        from edgekit.sources import load_source

        say(f"loading {source}")
        src = load_source(source, allow_pickle=allow_pickle)
        compress_stages: list[Stage] = []
        if compress is not None and compress.active:
            src, compress_stages = compress_source(src, compress, say)
        say("probing dynamic dims")
        plan = plan_io(src, options)
        out_kinds = _checked_kinds(plan.outputs, src.output_kinds, kinds, request)
        cases = build_cases(
            src.module, plan.inputs, [o.name for o in plan.outputs], plan.example, plan.dim_sizes, plan.int_ranges
        )
        path = tmp / MODEL_NAME
        used, attempts, reports = _export_until_valid(src.module, plan, path, options, cases, out_kinds, say)
        for t in targets[1:]:
            say(f"validating on {t}")
            reports[t] = _check_target(path, plan, t, cases, out_kinds)
            require_passed(reports[t])
        for dest, src_file in src.extra_files.items():
            (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_file, tmp / dest)
        stages: list[Stage] = []
        if request.active:
            from edgekit.converters.torch_io import run_torch

            names = [o.name for o in plan.outputs]
            result = build_variants(tmp, request, plan.inputs, lambda f: run_torch(src.module, f, names), cases,
                                    find_tokenizer(tmp), out_kinds, say)  # fmt: skip
            stages, variants, precisions = [result.stage], result.variants, result.precisions
            reports.update(result.reports)
        else:
            variants, precisions = {}, {}
        manifest = Manifest(
            source=Source(kind=src.kind, ref=src.ref, sha256=src.sha256, metadata=src.metadata),
            inputs=[s.to_dict() for s in plan.inputs],
            outputs=[s.to_dict() for s in plan.outputs],
            output_kinds=out_kinds,
            precision="fp32",
            opset=opset,
            dynamic_dims=plan.dim_sizes,
            stages=[
                *compress_stages,
                Stage(
                    name="export",
                    params={"exporter": used, "opset": opset, "requested_exporter": exporter},
                    metrics={"attempts": attempts, "notes": plan.fixed_notes},
                ),
                *stages,
            ],
            variants=variants,
            variant_precisions=precisions,
            validation={t: r.to_dict() for t, r in reports.items()},
            libraries=library_versions(),
            platform=platform_facts(),
            int_ranges=plan.int_ranges,
        )
        say("writing artifact")
        return write_manifest(tmp, manifest)


def _export_until_valid(
    module: Any, plan: IOPlan, path: Path, options: ExportOptions, cases: list[Case], kinds: Mapping[str, str],
    say: ProgressFn,
) -> tuple[str, list[dict[str, str]], dict[str, TargetReport]]:  # fmt: skip
    """Try each exporter in order; the first whose model passes the ONNX Runtime parity gate wins."""
    attempts: list[dict[str, str]] = []
    failed_gate: TargetReport | None = None
    for exporter in options.exporter_order():
        _remove_model_files(path)
        say(f"exporting with the {exporter} exporter (opset {options.opset})")
        try:
            export_onnx(module, plan, path, exporter, options.opset)
            say(f"checking parity on {DEFAULT_TARGET}")
            report = _check_target(path, plan, DEFAULT_TARGET, cases, kinds)
        except EdgekitError as exc:
            attempts.append({"exporter": exporter, "result": str(exc)})
            continue
        if report.passed:
            attempts.append({"exporter": exporter, "result": "ok"})
            return exporter, attempts, {DEFAULT_TARGET: report}
        attempts.append({"exporter": exporter, "result": f"parity failed: {report.failure}"})
        failed_gate = failed_gate or report
    if failed_gate is not None:
        require_passed(failed_gate)
    summary = "; ".join(a["result"] for a in attempts)
    raise ExportError(f"no exporter produced a valid model: {summary}")


def _check_target(path: Path, plan: IOPlan, target: str, cases: list[Case], kinds: Mapping[str, str]) -> TargetReport:
    ref = ModelRef(path=path, inputs=tuple(plan.inputs), outputs=tuple(plan.outputs), precision="fp32")
    cls = session_class(target)
    with cls(ref, SessionConfig()) as session:
        try:
            return check_session(session, cases, kinds)
        except ValidationError:
            raise
        except EdgekitError as exc:
            info = session.info()
            return TargetReport(target, info.precision, TOLERANCES["fp32"], passed=False, failure=str(exc))


def _checked_kinds(
    outputs: Sequence[TensorSpec], declared: Mapping[str, str], requested: Mapping[str, str] | None,
    request: QuantizeRequest,
) -> dict[str, str]:  # fmt: skip
    """Every output's kind; a fidelity goal that cannot apply to them (top1 without a classifier) fails now."""
    kinds = output_kinds(outputs, declared, requested)
    if request.goal is not None:
        request.goal.check_applies(kinds)
    return dict(kinds)


def _remove_model_files(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


def _convert_onnx(
    path: Path, out: Path, request: QuantizeRequest, targets: list[str], force: bool, kinds: Mapping[str, str],
    say: ProgressFn,
) -> Manifest:  # fmt: skip
    """An ONNX source: copy and check it, validate it on the targets, and quantize it against itself."""
    from edgekit.converters.onnx_source import copy_model, copy_tokenizer, gate_cases, load_onnx_source, onnx_reference
    from edgekit.onnxfile import precision_of, read_onnx

    src = load_onnx_source(path)
    out_kinds = _checked_kinds(src.outputs, {}, kinds, request)
    with staging_dir(out, force=force) as tmp:
        model = tmp / MODEL_NAME
        copy_model(src, model)
        copy_tokenizer(src, tmp)
        precision = precision_of(read_onnx(model, check=False))
        if request.active and precision != "fp32":
            raise InputError(f"{path} is already {precision}; quantize its FP32 original instead")
        reference = onnx_reference(model)
        cases = gate_cases(src, reference)
        ref = ModelRef(path=model, inputs=tuple(src.inputs), outputs=tuple(src.outputs), precision=precision)
        reports = {}
        for t in targets:
            say(f"validating on {t}")
            with session_class(t)(ref, SessionConfig()) as session:
                reports[t] = check_session(session, cases, out_kinds)
            require_passed(reports[t])
        result = None
        if request.active:
            result = build_variants(tmp, request, src.inputs, reference, cases, find_tokenizer(tmp), out_kinds, say)
        manifest = Manifest(
            source=Source(kind="onnx", ref=str(path.resolve()), sha256=src.sha256),
            inputs=[s.to_dict() for s in src.inputs],
            outputs=[s.to_dict() for s in src.outputs],
            output_kinds=out_kinds,
            precision=precision,
            opset=src.opset,
            stages=[result.stage] if result else [],
            variants=result.variants if result else {},
            variant_precisions=result.precisions if result else {},
            validation={t: r.to_dict() for t, r in {**reports, **(result.reports if result else {})}.items()},
            libraries=library_versions(),
            platform=platform_facts(),
            int_ranges=src.int_ranges,
        )
        say("writing artifact")
        return write_manifest(tmp, manifest)
