"""Numbers on TensorRT: which precision an engine computes in, which flags say so on TensorRT 10 versus 11,
and the TensorRT <-> numpy dtype names (with bf16 carried as uint16 bit patterns on the host).

Flag facts (TensorRT docs, REFERENCE.md): ``EXPLICIT_BATCH`` is ignored from TensorRT 10 and gone in 11,
so it is never set. TensorRT 10 builds weakly typed networks unless ``STRONGLY_TYPED`` is set and accepts
the FP16/BF16/INT8 builder flags; TensorRT 11 networks are always strongly typed and those flags are
gone, so precision must already be in the ONNX graph (Cast nodes for FP16, Q/DQ pairs for INT8).

TF32 is different: ``BuilderFlag.TF32`` exists on 10 and 11 and is ON by default, so an "fp32" engine on an
Ampere or newer GPU multiplies with 10-bit mantissas unless the flag is cleared. edgekit clears it unless the
caller asks for ``precision="tf32"``, and :func:`precision_plan` makes the flags a build sets and clears and
the precision a session reports one decision, so the fidelity gate judges what really runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import InputError, RuntimeUnavailableError

SUPPORTED_MAJORS = (10, 11)

# ---------------------------------------------------------------------------------------------- dtypes

TRT_TO_NUMPY: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",  # numpy has no bfloat16: the host side uses float32, converted by bf16_bits/from
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}
NUMPY_TO_TRT: dict[str, str] = {v: k for k, v in TRT_TO_NUMPY.items()}
_UNSUPPORTED_TRT = {"FP8", "INT4", "FP4", "E8M0"}


def numpy_dtype_for_trt(trt_name: str) -> str:
    """numpy dtype name for a TensorRT DataType name (``"HALF"`` or ``"DataType.HALF"`` -> ``"float16"``)."""
    key = str(trt_name).rsplit(".", 1)[-1].upper()
    if key in TRT_TO_NUMPY:
        return TRT_TO_NUMPY[key]
    if key in _UNSUPPORTED_TRT:
        raise InputError(
            f"TensorRT tensor type {key} has no numpy equivalent for model inputs/outputs; keep "
            f"{key} inside the graph and use float32/float16 IO"
        )
    raise InputError(f"unknown TensorRT data type {trt_name!r}; known: {', '.join(TRT_TO_NUMPY)}")


def trt_dtype_for_numpy(numpy_name: str) -> str:
    """TensorRT DataType name for a numpy dtype name (``"float32"`` -> ``"FLOAT"``)."""
    key = str(numpy_name)
    if key in NUMPY_TO_TRT:
        return NUMPY_TO_TRT[key]
    raise InputError(
        f"TensorRT has no {key} tensors; supported IO dtypes: {', '.join(NUMPY_TO_TRT)} (cast the model's IO)"
    )


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    bits = f32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def float32_from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------------------------------- flags


def trt_major_version(version: str) -> int:
    """Major version from ``tensorrt.__version__`` (``"10.3.0.26"`` -> 10)."""
    m = re.match(r"^\s*(\d+)(?:\.\d+)*", str(version))
    if not m:
        raise InputError(f"cannot read a TensorRT version from {version!r}")
    return int(m.group(1))


def require_supported_major(major: int) -> None:
    """TensorRT 10 and newer only: 8.x/9.x have implicit batch and other APIs edgekit does not drive."""
    if major < SUPPORTED_MAJORS[0]:
        raise RuntimeUnavailableError(
            f"TensorRT {major} is too old; edgekit needs TensorRT 10 or newer: pip install 'tensorrt>=10'"
        )


def resolve_strongly_typed(major: int, requested: bool | None, graph: str, precision: str | None) -> bool:
    """Whether to build strongly typed.

    TensorRT 11: always. TensorRT 10: as requested; by default only when the graph already carries a
    reduced precision and the caller asks for no other, so the engine computes exactly what the graph says.
    """
    require_supported_major(major)
    if major >= 11:
        if requested is False:
            raise InputError(f"TensorRT {major} networks are always strongly typed; drop strongly_typed=False")
        return True
    if requested is not None:
        return requested
    return graph != "fp32" and precision in (None, graph)


def network_flags_for(major: int, strongly_typed: bool) -> tuple[str, ...]:
    """``NetworkDefinitionCreationFlag`` names for ``create_network``.

    Never ``EXPLICIT_BATCH`` (ignored on 10, removed on 11). ``STRONGLY_TYPED`` only on 10 when asked:
    on 11 it is implied (and deprecated), so nothing is set.
    """
    require_supported_major(major)
    if major >= 11:
        return ()
    return ("STRONGLY_TYPED",) if strongly_typed else ()


PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "tensorfloat32": "tf32"}
TF32_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere: older GPUs have no TF32 units and run FLOAT layers in fp32


def normalize_precision(precision: str | None) -> str | None:
    """``None`` or one of :data:`PRECISIONS` (aliases such as ``float16`` accepted)."""
    if precision is None:
        return None
    key = _PRECISION_ALIASES.get(str(precision).strip().lower(), str(precision).strip().lower())
    if key not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} for tensorrt; expected one of: {', '.join(PRECISIONS)}")
    return key


def graph_precision(model_precision: str) -> str:
    """The ONNX graph's precision (``ModelRef.precision``) as one of :data:`PRECISIONS`."""
    key = str(model_precision).strip().lower()
    if key == "int8-dynamic":
        raise InputError(
            "TensorRT cannot build ONNX Runtime dynamic-INT8 graphs (DynamicQuantizeLinear/MatMulInteger); "
            "quantize statically to Q/DQ for TensorRT, or run the fp32 model"
        )
    if key in ("int8-qdq", "int8"):
        return "int8"
    if key in ("fp8", "fp8-qdq"):
        raise InputError("FP8 Q/DQ graphs are not supported by edgekit's TensorRT runtime yet; use int8 Q/DQ")
    graph = normalize_precision(key) or "fp32"
    if graph == "tf32":  # a way to compute fp32 layers, never a type an ONNX graph carries
        raise InputError(f"model precision {model_precision!r} is not an ONNX graph precision; fp32 graphs run as tf32")
    return graph


def _graph_only_error(major: int, graph: str, want: str, typed_10: bool) -> InputError:
    why = (
        f"TensorRT {major} takes precision from the ONNX graph"
        if major >= 11
        else "a strongly typed TensorRT 10 network takes precision from the ONNX graph"
    )
    hint = f"convert the model first: edgekit convert --quantize {want}"
    if typed_10:
        hint += ", or pass options={'strongly_typed': False}"
    return InputError(f"precision {want!r} requested but this graph is {graph}; {why}: {hint}")


def builder_precision_flags(
    major: int, precision: str | None, *, graph: str = "fp32", strongly_typed: bool = False
) -> tuple[str, ...]:
    """``BuilderFlag`` names to set for ``precision`` on a ``graph``-precision model.

    Strongly typed (always on 11): no flags, and asking for a precision the graph lacks is an InputError
    that says how to convert. Weakly typed TensorRT 10: FP16/BF16 flags as asked; INT8 only for a Q/DQ graph
    (edgekit has no calibrator), where the INT8 flag is needed to honour the Q/DQ nodes.
    """
    require_supported_major(major)
    want = normalize_precision(precision)
    if major >= 11 or strongly_typed:
        if want is not None and want != graph:
            raise _graph_only_error(major, graph, want, typed_10=major < 11)
        return ()
    want = want or graph
    if want == "int8" and graph != "int8":
        raise InputError(
            "INT8 on TensorRT needs a Q/DQ model (edgekit does not calibrate inside TensorRT): "
            "edgekit convert --quantize int8"
        )
    if graph == "int8" and want == "fp32":
        raise InputError("this graph is int8 Q/DQ; it cannot run as fp32: load the fp32 model instead")
    flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ()}[want]
    return (*flags, "INT8") if graph == "int8" else flags


def effective_precision(model_precision: str, flags: Sequence[str]) -> str:
    """What the engine computes in, for reports: a reduced-precision builder flag, else the graph's own."""
    if "FP16" in flags and "INT8" not in flags:
        return "fp16"
    if "BF16" in flags and "INT8" not in flags:
        return "bf16"
    return model_precision


@dataclass(frozen=True)
class PrecisionPlan:
    """One decision for one engine: flags set and cleared at build time, and the precision reports state.

    Kept as one value so the build config and ``SessionInfo.precision`` can never disagree.
    """

    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    cleared_flags: tuple[str, ...]  # BuilderFlag names to clear (TF32 unless asked: TensorRT sets it by default)
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    reported: str  # what the engine computes in, for SessionInfo.precision and the fidelity gate

    @property
    def tf32(self) -> bool:
        return "TF32" in self.builder_flags


def _typed_for(major: int, requested: bool | None, graph: str, want: str | None, can_type_strongly: bool) -> bool:
    """Strong typing after :func:`resolve_strongly_typed`, falling back on a TensorRT 10 that predates it."""
    typed = resolve_strongly_typed(major, requested, graph, want)
    if typed and major < 11 and not can_type_strongly:
        if requested:
            raise InputError("strongly_typed needs a TensorRT with STRONGLY_TYPED networks (10.12 or newer)")
        return False  # this TensorRT 10 predates strong typing: fall back to builder flags
    return typed


def precision_plan(
    major: int,
    requested: str | None,
    *,
    model_precision: str,
    strongly_typed: bool | None = None,
    can_type_strongly: bool = True,
    compute_capability: tuple[int, int] = TF32_MIN_COMPUTE_CAPABILITY,
) -> PrecisionPlan:
    """The flags and reported precision for a ``model_precision`` graph when ``requested`` is asked for.

    ``tf32`` is accepted for fp32 graphs only and sets ``BuilderFlag.TF32``; anything else clears it, so fp32
    means fp32. It is reported as ``tf32`` only on GPUs that have TF32 (compute capability 8.0 and newer).
    """
    graph = graph_precision(model_precision)
    want = normalize_precision(requested)
    if want == "tf32" and graph != "fp32":
        raise InputError(f"precision 'tf32' applies to fp32 graphs; this graph is {graph}: load the fp32 model")
    tf32 = want == "tf32"
    typed = _typed_for(major, strongly_typed, graph, None if tf32 else want, can_type_strongly)
    flags = builder_precision_flags(major, None if tf32 else want, graph=graph, strongly_typed=typed)
    has_tf32 = tuple(compute_capability) >= TF32_MIN_COMPUTE_CAPABILITY
    return PrecisionPlan(
        builder_flags=(*flags, "TF32") if tf32 else flags,
        cleared_flags=() if tf32 else ("TF32",),
        network_flags=network_flags_for(major, typed),
        reported="tf32" if tf32 and has_tf32 else effective_precision(model_precision, flags),
    )
