"""The artifact: a directory holding the ONNX model, ``edgekit.json`` and what the model needs on a device.

Written into a temporary sibling directory and renamed into place (``edgekit.staging``), so an interrupted or
failed run never leaves a half artifact at the output path. Every file's sha256 is recorded; loading checks
them, so a model file modified after conversion is an error rather than a silent surprise. An artifact is
data: every path it names (``files``, ``model``, ``variants``, the external data of its ONNX files) goes
through :func:`edgekit.paths.confined_path` before anything reads it, and ``source.ref`` is never opened.
"""

from __future__ import annotations

import hashlib
import json
import platform
import posixpath
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from edgekit._version import __version__
from edgekit.errors import ArtifactError, ModelFormatError
from edgekit.paths import confined_path
from edgekit.specs import TensorSpec
from edgekit.staging import atomic_write as atomic_write  # the artifact's writers, re-exported for callers
from edgekit.staging import staging_dir as staging_dir

# the artifact's layout: every module that names a file in an artifact takes the name from here
MANIFEST_NAME = "edgekit.json"
MODEL_NAME = "model.onnx"
TOKENIZER_DIR = "tokenizer"  # what a text model needs on a device: tokenizer.json, vocab, configs
TOKENIZER_FILE = f"{TOKENIZER_DIR}/tokenizer.json"
FORMAT_VERSION = 1
_LIBRARIES = ("edgekit", "numpy", "onnx", "onnxruntime", "openvino", "torch", "transformers", "tensorrt")


class Stage(BaseModel):
    """One step of the pipeline (export, quantize, prune...) with its parameters and measured metrics."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class Source(BaseModel):
    """Where the model came from; a reference to re-load it only when the user names it again, never imported."""

    kind: str
    ref: str
    sha256: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)  # what the loader learned: architecture, HF config


class TextFacts(BaseModel):
    """How a text model's input is made, decided at convert time from the source's own configuration, so a
    device tokenizes exactly as the source did (``edgekit.text``)."""

    max_length: int | None = None  # tokens per text, specials included (sentence-transformers' max_seq_length)
    max_length_from: str = ""  # the file and key it was read from
    lowercase: bool = False  # the source lowercases texts before tokenizing (sentence-transformers do_lower_case)


# keys that older artifacts kept under ``extras`` before they became typed fields
_LEGACY_EXTRAS = ("int_ranges", "source")


class Manifest(BaseModel):
    """``edgekit.json``. ``format_version`` changes when a reader of the old format would misread it."""

    format_version: int = FORMAT_VERSION
    edgekit_version: str = ""
    created: str = ""
    source: Source
    model: str = MODEL_NAME
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    # what each output is, decided at convert time: "classifier" (top-1 applies), "embedding" or "tensor"
    output_kinds: dict[str, Literal["classifier", "embedding", "tensor"]] = Field(default_factory=dict)
    precision: str = "fp32"
    # per-target model files (``{"onnxruntime": "model.int8-dynamic.onnx"}``) and each variant's precision;
    # empty in artifacts without variants, where every target loads ``model``
    variants: dict[str, str] = Field(default_factory=dict)
    variant_precisions: dict[str, str] = Field(default_factory=dict)
    # per target, the CPU features an auto-chosen variant was fast because of (INT8: VNNI/AMX); where the CPU that
    # loads it has none of them, the base model is loaded instead (variant_for)
    variant_cpu_flags: dict[str, list[str]] = Field(default_factory=dict)
    opset: int = 0
    dynamic_dims: dict[str, PositiveInt] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)
    validation: dict[str, dict[str, Any]] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    platform: dict[str, str] = Field(default_factory=dict)
    # valid inclusive [low, high] of each integer input (token ids within the vocabulary, masks 1): random
    # feeds for timing and checks stay inside what the model was exported for
    int_ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)
    text: TextFacts | None = None  # a model with a tokenizer; None in artifacts from before edgekit recorded it
    # the conversion as a resolved recipe (edgekit.converters.recipe): what `edgekit recipe` prints and
    # `convert --recipe` replays; None in artifacts from before recipes
    recipe: dict[str, Any] | None = None
    extras: dict[str, Any] = Field(default_factory=dict)  # anything not (yet) a field of its own

    @field_validator("validation")
    @classmethod
    def _validation_reports_are_complete(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Each target's gate report says whether it passed, at which precision, with what worst cosine."""
        for target, report in value.items():
            missing = [k for k in ("passed", "precision", "min_cosine") if k not in report]
            if missing:
                raise ValueError(f"validation report for {target!r} lacks {', '.join(missing)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _typed_fields_from_extras(cls, data: Any) -> Any:
        """Artifacts written before ``int_ranges`` and ``source.metadata`` were fields kept them in ``extras``."""
        if not isinstance(data, dict) or not isinstance(data.get("extras"), dict):
            return data
        if not any(key in data["extras"] for key in _LEGACY_EXTRAS):
            return data
        data, extras = dict(data), dict(data["extras"])
        if "int_ranges" in extras:
            data.setdefault("int_ranges", extras.pop("int_ranges"))
        if "source" in extras and isinstance(data.get("source"), dict):
            data["source"] = {"metadata": extras.pop("source"), **data["source"]}
        data["extras"] = extras
        return data

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(d) for d in self.outputs]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read from metadata (imports nothing)."""
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def platform_facts() -> dict[str, str]:
    return {"python": platform.python_version(), "system": platform.system(), "machine": platform.machine()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``directory`` into the manifest and write ``edgekit.json``.

    Each name goes through the same confinement as on load, so a symlink out of the staging directory fails
    the convert instead of producing an artifact that no reader accepts.
    """
    directory = Path(directory)
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            rel = p.relative_to(directory).as_posix()
            files[rel] = sha256_of(confined_path(directory, rel, "files entry"))
    manifest = manifest.model_copy(update={"files": files})
    if not manifest.edgekit_version:
        manifest = manifest.model_copy(update={"edgekit_version": __version__})
    if not manifest.created:
        manifest = manifest.model_copy(update={"created": now_iso()})
    (directory / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"not an edgekit artifact (no {MANIFEST_NAME}): {directory}")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.model_validate(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, PydanticValidationError) as exc:
        raise ArtifactError(f"corrupt {MANIFEST_NAME} in {directory}: {str(exc).splitlines()[0]}") from exc
    if manifest.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format {manifest.format_version} is newer than this edgekit understands ({FORMAT_VERSION});"
            " upgrade edgekit"
        )
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raise :class:`ArtifactError` unless every path the manifest names is confined to ``directory``, every
    listed file is there with its recorded sha256, and the model and each variant are among those files."""
    directory = Path(directory)
    for rel, digest in manifest.files.items():
        _hashed_file(directory, rel, digest, "files entry")
    for label, rel in _model_entries(manifest):
        listed_path(directory, manifest, rel, label)


def listed_path(directory: Path, manifest: Manifest, rel: str, label: str) -> Path:
    """The path of ``rel`` in the artifact, refused unless it is confined and listed (hashed) in ``files``."""
    path = confined_path(directory, rel, label)
    if rel not in manifest.files:
        raise ArtifactError(f"{label} {rel!r} is not among the artifact's hashed files, so it cannot be verified")
    return path


def artifact_file(directory: Path, manifest: Manifest, rel: str, label: str) -> Path:
    """A file the manifest lists, confined and with its hash checked now: for readers that open one file."""
    listed_path(directory, manifest, rel, label)
    return _hashed_file(Path(directory), rel, manifest.files[rel], label)


def _hashed_file(directory: Path, rel: str, digest: str, label: str) -> Path:
    path = confined_path(directory, rel, label)
    if not path.is_file():
        raise ArtifactError(f"artifact file missing: {path} ({label} {rel!r})")
    if sha256_of(path) != digest:
        raise ArtifactError(f"artifact file was modified after conversion (sha256 mismatch): {path} ({label} {rel!r})")
    return path


def _model_entries(manifest: Manifest) -> list[tuple[str, str]]:
    """Each model file the manifest names, with the label an error shows for it."""
    return [("model", manifest.model), *((f"variants[{t!r}]", f) for t, f in manifest.variants.items())]


def variant_for(manifest: Manifest, target: str | None, variant: str | None = None) -> str:
    """The model file a target should load: ``variant`` if given (a file name or a mode such as ``int8``), else
    the target's variant from the manifest, else the base model."""
    if variant is None:
        chosen = manifest.variants.get(target or "", manifest.model)
        return chosen if cpu_can_run_fast(manifest, target) else manifest.model
    files = {manifest.model, *manifest.variants.values()}
    for name in (variant, f"model.{variant}.onnx"):
        if name in files:
            return name
    if variant in ("fp32", "none", "base"):
        return manifest.model
    raise ArtifactError(f"artifact has no variant {variant!r}; it has: {', '.join(sorted(files))}")


def cpu_can_run_fast(manifest: Manifest, target: str | None) -> bool:
    """Whether this CPU has what ``target``'s variant was judged and timed with (any of the recorded flags).

    An INT8 variant made on a VNNI CPU may run slower than FP32 on one without, and lose fidelity (the INT8
    kernels there saturate with its 8-bit weights): the base model (the recorded alternative) is loaded instead, with a
    warning; ``variant=`` still loads it explicitly."""
    from edgekit.cpu import numeric_cpu_flags

    needed = manifest.variant_cpu_flags.get(target or "")
    if not needed or set(needed) & set(numeric_cpu_flags()):
        return True
    warnings.warn(
        f"{target}'s variant {manifest.variants.get(target or '')} was chosen on a CPU with {', '.join(needed)}; this"
        f" CPU has none of them (INT8 is slower without them and can saturate), so the base model"
        f" {manifest.model} is loaded; convert on such a CPU for a variant judged there, or pass variant= to force it",
        stacklevel=3,
    )
    return False


def artifact_model(directory: Path, manifest: Manifest, rel: str) -> Path:
    """The model file ``rel`` of a verified artifact, once its external data is confined and hashed too.

    The ONNX file itself names its external data, so a hashed model could still point a runtime at any file;
    each location must be one of the artifact's hashed files.
    """
    from edgekit.onnxfile import external_data_of

    directory = Path(directory)
    label = next((lb for lb, f in _model_entries(manifest) if f == rel), "model")
    path = listed_path(directory, manifest, rel, label)
    for data in external_data_of(path):
        data_rel = posixpath.normpath(data.relative_to(directory).as_posix())
        listed_path(directory, manifest, data_rel, f"external data of {label} {rel!r}")
    return path


def find_model(path: Path, target: str | None = None, variant: str | None = None) -> tuple[Path, Manifest | None]:
    """Resolve a user path (artifact directory or bare ``.onnx``) to the ONNX file and its manifest.

    For an artifact every path and hash is verified first, and the file is the one ``target`` (or ``variant``)
    selects, the base model by default; this path is the one a runtime then loads.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"model not found: {path}")
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            manifest = read_manifest(path)
            verify_files(path, manifest)
            return artifact_model(path, manifest, variant_for(manifest, target, variant)), manifest
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) == 1:
            return candidates[0], None
        if not candidates:
            raise ModelFormatError(f"no model in directory {path} (expected {MANIFEST_NAME} or one .onnx file)")
        raise ModelFormatError(f"several .onnx files in {path}; name one of them")
    return path, None


def describe_model(path: Path) -> dict[str, Any]:
    """What ``edgekit inspect`` shows: the ONNX model's facts, and for an artifact what its manifest records.

    An artifact's model was checked when it was written and :func:`find_model` verifies its hash, so the slow
    ONNX checker runs only on a bare file.
    """
    from edgekit.onnxfile import model_summary, read_onnx

    onnx_path, manifest = find_model(Path(path))
    summary = model_summary(read_onnx(onnx_path, check=manifest is None), onnx_path)
    if manifest is not None:
        summary["manifest"] = {
            "source": manifest.source.model_dump(),
            "created": manifest.created,
            "edgekit_version": manifest.edgekit_version,
            "stages": [s.name for s in manifest.stages],
            "validation": {
                t: {k: r[k] for k in ("passed", "precision", "min_cosine")} for t, r in manifest.validation.items()
            },
            "files": len(manifest.files),
        }
    return summary
