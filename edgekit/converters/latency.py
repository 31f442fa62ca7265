"""Latency of candidate models on their target, each measurement in a fresh process, candidates alternating.

Why a process each: ONNX Runtime's spinning threads and OpenVINO steal each other's cores inside one process
(REFERENCE.md measured 8.4 ms -> 27.8 ms), and the converting process holds torch and a calibration session.
Why alternate (A B C A B C): the machine is shared and noisy; a ratio measured in the same rounds is what
holds. Run as ``python -m edgekit.converters.latency REQUEST.json``; the JSON result is the last stdout line.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendError


@dataclass(frozen=True)
class LatencyOptions:
    """How long to time each candidate. ``rounds`` > 1 alternates candidates and reports the median round."""

    warmup: int = 5
    min_iterations: int = 10
    duration_s: float = 1.0
    rounds: int = 2
    threads: int | None = None
    timeout_s: float = 300.0


@dataclass(frozen=True)
class LatencyJob:
    key: str
    model: Path
    target: str


@dataclass
class Latency:
    """Per-round p50s and the headline (median of them), in milliseconds."""

    p50_ms: float
    p90_ms: float
    rounds_p50_ms: list[float] = field(default_factory=list)
    iterations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure(jobs: Sequence[LatencyJob], feeds: dict[str, np.ndarray], work_dir: Path, options: LatencyOptions) -> dict:
    """``{job.key: Latency}``; every job runs once per round, in its own process, in alternating order."""
    feeds_path = work_dir / "latency_feeds.npz"
    np.savez(feeds_path, **feeds)
    runs: dict[str, list[dict[str, Any]]] = {j.key: [] for j in jobs}
    for _ in range(options.rounds):
        for job in jobs:
            runs[job.key].append(_run_worker(job, feeds_path, options))
    return {key: _combine(r) for key, r in runs.items()}


def _run_worker(job: LatencyJob, feeds_path: Path, options: LatencyOptions) -> dict[str, Any]:
    request = {"model": str(job.model), "target": job.target, "feeds": str(feeds_path), **asdict(options)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgekit.converters.latency", json.dumps(request)],
            capture_output=True, text=True, timeout=options.timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"latency measurement of {job.model.name} on {job.target} timed out") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise BackendError(f"latency measurement of {job.model.name} on {job.target} failed: {tail}")
    return json.loads(lines[-1])


def _combine(runs: list[dict[str, Any]]) -> Latency:
    p50s = [r["p50_ms"] for r in runs]
    return Latency(
        p50_ms=float(statistics.median(p50s)),
        p90_ms=float(statistics.median(r["p90_ms"] for r in runs)),
        rounds_p50_ms=[round(p, 4) for p in p50s],
        iterations=sum(r["iterations"] for r in runs),
    )


def time_session(run: Any, feeds: dict[str, np.ndarray], warmup: int, min_iterations: int, duration_s: float) -> dict:
    """Single-stream loop: warm up, then time at least ``min_iterations`` and at least ``duration_s``."""
    for _ in range(warmup):
        run(feeds)
    times: list[float] = []
    deadline = time.perf_counter() + duration_s
    while len(times) < min_iterations or time.perf_counter() < deadline:
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "iterations": len(times)}  # fmt: skip


def _worker(request: dict[str, Any]) -> dict[str, Any]:
    from edgekit.api import load
    from edgekit.api import model_ref as _ref

    with np.load(request["feeds"], allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    with load(_ref(request["model"]), target=request["target"], threads=request.get("threads")) as session:
        result = time_session(session.run, feeds, request["warmup"], request["min_iterations"], request["duration_s"])
        result["precision"] = session.info().precision
    return result


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))), flush=True)
