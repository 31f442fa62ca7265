"""What a distillation run computes and what it returns: the types every distillation module shares."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edgekit.errors import InputError
from edgekit.retrieval import recall_k

if TYPE_CHECKING:
    import torch

Loss = Literal["kl", "mse", "cosine"]
Metric = Literal["auto", "accuracy", "agreement", "cosine", "spearman", "recall@10"]  # and recall@K for any K
LOSSES = ("kl", "mse", "cosine")
METRICS = ("auto", "accuracy", "agreement", "cosine", "spearman", "recall@10")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
FEATURE_PROJECTIONS = ("always", "when_widths_differ")


@dataclass(frozen=True)
class DistillOptions:
    """Everything that decides what a distillation run computes; validated on construction."""

    loss: Loss = "kl"
    temperature: float = 2.0  # kl: softens both distributions
    alpha: float = 0.5  # kl with labels: weight of hard-label cross-entropy
    features: tuple[tuple[str, str], ...] = ()  # (student layer, teacher layer) pairs to match
    feature_weight: float = 1.0
    feature_loss: Literal["mse", "cosine"] = "mse"
    feature_projection: Literal["always", "when_widths_differ"] = "always"  # a learned map, or none where widths match
    project_outputs: bool = False  # mse/cosine: learn a projection when student and teacher widths differ
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # fraction of all steps spent warming up linearly
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    epochs: int = 3
    max_steps: int | None = None  # when set, the step budget (epochs is ignored)
    max_seconds: float | None = None  # time budget: the step count is fitted to it as the run goes (schedule too)
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
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # the student's forward; auto: bf16 where the CPU has it
    cache_teacher: bool = True  # compute the teacher's output once per sample where it is one row per sample
    bucket_by_length: bool = True  # batches of similar lengths: less padding to compute

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple((str(s), str(t)) for s, t in self.features))
        _check_choice("loss", self.loss, LOSSES)
        if recall_k(self.metric) is None:
            _check_choice("metric", self.metric, METRICS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("feature loss", self.feature_loss, ("mse", "cosine"))
        _check_choice("feature projection", self.feature_projection, FEATURE_PROJECTIONS)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("lr", "temperature", "batch_size", "epochs", "checkpoint_every"):
            if not getattr(self, name) > 0:  # ``not >``: NaN fails every comparison, so ``<= 0`` let it through
                raise InputError(f"distillation {name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "max_seconds", "eval_batch_size", "eval_every", "patience", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"distillation {name} must be positive (or unset), got {value}")
        for name in ("alpha", "warmup_ratio", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:  # NaN fails this too
                raise InputError(f"distillation {name} must be within [0, 1], got {getattr(self, name)}")
        if not (self.weight_decay >= 0 and self.feature_weight >= 0 and self.min_delta >= 0):
            raise InputError("distillation weight_decay, feature_weight and min_delta must not be negative")
        if self.loss == "kl" and self.project_outputs:
            raise InputError("project_outputs is for mse/cosine embeddings; kl needs the same classes on both sides")
        if self.resume and not self.checkpoint_dir:
            raise InputError("resume needs a checkpoint directory")

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed: anything that changes the data order or the model."""
        keys = ("loss", "features", "feature_projection", "project_outputs", "batch_size", "seed", "bucket_by_length")
        return {k: list(map(list, v)) if k == "features" else v for k, v in asdict(self).items() if k in keys}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?\s*$", re.IGNORECASE)
_SECONDS_PER_UNIT = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"20m"`` -> 1200.0 seconds; ``s``, ``m``/``min`` and ``h`` parse, a bare number is seconds."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(f"cannot read duration {text!r}; expected for example '20m', '90s' or '1.5h'")
    seconds = float(match.group(1)) * _SECONDS_PER_UNIT[(match.group(2) or "s").lower()]
    if not seconds > 0:
        raise InputError(f"duration must be above zero, got {text!r}")
    return seconds


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
    metric: str  # what fidelity means: accuracy, agreement, cosine, spearman or recall@K ("" without validation data)
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
    speed: dict[str, Any] = field(default_factory=dict)  # precision, teacher cache, length buckets: what ran

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    def summary(self) -> dict[str, Any]:
        """Everything but the modules and per-step history, for manifests, JSON and the CLI."""
        skip = {"student", "projections", "history"}
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["final_loss"] = self.final_loss
        return out
