"""Which importance keeps more of MiniLM before any distillation: weight magnitude (l1) or activations.

Prunes the bundled all-MiniLM-L6-v2 at ``--ratio`` (FFN neurons only, heads kept) with each importance, and
prints mean / min cosine and recall@10 to the unpruned model on held-out text: the corpus evaluation split and
generated sentences of another kind (edgekit.benchmark.texts.heldout_texts). Activation importance reads the
first 256 corpus *train* sentences, never the held-out ones.

    python tools/measure_prune_importance.py --ratio 0.5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edgekit import corpus
from edgekit.artifact import TOKENIZER_FILE
from edgekit.benchmark.texts import heldout_texts
from edgekit.converters.distill.data import specs_from_examples
from edgekit.converters.prune import PruneOptions, prune_module
from edgekit.fidelity import sample_cosines
from edgekit.retrieval import recall_at_k
from edgekit.sources import bundled_minilm_dir, load_source
from edgekit.text import TextEncoder


def embed(model: torch.nn.Module, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            feeds = {k: torch.from_numpy(v) for k, v in encoder.encode(texts[start : start + 32]).items()}
            out.append(model(**feeds).numpy())
    return np.concatenate(out)


def batches(encoder: TextEncoder, texts: list[str], size: int = 16) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.from_numpy(v) for k, v in encoder.encode(texts[i : i + size]).items()}
            for i in range(0, len(texts), size)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--importance", nargs="+", default=["l1", "l2", "taylor", "activation"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    src = load_source(bundled_minilm_dir())
    assert src.example_inputs is not None
    encoder = TextEncoder(src.extra_files[TOKENIZER_FILE], specs_from_examples(src.example_inputs, src.dynamic_dims))
    sets = {"corpus eval": list(corpus.eval_texts()[: args.texts]), "generated": heldout_texts(args.texts, seed=7)}
    reference = {name: embed(src.module, encoder, texts) for name, texts in sets.items()}
    data = batches(encoder, list(corpus.train_texts()[:256]))
    for importance in args.importance:
        start = time.perf_counter()
        options = PruneOptions(args.ratio, importance=importance)
        pruned = prune_module(src.module, src.example_inputs, options, data).module
        took = time.perf_counter() - start
        for name, texts in sets.items():
            got = embed(pruned, encoder, texts)
            cos = sample_cosines(reference[name], got)
            recall = recall_at_k(reference[name], got, 10)
            print(f"{importance:>10}  {name:<11}  cos {cos.mean():.4f} (min {cos.min():.4f})  "
                  f"recall@10 {recall:.3f}  [{took:.1f}s to prune]")  # fmt: skip


if __name__ == "__main__":
    main()
