"""Does mixing the user's own text into distillation help on text like the user's? Two pruned MiniLMs, same
time budget: one distilled on edgekit's corpus alone (`--distill`), one with 2,000 user lines mixed in
(`--distill-data`). Both are judged against the original on held-out lines of the user's kind and on
everyday sentences neither run read.

    .venv/bin/python benchmarks/distill_user_text.py [--distill-time 6m] [--prune 0.5]

The "user's text" is sentences from the docstrings of Python's standard library, read offline from this
machine's installation: modules are split by a hash of their name, so the evaluation lines come from modules
whose docstrings were never trained on. Results go to benchmarks/results/distill_user_text.{json,md}.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.data.make_sentences import good_sentence  # noqa: E402

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
TRAIN_LINES, EVAL_LINES = 2000, 300


def docstring_sentences(path: Path) -> list[str]:
    """Prose sentences of one module's docstrings (module, classes, functions)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node) or ""
            for paragraph in re.split(r"\n\s*\n", doc):
                if any(ln.startswith((" ", ">>>")) for ln in paragraph.splitlines()):
                    continue  # code, doctests, argument tables
                text = " ".join(paragraph.split())
                out.extend(s for s in _SENTENCE_END.split(text) if good_sentence(s))
    return out


def user_texts() -> tuple[list[str], list[str]]:
    """(train, eval) lines from disjoint sets of standard-library modules, deterministic for a Python version."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    train: list[str] = []
    held: list[str] = []
    for path in sorted(stdlib.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        bucket = hashlib.sha256(str(path.relative_to(stdlib)).encode()).digest()[0] % 5
        (held if bucket == 0 else train).extend(docstring_sentences(path))
    train, held = _unique(train), _unique(held)
    return _spread(train, TRAIN_LINES), _spread(held, EVAL_LINES)


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _spread(lines: list[str], n: int) -> list[str]:
    if len(lines) < n:
        raise SystemExit(f"only {len(lines)} docstring sentences found, need {n}")
    step = len(lines) / n
    return [lines[int(i * step)] for i in range(n)]


def convert(out: Path, args: argparse.Namespace, user: Path | None) -> None:
    from edgekit.sources import bundled_minilm_dir

    cmd = [sys.executable, "-m", "edgekit", "convert", str(bundled_minilm_dir()), "-o", str(out), "--force",
           "--prune", str(args.prune), "--distill", "--distill-time", args.distill_time]  # fmt: skip
    if user is not None:
        cmd += ["--distill-data", str(user)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def fidelity(artifact: Path, texts: list[str]) -> dict[str, float]:
    import numpy as np

    import edgekit
    from edgekit.fidelity import sample_cosines
    from edgekit.retrieval import recall_at_k
    from edgekit.sources import bundled_minilm_dir
    from tools.measure_heldout import reference_embeddings

    reference = reference_embeddings(bundled_minilm_dir(), texts)
    with edgekit.Embedder(artifact, target="onnxruntime") as embedder:
        got = embedder.encode(texts)
    cos = sample_cosines(reference, got)
    return {"mean_cosine": round(float(np.mean(cos)), 4), "min_cosine": round(float(np.min(cos)), 4),
            "recall@10": round(recall_at_k(reference, got, 10), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distill-time", default="6m")
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "distill_user_text")
    args = parser.parse_args()
    import torch

    from edgekit.benchmark.texts import heldout_texts
    from edgekit.cpu import cpu_model, numeric_cpu_flags

    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    train, held = user_texts()
    user_file = args.work / "user_train.txt"
    user_file.write_text("\n".join(train) + "\n")
    runs = {"corpus only": (args.work / "corpus", None), "corpus + 2,000 user lines": (args.work / "mixed", user_file)}
    for out, user in runs.values():
        convert(out, args, user)
    sets = {"user-like held-out lines (300)": held, "everyday sentences (300)": heldout_texts(300, seed=7)}
    table = {name: {s: fidelity(out, texts) for s, texts in sets.items()} for name, (out, _) in runs.items()}
    result = {"cpu": cpu_model(), "flags": numeric_cpu_flags(), "prune": args.prune,
              "distill_time": args.distill_time, "user_train_lines": len(train), "results": table}  # fmt: skip
    results = ROOT / "benchmarks" / "results"
    (results / "distill_user_text.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Distillation with the user's text mixed in (`--prune {args.prune}`, `--distill-time "
             f"{args.distill_time}`)", "", f"CPU: {result['cpu']}; flags: {' '.join(result['flags'])}", "",
             "| run | held-out set | mean cos | min cos | recall@10 |", "|---|---|---|---|---|"]  # fmt: skip
    for name, per_set in table.items():
        for s, m in per_set.items():
            lines.append(f"| {name} | {s} | {m['mean_cosine']} | {m['min_cosine']} | {m['recall@10']} |")
    (results / "distill_user_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
