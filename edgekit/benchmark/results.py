"""The report's data: one row per (model, target, batch) with every round's raw samples, and its JSON schema.

Statistics are recomputed from the kept samples, never stored only as summaries, so anyone can re-derive
them (or compute their own) from the JSON.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.benchmark.stats import HIGH_CV, LatencyStats, summarize

SCHEMA_VERSION = "edgekit.bench/1"
_NUMBER_LIST = re.compile(r"\[((?:\s*-?[0-9][0-9.eE+-]*\s*,)*\s*-?[0-9][0-9.eE+-]*\s*)\]")

SCHEMA = """\
edgekit bench JSON (schema "edgekit.bench/1"). Times are milliseconds unless the key ends in _s; sizes bytes.

{
  "schema": "edgekit.bench/1",
  "created": ISO-8601 UTC, "edgekit_version": str, "parent_pid": int (the process that orchestrated),
  "method": {
    "mode": "latency" | "throughput" | "texts" (--texts: Embedder.encode on real text),
    "texts": {"count", "sha256", "chars_min", "chars_max", "chars_mean"} (texts mode only),
    "headline": what the headline number is (p90 of a single-stream loop in latency mode),
    "percentiles": how percentiles are computed (numpy linear interpolation, type 7),
    "std": "sample standard deviation (ddof=1)", "cv": "std / mean", "cv_warning_above": 0.10,
    "rounds": int, "order": how rounds alternate (A B A B ...), "isolation": one fresh process per measurement,
    "iterations_min": int, "duration_min_s": float, "warmup_iterations": int, "warmup_s": float,
    "timer": what one sample covers, "threads": int | null (null: each runtime's default),
    "precision": str | null (requested), "ort_spinning": which ONNX Runtime spinning setting was used and why,
    "speedup": how speedups are computed, "seed": int, "fidelity_inputs": how fidelity inputs are made
  },
  "machine": {"cpu_model", "cpu_flags": [the CPU features that change numerics: avx2, avx512f, avx512_vnni,
              avx512_bf16, amx_*, ...], "logical_cores", "usable_cores", "system", "machine", "python",
              "libraries": {name: version}},
  "warnings": [str],                      # high CV, failed reference, ... (also shown in the terminal)
  "results": [{                           # one per (model, target, batch)
    "model": path, "model_name": str,
    "target": "onnxruntime" | "openvino" | "tensorrt" | "torch" | "sentence-transformers" (texts mode) | ...,
    "host": null (this machine) | "user@device[:port]" (edgekit bench --host: a worker run there over SSH),
    "remote": null | {"host", "cpu_model", "cpu_flags", "logical_cores", "usable_cores", "system", "machine",
               "python", "libraries": {name: version}, "edgekit_version"}  (the device's facts, as "machine" above),
    "is_baseline": bool, "batch": int, "shapes": {input: [dims]},
    "status": "ok" | "failed", "error": str | null (why the row failed: one line),
    "latency_ms": {n, min, mean, std, cv, p50, p90, p95, p99, max} | null   (all rounds pooled),
    "high_cv": bool,
    "throughput": {"items_per_s": median over rounds, "api": str, "infer_requests": int, "streams": int?,
                   texts mode: "unit": "texts", "passes": int, "texts_per_pass": int} | null,
    "speedup": {"vs": the baseline's target, "p50": float, "p90": float, "items_per_s": float?, "method": str}
               | null (also for a remote row: a ratio across two machines is not a speedup),
    "cold_start": {
      "load_ms": median over rounds of session creation (compile) in a fresh process, runtime already imported
                 (TensorRT rounds share one private plan cache: round 1 builds, later rounds load the plan),
      "first_inference_ms": median over rounds of the first run after load,
      "import_ms": median over rounds of importing the runtime package,
      "cache": null | {"kind": str, "cold_load_ms", "cold_first_inference_ms", "warm_load_ms",
                       "warm_first_inference_ms", "cold_pid", "warm_pid"}   (two processes, one cache dir)
    },
    "memory": {"peak_rss_bytes": max over rounds of the worker's peak RSS (VmHWM), "rss_after_import_bytes": int},
    "model_bytes": ONNX file + external data (torch: parameter and buffer bytes in memory),
    "session": {"target", "device", "device_kind" (cpu | gpu | npu), "precision" (effective), "backend_version",
                "providers", "threads" (read back from the runtime, null where it does not apply), "details"},
    "fidelity": null | {"reference": "torch" | "sentence-transformers" | "onnxruntime", "precision",
                 "tolerance": {rel_l2, max_rel, min_cosine, mean_cosine} (null: that bound does not apply),
                 "passed": bool, "min_cosine", "max_abs", "rel_l2" (worst sample's ||got-ref||/||ref||),
                 "top1_agreement" (outputs of kind "classifier" in the manifest, else null),
                 "recall@10", "spearman" (outputs of kind "embedding", over "retrieval_texts" texts: for a text
                 artifact 256 generated held-back sentences; null where not measured),
                 "outputs": {name: {max_abs, rel_l2, max_rel (max|got-ref|/max|ref|), mean_cosine, min_cosine,
                             top1_agreement, recall@10, spearman, retrieval_texts, passed}}},
    "rounds": [{"round": int, "pid": int (a remote row: the worker's pid on the device), "ok": bool,
                "error": str | null, "samples_ms": [float, ...] (every sample),
                "latency_ms": {...} | null, "load_ms", "first_inference_ms", "import_ms", "elapsed_s",
                "peak_rss_bytes", "rss_after_import_bytes", "throughput": {...} | null}]
  }]
}
"""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _median(values: list[float]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class RoundResult:
    """One worker process's measurement."""

    round: int
    pid: int | None
    ok: bool
    error: str | None = None
    samples_ms: list[float] = field(default_factory=list)
    load_s: float | None = None
    first_inference_s: float | None = None
    import_s: float | None = None
    elapsed_s: float | None = None
    peak_rss_bytes: int | None = None
    rss_after_import_bytes: int | None = None
    throughput: dict[str, Any] | None = None

    @property
    def latency(self) -> LatencyStats | None:
        return summarize(self.samples_ms) if self.samples_ms else None

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        return {
            "round": self.round,
            "pid": self.pid,
            "ok": self.ok,
            "error": self.error,
            "latency_ms": lat.to_dict() if lat else None,
            "load_ms": _ms(self.load_s),
            "first_inference_ms": _ms(self.first_inference_s),
            "import_ms": _ms(self.import_s),
            "elapsed_s": self.elapsed_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_after_import_bytes": self.rss_after_import_bytes,
            "throughput": self.throughput,
            "samples_ms": self.samples_ms,
        }


@dataclass
class TargetResult:
    """One row of the report: a model on a target at one batch size, over every round."""

    model: str
    model_name: str
    target: str
    batch: int
    shapes: dict[str, list[int]]
    is_baseline: bool = False
    rounds: list[RoundResult] = field(default_factory=list)
    error: str | None = None
    session: dict[str, Any] | None = None
    model_bytes: int | None = None
    cache: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    speedup: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None  # the device's facts when the row ran there (``bench --host``)

    @property
    def host(self) -> str | None:
        """``user@device[:port]`` of the device the row ran on; None for this machine."""
        return (self.remote or {}).get("host")

    @property
    def label(self) -> str:
        """The target and where it ran (``onnxruntime@pi@10.0.0.7``): what names a row in tables and errors."""
        return f"{self.target}@{self.host}" if self.host else self.target

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.rounds) and all(r.ok for r in self.rounds)

    @property
    def samples_ms(self) -> list[float]:
        return [s for r in self.rounds for s in r.samples_ms]

    @property
    def latency(self) -> LatencyStats | None:
        samples = self.samples_ms
        return summarize(samples) if samples and self.ok else None

    @property
    def high_cv(self) -> bool:
        lat = self.latency
        return bool(lat and lat.cv > HIGH_CV)

    @property
    def items_per_s(self) -> float | None:
        return _median([(r.throughput or {}).get("items_per_s") for r in self.rounds])

    def throughput(self) -> dict[str, Any] | None:
        first = next((r.throughput for r in self.rounds if r.throughput), None)
        if first is None or not self.ok:
            return None
        return {**first, "items_per_s": self.items_per_s}

    def cold_start(self) -> dict[str, Any]:
        return {
            "load_ms": _ms(_median([r.load_s for r in self.rounds])),
            "first_inference_ms": _ms(_median([r.first_inference_s for r in self.rounds])),
            "import_ms": _ms(_median([r.import_s for r in self.rounds])),
            "cache": self.cache,
        }

    def memory(self) -> dict[str, Any]:
        peaks = [r.peak_rss_bytes for r in self.rounds if r.peak_rss_bytes]
        imports = [r.rss_after_import_bytes for r in self.rounds if r.rss_after_import_bytes]
        return {"peak_rss_bytes": max(peaks, default=None), "rss_after_import_bytes": max(imports, default=None)}

    def to_dict(self) -> dict[str, Any]:
        lat = self.latency
        return {
            "model": self.model,
            "model_name": self.model_name,
            "target": self.target,
            "host": self.host,
            "remote": self.remote,
            "is_baseline": self.is_baseline,
            "batch": self.batch,
            "shapes": self.shapes,
            "status": "ok" if self.ok else "failed",
            "error": None if self.ok else (self.error or next((r.error for r in self.rounds if r.error), "no rounds")),
            "latency_ms": lat.to_dict() if lat else None,
            "high_cv": self.high_cv,
            "throughput": self.throughput(),
            "speedup": self.speedup,
            "cold_start": self.cold_start(),
            "memory": self.memory(),
            "model_bytes": self.model_bytes,
            "session": self.session,
            "fidelity": self.fidelity,
            "rounds": [r.to_dict() for r in self.rounds],
        }


@dataclass
class BenchReport:
    """What ``edgekit.benchmark`` returns: the rows, how they were measured, on what, and what to distrust."""

    created: str
    edgekit_version: str
    parent_pid: int
    method: dict[str, Any]
    machine: dict[str, Any]
    results: list[TargetResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every row measured, 1 when any target failed (the CLI's exit code)."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "created": self.created,
            "edgekit_version": self.edgekit_version,
            "parent_pid": self.parent_pid,
            "method": self.method,
            "machine": self.machine,
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON: a non-finite number (an infinite relative error) becomes ``null``; lists of numbers
        (the samples) stay on one line each, so a file with 100k samples is not 100k lines."""
        text = json.dumps(_finite(self.to_dict()), indent=indent, default=str, allow_nan=False)
        return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1).strip())) + "]", text)

    def write_json(self, path: str | Path) -> Path:
        from edgekit.benchmark.report import write_text

        return write_text(path, self.to_json() + "\n")

    def write_csv(self, path: str | Path) -> Path:
        from edgekit.benchmark.report import csv_text, write_text

        return write_text(path, csv_text(self))

    def write_markdown(self, path: str | Path) -> Path:
        from edgekit.benchmark.report import markdown_text, write_text

        return write_text(path, markdown_text(self))

    def write_plot(self, path: str | Path) -> Path:
        from edgekit.benchmark.report import write_plot

        return write_plot(self, path)
