"""Quantization: ONNX Runtime's tools under edgekit's decisions, per-target variants, and ``--quantize auto``.

Modules: ``options`` (modes, QuantizeOptions, QuantizeResult: at the bottom), ``model`` (quantize_model: dynamic
and static QDQ INT8, FP16), ``sensitivity`` (which nodes to keep in float), ``auto`` (the accuracy-aware search),
``variants`` (the quantize stage of ``convert``: calibration in, gated per-target variants out).
"""

from edgekit.converters.quantize.model import quantize_model, weight_nodes
from edgekit.converters.quantize.options import MODES, QuantizeOptions, QuantizeResult, variant_file

__all__ = ["MODES", "QuantizeOptions", "QuantizeResult", "quantize_model", "variant_file", "weight_nodes"]
