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

This module is light at import (no torch); the engine lives in ``distill_train`` and its helpers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgekit.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgekit.converters.distill_data import DistillData
    from edgekit.specs import TensorSpec

Loss = Literal["kl", "mse", "cosine"]
Metric = Literal["auto", "accuracy", "agreement", "cosine"]
LOSSES = ("kl", "mse", "cosine")
METRICS = ("auto", "accuracy", "agreement", "cosine")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class DistillOptions:
    """Everything that decides what a distillation run computes; validated on construction."""

    loss: Loss = "kl"
    temperature: float = 2.0  # kl: softens both distributions
    alpha: float = 0.5  # kl with labels: weight of hard-label cross-entropy
    features: tuple[tuple[str, str], ...] = ()  # (student layer, teacher layer) pairs to match
    feature_weight: float = 1.0
    feature_loss: Literal["mse", "cosine"] = "mse"
    project_outputs: bool = False  # mse/cosine: learn a projection when student and teacher widths differ
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # fraction of all steps spent warming up linearly
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    epochs: int = 3
    max_steps: int | None = None  # when set, the step budget (epochs is ignored)
    batch_size: int = 32  # global: split across processes under torchrun
    eval_batch_size: int | None = None
    seed: int = 0
    grad_clip: float | None = 1.0
    eval_every: int | None = None  # steps; None: at the end of every epoch
    metric: Metric = "auto"
    patience: int | None = None  # evaluations without improvement before stopping; None: never stop early
    min_delta: float = 0.0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False  # continue from checkpoint_dir/last.pt when it exists
    progress: bool = True
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple((str(s), str(t)) for s, t in self.features))
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("metric", self.metric, METRICS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("feature loss", self.feature_loss, ("mse", "cosine"))
        for name in ("lr", "temperature", "batch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise InputError(f"distillation {name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "eval_batch_size", "eval_every", "patience", "grad_clip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"distillation {name} must be positive (or unset), got {value}")
        for name in ("alpha", "warmup_ratio", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"distillation {name} must be within [0, 1], got {getattr(self, name)}")
        if self.weight_decay < 0 or self.feature_weight < 0 or self.min_delta < 0:
            raise InputError("distillation weight_decay, feature_weight and min_delta must not be negative")
        if self.loss == "kl" and self.project_outputs:
            raise InputError("project_outputs is for mse/cosine embeddings; kl needs the same classes on both sides")
        if self.resume and not self.checkpoint_dir:
            raise InputError("resume needs a checkpoint directory")

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed: anything that changes the data order or the model."""
        keys = ("loss", "features", "project_outputs", "batch_size", "seed")
        return {k: list(map(list, v)) if k == "features" else v for k, v in asdict(self).items() if k in keys}


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"unknown distillation {what} {value!r}; expected one of: {', '.join(choices)}")


@dataclass
class DistillResult:
    """The trained student (eval mode, best checkpoint restored) and how training went."""

    student: torch.nn.Module
    projections: torch.nn.Module  # learned projections (features, outputs); empty when none were configured
    history: list[dict[str, float]]  # one record per step: step, loss, lr
    evals: list[dict[str, float]]  # one record per evaluation: step, fidelity, and every metric computed
    metric: str  # what fidelity means: accuracy, agreement or cosine ("" without validation data)
    steps: int  # optimizer steps done, resumed ones included
    total_steps: int
    best_step: int | None = None
    best_fidelity: float | None = None
    initial_fidelity: float | None = None  # before training (step 0): the student without distillation
    teacher_accuracy: float | None = None  # on validation data with labels
    stopped_early: bool = False
    resumed_from: int | None = None
    world_size: int = 1
    train_samples: int = 0
    val_samples: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    def summary(self) -> dict[str, Any]:
        """Everything but the modules and per-step history, for manifests, JSON and the CLI."""
        skip = {"student", "projections", "history"}
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["final_loss"] = self.final_loss
        return out


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
    from edgekit.converters.distill_train import run_distillation

    return run_distillation(student, teacher, train_data, val_data, options or DistillOptions(), input_specs)


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
    max_length: int = 128,
) -> DistillFilesResult:
    """``edgekit distill``: load both sources, read the data like calibration data, train, save the student's
    state_dict to ``output`` atomically (rank 0 only)."""
    from edgekit.converters.distill_data import load_pair_and_data

    out = Path(output)
    _check_output(out)
    pair = load_pair_and_data(teacher, student, data, val_data, allow_pickle=allow_pickle, max_length=max_length)
    result = distill(pair.student, pair.teacher, pair.train, pair.val or None, options, input_specs=pair.specs)
    written = _save_state_dict(result.student, out) if _is_rank_zero() else None
    return DistillFilesResult(result, written, _param_count(pair.teacher), _param_count(result.student))


def _check_output(path: Path) -> None:
    from edgekit.errors import OutputError

    if path.is_dir():
        raise OutputError(f"output path is a directory: {path}")
    if path.suffix.lower() not in (".pt", ".pth"):
        raise InputError(f"output {path} should end in .pt (it holds the student's state_dict)")


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _save_state_dict(module: torch.nn.Module, path: Path) -> Path:
    """torch.save of the state_dict (tensors only, loads with weights_only=True) via a temp file and rename."""
    from edgekit.converters.distill_state import save_atomically

    save_atomically({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
    return path
