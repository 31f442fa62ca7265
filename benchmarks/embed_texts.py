"""Text embedding on every target against sentence-transformers' own encode: ``edgekit bench --texts``.

    .venv/bin/python benchmarks/embed_texts.py [--rounds 5] [--threads 2] [--batch 1,32]

Converts the bundled all-MiniLM-L6-v2 twice (FP32, and ``--quantize auto`` for ONNX Runtime and OpenVINO,
calibrated on lines 301+ of ``benchmarks/data/sentences.txt``), then times ``Embedder.encode`` of both
artifacts and ``SentenceTransformer.encode`` (torch) on lines 1-300 of that file, which calibration never saw,
at their natural lengths: each row in its own process, rounds alternating, whole passes over the texts.
Fidelity (cosine, recall@10, spearman) is against sentence-transformers on the bench's 256 generated
held-back sentences. Writes ``benchmarks/results/embed_texts.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
TIMED = 300  # the first lines are timed; the rest calibrate


def _convert(out: Path, source: Path, extra: list[str]) -> Path:
    if not (out / "edgekit.json").is_file():
        cmd = [sys.executable, "-m", "edgekit", "convert", str(source), "-o", str(out), *extra]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return out


def _best_ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per batch: the fastest edgekit row by median texts/s, and its per-round texts/s ratio to the baseline."""
    rows = [r for r in report["results"] if r["status"] == "ok"]
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        mine = [r for r in rows if r["batch"] == batch]
        base = next(r for r in mine if r["is_baseline"])
        best = max((r for r in mine if not r["is_baseline"]), key=lambda r: r["throughput"]["items_per_s"])
        per_round = [
            a["throughput"]["items_per_s"] / b["throughput"]["items_per_s"]
            for a, b in zip(best["rounds"], base["rounds"], strict=True)
        ]
        out.append({
            "batch": batch, "best": f"{Path(best['model']).name} on {best['target']}",
            "best_precision": best["session"]["precision"], "best_texts_per_s": best["throughput"]["items_per_s"],
            "sentence_transformers_texts_per_s": base["throughput"]["items_per_s"],
            "ratio_median": statistics.median(per_round), "ratio_per_round": per_round,
            "ratio_min": min(per_round),
        })  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "embed_texts")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", default="1,32")
    args = parser.parse_args()
    from edgekit.benchmark import bench
    from edgekit.benchmark.plan import parse_batches
    from edgekit.sources import bundled_minilm_dir

    source = bundled_minilm_dir()
    lines = [ln for ln in SENTENCES.read_text(encoding="utf-8").splitlines() if ln.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    timed, calib = args.out / "timed.txt", args.out / "calibration.txt"
    timed.write_text("\n".join(lines[:TIMED]) + "\n", encoding="utf-8")
    calib.write_text("\n".join(lines[TIMED:]) + "\n", encoding="utf-8")
    fp32 = _convert(args.out / "minilm-fp32", source, [])
    int8 = _convert(args.out / "minilm-auto", source, ["--quantize", "auto", "--fidelity", "cosine>=0.99",
                    "--calib-data", str(calib), "--target", "onnxruntime", "--target", "openvino"])  # fmt: skip
    report = bench([fp32, int8], ["onnxruntime", "openvino"], batches=parse_batches(args.batch),
                   threads=args.threads, rounds=args.rounds, texts=timed, baseline="sentence-transformers",
                   baseline_source=source, duration=2.0, iterations=20,
                   progress=lambda done, total, label: print(f"[{done}/{total}] {label}", flush=True))  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    data["summary"] = _best_ratios(data)
    (args.results / "embed_texts.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    report.write_markdown(args.results / "embed_texts.md")
    with (args.results / "embed_texts.md").open("a") as f:
        f.write("\n## Best edgekit target vs sentence-transformers (texts/s, median of per-round ratios)\n\n")
        f.write("| batch | best | precision | texts/s | sentence-transformers texts/s | ratio (min over rounds) |\n")
        f.write("|---|---|---|---|---|---|\n")
        for s in data["summary"]:
            f.write(f"| {s['batch']} | {s['best']} | {s['best_precision']} | {s['best_texts_per_s']:.0f} |"
                    f" {s['sentence_transformers_texts_per_s']:.0f} | {s['ratio_median']:.2f}x"
                    f" ({s['ratio_min']:.2f}x) |\n")  # fmt: skip
    for s in data["summary"]:
        print(
            f"batch {s['batch']}: {s['best']} ({s['best_precision']}) {s['best_texts_per_s']:.0f} texts/s vs"
            f" sentence-transformers {s['sentence_transformers_texts_per_s']:.0f}: {s['ratio_median']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
