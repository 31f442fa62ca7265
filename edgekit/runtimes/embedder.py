"""``edgekit.Embedder``: texts in, one vector per text out, on any runtime, with nothing but the artifact.

A converted sentence-transformers artifact carries its tokenizer and a graph that pools and normalises, so
an embedding is tokenizer + session. This module is that glue, done once and the way the source model does
it: truncation at the model's own length (``edgekit.text``), the source's lowercasing, prompts prepended as
sentence-transformers' ``encode(prompt=...)`` does, and batches of similar lengths (sorted by token count,
each padded only to its own longest) so a long text does not make every short one pay for its padding.
Results come back in input order. It imports no torch and no transformers: numpy, ``tokenizers`` and the
runtime are all a device needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgekit.artifact import TOKENIZER_FILE, Manifest, listed_path
from edgekit.errors import InputError
from edgekit.runtimes import DEFAULT_TARGET
from edgekit.runtimes.base import ModelRef, Session, SessionInfo
from edgekit.runtimes.loading import load, model_ref
from edgekit.text import TextEncoder, artifact_max_length

__all__ = ["Embedder", "embedding_output_of"]

ProgressFn = Callable[[int], None]  # called with the number of texts embedded so far


class Embedder:
    """A text-embedding artifact loaded on one runtime: ``encode(texts)`` gives float32 ``(n, dim)`` vectors.

    ``Embedder(artifact, target="openvino", threads=2)`` takes every :func:`edgekit.load` option (``device``,
    ``threads``, ``precision``, ``cache_dir``, ``options``, ``variant``). The artifact must be an edgekit
    artifact with a tokenizer and an output of kind ``embedding`` (what a sentence-transformers source gives);
    anything else is an :class:`~edgekit.errors.InputError` before the model is compiled.

    Thread safety, as for every Session: one Embedder may be shared by threads, and concurrent ``encode``
    calls return exactly what serial calls would. The session is thread-safe by contract, tokenizing only
    reads the tokenizer, and each call builds its own batches and result. ``close`` (or ``with``) once the
    calls you started have returned.
    """

    def __init__(self, artifact: str | os.PathLike[str], target: str = DEFAULT_TARGET, **load_options: Any) -> None:
        path = Path(artifact)
        ref = model_ref(path, target, variant=load_options.pop("variant", None))
        manifest = _text_manifest(path, ref)
        self.output = _embedding_output(path, manifest)
        self.max_length, self.max_length_from = artifact_max_length(path, manifest)
        self.lowercase = (
            manifest.text.lowercase if manifest.text else bool(manifest.source.metadata.get("do_lower_case"))
        )
        tokenizer = listed_path(path, manifest, TOKENIZER_FILE, "tokenizer")  # hashed by model_ref's verification
        self._encoder = TextEncoder(tokenizer, ref.inputs, self.max_length)
        self._pad_to = _fixed_seq(ref)
        self.session: Session = load(ref, target, **load_options)
        dim = next(s for s in ref.outputs if s.name == self.output).shape[-1]
        self.dim: int | None = dim if isinstance(dim, int) else None  # known once a batch ran when symbolic

    @property
    def target(self) -> str:
        return self.session.target

    def info(self) -> SessionInfo:
        """What actually runs (device, effective precision, versions): the session's facts."""
        return self.session.info()

    def encode(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        prompt: str | None = None,
        max_length: int | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), dim)``, row i the vector of ``texts[i]``.

        ``prompt`` is prepended to every text (``"query: "``), as sentence-transformers does; ``max_length``
        overrides the model's own truncation length (``self.max_length``). Texts are batched by token count,
        ``batch_size`` at a time, each batch padded to its own longest text; ``progress`` hears how many are done.
        """
        items = _checked_texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        if prompt:
            items = [prompt + t for t in items]
        if self.lowercase:
            items = [t.lower() for t in items]
        length = max_length if max_length is not None else self.max_length
        if self._pad_to is not None:
            length = min(length, self._pad_to)
        encodings = self._encoder.encodings(items, length)
        order = sorted(range(len(items)), key=lambda i: len(encodings[i].ids), reverse=True)
        result: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            feeds = self._encoder.feeds([encodings[i] for i in rows], self._pad_to)
            vectors = self.session.run(feeds)[self.output]
            if result is None:
                result = np.empty((len(items), vectors.shape[-1]), dtype=np.float32)
            result[rows] = vectors.reshape(len(rows), -1)
            if progress is not None:
                progress(start + len(rows))
        assert result is not None  # at least one text, so at least one batch
        return result

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Embedder {self.session.model.path.parent.name} on {self.target}, max_length {self.max_length}>"


def embedding_output_of(path: Path, ref: ModelRef) -> str:
    """The embedding output of a text artifact; :class:`InputError` for anything an Embedder cannot load."""
    return _embedding_output(path, _text_manifest(path, ref))


def _text_manifest(path: Path, ref: ModelRef) -> Manifest:
    """The manifest of a text artifact; a bare ONNX file or an artifact without a tokenizer cannot embed text."""
    if ref.manifest is None:
        raise InputError(
            f"{path} is a bare ONNX file; an Embedder needs an edgekit artifact (convert the model, so its "
            "tokenizer comes along)"
        )
    if TOKENIZER_FILE not in ref.manifest.files:
        raise InputError(f"{path} is not a text model: the artifact has no tokenizer ({TOKENIZER_FILE})")
    return ref.manifest


def _embedding_output(path: Path, manifest: Manifest) -> str:
    """The output that holds the embedding (its kind was decided at convert time); the first if several."""
    names = [s["name"] for s in manifest.outputs if manifest.output_kinds.get(s["name"]) == "embedding"]
    if not names:
        kinds = ", ".join(f"{s['name']} ({manifest.output_kinds.get(s['name'], 'unknown')})" for s in manifest.outputs)
        raise InputError(f"{path} is not a text-embedding model: no output of kind 'embedding' (outputs: {kinds})")
    return str(names[0])


def _fixed_seq(ref: ModelRef) -> int | None:
    """The sequence length every batch must be padded to, when the model was exported with a fixed one."""
    sizes = {s.shape[1] for s in ref.inputs if s.rank >= 2 and isinstance(s.shape[1], int)}
    return min(sizes) if sizes else None


def _checked_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise InputError("encode takes a list of texts, not one string: encode([text])")
    try:
        items = list(texts)
    except TypeError:
        raise InputError(f"encode takes a list of texts, got {type(texts).__name__}") from None
    if not items:
        raise InputError("no texts to encode (the list is empty)")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a str; every item must be a string")
    return items
