"""The pure parts of ``edgekit bench``: statistics, shape fitting, fidelity metrics and the report renderings.

No processes here; ``test_bench.py`` runs the real thing.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from edgekit.benchmark.fidelity import fidelity_report
from edgekit.benchmark.plan import BenchConfig, fit_dims, parse_batches, parse_shape
from edgekit.benchmark.results import SCHEMA, SCHEMA_VERSION, BenchReport, RoundResult, TargetResult
from edgekit.benchmark.stats import paired_ratio, summarize
from edgekit.errors import InputError
from edgekit.specs import TensorSpec


def test_percentiles_follow_the_stated_linear_method():
    stats = summarize(list(range(1, 101)))
    assert (stats.n, stats.min, stats.max, stats.mean) == (100, 1.0, 100.0, 50.5)
    # rank (n - 1) * q with linear interpolation: p90 of 1..100 is 90.1, p99 is 99.01
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p95 == pytest.approx(95.05)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert stats.cv == pytest.approx(stats.std / stats.mean)


def test_cv_flags_a_noisy_set_and_a_single_sample_has_no_spread():
    assert summarize([10.0] * 9 + [30.0]).high_cv
    assert not summarize([10.0, 10.1, 9.9, 10.0]).high_cv
    one = summarize([4.0])
    assert one.std == 0.0 and one.p99 == 4.0
    with pytest.raises(InputError, match="no latency samples"):
        summarize([])


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert paired_ratio([20.0, 22.0, 40.0], [10.0, 10.0, 10.0]) == pytest.approx(2.2)
    assert paired_ratio([20.0, 0.0], [10.0, 5.0]) == pytest.approx(2.0)  # a round without a time is skipped
    assert paired_ratio([], []) is None


def test_parse_shape_and_batches():
    assert parse_shape("input_ids=1x128") == ("input_ids", (1, 128))
    assert parse_shape("x=2,3,32,32") == ("x", (2, 3, 32, 32))
    assert parse_shape("seq=64") == ("seq", (64,))
    for bad in ("x", "x=", "x=1x0", "=1x2", "x=1xa", "x=-1"):
        with pytest.raises(InputError, match="bad --shape"):
            parse_shape(bad)
    assert parse_batches("1,8,1") == (1, 8)
    for bad in ("0", "-1", "a", "", "1,,x"):
        with pytest.raises(InputError, match="bad --batch"):
            parse_batches(bad)


TEXT = [TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq"))]
IMAGE = [TensorSpec("x", "float32", ("batch", 3, 32, 32))]


def test_fit_dims_takes_shapes_symbols_batches_and_manifest_sizes():
    assert fit_dims(TEXT, {"input_ids": (1, 128)}, {}, None) == {"batch": 1, "seq": 128}
    assert fit_dims(TEXT, {"seq": (64,)}, {}, 4) == {"batch": 4, "seq": 64}
    assert fit_dims(TEXT, {}, {"seq": 12}, None) == {"batch": 1, "seq": 12}
    assert fit_dims(IMAGE, {"x": (2, 3, 32, 32)}, {}, None) == {"batch": 2}
    assert fit_dims(IMAGE, {}, {}, 8) == {"batch": 8}


@pytest.mark.parametrize(
    ("specs", "shapes", "batch", "message"),
    [
        (IMAGE, {"x": (1, 3, 64, 64)}, None, "dim 2 is fixed at 32"),
        (IMAGE, {"x": (1, 3, 32)}, None, "expected rank 4"),
        (IMAGE, {"y": (1, 3, 32, 32)}, None, "neither an input nor a dim"),
        (TEXT, {"input_ids": (1, 128), "attention_mask": (1, 64)}, None, "dim 'seq' is 64"),
        ([TensorSpec("x", "float32", (2, 8))], {}, 4, "no variable batch dim"),
    ],
)
def test_shapes_that_do_not_fit_are_input_errors(specs, shapes, batch, message):
    with pytest.raises(InputError, match=message) as excinfo:
        fit_dims(specs, shapes, {}, batch)
    assert excinfo.value.exit_code == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations must be a positive integer"),
        ({"iterations": -5}, "iterations must be a positive integer"),
        ({"rounds": 0}, "rounds must be a positive integer"),
        ({"duration_s": -1.0}, "duration must be"),
        ({"warmup_s": float("nan")}, "warm-up must be"),
        ({"mode": "fast"}, "unknown mode"),
        ({"baseline": "tf"}, "unknown baseline"),
        ({"baseline": "torch"}, "pass --baseline-source SOURCE, or --trust-source"),
        ({"baseline_sources": ("m.py:make",), "trust_source": True}, "not both"),
    ],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(InputError, match=message):
        BenchConfig(**kwargs)


def test_fidelity_report_cosine_rel_error_and_top1():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 10)).astype(np.float32)
    got = ref + np.float32(1e-6)
    classifier = {"logits": "classifier"}
    m = fidelity_report({"logits": ref}, {"logits": got}, "fp32", "torch", classifier)
    assert m["passed"] and m["top1_agreement"] == 1.0 and m["min_cosine"] > 0.99999
    worst_row = max(np.linalg.norm(np.full(10, 1e-6)) / np.linalg.norm(row) for row in ref.astype(np.float64))
    assert m["rel_l2"] == pytest.approx(worst_row, rel=1e-2)  # per sample, the worst counts
    swapped = ref.copy()
    swapped[0] = -swapped[0]  # one of eight rows now disagrees
    bad = fidelity_report({"logits": ref}, {"logits": swapped}, "bf16", "torch", classifier)
    assert not bad["passed"] and bad["top1_agreement"] == pytest.approx(7 / 8)
    assert bad["tolerance"]["min_cosine"] == 0.99  # judged at the precision the target reported
    pooled = fidelity_report({"e": ref[:, :, None]}, {"e": got[:, :, None]}, "fp32", "onnxruntime")
    assert pooled["top1_agreement"] is None  # no kind given: a plain tensor
    embedding = fidelity_report({"embedding": ref}, {"embedding": got}, "fp32", "torch", {"embedding": "embedding"})
    assert embedding["top1_agreement"] is None  # shaped like [batch, classes], but an embedding has no classes


def _synthetic_report() -> BenchReport:
    base = TargetResult("m", "m", "torch", 1, {"x": [1, 4]}, is_baseline=True)
    base.rounds = [RoundResult(i, 100 + i, True, samples_ms=[2.0, 2.2, 2.1], load_s=0.1) for i in range(2)]
    fast = TargetResult("m", "m", "onnxruntime", 1, {"x": [1, 4]}, model_bytes=1234)
    fast.rounds = [RoundResult(i, 200 + i, True, samples_ms=[1.0, 1.1, 1.05], load_s=0.05) for i in range(2)]
    fast.speedup = {"vs": "torch", "p50": 2.0, "p90": 2.0}
    fast.session = {"precision": "fp32", "device": "cpu", "providers": ["CPUExecutionProvider"], "threads": 2}
    broken = TargetResult("m", "m", "openvino", 1, {"x": [1, 4]})
    broken.rounds = [RoundResult(0, 300, False, error="load: BackendError: openvino failed to compile")]
    method = {"mode": "latency", "headline": "p90", "percentiles": "linear", "rounds": 2, "order": "A B",
              "isolation": "process", "warmup_iterations": 1, "warmup_s": 0.0, "iterations_min": 3,
              "duration_min_s": 0.0, "threads": None, "ort_spinning": "default"}  # fmt: skip
    machine = {"cpu_model": "cpu", "usable_cores": 2, "logical_cores": 2, "system": "Linux", "python": "3",
               "libraries": {"numpy": "2"}}  # fmt: skip
    return BenchReport("now", "0", 1, method, machine, [base, fast, broken], warnings=["noisy"])


def test_report_renderings_agree_on_the_rows(tmp_path):
    report = _synthetic_report()
    assert report.exit_code == 1 and [r.target for r in report.failed] == ["openvino"]
    data = json.loads(report.to_json())
    assert data["schema"] == SCHEMA_VERSION and SCHEMA_VERSION in SCHEMA
    ort = data["results"][1]
    assert ort["latency_ms"]["n"] == 6 and len(ort["rounds"]) == 2
    assert ort["rounds"][0]["samples_ms"] == [1.0, 1.1, 1.05]
    assert data["results"][2]["status"] == "failed" and "failed to compile" in data["results"][2]["error"]
    rows = list(csv.DictReader(io.StringIO(report.write_csv(tmp_path / "r.csv").read_text())))
    assert [r["target"] for r in rows] == ["torch", "onnxruntime", "openvino"]
    assert float(rows[1]["p50_ms"]) == pytest.approx(1.05) and rows[2]["status"] == "failed"
    md = report.write_markdown(tmp_path / "r.md").read_text()
    assert "| m | onnxruntime | 1 | 1.05 |" in md and "2.00x" in md and "FAILED: load: BackendError" in md
    assert "| m | onnxruntime | fp32 |" in md and "- noisy" in md
    png = report.write_plot(tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
