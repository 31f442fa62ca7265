"""Turning text into feeds with the tokenizer an artifact carries (``tokenizer/tokenizer.json``).

Uses Hugging Face ``tokenizers`` (the ``text`` extra), no torch, so a device can embed sentences with
nothing but the artifact and a runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import TOKENIZER_FILE
from edgekit.errors import InputError, RuntimeUnavailableError
from edgekit.specs import TensorSpec

__all__ = ["TOKENIZER_FILE", "TextEncoder"]


class TextEncoder:
    """Encode sentences into the feeds a text artifact expects (ids, mask, token types), padded per batch."""

    def __init__(self, tokenizer_json: Path, inputs: Sequence[TensorSpec], max_length: int = 128) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise RuntimeUnavailableError("text needs the tokenizers package: pip install 'edgekit[text]'") from exc
        if not tokenizer_json.is_file():
            raise InputError(f"no tokenizer in the artifact (expected {tokenizer_json})")
        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self.inputs = list(inputs)
        self.max_length = max_length

    @classmethod
    def for_artifact(cls, artifact: Path, max_length: int = 128) -> TextEncoder:
        from edgekit.artifact import artifact_file, read_manifest

        manifest = read_manifest(artifact)
        if TOKENIZER_FILE not in manifest.files:
            raise InputError(f"no tokenizer in the artifact (expected {Path(artifact) / TOKENIZER_FILE})")
        tokenizer = artifact_file(Path(artifact), manifest, TOKENIZER_FILE, "tokenizer")
        return cls(tokenizer, manifest.input_specs(), max_length)

    def encode(self, sentences: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Feeds for ``sentences``: padded to the longest (or to ``pad_to``), in each input's dtype."""
        if not sentences:
            raise InputError("no sentences to encode")
        encodings = self._tok.encode_batch(list(sentences))
        length = pad_to or max(len(e.ids) for e in encodings)
        columns: dict[str, Any] = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            field = columns.get(spec.name)
            if field is None:
                raise InputError(f"input {spec.name!r} is not something a tokenizer produces")
            array = np.zeros((len(encodings), length), dtype=spec.dtype)
            for row, enc in enumerate(encodings):
                values = getattr(enc, field)[:length]
                array[row, : len(values)] = values
            feeds[spec.name] = array
        return feeds
