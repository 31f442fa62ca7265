"""Static INT8 with NNCF, OpenVINO's own post-training quantizer, through its ONNX backend.

Why a second engine: on all-MiniLM-L6-v2, ``nncf.quantize`` with the transformer model type (SmoothQuant, fast
bias correction, NNCF's placement of quantizers) kept a mean cosine of 0.998 on held-back sentences where ONNX
Runtime's ``quantize_static`` kept 0.990, at OpenVINO INT8 speed (``benchmarks/results/int8_engines.md``).
Through the ONNX backend the result is still a QDQ ONNX model, so the artifact stays ONNX and every runtime
loads it; ONNX Runtime runs NNCF's placement slowly, so ``auto`` offers it as an OpenVINO candidate.

Excluded nodes (the sensitivity search's) become NNCF's ignored scope, by node name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.converters.quantize.options import QuantizeOptions
from edgekit.errors import RuntimeUnavailableError

Feeds = dict[str, np.ndarray]
_TRANSFORMER_OPS = frozenset({"Softmax"})  # attention; with a normalization below, NNCF's transformer type fits
_NORMALIZATION_OPS = frozenset({"LayerNormalization", "ReduceMean", "SimplifiedLayerNormalization"})


def nncf_available() -> bool:
    return importlib.util.find_spec("nncf") is not None


def quantize_with_nncf(src: Path, dst: Path, options: QuantizeOptions, calibration: Sequence[Feeds]) -> None:
    """Write ``src`` quantized by ``nncf.quantize`` (ONNX backend) to ``dst``."""
    if not nncf_available():
        raise RuntimeUnavailableError("the NNCF quantization engine needs NNCF: pip install 'edgekit[nncf]'")
    import onnx

    from edgekit.runtimes.openvino import openvino_module

    openvino_module()  # before nncf: it is what keeps NNCF's and OpenVINO's telemetry off the network
    import nncf

    model = onnx.load(str(src))
    kwargs: dict[str, Any] = {"subset_size": len(calibration)}
    if is_transformer(model):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if options.nodes_to_exclude:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(options.nodes_to_exclude), validate=False)
    if options.activation_symmetric:
        kwargs["preset"] = nncf.QuantizationPreset.PERFORMANCE  # symmetric activations, zero point 0
    if options.reduce_range:  # 7-bit weights in every layer (NNCF's default fixes the first layer only)
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), **kwargs)
    onnx.save(quantized, str(dst))


def is_transformer(model: Any) -> bool:
    """Attention (Softmax) plus a normalization: the graphs NNCF's transformer model type is made for."""
    ops = {n.op_type for n in model.graph.node}
    return bool(ops & _TRANSFORMER_OPS) and bool(ops & _NORMALIZATION_OPS)
