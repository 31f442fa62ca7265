"""One measurement in one fresh process: ``python -m edgekit.benchmark.worker`` with a JSON request on stdin.

Why a process per measurement: ONNX Runtime's intra-op threads spin after each run and steal cores from
whatever else runs in the process (an INT8 model measured 8.4 ms alone, 27.8 ms interleaved with OpenVINO),
allocator and cache state carry over, and peak RSS is only meaningful per process. So a worker loads one model
on one target, times it, and exits; the JSON result goes to the real stdout, while anything the runtimes print
is sent to stderr so it cannot corrupt it.

Request keys: ``target`` (a runtime name, or ``"torch"``: the baseline Session, whose ``options`` name the
``source``), ``model`` (artifact dir or .onnx), ``threads``, ``precision``, ``options``, ``cache_dir``,
``feeds`` (.npz), ``measure`` (bool), ``mode`` (latency|throughput), ``iterations``, ``duration_s``,
``warmup_iterations``, ``warmup_s``, ``max_iterations``, ``fidelity_feeds`` and ``outputs_path`` (.npz).
Text mode (``edgekit bench --texts``): ``texts`` and ``fidelity_texts`` (JSON lists of strings) and
``embedding_output`` replace the feeds; ``target`` may then be ``"sentence-transformers"``, the baseline.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import one_line

if TYPE_CHECKING:
    from edgekit.runtimes.base import Session

Feeds = dict[str, np.ndarray]


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` survives ``execve``, so a worker
    started from a parent that had imported torch would report the parent's peak, not its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def load_feeds(path: str) -> Feeds:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _import_runtime(target: str) -> None:
    """Import the runtime package before the load timer starts: import time is not compile time."""
    from edgekit.runtimes import runtime_entry, session_class

    session_class(target).import_backend()
    for module in runtime_entry(target).requires:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _open_session(req: Mapping[str, Any]) -> Session:
    """The session ``req`` names, through the registry: a device runtime, or the torch baseline."""
    from edgekit.runtimes.loading import load, model_ref

    ref = model_ref(req["model"], req["target"])  # the variant this target runs best
    return load(
        ref,
        target=req["target"],
        threads=req.get("threads"),
        precision=req.get("precision"),
        cache_dir=req.get("cache_dir"),
        options=req.get("options") or {},
    )


def _timed_loop(call: Callable[[], object], req: Mapping[str, Any]) -> tuple[list[int], float]:
    """Warm up (by count and by time), then time single calls until both minimums are met."""
    warm_n, warm_s = int(req.get("warmup_iterations", 0)), float(req.get("warmup_s", 0.0))
    start, n = time.perf_counter(), 0
    while n < warm_n or time.perf_counter() - start < warm_s:
        call()
        n += 1
    min_n, min_s = int(req["iterations"]), float(req.get("duration_s", 0.0))
    cap = int(req.get("max_iterations") or 1_000_000)
    samples: list[int] = []
    clock = time.perf_counter_ns
    begin = clock()
    deadline = begin + int(min_s * 1e9)
    while len(samples) < cap and (len(samples) < min_n or clock() < deadline):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples, (clock() - begin) / 1e9


def _throughput(session: Session, feeds: Feeds, req: Mapping[str, Any]) -> tuple[list[int], float, dict[str, Any]]:
    """Items/s the way the runtime does it best (OpenVINO: async requests; others: one at a time), warm first."""
    session.run_throughput(
        feeds, min_requests=int(req.get("warmup_iterations", 0)), min_seconds=float(req.get("warmup_s", 0.0))
    )
    done = session.run_throughput(
        feeds,
        min_requests=int(req["iterations"]),
        min_seconds=float(req.get("duration_s", 0.0)),
        max_requests=int(req.get("max_iterations") or 1_000_000),
    )
    return done.latencies_ns, done.elapsed_s, done.facts()


def _measure(session: Session, feeds: Feeds, req: Mapping[str, Any], result: dict[str, Any]) -> None:
    batch = int(req.get("batch") or 1)
    if req.get("mode") == "throughput":
        samples, elapsed, extra = _throughput(session, feeds, req)
    else:
        samples, elapsed = _timed_loop(lambda: session.run(feeds), req)
        extra = {"api": "synchronous loop (one request at a time)", "infer_requests": 1}
    result["samples_ns"] = samples
    result["elapsed_s"] = elapsed
    result["iterations"] = len(samples)
    result["throughput"] = {"items_per_s": len(samples) * batch / elapsed if elapsed > 0 else None, **extra}


def execute(req: Mapping[str, Any]) -> dict[str, Any]:
    """Do what ``req`` asks and return the result dict (``ok`` false with ``error`` and ``stage`` on failure).

    With ``texts`` in the request the worker times text embedding end to end (:mod:`edgekit.benchmark.textbench`)
    instead of ``Session.run`` on fixed feeds."""
    if req.get("texts"):
        return _execute_texts(req)
    result: dict[str, Any] = {"ok": False, "pid": os.getpid(), "target": req.get("target")}
    stage = "import"
    try:
        t0 = time.perf_counter()
        _import_runtime(req["target"])
        result["import_s"] = time.perf_counter() - t0
        result["rss_after_import_bytes"] = peak_rss_bytes()
        feeds = load_feeds(req["feeds"])
        stage = "load"
        t0 = time.perf_counter()
        session = _open_session(req)
        result["load_s"] = time.perf_counter() - t0
        result["info"] = session.info().to_dict()  # threads as the runtime reports them, asked for or not
        result["model_bytes"] = result["info"]["details"].get("parameter_bytes")  # a model that is not a file
        stage = "first inference"
        t0 = time.perf_counter()
        session.run(feeds)
        result["first_inference_s"] = time.perf_counter() - t0
        if req.get("measure", True):
            stage = "timing"
            _measure(session, feeds, req, result)
        if req.get("outputs_path"):
            stage = "fidelity run"
            outputs = session.run(load_feeds(req["fidelity_feeds"]))
            np.savez(req["outputs_path"], **{k: np.asarray(v) for k, v in outputs.items()})
        result["peak_rss_bytes"] = peak_rss_bytes()
        session.close()
        result["ok"] = True
    except BaseException as exc:  # the parent reports it in the target's row; the process must still answer
        _failed(result, stage, exc)
    return result


def _execute_texts(req: Mapping[str, Any]) -> dict[str, Any]:
    """The same stages as :func:`execute`, for ``Embedder.encode`` or ``SentenceTransformer.encode`` on texts."""
    from edgekit.benchmark import textbench

    result: dict[str, Any] = {"ok": False, "pid": os.getpid(), "target": req.get("target")}
    stage = "import"
    try:
        t0 = time.perf_counter()
        if req["target"] != textbench.ST_BASELINE:
            _import_runtime(req["target"])
        textbench.import_text_backend(req["target"])
        result["import_s"] = time.perf_counter() - t0
        result["rss_after_import_bytes"] = peak_rss_bytes()
        batch = int(req.get("batch") or 1)
        chunks = textbench.batches_of(textbench.read_json_texts(req["texts"]), batch)
        stage = "load"
        t0 = time.perf_counter()
        runner = textbench.open_text_runner(req)
        result["load_s"] = time.perf_counter() - t0
        result["info"] = runner.info()
        stage = "first inference"
        t0 = time.perf_counter()
        runner.encode(chunks[0], batch)
        result["first_inference_s"] = time.perf_counter() - t0
        if req.get("measure", True):
            stage = "timing"
            result.update(textbench.time_passes(runner, chunks, batch, req))
        if req.get("outputs_path"):
            stage = "fidelity run"
            np.savez(req["outputs_path"], **textbench.fidelity_vectors(runner, req))
        result["peak_rss_bytes"] = peak_rss_bytes()
        runner.close()
        result["ok"] = True
    except BaseException as exc:  # as in execute: the row says why
        _failed(result, stage, exc)
    return result


def _failed(result: dict[str, Any], stage: str, exc: BaseException) -> None:
    result["stage"] = stage
    result["error"] = one_line(exc, limit=600)
    result["traceback"] = traceback.format_exc(limit=8)
    result["peak_rss_bytes"] = peak_rss_bytes()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[Any]:
    """Route fd 1 to stderr while working; yield a writer bound to the real stdout for the one JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    with os.fdopen(saved, "w", closefd=True) as real:
        yield real


def main() -> int:
    request = json.loads(sys.stdin.read())
    with _stdout_to_stderr() as real_stdout:
        result = execute(request)
        real_stdout.write(json.dumps(result) + "\n")
        real_stdout.flush()
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
