"""``convert --quantize``: artifacts with per-target variants, the gate on every variant, ONNX sources, and every
bad input as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.artifact import MANIFEST_NAME, read_manifest
from edgekit.errors import ArtifactError
from edgekit.runtimes.loading import model_ref

MODELS = Path(__file__).parent / "models"


def edgekit_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def images(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def cnn_int8(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "cnn"
    edgekit.convert(f"{MODELS}/cnn.py:make", out, quantize="int8", calib_data=images(450, 0), targets=["openvino"])
    return out


def test_cnn_static_int8_keeps_top1_on_held_back_inputs(cnn_int8):
    manifest = read_manifest(cnn_int8)
    assert manifest.variants == {"onnxruntime": "model.int8.onnx", "openvino": "model.int8.onnx"}
    assert manifest.variant_precisions["model.int8.onnx"] == "int8-qdq"
    stage = next(s for s in manifest.stages if s.name == "quantize")
    assert stage.params["data"]["heldout_samples"] == 150
    for target in ("onnxruntime", "openvino"):
        assert stage.metrics["heldout_fidelity"][target]["top1"] >= 0.99, target
        assert manifest.validation[f"{target}:model.int8.onnx"]["passed"]
    # and independently, against torch on inputs neither calibration nor the held-back set saw
    from edgekit.converters.torch_io import run_torch
    from edgekit.sources import load_source

    module = load_source(f"{MODELS}/cnn.py:make").module
    fresh = images(200, 7)
    ref = np.concatenate([run_torch(module, f, ["output"])["output"] for f in fresh])
    for target in ("onnxruntime", "openvino"):
        with edgekit.load(cnn_int8, target=target) as session:
            assert session.info().precision.startswith("int8-qdq")
            got = np.concatenate([session.run(f)["output"] for f in fresh])
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99, target


def test_load_picks_the_targets_variant_and_variant_overrides(cnn_int8):
    assert model_ref(cnn_int8).path.name == "model.onnx"  # no target: the FP32 base
    assert model_ref(cnn_int8, "onnxruntime").path.name == "model.int8.onnx"
    with edgekit.load(cnn_int8, target="onnxruntime", variant="fp32") as session:
        assert session.info().precision == "fp32"
    assert model_ref(cnn_int8, "openvino", variant="model.int8.onnx").precision == "int8-qdq"
    with pytest.raises(ArtifactError, match="no variant 'fp16'"):
        model_ref(cnn_int8, variant="fp16")


def test_manifest_without_variants_still_loads(tmp_path, cnn_int8):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cnn_int8, old)
    data = json.loads((old / MANIFEST_NAME).read_text())
    for key in ("variants", "variant_precisions"):
        data.pop(key)
    (old / MANIFEST_NAME).write_text(json.dumps(data))
    assert model_ref(old, "onnxruntime").path.name == "model.onnx"


def test_cli_onnx_source_dynamic_int8_and_run_uses_the_variant(tmp_path, mlp_onnx):
    out = tmp_path / "art"
    result = edgekit_cli("convert", mlp_onnx.path, "-o", out, "--quantize", "int8-dynamic", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["source"]["kind"] == "onnx"
    assert manifest["variants"] == {"onnxruntime": "model.int8-dynamic.onnx"}
    assert manifest["validation"]["onnxruntime:model.int8-dynamic.onnx"]["passed"]
    run = edgekit_cli("run", out, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["info"]["precision"] == "int8-dynamic"


def test_cli_fp16_for_several_targets(tmp_path):
    out = tmp_path / "mlp16"
    result = edgekit_cli("convert", f"{MODELS}/mlp.py:make", "-o", out, "--quantize", "fp16", "--target", "openvino")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest.variants == {"onnxruntime": "model.fp16.onnx", "openvino": "model.fp16.onnx"}
    assert manifest.validation["openvino:model.fp16.onnx"]["passed"]
    assert "variants" in result.stdout


def test_explicit_mode_with_an_unmet_fidelity_target_fails_the_gate(tmp_path, mlp_onnx):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((30, 8)).astype(np.float32))
    out = tmp_path / "strict"
    result = edgekit_cli("convert", mlp_onnx.path, "-o", out, "--quantize", "int8", "--calib-data",
                         tmp_path / "c.npz", "--fidelity", "max_abs<=1e-9")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "misses max_abs<=1e-09" in result.stderr and not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--quantize", "int8"], "needs calibration data"),
        (["--quantize", "auto"], "needs calibration data"),
        (["--quantize", "int4"], "unknown --quantize"),
        (["--quantize", "int8-dynamic", "--fidelity", "cosine=>0.99"], "bad fidelity expression"),
        (["--quantize", "int8-dynamic", "--fidelity", "cosine<=0.99"], "cosine is bounded with >="),
        (["--quantize", "int8", "--calibration", "kl", "--calib-data", "{npz}"], "unknown --calibration"),
        (["--quantize", "int8", "--calib-data", "{missing}"], "calibration data not found"),
        (["--quantize", "int8", "--calib-data", "{names}"], "unknown input 'y'"),
        (["--quantize", "int8", "--calib-data", "{shapes}"], "dim 1 must be 8"),
        (["--quantize", "int8", "--calib-data", "{dtypes}"], "expected dtype float32"),
        (["--quantize", "int8", "--calib-data", "{empty}"], "empty"),
        (["--calib-data", "{npz}"], "need --quantize"),
        (
            ["--quantize", "int8-dynamic", "--fidelity", "top1>=0.9", "--output-kind", "y=embedding"],
            "needs a classifier output",
        ),
        (["--quantize", "int8-dynamic", "--fidelity", "cosine>=0.9,recall@10>=0.9"], "needs an embedding output"),
        (
            [
                "--quantize",
                "int8",
                "--calib-data",
                "{npz}",
                "--fidelity",
                "cosine>=0.9,recall@10>=0.9",
                "--output-kind",
                "y=embedding",
            ],
            "recall@10 needs at least 11 held-back texts",
        ),
        (["--output-kind", "y=vector"], "bad output kind"),
        (["--output-kind", "nope=embedding"], "names output 'nope'"),
    ],
)
def test_bad_quantize_input_is_one_line_exit_2(tmp_path, mlp_onnx, extra, needle):
    files = {
        "npz": tmp_path / "ok.npz", "missing": tmp_path / "nope.npz", "names": tmp_path / "names.npz",
        "shapes": tmp_path / "shapes.npz", "dtypes": tmp_path / "dtypes.npz", "empty": tmp_path / "empty.txt",
    }  # fmt: skip
    np.savez(files["npz"], x=np.zeros((4, 8), np.float32))
    np.savez(files["names"], y=np.zeros((4, 8), np.float32))
    np.savez(files["shapes"], x=np.zeros((4, 7), np.float32))
    np.savez(files["dtypes"], x=np.zeros((4, 8), np.float64))
    files["empty"].write_text("\n")
    args = [a.format(**files) for a in extra]
    out = tmp_path / "out"
    result = edgekit_cli("convert", mlp_onnx.path, "-o", out, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not out.exists()
