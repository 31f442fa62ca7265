"""Static INT8 activations on CPU runtimes: uint8 with a zero point (edgekit's default) vs symmetric int8.

    .venv/bin/python benchmarks/int8_activations.py [--out build/int8_activations] [--rounds 5]

TensorRT's explicit quantization takes INT8 with zero point 0 only, so a TensorRT variant needs symmetric
int8 activations. Should CPU targets get them too? This measures what they would cost there:

1. The bundled all-MiniLM-L6-v2 (``edgekit convert``, FP32) and the test CNN (``tests/models/cnn.py``).
2. Each quantized twice with the same calibration (the converter's own split of
   ``benchmarks/data/sentences.txt``; for the CNN, uniform [0, 1) images): ``activation_symmetric`` off and on.
3. Fidelity: cosine of each model's outputs to the FP32 model's on the held-back samples calibration did not
   see, on ONNX Runtime and OpenVINO.
4. Latency: ``edgekit.benchmark.measure.measure_latency`` (each model in its own process, rounds alternating
   A B A B, median of per-round p50s) on the largest held-back sample; the ratio symmetric / asymmetric.

Writes ``benchmarks/results/int8_activations.{json,md}`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "data" / "sentences.txt"
TARGETS = ("onnxruntime", "openvino")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "int8_activations")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from edgekit.benchmark.facts import machine_facts
    from edgekit.sources import bundled_minilm_dir

    rows = {
        "minilm": _compare(_converted(str(bundled_minilm_dir()), args.out / "minilm"), _text_data, args.rounds),
        "cnn": _compare(_converted(f"{ROOT}/tests/models/cnn.py:make", args.out / "cnn"), _image_data, args.rounds),
    }
    report = {"machine": machine_facts(), "rounds": args.rounds, "models": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "int8_activations.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results / "int8_activations.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _converted(source: str, out: Path) -> Path:
    if not (out / "edgekit.json").exists():
        subprocess.run([sys.executable, "-m", "edgekit", "convert", source, "-o", str(out), "--force"],
                       check=True, cwd=ROOT)  # fmt: skip
    return out


def _text_data(artifact: Path, inputs: list) -> Any:
    from edgekit.artifact import TOKENIZER_FILE
    from edgekit.converters.calibration import load_calibration

    return load_calibration(SENTENCES, inputs, tokenizer=artifact / TOKENIZER_FILE)


def _image_data(artifact: Path, inputs: list) -> Any:
    from edgekit.converters.calibration import load_calibration

    spec = inputs[0]
    shape = [1 if isinstance(d, str) else d for d in spec.shape]
    rng = np.random.default_rng(0)
    return load_calibration([{spec.name: rng.random(shape).astype(np.float32)} for _ in range(300)], inputs)


def _compare(artifact: Path, data_for: Any, rounds: int) -> dict[str, Any]:
    from edgekit.artifact import read_manifest
    from edgekit.benchmark.measure import CANDIDATE_TIMING, Candidate, measure_latency
    from edgekit.converters.quantize.model import ensure_node_names, quantize_model
    from edgekit.converters.quantize.options import QuantizeOptions
    from edgekit.onnxfile import io_specs, read_onnx

    base = artifact / "model.onnx"
    ensure_node_names(base)
    inputs = io_specs(read_onnx(base, check=False))[0]
    data = data_for(artifact, inputs)
    kinds = dict(read_manifest(artifact).output_kinds)
    refs = _outputs(base, "onnxruntime", data.heldout)
    files = {}
    for name, symmetric in (("asymmetric", False), ("symmetric", True)):
        files[name] = artifact / f"model.int8-{name}.onnx"
        options = QuantizeOptions(mode="int8", activation_symmetric=symmetric)
        quantize_model(base, files[name], options, data.calibration)
    feeds = max(data.heldout, key=lambda f: sum(v.size for v in f.values()))
    config = replace(CANDIDATE_TIMING, rounds=rounds, duration_s=2.0)
    row: dict[str, Any] = {"heldout_samples": len(data.heldout), "calibration_samples": len(data.calibration)}
    for target in TARGETS:
        fid = {n: _fidelity(refs, _outputs(p, target, data.heldout), kinds) for n, p in files.items()}
        lat = measure_latency([Candidate(n, p, target) for n, p in files.items()], feeds, config)
        ratio = lat["symmetric"].p50_ms / lat["asymmetric"].p50_ms
        row[target] = {"fidelity": fid, "p50_ms": {n: round(r.p50_ms, 4) for n, r in lat.items()},
                       "symmetric_over_asymmetric_latency": round(ratio, 3)}  # fmt: skip
    return row


def _outputs(path: Path, target: str, feeds: list) -> list:
    from edgekit.fidelity import run_all
    from edgekit.runtimes.loading import load, model_ref

    with load(model_ref(path), target=target) as session:
        return run_all(session.run, feeds)


def _fidelity(refs: list, got: list, kinds: dict) -> dict[str, float]:
    from edgekit.fidelity import fidelity_metrics

    m = fidelity_metrics(refs, got, kinds)
    return {k: round(float(v), 5) for k, v in m.items() if k in ("cosine", "min_cosine", "rel_l2", "top1")}


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Static INT8 activations: asymmetric (uint8) vs symmetric (int8) on CPU runtimes\n",
             f"CPU: {m.get('cpu_model')}; numerics flags: {' '.join(m.get('cpu_flags', []))}\n",
             "| model | target | cosine asym | cosine sym | min cosine asym | min cosine sym | latency sym/asym |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for model, row in report["models"].items():
        for target in TARGETS:
            f, r = row[target]["fidelity"], row[target]["symmetric_over_asymmetric_latency"]
            a, s = f["asymmetric"], f["symmetric"]
            lines.append(f"| {model} | {target} | {a['cosine']:.5f} | {s['cosine']:.5f} | "
                         f"{a['min_cosine']:.5f} | {s['min_cosine']:.5f} | {r:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
