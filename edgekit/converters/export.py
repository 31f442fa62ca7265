"""PyTorch -> ONNX: named IO, dynamic dims the model really allows, both torch exporters, checked output.

Which dims may vary is decided by running the module at other sizes (a probe), not by guessing from names:
batch (axis 0) and sequence (axis 1 of token-id or [batch, seq, features] inputs) are candidates by default;
the user's ``--input`` specs or the source's own declaration override that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.converters.attention_guard import drop_attention_nan_guards
from edgekit.converters.padding_mask import simplify_padding_masks
from edgekit.converters.torch_io import (
    call_args,
    feeds_at_sizes,
    output_keys,
    run_torch,
    to_numpy_feeds,
    to_torch_feeds,
)
from edgekit.errors import ExportError, InputError
from edgekit.specs import TensorSpec

if TYPE_CHECKING:
    import torch

    from edgekit.sources import LoadedSource

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 18
_TWO_GB = 2 * 1024**3
_PROBE_STEP = {"batch": 1}
_DEFAULT_STEP = 3


@dataclass(frozen=True)
class ExportOptions:
    """How to export. ``exporter="auto"`` tries TorchScript, then dynamo, until one passes every check."""

    opset: int = DEFAULT_OPSET
    exporter: str = "auto"
    input_specs: tuple[TensorSpec, ...] = ()
    dim_sizes: Mapping[str, int] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.exporter not in ("auto", *EXPORTERS):
            raise InputError(f"unknown exporter {self.exporter!r}; expected auto, dynamo or torchscript")
        if not 7 <= self.opset <= 25:
            raise InputError(f"opset {self.opset} is out of range (7-25)")

    def exporter_order(self) -> tuple[str, ...]:
        return EXPORTERS if self.exporter == "auto" else (self.exporter,)


@dataclass
class IOPlan:
    """Everything export and validation need to know about the model's inputs and outputs."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: dict[str, np.ndarray]
    int_ranges: dict[str, tuple[int, int]]
    dim_sizes: dict[str, int]  # the example's size of each symbolic dim
    fixed_notes: list[str] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.inputs:
            for d in s.shape:
                if isinstance(d, str):
                    seen[d] = None
        return list(seen)


def _example_from_specs(specs: Sequence[TensorSpec], sizes: Mapping[str, int], ranges: Mapping[str, Any]) -> dict:
    from edgekit.specs import random_feeds

    full = {s: sizes.get(s, 2 if s == "batch" else 16) for spec in specs for s in spec.symbolic_dims.values()}
    return random_feeds(specs, full, int_range=ranges)


def _candidate_symbols(example: Mapping[str, np.ndarray]) -> dict[str, list[tuple[str, int]]]:
    """Default guesses: batch on axis 0 everywhere; seq on axis 1 of token ids and [batch, seq, features]."""
    groups: dict[str, list[tuple[str, int]]] = {}
    arrays = [(k, v) for k, v in example.items() if v.ndim >= 1]
    if arrays and len({v.shape[0] for _, v in arrays}) == 1:
        groups["batch"] = [(k, 0) for k, _ in arrays]
    seq = [(k, v) for k, v in arrays if (v.ndim == 2 and v.dtype.kind in "iu") or (v.ndim == 3 and v.dtype.kind == "f")]
    if seq:
        size = seq[0][1].shape[1]
        groups["seq"] = [(k, 1) for k, v in seq if v.shape[1] == size]
    return groups


def _specs_with_symbols(example: Mapping[str, np.ndarray], groups: Mapping[str, list[tuple[str, int]]]) -> list:
    axes = {(name, axis): sym for sym, members in groups.items() for name, axis in members}
    return [
        TensorSpec(name, str(v.dtype), tuple(axes.get((name, i), int(d)) for i, d in enumerate(v.shape)))
        for name, v in example.items()
    ]


def plan_io(source: LoadedSource, options: ExportOptions) -> IOPlan:
    """Decide names, dtypes, dynamic dims and an example for export, probing the module at other sizes."""
    ranges = dict(source.int_ranges)
    declared: set[str] = set()
    if options.input_specs:
        specs = list(options.input_specs)
        _check_spec_names(specs, source)
        example = _example_from_specs(specs, options.dim_sizes, ranges)
        groups = {s: [(sp.name, i) for sp in specs for i, d in enumerate(sp.shape) if d == s] for s in _symbols(specs)}
        declared = set(groups)
    elif source.example_inputs is not None:
        example = to_numpy_feeds(source.example_inputs)
        if source.dynamic_dims:
            groups = {}
            for name, axes in source.dynamic_dims.items():
                for axis, sym in axes.items():
                    groups.setdefault(sym, []).append((name, int(axis)))
            declared = set(groups)
        else:
            groups = _candidate_symbols(example)
    else:
        raise InputError(
            f"{source.ref} gives no example inputs; describe them with --input NAME:DTYPE[DIM,...] "
            "(or return (module, example_inputs) from the factory)"
        )
    example = _at_least_two(example, groups, ranges, options.seed)
    if source.input_names and set(example) <= set(source.input_names):  # export and call in forward's order
        example = {k: example[k] for k in sorted(example, key=source.input_names.index)}
    names = source.output_names or _output_names(source.module, example)
    base = run_torch(source.module, example, names)
    notes: list[str] = []
    out_axes: dict[tuple[str, int], set[str]] = {}
    kept: dict[str, list[tuple[str, int]]] = {}
    for sym, members in groups.items():
        trial_specs = _specs_with_symbols(example, {sym: members})
        size = example[members[0][0]].shape[members[0][1]]
        step = _PROBE_STEP.get(sym, _DEFAULT_STEP)
        feeds = feeds_at_sizes(trial_specs, example, {sym: size + step}, ranges, options.seed + 1)
        try:
            outs = run_torch(source.module, feeds, names)
        except Exception as exc:
            if sym in declared:
                raise InputError(f"dim {sym!r} cannot vary: the model fails at {sym}={size + step}: {exc}") from exc
            notes.append(f"{sym} kept fixed at {size}: the model does not run at {sym}={size + step}")
            continue
        kept[sym] = members
        for n in names:
            for axis, (a, b) in enumerate(zip(base[n].shape, outs[n].shape, strict=False)):
                if a != b:
                    out_axes.setdefault((n, axis), set()).add(sym)
    inputs = _specs_with_symbols(example, kept)
    outputs = []
    for n in names:
        shape: list[int | str] = []
        for axis, d in enumerate(base[n].shape):
            syms = out_axes.get((n, axis))
            shape.append(int(d) if not syms else next(iter(syms)) if len(syms) == 1 else f"{n}_dim{axis}")
        outputs.append(TensorSpec(n, _onnx_float(base[n].dtype), tuple(shape)))
    sizes = {sym: example[m[0][0]].shape[m[0][1]] for sym, m in kept.items()}
    return IOPlan(inputs, outputs, example, ranges, sizes, notes)


def _symbols(specs: Sequence[TensorSpec]) -> list[str]:
    return list(dict.fromkeys(d for s in specs for d in s.shape if isinstance(d, str)))


def _check_spec_names(specs: Sequence[TensorSpec], source: LoadedSource) -> None:
    if source.input_names:
        unknown = [s.name for s in specs if s.name not in source.input_names]
        if unknown:
            raise InputError(
                f"--input {unknown[0]!r} is not a parameter of the model's forward ({', '.join(source.input_names)})"
            )


def _at_least_two(example: dict, groups: Mapping[str, list[tuple[str, int]]], ranges: dict, seed: int) -> dict:
    """Resize dynamic dims of size 0/1 to 2: exporters specialize them and the model would lose the axis."""
    small = {sym: 2 for sym, m in groups.items() if example[m[0][0]].shape[m[0][1]] < 2}
    if not small:
        return example
    specs = _specs_with_symbols(example, groups)
    return feeds_at_sizes(specs, example, small, ranges, seed)


def _output_names(module: torch.nn.Module, example: Mapping[str, np.ndarray]) -> list[str]:
    import torch

    from edgekit.converters.torch_io import flatten_outputs

    args, kwargs = call_args(module, to_torch_feeds(example))
    with torch.inference_mode():
        result = module(*args, **kwargs)
    keys = output_keys(result)
    if keys:
        return keys
    n = len(flatten_outputs(result))
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _onnx_float(dtype: np.dtype) -> str:
    return str(dtype) if dtype != np.dtype("float64") else "float64"


def export_onnx(module: torch.nn.Module, plan: IOPlan, path: Path, exporter: str, opset: int) -> dict[str, int]:
    """Export with one exporter, name dims after the plan, and check the file (checker + ORT load); the
    function-keeping graph rewrites applied, by name and count (for the manifest)."""
    large = _param_bytes(module) > _TWO_GB * 0.9
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; real failures still raise
            _run_exporter(module, plan, path, exporter, opset, large)
            if large and exporter == "torchscript":
                _single_external_data_file(path)
    except Exception as exc:
        raise ExportError(f"{exporter} exporter failed: {_first_line(exc)}") from exc
    _name_dims(path, plan)
    rewrites = {
        "attention_nan_guards_removed": drop_attention_nan_guards(path),
        "attention_padding_masks_simplified": simplify_padding_masks(path),
    }
    check_onnx_file(path)
    return {name: count for name, count in rewrites.items() if count}


def _run_exporter(module: torch.nn.Module, plan: IOPlan, path: Path, exporter: str, opset: int, large: bool) -> None:
    import torch

    args, kwargs = call_args(module, to_torch_feeds(plan.example))
    input_names = [s.name for s in plan.inputs]
    output_names = [s.name for s in plan.outputs]
    if exporter == "torchscript":
        axes = {s.name: dict(s.symbolic_dims) for s in [*plan.inputs, *plan.outputs] if s.symbolic_dims}
        torch.onnx.export(
            module, args, str(path), kwargs=kwargs or None, input_names=input_names, output_names=output_names,
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        return
    auto = torch.export.Dim.AUTO
    shapes = {s.name: dict.fromkeys(s.symbolic_dims, auto) or None for s in plan.inputs}
    dynamic = shapes if kwargs else tuple(shapes.values())
    program = torch.onnx.export(
        module, args, kwargs=kwargs or None, input_names=input_names,  # outputs renamed after: see _rename_outputs
        dynamic_shapes=dynamic, opset_version=opset, dynamo=True, optimize=True, verbose=False,
    )  # fmt: skip
    program.save(str(path), external_data=large)


def _single_external_data_file(path: Path) -> None:
    """The TorchScript exporter writes one file per large tensor; keep one ``model.onnx.data`` instead."""
    import onnx

    from edgekit.onnxfile import external_data_files

    model = onnx.load(str(path))  # with its external data
    stray = external_data_files(onnx.load(str(path), load_external_data=False), path)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)  # fmt: skip
    for f in stray:
        if f.name != f"{path.name}.data":
            f.unlink(missing_ok=True)


def _name_dims(path: Path, plan: IOPlan) -> None:
    """Give graph outputs the plan's names and IO dims its symbols (dynamo calls them s0, s1...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    changed = _rename_outputs(model.graph, [s.name for s in plan.outputs])
    by_name = {s.name: s for s in [*plan.inputs, *plan.outputs]}
    for value in [*model.graph.input, *model.graph.output]:
        spec = by_name.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if spec is None or len(dims) != spec.rank:
            continue
        for dim, want in zip(dims, spec.shape, strict=True):
            if isinstance(want, str) and dim.dim_param != want:
                dim.dim_param = want
                changed = True
    if changed:
        onnx.save(model, str(path))


def _rename_outputs(graph: Any, names: Sequence[str]) -> bool:
    """Rename graph outputs by position. A wanted name already taken inside the graph (dynamo names values
    after modules, so a value called ``embedding`` may exist) is moved out of the way first."""
    current = [o.name for o in graph.output]
    if len(current) != len(names) or current == list(names):
        return False
    renames: dict[str, str] = {}
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {i.name for i in graph.initializer}
    taken |= {i.name for i in graph.input}
    for old, new in zip(current, names, strict=True):
        if old != new and new in taken and new not in current:
            renames[new] = _free_name(new, taken)
    for old, new in zip(current, names, strict=True):
        if old != new:
            renames[old] = new
    _apply_renames(graph, renames)
    return True


def _free_name(name: str, taken: set[str]) -> str:
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    taken.add(f"{name}_{i}")
    return f"{name}_{i}"


def _apply_renames(graph: Any, renames: Mapping[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renames.get(v, v) for v in node.input]
        node.output[:] = [renames.get(v, v) for v in node.output]
        for attr in node.attribute:
            if attr.HasField("g"):
                _apply_renames(attr.g, renames)
            for sub in attr.graphs:
                _apply_renames(sub, renames)
    for collection in (graph.output, graph.value_info, graph.input):
        for value in collection:
            value.name = renames.get(value.name, value.name)
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)


def check_onnx_file(path: Path) -> None:
    """onnx.checker (by path, so external data and >2 GB work) and an ONNX Runtime load."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:
        raise ExportError(f"exported model fails onnx.checker: {_first_line(exc)}") from exc
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"exported model does not load in ONNX Runtime: {_first_line(exc)}") from exc


def _param_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


ProgressFn = Callable[[str], None]
