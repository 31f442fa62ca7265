"""ONNX -> quantized ONNX with ONNX Runtime's tools: INT8 dynamic, INT8 static QDQ, and Cast-based FP16.

Choices that keep embeddings faithful (measured on all-MiniLM-L6-v2, see ``benchmarks/results``):

- Weights are always per-channel and symmetric (zero point 0): what TensorRT's explicit quantization demands and
  what per-tensor dynamic quantization got wrong (cosine 0.95).
- Only nodes with a constant weight are quantized (MatMul/Gemm/Conv, and Gather's embedding tables, which are
  most of a small transformer's file: MiniLM's variants shrink from 59 to 23 MB for a mean cosine 0.0004
  lower); activation x activation MatMuls in attention stay float.
- Static QDQ quantizes the *inputs* of MatMul/Gemm, not their outputs: ONNX Runtime then runs
  MatMulIntegerToFloat and no outlier-heavy pre-bias output is squeezed into 8 bits (cosine 0.93 -> 0.99).
  Conv outputs are quantized so ONNX Runtime can run QLinearConv.
- Calibration runs per shape group (ONNX Runtime's histogram calibrators cannot stack different sequence
  lengths) and the ranges are handed to ``quantize_static`` through its calibration cache, so re-quantizing
  with other excluded nodes (the sensitivity search in ``auto``) does not calibrate again.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.quantize.options import WEIGHT_OPS, QuantizeOptions, QuantizeResult, weight_input
from edgekit.errors import InputError, RuntimeUnavailableError

Feeds = dict[str, np.ndarray]
_CHUNK = 16  # calibration samples per collect call (bounds the memory of histogram calibrators)


def weight_nodes(model: Any, op_types: Sequence[str] = WEIGHT_OPS) -> list[str]:
    """Names of nodes of ``op_types`` whose weight input (a Gather's table, others' second input) is a constant:
    the ones worth quantizing."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1
            and n.input[weight_input(n.op_type)] in constants]  # fmt: skip


def ensure_node_names(path: Path) -> bool:
    """Give unnamed or duplicate-named nodes unique names (exclusion and sensitivity work by name)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
            changed = True
        seen.add(node.name)
    if changed:
        onnx.save(model, str(path))  # external data references are kept as they are
    return changed


def quantize_model(
    src: Path, dst: Path, options: QuantizeOptions, calibration: Sequence[Feeds] = (), *, ranges: Path | None = None
) -> QuantizeResult:
    """Write ``src`` quantized per ``options`` to ``dst``. ``ranges`` caches static calibration ranges."""
    import onnx

    from edgekit.onnxfile import precision_of

    start = time.perf_counter()
    options = options.for_this_cpu()
    model = onnx.load(str(src), load_external_data=False)
    nodes = [n for n in weight_nodes(model, options.op_types) if n not in set(options.nodes_to_exclude)]
    if options.mode != "fp16" and not nodes:
        raise InputError(f"nothing to quantize: the model has no {'/'.join(options.op_types)} nodes with weights")
    with _quiet_ort():
        if options.mode == "int8-dynamic":
            _dynamic(src, dst, options, nodes)
        elif options.mode == "int8" and options.engine == "nncf":
            from edgekit.converters.quantize.nncf_engine import quantize_with_nncf

            quantize_with_nncf(src, dst, options, calibration)
        elif options.mode == "int8":
            _static(src, dst, options, nodes, calibration, ranges)
        else:
            _fp16(src, dst, options)
    if options.mode != "fp16" and options.nodes_to_exclude and options.excluded_weights == "int8":
        from edgekit.converters.quantize.weights import compress_excluded_weights

        compress_excluded_weights(dst, options.nodes_to_exclude)
    out = onnx.load(str(dst), load_external_data=False)
    onnx.checker.check_model(str(dst))
    return QuantizeResult(dst, precision_of(out), options, nodes, time.perf_counter() - start)


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """ONNX Runtime's quantizer prints progress to stdout and warnings to the root logger; keep stdout clean."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _dynamic(src: Path, dst: Path, options: QuantizeOptions, nodes: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=list(options.op_types), per_channel=options.per_channel,
        reduce_range=options.reduce_range, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # fmt: skip


def _static(
    src: Path, dst: Path, options: QuantizeOptions, nodes: list[str], calibration: Sequence[Feeds], ranges: Path | None
) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not calibration:
        raise InputError("static INT8 quantization needs calibration data (--calib-data)")
    extra: dict[str, Any] = {
        "WeightSymmetric": True,
        "ActivationSymmetric": options.activation_symmetric,
        "DefaultTensorType": onnx.TensorProto.FLOAT,
        "OpTypesToExcludeOutputQuantization": [t for t in options.op_types if t not in options.output_quant_ops],
    }
    kwargs: dict[str, Any] = {}
    if options.smoothquant_alpha is not None:
        _require_smoothquant()
        extra.update(SmoothQuant=True, SmoothQuantAlpha=options.smoothquant_alpha)
        kwargs["calibration_data_reader"] = _Reader(calibration)
        kwargs["calibrate_method"] = _method(options.calibration)
    elif "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache = ranges or dst.with_suffix(".ranges.json")
        if not cache.is_file():
            calibrate_ranges(src, options, calibration, cache)
        kwargs.update(calibration_cache_path=str(cache), calibrate_method=_method(options.calibration))
    else:  # older ONNX Runtime: one reader, which histogram methods accept only for same-shaped samples
        kwargs.update(calibration_data_reader=_Reader(calibration), calibrate_method=_method(options.calibration))
        extra["CalibPercentile"] = options.percentile
    act = QuantType.QInt8 if options.activation_symmetric else QuantType.QUInt8
    quantize_static(
        str(src), str(dst), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(options.op_types),
        per_channel=options.per_channel, reduce_range=options.reduce_range, activation_type=act,
        weight_type=QuantType.QInt8, nodes_to_quantize=nodes, extra_options=extra, **kwargs,
    )  # fmt: skip
    if ranges is None and kwargs.get("calibration_cache_path"):
        Path(kwargs["calibration_cache_path"]).unlink(missing_ok=True)


def calibrate_ranges(src: Path, options: QuantizeOptions, calibration: Sequence[Feeds], cache: Path) -> None:
    """Activation ranges for ``src`` from ``calibration``, saved where ``quantize_static`` reads its cache.

    Samples are grouped by shape and fed in chunks: histogram calibrators merge across calls but cannot stack
    tensors of different shapes within one.
    """
    import tempfile

    from onnxruntime.quantization import create_calibrator, save_tensors_data

    extra = {"symmetric": options.activation_symmetric, "percentile": options.percentile}
    with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp:
        calibrator = create_calibrator(
            src, list(options.op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(options.calibration), extra_options=extra,
        )  # fmt: skip
        for group in _shape_groups(calibration):
            for i in range(0, len(group), _CHUNK):
                calibrator.collect_data(_Reader(group[i : i + _CHUNK]))
        save_tensors_data(calibrator.compute_data(), cache)
        del calibrator


def _shape_groups(samples: Sequence[Feeds]) -> list[list[Feeds]]:
    groups: dict[tuple, list[Feeds]] = {}
    for s in samples:
        groups.setdefault(tuple((k, v.shape) for k, v in sorted(s.items())), []).append(s)
    return list(groups.values())


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]  # fmt: skip


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds (re-iterable, with a length)."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds = list(feeds)
        self._it = iter(self._feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _require_smoothquant() -> None:
    import importlib.util

    if importlib.util.find_spec("neural_compressor") is None:
        raise RuntimeUnavailableError(
            "SmoothQuant uses ONNX Runtime's integration with Intel Neural Compressor: pip install neural-compressor"
        )


def _fp16(src: Path, dst: Path, options: QuantizeOptions) -> None:
    """Cast-based FP16 that keeps fp32 IO and keeps fragile ops in fp32 (TensorRT takes precision from the graph)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    block = list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *options.fp16_keep]))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    wrapped = OnnxModel(converted)
    wrapped.topological_sort()  # the converter appends its Cast nodes at the end of the graph
    onnx.save(wrapped.model, str(dst))
