"""Give attention a ``[batch, 1, 1, seq]`` padding mask where the exporter built a ``[batch, 1, seq, seq]`` one.

transformers 5 builds an encoder's padding mask with index arithmetic (``Range`` per axis, a ``Gather`` over the
flattened ``attention_mask``, an ``Expand`` to ``[batch, 1, query, key]``): the exported graph recomputes that on
every call, and every layer's masking ``Where`` then reads a query x key mask. For an encoder that only masks
padding, ``attention_mask[:, None, None, :]`` broadcasts to exactly the same values. Handing that to the layers
instead removes the construction from the graph and shrinks what attention reads (MiniLM on OpenVINO, 2-core
AVX-512 CPU: FP32 about 2% faster per call, INT8 about 1%).

Nothing is assumed from the graph's shape: a candidate (the boolean condition of a ``Where`` that feeds the
``Add`` before a ``Softmax``) is replaced only when ONNX Runtime, run on varied batch sizes, lengths and padding
patterns, shows it equal to the broadcast padding mask of one of the model's inputs, and the rewritten model's
outputs are then bit-for-bit those of the original on the same inputs. A causal mask, a mask mixing in other
inputs, or anything that fails either check leaves the file untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CASES = ((1, 1), (1, 7), (2, 16), (3, 33))  # (batch, seq) the candidate mask is checked on
MASK_PREFIX = "edgekit_padding_mask"
PROBE_PREFIX = ".edgekit-mask-probe-"
MIN_OPSET = 13  # Unsqueeze takes its axes as an input from here on

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], "dict[str, np.ndarray] | None"]


def simplify_padding_masks(path: Path) -> int:
    """Rewrite the model at ``path`` in place; the number of attention mask tensors replaced (0: untouched)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    candidates = attention_mask_conditions(model.graph)
    if not candidates or _opset(model) < MIN_OPSET:
        return 0
    outputs = [o.name for o in model.graph.output]
    probe = path.with_name(f"{PROBE_PREFIX}{uuid.uuid4().hex}.onnx")  # beside it: external data paths resolve
    try:
        run = _runner(model, probe, outputs + candidates)
        sources, checked = _padding_sources(model.graph, candidates, run)
        if not sources:
            return 0
        rewritten = onnx.ModelProto.FromString(model.SerializeToString())
        _replace(rewritten.graph, sources)
        after = _runner(rewritten, probe, outputs)
        if after is None or not all(_same(after(feeds), seen, outputs) for feeds, seen in checked):
            return 0
    finally:
        probe.unlink(missing_ok=True)
    onnx.save(rewritten, str(path))  # external data stays where it is: only graph structure changed
    return len(sources)


def attention_mask_conditions(graph: Any) -> list[str]:
    """Boolean tensors that mask attention scores: the condition of a ``Where`` whose result is added to what a
    ``Softmax`` reads. Graph inputs are already as simple as they get and are skipped."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    found: list[str] = []
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        add = producer.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            where = producer.get(name)
            condition = where.input[0] if where is not None and where.op_type == "Where" else None
            if condition is not None and condition not in inputs and condition not in found:
                found.append(condition)
    return found


def _padding_sources(
    graph: Any, candidates: list[str], run: Runner | None
) -> tuple[dict[str, str], list[tuple[Feeds, dict[str, np.ndarray]]]]:
    """Which 2-D input each candidate is the broadcast padding mask of (when one is), and the runs that showed it.

    Each 2-D integer or bool input in turn gets random padding patterns (at least one kept position per row)
    while every other input is zeros (valid token ids and token types), at each size of :data:`CASES`."""
    if run is None:
        return {}, []
    sources: dict[str, str] = {}
    checked: list[tuple[Feeds, dict[str, np.ndarray]]] = []
    for name in _mask_like_inputs(graph):
        cases = [feeds for feeds in (_case(graph, name, b, s) for b, s in CASES) if feeds is not None]
        results = [run(feeds) for feeds in cases] if len(cases) == len(CASES) else []
        if not results or any(r is None for r in results):
            continue  # this input cannot take these sizes or values: it is not what the mask reads
        found = [c for c in candidates if c not in sources and _is_expanded(c, name, results, cases)]
        sources.update(dict.fromkeys(found, name))
        if found:
            checked += list(zip(cases, results, strict=True))
    return sources, checked


def _mask_like_inputs(graph: Any) -> list[str]:
    """Graph inputs that could be a padding mask: 2-D, integer or bool."""
    names = []
    for value in graph.input:
        tensor = value.type.tensor_type
        if len(tensor.shape.dim) == 2 and _dtype(tensor.elem_type).kind in "iub":
            names.append(value.name)
    return names


def _case(graph: Any, mask_input: str, batch: int, seq: int) -> Feeds | None:
    """Zeros of size [batch, seq] for every input, a random padding pattern in ``mask_input``; None when an
    input is not [batch, seq] shaped or fixes another size."""
    rng = np.random.default_rng(batch * 1000 + seq)
    feeds: Feeds = {}
    for value in graph.input:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if len(dims) != 2 or any(d is not None and d != want for d, want in zip(dims, (batch, seq), strict=True)):
            return None
        dtype = _dtype(tensor.elem_type)
        if value.name == mask_input:
            keep = rng.random((batch, seq)) < 0.7
            keep[:, 0] = True
            feeds[value.name] = keep.astype(dtype)
        else:
            feeds[value.name] = np.zeros((batch, seq), dtype)
    return feeds


def _dtype(elem_type: int) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _runner(model: Any, probe: Path, outputs: list[str]) -> Runner | None:
    """A function running ``model`` (saved to ``probe``) on feeds with ONNX Runtime, the graph as written (no
    optimizations), returning ``outputs`` (graph tensors, made outputs) or None when the feeds do not run; None
    when the model does not load."""
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in present)
    onnx.save(copy, str(probe))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(probe), options, providers=["CPUExecutionProvider"])
    except Exception:  # a model ORT cannot load here is simply not rewritten
        return None

    def run(feeds: Feeds) -> dict[str, np.ndarray] | None:
        try:
            return dict(zip(outputs, session.run(outputs, feeds), strict=True))
        except Exception:  # these feeds are not valid for the model: not a padding mask input
            return None

    return run


def _same(got: dict[str, np.ndarray] | None, want: dict[str, np.ndarray], names: list[str]) -> bool:
    return got is not None and all(np.array_equal(got[n], want[n]) for n in names)


def _is_expanded(candidate: str, name: str, results: list[dict[str, np.ndarray]], cases: list[Feeds]) -> bool:
    """Whether ``candidate`` is ``name``'s padding mask in every case, and larger than its broadcast form in some
    (a mask already ``[batch, 1, 1, seq]`` has nothing to gain)."""
    pairs = list(zip((r[candidate] for r in results), (f[name] for f in cases), strict=True))
    return all(_equals_padding(mask, source) for mask, source in pairs) and any(
        m.shape[1:3] != (1, 1) for m, _ in pairs
    )


def _equals_padding(mask: np.ndarray, source: np.ndarray) -> bool:
    """Whether ``mask`` is ``source[:, None, None, :] != 0`` broadcast to a 4-D mask."""
    if mask.dtype != np.bool_ or mask.ndim != 4 or (mask.shape[0], mask.shape[-1]) != source.shape:
        return False
    return bool(np.array_equal(mask, np.broadcast_to((source != 0)[:, None, None, :], mask.shape)))


def _replace(graph: Any, sources: dict[str, str]) -> None:
    """Compute each padding mask once from its input and point every reader of a candidate at it."""
    from onnx import TensorProto, helper, numpy_helper

    made: dict[str, str] = {}
    head = []
    for candidate, source in sources.items():
        if source not in made:
            made[source] = f"{MASK_PREFIX}_{len(made)}"
            keep, axes = f"{made[source]}_keep", f"{made[source]}_axes"
            graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), axes))
            head.append(helper.make_node("Cast", [source], [keep], name=f"{keep}/Cast", to=TensorProto.BOOL))
            head.append(helper.make_node("Unsqueeze", [keep, axes], [made[source]], name=f"{made[source]}/Unsqueeze"))
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == candidate:
                    node.input[i] = made[source]
    nodes = head + list(graph.node)
    del graph.node[:]
    graph.node.extend(_live(nodes, {o.name for o in graph.output}))
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """The nodes some graph output depends on, in their order."""
    needed, keep = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    return keep[::-1]


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
