"""Deciding what kind of source a reference names, from its form and file headers, without loading it."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import SourceError
from edgekit.provenance import file_kind as file_kind  # in core, so bench can tell a pickle before it runs one


def dir_kind(path: Path) -> str:
    if (path / "modules.json").is_file():
        return "sentence_transformers"
    if (path / "config.json").is_file():
        return "huggingface"
    raise SourceError(
        f"directory {path} is not a model: a Hugging Face model has config.json, a sentence-transformers model "
        "has modules.json"
    )
