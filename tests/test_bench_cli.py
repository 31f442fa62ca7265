"""``edgekit bench`` on the command line: exit 2 with one line for bad usage, 1 when a target failed, 0 else."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app

QUICK = ["--iterations", "3", "--duration", "0", "--warmup", "0", "--rounds", "1"]


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    from conftest import make_mlp_onnx

    return make_mlp_onnx(tmp_path / "mlp.onnx").path


def _one_line_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--target", "nope"], "unknown target 'nope'; known targets: onnxruntime"),
        (["--target", "torch"], "--baseline torch"),
        (["--shape", "x=1x9"], "dim 1 is fixed at 8"),
        (["--shape", "x=1x8x1"], "expected rank 2"),
        (["--shape", "y=1x8"], "neither an input nor a dim"),
        (["--shape", "x=1xa"], "bad --shape"),
        (["--iterations", "0"], "iterations must be a positive integer, got 0"),
        (["--iterations", "-3"], "iterations must be a positive integer, got -3"),
        (["--rounds", "0"], "rounds must be a positive integer"),
        (["--duration", "-1"], "duration must be a number of seconds >= 0"),
        (["--batch", "0"], "bad --batch"),
        (["--mode", "fast"], "unknown mode 'fast'"),
        (["--baseline", "torch"], "pass --baseline-source SOURCE, or --trust-source"),
        (["--trust-source"], "is a bare ONNX model and records no PyTorch source"),
        (["--baseline-source", "nope.py:make"], "--baseline-source 'nope.py:make' does not exist"),
        (["--baseline-source", "nope.py:make", "--trust-source"], "not both"),
        (["--baseline", "tensorflow"], "unknown baseline"),
    ],
)
def test_bad_usage_exits_2_with_one_line(mlp, args, needle):
    result = CliRunner().invoke(app, ["bench", str(mlp), *args])
    _one_line_error(result, 2, needle)


def test_missing_model_and_unwritable_output_exit_2(mlp, tmp_path):
    _one_line_error(CliRunner().invoke(app, ["bench", str(tmp_path / "none.onnx")]), 2, "model not found")
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(app, ["bench", str(mlp), "--json", str(tmp_path / "file" / "r.json")])
    _one_line_error(result, 2, "is not a directory")


def test_success_prints_the_table_and_writes_every_format(mlp, tmp_path):
    out = {ext: tmp_path / f"r.{ext}" for ext in ("json", "csv", "md", "png")}
    result = CliRunner().invoke(app, ["bench", str(mlp), "-t", "onnxruntime", "--threads", "1", *QUICK,
                                      "--json", str(out["json"]), "--csv", str(out["csv"]),
                                      "--markdown", str(out["md"]), "--plot", str(out["png"])])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "p90 ms" in result.stdout and "onnxruntime" in result.stdout and "speedup" in result.stdout
    data = json.loads(out["json"].read_text())
    assert data["results"][0]["status"] == "ok" and data["results"][0]["session"]["threads"] == 1
    assert next(csv.DictReader(out["csv"].open()))["target"] == "onnxruntime"
    assert "| mlp | onnxruntime |" in out["md"].read_text()
    assert out["png"].read_bytes()[:4] == b"\x89PNG"


def test_a_failing_target_exits_1_and_still_reports_the_others(tmp_path):
    from test_bench import _det_model

    model = _det_model(tmp_path / "det.onnx")
    report = tmp_path / "r.json"
    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "bench", str(model), "-t", "onnxruntime", "-t", "openvino", *QUICK,
         "--json", str(report)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    *warnings, error = result.stderr.strip().splitlines()  # warnings (high CV) come first, one line each
    assert all(w.startswith("warning: ") for w in warnings), warnings
    assert error.startswith("error: 1 of 2 measurements failed: det on openvino: load:"), error
    assert "FAILED" in result.stdout
    rows = {r["target"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["onnxruntime"]["status"] == "ok" and rows["onnxruntime"]["latency_ms"]["n"] >= 3
    assert rows["openvino"]["status"] == "failed" and rows["openvino"]["error"]
