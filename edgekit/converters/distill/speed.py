"""What makes a distillation step cheaper without changing what it learns from: bf16 autocast for the student
where the CPU multiplies bf16 natively, and the teacher's outputs computed once per sample instead of once
per step.

The teacher is frozen and in eval mode, so its output for a sample is the same every epoch: for outputs with
one row per sample (pooled embeddings, class logits) a per-sample cache removes the teacher forward from every
step after a sample's first. Token-level outputs depend on the batch's padded length and intermediate-layer
losses need the teacher's hidden states, so those still run the teacher each step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgekit.cpu import BF16_FLAGS, numeric_cpu_flags

CACHE_MAX_BYTES = 2 * 1024**3  # a cache larger than this would crowd a small machine's memory: run the teacher


def training_precision(option: str, device: torch.device) -> str:
    """``auto``: bf16 on a CPU with native bf16 (AVX512-BF16, AMX), fp32 anywhere else (GPUs included: the
    choice has only been measured on CPUs). Master weights, the loss and evaluation stay fp32 either way."""
    if option != "auto":
        return option
    native = any(flag in numeric_cpu_flags() for flag in BF16_FLAGS)
    return "bf16" if device.type == "cpu" and native else "fp32"


def student_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context the student's forward runs in: bf16 autocast, or nothing."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def as_fp32(value: torch.Tensor) -> torch.Tensor:
    """A bf16/fp16 output of the autocast forward as fp32, so the loss is always computed in fp32."""
    return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value


class TeacherCache:
    """The teacher's output per training sample, filled the first time a sample is drawn.

    ``run(indices)`` runs the teacher on those samples only and returns ``[len(indices), ...]``. The cache
    turns itself off (and says why in ``reason``) for outputs that are not one fixed-size row per sample, or
    that would not fit :data:`CACHE_MAX_BYTES`.
    """

    def __init__(self, samples: int, enabled: bool, why_not: str = "") -> None:
        self.samples, self.enabled, self.reason = samples, enabled, why_not
        self.values: torch.Tensor | None = None
        self.have = torch.zeros(samples, dtype=torch.bool)
        self.hits = self.misses = 0

    def outputs(self, indices: Sequence[int], run: Callable[[Sequence[int]], torch.Tensor]) -> torch.Tensor:
        if not self.enabled:
            return run(indices)
        index = torch.as_tensor(list(indices), dtype=torch.long)
        missing = index[~self.have[index]]
        if len(missing):
            fresh = run(missing.tolist())
            if not self._store(missing, fresh):
                return fresh if len(missing) == len(index) else run(indices)
        self.hits += len(index) - len(missing)
        self.misses += len(missing)
        assert self.values is not None
        return self.values[index]

    def _store(self, index: torch.Tensor, fresh: torch.Tensor) -> bool:
        """Keep ``fresh`` (rows for ``index``); False, and the cache off, when it cannot be kept."""
        if self.values is None:
            if fresh.ndim != 2:
                return self._off(f"the teacher's output has shape {list(fresh.shape)}, not one row per sample")
            if self.samples * fresh.shape[1] * fresh.element_size() > CACHE_MAX_BYTES:
                return self._off("the teacher's outputs for every sample would not fit the cache")
            self.values = torch.empty((self.samples, fresh.shape[1]), dtype=fresh.dtype, device=fresh.device)
        if fresh.shape[1:] != self.values.shape[1:]:
            return self._off("the teacher's output width changed between batches")
        self.values[index] = fresh.detach()
        self.have[index] = True
        return True

    def _off(self, reason: str) -> bool:
        self.enabled, self.reason, self.values = False, reason, None
        return False

    def facts(self) -> dict[str, Any]:
        """For the result: whether the cache ran, and how much of the teacher's work it saved."""
        out: dict[str, Any] = {"teacher_cache": self.enabled}
        if self.enabled:
            out["teacher_cache_hit_rate"] = round(self.hits / max(self.hits + self.misses, 1), 4)
        elif self.reason:
            out["teacher_cache_off"] = self.reason
        return out
