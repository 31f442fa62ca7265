"""``edgekit bench --texts``: Embedder.encode timed on real text, sentence-transformers as the baseline.

Real runtimes, the real bundled MiniLM and real sentence-transformers; timings are tiny (one round, short
minimums) because only the shape of the report is asserted, never a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.benchmark import bench
from edgekit.benchmark.textbench import batches_of, time_passes
from edgekit.errors import InputError

pytestmark = pytest.mark.slow  # the MiniLM artifact (converted once per run)

TEXTS = [
    "A short one.",
    "The committee postponed the vote on the new bridge until the engineers had checked the foundations again.",
    "Rain.",
    "Where did the old farmer sell the apples last winter, and why did he stop going to the market afterwards?",
    "Zoë's café — naïve résumé 🙂",
    " ".join(["a very long text that goes on"] * 60),  # longer than MiniLM's 256 tokens: truncated, as ST does
    "The pilot studied the map of the coast.",
]
QUICK = {"iterations": 1, "duration": 0.0, "warmup": 0.0, "warmup_iterations": 1, "rounds": 1, "cold_start": False}


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join([TEXTS[0], "", *TEXTS[1:], "  "]) + "\n", encoding="utf-8")
    return path


class _CountingRunner:
    """A text runner that only counts: checks the pass logic without a model (the real ones are tested below)."""

    api = "counting"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.calls.append(len(texts))
        return np.zeros((len(texts), 2), dtype=np.float32)

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("iterations", "passes"), [(1, 1), (4, 1), (5, 2), (9, 3)])
def test_every_round_times_whole_passes_over_the_texts(iterations, passes):
    runner, chunks = _CountingRunner(), batches_of([f"t{i}" for i in range(7)], 2)
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    req = {"iterations": iterations, "duration_s": 0.0, "warmup_iterations": 0, "warmup_s": 0.0}
    done = time_passes(runner, chunks, 2, req)
    assert done["throughput"]["passes"] == passes
    assert len(done["samples_ns"]) == passes * 4 and runner.calls == [2, 2, 2, 1] * passes
    assert done["throughput"]["texts_per_pass"] == 7 and done["throughput"]["unit"] == "texts"
    assert done["throughput"]["items_per_s"] == pytest.approx(7 * passes / done["elapsed_s"])


def test_texts_on_every_runtime_report_texts_per_second_and_retrieval_fidelity(minilm_artifact, texts_file):
    report = bench(minilm_artifact, ["onnxruntime", "openvino"], batches=[1, 4], threads=1, texts=texts_file, **QUICK)
    assert report.method["mode"] == "texts" and report.method["texts"]["count"] == len(TEXTS)
    assert [(r.target, r.batch) for r in report.results] == [
        ("onnxruntime", 1), ("openvino", 1), ("onnxruntime", 4), ("openvino", 4)
    ]  # fmt: skip
    pids = set()
    for r in report.results:
        assert r.ok, r.to_dict()["error"]
        calls = -(-len(TEXTS) // r.batch)
        assert len(r.samples_ms) % calls == 0  # whole passes: 7 calls at batch 1, 2 at batch 4
        assert r.throughput()["unit"] == "texts" and r.items_per_s > 0
        assert "Embedder.encode" in r.throughput()["api"]
        fid = r.fidelity
        assert fid["reference"] == "onnxruntime" and fid["retrieval_texts"] >= 200
        assert fid["recall@10"] is not None and fid["spearman"] is not None
        pids |= {x.pid for x in r.rounds}
    assert len(pids) == len(report.results) and os.getpid() not in pids
    from edgekit.benchmark.report import markdown_text

    assert "| texts/s |" in markdown_text(report)


def test_sentence_transformers_baseline_is_timed_and_is_the_reference(minilm_artifact, texts_file):
    pytest.importorskip("sentence_transformers")
    from edgekit.sources import bundled_minilm_dir

    report = bench(minilm_artifact, ["onnxruntime"], batches=[2], threads=1, texts=texts_file,
                   baseline="sentence-transformers", baseline_source=bundled_minilm_dir(), **QUICK)  # fmt: skip
    base, ort = report.results
    assert base.target == "sentence-transformers" and base.is_baseline and base.ok, base.to_dict()["error"]
    assert "SentenceTransformer.encode" in base.throughput()["api"] and base.session["precision"] == "fp32"
    assert base.session["threads"] == 1
    assert ort.speedup["vs"] == "sentence-transformers" and ort.speedup["items_per_s"] > 0
    assert ort.fidelity["reference"] == "sentence-transformers"
    assert ort.fidelity["min_cosine"] >= 0.9999 and ort.fidelity["recall@10"] >= 0.95


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shapes": ["seq=16"]}, "--shape does not apply with --texts"),
        ({"mode": "throughput"}, "--mode throughput does not apply"),
        ({"baseline": "torch", "trust_source": True}, "use --baseline sentence-transformers"),
        ({"baseline": "sentence-transformers"}, "pass --baseline-source SOURCE"),
        ({"baseline": "sentence-transformers", "baseline_source": "{texts}"}, "is not a model source"),
    ],
)
def test_bad_text_bench_usage_is_refused_before_measuring(minilm_artifact, texts_file, kwargs, message):
    given = {k: (v.format(texts=texts_file) if isinstance(v, str) else v) for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        bench(minilm_artifact, ["onnxruntime"], texts=texts_file, **QUICK, **given)


def test_sentence_transformers_baseline_needs_texts(minilm_artifact):
    with pytest.raises(InputError, match="give --texts FILE"):
        bench(minilm_artifact, ["onnxruntime"], baseline="sentence-transformers", trust_source=True, **QUICK)


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", "bench", *map(str, args)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_cli_text_bench_writes_texts_per_second(minilm_artifact, texts_file, tmp_path):
    out = tmp_path / "r.json"
    result = _cli(minilm_artifact, "--texts", texts_file, "-t", "onnxruntime", "--batch", "2", "--rounds", "1",
                  "--iterations", "1", "--duration", "0", "--warmup", "0", "--json", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "texts/s" in result.stdout
    row = json.loads(out.read_text())["results"][0]
    assert row["throughput"]["unit"] == "texts" and row["throughput"]["items_per_s"] > 0


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp, mlp: ["{art}", "--texts", tmp / "missing.txt"], "texts file not found"),
        (lambda tmp, mlp: ["{art}", "--texts", _blank(tmp)], "every line is blank"),
        (lambda tmp, mlp: [mlp, "--texts", _blank(tmp, "a text")], "bare ONNX file"),
    ],
)
def test_cli_bad_texts_are_one_line_exit_2(minilm_artifact, mlp_onnx, tmp_path, make, needle):
    args = [str(a).format(art=minilm_artifact) for a in make(tmp_path, mlp_onnx.path)]
    result = _cli(*args, "-t", "onnxruntime")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def _blank(tmp: Path, content: str = "\n \n") -> Path:
    path = tmp / "blank.txt"
    path.write_text(content, encoding="utf-8")
    return path
