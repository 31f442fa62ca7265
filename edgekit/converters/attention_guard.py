"""Drop the NaN guard the exporters wrap around masked attention softmax, keeping the function.

PyTorch exports ``scaled_dot_product_attention`` with a boolean mask as ``Softmax(scores + Where(mask, 0, -inf))``
followed by ``Where(IsNaN(p), 0, p)``: the guard turns rows whose keys are all masked (NaN) into zeros. Between
the softmax and the attention-times-values MatMul it hides the attention pattern from OpenVINO's fusions and from
NNCF's transformer patterns, so that MatMul gets half-quantized and everything runs slower (MiniLM on a 2-core
VNNI CPU: FP32 on OpenVINO about 7% slower, NNCF INT8 about 12%).

The rewrite makes the mask finite (the float32 lowest, as Hugging Face's eager attention does) so no row can be
NaN, and then removes the guard. Every row with at least one unmasked key gives bit-for-bit the same numbers; a
row with every key masked (a sample that is all padding) gives uniform weights instead of zeros, which pooling
over the mask discards. Only the exact exported pattern is rewritten; anything else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FINITE_MASK_NAME = "edgekit_attention_mask_lowest"


@dataclass(frozen=True)
class _Guard:
    softmax: Any
    isnan: Any
    where: Any
    mask_where: Any
    mask_dtype: np.dtype


def drop_attention_nan_guards(path: Path) -> int:
    """Rewrite the model at ``path`` in place; the number of guards removed (0: file untouched)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    removed = drop_guards(model.graph)
    if removed:
        onnx.save(model, str(path))  # external data stays where it is: only graph structure changed
    return removed


def drop_guards(graph: Any) -> int:
    """Remove every matched guard from ``graph``; how many."""
    from onnx import numpy_helper

    guards = _guards(graph)
    if not guards:
        return 0
    have = {i.name for i in graph.initializer}
    rename = {g.where.output[0]: g.softmax.output[0] for g in guards}
    dropped = {id(g.isnan) for g in guards} | {id(g.where) for g in guards}
    for g in guards:
        name = f"{FINITE_MASK_NAME}_{g.mask_dtype.name}"
        if name not in have:  # the lowest finite value of the mask's own dtype
            graph.initializer.append(numpy_helper.from_array(np.array(np.finfo(g.mask_dtype).min, g.mask_dtype), name))
            have.add(name)
        g.mask_where.input[2] = name
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {name for n in kept for name in n.input} | {o.name for o in graph.output}
    kept = [n for n in kept if n.op_type != "Constant" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(guards)


def _guards(graph: Any) -> list[_Guard]:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    found = []
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        guard = _guard_after(softmax, producer, consumers, outputs, graph)
        if guard is not None:
            found.append(guard)
    return found


def _guard_after(softmax: Any, producer: dict, consumers: dict, outputs: set[str], graph: Any) -> _Guard | None:
    """The guard on ``softmax``'s output, when both the guard and the ``-inf`` mask feeding it match exactly."""
    probs = softmax.output[0]
    users = consumers.get(probs, [])
    if probs in outputs or len(users) != 2:
        return None
    isnan = next((n for n in users if n.op_type == "IsNaN"), None)
    where = next((n for n in users if n.op_type == "Where"), None)
    if isnan is None or where is None or where.output[0] in outputs:
        return None
    if list(where.input) != [isnan.output[0], where.input[1], probs] or consumers.get(isnan.output[0]) != [where]:
        return None
    if not _is(_constant(where.input[1], producer, graph), 0.0):
        return None
    masking = _masking_where(softmax, producer, graph)
    return None if masking is None else _Guard(softmax, isnan, where, *masking)


def _masking_where(softmax: Any, producer: dict, graph: Any) -> tuple[Any, np.dtype] | None:
    """The ``Where(mask, 0, -inf)`` added to the softmax's input and the dtype of its ``-inf``, or None."""
    add = producer.get(softmax.input[0])
    if add is None or add.op_type != "Add":
        return None
    for name in add.input:
        node = producer.get(name)
        if node is not None and node.op_type == "Where" and len(node.input) == 3:
            zero, masked = _constant(node.input[1], producer, graph), _constant(node.input[2], producer, graph)
            if _is(zero, 0.0) and _is(masked, -np.inf):
                return node, masked.dtype
    return None


def _is(value: np.ndarray | None, want: float) -> bool:
    return value is not None and bool(value.reshape(-1)[0] == want)


def _constant(name: str, producer: dict, graph: Any) -> np.ndarray | None:
    """A one-element float constant (Constant node or initializer), else None."""
    from onnx import numpy_helper

    node = producer.get(name)
    if node is not None:
        if node.op_type != "Constant" or not node.attribute or node.attribute[0].name != "value":
            return None
        value = numpy_helper.to_array(node.attribute[0].t)
    else:
        init = next((i for i in graph.initializer if i.name == name), None)
        if init is None:
            return None
        value = numpy_helper.to_array(init)
    return value if value.size == 1 and value.dtype.kind == "f" else None
