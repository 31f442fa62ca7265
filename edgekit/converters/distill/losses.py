"""Distillation losses and fidelity, per sample, plus the hooks and projections for feature matching.

Losses come back per sample (shape ``[batch]``) so the trainer can sum them and scale by the *global* batch:
that is what makes a DDP run average to the same gradient as a single process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.converters.distill.data import Batch, describe_feeds
from edgekit.converters.torch_io import call_args, flatten_outputs
from edgekit.errors import InputError, one_line
from edgekit.fidelity import cosines, top1_matches
from edgekit.retrieval import retrieval_metrics

OUTPUT_KEY = "output"


def first_output(result: Any, role: str) -> torch.Tensor:
    """The first tensor a model returns: the one distillation matches."""
    try:
        tensors = flatten_outputs(result)
    except Exception as exc:
        raise InputError(f"the {role} returned {type(result).__name__}, not tensors") from exc
    if not tensors:
        raise InputError(f"the {role} returned no tensors")
    return tensors[0]


def run_model(model: nn.Module, feeds: Mapping[str, torch.Tensor]) -> Any:
    args, kwargs = call_args(model, feeds)
    return model(*args, **kwargs)


def fitted_call(model: nn.Module, batch: Batch, role: str) -> Any:
    """Run ``model`` on the probe batch; a failure means the data does not fit it, said in one line."""
    try:
        return run_model(model, batch.feeds)
    except Exception as exc:
        inputs = describe_feeds(batch.feeds)
        raise InputError(f"distillation data does not fit the {role} ({inputs}): {one_line(exc)}") from exc


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters live (the CPU for a module without any)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


class FeatureTaps:
    """Forward hooks that keep the output of named layers from the latest forward pass."""

    def __init__(self, model: nn.Module, layers: Sequence[str], role: str) -> None:
        modules = dict(model.named_modules())
        self.captured: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(layers):
            if name not in modules:
                known = [n for n in modules if n][:12]
                raise InputError(f"the {role} has no layer {name!r} (its layers include: {', '.join(known)})")
            self._handles.append(modules[name].register_forward_hook(self._keeper(name, role)))

    def _keeper(self, name: str, role: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.captured[name] = first_output(output, f"{role} layer {name!r}")

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class AxisLinear(nn.Module):
    """A linear map along one axis (channels of a conv map, hidden size of a sequence): student -> teacher width."""

    def __init__(self, axis: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.axis = axis
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.movedim(self.axis, -1)).movedim(-1, self.axis)


def projection_axis(student: torch.Size, teacher: torch.Size, what: str) -> int:
    """The one axis on which student and teacher widths may differ (the last when none differs)."""
    if len(student) != len(teacher):
        raise InputError(f"{what}: student shape {list(student)} and teacher shape {list(teacher)} differ in rank")
    differ = [i for i in range(1, len(student)) if student[i] != teacher[i]]
    if len(differ) > 1 or student[0] != teacher[0] or len(student) < 2:
        raise InputError(f"{what}: student shape {list(student)} cannot be projected to teacher shape {list(teacher)}")
    if differ:
        return differ[0]
    return 1 if len(student) == 4 else len(student) - 1  # NCHW conv maps: channels


class Distillee(nn.Module):
    """The trainable part: the student plus its projections, so DDP syncs both and checkpoints hold both."""

    def __init__(self, student: nn.Module, projections: nn.ModuleDict, feature_layers: Sequence[str]) -> None:
        super().__init__()
        self.student = student
        self.projections = projections
        self.taps = FeatureTaps(student, feature_layers, "student")
        self.feature_layers = list(feature_layers)

    def forward(self, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The student's (projected) output and its (projected) features, in the order they were configured."""
        out = first_output(run_model(self.student, feeds), "student")
        if OUTPUT_KEY in self.projections:
            out = self.projections[OUTPUT_KEY](out)
        feats = [self.projections[f"feature{i}"](self.taps.captured[n]) for i, n in enumerate(self.feature_layers)]
        return out, feats


# ------------------------------------------------------------------------------------------------ losses


def position_weights(output: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """For token-level outputs ``[batch, seq, ...]``: the attention mask, so padding never counts."""
    if mask is None or output.ndim < 3 or tuple(output.shape[:2]) != tuple(mask.shape):
        return None
    return mask.to(output.dtype)


def per_sample_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over every axis but the batch; with ``weights`` ``[batch, seq]``, a weighted mean over positions."""
    if weights is None:
        return values.reshape(values.shape[0], -1).mean(dim=1)
    values = values.reshape(*weights.shape, -1).mean(dim=-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, weights: Any) -> torch.Tensor:
    """T²·KL(teacher ‖ student) of the softened class distributions (last axis), per sample."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(dim=-1, keepdim=True)
    return per_sample_mean(kl, weights) * temperature**2


def ce_loss(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if student.ndim != 2:
        raise InputError(f"labels need logits of shape [batch, classes]; the student returns {list(student.shape)}")
    return F.cross_entropy(student, labels, reduction="none")


def mse_loss(student: torch.Tensor, teacher: torch.Tensor, weights: Any) -> torch.Tensor:
    return per_sample_mean((student - teacher) ** 2, weights)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor, weights: Any, axis: int = -1) -> torch.Tensor:
    cos = F.cosine_similarity(student, teacher, dim=axis, eps=1e-8).unsqueeze(-1)
    return per_sample_mean(1.0 - cos, weights)


def output_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, opts: Any, weights: Any
) -> torch.Tensor:
    """The per-sample loss on the models' outputs for ``kind`` (kl, mse, cosine)."""
    if kind == "mse":
        return mse_loss(student, teacher, weights)
    if kind == "cosine":
        return cosine_loss(student, teacher, weights)
    soft = kl_loss(student, teacher, opts.temperature, weights)
    if labels is None:
        return soft
    return (1.0 - opts.alpha) * soft + opts.alpha * ce_loss(student, labels)


def feature_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, axis: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per sample; on hidden states ``[batch, seq, width]`` (``axis`` last) padding positions do not count."""
    weights = position_weights(teacher, mask) if axis in (-1, teacher.ndim - 1) else None
    if kind == "cosine":
        cos = F.cosine_similarity(student, teacher, dim=axis, eps=1e-8)
        if weights is not None:
            return per_sample_mean((1.0 - cos).unsqueeze(-1), weights)
        return (1.0 - cos).reshape(cos.shape[0], -1).mean(dim=1)
    return mse_loss(student, teacher, weights)


# ---------------------------------------------------------------------------------------------- fidelity


def fidelity_sums(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, weights: Any, loss_kind: str
) -> dict[str, torch.Tensor]:
    """Per-batch sums of every metric that applies (divide by the sample count for means).

    Top-1 agreement and cosine come from the fidelity core, per row of the last axis, so early stopping judges
    a student the way the export gate and ``edgekit bench`` judge the exported model."""
    s, t = (x.detach().to(torch.float64).cpu().numpy() for x in (student, teacher))
    sums: dict[str, torch.Tensor] = {}
    if loss_kind == "kl":
        agree = torch.from_numpy(top1_matches(t, s).astype(np.float64)).unsqueeze(-1)
        sums["agreement"] = per_sample_mean(agree, weights).sum()
        if labels is not None and student.ndim == 2:
            sums["accuracy"] = (student.argmax(dim=-1) == labels).sum().to(student.dtype)
            sums["teacher_accuracy"] = (teacher.argmax(dim=-1) == labels).sum().to(student.dtype)
    else:
        cos = torch.from_numpy(cosines(t, s)).unsqueeze(-1)
        sums["cosine"] = per_sample_mean(cos, weights).sum()
    return sums


def retrieval_fidelity(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: Sequence[int], n: int, total: Any, ks: Sequence[int]
) -> dict[str, float]:
    """recall@k and spearman of sentence embeddings (2-D ``[batch, dim]`` outputs, teacher first) over the whole
    validation set, from the fidelity core, so early stopping can judge what search sees.

    Each process holds the rows of its shard (``rows``, in order); placing them at their indices in a zero matrix
    and summing over processes (``total``) gathers the whole set with the one collective the trainer has."""
    if not pairs or pairs[0][0].ndim != 2:
        return {}
    teacher, student = (torch.cat([p[i].detach() for p in pairs]).to(torch.float64).cpu() for i in (0, 1))
    full = torch.zeros((2, n, teacher.shape[1]), dtype=torch.float64)
    index = torch.as_tensor(list(rows), dtype=torch.long)
    full[0, index], full[1, index] = teacher, student
    full = total(full)
    return retrieval_metrics(full[0].numpy(), full[1].numpy(), ks)
