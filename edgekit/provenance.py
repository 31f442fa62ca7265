"""Where a model came from, found and hashed without importing or running anything.

The source loaders record a sha256 when they load a source; ``edgekit bench --trust-source`` recomputes it
here the same way before it runs the recorded source. Both use these functions, so the two cannot drift.
A hash detects corruption and accidental edits; it does not stop someone who can rewrite the manifest too.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import re
import sys
import zipfile
from pathlib import Path

from edgekit.errors import SourceError, one_line

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_FILE_KINDS = ("exported_program", "torchscript", "pickle")
_DIR_KINDS = ("huggingface", "sentence_transformers")
# every kind of PyTorch source a loader records (an artifact converted from an ONNX file records "onnx")
SOURCE_KINDS = ("python", *_FILE_KINDS, *_DIR_KINDS)
_TORCH_FILE_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".jit", ".bin", ".pkl", ".ckpt"}


def split_factory(text: str) -> tuple[str, str] | None:
    """``(target, function)`` for ``target:function``, else None (a bare path or a Windows drive letter)."""
    head, sep, func = text.rpartition(":")
    if not sep or not head or not _DOTTED.fullmatch(func):
        return None
    return head, func


def names_factory(text: str) -> bool:
    """Whether ``text`` reads as ``FILE.py:FUNCTION`` or ``package.module:FUNCTION``."""
    factory = split_factory(text)
    return factory is not None and (factory[0].endswith(".py") or bool(_DOTTED.fullmatch(factory[0])))


def file_sha256(path: Path) -> str:
    """sha256 of one file, read in blocks so a multi-GB checkpoint is not held in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(directory: Path) -> str | None:
    """sha256 of the single weights file, or of ``sha256  relative/path`` lines when there are several."""
    files = sorted({p for pattern in _WEIGHT_GLOBS for p in directory.rglob(pattern) if p.is_file()})
    if not files:
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{file_sha256(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def module_file(dotted: str) -> Path | None:
    """The file ``import dotted`` would execute, located by the import finders alone: no package's
    ``__init__`` runs, unlike ``importlib.util.find_spec``, which imports the parents of a dotted name."""
    parts = dotted.split(".")
    search: list[str] | None = None
    spec = None
    for depth in range(1, len(parts) + 1):
        if depth > 1 and search is None:
            return None  # a parent that is a module, not a package, has no submodules
        spec = _find_spec(".".join(parts[:depth]), search)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        search = list(locations) if locations is not None else None
    if spec is None or not spec.has_location or not spec.origin:
        return None
    return Path(spec.origin)


def _find_spec(name: str, search: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    """Ask each finder on ``sys.meta_path``, as an import would, without loading what it finds."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        found = find(name, search) if find is not None else None
        if found is not None:
            return found
    return None


def source_location(ref: str) -> Path | None:
    """The file or directory a source reference names (a factory's .py file, a module's file, a model file
    or directory), or None when there is none here."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    factory = split_factory(ref)
    if factory is None or not names_factory(ref):
        return None
    target = factory[0]
    if target.endswith(".py"):
        file = Path(target).expanduser()
        return file if file.is_file() else None
    return module_file(target)


def source_sha256(kind: str, ref: str) -> str | None:
    """The sha256 a loader of ``kind`` records for ``ref``, recomputed from what is on disk now; None when
    there is nothing to hash (the file is gone, a directory holds no weights)."""
    where = source_location(ref)
    if where is None:
        return None
    if kind in _DIR_KINDS:
        return weights_sha256(where) if where.is_dir() else None
    if kind in SOURCE_KINDS:
        return file_sha256(where) if where.is_file() else None
    return None


def file_kind(path: Path) -> str:
    """The kind of a model file, from its suffix and header alone: nothing is loaded or unpickled."""
    if path.suffix == ".py":
        raise SourceError(f"{path} is a Python file: name the function that builds the model, e.g. {path}:make")
    if zipfile.is_zipfile(path):
        names = _zip_names(path)
        if any(n.endswith("archive_format") or n.endswith("models/model.json") for n in names):
            return "exported_program"
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        return "pickle"
    if path.suffix == ".pt2":
        return "exported_program"  # not a zip: loading reports it as corrupt
    if path.suffix in _TORCH_FILE_SUFFIXES or _starts_like_pickle(path):
        return "pickle"
    raise SourceError(
        f"{path} is not a model source: expected a .pt2/.pt/.pth file, a model directory or FILE.py:FUNCTION"
    )


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"cannot read {path}: {one_line(exc)}") from exc


def _starts_like_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"
