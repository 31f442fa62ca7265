"""Turning text into feeds with the tokenizer an artifact carries (``tokenizer/tokenizer.json``).

Uses Hugging Face ``tokenizers`` (the ``text`` extra), no torch, so a device can embed sentences with
nothing but the artifact and a runtime.

How many tokens a text keeps is the model's own setting, never a constant of ours: a sentence-transformers
model reads ``max_seq_length`` tokens (256 for all-MiniLM-L6-v2), a Hugging Face model its tokenizer's
``model_max_length``. :func:`max_length_of_files` finds it among a model's files and convert records it in the
manifest (``Manifest.text``); :func:`artifact_max_length` reads it back, with fallbacks for artifacts written
before it was recorded. Truncating where the source model does not would embed long texts differently.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import TOKENIZER_DIR, TOKENIZER_FILE
from edgekit.errors import InputError, RuntimeUnavailableError
from edgekit.specs import TensorSpec

if TYPE_CHECKING:
    from edgekit.artifact import Manifest, TextFacts

__all__ = [
    "FALLBACK_MAX_LENGTH",
    "TOKENIZER_FILE",
    "TextEncoder",
    "artifact_max_length",
    "max_length_of_files",
    "text_facts",
]

FALLBACK_MAX_LENGTH = 128  # only when nothing in the model says; a warning says so
_SENTINEL = 1_000_000  # transformers writes 1e30 as model_max_length when a tokenizer has no limit
_ST_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json")
_COLUMNS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def max_length_of_files(directory: Path, positions: int | None = None) -> tuple[int, str] | None:
    """``(tokens, where it came from)`` as the model's files in ``directory`` define it, or None.

    In sentence-transformers' order: its config's ``max_seq_length``, else the tokenizer's ``model_max_length``
    capped by the model's position embeddings (``positions``, or ``config.json`` beside the tokenizer), else the
    truncation ``tokenizer.json`` itself carries.
    """
    directory = Path(directory)
    for name in _ST_CONFIGS:
        value = _positive(_json(directory / name).get("max_seq_length"))
        if value is not None:
            return value, f"{name} max_seq_length"
    positions = positions or _positive(_json(directory / "config.json").get("max_position_embeddings"))
    value = _positive(_json(directory / "tokenizer_config.json").get("model_max_length"))
    if value is not None:
        if positions is not None and positions < value:
            return positions, "max_position_embeddings (below tokenizer_config.json model_max_length)"
        return value, "tokenizer_config.json model_max_length"
    truncation = _json(directory / "tokenizer.json").get("truncation")
    value = _positive(truncation.get("max_length")) if isinstance(truncation, dict) else None
    return (value, "tokenizer.json truncation") if value is not None else None


def text_facts(directory: Path, metadata: Mapping[str, Any]) -> TextFacts | None:
    """What convert records about a text model in the artifact at ``directory`` (None: it has no tokenizer).

    ``metadata`` is what the source loader learned: a sentence-transformers model's ``max_seq_length`` and
    ``do_lower_case``, a Hugging Face model's ``max_position_embeddings``; the rest comes from the tokenizer files.
    """
    from edgekit.artifact import TextFacts

    if not (Path(directory) / TOKENIZER_FILE).is_file():
        return None
    lowercase = bool(metadata.get("do_lower_case", False))
    recorded = _positive(metadata.get("max_seq_length"))
    if recorded is not None:
        return TextFacts(max_length=recorded, max_length_from="source max_seq_length", lowercase=lowercase)
    found = max_length_of_files(Path(directory) / TOKENIZER_DIR, _positive(metadata.get("max_position_embeddings")))
    length, where = found if found is not None else (None, "")
    return TextFacts(max_length=length, max_length_from=where, lowercase=lowercase)


def artifact_max_length(directory: Path, manifest: Manifest) -> tuple[int, str]:
    """The tokens a text artifact's model reads: recorded at convert time, else found as convert would find it.

    Artifacts written before ``Manifest.text`` existed still load: a sentence-transformers source recorded
    ``max_seq_length`` in its metadata, and the tokenizer files are in the artifact. With none of these the
    length is :data:`FALLBACK_MAX_LENGTH` and a warning says so (reconvert, or pass ``max_length=``).
    """
    if manifest.text is not None and manifest.text.max_length is not None:
        return manifest.text.max_length, f"manifest ({manifest.text.max_length_from})"
    metadata = manifest.source.metadata
    recorded = _positive(metadata.get("max_seq_length"))
    if recorded is not None:
        return recorded, "manifest source.metadata max_seq_length"
    found = max_length_of_files(Path(directory) / TOKENIZER_DIR, _positive(metadata.get("max_position_embeddings")))
    if found is not None:
        return found
    warnings.warn(
        f"{directory}: nothing in the artifact says how many tokens its model reads; truncating at "
        f"{FALLBACK_MAX_LENGTH} (pass max_length= or reconvert with this edgekit to record it)",
        stacklevel=3,
    )
    return FALLBACK_MAX_LENGTH, "fallback"


class TextEncoder:
    """Encode sentences into the feeds a text artifact expects (ids, mask, token types), padded per batch.

    ``max_length`` None means the model's own length, from the files beside ``tokenizer_json`` (see
    :func:`max_length_of_files`). Safe to share between threads: tokenizing only reads the tokenizer, and a
    tokenizer for another length (``max_length=`` per call) is built once under a lock and kept.
    """

    def __init__(self, tokenizer_json: Path, inputs: Sequence[TensorSpec], max_length: int | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise RuntimeUnavailableError("text needs the tokenizers package: pip install 'edgekit[text]'") from exc
        if not tokenizer_json.is_file():
            raise InputError(f"no tokenizer in the artifact (expected {tokenizer_json})")
        self._source = tokenizer_json.read_text(encoding="utf-8")
        self._from_str = Tokenizer.from_str
        if max_length is None:
            found = max_length_of_files(tokenizer_json.parent)
            max_length, self.max_length_from = found or (FALLBACK_MAX_LENGTH, "fallback")
        else:
            self.max_length_from = "given"
        self.max_length = _checked_length(max_length)
        self._lock = threading.Lock()
        self._tokenizers: dict[int, Any] = {}
        self._tokenizer(self.max_length)  # a broken tokenizer.json fails now, not on the first encode
        self.inputs = list(inputs)
        unknown = [s.name for s in self.inputs if s.name not in _COLUMNS]
        if unknown:
            raise InputError(f"input {unknown[0]!r} is not something a tokenizer produces")

    @classmethod
    def for_artifact(cls, artifact: Path, max_length: int | None = None) -> TextEncoder:
        """The encoder of an artifact's own tokenizer (hash checked), truncating where its model does."""
        from edgekit.artifact import artifact_file, read_manifest

        manifest = read_manifest(artifact)
        if TOKENIZER_FILE not in manifest.files:
            raise InputError(f"no tokenizer in the artifact (expected {Path(artifact) / TOKENIZER_FILE})")
        tokenizer = artifact_file(Path(artifact), manifest, TOKENIZER_FILE, "tokenizer")
        length, where = (max_length, "given") if max_length is not None else artifact_max_length(artifact, manifest)
        encoder = cls(tokenizer, manifest.input_specs(), length)
        encoder.max_length_from = where
        return encoder

    def encodings(self, sentences: Sequence[str], max_length: int | None = None) -> list[Any]:
        """Token encodings of ``sentences``, truncated at ``max_length`` (default: the model's), unpadded."""
        length = self.max_length if max_length is None else _checked_length(max_length)
        return self._tokenizer(length).encode_batch(list(sentences))

    def feeds(self, encodings: Sequence[Any], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Feeds for ``encodings``: padded to the longest (or to ``pad_to``), in each input's dtype."""
        length = pad_to or max(len(e.ids) for e in encodings)
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            field = _COLUMNS[spec.name]
            array = np.zeros((len(encodings), length), dtype=spec.dtype)
            for row, enc in enumerate(encodings):
                values = getattr(enc, field)[:length]
                array[row, : len(values)] = values
            out[spec.name] = array
        return out

    def encode(self, sentences: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Feeds for ``sentences``: padded to the longest (or to ``pad_to``), in each input's dtype."""
        if not sentences:
            raise InputError("no sentences to encode")
        return self.feeds(self.encodings(sentences), pad_to)

    def _tokenizer(self, max_length: int) -> Any:
        tokenizer = self._tokenizers.get(max_length)
        if tokenizer is None:
            with self._lock:
                tokenizer = self._tokenizers.get(max_length)
                if tokenizer is None:
                    try:
                        tokenizer = self._from_str(self._source)
                    except Exception as exc:
                        raise InputError(f"cannot read the tokenizer: {str(exc).splitlines()[0][:200]}") from exc
                    tokenizer.no_padding()
                    tokenizer.enable_truncation(max_length=max_length)
                    self._tokenizers[max_length] = tokenizer
        return tokenizer


def _checked_length(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise InputError(f"max_length must be an integer of at least 2 tokens, got {value!r}")
    return value


def _positive(value: Any) -> int | None:
    """``value`` as a token count when it is a sane one (not the 1e30 'no limit' sentinel)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < _SENTINEL:
        return None
    return int(value)


def _json(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
