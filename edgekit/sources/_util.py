"""Small helpers every source loader shares: JSON reading, file hashes, eval mode."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError, one_line

if TYPE_CHECKING:
    import torch

_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"{path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {one_line(exc)}") from exc


def file_sha256(path: Path) -> str:
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


def eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    """eval() mode; an ExportedProgram's module refuses eval() and keeps the mode it was exported in."""
    with contextlib.suppress(NotImplementedError):
        module.eval()
    return module
