"""What ``convert``'s torch-side flags ask for (``--prune``, ``--prune-until``, ``--drop-layers``, ``--distill*``),
checked on construction so bad flags fail before any model loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import InputError
from edgekit.runtimes import DEFAULT_TARGET

if TYPE_CHECKING:
    from edgekit.converters.quantize.variants import QuantizeRequest
    from edgekit.goals import FidelityGoal

PRUNE_KINDS = ("structured", "unstructured", "2:4")
DATA_IMPORTANCES = ("activation", "taylor")  # importances that read data
DISTILL_TEXTS = 20_000  # corpus sentences per run: varied enough, and an epoch fits a few minutes on 2 cores


@dataclass(frozen=True)
class CompressRequest:
    """What the user asked of the torch-side stages (``--prune``, ``--prune-until``, ``--distill*``).

    ``prune`` thins FFN neurons (transformers) or conv channels (CNNs); attention heads go only when ``prune_heads``
    says how many; ``drop_layers`` removes that many whole encoder layers first, those whose absence changes the
    output least on the data. ``distill_hidden`` adds intermediate-layer losses: each student layer's hidden states
    against its teacher layer's (None: wherever the model has a transformer layer stack; measured to converge faster
    on a pruned MiniLM, ``benchmarks/distill_hidden.py``). ``distill`` trains the pruned student on edgekit's corpus
    (text models); ``distill_data`` adds the user's data to it and implies ``distill``. ``prune_importance``
    ``auto`` ranks transformer neurons by their activations on that data, everything else by weight magnitude (l1).

    ``fidelity`` is ``--prune-until``'s floor (``--fidelity``): the largest ratio within the budget whose probe
    distillation keeps it wins, and the final model must keep it too. ``quantize`` is what ``convert`` quantizes
    the result with (it sets it): each ``--prune-until`` step is timed as that model. ``probe_seconds`` replaces
    a probe's time box (a sixth of ``distill_time``, at least a minute).
    """

    prune: float | None = None
    prune_until: str | None = None
    prune_kind: str = "structured"
    prune_heads: float | None = None
    prune_importance: str = "auto"
    prune_target: str = DEFAULT_TARGET
    distill: bool = False
    distill_data: str | Path | None = None
    distill_texts: int = DISTILL_TEXTS
    distill_epochs: int = 3
    distill_steps: int | None = None
    distill_time: str | None = None  # a time budget such as "20m": the step count is fitted to it
    distill_loss: str | None = None  # None: cosine for embedding outputs, kl for logits
    distill_lr: float = 1e-4
    distill_batch_size: int = 16
    distill_hidden: bool | None = None  # match each layer's hidden states to its teacher layer's; None: auto
    drop_layers: int = 0  # whole encoder layers removed, chosen by measured effect
    seed: int = 0  # pruning's and distillation's random state (a recipe's seed)
    fidelity: str | None = None  # --prune-until's fidelity floor, e.g. "cosine>=0.92"
    quantize: QuantizeRequest | None = None  # set by convert: what ships, so what --prune-until times
    probe_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.prune is not None and self.prune_until is not None:
            raise InputError("give --prune RATIO or --prune-until EXPR, not both")
        if self.prune_kind not in PRUNE_KINDS:
            raise InputError(f"unknown --prune-kind {self.prune_kind!r}; expected one of: {', '.join(PRUNE_KINDS)}")
        from edgekit.converters.prune import IMPORTANCES, check_ratio

        if self.prune_importance not in ("auto", *IMPORTANCES):
            choices = ", ".join(("auto", *IMPORTANCES))
            raise InputError(f"unknown --prune-importance {self.prune_importance!r}; expected one of: {choices}")
        if self.prune is not None:
            check_ratio("--prune ratio", self.prune)
        if self.prune_heads is not None:
            check_ratio("--prune-heads ratio", self.prune_heads, allow_zero=True)
        if isinstance(self.drop_layers, bool) or not isinstance(self.drop_layers, int) or self.drop_layers < 0:
            raise InputError(f"--drop-layers must be a whole number of layers, got {self.drop_layers!r}")
        if self.drop_layers and self.prune_until is not None:
            raise InputError("give --drop-layers or --prune-until, not both: the budget search thins FFN neurons")
        if self.prune_until is not None and self.prune_kind != "structured":
            raise InputError("--prune-until needs structured pruning: sparsity does not change dense latency")
        if self.prune_until is not None:
            from edgekit.converters.prune.latency import parse_budget

            parse_budget(self.prune_until)  # a bad budget fails before the model loads
        if self.distill_data is not None:
            object.__setattr__(self, "distill", True)  # --distill-data implies --distill
        if self.distill and not self.prunes:
            flag = "--distill-data" if self.distill_data is not None else "--distill"
            raise InputError(
                f"{flag} needs --prune, --prune-until or --drop-layers: without a smaller student, distillation"
                " would train the model against itself (to distil into a student of your own, use `edgekit distill`)"
            )
        if self.distill_texts < 1:
            raise InputError(f"--distill-texts must be at least 1, got {self.distill_texts}")
        if self.distill_time is not None:
            from edgekit.converters.distill.options import parse_duration

            parse_duration(self.distill_time)
        if self.fidelity is not None:
            self._check_floor()

    def _check_floor(self) -> None:
        if self.prune_until is None:
            raise InputError("a pruning fidelity floor needs --prune-until (with --prune RATIO there is no search)")
        from edgekit.goals import parse_fidelity

        parse_fidelity(self.fidelity or "")  # a bad expression fails now, not after the search
        if self.probe_seconds is not None and not self.probe_seconds > 0:
            raise InputError(f"probe_seconds must be above zero, got {self.probe_seconds}")

    @property
    def floor(self) -> FidelityGoal | None:
        from edgekit.goals import parse_fidelity

        return parse_fidelity(self.fidelity) if self.fidelity is not None else None

    @property
    def prunes(self) -> bool:
        """Whether the model gets smaller: neurons, channels or whole layers."""
        return self.prune is not None or self.prune_until is not None or self.drop_layers > 0

    @property
    def active(self) -> bool:
        return self.prunes or self.distill


def default_prune_target(targets: Sequence[str]) -> str:
    """Where ``--prune-until`` times the model: the first runtime it is converted for, else ONNX Runtime."""
    return targets[0] if targets else "onnxruntime"


def compress_request(
    *,
    prune: float | None = None,
    prune_until: str | None = None,
    prune_kind: str = "structured",
    prune_heads: float | None = None,
    prune_importance: str = "auto",
    distill: bool = False,
    distill_data: str | Path | None = None,
    distill_texts: int = DISTILL_TEXTS,
    distill_epochs: int = 3,
    distill_steps: int | None = None,
    distill_time: str | None = None,
    distill_loss: str | None = None,
    distill_lr: float = 1e-4,
    distill_hidden: bool | None = None,
    drop_layers: int = 0,
    targets: Sequence[str] = (),
    seed: int = 0,
) -> CompressRequest:
    """The torch-side stages ``convert``'s flags ask for, checked now so bad flags fail before any loading.

    ``targets`` are the runtimes the model is converted for; a latency budget is met on the first of them.
    """
    return CompressRequest(
        prune=prune, prune_until=prune_until, prune_kind=prune_kind, prune_heads=prune_heads,
        prune_importance=prune_importance, prune_target=default_prune_target(targets), distill=distill,
        distill_data=distill_data, distill_texts=distill_texts, distill_epochs=distill_epochs,
        distill_steps=distill_steps, distill_time=distill_time, distill_loss=distill_loss, distill_lr=distill_lr,
        distill_hidden=distill_hidden, drop_layers=drop_layers, seed=seed,
    )  # fmt: skip
