"""Orchestration: alternating rounds of fresh worker processes, then cold/warm cache starts and fidelity.

Round r runs every (model, target, batch) once, in the same order (A B C A B C ...), one process at a time, so
slow drift of a shared machine hits every row alike and speedups can be taken round by round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.benchmark.facts import machine_facts, method_facts
from edgekit.benchmark.fidelity import fidelity_report
from edgekit.benchmark.plan import (
    BASELINES,
    BenchConfig,
    ModelPlan,
    plan_models,
    resolve_targets,
    torch_available,
)
from edgekit.benchmark.remote import Placement, RemoteBench, RemoteHost, SSHOptions, model_bytes_on
from edgekit.benchmark.results import BenchReport, RoundResult, TargetResult
from edgekit.benchmark.stats import HIGH_CV, paired_ratio
from edgekit.benchmark.textbench import text_requests
from edgekit.benchmark.texts import text_fidelity_feeds
from edgekit.fidelity import output_kinds
from edgekit.runtimes import DEFAULT_TARGET, runtime_capabilities
from edgekit.runtimes.base import RuntimeCapabilities
from edgekit.specs import random_feeds

ProgressFn = Callable[[int, int, str], None]  # (finished processes, total, what starts now)
WorkerFn = Callable[[Mapping[str, Any], float], dict[str, Any]]
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def run_worker(request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one ``edgekit.benchmark.worker`` process and return its JSON answer (or why there is none)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit.benchmark.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        out, err = proc.communicate(json.dumps(dict(request)), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"ok": False, "pid": proc.pid, "error": f"worker timed out after {timeout_s:g} s"}
    lines = [ln for ln in out.splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = [ln.strip() for ln in err.splitlines() if ln.strip()]
        why = tail[-1][:300] if tail else "no output"
        return {"ok": False, "pid": proc.pid, "error": f"worker exited with code {proc.returncode}: {why}"}


@dataclass
class _Row:
    result: TargetResult
    plan: ModelPlan
    case: int
    request: dict[str, Any]
    outputs_path: Path | None = None
    outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)


class _Spawner:
    """Runs workers one at a time and tells the progress callback how far along the run is."""

    def __init__(self, total: int, progress: ProgressFn | None, timeout_s: float, remote: WorkerFn) -> None:
        self.total, self.done, self.progress, self.timeout_s, self.remote = total, 0, progress, timeout_s, remote

    def __call__(self, label: str, request: Mapping[str, Any]) -> dict[str, Any]:
        if self.progress:
            self.progress(self.done, self.total, label)
        try:
            return (self.remote if request.get("host") else run_worker)(request, self.timeout_s)
        finally:
            self.done += 1

    def skip(self, count: int = 1) -> None:
        self.total -= count

    def finish(self) -> None:
        if self.progress:
            self.progress(self.total, self.total, "done")


def _round_from(answer: Mapping[str, Any], index: int) -> RoundResult:
    ok = bool(answer.get("ok"))
    error = None if ok else f"{answer.get('stage', 'worker')}: {answer.get('error', 'failed')}"
    return RoundResult(
        round=index,
        pid=answer.get("pid"),
        ok=ok,
        error=error,
        samples_ms=[ns / 1e6 for ns in answer.get("samples_ns", [])],
        load_s=answer.get("load_s"),
        first_inference_s=answer.get("first_inference_s"),
        import_s=answer.get("import_s"),
        elapsed_s=answer.get("elapsed_s"),
        peak_rss_bytes=answer.get("peak_rss_bytes"),
        rss_after_import_bytes=answer.get("rss_after_import_bytes"),
        throughput=answer.get("throughput"),
    )


def _capabilities(target: str) -> RuntimeCapabilities:
    """A runtime's declared capabilities; a baseline (torch eager) has none of them."""
    return RuntimeCapabilities() if target in BASELINES else runtime_capabilities(target)


def timing_request(target: str, config: BenchConfig) -> dict[str, Any]:
    """The worker request keys that say how ``target`` is timed under ``config`` (model and feeds come apart)."""
    options = dict(config.target_options.get(target, {}))
    if config.mode == "throughput":  # e.g. OpenVINO's THROUGHPUT hint, unless the caller set one
        options = {**_capabilities(target).throughput_options, **options}
    return {
        "target": target,
        "threads": config.threads,
        "precision": None if target in BASELINES else config.precision,
        "options": options,
        "mode": config.mode,
        "iterations": config.iterations,
        "duration_s": config.duration_s,
        "warmup_iterations": config.warmup_iterations,
        "warmup_s": config.warmup_s,
        "max_iterations": config.max_iterations,
    }


def _request(plan: ModelPlan, target: str, feeds: Path, config: BenchConfig, batch: int) -> dict[str, Any]:
    request = {**timing_request(target, config), "model": str(plan.path), "feeds": str(feeds), "batch": batch}
    request["options"] = {**request["options"], **_baseline_options(plan, target, config)}
    return request


def _baseline_options(plan: ModelPlan, target: str, config: BenchConfig) -> dict[str, Any]:
    """A baseline Session (torch eager) runs the PyTorch source the user allowed: it is named in its options."""
    if target not in BASELINES or not plan.torch_source:
        return {}
    return {"source": plan.torch_source, "allow_pickle": config.allow_pickle}


def _build_rows(plans: list[ModelPlan], places: list[Placement], config: BenchConfig, work: Path) -> list[_Row]:
    """One row per (model, batch, target, device); a runtime that caches by default (TensorRT) gets a private cache
    dir, so the user's cache is neither used nor filled."""
    rows: list[_Row] = []
    order: list[Placement] = ([(config.baseline, None)] if config.baseline else []) + places
    text_keys = text_requests(plans, config, work)
    for m, plan in enumerate(plans):
        for c, case in enumerate(plan.cases):
            feeds = work / f"m{m}_c{c}.npz"
            if not config.texts:
                feeds_of = random_feeds(plan.ref.inputs, case.dims, seed=config.seed, int_range=plan.int_ranges)
                np.savez(feeds, **feeds_of)
            for target, device in order:
                result = TargetResult(
                    model=str(plan.path), model_name=plan.name, target=target, batch=case.batch,
                    shapes=case.shapes, is_baseline=target in BASELINES, remote=device,
                    model_bytes=None if target in BASELINES else model_bytes_on(plan, target, device),
                )  # fmt: skip
                row = _Row(result, plan, c, _request(plan, target, feeds, config, case.batch))
                row.request.update(text_keys[m], **({"host": device["host"]} if device else {}))
                if _capabilities(target).caches_by_default:
                    row.request["cache_dir"] = str(work / f"{target}_m{m}")
                if config.fidelity and c == 0:
                    row.outputs_path = work / f"out_m{m}_{len(rows)}_{target}.npz"
                    row.request["fidelity_feeds"] = str(work / f"m{m}_fidelity.npz")
                rows.append(row)
        if config.fidelity and not config.texts:  # text artifacts: generated held-back sentences, others: noise
            fid = text_fidelity_feeds(plan) or random_feeds(
                plan.ref.inputs, plan.fidelity_dims, seed=config.seed + 1, int_range=plan.int_ranges
            )
            np.savez(work / f"m{m}_fidelity.npz", **fid)
    return rows


def _load_outputs(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _reference(
    plan: ModelPlan, rows: list[_Row], config: BenchConfig, spawn: _Spawner, work: Path, warnings: list[str]
) -> tuple[str, dict[str, np.ndarray]] | None:
    """Reference outputs for one model: the baseline's (torch, or sentence-transformers with ``--texts``) when it
    ran, else torch from the source the user allowed (named, or recorded and trusted) when it loads, else the
    default runtime as stored."""
    mine = [r for r in rows if r.plan is plan and r.case == 0 and not r.result.host]  # the reference is local
    by_target = {r.result.target: r for r in mine}
    for base in (b for b in BASELINES if b in by_target):
        if by_target[base].outputs is not None:
            return base, by_target[base].outputs
        warnings.append(f"{plan.name}: {base} baseline failed, fidelity falls back to {DEFAULT_TARGET}")
    default = DEFAULT_TARGET
    if not (config.texts or any(b in by_target for b in BASELINES)):  # the torch Session takes feeds, not texts
        outputs = _torch_reference(plan, mine[0], config, spawn, work, warnings)
        if outputs is not None:
            return "torch", outputs
    row = by_target.get(default)
    if row is not None and row.outputs is not None and config.precision is None:
        return default, row.outputs
    from edgekit.runtimes import runtime_entry

    if not runtime_entry(default).is_available():
        warnings.append(f"{plan.name}: no fidelity reference (neither torch nor {default} could run it)")
        return None
    answer, outputs = _outputs_only(plan, default, mine[0], config, spawn, work)
    if outputs is None:
        warnings.append(f"{plan.name}: no fidelity reference: {default} failed ({answer.get('error')})")
        return None
    return default, outputs


def _torch_reference(
    plan: ModelPlan, like: _Row, config: BenchConfig, spawn: _Spawner, work: Path, warnings: list[str]
) -> dict[str, np.ndarray] | None:
    """Outputs of the torch source the user allowed, run for the reference only; None (and why) when it cannot."""
    if not plan.torch_source:
        return None
    if not torch_available():
        warnings.append(f"{plan.name}: torch is not installed, so fidelity is against {DEFAULT_TARGET}, not the source")
        return None
    answer, outputs = _outputs_only(plan, "torch", like, config, spawn, work)
    if outputs is None:
        warnings.append(f"{plan.name}: torch reference unavailable ({answer.get('error')}); using {DEFAULT_TARGET}")
    return outputs


def _outputs_only(
    plan: ModelPlan, target: str, like: _Row, config: BenchConfig, spawn: _Spawner, work: Path
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    spawn.total += 1
    path = Path(tempfile.mkdtemp(dir=work)) / f"{target}_reference.npz"
    req = {**like.request, "target": target, "measure": False, "outputs_path": str(path), "precision": None}
    req["options"] = _baseline_options(plan, target, config)
    req.pop("cache_dir", None)
    answer = spawn(f"{plan.name} · {target} reference outputs", req)
    return answer, _load_outputs(path) if answer.get("ok") else None


def _run_rounds(rows: list[_Row], config: BenchConfig, spawn: _Spawner) -> None:
    for index in range(config.rounds):
        for row in rows:
            res = row.result
            if index > 0 and not res.ok:
                spawn.skip()
                continue
            req = dict(row.request)
            if index == 0 and row.outputs_path is not None:
                req["outputs_path"] = str(row.outputs_path)
            label = f"round {index + 1}/{config.rounds} · {res.model_name} · {res.label} · batch {res.batch}"
            answer = spawn(label, req)
            res.rounds.append(_round_from(answer, index))
            if index == 0 and answer.get("ok"):
                res.session = answer.get("info")
                res.model_bytes = res.model_bytes or answer.get("model_bytes")
                row.outputs = _load_outputs(row.outputs_path)


def _cache_rows(rows: list[_Row]) -> list[_Row]:
    """Rows whose runtime has a compile cache: for those, cold and warm start are different numbers."""
    return [r for r in rows if r.case == 0 and _capabilities(r.result.target).has_compile_cache]


def _cache_starts(rows: list[_Row], spawn: _Spawner, work: Path) -> None:
    """Two fresh processes sharing one empty compile-cache dir: the first compiles cold, the second hits the cache."""
    eligible = [r for r in _cache_rows(rows) if r.result.ok]
    spawn.skip(2 * (len(_cache_rows(rows)) - len(eligible)))
    for row in eligible:
        cache_dir = Path(tempfile.mkdtemp(prefix="cache_", dir=work))
        req = {**row.request, "measure": False, "cache_dir": str(cache_dir)}
        name = f"{row.result.model_name} · {row.result.label}"
        cold = spawn(f"{name} · cold start (empty cache)", req)
        warm = spawn(f"{name} · warm start (cached)", req)
        kind = _capabilities(row.result.target).compile_cache or "cache"
        if cold.get("ok") and warm.get("ok"):
            cache: dict[str, Any] = {
                "kind": kind,
                "cold_load_ms": cold["load_s"] * 1e3,
                "cold_first_inference_ms": cold["first_inference_s"] * 1e3,
                "warm_load_ms": warm["load_s"] * 1e3,
                "warm_first_inference_ms": warm["first_inference_s"] * 1e3,
                "cold_pid": cold.get("pid"),
                "warm_pid": warm.get("pid"),
            }
        else:
            cache = {"kind": kind, "error": cold.get("error") or warm.get("error")}
        for other in rows:
            if other.plan is row.plan and other.result.label == row.result.label:
                other.result.cache = cache


def _per_round(row: _Row, key: str) -> list[float]:
    rounds = sorted(row.result.rounds, key=lambda x: x.round)
    return [getattr(x.latency, key) if x.latency else 0.0 for x in rounds]


def _speedups(rows: list[_Row], mode: str) -> None:
    """Per round, baseline / target (latency) or target / baseline (throughput); the median over rounds."""
    for row in rows:
        base = next((b for b in rows if b.plan is row.plan and b.case == row.case and b.result.is_baseline), None)
        if base is None or row is base or row.result.host or not (base.result.ok and row.result.ok):
            continue

        p50 = paired_ratio(_per_round(base, "p50"), _per_round(row, "p50"))
        speed: dict[str, Any] = {"vs": base.result.target, "p50": p50}
        speed["p90"] = paired_ratio(_per_round(base, "p90"), _per_round(row, "p90"))
        if mode in ("throughput", "texts"):
            ips = [(x.throughput or {}).get("items_per_s") for x in row.result.rounds]
            base_ips = [(x.throughput or {}).get("items_per_s") for x in base.result.rounds]
            speed["items_per_s"] = paired_ratio(ips, base_ips)
        speed["method"] = "median over rounds of the per-round ratio (baseline / target latency), same run"
        row.result.speedup = speed


def _fidelity(plans: list[ModelPlan], rows: list[_Row], config: BenchConfig, spawn: _Spawner, work: Path) -> list[str]:
    warnings: list[str] = []
    for plan in plans:
        ref = _reference(plan, rows, config, spawn, work, warnings)
        if ref is None:
            continue
        name, outputs = ref
        manifest = plan.ref.manifest
        kinds = output_kinds(plan.ref.outputs, declared=manifest.output_kinds if manifest is not None else None)
        first = {r.result.label: r for r in rows if r.plan is plan and r.case == 0}
        for row in (r for r in rows if r.plan is plan):
            src = first.get(row.result.label)
            if src is None or src.outputs is None or not row.result.session:
                continue
            precision = row.result.session["precision"]
            row.result.fidelity = fidelity_report(outputs, src.outputs, precision, name, kinds)
    return warnings


def run_bench(
    models: Sequence[str | Path],
    targets: Sequence[str] | None,
    shapes: Mapping[str, Sequence[int]],
    batches: Sequence[int] | None,
    config: BenchConfig,
    progress: ProgressFn | None = None,
    hosts: Sequence[RemoteHost] = (),
    ssh: SSHOptions | None = None,
) -> BenchReport:
    """Plan (failing fast on bad usage), measure locally and on every host (:mod:`edgekit.benchmark.remote`),
    and assemble the report."""
    from edgekit._version import __version__
    from edgekit.artifact import now_iso

    names = resolve_targets(targets)
    plans = plan_models(models, shapes, batches, config)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp, RemoteBench(hosts, ssh) as remote:
        work = Path(tmp)
        rows = _build_rows(plans, [(t, None) for t in names] + remote.placements(plans, targets), config, work)
        remote.upload(plans, work)
        cache_jobs = 2 * len(_cache_rows(rows)) if config.cold_start else 0
        spawn = _Spawner(len(rows) * config.rounds + cache_jobs, progress, config.timeout_s, remote.run_worker)
        _run_rounds(rows, config, spawn)
        if config.cold_start:
            _cache_starts(rows, spawn, work)
        warnings = _fidelity(plans, rows, config, spawn, work) if config.fidelity else []
        spawn.finish()
    _speedups(rows, "texts" if config.texts else config.mode)
    results = [r.result for r in rows]
    for r in results:
        lat = r.latency
        if lat is not None and r.high_cv and not config.texts:  # with texts, latency follows each text's length
            warnings.append(
                f"high variation on {r.model_name} · {r.label} · batch {r.batch}: CV {lat.cv:.0%} > {HIGH_CV:.0%};"
                " the machine was noisy, trust ratios over absolute times and rerun with more rounds"
            )
    return BenchReport(
        created=now_iso(),
        edgekit_version=__version__,
        parent_pid=os.getpid(),
        method=method_facts(config),
        machine=machine_facts(),
        results=results,
        warnings=warnings,
    )
