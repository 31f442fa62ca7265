"""INT8 alone against pruned + distilled + INT8, side by side: speed, file size and fidelity to the original.

    .venv/bin/python benchmarks/prune_minilm.py [--work build/prune_minilm] [--rounds 9] [--reuse]

1. Two conversions of the bundled all-MiniLM-L6-v2, timed as whole commands:
   ``edgekit convert <MiniLM> -o WORK/int8 --quantize auto --calib-data benchmarks/data/sentences.txt`` and
   ``edgekit convert <MiniLM> -o WORK/pruned --prune 0.5 --distill --quantize auto --calib-data ...`` (``--prune``,
   ``--extra`` change the second). ``--reuse`` keeps artifacts already there.
2. Fidelity of every target's chosen variant to the original torch model, through ``edgekit.Embedder`` on that
   target: mean and min cosine, recall@10 and Spearman on ``heldout_texts(300, seed=7)`` (generated everyday
   sentences: neither the WordNet corpus distillation reads nor the calibration text), one batch of 32 at a time.
3. Latency of each chosen variant (and each artifact's FP32 model) on its target: batch 1, seq 128, 2 threads,
   every model in its own fresh process, rounds alternating; per round the ratio of INT8-alone's fastest variant
   to the pruned artifact's fastest variant, then the median over rounds.

Writes ``benchmarks/results/prune_minilm.{json,md}`` (``--results``) with the CPU and its ISA flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALIB = ROOT / "benchmarks" / "data" / "sentences.txt"


def convert(out: Path, extra: list[str], reuse: bool) -> float | None:
    """``edgekit convert`` of the bundled MiniLM with ``--quantize auto`` plus ``extra``; its wall seconds (kept
    beside the artifact, so a ``--reuse`` run still reports them; None when unknown)."""
    from edgekit.sources import bundled_minilm_dir

    took = out.with_name(out.name + ".seconds")
    if reuse and (out / "edgekit.json").exists():
        return float(took.read_text()) if took.exists() else None
    cmd = [sys.executable, "-m", "edgekit", "convert", str(bundled_minilm_dir()), "-o", str(out), "--force",
           "--quantize", "auto", "--calib-data", str(CALIB), *extra]  # fmt: skip
    print("$", " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = round(time.perf_counter() - start, 1)
    took.write_text(f"{seconds}\n")
    return seconds


def variants(artifact: Path) -> dict[str, dict[str, Any]]:
    """target -> the file auto chose there, its precision and size (MB)."""
    from edgekit.benchmark.plan import onnx_file_bytes

    manifest = json.loads((artifact / "edgekit.json").read_text())
    out = {}
    for target, file in manifest["variants"].items():
        out[target] = {"file": file, "precision": manifest.get("variant_precisions", {}).get(file, ""),
                       "mb": round(onnx_file_bytes(artifact / file) / 1e6, 1)}  # fmt: skip
    return out


def fidelity(artifact: Path, target: str, reference: Any, texts: list[str]) -> dict[str, float]:
    import numpy as np

    import edgekit
    from edgekit.fidelity import sample_cosines
    from edgekit.retrieval import recall_at_k, similarity_spearman

    with edgekit.Embedder(artifact, target=target, threads=2) as embedder:
        got = embedder.encode(texts)
    cos = sample_cosines(reference, got)
    return {"mean_cosine": round(float(np.mean(cos)), 4), "min_cosine": round(float(np.min(cos)), 4),
            "recall@10": round(recall_at_k(reference, got, 10), 4),
            "spearman": round(similarity_spearman(reference, got), 4)}  # fmt: skip


def latency(runs: dict[str, Path], rounds: int, duration: float) -> dict[str, Any]:
    """Every chosen variant and FP32 model of each artifact, timed alternating; per-round ratios of the fastest."""
    from benchmarks.peers import latency_feeds
    from edgekit.benchmark.measure import Candidate, measure_latency
    from edgekit.benchmark.plan import BenchConfig
    from edgekit.benchmark.texts import heldout_texts
    from edgekit.sources import bundled_minilm_dir

    candidates = []
    for name, artifact in runs.items():
        for target, v in variants(artifact).items():
            candidates.append(Candidate(f"{name}:{target}", artifact / v["file"], target))
            candidates.append(Candidate(f"{name}:{target}:fp32", artifact / "model.onnx", target))
    feeds = latency_feeds(bundled_minilm_dir(), heldout_texts(40, seed=11))
    config = BenchConfig(iterations=20, duration_s=duration, warmup_s=0.5, warmup_iterations=10, rounds=rounds,
                         threads=2, cold_start=False, fidelity=False, timeout_s=600)  # fmt: skip
    timed = measure_latency(candidates, feeds, config)
    rows = {k: {"p50_ms": round(r.p50_ms, 3), "rounds_p50_ms": r.rounds_p50_ms, "precision": r.precision}
            for k, r in timed.items()}  # fmt: skip
    per_round = {name: [min(timed[c.key].rounds_p50_ms[i] for c in candidates
                            if c.key.startswith(f"{name}:") and not c.key.endswith(":fp32")) for i in range(rounds)]
                 for name in runs}  # fmt: skip
    base, pruned = list(runs)
    ratios = [round(a / b, 4) for a, b in zip(per_round[base], per_round[pruned], strict=True)]
    return {"rows": rows, "fastest_per_round_ms": per_round, "ratios": ratios,
            "speedup_median": round(statistics.median(ratios), 3)}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# all-MiniLM-L6-v2: INT8 alone vs pruned + distilled + INT8",
        "",
        f"Run {result['when']} on {result['cpu']}; numerics flags: {' '.join(result['flags'])}.",
        "",
        f"Commands: `{result['commands']['int8']}` and `{result['commands']['pruned']}`"
        f" (whole-command wall time in seconds: {result['convert_seconds']}; None = not known).",
        "",
        "Fidelity to the original torch model on 300 generated everyday sentences (`heldout_texts(300, seed=7)`),"
        " through `edgekit.Embedder` on each target. Latency: batch 1, seq 128, 2 threads, each model in its own"
        f" process, {result['rounds']} rounds alternating; p50 = median of the per-round p50s.",
        "",
        "| artifact | target | variant | precision | MB | p50 ms | FP32 p50 ms | mean cos | min cos | recall@10 |"
        " spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = result["latency"]["rows"]
    for name, per_target in result["artifacts"].items():
        for target, v in per_target.items():
            f, key = v["fidelity"], f"{name}:{target}"
            lines.append(
                f"| {name} | {target} | {v['file']} | {v['precision']} | {v['mb']} | {rows[key]['p50_ms']}"
                f" | {rows[key + ':fp32']['p50_ms']} | {f['mean_cosine']} | {f['min_cosine']}"
                f" | {f['recall@10']} | {f['spearman']} |"
            )
    lat = result["latency"]
    lines += ["", f"Fastest variant, INT8 alone vs pruned: **{lat['speedup_median']}x** (median of per-round ratios"
              f" {lat['ratios']}).", "", f"Reproduce: `{result['reproduce']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "prune_minilm")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--prune", default="0.5")
    parser.add_argument(
        "--extra", default="", help='more convert options for the pruned run, e.g. "--distill-time 20m"'
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--reuse", action="store_true", help="keep artifacts already converted under --work")
    args = parser.parse_args()
    import torch

    from edgekit.benchmark.texts import heldout_texts
    from edgekit.cpu import cpu_model, numeric_cpu_flags
    from edgekit.sources import bundled_minilm_dir
    from tools.measure_heldout import reference_embeddings

    torch.set_num_threads(2)
    pruned_opts = ["--prune", args.prune, "--distill", *args.extra.split()]
    runs = {"int8 alone": args.work / "int8", "pruned + distilled + int8": args.work / "pruned"}
    seconds = {
        name: convert(out, [] if name == "int8 alone" else pruned_opts, args.reuse) for name, out in runs.items()
    }
    texts = heldout_texts(300, seed=7)
    reference = reference_embeddings(bundled_minilm_dir(), texts)
    artifacts = {name: variants(out) for name, out in runs.items()}
    for name, per_target in artifacts.items():
        for target, v in per_target.items():
            v["fidelity"] = fidelity(runs[name], target, reference, texts)
            print(name, target, v, flush=True)
    base_cmd = "edgekit convert <MiniLM> --quantize auto --calib-data benchmarks/data/sentences.txt"
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "flags": numeric_cpu_flags(),
        "commands": {"int8": f"{base_cmd} -o int8", "pruned": f"{base_cmd} -o pruned {' '.join(pruned_opts)}"},
        "convert_seconds": seconds, "rounds": args.rounds, "artifacts": artifacts,
        "latency": latency(runs, args.rounds, args.duration),
        "reproduce": "python benchmarks/prune_minilm.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "prune_minilm.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "prune_minilm.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
