"""Reproduce the MiniLM quantization numbers: torch eager FP32 vs every variant on every CPU target.

    .venv/bin/python benchmarks/quantize_minilm.py [--out build/quantize_minilm] [--rounds 5] [--duration 3]

1. ``edgekit convert <bundled all-MiniLM-L6-v2> -o OUT/auto --quantize auto --fidelity "cosine>=0.99"
   --calib-data benchmarks/data/sentences.txt`` (the command from the issue), and ``edgekit convert
   OUT/auto/model.onnx -o OUT/int8 --quantize int8 --target openvino`` for the static QDQ model on both runtimes.
2. Fidelity: mean and min cosine to torch FP32 embeddings on the held-back sentences (the ones the converter's
   calibration did not see: same split), batch 1, natural length.
3. Latency: batch 1, seq 128 (held-back sentences joined and truncated to 128 tokens), single-stream p50.
   Every model/target runs in its own fresh process; all of them alternate within each round (A B C A B C);
   the ratio to torch is taken per round, then the median over rounds.

Writes ``benchmarks/results/quantize_minilm.{json,md}`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
GOAL = "cosine>=0.99"
LATENCY_SEQ = 128  # tokens of the latency input: a fixed shape, so rounds and runs compare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "quantize_minilm")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="Seconds timed per model per round.")
    parser.add_argument("--reuse", action="store_true", help="Reuse artifacts already in --out.")
    args = parser.parse_args()
    from edgekit.sources import bundled_minilm_dir

    source = bundled_minilm_dir()
    conversions = _convert(source, args.out, args.reuse)
    models = _models(args.out)
    heldout, long_text = _heldout(args.out / "auto")
    fidelity = _fidelity(source, args.out / "auto", models, heldout)
    feeds = args.out / "bench_feeds.npz"
    np.savez(feeds, **_encode(args.out / "auto", [long_text], max_length=LATENCY_SEQ))
    latency = _latency(source, models, feeds, args.rounds, args.duration)
    result = {"machine": _machine(), "goal": GOAL, "conversions": conversions, "heldout_sentences": len(heldout),
              "rounds": args.rounds, "duration_s": args.duration, "rows": _rows(models, fidelity, latency),
              "auto": _auto_record(args.out / "auto")}  # fmt: skip
    _write(result, args.results)
    return 0


def _convert(source: Path, out: Path, reuse: bool) -> dict[str, Any]:
    commands = {
        "auto": ["convert", str(source), "-o", str(out / "auto"), "--quantize", "auto", "--fidelity", GOAL,
                 "--calib-data", str(SENTENCES), "--force"],
        "int8": ["convert", str(out / "auto" / "model.onnx"), "-o", str(out / "int8"), "--quantize", "int8",
                 "--calib-data", str(SENTENCES), "--target", "openvino", "--force"],
    }  # fmt: skip
    done = {}
    for name, cmd in commands.items():
        if reuse and (out / name / "edgekit.json").is_file():
            done[name] = {"command": "edgekit " + " ".join(cmd), "seconds": None}
            continue
        print(f"$ edgekit {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgekit", *cmd], check=True)
        done[name] = {"command": "edgekit " + " ".join(cmd), "seconds": round(time.perf_counter() - start, 1)}
    return done


def _models(out: Path) -> list[dict[str, str]]:
    """(label, target, file) for the FP32 model, auto's choice per target, and the static QDQ model."""
    from edgekit.artifact import read_manifest

    auto = read_manifest(out / "auto")
    rows = [{"label": "torch eager fp32", "target": "torch", "path": ""}]
    for target in ("onnxruntime", "openvino"):
        rows.append({"label": f"{target} fp32", "target": target, "path": str(out / "auto" / "model.onnx")})
        chosen = auto.variants.get(target)
        if chosen and chosen != "model.onnx":
            rows.append({"label": f"{target} auto: {chosen}", "target": target, "path": str(out / "auto" / chosen)})
        rows.append({"label": f"{target} int8 QDQ", "target": target, "path": str(out / "int8" / "model.int8.onnx")})
    return rows


def _heldout(artifact: Path) -> tuple[list[str], str]:
    """The held-back lines of the converter's split (same options, same seed), and a 128-token text."""
    from edgekit.converters.calibration import CalibrationOptions, split_indices

    lines = [ln.strip() for ln in SENTENCES.read_text().splitlines() if ln.strip()]
    opts = CalibrationOptions()
    _, held = split_indices(len(lines), opts.holdout, opts.seed)
    sentences = [lines[i] for i in held]
    return sentences, " ".join(sentences)


def _encode(artifact: Path, texts: list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
    """Feeds for ``texts``, truncated where the model truncates (256 for MiniLM) unless ``max_length`` says."""
    from edgekit.text import TextEncoder

    return TextEncoder.for_artifact(artifact, max_length=max_length).encode(texts)


def _fidelity(source: Path, artifact: Path, models: list[dict], sentences: list[str]) -> dict[str, dict]:
    """Mean/min cosine of every model on every target to torch FP32, one sentence at a time; recall@10 of torch's
    neighbours and Spearman of pairwise similarities over the whole held-back set."""
    import edgekit
    from edgekit.converters.torch_io import run_torch
    from edgekit.fidelity import sample_cosines
    from edgekit.retrieval import retrieval_metrics
    from edgekit.sources import load_source

    feeds = [_encode(artifact, [s]) for s in sentences]
    module = load_source(source).module
    ref = [run_torch(module, f, ["embedding"])["embedding"] for f in feeds]
    out = {}
    for m in models[1:]:
        with edgekit.load(m["path"], target=m["target"]) as session:
            got = [session.run(f)["embedding"] for f in feeds]
        cos = np.concatenate([sample_cosines(r, g) for r, g in zip(ref, got, strict=True)])
        sets = retrieval_metrics(np.concatenate(ref), np.concatenate(got))
        out[m["label"]] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                           "recall@10": sets.get("recall@10"), "spearman": sets.get("spearman")}  # fmt: skip
        print(f"fidelity {m['label']}: mean cosine {cos.mean():.5f}, recall@10 {sets.get('recall@10')}", flush=True)
    return out


def _latency(source: Path, models: list[dict], feeds: Path, rounds: int, duration: float) -> dict[str, Any]:
    """Every model (and torch eager) timed by edgekit's measurement engine: own processes, rounds alternating."""
    from edgekit.benchmark.measure import Candidate, measure_latency
    from edgekit.benchmark.plan import BenchConfig

    artifact = Path(models[1]["path"]).parent  # the auto artifact: its specs are the torch baseline's too
    candidates = [
        Candidate(m["label"], Path(m["path"]) if m["path"] else artifact, m["target"],
                  source=None if m["path"] else str(source))
        for m in models
    ]  # fmt: skip
    timing = BenchConfig(iterations=20, duration_s=duration, warmup_iterations=10, rounds=rounds, cold_start=False)
    with np.load(feeds) as data:
        return measure_latency(candidates, {k: data[k] for k in data.files}, timing)


def _rows(models: list[dict], fidelity: dict, latency: dict[str, Any]) -> list[dict[str, Any]]:
    torch_p50 = latency["torch eager fp32"].rounds_p50_ms
    rows = []
    for m in models:
        lat = latency[m["label"]]
        ratios = [t / p for t, p in zip(torch_p50, lat.rounds_p50_ms, strict=True)]
        rows.append({
            "model": m["label"], "target": m["target"], "file": Path(m["path"]).name if m["path"] else "",
            "precision": lat.precision or "fp32", "p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms,
            "rounds_p50_ms": lat.rounds_p50_ms, "speedup_vs_torch": statistics.median(ratios),
            "speedup_rounds": [round(x, 3) for x in ratios],
            **fidelity.get(m["label"], {"mean_cosine": 1.0, "min_cosine": 1.0, "recall@10": 1.0, "spearman": 1.0}),
        })  # fmt: skip
    return rows


def _auto_record(artifact: Path) -> dict[str, Any]:
    """What ``--quantize auto`` chose and every candidate it measured while converting (from the manifest)."""
    from edgekit.artifact import read_manifest

    manifest = read_manifest(artifact)
    stage = next(s for s in manifest.stages if s.name == "quantize")
    return {"variants": manifest.variants, "candidates": stage.metrics["candidates"]}


def _machine() -> dict[str, Any]:
    import os
    from importlib import metadata

    flags: list[str] = []
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    versions = {p: metadata.version(p) for p in ("onnxruntime", "openvino", "torch", "onnx")}
    return {"cpu": model, "cores": os.cpu_count(), "simd": simd, "python": platform.python_version(), **versions}


def _write(result: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "quantize_minilm.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# all-MiniLM-L6-v2: quantized variants vs torch eager FP32",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, SIMD: {', '.join(m['simd'])}; onnxruntime {m['onnxruntime']}, "
        f"openvino {m['openvino']}, torch {m['torch']}.",
        f"Latency: batch 1, seq 128, single stream, p50 of a {result['duration_s']:g} s loop per model per round, "
        f"{result['rounds']} rounds, every model in its own process, all models alternating within each round; "
        "speedup = torch p50 / model p50 in the same round, median over rounds.",
        f"Fidelity: cosine to torch FP32 embeddings on {result['heldout_sentences']} held-back sentences "
        "(not seen by calibration), batch 1, natural length; recall@10 of torch's neighbours and Spearman of the "
        "pairwise similarities over the same set.",
        "",
        "| model | target | precision | p50 ms | p90 ms | speedup vs torch | mean cosine | min cosine | recall@10 | "
        "spearman |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['target']} | {r['precision']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['speedup_vs_torch']:.2f}x | {r['mean_cosine']:.5f} | {r['min_cosine']:.5f} | "
                     f"{r.get('recall@10') or 0:.3f} | {r.get('spearman') or 0:.4f} |")  # fmt: skip
    lines += ["", f"`--quantize auto` chose {result['auto']['variants']}. Its candidates, measured on the target while "
              "converting (held-back fidelity; latency alternating in fresh processes, vs the FP32 model there):", "",
              "| target | scheme | kept in float | mean cosine | meets | p50 ms | vs fp32 | chosen |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in result["auto"]["candidates"]:
        lines.append(f"| {c['target']} | {c['scheme']} | {len(c['excluded_nodes'])} | {c['fidelity']['cosine']:.5f} | "
                     f"{'yes' if c['meets'] else 'no'} | {c['latency']['p50_ms']:.2f} | {c['speedup_vs_fp32']:.2f}x | "
                     f"{'*' if c.get('chosen') else ''} |")  # fmt: skip
    lines += ["", "Commands:", ""] + [f"    {c['command']}" for c in result["conversions"].values()]
    (directory / "quantize_minilm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
