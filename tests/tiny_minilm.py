"""A sentence-transformers directory shaped like the bundled MiniLM at a size that prunes, distils and converts in
seconds: MiniLM's tokenizer and pooling around a small, randomly initialized 32-wide BERT."""

from __future__ import annotations

import shutil
from pathlib import Path


def write_tiny_minilm(out: Path, layers: int) -> Path:
    """``out`` as that directory, with a ``layers``-layer encoder (seeded: the same weights every time)."""
    import torch
    import transformers

    from edgekit.sources import bundled_minilm_dir

    shutil.copytree(bundled_minilm_dir(), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors"))
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(out)
    return out
