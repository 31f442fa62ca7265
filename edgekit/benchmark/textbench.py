"""``edgekit bench --texts``: time what an application calls, ``Embedder.encode`` on real text, not ``Session.run``.

A text benchmark covers tokenizing, length-sorted batching, padding and the run, on the user's texts at their
natural lengths. The baseline a user would otherwise deploy is sentence-transformers' own
``SentenceTransformer.encode`` (torch), timed the same way in its own worker process on the same texts, batch
size and threads. Every round encodes the whole text list at least once (whole passes, so every target sees
the same mix of lengths); each sample is one ``encode`` call of one batch, so latency is per batch and
throughput is texts per second over the passes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.errors import InputError

if TYPE_CHECKING:
    from edgekit.benchmark.plan import BenchConfig, ModelPlan

ST_BASELINE = "sentence-transformers"
FIDELITY_BATCH = 32  # how the fidelity texts are encoded: the batch size does not change the vectors


class TextRunner(Protocol):
    """What a text worker times: one encode call, what ran, and closing."""

    api: str

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class EmbedderRunner:
    """An artifact on a runtime through :class:`edgekit.Embedder`."""

    api = "edgekit.Embedder.encode (tokenize, length-sorted batches, run)"

    def __init__(self, req: Mapping[str, Any]) -> None:
        from edgekit.runtimes.embedder import Embedder

        self.embedder = Embedder(
            req["model"], req["target"], threads=req.get("threads"), precision=req.get("precision"),
            cache_dir=req.get("cache_dir"), options=req.get("options") or {},
        )  # fmt: skip

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.embedder.encode(texts, batch_size=batch_size)

    def info(self) -> dict[str, Any]:
        return self.embedder.info().to_dict()

    def close(self) -> None:
        self.embedder.close()


class SentenceTransformerRunner:
    """The source model in sentence-transformers (torch eager, CPU), loaded from the directory the user allowed."""

    api = "sentence_transformers.SentenceTransformer.encode (torch eager, CPU)"

    def __init__(self, req: Mapping[str, Any]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never the network
        import sentence_transformers
        import torch

        if req.get("threads"):
            torch.set_num_threads(int(req["threads"]))
        source = (req.get("options") or {}).get("source")
        self.model = sentence_transformers.SentenceTransformer(str(source), device="cpu", local_files_only=True)
        self.versions = f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}"
        self.torch = torch

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {
            "target": ST_BASELINE, "device": "cpu", "device_kind": "cpu", "precision": "fp32",
            "backend_version": self.versions, "providers": [], "threads": self.torch.get_num_threads(),
            "details": {"max_seq_length": self.model.max_seq_length},
        }  # fmt: skip

    def close(self) -> None:
        del self.model


def import_text_backend(target: str) -> None:
    """Import what a text worker needs before the load timer starts (import time is not load time)."""
    if target == ST_BASELINE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import sentence_transformers  # noqa: F401
    import tokenizers  # noqa: F401


def open_text_runner(req: Mapping[str, Any]) -> TextRunner:
    return SentenceTransformerRunner(req) if req["target"] == ST_BASELINE else EmbedderRunner(req)


def read_json_texts(path: str | os.PathLike[str]) -> list[str]:
    return list(json.loads(Path(path).read_text(encoding="utf-8")))


def batches_of(texts: Sequence[str], batch: int) -> list[list[str]]:
    """The texts in file order, ``batch`` at a time: one ``encode`` call each."""
    return [list(texts[i : i + batch]) for i in range(0, len(texts), batch)]


def time_passes(runner: TextRunner, chunks: list[list[str]], batch: int, req: Mapping[str, Any]) -> dict[str, Any]:
    """Warm up (by count and time), then whole passes over ``chunks`` until both minimums are met.

    Returns the worker's measurement keys: every call's time, elapsed seconds and texts/s over the passes.
    """
    warm_n, warm_s = int(req.get("warmup_iterations", 0)), float(req.get("warmup_s", 0.0))
    start, n = time.perf_counter(), 0
    while n < warm_n or time.perf_counter() - start < warm_s:
        runner.encode(chunks[n % len(chunks)], batch)
        n += 1
    min_n, min_s = int(req["iterations"]), float(req.get("duration_s", 0.0))
    cap = int(req.get("max_iterations") or 1_000_000)
    clock, samples, texts, passes = time.perf_counter_ns, [], 0, 0
    begin = clock()
    deadline = begin + int(min_s * 1e9)
    while passes == 0 or (len(samples) < cap and (len(samples) < min_n or clock() < deadline)):
        for chunk in chunks:
            t0 = clock()
            runner.encode(chunk, batch)
            samples.append(clock() - t0)
            texts += len(chunk)
        passes += 1
    elapsed = (clock() - begin) / 1e9
    return {
        "samples_ns": samples, "elapsed_s": elapsed, "iterations": len(samples),
        "throughput": {"items_per_s": texts / elapsed if elapsed > 0 else None, "unit": "texts", "api": runner.api,
                       "passes": passes, "texts_per_pass": sum(len(c) for c in chunks), "infer_requests": 1},
    }  # fmt: skip


def fidelity_vectors(runner: TextRunner, req: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The held-back texts' embeddings under the artifact's embedding output name, for the report's fidelity."""
    texts = read_json_texts(req["fidelity_texts"])
    return {str(req["embedding_output"]): runner.encode(texts, FIDELITY_BATCH)}


def load_bench_texts(texts: str | os.PathLike[str] | Sequence[str]) -> tuple[str, ...]:
    """``--texts``: a file with one text per line (blank lines skipped), or the texts themselves."""
    if isinstance(texts, str | os.PathLike):
        from edgekit.runtimes.embedfile import read_texts

        return tuple(read_texts(texts)[0])
    items = tuple(texts)
    if not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise InputError("texts must be a non-empty list of non-blank strings")
    return items


def text_requests(plans: Sequence[ModelPlan], config: BenchConfig, work: Path) -> list[dict[str, Any]]:
    """Per model, the request keys of text mode: the texts (one JSON file for all), the held-back fidelity texts
    and the output that holds the embedding; empty without ``--texts``."""
    if not config.texts:
        return [{} for _ in plans]
    from edgekit.benchmark.texts import heldout_texts
    from edgekit.runtimes.embedder import embedding_output_of

    texts, held = work / "texts.json", work / "fidelity_texts.json"
    texts.write_text(json.dumps(list(config.texts)), encoding="utf-8")
    held.write_text(json.dumps(heldout_texts(seed=config.seed)), encoding="utf-8")
    return [{"texts": str(texts), "fidelity_texts": str(held), "embedding_output": embedding_output_of(p.path, p.ref)}
            for p in plans]  # fmt: skip
