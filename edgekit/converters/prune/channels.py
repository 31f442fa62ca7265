"""Conv channels (and hidden Linear neurons) through Torch-Pruning's dependency graph.

Torch-Pruning traces autograd to find which layers must lose the same channels (conv -> BN -> next conv,
residual adds, concats). What it cannot see it cannot keep consistent, so before pruning we refuse, naming
the layer, when a layer runs outside autograd (detached, numpy, an op without gradient) or through a custom
autograd Function, and we leave alone every group whose channels reach a model output (the classifier's
classes) — Torch-Pruning would happily shrink those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from edgekit.converters.prune.common import failing_layer, layer_error, run_module
from edgekit.converters.prune.transformer import find_units

if TYPE_CHECKING:
    from edgekit.converters.prune.common import Grads
    from edgekit.converters.prune.options import PruneOptions

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prune_channels(
    model: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    options: PruneOptions,
    grads: Grads | None,
) -> dict[str, Any]:
    """Remove ``options.ratio`` of the channels of every prunable group (or globally); the plan's rows."""
    ignored = _ignored_modules(model, options.ignored_layers)
    _refuse_unknown_attention(model, ignored)
    breakers, ran = _probe(model, example_inputs)
    for name, module, why in breakers:
        if not _is_ignored(module, ignored):
            raise layer_error(name, module, f"{why}; make it a differentiable torch op or add it to ignored_layers")
    with failing_layer(model, "tracing with Torch-Pruning"):
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    untraced = _untraced_layers(model, graph, ran, ignored)
    notes = ["structured channel pruning with Torch-Pruning's dependency graph; output layers keep their width"]
    if untraced and not breakers:
        name, module = untraced[0]
        why = "Torch-Pruning's trace does not reach it, so which layers depend on its channels is unknown"
        raise layer_error(name, module, f"{why}; add it to ignored_layers")
    if untraced:  # the user ignored the layer that cuts the trace: what it hides stays as is
        notes.append(f"left unpruned, hidden from the trace by an ignored layer: {[n for n, _ in untraced]}")
    ignored = [*ignored, *(m for _, m in untraced), *_output_layers(graph, ignored)]
    before = _widths(model)
    importance = _importance(model, options, grads)
    with failing_layer(model, "pruning with Torch-Pruning"):
        pruner = tp.pruner.MetaPruner(
            model, example_inputs, importance=importance, global_pruning=options.global_pruning,
            pruning_ratio=options.ratio, max_pruning_ratio=max(options.ratio, 0.9), ignored_layers=ignored,
        )  # fmt: skip
        pruner.step()
    model.zero_grad(set_to_none=True)
    after = _widths(model)
    rows = [_row(name, before[name], after[name]) for name in before if before[name] != after[name]]
    return {"method": "torch-pruning channel groups", "layers": rows, "notes": notes}


def _ignored_modules(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    return [modules[n] for n in names]


def _is_ignored(module: nn.Module, ignored: list[nn.Module]) -> bool:
    return any(module is m or any(module is c for c in m.modules()) for m in ignored)


def _refuse_unknown_attention(model: nn.Module, ignored: list[nn.Module]) -> None:
    """Channel pruning through attention it does not understand would mix heads; refuse instead."""
    for name, module, why in find_units(model).unknown:
        if not _is_ignored(module, ignored):
            raise layer_error(name, module, f"{why}; add it to ignored_layers to leave it as is")


def _probe(model: nn.Module, example_inputs: dict[str, torch.Tensor]) -> tuple[list[tuple[str, nn.Module, str]], list]:
    """One forward with hooks: the layers that ran, and those whose float output left autograd or came out of
    a custom autograd Function (innermost only: a block is not blamed for its child)."""
    names = {id(m): n for n, m in model.named_modules()}
    breakers: list[tuple[str, nn.Module, str]] = []
    ran: list[nn.Module] = []

    def check(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        ran.append(module)
        why = _why_untraceable(args, output)
        if why and not any(b is not module and any(b is c for c in module.modules()) for _, b, _ in breakers):
            breakers.append((names.get(id(module), "?"), module, why))

    handles = [m.register_forward_hook(check) for m in model.modules()]
    try:
        with failing_layer(model, "tracing"), torch.enable_grad():
            run_module(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return breakers, ran


def _why_untraceable(args: tuple[Any, ...], output: Any) -> str | None:
    outs = [t for t in (output if isinstance(output, tuple | list) else [output]) if _is_float_tensor(t)]
    ins = [t for t in args if _is_float_tensor(t)]
    if any(t.grad_fn is not None and _custom_function(t.grad_fn) for t in outs):
        return "its output comes from a custom autograd Function that Torch-Pruning cannot see through"
    if any(t.requires_grad for t in ins) and outs and not any(t.requires_grad for t in outs):
        return "its output leaves autograd (detached, through numpy, or an op without a gradient)"
    return None


def _is_float_tensor(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _custom_function(grad_fn: object) -> bool:
    return isinstance(grad_fn, torch.autograd.function.BackwardCFunction) or type(grad_fn).__name__ == "NotImplemented"


def _untraced_layers(
    model: nn.Module, graph: tp.DependencyGraph, ran: list[nn.Module], ignored: list[nn.Module]
) -> list[tuple[str, nn.Module]]:
    """Prunable layers that ran but are not in the traced graph: which layers depend on them is unknown."""
    names = {id(m): n for n, m in model.named_modules()}
    seen: set[int] = set()
    out = []
    for m in ran:
        if (
            isinstance(m, _PRUNABLE)
            and m not in graph.module2node
            and not _is_ignored(m, ignored)
            and id(m) not in seen
        ):
            seen.add(id(m))
            out.append((names.get(id(m), "?"), m))
    return out


def _output_layers(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> list[nn.Module]:
    """Root layers of groups whose channels reach a model output: pruning them would change its shape."""
    roots: list[nn.Module] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_PRUNABLE):
        if any(_reaches_output(graph, dep) for dep, _ in group):
            roots.append(group[0].dep.source.module)
    return roots


def _reaches_output(graph: tp.DependencyGraph, dep: Any) -> bool:
    """The graph's output marker, or the out-channels of a layer nothing consumes (its result is the output)."""
    node = dep.target
    if isinstance(node.module, ops._OutputOp):
        return True
    return not node.outputs and graph.is_out_channel_pruning_fn(dep.handler)


def _importance(model: nn.Module, options: PruneOptions, grads: Grads | None) -> Any:
    """Torch-Pruning's importance; for Taylor, .grad holds sum|g| so its |w * g| is our batch-summed score."""
    if options.importance == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if options.importance == "taylor":
        for name, p in model.named_parameters():
            if grads is not None and name in grads:
                p.grad = grads[name].clone()
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1)


def _widths(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """Per prunable layer: type, input width, output width."""
    out: dict[str, tuple[str, int, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[name] = ("Linear", m.in_features, m.out_features)
        elif isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            out[name] = (type(m).__name__, m.in_channels, m.out_channels)
    return out


def _row(name: str, before: tuple[str, int, int], after: tuple[str, int, int]) -> dict[str, Any]:
    return {
        "name": name,
        "unit": "channels",
        "type": before[0],
        "in": [before[1], after[1]],
        "out": [before[2], after[2]],
    }
