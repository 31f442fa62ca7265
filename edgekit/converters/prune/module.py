"""``prune_module``: prune a copy of a torch model as the options say and check it still runs.

Dispatches to ``sparse`` (unstructured and 2:4: zeros only), ``transformer`` (attention heads and FFN neurons)
or ``channels`` (CNN channels through Torch-Pruning); torch is imported only when pruning runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edgekit.converters.prune.options import DENSE_NOTE, PruneOptions, PruneResult
from edgekit.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekit.converters.prune.common import Grads


def prune_module(
    module: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    options: PruneOptions,
    data: Iterable[dict[str, torch.Tensor]] | None = None,
) -> PruneResult:
    """Prune a copy of ``module`` as ``options`` say and check it still runs with the same output shapes.

    ``data`` (batched feed dicts) is what Taylor and activation importance read. Bad options, unknown layer
    names and models whose layers cannot be analysed raise :class:`InputError` naming the layer.
    """
    from edgekit.converters.prune import common, macs

    common.check_model(module)
    common.check_example_inputs(example_inputs)
    _check_ignored(module, options.ignored_layers)
    if options.importance in ("taylor", "activation") and data is None:
        raise InputError(
            f"{options.importance} importance needs data (an iterable of feed dicts); use l1 or l2 without data"
        )
    pruned = copy.deepcopy(module).eval()
    reference = common.output_shapes(pruned, example_inputs)
    data = list(data) if data is not None else None  # importance may read it twice (scores, then checks)
    grads = common.taylor_grads(pruned, data, options.seed) if options.importance == "taylor" else None
    counters = macs.attention_counters(pruned)
    params_before, macs_before = common.count_params_macs(pruned, example_inputs, counters)
    details = _prune_in_place(pruned, example_inputs, options, grads, data)
    common.check_still_runs(pruned, example_inputs, reference)
    params_after, macs_after = common.count_params_macs(pruned, example_inputs, macs.attention_counters(pruned))
    plan = {
        **options.to_dict(),
        **details,
        "example_shapes": {k: list(v.shape) for k, v in example_inputs.items()},
        "params_before": params_before,
        "params_after": params_after,
        "macs_before": macs_before,
        "macs_after": macs_after,
    }
    return PruneResult(module=pruned, plan=plan)


def _prune_in_place(
    model: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    options: PruneOptions,
    grads: Grads | None,
    data: Iterable[dict[str, torch.Tensor]] | None,
) -> dict[str, Any]:
    """Dispatch: sparsity kinds, transformer heads/FFN when the model has them, else conv channels."""
    activation = options.importance == "activation"
    if options.kind != "structured":
        if activation:
            raise InputError("activation importance ranks whole neurons and heads; sparsity needs l1, l2 or taylor")
        from edgekit.converters.prune.sparse import sparsify

        details = sparsify(model, options, grads)
        details["notes"] = [DENSE_NOTE.format(kind=options.kind), *details.get("notes", [])]
        return details
    from edgekit.converters.prune.transformer import find_units, prune_transformer

    units = find_units(model)
    if units.attention or units.ffn:
        scores = None
        if activation:
            from edgekit.converters.prune.activation import activation_scores

            assert data is not None
            scores = activation_scores(model, units, data, heads=options.heads > 0, ffn=options.ffn > 0)
        return prune_transformer(model, units, options, grads, scores)
    if activation:
        raise InputError("activation importance is for transformer FFN neurons and heads; for conv channels use "
                         "l1, l2 or taylor")  # fmt: skip
    from edgekit.converters.prune.channels import prune_channels

    return prune_channels(model, example_inputs, options, grads)


def _check_ignored(module: nn.Module, names: tuple[str, ...]) -> None:
    known = {name for name, _ in module.named_modules()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"ignored layer {unknown[0]!r} is not a module of the model (names as in named_modules())")
