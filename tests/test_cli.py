"""The `edgekit` command as a user runs it: a real subprocess, exit codes, one-line errors, nothing partial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).parent / "models"


def edgekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp"
    result = edgekit("convert", f"{MODELS}/mlp.py:make", "-o", out, "--validate-target", "openvino", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["validation"]["openvino"]["passed"]
    return out


def test_targets_lists_every_runtime():
    result = edgekit("targets", "--json")
    assert result.returncode == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"onnxruntime", "openvino", "tensorrt"} <= set(rows)
    assert rows["onnxruntime"]["available"] and rows["onnxruntime"]["version"]
    assert "CPU" in rows["openvino"]["devices"]
    if not rows["tensorrt"]["available"]:
        assert "pip install" in rows["tensorrt"]["install"]


def test_run_with_files_and_npz_output(artifact, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npz"
    result = edgekit("run", artifact, "--target", "openvino", "--input", f"x={tmp_path / 'x.npy'}",
                     "--output", out, "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["info"]["target"] == "openvino" and report["outputs"]["output"]["shape"] == [3, 4]
    with np.load(out) as data:
        assert data["output"].shape == (3, 4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_run_with_random_inputs_and_dim(artifact):
    result = edgekit("run", artifact, "--dim", "batch=5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["output"]["shape"] == [5, 4]


def test_inspect_artifact(artifact):
    result = edgekit("inspect", artifact, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["precision"] == "fp32" and summary["parameters"] > 0
    assert summary["manifest"]["validation"]["onnxruntime"]["passed"]
    assert "Gemm" in summary["ops"] or "MatMul" in summary["ops"]
    human = edgekit("inspect", artifact)
    assert human.returncode == 0 and "validated on onnxruntime: pass" in human.stdout


# -- bad input: exit 2, one line naming the problem -------------------------------------------------------


def test_truncated_onnx(artifact, tmp_path):
    data = (artifact / "model.onnx").read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 3])
    assert_one_line_error(edgekit("run", bad), 2, "trunc.onnx")


def test_random_bytes_onnx(tmp_path):
    bad = tmp_path / "random.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(edgekit("run", bad), 2, "random.onnx")
    assert_one_line_error(edgekit("inspect", bad), 2, "random.onnx")


def test_directory_without_model(tmp_path):
    assert_one_line_error(edgekit("run", tmp_path), 2, "no model in directory")


def test_unknown_target(artifact):
    assert_one_line_error(edgekit("run", artifact, "--target", "nosuch"), 2, "unknown target 'nosuch'", "openvino")


def test_missing_runtime(artifact):
    from edgekit.runtimes import runtime_entry

    if runtime_entry("tensorrt").is_available():
        pytest.skip("TensorRT is installed here; this checks the message when it is not")
    assert_one_line_error(edgekit("run", artifact, "--target", "tensorrt"), 2, "not installed", "pip install")


def test_wrong_input_name(artifact, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((1, 16), np.float32))
    assert_one_line_error(edgekit("run", artifact, "--input", f"z={tmp_path / 'z.npy'}"), 2, "unknown input 'z'")


def test_missing_input_file(artifact, tmp_path):
    assert_one_line_error(edgekit("run", artifact, "--input", f"x={tmp_path / 'nope.npy'}"), 2, "nope.npy")


def test_wrong_dtype(artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.float64))
    assert_one_line_error(edgekit("run", artifact, "--input", f"x={tmp_path / 'x.npy'}"), 2, "'x'", "float64")


def test_wrong_rank(artifact, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((16,), np.float32))
    assert_one_line_error(edgekit("run", artifact, "--input", f"x={tmp_path / 'x.npy'}"), 2, "'x'", "rank 2")


def test_unwritable_npz_output(artifact, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(edgekit("run", artifact, "--output", blocker / "y.npz"), 2, "cannot write")


def test_a_directory_as_npz_output_is_refused_before_the_run(artifact, tmp_path):
    result = edgekit("run", artifact, "--output", tmp_path, "--target", "openvino")
    assert_one_line_error(result, 2, "is a directory", str(tmp_path))
    assert "ms" not in result.stdout  # refused before anything ran


def test_feeds_too_large_for_memory_are_refused_before_allocation(artifact):
    result = edgekit("run", artifact, "--dim", "batch=1000000000")
    assert_one_line_error(result, 2, "'x'", "[1000000000, 16] float32", "GiB of memory is available")


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("{tmp}/missing.py:make", "missing.py"),
        (f"{MODELS}/mlp.py:nosuch", "nosuch"),
        (f"{MODELS}/broken.py:raises", "boom"),
        (f"{MODELS}/broken.py:not_a_module", "nn.Module"),
        ("no_such_package.module:make", "no_such_package"),
    ],
)
def test_bad_sources_leave_no_output(tmp_path, source, needle):
    out = tmp_path / "out"
    result = edgekit("convert", source.format(tmp=tmp_path), "-o", out)
    assert_one_line_error(result, 2, needle)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = edgekit("convert", f"{MODELS}/mlp.py:make", "-o", blocker / "out")
    assert_one_line_error(result, 2, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_existing_output_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    assert_one_line_error(edgekit("convert", f"{MODELS}/mlp.py:make", "-o", out), 2, "--force")
    assert (out / "mine.txt").read_text() == "precious"


def test_bad_options_are_usage_errors(tmp_path):
    result = edgekit("convert", f"{MODELS}/mlp.py:make", "-o", tmp_path / "o", "--exporter", "magic")
    assert_one_line_error(result, 2, "exporter")
    result = edgekit("convert", f"{MODELS}/mlp.py:make", "-o", tmp_path / "o", "--input", "x:float32")
    assert_one_line_error(result, 2, "NAME:DTYPE")
    assert not (tmp_path / "o").exists()


def test_validation_failure_exits_1(tmp_path):
    result = edgekit("convert", f"{MODELS}/transformer.py:make", "-o", tmp_path / "o", "--exporter", "torchscript")
    assert_one_line_error(result, 1, "parity gate failed")
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = edgekit("--debug", "run", tmp_path / "missing.onnx")
    assert result.returncode != 0 and "Traceback" in result.stderr
