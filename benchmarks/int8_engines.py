"""Static INT8 engines on MiniLM: ONNX Runtime's ``quantize_static`` vs NNCF (ONNX backend), next to FP32.

    .venv/bin/python benchmarks/int8_engines.py [--out build/int8_engines] [--rounds 5]

Both quantize the bundled all-MiniLM-L6-v2 (``edgekit convert``, FP32) with the same calibration: the
converter's own split of ``benchmarks/data/sentences.txt``. Fidelity: cosine to the FP32 model's embeddings on
the held-back sentences calibration did not see, on ONNX Runtime and OpenVINO. Latency:
``edgekit.benchmark.measure.measure_latency`` (each model in its own process, rounds alternating, median of
per-round p50s) on the longest held-back sample. File sizes as written.

Writes ``benchmarks/results/int8_engines.{json,md}`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
TARGETS = ("onnxruntime", "openvino")
ENGINES = ("onnxruntime", "nncf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "int8_engines")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from edgekit.benchmark.facts import machine_facts
    from edgekit.sources import bundled_minilm_dir

    artifact = args.out / "minilm"
    if not (artifact / "edgekit.json").exists():
        subprocess.run([sys.executable, "-m", "edgekit", "convert", str(bundled_minilm_dir()), "-o", str(artifact),
                        "--force"], check=True, cwd=ROOT)  # fmt: skip
    report = {"machine": machine_facts(), "rounds": args.rounds, "minilm": _compare(artifact, args.rounds)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "int8_engines.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results / "int8_engines.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _compare(artifact: Path, rounds: int) -> dict[str, Any]:
    from edgekit.artifact import TOKENIZER_FILE, read_manifest
    from edgekit.benchmark.measure import CANDIDATE_TIMING, Candidate, measure_latency
    from edgekit.converters.calibration import load_calibration
    from edgekit.converters.quantize.model import ensure_node_names, quantize_model
    from edgekit.converters.quantize.options import QuantizeOptions
    from edgekit.onnxfile import io_specs, read_onnx

    base = artifact / "model.onnx"
    ensure_node_names(base)
    data = load_calibration(SENTENCES, io_specs(read_onnx(base, check=False))[0], tokenizer=artifact / TOKENIZER_FILE)
    kinds = dict(read_manifest(artifact).output_kinds)
    refs = _outputs(base, "onnxruntime", data.heldout)
    files = {"fp32": base}
    for engine in ENGINES:
        files[engine] = artifact / f"model.int8-{engine}.onnx"
        quantize_model(base, files[engine], QuantizeOptions(mode="int8", engine=engine), data.calibration)
    feeds = max(data.heldout, key=lambda f: sum(v.size for v in f.values()))
    config = replace(CANDIDATE_TIMING, rounds=rounds, duration_s=2.0)
    row: dict[str, Any] = {"heldout_samples": len(data.heldout), "size_mb": {n: round(p.stat().st_size / 1e6, 1)
                           for n, p in files.items()}}  # fmt: skip
    for target in TARGETS:
        fid = {n: _fidelity(refs, _outputs(p, target, data.heldout), kinds) for n, p in files.items() if n != "fp32"}
        lat = measure_latency([Candidate(n, p, target) for n, p in files.items()], feeds, config)
        row[target] = {"fidelity": fid, "p50_ms": {n: round(r.p50_ms, 4) for n, r in lat.items()},
                       "precision": {n: r.precision for n, r in lat.items()}}  # fmt: skip
    return row


def _outputs(path: Path, target: str, feeds: list) -> list:
    from edgekit.fidelity import run_all
    from edgekit.runtimes.loading import load, model_ref

    with load(model_ref(path), target=target) as session:
        return run_all(session.run, feeds)


def _fidelity(refs: list, got: list, kinds: dict) -> dict[str, float]:
    from edgekit.fidelity import fidelity_metrics

    m = fidelity_metrics(refs, got, kinds)
    return {k: round(float(v), 5) for k, v in m.items() if k in ("cosine", "min_cosine", "rel_l2")}


def _markdown(report: dict[str, Any]) -> str:
    m, row = report["machine"], report["minilm"]
    lines = ["# Static INT8 engines on all-MiniLM-L6-v2: ONNX Runtime quantize_static vs NNCF\n",
             f"CPU: {m.get('cpu_model')}; numerics flags: {' '.join(m.get('cpu_flags', []))}; "
             f"{report['rounds']} alternating rounds; {row['heldout_samples']} held-back sentences\n",
             "| target | model | file MB | mean cosine | min cosine | p50 ms | vs fp32 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for target in TARGETS:
        p50 = row[target]["p50_ms"]
        for name in ("fp32", *ENGINES):
            f = row[target]["fidelity"].get(name, {"cosine": 1.0, "min_cosine": 1.0})
            speedup = p50["fp32"] / p50[name]
            lines.append(f"| {target} | {name} ({row[target]['precision'][name]}) | {row['size_mb'][name]} | "
                         f"{f['cosine']:.5f} | {f['min_cosine']:.5f} | {p50[name]:.3f} | {speedup:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
