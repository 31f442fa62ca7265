"""Small helpers every source loader shares: JSON reading, eval mode (hashes are in ``edgekit.provenance``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError, one_line

if TYPE_CHECKING:
    import torch


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"{path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {one_line(exc)}") from exc


def eval_mode(module: torch.nn.Module) -> torch.nn.Module:
    """eval() mode; an ExportedProgram's module refuses eval() and keeps the mode it was exported in."""
    with contextlib.suppress(NotImplementedError):
        module.eval()
    return module
