"""How ``prune_until`` times one step: export to ONNX, quantize it as the shipped model will be, time it on the target.

A step's latency is only worth comparing with the budget if it is the latency of what ships: a model that will be
quantized is timed quantized (ONNX Runtime: dynamic INT8; OpenVINO: NNCF INT8 on a small calibration subset),
since INT8 kernels do not speed up with pruning the way FP32 ones do. Timing runs in a fresh process
(edgekit.benchmark.measure_latency) on the example inputs' shape. A step whose quantization fails is timed in
FP32 and the record says why, so one odd model never stops the search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import ExportError, RuntimeUnavailableError, one_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekit.benchmark.plan import BenchConfig
    from edgekit.sources import LoadedSource

Feeds = dict[str, np.ndarray]
FP32 = "fp32"
# one short round per step: prune-until compares each step against a budget, not candidates with each other
FAST_TIMING = {"warmup_iterations": 3, "warmup_s": 0.1, "iterations": 10, "duration_s": 0.5, "rounds": 1,
               "cold_start": False, "fidelity": False}  # fmt: skip
# the cheap stand-in for what --quantize auto ships per target (auto's fastest candidate there)
_AUTO_TIMING = {"onnxruntime": "int8-dynamic", "openvino": "int8-nncf", "tensorrt": "fp16"}
_STATIC = ("int8", "int8-sym", "int8-nncf")


@dataclass(frozen=True)
class Timing:
    """One step's latency and which model was timed (``fp32`` or the quantization scheme); ``note``: why not the
    scheme asked for."""

    latency_ms: float
    model: str = FP32
    note: str | None = None


def timing_scheme(quantize_mode: str, target: str) -> str:
    """The scheme a step is timed in when ``convert`` quantizes with ``quantize_mode`` for ``target``."""
    from edgekit.runtimes import runtime_capabilities

    if quantize_mode in ("none", "int8-dynamic", "fp16"):
        return FP32 if quantize_mode == "none" else quantize_mode
    if quantize_mode == "int8":
        return "int8-sym" if runtime_capabilities(target).int8_symmetric_only else "int8"
    scheme = _AUTO_TIMING.get(target, FP32)
    return "int8" if scheme == "int8-nncf" and not _nncf_available() else scheme


def needs_calibration(scheme: str) -> bool:
    return scheme in _STATIC


def _nncf_available() -> bool:
    from edgekit.converters.quantize.nncf_engine import nncf_available

    return nncf_available()


class TargetTimer:
    """Exports a model to ONNX, quantizes it as ``scheme`` says, and times its p50 (ms) on ``target`` in a separate
    process."""

    def __init__(
        self,
        target: str,
        example_inputs: dict[str, torch.Tensor],
        source: LoadedSource | None,
        work_dir: Path,
        timing: BenchConfig | None = None,
        *,
        scheme: str = FP32,
        calibration: Sequence[Feeds] = (),
    ) -> None:
        from edgekit.benchmark.plan import BenchConfig
        from edgekit.runtimes import runtime_entry

        entry = runtime_entry(target)  # unknown target: an error now, not after the first prune
        if not entry.is_available():
            raise RuntimeUnavailableError(f"runtime {target!r} is not installed; install it with: {entry.install}")
        self.target, self.example_inputs, self.source, self.work_dir = target, example_inputs, source, work_dir
        self.timing = timing or BenchConfig(**FAST_TIMING)
        self.scheme, self.calibration = scheme, list(calibration)
        self.calls = 0

    def __call__(self, module: nn.Module) -> Timing:
        from edgekit.benchmark.measure import Candidate, measure_latency

        self.calls += 1
        path = self.work_dir / f"prune_step{self.calls}.onnx"
        feeds = export_for_timing(module, self.example_inputs, self.source, path)
        timed, model, note = self._quantized(path)
        job = Candidate(key="step", model=timed, target=self.target)
        return Timing(measure_latency([job], feeds, self.timing)["step"].p50_ms, model, note)

    def _quantized(self, path: Path) -> tuple[Path, str, str | None]:
        """The file to time, the model it is, and why it is FP32 when a scheme was asked for."""
        if self.scheme == FP32:
            return path, FP32, None
        if needs_calibration(self.scheme) and not self.calibration:
            return path, FP32, f"{self.scheme} needs calibration data and none was given: timed fp32"
        from edgekit.converters.quantize.auto import scheme_options
        from edgekit.converters.quantize.model import ensure_node_names, quantize_model

        dst = path.with_name(f"{path.stem}.{self.scheme}.onnx")
        try:
            ensure_node_names(path)
            quantize_model(path, dst, scheme_options(self.scheme, "minmax"), self.calibration)
        except Exception as exc:  # any quantizer failure: time FP32 and say why, the search goes on
            return path, FP32, f"{self.scheme} failed, timed fp32: {one_line(exc)}"
        return dst, self.scheme, None


def export_for_timing(
    module: nn.Module, example_inputs: dict[str, torch.Tensor], source: LoadedSource | None, path: Path
) -> dict[str, np.ndarray]:
    """Export with edgekit's exporter (TorchScript, then dynamo) and return feeds at the example's shape."""
    from edgekit.converters.export import ExportOptions, export_onnx, plan_io
    from edgekit.converters.torch_io import to_numpy_feeds

    options = ExportOptions()
    plan = plan_io(_source_for(module, example_inputs, source), options)
    errors: list[str] = []
    for exporter in options.exporter_order():
        try:
            export_onnx(module, plan, path, exporter, options.opset)
            break
        except ExportError as exc:
            errors.append(str(exc))
    else:
        raise ExportError("; ".join(errors))
    feeds = to_numpy_feeds(example_inputs)
    fits = all(s.name in feeds and _fits(s.shape, feeds[s.name].shape) for s in plan.inputs)
    return feeds if fits else plan.example


def _fits(spec_shape: tuple[int | str, ...], shape: tuple[int, ...]) -> bool:
    same_rank = len(spec_shape) == len(shape)
    return same_rank and all(isinstance(d, str) or d == n for d, n in zip(spec_shape, shape, strict=False))


def _source_for(
    module: nn.Module, example_inputs: dict[str, torch.Tensor], source: LoadedSource | None
) -> LoadedSource:
    """The source's export facts with the pruned module; without a source, ones read off the example."""
    import torch

    from edgekit.sources import LoadedSource
    from edgekit.sources.examples import forward_names

    if source is not None:
        return dataclasses.replace(source, module=module)
    names = [n for n in forward_names(module) if n in example_inputs] or list(example_inputs)
    ranges = {
        k: (int(v.min()), int(v.max()))
        for k, v in example_inputs.items()
        if not v.is_floating_point() and v.dtype != torch.bool and v.numel()
    }
    return LoadedSource(
        module=module, example_inputs=dict(example_inputs), kind="python", ref="pruned model", sha256=None,
        input_names=names, int_ranges=ranges,
    )  # fmt: skip
