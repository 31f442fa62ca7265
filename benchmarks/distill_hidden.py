"""Do intermediate-layer losses and measured layer dropping earn their place in ``convert --distill``?

Runs edgekit's torch-side compression (``edgekit.converters.compress.compress``, the code ``convert`` runs) on
the bundled MiniLM for each arm, every arm under the same distillation time budget, one after another in this
process (nothing else should run meanwhile: the budget turns CPU time into steps):

- ``ffn``: ``--prune 0.5 --distill`` (half the FFN neurons), output (embedding) loss only;
- ``ffn+hidden``: the same plus ``--distill-hidden`` (each layer's hidden states, cosine, padding excluded);
- ``drop``: ``--drop-layers 2 --distill`` (two whole layers, chosen by measured effect);
- ``drop+hidden``: the same plus ``--distill-hidden`` (student layer j against the teacher layer it kept).

Each arm is judged in torch against the original on ``heldout_texts(300, seed=7)``: generated everyday
sentences, a kind of text the WordNet distillation corpus does not contain. Also reported without distillation:
the layers the measured choice keeps against the positional habits (the first layers, evenly spaced ones).

    .venv/bin/python benchmarks/distill_hidden.py --time 4m [--arms ffn,ffn+hidden]

Writes ``benchmarks/results/distill_hidden.{json,md}`` (``--out``; ``--render`` rewrites the Markdown only).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.artifact import TOKENIZER_FILE
from edgekit.benchmark.texts import heldout_texts
from edgekit.converters.compress import CompressRequest, compress
from edgekit.converters.distill.data import specs_from_examples
from edgekit.converters.prune.layers import find_layer_stack
from edgekit.fidelity import sample_cosines
from edgekit.retrieval import recall_at_k, similarity_spearman
from edgekit.sources import bundled_minilm_dir, load_source
from edgekit.text import TextEncoder

RESULTS = Path(__file__).parent / "results"
ARMS = {
    "ffn": {"prune": 0.5, "distill_hidden": False},
    "ffn+hidden": {"prune": 0.5, "distill_hidden": True},
    "drop": {"drop_layers": 2, "distill_hidden": False},
    "drop+hidden": {"drop_layers": 2, "distill_hidden": True},
}


def embed(module: torch.nn.Module, encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            feeds = {k: torch.from_numpy(v) for k, v in encoder.encode(texts[start : start + 32]).items()}
            out.append(module(**feeds).float().numpy())
    return np.concatenate(out)


def judged(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    cos = sample_cosines(reference, got)
    return {"mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
            "recall@10": round(recall_at_k(reference, got, 10), 4),
            "spearman": round(similarity_spearman(reference, got), 4)}  # fmt: skip


def cpu_facts() -> dict[str, str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    keep = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    flags = [f for f in fields.get("Flags", "").split() if f in keep]
    return {"model": fields.get("Model name", platform.processor()).strip(), "flags": " ".join(flags)}


def positional_drop(module: torch.nn.Module, kept: list[int]) -> torch.nn.Module:
    model = copy.deepcopy(module)
    stack = find_layer_stack(model)
    assert stack is not None
    stack.install([stack.layers[i] for i in kept])
    return model


def markdown(report: dict) -> str:
    """The report as the Markdown table committed next to the JSON."""
    cpu = report["cpu"]
    lines = [
        "# Hidden-state losses and measured layer dropping (bundled MiniLM)",
        "",
        f"CPU: {cpu['model']} ({cpu['flags']}); torch {report['torch']}; every arm distilled for"
        f" {report['distill_time']} on edgekit's corpus, one after another in one process.",
        "Judged in torch against the original on 300 generated everyday sentences (`heldout_texts(300, seed=7)`).",
        "Command: `.venv/bin/python benchmarks/distill_hidden.py --time " + report["distill_time"] + "`",
        "",
        "| arm | steps | mean cos | min cos | recall@10 | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["arms"].items():
        a = row["after"]
        lines.append(f"| {name} | {row['steps']} | {a['mean_cosine']} | {a['min_cosine']} | {a['recall@10']} |"
                     f" {a['spearman']} |")  # fmt: skip
    choices = report.get("layers_kept_before_distillation")
    if choices:
        lines += ["", "Layers kept when two of six are dropped, before any distillation:", "",
                  "| choice | kept | mean cos | min cos | recall@10 |", "|---|---|---|---|---|"]  # fmt: skip
        for label, c in choices.items():
            lines.append(f"| {label} | {c['kept']} | {c['mean_cosine']} | {c['min_cosine']} | {c['recall@10']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", default="4m", help="distillation time budget of every arm")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default=str(RESULTS / "distill_hidden.json"))
    parser.add_argument("--render", action="store_true", help="only write the Markdown of an existing --out JSON")
    args = parser.parse_args()
    if args.render:
        Path(args.out).with_suffix(".md").write_text(markdown(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(2)
    src = load_source(bundled_minilm_dir())
    assert src.example_inputs is not None
    encoder = TextEncoder(src.extra_files[TOKENIZER_FILE], specs_from_examples(src.example_inputs, src.dynamic_dims))
    texts = heldout_texts(300, seed=7)
    reference = embed(src.module, encoder, texts)
    report: dict = {"cpu": cpu_facts(), "torch": torch.__version__, "distill_time": args.time, "arms": {}}
    for name in args.arms.split(","):
        request = CompressRequest(distill=True, distill_time=args.time, **ARMS[name])
        start = time.perf_counter()
        out, stages, _ = compress(src, request, lambda line, n=name: print(f"[{n}] {line}", flush=True))
        took = time.perf_counter() - start
        distill = next(s for s in stages if s.name == "distill")
        prune = next(s for s in stages if s.name == "prune")
        row = {"seconds": round(took, 1), "steps": distill.metrics["steps"],
               "before_distillation_corpus_eval": prune.metrics.get("fidelity_before_distillation"),
               "after": judged(reference, embed(out.module, encoder, texts))}  # fmt: skip
        dropped = prune.metrics.get("layers_dropped")
        if dropped is not None:
            row["layers_dropped"] = dropped["dropped"]
            row["measured_choice_before_distillation"] = dropped["rounds"]
        report["arms"][name] = row
        print(json.dumps({name: row}), flush=True)
        if dropped is not None and "layers_kept_before_distillation" not in report:
            report["layers_kept_before_distillation"] = choices = {}
            total, kept = dropped["layers_before"], len(dropped["kept"])
            evenly = sorted({round(float(x)) for x in np.linspace(0, total - 1, kept)})
            for label, layers in (("measured", dropped["kept"]), ("first layers", list(range(kept))),
                                  ("evenly spaced", evenly)):  # fmt: skip
                model = positional_drop(src.module, layers)
                choices[label] = {"kept": layers, **judged(reference, embed(model, encoder, texts))}
            print(json.dumps(choices), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
