"""Channel pruning on a CNN trained on a real dataset that ships offline (scikit-learn's digits).

Trains a small CNN, prunes 50% of its conv channels with each importance (no distillation: this measures what
pruning alone costs), and reports test accuracy, parameters, MACs and ONNX Runtime latency (batch 1, every
model in its own process, models alternating within each round).

    .venv/bin/python benchmarks/prune_cnn.py [--ratio 0.5] [--epochs 15] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.benchmark.measure import Candidate, measure_latency
from edgekit.benchmark.plan import BenchConfig
from edgekit.converters.prune import PruneOptions, PruneResult, prune_module
from edgekit.converters.prune.timing import export_for_timing


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """8x8 digit images scaled to [0, 1], split 75/25 with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, data.target, test_size=0.25, random_state=0, stratify=data.target)
    return torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te)


def make_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )  # fmt: skip


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def run(ratio: float, epochs: int) -> dict[str, Any]:
    x_tr, y_tr, x_te, y_te = digits()
    teacher = train(make_cnn(), x_tr, y_tr, epochs)
    example = {"input": x_te[:1]}
    data = [{"input": x_tr[i : i + 64]} for i in range(0, 512, 64)]
    results: dict[str, PruneResult] = {
        imp: prune_module(teacher, example, PruneOptions(ratio, importance=imp), data) for imp in ("l1", "l2", "taylor")
    }
    rows = {"teacher": {"accuracy": accuracy(teacher, x_te, y_te), "params": None, "macs": None}}
    for imp, res in results.items():
        rows[f"pruned-{imp}"] = {"accuracy": accuracy(res.module, x_te, y_te), "params": res.params_after,
                                 "macs": res.macs_after}  # fmt: skip
    first = next(iter(results.values()))
    rows["teacher"].update(params=first.params_before, macs=first.macs_before)
    models = {"teacher": teacher, **{f"pruned-{imp}": r.module for imp, r in results.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        jobs, feeds = [], {}
        for key, model in models.items():
            path = Path(tmp) / f"{key}.onnx"
            feeds = export_for_timing(model, example, None, path)
            jobs.append(Candidate(key, path, "onnxruntime"))
        timing = BenchConfig(warmup_iterations=20, iterations=200, duration_s=1.0, rounds=3, cold_start=False)
        latency = measure_latency(jobs, feeds, timing)
    for key, lat in latency.items():
        rows[key]["ort_p50_ms"] = round(lat.p50_ms, 4)
    return {"ratio": ratio, "epochs": epochs, "test_samples": len(y_te), "rows": rows,
            "plan_layers": results["l1"].plan["layers"]}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    lines = ["| model | test accuracy | params | MACs | ORT p50 ms (batch 1) |", "|---|---|---|---|---|"]
    for key, row in result["rows"].items():
        lines.append(f"| {key} | {row['accuracy']:.4f} | {row['params']:,} | {row['macs']:,} | {row['ort_p50_ms']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny batches: more threads only fight over a shared machine's cores
    result = run(args.ratio, args.epochs)
    print(table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
