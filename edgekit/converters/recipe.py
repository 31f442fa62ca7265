"""The recipe: a whole conversion written down as data (YAML), checked by a pydantic schema, replayable exactly.

A recipe names the source, its inputs, the prune/distill/quantize stages with their options, the targets, the
fidelity goal, the calibration and distillation data and the seed. Every artifact's manifest stores the
*resolved* recipe: every default filled in, every path absolute, every file with its sha256, and the decisions
``--quantize auto`` took (the scheme and the nodes kept in float, per target), so a replay rebuilds them without
timing or searching again. The schema forbids unknown keys; a bad recipe is one :class:`InputError` line that
names the key (``recipe r.yaml: quantize.fidelty: unknown key``).

This module is the schema and its reading and writing; :mod:`edgekit.converters.replay` runs a recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from edgekit.converters.compress_request import DISTILL_TEXTS, PRUNE_KINDS
from edgekit.converters.distill.options import LOSSES
from edgekit.converters.export import DEFAULT_OPSET, EXPORTERS
from edgekit.converters.prune.options import IMPORTANCES
from edgekit.converters.quantize.options import CALIBRATION_METHODS, CLI_MODES
from edgekit.errors import InputError
from edgekit.fidelity import OUTPUT_KINDS

RECIPE_VERSION = 1
_STRICT = ConfigDict(extra="forbid")


class DataFile(BaseModel):
    """A data file (or directory of them) a stage reads. Written as a bare path in a recipe; recorded with its
    sha256, which a replay checks before it reads the file."""

    model_config = _STRICT
    path: str = Field(description="relative to the recipe file, or absolute")
    sha256: str | None = Field(None, description="when set, the file must still hash to it")

    @model_validator(mode="before")
    @classmethod
    def _from_bare_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class SourceRef(BaseModel):
    """What to convert: as ``edgekit convert SOURCE`` takes it. A path is relative to the recipe file, or to the
    directory of an installed Python package (``in_package``, found without importing it)."""

    model_config = _STRICT
    ref: str = Field(description="FILE.py:FUNCTION, package.module:FUNCTION, .pt2, .pt, a model directory or .onnx")
    in_package: str | None = Field(None, description="resolve ref inside this installed package's directory")
    kind: str | None = Field(None, description="the source kind the loader recorded")
    sha256: str | None = Field(None, description="when set, the source must still hash to it")


class ExportSection(BaseModel):
    model_config = _STRICT
    opset: int = Field(DEFAULT_OPSET, ge=7, le=25)
    exporter: Literal[("auto", *EXPORTERS)] = "auto"  # type: ignore[valid-type]


class PruneSection(BaseModel):
    """``--prune`` / ``--prune-until`` and their options; present means prune."""

    model_config = _STRICT
    ratio: float | None = Field(None, gt=0, lt=1, description="fraction of FFN neurons or conv channels removed")
    until: str | None = Field(None, description='prune in steps until e.g. "latency<=6ms" on the first target')
    kind: Literal[PRUNE_KINDS] = "structured"  # type: ignore[valid-type]
    heads: float | None = Field(None, ge=0, lt=1, description="also remove this fraction of attention heads")
    importance: Literal[("auto", *IMPORTANCES)] = "auto"  # type: ignore[valid-type]
    drop_layers: int = Field(0, ge=0, description="whole encoder layers removed, those the output misses least")
    fidelity: str | None = Field(
        None, description='with until: the fidelity floor, e.g. "cosine>=0.92" (the largest ratio keeping it wins)'
    )


class DistillSection(BaseModel):
    """``--distill`` and its options; present means distill (it needs ``prune``)."""

    model_config = _STRICT
    data: DataFile | None = None
    texts: PositiveInt = DISTILL_TEXTS
    epochs: PositiveInt = 3
    steps: PositiveInt | None = None
    time: str | None = Field(None, description='a time budget such as "20m"')
    loss: Literal[LOSSES] | None = None  # type: ignore[valid-type]
    lr: float = Field(1e-4, gt=0)
    batch_size: PositiveInt = 16
    hidden: bool | None = Field(
        None, description="match each layer's hidden states to its teacher layer's (default: transformer encoders)"
    )


class AutoDecision(BaseModel):
    """What ``--quantize auto`` chose for one target: replayed as is, without timing or searching again."""

    model_config = _STRICT
    target: str
    scheme: str = Field(description="fp32 (the base model), int8-dynamic, int8, int8-sym, int8-nncf or fp16")
    excluded_nodes: list[str] = Field(default_factory=list, description="nodes kept in float")


class QuantizeSection(BaseModel):
    model_config = _STRICT
    mode: Literal[CLI_MODES] = "int8"  # type: ignore[valid-type]
    calib_data: DataFile | None = None
    calib_samples: PositiveInt = 200
    calibration: Literal[CALIBRATION_METHODS] = "minmax"  # type: ignore[valid-type]
    fidelity: str | None = Field(None, description='the fidelity target, e.g. "cosine>=0.99" or "top1>=0.99"')
    decisions: list[AutoDecision] | None = Field(None, description="auto's recorded choices; remove to search again")


class Override(BaseModel):
    """A recipe value a command-line option replaced."""

    model_config = _STRICT
    key: str
    option: str
    recipe: Any = None
    value: Any = None


class Recorded(BaseModel):
    """Facts about how a resolved recipe came to be; read for the record, never acted on."""

    model_config = _STRICT
    recipe_file: str | None = None
    recipe_sha256: str | None = None
    overrides: list[Override] = Field(default_factory=list)
    source_changed_from: str | None = None
    replayable: bool = True
    not_replayable_because: str | None = None
    reproducibility: dict[str, str] = Field(default_factory=dict)


class Recipe(BaseModel):
    """A whole conversion. Paths are relative to the recipe file."""

    model_config = _STRICT
    version: Literal[1] = RECIPE_VERSION
    source: SourceRef
    output: str | None = Field(None, description="the artifact directory (``-o`` overrides it)")
    allow_pickle: bool = False
    inputs: list[str] = Field(default_factory=list, description="input specs NAME:DTYPE[DIM,...]")
    dims: dict[str, PositiveInt] = Field(default_factory=dict, description="example sizes of symbolic dims")
    output_kinds: dict[str, Literal[OUTPUT_KINDS]] = Field(default_factory=dict)  # type: ignore[valid-type]
    export: ExportSection = Field(default_factory=ExportSection)
    prune: PruneSection | None = None
    distill: DistillSection | None = None
    quantize: QuantizeSection | None = None
    targets: list[str] = Field(default_factory=list, description="runtimes to build and validate a variant for")
    validate_targets: list[str] = Field(default_factory=list, description="also validate the FP32 model on these")
    seed: int = Field(0, description="export's probe inputs, pruning, distillation and the calibration split")
    recorded: Recorded | None = Field(None, description="written by edgekit into a resolved recipe")

    @field_validator("source", mode="before")
    @classmethod
    def _bare_source(cls, value: Any) -> Any:
        return {"ref": value} if isinstance(value, str) else value


def recipe_schema() -> dict[str, Any]:
    """The published JSON Schema of a recipe (``edgekit recipe --schema``)."""
    return Recipe.model_json_schema()


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("quantize", "decisions", 0, "scheme")`` -> ``quantize.decisions[0].scheme``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _first_error(exc: PydanticValidationError) -> str:
    """The first schema error as ``key: what is wrong`` (unknown keys said plainly), and how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = first["loc"]
    what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    if first["type"] == "missing":
        what = "missing (required)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key_path(loc)}: {what}{more}"


def parse_recipe(data: Any, where: str) -> Recipe:
    """``data`` (a parsed YAML/JSON document) as a :class:`Recipe`; a schema error names its key."""
    if not isinstance(data, dict):
        raise InputError(f"recipe {where}: expected a mapping of keys (source, quantize, ...) at the top level")
    try:
        return Recipe.model_validate(data)
    except PydanticValidationError as exc:
        raise InputError(f"recipe {where}: {_first_error(exc)}") from None


def read_recipe(path: Path) -> tuple[Recipe, Path]:
    """The recipe in ``path`` (YAML, or an artifact's ``edgekit.json`` or its directory, whose resolved recipe is
    read) and the directory its relative paths start from."""
    from edgekit.artifact import MANIFEST_NAME

    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"recipe not found: {path}")
    text = _text_of(path)
    if path.suffix == ".json" or path.name == MANIFEST_NAME:
        return _recipe_in_json(text, path), path.parent
    return parse_recipe(_yaml_of(text, path), str(path)), path.parent


def _text_of(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"recipe {path}: cannot read it: {exc}") from None


def _yaml_of(text: str, path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise InputError(f"recipe {path}: not valid YAML{at}: {problem}") from None


def _recipe_in_json(text: str, path: Path) -> Recipe:
    """A manifest's resolved recipe, or a recipe written as JSON."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"recipe {path}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and "format_version" in data:  # an artifact's manifest
        if not isinstance(data.get("recipe"), dict):
            raise InputError(f"recipe {path}: this artifact's manifest records no recipe (made before recipes)")
        return parse_recipe(data["recipe"], f"{path} (its recipe)")
    return parse_recipe(data, str(path))


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML, keys in the schema's order; what ``edgekit recipe ARTIFACT`` prints."""
    import yaml

    return yaml.safe_dump(recipe_data(recipe), sort_keys=False, allow_unicode=True)


def recipe_data(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain JSON-ready data (what a manifest stores)."""
    return recipe.model_dump(mode="json")
