"""Facts that make numbers comparable: the machine (CPU, cores, versions) and the method (how it was timed)."""

from __future__ import annotations

import os
import platform
from typing import Any

from edgekit.benchmark.plan import BenchConfig
from edgekit.benchmark.stats import HIGH_CV, PERCENTILE_METHOD
from edgekit.cpu import NUMERIC_CPU_FLAGS, cpu_model, numeric_cpu_flags

__all__ = ["NUMERIC_CPU_FLAGS", "cpu_model", "machine_facts", "method_facts", "numeric_cpu_flags"]


def machine_facts() -> dict[str, Any]:
    from edgekit.artifact import library_versions

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": numeric_cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def method_facts(config: BenchConfig) -> dict[str, Any]:
    ort = config.target_options.get("onnxruntime", {})
    spinning = (
        f"allow_spinning={ort['allow_spinning']} (set by the caller)"
        if "allow_spinning" in ort
        else "ONNX Runtime default (intra-op threads spin after each run); harmless here because every target"
        " is timed alone in its own process, one process at a time"
    )
    headline = "p90 latency of a single-stream loop (one request at a time)"
    if config.mode == "throughput":
        headline = "items/s with batches (OpenVINO: AsyncInferQueue, THROUGHPUT hint; others: synchronous loop)"
    facts = {
        "mode": config.mode,
        "headline": headline,
        "percentiles": PERCENTILE_METHOD,
        "std": "sample standard deviation (ddof=1)",
        "cv": "std / mean",
        "cv_warning_above": HIGH_CV,
        "rounds": config.rounds,
        "order": "rounds alternate across rows (A B C A B C ...), one process at a time",
        "isolation": "one fresh process per measurement (python -m edgekit.benchmark.worker)",
        "iterations_min": config.iterations,
        "duration_min_s": config.duration_s,
        "warmup_iterations": config.warmup_iterations,
        "warmup_s": config.warmup_s,
        "timer": "time.perf_counter_ns around one Session.run (feed checks, inference, output copy to numpy;"
        " TensorRT: host-to-device and device-to-host copies included);"
        " torch: one module call under inference_mode, input tensors made once",
        "threads": config.threads,
        "precision": config.precision,
        "ort_spinning": spinning,
        "speedup": "median over rounds of the per-round ratio to the torch baseline, measured in the same run",
        "seed": config.seed,
        "fidelity_inputs": "random inputs (seed + 1) at the first batch's sizes with the batch raised to 8; for an"
        " artifact that embeds text, 256 generated held-back sentences (edgekit.benchmark.texts) in one batch",
    }
    return {**facts, **_text_facts(config)} if config.texts else facts


def _text_facts(config: BenchConfig) -> dict[str, Any]:
    """What changes with ``--texts``: the unit, the timer, the reference and which texts."""
    import hashlib

    digest = hashlib.sha256("\n".join(config.texts).encode("utf-8")).hexdigest()
    lengths = [len(t) for t in config.texts]
    return {
        "mode": "texts",
        "headline": "texts/s of encode over whole passes of the texts at their natural lengths (batch = texts per"
        " call); latency is per call",
        "timer": "time.perf_counter_ns around one encode call of one batch: tokenizing, length-sorted batching,"
        " padding to the batch's longest text, the run and the output; sentence-transformers: its own encode"
        " (torch eager, CPU, same threads)",
        "texts": {
            "count": len(config.texts),
            "sha256": digest,
            "chars_min": min(lengths),
            "chars_max": max(lengths),
            "chars_mean": round(sum(lengths) / len(lengths), 1),
        },
        "speedup": "median over rounds of the per-round ratio of texts/s (and of latency) to the baseline, same run",
        "fidelity_inputs": "256 generated held-back sentences (edgekit.benchmark.texts) encoded by each target;"
        " reference: sentence-transformers' encode when it is the baseline, else the default runtime",
    }
