"""The artifact: a directory holding the ONNX model, ``edgekit.json`` and what the model needs on a device.

Written into a temporary sibling directory and renamed into place, so an interrupted or failed run never
leaves a half artifact at the output path. Every file's sha256 is recorded; loading checks them, so a model
file modified after conversion is an error rather than a silent surprise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from edgekit._version import __version__
from edgekit.errors import ArtifactError, ModelFormatError, OutputError
from edgekit.specs import TensorSpec

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
    opset: int = 0
    dynamic_dims: dict[str, int] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)
    validation: dict[str, dict[str, Any]] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    platform: dict[str, str] = Field(default_factory=dict)
    # valid inclusive [low, high] of each integer input (token ids within the vocabulary, masks 1): random
    # feeds for timing and checks stay inside what the model was exported for
    int_ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)
    extras: dict[str, Any] = Field(default_factory=dict)  # anything not (yet) a field of its own

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


@contextlib.contextmanager
def staging_dir(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh directory next to ``out``; on success move it to ``out`` atomically, else delete it.

    Fails before any work when ``out`` cannot be written, or exists (unless ``force``), so nothing of the
    user's is ever lost or half-overwritten.
    """
    out = Path(out).absolute()
    if out.exists() and not force:
        raise OutputError(f"output path already exists: {out} (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path exists and is not a directory: {out}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write output directory {out}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(f)`` into a temporary sibling, then rename: readers never see half a file.

    An unwritable location is an :class:`OutputError`; the file gets ordinary permissions (umask), not
    mkstemp's 0600.
    """
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    backup.rmdir()
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``directory`` into the manifest and write ``edgekit.json``."""
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME:
            files[p.relative_to(directory).as_posix()] = sha256_of(p)
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
    except (json.JSONDecodeError, UnicodeDecodeError, PydanticValidationError) as exc:
        raise ArtifactError(f"corrupt {MANIFEST_NAME} in {directory}: {str(exc).splitlines()[0]}") from exc
    if manifest.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"artifact format {manifest.format_version} is newer than this edgekit understands ({FORMAT_VERSION});"
            " upgrade edgekit"
        )
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Raise :class:`ArtifactError` when a recorded file is missing or its content changed."""
    for rel, digest in manifest.files.items():
        p = Path(directory) / rel
        if not p.is_file():
            raise ArtifactError(f"artifact file missing: {p}")
        if sha256_of(p) != digest:
            raise ArtifactError(f"artifact file was modified after conversion (sha256 mismatch): {p}")


def variant_for(manifest: Manifest, target: str | None, variant: str | None = None) -> str:
    """The model file a target should load: ``variant`` if given (a file name or a mode such as ``int8``), else
    the target's variant from the manifest, else the base model."""
    if variant is None:
        return manifest.variants.get(target or "", manifest.model)
    files = {manifest.model, *manifest.variants.values()}
    for name in (variant, f"model.{variant}.onnx"):
        if name in files:
            return name
    if variant in ("fp32", "none", "base"):
        return manifest.model
    raise ArtifactError(f"artifact has no variant {variant!r}; it has: {', '.join(sorted(files))}")


def find_model(path: Path) -> tuple[Path, Manifest | None]:
    """Resolve a user path (artifact directory or bare ``.onnx``) to the ONNX file and its manifest."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"model not found: {path}")
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            manifest = read_manifest(path)
            verify_files(path, manifest)
            model = path / manifest.model
            if not model.is_file():
                raise ArtifactError(f"artifact names model {manifest.model!r} but it is missing in {path}")
            return model, manifest
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
                t: {"passed": r["passed"], "precision": r["precision"], "min_cosine": r["min_cosine"]}
                for t, r in manifest.validation.items()
            },
            "files": len(manifest.files),
        }
    return summary
