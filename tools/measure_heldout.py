"""How close a converted text-embedding artifact stays to the original model on sentences nobody trained on.

The reference is the original torch model (a sentence-transformers directory, by default the bundled MiniLM);
the artifact runs on ONNX Runtime through :class:`edgekit.Embedder`. The sentences are generated
(``edgekit.benchmark.texts.heldout_texts``): everyday statements and questions, a kind of text the WordNet
corpus that distillation reads does not contain. Prints mean / min cosine, recall@10 and Spearman.

    python tools/measure_heldout.py build/p50 [--texts 300 --seed 7]

To judge an artifact where torch is slow or absent (an emulated CPU, say), save the reference first and pass it:

    python tools/measure_heldout.py build/q --save-reference ref.npy
    qemu-x86_64 -cpu Haswell-v4 python tools/measure_heldout.py build/q --reference ref.npy --target openvino
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import edgekit
from edgekit.artifact import TOKENIZER_FILE
from edgekit.benchmark.texts import heldout_texts
from edgekit.converters.distill.data import specs_from_examples
from edgekit.cpu import cpu_model, numeric_cpu_flags
from edgekit.fidelity import sample_cosines
from edgekit.retrieval import recall_at_k, similarity_spearman
from edgekit.sources import bundled_minilm_dir, load_source
from edgekit.text import TextEncoder


def reference_embeddings(source: Path, texts: list[str]) -> np.ndarray:
    """The original model's embeddings in torch, tokenized as the artifact tokenizes."""
    src = load_source(source)
    assert src.example_inputs is not None
    encoder = TextEncoder(src.extra_files[TOKENIZER_FILE], specs_from_examples(src.example_inputs, src.dynamic_dims))
    import torch

    torch.set_num_threads(2)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            feeds = {k: torch.from_numpy(v) for k, v in encoder.encode(texts[start : start + 32]).items()}
            out.append(src.module(**feeds).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--source", type=Path, default=None, help="the original model (default: bundled MiniLM)")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--target", default="onnxruntime", help="runtime to run the artifact on")
    parser.add_argument("--variant", default=None, help="load this variant instead of the target's own")
    parser.add_argument("--reference", type=Path, default=None, help="reference embeddings saved before (.npy)")
    parser.add_argument("--save-reference", type=Path, default=None, help="write the reference embeddings (.npy)")
    args = parser.parse_args()
    texts = heldout_texts(args.texts, seed=args.seed)
    if args.reference is not None:
        reference = np.load(args.reference)
    else:
        reference = reference_embeddings(args.source or bundled_minilm_dir(), texts)
    if args.save_reference is not None:
        np.save(args.save_reference, reference)
    with edgekit.Embedder(args.artifact, args.target, threads=2, variant=args.variant) as embedder:
        got = embedder.encode(texts)
        info = embedder.info()
    cos = sample_cosines(reference, got)
    result = {"artifact": str(args.artifact), "target": info.target, "precision": info.precision,
              "cpu": cpu_model(), "cpu_flags": numeric_cpu_flags(), "texts": len(texts), "seed": args.seed,
              "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
              "recall@10": round(recall_at_k(reference, got, 10), 4),
              "spearman": round(similarity_spearman(reference, got), 4)}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
