"""Knowledge distillation: train a (pruned, smaller) student to compute what its teacher computes.

Losses: ``kl`` on logits at temperature T (scaled by T² so gradients keep their size as T changes), mixed with
hard-label cross-entropy when the data has labels: ``(1 - alpha)·T²·KL + alpha·CE``; ``mse`` or ``cosine`` on
embeddings, where unlabeled text is enough. Optional intermediate-feature matching pairs a student layer with a
teacher layer through forward hooks and a learned linear projection (student width -> teacher width), trained
with the student. AdamW with linear warmup and cosine/linear decay; epochs or a step budget; gradient clipping;
checkpoints every N steps with exact resume; evaluation every N steps on validation data with early stopping
on fidelity (cosine for embeddings, accuracy or top-1 agreement for logits), and the best student restored.

Multi-process: started by ``torchrun`` (``WORLD_SIZE`` > 1), the same trainer runs under DDP, gloo on CPU and
nccl on GPU. ``batch_size`` is the *global* batch: each of W processes takes a contiguous share (batch/W rows)
of the same seeded shuffle, and each scales its summed loss so DDP's gradient average equals the gradient of
the global batch mean. Two processes therefore train the same student as one (up to float rounding), and a
checkpoint resumes under any number of processes. Only rank 0 writes checkpoints and shows progress. Two
things break the equivalence, as they would in any DDP run: BatchNorm in training mode (per-process batch
statistics) and dropout (per-process random masks).

This module is light at import (no torch); the engine lives in ``train`` and its helpers (``data``,
``losses``, ``state``); the option and result types in ``options``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.converters.distill.options import DistillOptions, DistillResult
from edgekit.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgekit.converters.distill.data import DistillData
    from edgekit.specs import TensorSpec


def distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    train_data: DistillData,
    val_data: DistillData | None = None,
    options: DistillOptions | None = None,
    *,
    input_specs: Sequence[TensorSpec] | None = None,
) -> DistillResult:
    """Train ``student`` (in place) to match ``teacher`` on ``train_data``; the returned student is the best one.

    Data is an iterable of feed dicts (input name -> array with a batch axis, plus optional ``"labels"``), a
    callable returning one, or a ``torch.utils.data.Dataset`` of single samples. ``input_specs`` (optional)
    are the inputs the models expect: without them the first sample sets the shapes the rest must have.
    """
    from edgekit.converters.distill.state import Distributed
    from edgekit.converters.distill.train import Trainer

    options = options or DistillOptions()
    ctx = Distributed.from_env(options.device)  # one process, or this rank of a torchrun launch
    try:
        return Trainer(student, teacher, train_data, val_data, options, input_specs, ctx).run()
    finally:
        ctx.close()


# ------------------------------------------------------------------------------------------- from files


@dataclass
class DistillFilesResult:
    """What :func:`distill_files` did: the run, the file written, and the models' sizes."""

    result: DistillResult
    output: Path | None  # None on ranks other than 0 under torchrun
    teacher_params: int
    student_params: int


def distill_files(
    teacher: str | os.PathLike[str],
    student: str | os.PathLike[str],
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: DistillOptions,
    *,
    val_data: str | os.PathLike[str] | None = None,
    allow_pickle: bool = False,
    max_length: int | None = None,
) -> DistillFilesResult:
    """``edgekit distill``: load both sources, read the data like calibration data, train, save the student's
    state_dict to ``output`` atomically (rank 0 only)."""
    from edgekit.converters.distill.data import load_pair_and_data

    out = Path(output)
    _check_output(out)
    pair = load_pair_and_data(teacher, student, data, val_data, allow_pickle=allow_pickle, max_length=max_length)
    result = distill(pair.student, pair.teacher, pair.train, pair.val or None, options, input_specs=pair.specs)
    written = _save_state_dict(result.student, out) if _is_rank_zero() else None
    return DistillFilesResult(result, written, _param_count(pair.teacher), _param_count(result.student))


def _check_output(path: Path) -> None:
    from edgekit.staging import check_writable_file

    check_writable_file(path)
    if path.suffix.lower() not in (".pt", ".pth"):
        raise InputError(f"output {path} should end in .pt (it holds the student's state_dict)")


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _save_state_dict(module: torch.nn.Module, path: Path) -> Path:
    """torch.save of the state_dict (tensors only, loads with weights_only=True) via a temp file and rename."""
    from edgekit.converters.distill.state import save_atomically

    save_atomically({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
    return path
