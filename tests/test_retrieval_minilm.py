"""all-MiniLM-L6-v2 end to end: an INT8 artifact's held-back fidelity and its bench report show recall@10 and
Spearman next to cosine, plausible for INT8, while the FP32 model on ONNX Runtime keeps every neighbour."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import edgekit
from edgekit.artifact import read_manifest
from edgekit.benchmark.report import csv_text, tables
from edgekit.benchmark.texts import BENCH_TEXTS, heldout_texts
from edgekit.retrieval import RETRIEVAL_MIN_TEXTS

SENTENCES = Path(__file__).parents[1] / "benchmarks" / "data" / "sentences.txt"
QUICK = {"iterations": 3, "duration": 0.0, "warmup": 0.0, "warmup_iterations": 1, "rounds": 1, "cold_start": False}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm() -> Path:
    from edgekit.errors import SourceError
    from edgekit.sources import bundled_minilm_dir

    try:
        return bundled_minilm_dir()
    except SourceError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def artifacts(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("minilm_retrieval")
    edgekit.convert(minilm, root / "int8", quantize="int8", calib_data=SENTENCES, calib_samples=96,
                    targets=["onnxruntime"])  # fmt: skip
    edgekit.convert(minilm, root / "fp32", targets=["onnxruntime"])
    return {"int8": root / "int8", "fp32": root / "fp32"}


@pytest.fixture(scope="module")
def report(artifacts: dict[str, Path], minilm: Path) -> edgekit.BenchReport:
    return edgekit.bench([artifacts["int8"], artifacts["fp32"]], "onnxruntime", baseline_source=str(minilm), **QUICK)


def test_generated_heldout_texts_are_a_deterministic_set_of_distinct_sentences() -> None:
    texts = heldout_texts()
    assert len(texts) == len(set(texts)) == BENCH_TEXTS >= RETRIEVAL_MIN_TEXTS
    assert texts == heldout_texts() and texts != heldout_texts(seed=1)
    calibration = set(SENTENCES.read_text(encoding="utf-8").splitlines())
    assert not calibration & set(texts)  # never the text an artifact was calibrated on
    assert len({len(t.split()) for t in texts}) > 15  # lengths vary


def test_int8_quantize_stage_reports_retrieval_on_the_held_back_sentences(artifacts: dict[str, Path]) -> None:
    stage = next(s for s in read_manifest(artifacts["int8"]).stages if s.name == "quantize")
    fid = stage.metrics["heldout_fidelity"]["onnxruntime"]
    assert fid["retrieval_texts"] == fid["samples"] == 256 + 128  # held-back lines + the corpus evaluation split
    assert 0.5 < fid["recall@10"] <= 1.0 and 0.9 < fid["spearman"] <= 1.0, fid


def test_int8_bench_report_shows_recall_and_spearman_next_to_cosine(report: edgekit.BenchReport) -> None:
    by_model = {r.model_name: r for r in report.results}
    int8, fp32 = by_model["int8"].fidelity, by_model["fp32"].fidelity
    assert int8 is not None and fp32 is not None, report.warnings
    assert int8["reference"] == fp32["reference"] == "torch"
    assert int8["precision"].startswith("int8") and int8["retrieval_texts"] == BENCH_TEXTS
    assert 0.5 < int8["recall@10"] <= 1.0 and 0.9 < int8["spearman"] <= 1.0, int8
    assert int8["min_cosine"] > 0.9
    # FP32 on ONNX Runtime computes the torch function: every neighbour and every pair order survives
    assert fp32["recall@10"] >= 0.99 and fp32["spearman"] >= 0.999 and fp32["min_cosine"] > 0.9999, fp32
    saved = json.loads(report.to_json())["results"][0]["fidelity"]
    assert {"min_cosine", "recall@10", "spearman", "retrieval_texts"} <= set(saved)
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(csv_text(report)))}
    assert float(rows["int8"]["recall_at_10"]) == pytest.approx(int8["recall@10"])
    console = Console(record=True, width=160)
    for table in tables(report, with_warnings=False):
        console.print(table)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "recall@10" in line)
    assert header.index("cosine") < header.index("recall@10") < header.index("spearman")
    assert f"{int8['recall@10']:.3f}" in text
