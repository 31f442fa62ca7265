"""The torch ``nn.Module`` wrappers that sources build: plain-tensor text models and sentence-transformers'
pooling, Dense and Normalize. They are defined on first use, not at import, so the package imports without
torch, and they live under ``edgekit.sources`` (its ``__getattr__``) so pickle and deepcopy find them."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PUBLIC_MODULE = "edgekit.sources"  # where pickle and deepcopy look the classes up (its __getattr__)


@functools.cache
def torch_classes() -> dict[str, type]:
    """The nn.Module wrappers; defined here, not at import time, so the module imports without torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TextModel(nn.Module):
        """A Hugging Face model behind a forward of plain tensors, so export sees no dicts or ModelOutputs."""

        def __init__(self, model: nn.Module, head: nn.Module | None = None) -> None:
            super().__init__()
            self.model = model
            self.head = head

        def _run(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs, return_dict=False)[0]
            return hidden if self.head is None else self.head(hidden, attention_mask)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self._run(input_ids, attention_mask)

    class TextModelWithTypes(TextModel):
        """TextModel for models that also take token_type_ids (BERT and friends)."""

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self._run(input_ids, attention_mask, token_type_ids)

    class SentenceHead(nn.Module):
        """sentence-transformers' Pooling (padded path, same arithmetic) followed by Dense/Normalize steps."""

        def __init__(self, modes: list[str], steps: list[nn.Module]) -> None:
            super().__init__()
            self.modes = list(modes)
            self.steps = nn.ModuleList(steps)

        def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            pooled = [_pool(mode, hidden, attention_mask) for mode in self.modes]
            x = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
            for step in self.steps:
                x = step(x)
            return x

    def _pool(mode: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
        if mode == "cls":
            first = mask.to(torch.int32).argmax(dim=1)
            return torch.gather(hidden, 1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
        if mode == "max":
            keep = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype)
            return hidden.masked_fill(keep == 0, float("-inf")).max(dim=1).values
        if mode in ("mean", "mean_sqrt_len_tokens"):
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            total = (hidden * weights).sum(dim=1, dtype=acc)
            count = torch.clamp(weights.sum(dim=1, dtype=acc), min=1e-9)
            return (total / (count if mode == "mean" else torch.sqrt(count))).to(hidden.dtype)
        if mode == "weightedmean":
            positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=acc).view(1, -1, 1)
            weights = mask.unsqueeze(-1).to(acc) * (positions - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
            total = (hidden * weights).sum(dim=1)
            return (total / torch.clamp(weights.sum(dim=1), min=1e-9)).to(hidden.dtype)
        seq = hidden.shape[1]  # lasttoken
        values, indices = mask.to(torch.int32).flip(1).max(1)
        indices = torch.where(values == 0, seq - 1, indices)
        gather = (seq - indices - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        keep = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype)
        return torch.gather(hidden * keep, 1, gather).squeeze(1)

    class DenseLayer(nn.Module):
        """sentence-transformers' Dense: activation(linear(x)), plus an optional residual."""

        def __init__(
            self, in_features: int, out_features: int, *, bias: bool, activation: nn.Module, residual: bool
        ) -> None:
            super().__init__()
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            self.activation = activation
            self.use_residual = residual
            if residual and in_features != out_features:
                self.residual = nn.Linear(in_features, out_features, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activation(self.linear(x))
            if self.use_residual:
                out = out + (self.residual(x) if hasattr(self, "residual") else x)
            return out

    class L2Normalize(nn.Module):
        """sentence-transformers' Normalize: unit L2 norm along the last axis."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.normalize(x, p=2, dim=-1)

    classes: dict[str, type] = {
        "TextModel": TextModel,
        "TextModelWithTypes": TextModelWithTypes,
        "SentenceHead": SentenceHead,
        "DenseLayer": DenseLayer,
        "L2Normalize": L2Normalize,
    }
    for name, cls in classes.items():
        cls.__module__, cls.__qualname__ = PUBLIC_MODULE, name
    return classes
