"""What every pruning kind shares: importance scores, parameter/MAC counts, and naming the layer that broke.

Taylor importance needs gradients that do not vanish. The output norm is constant for normalized embeddings,
and an MSE to the unpruned output is zero (with zero gradient) before anything is pruned, so each batch uses
the loss <output, r> for a fresh seeded random direction r, and |gradient| is summed over batches: the score
|w| * sum|dL/dw| measures how far the output moves when w is removed, whatever the model's head.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from edgekit.converters.torch_io import call_args, flatten_outputs
from edgekit.errors import InputError

Counter = Callable[[nn.Module, tuple[Any, ...], Any], None]
Grads = dict[str, torch.Tensor]  # parameter name -> sum over batches of |gradient| (Taylor importance)


def check_model(module: object) -> None:
    """Only Python modules can be analysed: TorchScript hides its layers' code from tracing and slicing."""
    if isinstance(module, torch.jit.ScriptModule):
        raise InputError("cannot prune a TorchScript module: load the model from Python code or a model directory")
    if not isinstance(module, nn.Module):
        raise InputError(f"pruning needs a torch.nn.Module, got {type(module).__name__}")


def check_example_inputs(example_inputs: object) -> None:
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise InputError("pruning needs example inputs as a non-empty dict of input name -> tensor")
    bad = [k for k, v in example_inputs.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"example input {bad[0]!r} is not a torch.Tensor")


def run_module(module: nn.Module, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """``module`` on named feeds (positionally when forward allows), outputs flattened to a list."""
    args, kwargs = call_args(module, feeds)
    return flatten_outputs(module(*args, **kwargs))


def layer_error(name: str, module: nn.Module, why: str) -> InputError:
    """The one-line error for a layer edgekit cannot prune safely; it names the layer and its type."""
    return InputError(f"cannot analyse layer {name or '<root>'!r} ({type(module).__name__}) for pruning: {why}")


@contextlib.contextmanager
def failing_layer(model: nn.Module, what: str) -> Iterator[None]:
    """Turn an exception inside ``model``'s forward into an InputError naming the innermost layer running."""
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[nn.Module] = []

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(module)

    def leave(_module: nn.Module, _args: Any, _output: Any) -> None:  # a hook that returns a value replaces it
        if stack:
            stack.pop()

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        if not stack:
            raise InputError(f"{what} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        culprit = stack[-1]
        why = f"{what} failed there: {type(exc).__name__}: {_first_line(exc)}"
        raise layer_error(names.get(id(culprit), "?"), culprit, why) from exc
    finally:
        for h in handles:
            h.remove()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:300]


def output_shapes(model: nn.Module, feeds: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    with failing_layer(model, "running the model"), torch.no_grad():
        return [tuple(t.shape) for t in run_module(model, feeds)]


def check_still_runs(model: nn.Module, feeds: dict[str, torch.Tensor], reference: list[tuple[int, ...]]) -> None:
    """The pruned model must run and keep its output shapes; otherwise a layer's dependencies were missed."""
    with failing_layer(model, "the pruned model"):
        shapes = output_shapes(model, feeds)
    if shapes != reference:
        raise InputError(
            f"pruning changed the model's output shapes {reference} -> {shapes}; add the output layer to ignored_layers"
        )


def taylor_grads(
    model: nn.Module, data: Iterable[dict[str, torch.Tensor]] | None, seed: int
) -> dict[str, torch.Tensor]:
    """Per parameter name, sum over batches of |dL/dw| with L = <output, random direction> (module docstring)."""
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    params = [p for _, p in named]
    saved = [p.requires_grad for p in params]
    totals = {n: torch.zeros_like(p) for n, p in named}
    generator = torch.Generator().manual_seed(seed)
    batches = 0
    try:
        for p in params:
            p.requires_grad_(True)
        for batch in data or ():
            model.zero_grad(set_to_none=True)
            with failing_layer(model, "computing Taylor gradients"), torch.enable_grad():
                outputs = [t for t in run_module(model, batch) if t.is_floating_point()]
                loss = sum((t * torch.randn(t.shape, generator=generator)).sum() for t in outputs)
                loss.backward()
            for n, p in named:
                if p.grad is not None:
                    totals[n] += p.grad.abs()
            batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
    if batches == 0:
        raise InputError("taylor importance got no data batches")
    return totals


def element_scores(weight: torch.Tensor, importance: str, grad: torch.Tensor | None) -> torch.Tensor:
    """Per-weight importance: |w| (l1), w^2 (l2), |w| * sum|g| (taylor, ``grad`` from :func:`taylor_grads`)."""
    w = weight.detach()
    if importance == "l2":
        return w * w
    if importance == "taylor":
        if grad is None:
            raise InputError("taylor importance has no gradient for a weight; give data that reaches every layer")
        return w.abs() * grad
    return w.abs()


def count_params_macs(
    model: nn.Module, example_inputs: dict[str, torch.Tensor], counters: dict[type, Counter]
) -> tuple[int, int]:
    """Parameters and MACs per sample with Torch-Pruning's counter; ``counters`` add attention matmuls."""
    import torch_pruning as tp
    from torch_pruning.utils import op_counter

    args, kwargs = call_args(model, example_inputs)
    batch = int(next(iter(example_inputs.values())).shape[0]) if example_inputs else 1
    op_counter.CUSTOM_MODULES_MAPPING = dict(counters)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the counter prints warnings
            if kwargs:  # it divides by the batch only for positional inputs
                macs, params = tp.utils.count_ops_and_params(model, kwargs)
                macs /= max(batch, 1)
            else:
                macs, params = tp.utils.count_ops_and_params(model, args)
    except Exception as exc:
        raise InputError(f"cannot count the model's MACs: {type(exc).__name__}: {_first_line(exc)}") from exc
    return int(params), round(macs)
