"""`make demo`: convert the bundled all-MiniLM-L6-v2, run it on every available runtime, show agreement,
then benchmark it against torch eager.

    .venv/bin/python benchmarks/demo.py [--out build/demo] [--no-bench]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Edge devices run small neural networks close to the data.",
    "Quantization trades a little accuracy for a lot of speed.",
    "A sentence embedding maps text to a point in vector space.",
    "The weather in the mountains changed quickly that afternoon.",
    "Compilers turn source code into instructions a processor can execute.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/demo"))
    parser.add_argument("--no-bench", action="store_true", help="Skip the benchmark step.")
    args = parser.parse_args()

    import edgekit
    from edgekit.converters.torch_io import run_torch
    from edgekit.fidelity import sample_cosines
    from edgekit.sources import bundled_minilm_dir, load_source
    from edgekit.text import TextEncoder

    artifact = args.out / "minilm"
    source = bundled_minilm_dir()
    targets = [t for t in edgekit.available_targets() if t != "tensorrt" or _tensorrt_usable()]
    print(f"converting {source}\n  -> {artifact}  (validating on {', '.join(targets)})")
    start = time.perf_counter()
    manifest = edgekit.convert(source, artifact, validate_targets=targets, force=True)
    print(f"  done in {time.perf_counter() - start:.1f} s, exporter {manifest.stages[0].params['exporter']}")

    feeds = TextEncoder.for_artifact(artifact).encode(SENTENCES)
    reference = run_torch(load_source(source).module, feeds, ["embedding"])["embedding"]
    print(f"\n{len(SENTENCES)} sentences, padded to {feeds['input_ids'].shape[1]} tokens; reference: torch eager FP32")
    print(f"{'target':<12} {'precision':<14} {'min cosine':>11} {'max abs err':>12} {'run ms':>8}")
    for target in targets:
        for precision in [None, "f32"] if target == "openvino" else [None]:
            with edgekit.load(artifact, target=target, precision=precision) as session:
                session.run(feeds)
                t0 = time.perf_counter()
                got = session.run(feeds)["embedding"]
                ms = (time.perf_counter() - t0) * 1000
                info = session.info()
            cos = sample_cosines(reference, got)
            label = info.precision + ("" if precision is None else " (pinned)")
            err = float(np.abs(reference - got).max())
            print(f"{target:<12} {label:<14} {cos.min():>11.6f} {err:>12.2e} {ms:>8.2f}")
    if args.no_bench:
        return 0
    print("\nbenchmark (each target in its own process; batch 1, seq 128):")
    # the demo converted this source itself, so it names it: bench never runs a source a manifest names alone
    cmd = [sys.executable, "-m", "edgekit", "bench", str(artifact), "--baseline", "torch", "--baseline-source"]
    cmd += [str(source), "--shape", "seq=128"]
    cmd += ["--json", str(args.out / "bench.json"), "--markdown", str(args.out / "bench.md")]
    return subprocess.call(cmd)


def _tensorrt_usable() -> bool:
    from edgekit.runtimes import describe_targets

    return any(r["name"] == "tensorrt" and r["available"] for r in describe_targets())


if __name__ == "__main__":
    raise SystemExit(main())
