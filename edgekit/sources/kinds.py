"""Deciding what kind of source a reference names, from its form and file headers, without loading it."""

from __future__ import annotations

import zipfile
from pathlib import Path

from edgekit.errors import SourceError, one_line

_TORCH_FILE_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".jit", ".bin", ".pkl", ".ckpt"}


def dir_kind(path: Path) -> str:
    if (path / "modules.json").is_file():
        return "sentence_transformers"
    if (path / "config.json").is_file():
        return "huggingface"
    raise SourceError(
        f"directory {path} is not a model: a Hugging Face model has config.json, a sentence-transformers model "
        "has modules.json"
    )


def file_kind(path: Path) -> str:
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
