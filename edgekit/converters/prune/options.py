"""What to prune and what pruning did: the option and result types every pruning module shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError

if TYPE_CHECKING:
    from torch import nn

KINDS = ("structured", "unstructured", "2:4")
IMPORTANCES = ("l1", "l2", "taylor", "activation")
DENSE_NOTE = (
    "{kind} sparsity zeroes weights in place: tensor shapes, parameter count and dense MACs are unchanged. "
    "The zeros compress well on disk and can feed sparse kernels (2:4 on NVIDIA Ampere+ with TensorRT), but "
    "ONNX Runtime and OpenVINO on CPU still do the full dense work: expect no latency gain."
)


def check_ratio(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A pruning ratio as a float in (0, 1) ([0, 1) with ``allow_zero``); anything else is bad input."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a number between 0 and 1, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bounds = "[0, 1)" if allow_zero else "(0, 1), exclusive"
        raise InputError(f"{name} must be in {bounds}, got {value}")
    return float(value)


@dataclass(frozen=True)
class PruneOptions:
    """What to prune and how to rank it.

    ``ratio`` is the fraction removed: channels (CNN), FFN neurons (transformers; ``ffn_ratio`` overrides it, 0
    keeps the FFN whole), or weights zeroed (unstructured; 2:4 is always 50%). Attention heads go only when
    ``heads_ratio`` asks: a head is a large, coarse unit, and thinning the FFN keeps far more of a small encoder.
    ``importance``: ``l1``/``l2`` weight magnitude, ``taylor`` (|w|·|gradient|) or ``activation`` (transformers:
    the RMS over tokens of a neuron's activation times its outgoing weights' norm, or of a head's output norm);
    the last two read data. ``global_pruning`` ranks across layers instead of removing ``ratio`` in every layer.
    ``ignored_layers`` are qualified module names (``features.0``, ``model.encoder.layer.3``) left untouched with
    their children.
    """

    ratio: float
    kind: str = "structured"
    importance: str = "l1"
    global_pruning: bool = False
    ignored_layers: tuple[str, ...] = ()
    heads_ratio: float = 0.0
    ffn_ratio: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_ratio("prune ratio", self.ratio)
        check_ratio("heads_ratio", self.heads_ratio, allow_zero=True)
        if self.ffn_ratio is not None:
            check_ratio("ffn_ratio", self.ffn_ratio, allow_zero=True)
        if self.kind not in KINDS:
            raise InputError(f"unknown prune kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.importance not in IMPORTANCES:
            raise InputError(f"unknown importance {self.importance!r}; expected one of {', '.join(IMPORTANCES)}")
        if isinstance(self.ignored_layers, str):
            raise InputError("ignored_layers must be a tuple of module names, not one string")
        object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))

    @property
    def heads(self) -> float:
        """The fraction of attention heads to remove (0 unless asked)."""
        return self.heads_ratio

    @property
    def ffn(self) -> float:
        """The fraction of FFN intermediate neurons to remove."""
        return self.ratio if self.ffn_ratio is None else self.ffn_ratio

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "kind": self.kind,
            "importance": self.importance,
            "global_pruning": self.global_pruning,
            "ignored_layers": list(self.ignored_layers),
            "heads_ratio": self.heads_ratio,
            "ffn_ratio": self.ffn_ratio,
            "seed": self.seed,
        }


@dataclass
class PruneResult:
    """The pruned module (a copy: the original stays intact, e.g. as a distillation teacher) and its plan.

    ``plan`` is JSON-ready for the manifest: options, method, per-layer before/after, parameters and MACs
    (per sample, at the example inputs' shape, Torch-Pruning's counter), notes that say what to expect.
    """

    module: nn.Module
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def params_before(self) -> int:
        return int(self.plan["params_before"])

    @property
    def params_after(self) -> int:
        return int(self.plan["params_after"])

    @property
    def macs_before(self) -> int:
        return int(self.plan["macs_before"])

    @property
    def macs_after(self) -> int:
        return int(self.plan["macs_after"])

    def summary(self) -> str:
        """One line for a progress log or the CLI."""
        p = self.plan
        text = (
            f"pruned ({p['kind']}, {p['importance']}): params {p['params_before']:,} -> {p['params_after']:,}, "
            f"MACs {p['macs_before']:,} -> {p['macs_after']:,}"
        )
        if "sparsity" in p:
            text += f", {p['sparsity']:.1%} of prunable weights zero (no dense speed-up)"
        return text
