"""Replaying ``--quantize auto``: each target's recorded choice (a scheme and the nodes kept in float) rebuilt as
the search built it, without timing or searching again.

The search quantizes with :func:`~edgekit.converters.quantize.auto.scheme_options` and the same calibration
ranges for every step, so rebuilding a choice from the same base model and calibration data gives the same
file, byte for byte (ONNX Runtime's and NNCF's quantizers are deterministic given identical inputs). The
rebuilt variants are judged on the held-back samples by the same bar the search used, so a replay with a
changed source or data still refuses a variant that misses the goal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.converters.calibration import CalibrationSet
from edgekit.converters.quantize.auto import BASELINE, AutoOptions, AutoResult, candidates_for, scheme_options
from edgekit.converters.quantize.model import quantize_model
from edgekit.errors import InputError, ValidationError

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class AutoChoice:
    """What auto chose for one target: ``fp32`` (the base model) or a scheme, with the nodes kept in float."""

    target: str
    scheme: str
    excluded_nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "scheme": self.scheme, "excluded_nodes": list(self.excluded_nodes)}


def decisions_of(result: AutoResult) -> list[dict[str, Any]]:
    """Each target's chosen scheme and excluded nodes, from a search's candidate rows (what a recipe records)."""
    chosen = {r["target"]: r for r in result.candidates if r.get("chosen")}
    return [AutoChoice(t, s, tuple(chosen[t]["excluded_nodes"])).to_dict() for t, s in result.chosen.items()]


def choice_records(choices: Sequence[AutoChoice], targets: Sequence[str]) -> list[dict[str, Any]]:
    """The recorded choices for ``targets``, in their order, as a search would have recorded them."""
    by_target = {c.target: c for c in choices}
    return [by_target[t].to_dict() for t in targets if t in by_target]


def rebuild_choices(
    base: Path, work: Path, data: CalibrationSet, refs: list[dict], choices: Sequence[AutoChoice],
    options: AutoOptions, say: ProgressFn,
) -> tuple[AutoResult, dict[str, dict[str, Any]]]:  # fmt: skip
    """The variants ``choices`` name, built as the search built them, and each one's held-back fidelity."""
    from edgekit.converters.quantize.auto import _Context, _meets  # the search's own judgement, not a copy

    by_target = checked_choices(choices, options.targets)
    ctx = _Context(base, work, data, refs, options, say)
    files: dict[tuple[str, tuple[str, ...]], Path] = {}
    variants: dict[str, Path] = {}
    fidelity: dict[str, dict[str, Any]] = {}
    for target in options.targets:
        choice = by_target[target]
        if choice.scheme == BASELINE:
            variants[target] = base
            continue
        key = (choice.scheme, choice.excluded_nodes)
        if key not in files:
            files[key] = _rebuild(base, work / f"{choice.scheme}.{len(files)}.onnx", choice, options, data, say)
        variants[target] = files[key]
        fidelity[target] = ctx.fidelity(files[key], target)
        if not _meets(options.fidelity, fidelity[target]):
            raise ValidationError(
                f"the recorded auto choice for {target} ({choice.scheme}, {len(choice.excluded_nodes)} node(s) in"
                f" float) misses {options.fidelity} now: {options.fidelity.values(fidelity[target])}"
            )
    return AutoResult(variants, [], {t: by_target[t].scheme for t in options.targets}), fidelity


def checked_choices(choices: Sequence[AutoChoice], targets: Sequence[str]) -> dict[str, AutoChoice]:
    """The choice for every target, each one a scheme auto could have chosen there; else one InputError line."""
    by_target = {c.target: c for c in choices}
    for target in targets:
        if target not in by_target:
            raise InputError(
                f"quantize.decisions has no choice for target {target!r}; remove quantize.decisions to search again"
            )
        scheme = by_target[target].scheme
        allowed = (BASELINE, *candidates_for(target))
        if scheme not in allowed:
            raise InputError(
                f"quantize.decisions: {scheme!r} is not a scheme auto can choose for {target} here"
                f" ({', '.join(allowed)})"
            )
    return by_target


def _rebuild(
    base: Path, dst: Path, choice: AutoChoice, options: AutoOptions, data: CalibrationSet, say: ProgressFn
) -> Path:
    """One recorded variant: the scheme's options, its excluded nodes, calibration ranges of the base model."""
    say(f"auto: rebuilding the recorded {choice.scheme} ({len(choice.excluded_nodes)} node(s) in float)")
    opts = scheme_options(choice.scheme, options.calibration).excluding(choice.excluded_nodes)
    ranges = dst.parent / f"{choice.scheme}.ranges.json"
    return quantize_model(base, dst, opts, data.calibration, ranges=ranges).path
