"""The quantization schemes edgekit knows, their options and what quantizing produced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

MODES = ("int8-dynamic", "int8", "fp16")
CLI_MODES = ("none", *MODES, "auto")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ENGINES = ("onnxruntime", "nncf")  # who quantizes static INT8: ONNX Runtime's quantize_static, or NNCF
# ops with a constant weight worth storing in INT8; Gather is an embedding table (in MiniLM 47 of its 90 MB)
WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "Gather")
_WEIGHT_INPUT = {"Gather": 0}  # which input holds the weight (the table); every other op's is input 1


def weight_input(op_type: str) -> int:
    """The index of the input that holds an op's constant weight."""
    return _WEIGHT_INPUT.get(op_type, 1)


# numerically fragile ops (reductions, exponentials, normalization) stay in fp32 in the FP16 variant
FP16_KEEP_FP32 = ("LayerNormalization", "ReduceL2", "ReduceMean", "ReduceSum", "Softmax", "Erf", "Exp", "Pow", "Sqrt",
                  "Div", "Range", "Where", "IsNaN", "Clip", "BatchNormalization", "InstanceNormalization")  # fmt: skip


def variant_file(mode: str, *, symmetric: bool = False) -> str:
    """``model.int8.onnx``, ``model.int8-sym.onnx`` (symmetric activations), ``model.int8-dynamic.onnx``,
    ``model.fp16.onnx``."""
    return f"model.{mode}{'-sym' if symmetric else ''}.onnx"


@dataclass(frozen=True)
class QuantizeOptions:
    """One quantization scheme. Defaults are the faithful ones; see the module docstring for why."""

    mode: str = "int8"
    calibration: str = "minmax"
    per_channel: bool = True
    activation_symmetric: bool = False  # True: int8 activations with zero point 0 (TensorRT)
    reduce_range: bool = False  # 7-bit weights; see for_this_cpu
    op_types: tuple[str, ...] = WEIGHT_OPS
    nodes_to_exclude: tuple[str, ...] = ()
    # Conv: so ONNX Runtime runs QLinearConv. Gather: with a Q after it ONNX Runtime gathers int8 rows instead
    # of dequantizing the whole table on every run
    output_quant_ops: tuple[str, ...] = ("Conv", "Gather")
    percentile: float = 99.999
    smoothquant_alpha: float | None = None
    fp16_keep: tuple[str, ...] = FP16_KEEP_FP32
    engine: str = "onnxruntime"  # static INT8 only; see ENGINES
    # nodes_to_exclude keep float activations; their weights are stored int8 and dequantized in the graph
    # ("int8", see quantize/weights.py) or left float ("float")
    excluded_weights: str = "int8"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown quantization mode {self.mode!r}; expected one of: {', '.join(MODES)}")
        if self.engine not in ENGINES or (self.engine != "onnxruntime" and self.mode != "int8"):
            raise InputError(f"quantization engine {self.engine!r} is not one of {', '.join(ENGINES)} for {self.mode}")
        if self.excluded_weights not in ("int8", "float"):
            raise InputError(f"excluded_weights must be int8 or float, got {self.excluded_weights!r}")
        if self.calibration not in CALIBRATION_METHODS:
            raise InputError(
                f"unknown calibration method {self.calibration!r}; expected {', '.join(CALIBRATION_METHODS)}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise InputError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.smoothquant_alpha is not None and not 0.0 < self.smoothquant_alpha < 1.0:
            raise InputError(f"SmoothQuant alpha must be in (0, 1), got {self.smoothquant_alpha}")

    @property
    def needs_calibration(self) -> bool:
        return self.mode == "int8"

    def for_this_cpu(self) -> QuantizeOptions:
        """INT8 with 7-bit weights where INT8 products saturate (an x86 CPU without VNNI or AMX): there ONNX Runtime's
        and OpenVINO's kernels clamp pairs of 8-bit products to 16 bits, and 7-bit weights cannot overflow
        (ONNX Runtime's ``reduce_range``, NNCF's overflow fix on every layer). Recorded in the params as made."""
        from edgekit.cpu import int8_products_saturate

        if self.mode in ("int8-dynamic", "int8") and not self.reduce_range and int8_products_saturate():
            return replace(self, reduce_range=True)
        return self

    def excluding(self, nodes: Sequence[str]) -> QuantizeOptions:
        return replace(self, nodes_to_exclude=tuple(dict.fromkeys([*self.nodes_to_exclude, *nodes])))

    def describe(self) -> dict[str, Any]:
        """What goes into the manifest: only the settings that matter for this mode."""
        d = asdict(self)
        keep = {"int8-dynamic": ("mode", "per_channel", "reduce_range", "op_types", "nodes_to_exclude",
                                 "excluded_weights"),
                "fp16": ("mode", "fp16_keep"), "int8": tuple(k for k in d if k != "fp16_keep")}[self.mode]  # fmt: skip
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in keep}


@dataclass
class QuantizeResult:
    path: Path
    precision: str
    options: QuantizeOptions
    quantized_nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"file": self.path.name, "precision": self.precision, "params": self.options.describe(),
                "quantized_nodes": len(self.quantized_nodes), "excluded_nodes": list(self.options.nodes_to_exclude),
                "seconds": round(self.seconds, 2), "size_bytes": self.path.stat().st_size}  # fmt: skip
