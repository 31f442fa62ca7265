"""What every source loader returns, in a module of its own so the loaders need not import their package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.provenance import SOURCE_KINDS

if TYPE_CHECKING:
    import torch

KINDS = SOURCE_KINDS
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "sentence_bert_config.json",  # max_seq_length: where a sentence-transformers model truncates (edgekit.text)
)


@dataclass
class LoadedSource:
    """A loaded model and the facts about it that export, validation and the manifest need."""

    module: torch.nn.Module
    example_inputs: dict[str, torch.Tensor] | None
    kind: str
    ref: str
    sha256: str | None
    input_names: list[str]
    output_names: list[str] | None = None
    dynamic_dims: dict[str, dict[int, str]] | None = None
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    extra_files: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # outputs whose kind the source knows ("embedding", "classifier"); the rest get edgekit.fidelity's default
    output_kinds: dict[str, str] = field(default_factory=dict)
