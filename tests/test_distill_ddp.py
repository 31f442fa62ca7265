"""DDP: two gloo processes started by torchrun train the same student as one process with the same global batch.

This file is also the worker torchrun starts (``python -m torch.distributed.run ... test_distill_ddp.py OUT``),
so both runs build their models and data from the same code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekit.converters.distill import DistillOptions, distill

STEPS = 8
GLOBAL_BATCH = 16


class MLP(nn.Module):
    """A tiny classifier; ``fc1`` is matched as an intermediate feature so projections train under DDP too."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _data(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    return [{"x": x[i : i + 10], "labels": labels[i : i + 10]} for i in range(0, n, 10)]


def train(out: Path) -> None:
    """Distill for a few steps (crossing an epoch, with evaluation) and save the student (rank 0).

    fp32 on purpose: the claim is step-for-step equality, and bf16 autocast (``auto`` on CPUs with native bf16)
    rounds a weight gradient summed over 8 rows differently from one summed over 16.
    """
    torch.manual_seed(0)
    teacher, student = MLP(32), MLP(8)
    options = DistillOptions(
        lr=1e-2, max_steps=STEPS, batch_size=GLOBAL_BATCH, seed=3, eval_every=4, features=(("fc1", "fc1"),),
        progress=False, warmup_ratio=0.25, precision="fp32",
    )  # fmt: skip
    result = distill(student, teacher, _data(70, 1), _data(30, 2), options)
    if os.environ.get("RANK", "0") == "0":
        torch.save(student.state_dict(), out)
        summary = {"world": result.world_size, "losses": [h["loss"] for h in result.history], "evals": result.evals}
        out.with_suffix(".json").write_text(json.dumps(summary))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_the_same_student_as_one(tmp_path: Path) -> None:
    ddp_out, single_out = tmp_path / "ddp.pt", tmp_path / "single.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), __file__, str(ddp_out),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): a shared CPU stalls multi-threaded tiny ops
    try:
        train(single_out)
    finally:
        torch.set_num_threads(threads)

    ddp, single = torch.load(ddp_out, weights_only=True), torch.load(single_out, weights_only=True)
    ddp_run = json.loads(ddp_out.with_suffix(".json").read_text())
    single_run = json.loads(single_out.with_suffix(".json").read_text())
    assert ddp_run["world"] == 2 and single_run["world"] == 1
    assert len(ddp_run["losses"]) == STEPS
    assert ddp_run["losses"] == pytest.approx(single_run["losses"], rel=1e-5, abs=1e-6)
    assert [e["fidelity"] for e in ddp_run["evals"]] == [e["fidelity"] for e in single_run["evals"]]
    assert ddp.keys() == single.keys()
    diff = max(float((ddp[k] - single[k]).abs().max()) for k in ddp)
    assert diff < 1e-5, f"DDP and single-process students differ by {diff}"
    torch.manual_seed(0)
    MLP(32)
    initial = MLP(8).state_dict()  # the student as train() built it, before distillation
    moved = max(float((single[k] - initial[k]).abs().max()) for k in single)
    assert moved > 1e-3, "the student did not train"


if __name__ == "__main__":
    train(Path(sys.argv[1]))
