"""`make demo`: the main job on the bundled all-MiniLM-L6-v2, end to end.

    .venv/bin/python benchmarks/demo.py [--out build/demo] [--no-bench] [--rounds 3]

1. convert it to an FP32 artifact, validated on every available runtime;
2. compress it: ``--quantize auto --fidelity cosine>=0.99`` for every CPU runtime, calibrated on
   ``benchmarks/data/sentences.txt`` (Python documentation sentences);
3. encode 300 held-back sentences of a different kind (everyday sentences from ``edgekit.benchmark.texts``)
   with ``edgekit.Embedder`` on every runtime, for both artifacts, and compare with sentence-transformers'
   own ``encode`` (torch): mean and min cosine, recall@10 of the nearest neighbours, file size;
4. ``edgekit bench --texts`` both artifacts against sentence-transformers at batch 1 and 32 (each row in its
   own process, rounds alternating), with a PNG of the latency distributions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "benchmarks" / "data" / "sentences.txt"
HELD_OUT = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--no-bench", action="store_true", help="Skip the benchmark step.")
    parser.add_argument("--rounds", type=int, default=3, help="Benchmark rounds (alternating).")
    args = parser.parse_args()

    import edgekit
    from edgekit.benchmark.texts import heldout_texts
    from edgekit.sources import bundled_minilm_dir

    source = bundled_minilm_dir()
    targets = [t for t in edgekit.available_targets() if t != "tensorrt" or _tensorrt_usable()]
    cpu_targets = edgekit.available_targets("cpu")
    fp32, int8 = args.out / "minilm", args.out / "minilm-int8"
    _step(f"1. convert {source.name} -> {fp32} (validated on {', '.join(targets)})")
    _convert(source, fp32, [["--validate-target", t] for t in targets])
    _step(f"2. compress: --quantize auto --fidelity cosine>=0.99 for {', '.join(cpu_targets)} -> {int8}")
    _convert(source, int8, [["--quantize", "auto", "--fidelity", "cosine>=0.99", "--calib-data", str(CALIBRATION)],
                            *(["--target", t] for t in cpu_targets)])  # fmt: skip
    texts = heldout_texts(HELD_OUT, seed=7)
    texts_file = args.out / "heldout.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    _step(f"3. encode {len(texts)} held-back sentences (not the calibration text's kind) on every target")
    rows = _fidelity_rows([fp32, int8], cpu_targets, texts, source)
    _print_fidelity(rows)
    if args.no_bench:
        return 0
    _step("4. benchmark: Embedder.encode vs sentence-transformers' encode, batch 1 and 32, 2 threads")
    cmd = [sys.executable, "-m", "edgekit", "bench", str(fp32), str(int8), "--texts", str(texts_file),
           "--batch", "1,32", "--threads", "2", "--rounds", str(args.rounds), "--baseline", "sentence-transformers",
           "--baseline-source", str(source), "--json", str(args.out / "bench.json"),
           "--markdown", str(args.out / "bench.md")]  # fmt: skip
    if _has_matplotlib():
        cmd += ["--plot", str(args.out / "bench.png")]
    for t in cpu_targets:
        cmd += ["-t", t]
    code = subprocess.call(cmd)
    if code == 0:
        _print_summary(rows, json.loads((args.out / "bench.json").read_text()))
    return code


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _convert(source: Path, out: Path, option_groups: list[list[str]]) -> None:
    cmd = [sys.executable, "-m", "edgekit", "convert", str(source), "-o", str(out), "--force"]
    for group in option_groups:
        cmd += list(group)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"   done in {time.perf_counter() - start:.0f} s")


def _fidelity_rows(artifacts: list[Path], targets: list[str], texts: list[str], source: Path) -> list[dict]:
    """Each artifact on each CPU target against sentence-transformers' own encode of the same texts."""
    from sentence_transformers import SentenceTransformer

    import edgekit
    from edgekit.retrieval import recall_at_k, similarity_spearman

    reference = SentenceTransformer(str(source), device="cpu").encode(texts, batch_size=32, convert_to_numpy=True)
    rows = []
    for artifact in artifacts:
        for target in targets:
            with edgekit.Embedder(artifact, target=target) as embedder:
                got = embedder.encode(texts, batch_size=32)
                precision = embedder.info().precision
                file = embedder.session.model.path
            cos = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
            rows.append({
                "artifact": artifact.name, "target": target, "file": file.name, "precision": precision,
                "mb": _file_mb(file), "mean_cosine": float(cos.mean()),
                "min_cosine": float(cos.min()), "recall@10": recall_at_k(reference, got, 10),
                "spearman": similarity_spearman(reference, got),
            })  # fmt: skip
    return rows


def _file_mb(path: Path) -> float:
    from edgekit.benchmark.plan import onnx_file_bytes

    return onnx_file_bytes(path) / 1e6


def _print_fidelity(rows: list[dict]) -> None:
    print(f"{'artifact':<12} {'target':<12} {'file':<24} {'precision':<26} {'MB':>6} {'mean cos':>9} {'min cos':>8}"
          f" {'recall@10':>9} {'spearman':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['artifact']:<12} {r['target']:<12} {r['file']:<24} {r['precision']:<26} {r['mb']:>6.1f}"
              f" {r['mean_cosine']:>9.5f} {r['min_cosine']:>8.4f} {r['recall@10']:>9.3f}"
              f" {r['spearman']:>9.4f}")  # fmt: skip
    print("reference: sentence-transformers' encode of the source model (torch FP32), same texts")


def _print_summary(rows: list[dict], report: dict) -> None:
    """One table: what each artifact costs (size, fidelity) and buys (texts/s vs sentence-transformers)."""
    speed: dict[tuple[str, str, int], dict] = {}
    for r in report["results"]:
        if r["status"] == "ok":
            speed[(Path(r["model"]).name, r["target"], r["batch"])] = r
    _step("summary: fidelity on held-back text and speed vs sentence-transformers (median over rounds)")
    print(f"{'artifact':<12} {'target':<12} {'precision':<26} {'MB':>6} {'mean cos':>9} {'recall@10':>9}"
          f" {'texts/s b1':>10} {'x ST':>6} {'texts/s b32':>11} {'x ST':>6}")  # fmt: skip
    for r in rows:
        cells = []
        for batch in (1, 32):
            row = speed.get((r["artifact"], r["target"], batch)) or {}
            rate = (row.get("throughput") or {}).get("items_per_s")
            ratio = (row.get("speedup") or {}).get("items_per_s")
            cells += [f"{rate:>10.0f}" if rate else f"{'-':>10}", f"{ratio:>5.2f}x" if ratio else f"{'-':>6}"]
        print(f"{r['artifact']:<12} {r['target']:<12} {r['precision']:<26} {r['mb']:>6.1f} {r['mean_cosine']:>9.5f}"
              f" {r['recall@10']:>9.3f} {cells[0]} {cells[1]} {cells[2]:>11} {cells[3]}")  # fmt: skip
    flags = " ".join(report["machine"].get("cpu_flags") or [])
    print(f"machine: {report['machine']['cpu_model']}, {report['machine']['usable_cores']} cores; flags: {flags}")


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _tensorrt_usable() -> bool:
    from edgekit.runtimes import describe_targets

    return any(r["name"] == "tensorrt" and r["available"] for r in describe_targets())


if __name__ == "__main__":
    raise SystemExit(main())
