"""edgekit's per-call overhead: ``Session.run`` vs the bare backend call, each in its own process.

    .venv/bin/python benchmarks/overhead.py [--rounds 5] [--iterations 3000] [--targets onnxruntime openvino]

For every target, rounds alternate bare / edgekit processes (A B A B ...) so drift on a shared machine hits
both alike. Each process warms up, then times every call with perf_counter_ns and reports the median.
The promise checked: overhead <= 3% or <= 20 us per call, on the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def tiny_mlp(path: Path) -> Path:
    """A small MLP (64 -> 128 -> 10) so that per-call overhead, not compute, dominates."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((128, 10)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _bare_call(target: str, model: Path, threads: int):
    if target == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return lambda feeds: sess.run(names, feeds)
    if target == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(model), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads)}
        )
        request = compiled.create_infer_request()
        return lambda feeds: request.infer(feeds, share_inputs=True, share_outputs=False)
    raise SystemExit(f"no bare call for {target}")


def _edgekit_call(target: str, model: Path, threads: int):
    import edgekit

    session = edgekit.load(model, target=target, threads=threads)
    return session.run


def child(mode: str, target: str, model: Path, iterations: int, threads: int) -> None:
    call = (_bare_call if mode == "bare" else _edgekit_call)(target, model, threads)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)}
    for _ in range(max(200, iterations // 10)):
        call(feeds)
    samples = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        t0 = clock()
        call(feeds)
        samples[i] = clock() - t0
    print(json.dumps({"median_us": float(np.median(samples)) / 1000, "mean_us": float(samples.mean()) / 1000}))


def measure(mode: str, target: str, model: Path, iterations: int, threads: int) -> float:
    cmd = [sys.executable, __file__, "--child", mode, "--target", target, "--model", str(model)]
    cmd += ["--iterations", str(iterations), "--threads", str(threads)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["median_us"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--targets", nargs="*", default=None)
    parser.add_argument("--child", choices=["bare", "edgekit"])
    parser.add_argument("--target")
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.target, args.model, args.iterations, args.threads)
        return 0
    from edgekit.runtimes import available_targets

    targets = args.targets or [t for t in available_targets() if t in ("onnxruntime", "openvino")]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_mlp(Path(tmp) / "mlp.onnx")
        print(
            f"model: MLP 64->128->10, batch 1, {args.threads} thread(s), {args.iterations} calls x {args.rounds} rounds"
        )
        print(f"{'target':<12} {'bare us':>9} {'edgekit us':>11} {'overhead us':>12} {'overhead %':>11}  verdict")
        for target in targets:
            bare, ek = [], []
            for r in range(args.rounds):
                order = ("bare", "edgekit") if r % 2 == 0 else ("edgekit", "bare")
                for mode in order:
                    (bare if mode == "bare" else ek).append(measure(mode, target, model, args.iterations, args.threads))
            b, e = statistics.median(bare), statistics.median(ek)
            over, pct = e - b, (e - b) / b * 100
            passed = over <= 20 or pct <= 3
            ok &= passed
            print(f"{target:<12} {b:9.2f} {e:11.2f} {over:12.2f} {pct:10.1f}%  {'ok' if passed else 'OVER BUDGET'}")
            print(f"{'':12} rounds bare={[round(x, 1) for x in bare]} edgekit={[round(x, 1) for x in ek]}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
