"""``edgekit convert --recipe``: run a recipe, or replay the resolved recipe an artifact recorded.

Before any slow work: the recipe's paths are resolved against its own directory, command-line overrides are
applied (and recorded), the source's recorded sha256 is checked (a mismatch is refused unless
``allow_source_change``) and so is every data file's. Then the recipe runs as one :func:`edgekit.convert` call,
which stores the resolved recipe in the new artifact's manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgekit.artifact import Manifest
from edgekit.converters.recipe import DataFile, Override, Recipe, Recorded, parse_recipe, read_recipe
from edgekit.converters.recipe_options import RecipeCall, options_of
from edgekit.errors import EdgekitError, InputError, SourceError
from edgekit.provenance import file_sha256, module_file, names_factory, source_sha256, split_factory

ProgressFn = Callable[[str], None]
# convert's options (by parameter name) and the recipe keys they override
OPTION_KEYS = {
    "source": "source.ref", "inputs": "inputs", "dims": "dims", "opset": "export.opset",
    "exporter": "export.exporter", "allow_pickle": "allow_pickle", "validate_target": "validate_targets",
    "quantize": "quantize.mode", "calib_data": "quantize.calib_data", "calib_samples": "quantize.calib_samples",
    "calibration": "quantize.calibration", "fidelity": "quantize.fidelity", "output_kind": "output_kinds",
    "target": "targets", "prune": "prune.ratio", "prune_until": "prune.until", "prune_kind": "prune.kind",
    "prune_heads": "prune.heads", "prune_importance": "prune.importance", "distill": "distill",
    "distill_data": "distill.data", "distill_texts": "distill.texts", "distill_epochs": "distill.epochs",
    "distill_steps": "distill.steps", "distill_time": "distill.time", "distill_loss": "distill.loss",
    "distill_lr": "distill.lr", "drop_layers": "prune.drop_layers", "distill_hidden": "distill.hidden",
    "seed": "seed",
}  # fmt: skip
_PATH_KEYS = ("source.ref", "quantize.calib_data", "distill.data")  # command-line paths: relative to the cwd


def convert_recipe(
    path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
    overrides: Mapping[str, tuple[str, Any]] | None = None, allow_source_change: bool = False, force: bool = False,
    progress: ProgressFn | None = None,
) -> Manifest:  # fmt: skip
    """Convert as the recipe at ``path`` says (a YAML recipe, or an artifact's ``edgekit.json``).

    ``overrides`` maps convert's option names to ``(flag, value)`` as given on the command line; each replaces
    the recipe's value and is recorded in the manifest.
    """
    from edgekit.converters.pipeline import convert

    where = str(path)
    recipe, base = read_recipe(Path(path))
    recipe = resolved_paths(recipe, base)
    recipe, applied = with_overrides(recipe, overrides or {}, where)
    _require_replayable(recipe, applied, where)
    changed_from = checked_source(recipe, where, allow_source_change)
    check_data_files(recipe, where)
    output = Path(out) if out is not None else Path(recipe.output) if recipe.output else None
    if output is None:
        raise InputError(f"recipe {where}: no output: give -o OUT or output: in the recipe")
    try:
        opts = options_of(recipe)
    except InputError as exc:
        raise InputError(f"recipe {where}: {exc}") from None
    recipe_file = Path(path) if Path(path).is_file() else None
    recorded = Recorded(
        recipe_file=str(Path(path).resolve()), recipe_sha256=file_sha256(recipe_file) if recipe_file else None,
        overrides=applied, source_changed_from=changed_from,
    )  # fmt: skip
    call = RecipeCall(recipe.model_copy(update={"output": str(output.resolve()), "recorded": None}), recorded)
    return convert(
        recipe.source.ref, output, export=opts.export, quantize=opts.quantize, compress=opts.compress,
        validate_targets=opts.validate_targets, kinds=opts.kinds, allow_pickle=opts.allow_pickle, force=force,
        progress=progress, recipe=call,
    )  # fmt: skip


def resolved_paths(recipe: Recipe, base: Path) -> Recipe:
    """Every path in ``recipe`` made absolute: relative ones start at ``base`` (the recipe's directory), a source
    ``in_package`` at that installed package's directory."""
    source = recipe.source
    root = _package_dir(source.in_package) if source.in_package else base
    ref = _ref_at(source.ref, root)
    update: dict[str, Any] = {"source": source.model_copy(update={"ref": ref, "in_package": None})}
    if recipe.output is not None:
        update["output"] = str((base / recipe.output).resolve())
    if recipe.quantize is not None and recipe.quantize.calib_data is not None:
        calib = _data_at(recipe.quantize.calib_data, base)
        update["quantize"] = recipe.quantize.model_copy(update={"calib_data": calib})
    if recipe.distill is not None and recipe.distill.data is not None:
        update["distill"] = recipe.distill.model_copy(update={"data": _data_at(recipe.distill.data, base)})
    return recipe.model_copy(update=update)


def _package_dir(name: str) -> Path:
    """The directory of an installed package, found without importing it."""
    init = module_file(name)
    if init is None:
        raise InputError(f"source.in_package: no installed Python package {name!r}")
    return init.parent


def _ref_at(ref: str, root: Path) -> str:
    factory = split_factory(ref)
    if factory is not None and names_factory(ref) and factory[0].endswith(".py"):
        return f"{(root / Path(factory[0]).expanduser()).resolve()}:{factory[1]}"
    if (root / ref).exists() or not names_factory(ref):
        return str((root / Path(ref).expanduser()).resolve())
    return ref  # package.module:FUNCTION


def _data_at(data: DataFile, base: Path) -> DataFile:
    return data.model_copy(update={"path": str((base / Path(data.path).expanduser()).resolve())})


def with_overrides(
    recipe: Recipe, overrides: Mapping[str, tuple[str, Any]], where: str
) -> tuple[Recipe, list[Override]]:
    """``recipe`` with each command-line option's value in place of the recipe's, and the list of what changed."""
    data = recipe.model_dump(mode="json")
    applied = []
    for name, (flag, value) in overrides.items():
        key = OPTION_KEYS.get(name)
        if key is None:
            continue
        value = _override_value(key, value)
        old = _set_key(data, key, value)
        applied.append(Override(key=key, option=flag, recipe=old, value=value))
        if key == "source.ref":
            data["source"].update(kind=None, sha256=None)  # another source: nothing recorded applies to it
    if isinstance(data.get("quantize"), dict) and data["quantize"].get("mode") == "none":
        data["quantize"] = None
    return parse_recipe(data, f"{where} (with command-line options)"), applied


def _override_value(key: str, value: Any) -> Any:
    """A command-line value in the recipe's form: sizes and kinds as mappings, paths absolute."""
    from edgekit.fidelity import parse_output_kinds
    from edgekit.specs import parse_dim_sizes

    if key == "dims":
        return parse_dim_sizes(value)
    if key == "output_kinds":
        return parse_output_kinds(value)
    if key in _PATH_KEYS and value is not None:
        path = Path(os.fspath(value)).expanduser()
        return str(path.resolve()) if path.exists() or key != "source.ref" else os.fspath(value)
    return list(value) if isinstance(value, list | tuple) else value


def _set_key(data: dict[str, Any], key: str, value: Any) -> Any:
    """Set ``a.b`` in ``data`` (creating a missing section), returning the value it replaces. A section key
    (``distill``) set to true creates the section with its defaults."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    old = node.get(last)
    if value is True and last == "distill":
        node[last] = old if isinstance(old, dict) else {}
    else:
        node[last] = value
    return old


def _require_replayable(recipe: Recipe, applied: list[Override], where: str) -> None:
    """A recorded conversion whose data lived only in memory cannot be replayed unless that data is given now."""
    rec = recipe.recorded
    if rec is None or rec.replayable:
        return
    if any(o.key in ("quantize.calib_data", "distill.data") for o in applied):
        return
    raise InputError(f"recipe {where}: cannot be replayed: {rec.not_replayable_because}; give the data as a file")


def current_source_sha256(kind: str, ref: str) -> str | None:
    """The sha256 the loader of ``kind`` would record for ``ref`` now (an ONNX source: the file's)."""
    if kind == "onnx":
        path = Path(ref)
        return file_sha256(path) if path.is_file() else None
    return source_sha256(kind, ref)


def checked_source(recipe: Recipe, where: str, allow_change: bool) -> str | None:
    """Refuse a source whose sha256 differs from the recorded one (unless ``allow_change``); returns the recorded
    sha256 when a change was allowed, for the record."""
    src = recipe.source
    if src.sha256 is None:
        return None
    kind = src.kind or _kind_of(src.ref, where)
    now = current_source_sha256(kind, src.ref)
    if now == src.sha256:
        return None
    if now is None:
        raise SourceError(f"recipe {where}: source: {src.ref} is missing or has nothing to hash (sha256 recorded)")
    if not allow_change:
        raise SourceError(
            f"recipe {where}: source: {src.ref} has changed since the recipe was recorded (sha256 {src.sha256[:12]}"
            f" recorded, {now[:12]} now); pass --allow-source-change to convert it anyway"
        )
    return src.sha256


def _kind_of(ref: str, where: str) -> str:
    from edgekit.sources import source_kind

    if ref.endswith(".onnx"):
        return "onnx"
    try:
        return source_kind(ref)
    except EdgekitError as exc:
        raise SourceError(f"recipe {where}: source: {exc}") from None


def check_data_files(recipe: Recipe, where: str) -> None:
    """Every data file the recipe names exists, and still has the sha256 recorded for it."""
    from edgekit.converters.recipe_options import data_sha256

    files = {"quantize.calib_data": recipe.quantize.calib_data if recipe.quantize else None,
             "distill.data": recipe.distill.data if recipe.distill else None}  # fmt: skip
    for key, data in files.items():
        if data is None:
            continue
        path = Path(data.path)
        if not path.exists():
            raise InputError(f"recipe {where}: {key}: data file not found: {path}")
        if data.sha256 is not None and data_sha256(path) != data.sha256:
            raise InputError(
                f"recipe {where}: {key}: {path} has changed since the recipe was recorded (sha256 mismatch); remove"
                f" its sha256 from the recipe to accept the new data"
            )
