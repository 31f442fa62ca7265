"""The device-side path stays light: `import edgekit` pulls in no heavy runtime, and running an ONNX model or
embedding text works on a machine where torch and transformers cannot be imported at all.

(``tests/test_device_install.py`` proves the same in a virtualenv that never installed them.)"""

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
        "import edgekit; edgekit.Embedder; import edgekit.runtimes.embedfile, edgekit.cli.embed",
    ],
)
def test_importing_the_device_side_imports_no_heavy_package(imports: str) -> None:
    result = _python(f"import sys\n{imports}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.fixture
def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment where `import torch` and `import transformers` raise, as on a device that never
    installed them."""
    for name in ("torch", "transformers"):
        blocker = tmp_path / "blocker" / name
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text(f"raise ImportError('{name} is not installed on this device')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "blocker"), env.get("PYTHONPATH", "")])
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


@pytest.mark.slow  # the MiniLM artifact (converted once per run)
def test_embed_text_without_torch_or_transformers(minilm_artifact, no_torch_env, tmp_path):
    code = (
        "import sys, edgekit\n"
        "for target, options in (('onnxruntime', {}), ('openvino', {'precision': 'f32'})):\n"
        f"    with edgekit.Embedder({str(minilm_artifact)!r}, target=target, **options) as e:\n"
        "        v = e.encode(['a sentence on a device', 'another, longer sentence ' * 40], batch_size=1)\n"
        "        assert v.shape == (2, 384) and e.max_length == 256, (v.shape, e.max_length)\n"
        "assert not {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "print('ok')\n"
    )
    result = _python(code, env=no_torch_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    (tmp_path / "texts.txt").write_text("one\n\ntwo\n")
    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "embed", str(minilm_artifact), str(tmp_path / "texts.txt"),
         "-o", str(tmp_path / "v.npy"), "--json"],
        capture_output=True, text=True, env=no_torch_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["count"] == 2
