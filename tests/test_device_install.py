"""The device install, proven: a virtualenv with only ``pip install ".[text]"`` and the two CPU runtimes, no
torch and no transformers, embeds text with an artifact converted here, and runs ``edgekit embed``, ``run`` and
``inspect``. A blocked import (``tests/test_light_runtime.py``) shows the code does not need torch; this shows
the package's declared dependencies are enough, which only a separate environment can.

The virtualenv's dependencies are installed once per ``pyproject.toml`` (and Python) and kept under
``build/device-venv/``: the first run needs the package index (as ``make venv`` does) and takes about a minute
from a cold pip cache; later runs only reinstall edgekit from a copy of this checkout, offline, in about a
second. Without the index (and outside CI) the test skips and says why; in CI it fails instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgekit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("openvino",)  # onnxruntime is a base dependency
_OFFLINE_SIGNS = ("NewConnectionError", "Failed to establish", "Temporary failure in name resolution",
                  "No matching distribution found", "Could not find a version", "Network is unreachable")  # fmt: skip


def _venv_dir() -> Path:
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + sys.version.encode() + repr(RUNTIMES).encode())
    return ROOT / "build" / "device-venv" / key.hexdigest()[:16]


def _run(args: list[str], timeout: int = 900, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def _source_copy(dest: Path) -> Path:
    """What a wheel of this checkout is built from, copied, so building leaves nothing in the work tree."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "edgekit", dest / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _create(venv: Path, src: Path) -> float:
    """The virtualenv with ``.[text]``'s dependencies and the runtimes; seconds it took (0 when it was cached)."""
    done = venv / ".dependencies-installed"
    if done.is_file():
        return 0.0
    for stale in venv.parent.glob("*") if venv.parent.is_dir() else ():  # kept for an older pyproject.toml
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # setuptools for the per-run offline build of edgekit itself (--no-build-isolation)
    installed = _run([*pip, "setuptools>=68", f"{src}[text]", *RUNTIMES])
    if installed.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        last = " ".join(installed.stderr.strip().splitlines()[-1:])
        if not os.environ.get("CI") and any(sign in installed.stderr for sign in _OFFLINE_SIGNS):
            pytest.skip(f"cannot build the device virtualenv without the package index here: {last}")
        raise AssertionError(f"pip install '.[text]' {' '.join(RUNTIMES)} failed: {installed.stderr[-3000:]}")
    done.write_text("")
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> Path:
    """The device virtualenv's python, with this checkout's edgekit freshly installed (not editable)."""
    src = _source_copy(tmp_path_factory.mktemp("src"))
    venv = _venv_dir()
    created = _create(venv, src)
    python = venv / "bin" / "python"
    start = time.perf_counter()
    reinstalled = _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--no-build-isolation", "--no-index", "--force-reinstall", str(src)])  # fmt: skip
    assert reinstalled.returncode == 0, reinstalled.stderr
    print(f"device virtualenv: created in {created:.1f} s (0: cached), edgekit installed in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return python


def test_torch_and_transformers_are_not_there(device_python, tmp_path):
    for name in ("torch", "transformers", "sentence_transformers"):
        result = _run([str(device_python), "-c", f"import {name}"], cwd=tmp_path)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, (name, result.stderr)
    where = _run([str(device_python), "-c", "import edgekit; print(edgekit.__file__)"], cwd=tmp_path)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(device_python.parents[1]), where


def test_embedder_encodes_on_both_runtimes_like_the_main_environment(device_python, minilm_artifact, tmp_path):
    texts = ["a sentence on a device", "Zoë's naïve café 🙂", "a long one " * 120, "ok"]
    with edgekit.Embedder(minilm_artifact) as embedder:
        expected = embedder.encode(texts)
    code = (
        "import json, sys, numpy as np, edgekit\n"
        f"texts = {texts!r}\n"
        "for target, options in (('onnxruntime', {}), ('openvino', {'precision': 'f32'})):\n"
        f"    with edgekit.Embedder({str(minilm_artifact)!r}, target=target, **options) as e:\n"
        "        np.save(f'{target}.npy', e.encode(texts, batch_size=2))\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))\n"
    )
    result = _run([str(device_python), "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    for target in ("onnxruntime", "openvino"):
        vectors = np.load(tmp_path / f"{target}.npy")
        cosine = (vectors * expected).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
        assert vectors.shape == (4, 384) and cosine.min() >= 0.9999, (target, cosine)


def test_the_commands_run_on_the_device(device_python, minilm_artifact, tmp_path):
    cli = str(device_python.parent / "edgekit")  # the console script the install made
    (tmp_path / "texts.txt").write_text("first\n\nsecond text\n")
    embedded = _run([cli, "embed", str(minilm_artifact), "texts.txt", "-o", "v.npy", "-t", "openvino", "--json"],
                    cwd=tmp_path)  # fmt: skip
    assert embedded.returncode == 0, embedded.stderr
    summary = json.loads(embedded.stdout)
    assert (summary["count"], summary["skipped"], summary["dim"]) == (2, 1, 384)
    assert np.load(tmp_path / "v.npy").shape == (2, 384)
    ran = _run([cli, "run", str(minilm_artifact), "--target", "onnxruntime", "--json"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"]["embedding"]["shape"][1] == 384
    inspected = _run([cli, "inspect", str(minilm_artifact), "--json"], cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["manifest"]["source"]["kind"] == "sentence_transformers"
