"""Where a distillation run stands: the process group it belongs to, and checkpoints it can resume from.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and a rendezvous address; with more than one process
the trainer joins (or reuses) a process group: nccl when it trains on CUDA, gloo otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from edgekit.errors import InputError, one_line

CHECKPOINT = "last.pt"
FORMAT = 1


@dataclass
class Distributed:
    """This process's place in the run: rank, world size and the device it trains on."""

    rank: int
    world: int
    device: torch.device
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str | None) -> Distributed:
        """Join the process group torchrun describes (if any), on nccl for CUDA and gloo for CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        where = torch.device(device)
        if where.type == "cuda":
            torch.cuda.set_device(where)
        created = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
            created = True
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), where, created)
        return cls(0, 1, where, False)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over every process (identity in a single process)."""
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.cpu()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group only if this run created it."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()


def save_atomically(obj: Any, path: Path) -> None:
    """torch.save to a temporary file next to ``path``, then rename: a crash never leaves half a file."""
    from edgekit.artifact import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / CHECKPOINT


def load_checkpoint(directory: str | os.PathLike[str], fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (None when there is none); one that belongs to another run is an error."""
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read checkpoint {path}: {one_line(exc)}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not an edgekit distillation checkpoint (format {FORMAT})")
    for key, value in fingerprint.items():
        if state["fingerprint"].get(key) != value:
            saved = state["fingerprint"].get(key)
            raise InputError(f"checkpoint {path} was made with {key}={saved!r}, this run has {key}={value!r}")
    return state


# ---------------------------------------------------------------------------------------------- progress


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def __call__(self, step: int, loss: float, last_eval: dict[str, float] | None) -> None:
        fid = f"{last_eval['fidelity']:.4f}" if last_eval else "-"
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", fidelity=fid)


class progress_bar:  # a context manager, named like the function it acts as
    """A rich progress bar with the loss and the latest fidelity on stderr, drawn only on a terminal (as bench's)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done
        self.progress: Any = None

    def __enter__(self) -> Callable[[int, float, dict[str, float] | None], None]:
        if not self.enabled:
            return lambda *_: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("distill"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("fidelity {task.fields[fidelity]}"), TimeRemainingColumn(),
        )  # fmt: skip
        console = Console(stderr=True)
        self.progress = Progress(*columns, console=console, disable=not console.is_terminal)
        self.progress.start()
        task = self.progress.add_task("distill", total=self.total, completed=self.done, loss="-", fidelity="-")
        return _Bar(self.progress, task)

    def __exit__(self, *_: object) -> None:
        if self.progress is not None:
            self.progress.stop()
