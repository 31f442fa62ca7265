"""Weight-only INT8 for the nodes the sensitivity search keeps out of activation quantization.

What makes a transformer layer sensitive is quantizing its *input activations* (outliers after GELU, say);
its weights quantize per channel almost losslessly. So a node excluded from INT8 keeps float activations but
stores its weight as int8 with one scale per output channel, dequantized in the graph
(``DequantizeLinear -> MatMul``): OpenVINO runs such a MatMul with compressed weights, ONNX Runtime folds or
dequantizes them. Each excluded MatMul then costs a quarter of its float size, so backing off where the
analysis says costs speed only where it must, and the file stays small (MiniLM: 1.8 MB per FFN matrix kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_MIN_ELEMENTS = 4096  # smaller weights are not worth a DequantizeLinear node


def compress_excluded_weights(path: Path, nodes: Sequence[str]) -> list[str]:
    """Rewrite ``path`` so each MatMul (2-D constant weight) or Conv in ``nodes`` reads an int8 weight through a
    per-channel symmetric DequantizeLinear; the names of the nodes rewritten."""
    import onnx
    from onnx import numpy_helper

    wanted = set(nodes)
    if not wanted:
        return []
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    uses = _consumers(model)
    done: list[str] = []
    for node in [n for n in model.graph.node if n.name in wanted and n.op_type in ("MatMul", "Conv")]:
        tensor = inits.get(node.input[1]) if len(node.input) > 1 else None
        if tensor is not None and uses.get(tensor.name, 0) == 1 and _worth_it(node.op_type, tensor):
            _dequantized_weight(model, node, tensor, numpy_helper.to_array(tensor))
            done.append(node.name)
    if done:
        onnx.save(model, str(path))
    return done


def _worth_it(op_type: str, tensor: Any) -> bool:
    """A float weight big enough to matter: a MatMul's 2-D matrix or a Conv's kernel."""
    import onnx

    dims = list(tensor.dims)
    size = int(np.prod(dims)) if dims else 0
    shaped = len(dims) == 2 if op_type == "MatMul" else len(dims) >= 3
    return tensor.data_type == onnx.TensorProto.FLOAT and shaped and size >= _MIN_ELEMENTS


def _dequantized_weight(model: Any, node: Any, tensor: Any, weight: np.ndarray) -> None:
    """Replace ``node``'s weight by int8 + scales and a DequantizeLinear right before it."""
    import onnx
    from onnx import numpy_helper

    axis = 1 if node.op_type == "MatMul" else 0  # the output channel
    q, scale = _symmetric_int8(weight, axis)
    base = f"{tensor.name}_wq"
    model.graph.initializer.remove(tensor)
    zero = np.zeros_like(scale, np.int8)
    for array, name in ((q, base), (scale, f"{base}_scale"), (zero, f"{base}_zero")):
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    dq = onnx.helper.make_node("DequantizeLinear", [base, f"{base}_scale", f"{base}_zero"], [f"{base}_dq"],
                               name=f"{node.name}_weight_dq", axis=axis)  # fmt: skip
    node.input[1] = f"{base}_dq"
    _insert_before(model, node, dq)


def _symmetric_int8(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 (zero point 0): what TensorRT and both CPU runtimes take for weights."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.abs(weight).max(axis=reduce).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def _consumers(model: Any) -> dict[str, int]:
    """How many nodes read each tensor: a weight shared by two nodes is left as it is."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _insert_before(model: Any, node: Any, new: Any) -> None:
    """Keep the graph topologically sorted: the DequantizeLinear goes right before its consumer."""
    index = next(i for i, n in enumerate(model.graph.node) if n.name == node.name)
    model.graph.node.insert(index, new)
