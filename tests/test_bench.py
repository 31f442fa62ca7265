"""``edgekit.benchmark`` for real: ONNX Runtime and OpenVINO on tiny models, a few iterations, fresh processes.

Nothing here asserts a time: only that the measurements exist, are kept, came from separate processes, and
that fidelity, cold start, memory and failures are reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.benchmark.results import BenchReport
from edgekit.errors import InputError, UnknownTargetError

MODELS = Path(__file__).parent / "models"
QUICK = {"iterations": 5, "duration": 0.0, "warmup": 0.0, "warmup_iterations": 2}


@pytest.fixture(scope="module")
def mlp_report(tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    from conftest import make_mlp_onnx

    path = make_mlp_onnx(tmp_path_factory.mktemp("bench") / "mlp.onnx").path
    events: list[tuple[int, int, str]] = []
    report = edgekit.bench(path, ["onnxruntime", "openvino"], rounds=2, progress=lambda *e: events.append(e), **QUICK)
    report.progress_events = events  # type: ignore[attr-defined]
    return report


def test_every_measurement_ran_in_its_own_process(mlp_report):
    pids = [r.pid for row in mlp_report.results for r in row.rounds]
    assert len(pids) == 4 and len(set(pids)) == 4
    assert os.getpid() not in pids and mlp_report.parent_pid == os.getpid()
    cache = next(r for r in mlp_report.results if r.target == "openvino").cache
    assert cache is not None and len({cache["cold_pid"], cache["warm_pid"], *pids}) == 6


def test_rounds_alternate_and_every_sample_is_kept(mlp_report):
    ort, ov = mlp_report.results
    assert (ort.target, ov.target) == ("onnxruntime", "openvino")
    assert mlp_report.exit_code == 0 and not mlp_report.failed
    data = json.loads(mlp_report.to_json())
    for row in data["results"]:
        assert row["status"] == "ok" and row["batch"] == 1 and row["shapes"] == {"x": [1, 8]}
        samples = [s for r in row["rounds"] for s in r["samples_ms"]]
        assert row["latency_ms"]["n"] == len(samples) >= 10
        lat = row["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert row["latency_ms"]["p90"] == pytest.approx(float(np.percentile(samples, 90)))
    labels = [label for _, _, label in mlp_report.progress_events if label.startswith("round")]
    assert [lb.split(" · ")[2] for lb in labels] == ["onnxruntime", "openvino", "onnxruntime", "openvino"]
    assert mlp_report.progress_events[-1][:2] == (mlp_report.progress_events[-1][1],) * 2


def test_facts_cold_start_memory_and_fidelity(mlp_report):
    data = json.loads(mlp_report.to_json())
    assert "linear" in data["method"]["percentiles"] and "own process" in data["method"]["ort_spinning"]
    assert data["machine"]["cpu_model"] and data["machine"]["logical_cores"] >= 1
    for row in data["results"]:
        assert row["session"]["precision"] and row["session"]["providers"] and row["session"]["backend_version"]
        assert row["cold_start"]["load_ms"] > 0 and row["cold_start"]["first_inference_ms"] > 0
        assert row["memory"]["peak_rss_bytes"] >= row["memory"]["rss_after_import_bytes"] > 0
        assert row["model_bytes"] == Path(row["model"]).stat().st_size
        fid = row["fidelity"]
        assert fid["reference"] == "onnxruntime" and fid["passed"] and fid["min_cosine"] > 0.999
        assert fid["top1_agreement"] == 1.0  # [batch, 4] is classifier-shaped
    ov = data["results"][1]
    assert "inference_precision_hint" in ov["session"]["details"]
    cache = ov["cold_start"]["cache"]
    assert cache["kind"] == "OpenVINO CACHE_DIR" and cache["cold_load_ms"] > 0 and cache["warm_load_ms"] > 0
    assert data["results"][0]["cold_start"]["cache"] is None  # ONNX Runtime has no compile cache


def _det_model(path: Path) -> Path:
    """Det runs on ONNX Runtime but OpenVINO's ONNX frontend has no Det: a model that fails on one target."""
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"])],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_target_that_fails_to_load_fails_only_its_row(tmp_path):
    report = edgekit.bench(_det_model(tmp_path / "det.onnx"), ["openvino", "onnxruntime"], rounds=2, **QUICK)
    ov, ort = report.results
    assert not ov.ok and len(ov.rounds) == 1  # no second attempt at a model that cannot load
    assert "openvino" in ov.to_dict()["error"] and ov.to_dict()["error"].startswith("load:")
    assert ort.ok and len(ort.rounds) == 2 and ort.latency is not None
    assert report.exit_code == 1 and report.failed == [ov]
    assert json.loads(report.to_json())["results"][0]["status"] == "failed"


def test_throughput_mode_uses_openvino_async_requests(tmp_path):
    from conftest import make_conv_onnx

    path = make_conv_onnx(tmp_path / "conv.onnx").path
    report = edgekit.bench(path, ["openvino", "onnxruntime"], mode="throughput", batches=2, rounds=1,
                           cold_start=False, fidelity=False, **QUICK)  # fmt: skip
    ov, ort = report.results
    assert ov.ok and ort.ok and ov.batch == 2 and ov.shapes == {"x": [2, 3, 8, 8]}
    tput = ov.throughput()
    assert tput["api"] == "openvino AsyncInferQueue" and tput["infer_requests"] >= 1 and tput["items_per_s"] > 0
    assert ov.session["details"]["performance_hint"] == "THROUGHPUT"
    assert ort.throughput()["infer_requests"] == 1 and report.method["mode"] == "throughput"


@pytest.mark.slow
def test_torch_baseline_gives_speedups_and_the_torch_reference(tmp_path):
    artifact = tmp_path / "cnn"
    edgekit.convert(f"{MODELS}/cnn.py:make", artifact)
    source = f"{MODELS}/cnn.py:make"  # named: bench never runs what a manifest names on its own
    report = edgekit.bench(
        artifact, "onnxruntime", baseline="torch", baseline_source=source, batches=[2], rounds=2, **QUICK
    )
    torch_row, ort = report.results
    assert torch_row.is_baseline and torch_row.target == "torch" and torch_row.ok, torch_row.to_dict()["error"]
    assert torch_row.session["backend_version"] and torch_row.model_bytes > 0
    assert {r.pid for r in torch_row.rounds}.isdisjoint({r.pid for r in ort.rounds})
    assert ort.speedup["vs"] == "torch" and ort.speedup["p50"] > 0 and ort.speedup["p90"] > 0
    assert ort.fidelity["reference"] == "torch" and ort.fidelity["passed"] and ort.fidelity["top1_agreement"] == 1.0
    # without --baseline the named source still gives a torch reference (its own process, not timed)
    plain = edgekit.bench(artifact, "onnxruntime", baseline_source=source, rounds=1, cold_start=False, **QUICK)
    assert [r.target for r in plain.results] == ["onnxruntime"]
    assert plain.results[0].fidelity["reference"] == "torch" and plain.results[0].speedup is None
    # without a named source the reference is ONNX Runtime FP32 as stored, though the manifest records one
    unnamed = edgekit.bench(artifact, "onnxruntime", rounds=1, cold_start=False, **QUICK)
    assert unnamed.results[0].fidelity["reference"] == "onnxruntime"


def test_bad_usage_fails_before_measuring(tmp_path):
    from conftest import make_mlp_onnx

    path = make_mlp_onnx(tmp_path / "mlp.onnx").path
    with pytest.raises(UnknownTargetError, match="unknown target 'nope'"):
        edgekit.bench(path, "nope")
    with pytest.raises(InputError, match="dim 1 is fixed at 8"):
        edgekit.bench(path, "onnxruntime", shapes=["x=1x9"])
    with pytest.raises(InputError, match="iterations must be a positive integer"):
        edgekit.bench(path, "onnxruntime", iterations=0)
    with pytest.raises(InputError, match="pass --baseline-source SOURCE, or --trust-source"):
        edgekit.bench(path, "onnxruntime", baseline="torch")
