"""``edgekit.benchmark``: latency, cold start, memory and fidelity for every target in one honest report.

Every (model, target, batch) is measured in its own fresh process, in rounds that alternate across the
things compared, with every sample kept; see ``edgekit.benchmark.results.SCHEMA`` for the JSON it writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.benchmark.remote import RemoteHost, SSHOptions
    from edgekit.benchmark.results import BenchReport
    from edgekit.benchmark.runner import ProgressFn

__all__ = ["bench"]


def bench(
    models: str | Path | Sequence[str | Path],
    targets: str | Sequence[str] | None = None,
    *,
    shapes: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
    batches: int | Sequence[int] | None = None,
    threads: int | None = None,
    precision: str | None = None,
    iterations: int = 50,
    duration: float = 2.0,
    warmup: float = 1.0,
    warmup_iterations: int = 5,
    mode: str = "latency",
    baseline: str | None = None,
    baseline_source: str | Path | Sequence[str | Path] | None = None,
    trust_source: bool = False,
    rounds: int = 3,
    seed: int = 0,
    target_options: Mapping[str, Mapping[str, Any]] | None = None,
    cold_start: bool = True,
    fidelity: bool = True,
    allow_pickle: bool = False,
    timeout_s: float = 900.0,
    texts: str | Path | Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    hosts: str | Sequence[str | RemoteHost] | None = None,
    ssh: SSHOptions | None = None,
) -> BenchReport:
    """Time ``models`` on ``targets`` (default: every available runtime) and return a :class:`BenchReport`.

    ``shapes`` maps an input name to its full shape (or a symbolic dim name to its size); as strings they
    read ``input_ids=1x128``. ``batches`` sets the batch dim, one row per size. ``iterations``/``duration``
    are per-round minimums (both must be met), ``warmup``/``warmup_iterations`` likewise for the warm-up.
    ``baseline="torch"`` also times the original PyTorch model and adds a speedup to every row.

    Artifacts are data: the torch baseline, and the torch fidelity reference, run only a source the caller names
    in ``baseline_source`` (``FILE.py:FUNCTION``, a model file or directory; one for every model, or one per
    model in order), or with ``trust_source=True`` the one each manifest records, after its sha256 matched
    (else :class:`~edgekit.errors.ArtifactError`). Otherwise the reference is the default runtime's FP32 output
    and nothing the manifest names is imported. ``allow_pickle`` is still needed for a pickled source.
    ``texts`` (a file with one text per line, or the texts) times text embedding end to end instead:
    :class:`edgekit.Embedder` ``.encode`` on the texts at their natural lengths, ``batches`` texts per call
    (default 32), every round a whole pass; ``baseline="sentence-transformers"`` then also times
    ``SentenceTransformer.encode`` of the source directory (``baseline_source`` or ``trust_source``) and is the
    fidelity reference. ``hosts`` (``user@device[:port]``) also run every target on those devices over SSH, with
    the device's own edgekit and runtimes (:mod:`edgekit.benchmark.remote`; ``ssh`` says how to reach them): one
    row per device and target, in the same rounds; a device that cannot be reached or lacks edgekit raises
    :class:`~edgekit.errors.RemoteError` or :class:`~edgekit.errors.RuntimeUnavailableError` before anything is
    measured. Bad usage raises :class:`~edgekit.errors.InputError`; a target that fails only fails its own row
    (``report.exit_code`` is then 1).
    """
    from edgekit.benchmark.plan import BenchConfig, parse_shape
    from edgekit.benchmark.remote import parse_hosts
    from edgekit.benchmark.runner import run_bench
    from edgekit.benchmark.textbench import load_bench_texts
    from edgekit.errors import InputError

    model_list = [models] if isinstance(models, str | Path) else list(models)
    if not model_list:
        raise InputError("give at least one model (an artifact directory or an .onnx file)")
    target_list = [targets] if isinstance(targets, str) else (list(targets) if targets else None)
    if shapes is None:
        shape_map: dict[str, tuple[int, ...]] = {}
    elif isinstance(shapes, Mapping):
        shape_map = {str(k): tuple(int(d) for d in v) for k, v in shapes.items()}
    else:
        shape_map = dict(parse_shape(s) for s in shapes)
    batch_list = [batches] if isinstance(batches, int) else (list(batches) if batches else None)
    if batch_list is not None and not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in batch_list):
        raise InputError(f"batch sizes must be positive integers, got {batch_list}")
    config = BenchConfig(
        iterations=iterations,
        duration_s=duration,
        warmup_s=warmup,
        warmup_iterations=warmup_iterations,
        rounds=rounds,
        mode=mode,
        threads=threads,
        precision=precision,
        baseline=baseline,
        baseline_sources=_source_refs(baseline_source),
        trust_source=trust_source,
        seed=seed,
        cold_start=cold_start,
        fidelity=fidelity,
        allow_pickle=allow_pickle,
        timeout_s=timeout_s,
        target_options={k: dict(v) for k, v in (target_options or {}).items()},
        texts=load_bench_texts(texts) if texts is not None else (),
    )
    remote = parse_hosts(hosts)
    return run_bench(model_list, target_list, shape_map, batch_list, config, progress, hosts=remote, ssh=ssh)


def _source_refs(given: str | Path | Sequence[str | Path] | None) -> tuple[str, ...]:
    """``baseline_source`` as references: one, several, or none."""
    if given is None:
        return ()
    if isinstance(given, str | Path):
        return (os.fspath(given),)
    return tuple(os.fspath(s) for s in given)
