"""Reading ONNX files safely: clear errors for corrupt files, IO specs, precision and op statistics.

``onnx`` is imported inside the functions so ``import edgekit`` stays cheap.
"""

from __future__ import annotations

import mmap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import ModelFormatError
from edgekit.paths import confined_path
from edgekit.specs import TensorSpec, specs_from_onnx_values

if TYPE_CHECKING:
    import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DYNAMIC_INT8_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"})
_FLOAT16, _BFLOAT16 = 10, 16


def read_onnx(path: Path, *, check: bool = True) -> onnx.ModelProto:
    """Load ``path`` without its external data; raise one-line :class:`ModelFormatError` when unusable."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFormatError(f"expected an .onnx file, got a directory: {path}")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"model file is empty: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFormatError(f"not a valid ONNX model (truncated or corrupt?): {path}: {_first_line(exc)}") from exc
    if not model.graph.output or not model.graph.node:
        raise ModelFormatError(f"not a valid ONNX model (empty graph; truncated or corrupt?): {path}")
    external_data_files(model, path)  # before the checker, which would follow the locations
    if check:
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            raise ModelFormatError(f"ONNX model fails onnx.checker: {path}: {_first_line(exc)}") from exc
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs as TensorSpecs."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return specs_from_onnx_values(inputs), specs_from_onnx_values(model.graph.output)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each op type in the main graph, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def precision_of(model: onnx.ModelProto) -> str:
    """``int8-qdq``, ``int8-dynamic``, ``fp16`` or ``fp32``: what the graph itself computes in."""
    ops = {n.op_type for n in model.graph.node}
    if ops & DYNAMIC_INT8_OPS:
        return "int8-dynamic"
    if ops & QDQ_OPS:
        return "int8-qdq"
    if any(t.data_type in (_FLOAT16, _BFLOAT16) for t in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i in (_FLOAT16, _BFLOAT16):
                    return "fp16"
    return "fp32"


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weight elements stored in initializers."""
    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        total += n
    return total


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def model_summary(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    """The facts ``edgekit inspect`` prints."""
    inputs, outputs = io_specs(model)
    size = path.stat().st_size + sum(p.stat().st_size for p in external_data_files(model, path))
    return {
        "path": str(path),
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "opset": opset_of(model),
        "precision": precision_of(model),
        "parameters": parameter_count(model),
        "size_bytes": size,
        "nodes": len(model.graph.node),
        "ops": op_histogram(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


def external_data_files(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Files referenced as external data by ``model`` stored at ``path``, each confined to ``path``'s directory.

    A location that is absolute, climbs out with ``..`` or is a symlink out is an :class:`ArtifactError`: an
    ONNX file is data, and must not make a runtime read a file beside or above the directory it came in.
    """
    label = f"external data of {path.name}"
    return [confined_path(path.parent, loc, label, canonical=False) for loc in external_data_locations(model)]


def external_data_of(path: Path) -> list[Path]:
    """:func:`external_data_files` of the ONNX file at ``path``, parsing it only when it can have any.

    An external tensor always spells the key ``location`` in the file's bytes; a model without it (every
    model under 2 GB that edgekit writes) is scanned, not parsed, so loading a large artifact stays cheap.
    """
    import onnx

    path = Path(path)
    if not _mentions_location(path):
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFormatError(f"not a valid ONNX model (truncated or corrupt?): {path}: {_first_line(exc)}") from exc
    return external_data_files(model, path)


def _mentions_location(path: Path) -> bool:
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return view.find(b"location") != -1


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """Every external-data ``location`` in ``model``, subgraphs and functions included, sorted, once each."""
    names = {entry.value for tensor in _all_tensors(model) for entry in tensor.external_data if entry.key == "location"}
    return sorted(names)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    """Tensors held in a node's attributes, and those of its subgraphs (If, Loop, Scan bodies)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]:
            yield from (sparse.values, sparse.indices)
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for graph in attr.graphs:
            yield from _graph_tensors(graph)
