"""The reproducible benchmark suite: MiniLM and a small CNN on every available target against torch eager.

One command, from the repository root::

    .venv/bin/python benchmarks/bench_suite.py [--work build/bench-suite] [--threads 2] [--rounds 3]

It converts the bundled all-MiniLM-L6-v2 and ``tests/models/cnn.py:make`` into artifacts (reused when they
already exist and still verify), times both on every available runtime and on torch (``--baseline torch``,
each naming the source it was converted from as its baseline source) in one run with alternating rounds, and
writes ``benchmarks/results/<date>-<cpu>.md`` and ``.json`` (and a PNG next to them with ``--plot``). MiniLM
runs at batch 1, seq 128; the CNN at batch 1, 3x32x32.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _artifact(source: str, out: Path, force: bool) -> Path:
    """Convert ``source`` into ``out`` unless a verified artifact is already there."""
    import edgekit
    from edgekit.errors import EdgekitError
    from edgekit.runtimes.loading import model_ref

    if out.exists() and not force:
        try:
            model_ref(out)
            print(f"reusing {out}")
            return out
        except EdgekitError as exc:
            print(f"{out} is unusable ({exc}); converting again")
    start = time.perf_counter()
    print(f"converting {source} -> {out}")
    edgekit.convert(source, out, force=True)
    print(f"  done in {time.perf_counter() - start:.1f} s")
    return out


def _usable_targets() -> list[str]:
    """Available runtimes whose probe also works (TensorRT needs a GPU, not only the package)."""
    from edgekit.runtimes import describe_targets

    return [r["name"] for r in describe_targets() if r["available"]]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-suite", help="Artifact directory.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where the .md/.json results go.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--force", action="store_true", help="Convert again even if the artifacts exist.")
    parser.add_argument("--plot", action="store_true", help="Also write a PNG of the latency distributions.")
    args = parser.parse_args()

    import edgekit
    from edgekit.benchmark.facts import cpu_model
    from edgekit.sources import bundled_minilm_dir

    sources = {"minilm": str(bundled_minilm_dir()), "cnn": f"{ROOT / 'tests' / 'models' / 'cnn.py'}:make"}
    artifacts = [_artifact(source, args.work / name, args.force) for name, source in sources.items()]
    targets = _usable_targets()
    print(f"benching on {', '.join(targets)} against torch eager ({args.rounds} rounds, {args.threads} threads)")

    def progress(done: int, total: int, label: str) -> None:
        print(f"  [{done:>3}/{total}] {label}", file=sys.stderr, flush=True)

    report = edgekit.bench(
        artifacts, targets, baseline="torch", baseline_source=list(sources.values()), shapes={"seq": [128]},
        batches=[1], threads=args.threads, iterations=args.iterations, duration=args.duration, warmup=args.warmup,
        rounds=args.rounds, progress=progress,
    )  # fmt: skip
    from rich.console import Console

    from edgekit.benchmark.report import tables

    console = Console(width=160)
    for item in tables(report):
        console.print(item)
    stem = args.results / f"{date.today().isoformat()}-{_slug(cpu_model())}"
    for path in (report.write_markdown(stem.with_suffix(".md")), report.write_json(stem.with_suffix(".json"))):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if args.plot:
        print(f"wrote {report.write_plot(stem.with_suffix('.png'))}")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
