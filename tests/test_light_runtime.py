"""The device-side path stays light: `import edgekit` pulls in no heavy runtime, and running an ONNX model
works on a machine where torch cannot be imported at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


HEAVY = ("torch", "openvino", "tensorrt", "onnxruntime", "transformers")


@pytest.mark.parametrize(
    "imports",
    [
        "import edgekit; edgekit.TensorSpec; edgekit.EdgekitError; edgekit.available_targets()",
        "import edgekit; edgekit.load; edgekit.Session; edgekit.Manifest; import edgekit.runtimes.loading",
        "import edgekit.runtimes.openvino, edgekit.runtimes.tensorrt, edgekit.fidelity, edgekit.text",
        "import edgekit.cli",
    ],
)
def test_importing_the_device_side_imports_no_heavy_package(imports: str) -> None:
    result = _python(f"import sys\n{imports}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.fixture
def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment where `import torch` raises, as on a device that never installed it."""
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is not installed on this device')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env.get("PYTHONPATH", "")])
    return env


def test_run_an_onnx_model_without_torch(mlp_onnx, no_torch_env):
    check = _python("import torch", env=no_torch_env)
    assert check.returncode != 0 and "not installed on this device" in check.stderr
    for target in ("onnxruntime", "openvino"):
        result = subprocess.run(
            [sys.executable, "-m", "edgekit", "run", str(mlp_onnx.path), "--target", target, "--json"],
            capture_output=True, text=True, env=no_torch_env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["outputs"]["y"]["shape"] == [1, 4]
    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "inspect", str(mlp_onnx.path), "--json"],
        capture_output=True, text=True, env=no_torch_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_load_and_run_api_without_torch(mlp_onnx, no_torch_env):
    code = (
        "import sys, numpy as np, edgekit\n"
        f"s = edgekit.load({str(mlp_onnx.path)!r})\n"
        "y = s.run({'x': np.ones((2, 8), np.float32)})['y']\n"
        "assert y.shape == (2, 4) and 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    result = _python(code, env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
