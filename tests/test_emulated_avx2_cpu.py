"""On a CPU without AVX-512, VNNI or bf16, an INT8 variant chosen for VNNI is not used unasked, and what runs is right.

The CPU is real x86-64 emulation (qemu-user as an Intel Haswell, ``tools/on_avx2_cpu.sh``): ONNX Runtime and
OpenVINO dispatch their kernels on what ``cpuid`` says there, and edgekit's own checks read a /proc/cpuinfo that
agrees. Emulation is slow, so only a tiny model runs, and only outputs and decisions are checked, never speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.artifact import MANIFEST_NAME
from edgekit.fidelity import compare_outputs, tolerance_for

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "on_avx2_cpu.sh"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def _why_not_emulated() -> str | None:
    if shutil.which("qemu-x86_64") is None:
        return "needs qemu-x86_64 (Debian: apt-get install qemu-user; .ci/run installs it)"
    if os.geteuid() != 0 or shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode:
        return "needs root and unshare -m, to show the emulated CPU's /proc/cpuinfo in a private mount namespace"
    if not VENV_PYTHON.exists() or Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        return "runs the project's .venv under the emulator; this pytest runs in another environment"
    return None


WHY_NOT_EMULATED = _why_not_emulated()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT_EMULATED is not None, reason=str(WHY_NOT_EMULATED))]

# runs inside the emulated CPU: what loads by default, and what the default and the INT8 variant compute there
PROBE = """
import json, sys, warnings
import numpy as np
import edgekit
from edgekit.cpu import numeric_cpu_flags

artifact, x, variant = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
out = {"flags": numeric_cpu_flags()}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with edgekit.load(artifact, "onnxruntime") as s:
        out["default_precision"], out["default_y"] = s.info().precision, s.run({"x": x})["y"].tolist()
out["warnings"] = [str(w.message) for w in caught]
with edgekit.load(artifact, "onnxruntime", variant=variant) as s:
    out["int8_precision"], out["int8_y"] = s.info().precision, s.run({"x": x})["y"].tolist()
with edgekit.load(artifact, "openvino") as s:
    out["openvino_precision"], out["openvino_y"] = s.info().precision, s.run({"x": x})["y"].tolist()
print("PROBE " + json.dumps(out))
"""


def _on_avx2(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(TOOL), "python", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _probe(tmp_path: Path, artifact: Path, x: np.ndarray, variant: str) -> dict:
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "probe.py").write_text(PROBE)
    stdout = _on_avx2(tmp_path / "probe.py", artifact, tmp_path / "x.npy", variant).stdout
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("PROBE "))[6:])


def _assert_within(reference: np.ndarray, got: list, precision: str, label: str) -> None:
    metrics = compare_outputs({"y": reference}, {"y": np.asarray(got, np.float32)}, tolerance_for(precision))
    assert metrics["y"]["passed"], (label, metrics)


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32))
    return tmp_path / "calib.npy"


def test_a_variant_made_for_vnni_loads_the_fp32_model_on_avx2(tmp_path: Path, mlp_onnx, calib: Path) -> None:
    artifact = tmp_path / "art"
    edgekit.convert(mlp_onnx.path, artifact, quantize="int8-dynamic", calib_data=calib)  # made on this CPU
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    manifest["variant_cpu_flags"] = {"onnxruntime": ["avx512_vnni"]}  # what a VNNI CPU records (AVX2-only: none)
    (artifact / MANIFEST_NAME).write_text(json.dumps(manifest))
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)

    got = _probe(tmp_path, artifact, x, "int8-dynamic")

    assert got["flags"] == ["avx2"]  # the emulated CPU, as edgekit sees it
    assert got["default_precision"] == "fp32"
    assert any("chosen on a CPU with avx512_vnni" in w for w in got["warnings"]), got["warnings"]
    assert got["int8_precision"].startswith("int8")  # variant= still loads it
    assert got["openvino_precision"] == "fp32"  # no native bf16 there: OpenVINO's default is f32
    reference = mlp_onnx.reference({"x": x})["y"]
    _assert_within(reference, got["default_y"], "fp32", "default")
    _assert_within(reference, got["openvino_y"], "fp32", "openvino")


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8"])
def test_converted_on_avx2_int8_has_7_bit_weights_and_stays_faithful_there(tmp_path: Path, mlp_onnx, calib, mode):
    artifact = tmp_path / "art"
    _on_avx2("-m", "edgekit", "convert", mlp_onnx.path, "-o", artifact, "--quantize", mode, "--calib-data", calib)
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    quantize = next(s for s in manifest["stages"] if s["name"] == "quantize")
    made = quantize["metrics"]["results"][f"model.{mode}.onnx"]["params"]
    assert made["reduce_range"] is True  # 8-bit weights saturate the INT8 products there (relative error ~0.4)
    assert manifest["variant_cpu_flags"] == {}  # judged on this CPU: loads anywhere
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)

    got = _probe(tmp_path, artifact, x, mode)

    assert got["default_precision"].startswith("int8") and not got["warnings"]
    _assert_within(mlp_onnx.reference({"x": x})["y"], got["default_y"], got["default_precision"], "int8 on avx2")
