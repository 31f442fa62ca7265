"""Per-layer sensitivity: which quantized nodes lose the most, so ``auto`` keeps those in float first.

A node's sensitivity is the noise-to-signal ratio its quantization adds to its own output: its input activation
quantized with the scale and zero point the QDQ model really uses (or the per-run range dynamic quantization
uses), times its per-channel symmetric INT8 weights, against the float product, on the float model's own
activations. Measuring locally, on exact float inputs, avoids blaming a layer for the error it inherited; in
output space, because an outlier channel makes an input look well quantized while the small channels the next
layer depends on are lost. (Conv, and weights that are not a matrix, fall back to input + weight noise.) The
search that uses this ranking still judges every step on the model's real outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
_TWO_GB = 2 * 1024**3
_LAYOUT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten")


def rank_nodes(float_path: Path, quantized_path: Path, nodes: Sequence[str], samples: Sequence[Feeds]) -> list[tuple]:
    """``[(node, sensitivity), ...]``, most sensitive first, for the ``nodes`` quantized in ``quantized_path``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(float_path))
    by_name = {n.name: n for n in model.graph.node}
    weights = {i.name: i for i in model.graph.initializer}
    # embedding tables (Gather) are not ranked: their rows are looked up, not multiplied, and they cost little
    chosen = [by_name[n] for n in nodes if n in by_name and by_name[n].op_type != "Gather"
              and by_name[n].input[1] in weights]  # fmt: skip
    qparams = _activation_qparams(onnx.load(str(quantized_path)))
    activations = _float_activations(model, sorted({n.input[0] for n in chosen}), samples)
    ranking = []
    for node in chosen:
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        xs, qp = activations.get(node.input[0], []), qparams.get(node.input[0])
        if node.op_type in ("MatMul", "Gemm") and w.ndim == 2:
            ranking.append((node.name, _output_nsr(xs, qp, _oriented(node, w))))
        else:
            ranking.append((node.name, _activation_nsr(xs, qp) + _weight_nsr(w, _channel_axis(node, w))))
    return sorted(ranking, key=lambda item: -item[1])


def activation_matmuls(quantized_path: Path) -> list[str]:
    """MatMuls of ``quantized_path`` both of whose inputs are quantized activations (attention scores and the like):
    no weight to rank them by, so ``auto`` judges keeping them in float as a group on the real outputs."""
    import onnx

    model = onnx.load(str(quantized_path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def quantized_activation(name: str) -> bool:
        dq = producer.get(name)
        while dq is not None and dq.op_type in _LAYOUT_OPS:  # a runtime moves dequantization past these
            dq = producer.get(dq.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            return False
        q = producer.get(dq.input[0])
        return q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in constants

    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2]
    return [n.name for n in matmuls if all(quantized_activation(i) for i in n.input)]


def _oriented(node: Any, w: np.ndarray) -> np.ndarray:
    """The weight as ``[in, out]`` so that ``y = x @ w``."""
    if node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0):
        return w.T
    return w


def _output_nsr(values: Sequence[np.ndarray], qparams: tuple | None, w: np.ndarray) -> float:
    """Noise-to-signal of ``quant(x) @ quant(w)`` against ``x @ w``."""
    wq = _fake_quant_weight(w, axis=1)
    noise = signal = 0.0
    for x in values:
        if x.shape[-1] != w.shape[0]:
            continue
        scale, zero = qparams if qparams is not None else _dynamic_qparams(x)
        y = x @ w
        noise += float(np.square(_fake_quant(x, scale, zero) @ wq - y).sum())
        signal += float(np.square(y).sum())
    return noise / signal if signal > 0 else 0.0


def _activation_qparams(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scale and zero point of every QuantizeLinear on an activation, keyed by the float tensor it quantizes."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        quantizes_activation = n.op_type == "QuantizeLinear" and n.input[0] not in consts and len(n.input) >= 3
        if quantizes_activation and n.input[1] in consts and n.input[2] in consts:
            out[n.input[0]] = (consts[n.input[1]], consts[n.input[2]])
    return out


def _float_activations(model: Any, tensors: Sequence[str], samples: Sequence[Feeds]) -> dict[str, list[np.ndarray]]:
    """Run the float model once per sample with ``tensors`` exposed as extra outputs."""
    import onnx
    import onnxruntime as ort

    graph_outputs = {o.name for o in model.graph.output}
    extra = [t for t in tensors if t not in graph_outputs]
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra)
    if model.ByteSize() >= _TWO_GB:
        return {}  # too large to hand over in memory; the search then relies on measured fidelity alone
    so = ort.SessionOptions()
    so.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    wanted = set(tensors)
    collected: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for feeds in samples:
        for name, value in zip(names, session.run(None, feeds), strict=True):
            if name in wanted:
                collected[name].append(np.asarray(value, dtype=np.float32))
    return collected


def _activation_nsr(values: Sequence[np.ndarray], qparams: tuple[np.ndarray, np.ndarray] | None) -> float:
    """Noise-to-signal of 8-bit activation quantization: the model's static range, else each run's own range."""
    noise = signal = 0.0
    for x in values:
        scale, zero = qparams if qparams is not None else _dynamic_qparams(x)
        noise += float(np.square(_fake_quant(x, scale, zero) - x).sum())
        signal += float(np.square(x).sum())
    return noise / signal if signal > 0 else 0.0


def _dynamic_qparams(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0 or 1.0)
    return np.array(scale), np.array(np.round(-lo / scale), dtype=np.uint8)


def _fake_quant(x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    lo, hi = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
    z = zero.astype(np.float32)
    return (np.clip(np.round(x / scale) + z, lo, hi) - z) * scale


def _channel_axis(node: Any, w: np.ndarray) -> int:
    """Output-channel axis of the weight: N of MatMul's [K, N], Gemm's per transB, Conv's first."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else w.ndim - 1
    return 0 if node.op_type == "Conv" else w.ndim - 1


def _fake_quant_weight(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric INT8 (zero point 0, range [-127, 127]) along output-channel ``axis``."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce, keepdims=True) if reduce else np.abs(w)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


def _weight_nsr(w: np.ndarray, axis: int) -> float:
    signal = float(np.square(w).sum())
    return float(np.square(_fake_quant_weight(w, axis) - w).sum()) / signal if signal > 0 else 0.0
