"""A file of texts to a file of vectors: what ``edgekit embed`` does, as a library call.

Texts are one per line (a file, or a text stream such as stdin); blank lines are skipped and counted, so a
trailing newline or a paragraph break never becomes a vector. The output (``.npy``: the ``(n, dim)`` float32
array; ``.jsonl``: one ``{"text", "vector"}`` object per line) is written atomically, and its kind is checked
before the model loads, so bad input fails fast and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from edgekit.errors import InputError
from edgekit.runtimes import DEFAULT_TARGET
from edgekit.runtimes.embedder import Embedder
from edgekit.staging import atomic_write, check_writable_file

__all__ = ["OUTPUT_SUFFIXES", "EmbedFileResult", "embed_file", "read_texts", "write_vectors"]

OUTPUT_SUFFIXES = (".npy", ".jsonl")
ProgressFn = Callable[[int, int], None]  # (texts done, texts in all)


@dataclass(frozen=True)
class EmbedFileResult:
    """What one ``embed_file`` did: how many texts (and blank lines skipped), the vectors' width, the encode
    time (loading excluded) and what ran it."""

    count: int
    skipped: int
    dim: int
    seconds: float
    load_seconds: float
    target: str
    precision: str
    max_length: int
    batch_size: int
    output: Path

    @property
    def texts_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count, "skipped": self.skipped, "dim": self.dim, "seconds": round(self.seconds, 4),
            "texts_per_s": round(self.texts_per_s, 2), "load_seconds": round(self.load_seconds, 4),
            "target": self.target, "precision": self.precision, "max_length": self.max_length,
            "batch_size": self.batch_size, "output": str(self.output),
        }  # fmt: skip


def read_texts(source: str | os.PathLike[str] | TextIO) -> tuple[list[str], int]:
    """``(texts, blank lines skipped)`` from a file with one text per line, or from an open text stream."""
    where = getattr(source, "name", None) or "<stream>"
    try:
        if isinstance(source, str | os.PathLike):
            where = os.fspath(source)
            content = Path(source).read_text(encoding="utf-8")
        else:
            content = source.read()
    except FileNotFoundError:
        raise InputError(f"texts file not found: {where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read texts from {where}: {str(exc).splitlines()[0][:200]}") from None
    lines = content.splitlines()
    texts = [ln for ln in lines if ln.strip()]
    if not texts:
        raise InputError(f"no texts in {where}: every line is blank")
    return texts, len(lines) - len(texts)


def write_vectors(path: str | os.PathLike[str], texts: list[str], vectors: np.ndarray) -> Path:
    """Write ``vectors`` (row i for ``texts[i]``) as ``.npy`` or ``.jsonl``, atomically."""
    path = Path(path)
    suffix = _output_suffix(path)
    if suffix == ".npy":
        return atomic_write(path, lambda f: np.save(f, vectors, allow_pickle=False))

    def jsonl(f: BinaryIO) -> None:
        for text, row in zip(texts, vectors.tolist(), strict=True):
            f.write(json.dumps({"text": text, "vector": row}, ensure_ascii=False).encode("utf-8") + b"\n")

    return atomic_write(path, jsonl)


def embed_file(
    artifact: str | os.PathLike[str],
    texts: str | os.PathLike[str] | TextIO,
    output: str | os.PathLike[str],
    *,
    target: str = DEFAULT_TARGET,
    batch_size: int = 32,
    max_length: int | None = None,
    prompt: str | None = None,
    progress: ProgressFn | None = None,
    **load_options: Any,
) -> EmbedFileResult:
    """Embed every non-blank line of ``texts`` with the artifact on ``target`` and write them to ``output``.

    ``load_options`` are :func:`edgekit.load`'s (``threads``, ``precision``, ...). Nothing is written unless
    every text was embedded.
    """
    _output_suffix(Path(output))
    items, skipped = read_texts(texts)
    start = time.perf_counter()
    with Embedder(artifact, target, **load_options) as embedder:
        loaded = time.perf_counter()
        report = (lambda done: progress(done, len(items))) if progress is not None else None
        vectors = embedder.encode(items, batch_size=batch_size, prompt=prompt, max_length=max_length, progress=report)
        seconds = time.perf_counter() - loaded
        precision = embedder.info().precision
        length = max_length if max_length is not None else embedder.max_length
    written = write_vectors(output, items, vectors)
    return EmbedFileResult(len(items), skipped, int(vectors.shape[1]), seconds, loaded - start, target, precision,
                           length, batch_size, written)  # fmt: skip


def _output_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"output {path} must end in {' or '.join(OUTPUT_SUFFIXES)} (got {suffix or 'no suffix'})")
    check_writable_file(path)  # a directory, or a file where its parent should be: before the model loads
    return suffix
