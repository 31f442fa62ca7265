"""Artifacts are data for ``edgekit bench`` too: nothing an ``edgekit.json`` names is imported or run.

A torch baseline or reference comes only from a source the user names (``--baseline-source``), or from the
recorded one with ``--trust-source`` after its sha256 matched. Each case runs the real CLI in a subprocess
against an artifact whose edited manifest names a factory that leaves a marker file when it is imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import ArtifactError, InputError

MODELS = Path(__file__).parent / "models"
QUICK = ["-t", "onnxruntime", "--iterations", "3", "--duration", "0", "--warmup", "0", "--rounds", "1"]
MARKER = "imported.marker"
# what a hostile or careless edit adds: code that runs as soon as the file is imported
IMPORT_SIDE_EFFECT = f"\nfrom pathlib import Path as _P\n\n_P(__file__).with_name({MARKER!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact converted from a genuine factory file, which the tests copy and edit."""
    work = tmp_path_factory.mktemp("trust")
    shutil.copy(MODELS / "mlp.py", work / "model.py")
    edgekit.convert(f"{work / 'model.py'}:make", work / "art")
    return work / "art"


def _artifact_naming(converted: Path, work: Path, source_text: str, *, sha256: str | None = "recorded") -> Path:
    """A copy of the artifact whose manifest names ``work/factory.py:make`` (holding ``source_text``)."""
    art = work / "art"
    shutil.copytree(converted, art)
    (work / "factory.py").write_text(source_text)
    manifest = json.loads((art / "edgekit.json").read_text())
    manifest["source"]["ref"] = f"{work / 'factory.py'}:make"
    if sha256 != "recorded":
        manifest["source"]["sha256"] = sha256
    (art / "edgekit.json").write_text(json.dumps(manifest, indent=2))
    return art


@pytest.fixture
def hostile(converted: Path, tmp_path: Path) -> Path:
    """The manifest names a factory that runs code on import: the genuine source with a line added."""
    return _artifact_naming(converted, tmp_path, (MODELS / "mlp.py").read_text() + IMPORT_SIDE_EFFECT)


def _bench(*args: str | Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    """``edgekit bench ...`` in a fresh process; the JSON report when it wrote one."""
    report = cwd / "report.json"
    cmd = [sys.executable, "-m", "edgekit", "bench", *map(str, args), *QUICK, "--json", str(report)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)
    return result, json.loads(report.read_text()) if report.is_file() else None


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def _reference(report: dict) -> str:
    (row,) = [r for r in report["results"] if r["target"] == "onnxruntime"]
    return row["fidelity"]["reference"]


def test_bench_runs_nothing_the_manifest_names(hostile: Path, tmp_path: Path) -> None:
    result, report = _bench(hostile, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / MARKER).exists()
    assert report is not None and _reference(report) == "onnxruntime"


def test_torch_baseline_without_a_named_source_exits_2_and_runs_nothing(hostile: Path, tmp_path: Path) -> None:
    result, report = _bench(hostile, "--baseline", "torch", cwd=tmp_path)
    _one_line_exit_2(result, "--baseline-source SOURCE", "--trust-source")
    assert not (tmp_path / MARKER).exists() and report is None


def test_a_source_the_user_names_is_run(hostile: Path, tmp_path: Path) -> None:
    result, report = _bench(hostile, "--baseline-source", "factory.py:make", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / MARKER).exists()
    assert report is not None and _reference(report) == "torch"


def test_trust_source_refuses_a_source_that_changed(hostile: Path, tmp_path: Path) -> None:
    result, report = _bench(hostile, "--trust-source", cwd=tmp_path)
    _one_line_exit_2(result, "sha256", "factory.py")
    assert not (tmp_path / MARKER).exists() and report is None


def test_trust_source_refuses_a_source_without_a_recorded_sha256(converted: Path, tmp_path: Path) -> None:
    art = _artifact_naming(converted, tmp_path, (MODELS / "mlp.py").read_text() + IMPORT_SIDE_EFFECT, sha256=None)
    result, report = _bench(art, "--trust-source", "--baseline", "torch", cwd=tmp_path)
    _one_line_exit_2(result, "no sha256")
    assert not (tmp_path / MARKER).exists() and report is None


def test_trust_source_runs_the_genuine_recorded_source(converted: Path, tmp_path: Path) -> None:
    art = _artifact_naming(converted, tmp_path, (MODELS / "mlp.py").read_text())
    result, report = _bench(art, "--trust-source", "--baseline", "torch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert report is not None and _reference(report) == "torch"
    assert [r["target"] for r in report["results"]] == ["torch", "onnxruntime"]


def test_the_api_asks_for_a_named_or_trusted_source(converted: Path, tmp_path: Path) -> None:
    from conftest import make_mlp_onnx

    with pytest.raises(InputError, match="--baseline-source SOURCE"):
        edgekit.bench(converted, "onnxruntime", baseline="torch")
    with pytest.raises(InputError, match="not both"):
        edgekit.bench(converted, "onnxruntime", baseline_source=f"{MODELS}/mlp.py:make", trust_source=True)
    with pytest.raises(InputError, match="does not exist"):
        edgekit.bench(converted, "onnxruntime", baseline_source=tmp_path / "missing.py:make")
    with pytest.raises(InputError, match="2 sources for 3 models"):
        edgekit.bench([converted, converted, converted], "onnxruntime", baseline_source=["a.py:f", "b.py:f"])
    bare = make_mlp_onnx(tmp_path / "mlp.onnx").path
    with pytest.raises(InputError, match="records no PyTorch source"):
        edgekit.bench(bare, "onnxruntime", trust_source=True)
    (tmp_path / "gone").mkdir()
    art = _artifact_naming(converted, tmp_path / "gone", (MODELS / "mlp.py").read_text())
    (tmp_path / "gone" / "factory.py").unlink()
    with pytest.raises(ArtifactError, match="does not exist"):
        edgekit.bench(art, "onnxruntime", trust_source=True)


def test_a_named_pickle_still_needs_allow_pickle(tmp_path: Path) -> None:
    import torch

    from edgekit.sources import load_source

    (tmp_path / "seq.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(8, 4)), (torch.randn(2, 8),)\n"
    )
    edgekit.convert(f"{tmp_path / 'seq.py'}:make", tmp_path / "art")
    torch.save(load_source(f"{tmp_path / 'seq.py'}:make").module, tmp_path / "model.pt")
    quick = {"iterations": 3, "duration": 0.0, "warmup": 0.0, "rounds": 1, "cold_start": False}
    named = {"baseline": "torch", "baseline_source": tmp_path / "model.pt", **quick}
    with pytest.raises(InputError, match="--allow-pickle"):  # refused before anything is measured
        edgekit.bench(tmp_path / "art", "onnxruntime", **named)
    allowed = edgekit.bench(tmp_path / "art", "onnxruntime", allow_pickle=True, **named)
    torch_row, ort = allowed.results
    assert torch_row.ok and ort.fidelity["reference"] == "torch" and ort.fidelity["passed"]
