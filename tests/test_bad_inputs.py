"""Bad input, as a tired user types it and as an attacker crafts it, through the real ``edgekit`` command.

Every case must end the same way: exit 2, exactly one stderr line starting with ``error:``, no traceback, and
nothing created or changed on disk (every file's size and mtime in the workspace compared before and after,
so an existing output is untouched and a pickle that would run code on load leaves its marker file only if it
was unpickled). Cases are chosen to fail before heavy imports, so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODELS = Path(__file__).parent / "models"
MLP = f"{MODELS}/mlp.py:make"
HUGE = str(10**12)  # a batch no machine holds: 10**12 x 8 float32 is 29 TiB
Snapshot = dict[str, tuple[int, int] | None]


class Pwn:
    """Unpickling this touches ``PWNED`` in the workspace: the snapshot then shows that something ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.marker,))


def edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def snapshot(root: Path) -> Snapshot:
    """Every path under ``root``: a file's (size, mtime), ``None`` for a directory."""
    seen: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            seen[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            seen[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return seen


def assert_refused(result: subprocess.CompletedProcess[str], needle: str) -> None:
    """Exit 2, one ``error:`` line on stderr that contains ``needle``, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in result.stderr
    assert needle.lower() in lines[0].lower(), lines[0]


# -- the workspace: one artifact and every bad file, made once -------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_mlp_onnx

    from edgekit import convert

    root = tmp_path_factory.mktemp("bad")
    convert(make_mlp_onnx(root / "mlp.onnx").path, root / "art")  # x: float32[batch, 8] -> y: float32[batch, 4]
    (root / "mlp.onnx").unlink()
    _write_files(root)
    _write_models(root)
    _write_manifests(root)
    return root


def _write_files(root: Path) -> None:
    """Feed and data files: good ones, and every way a file can be wrong."""
    np.save(root / "x.npy", np.zeros((1, 8), np.float32))
    np.save(root / "x_empty_batch.npy", np.zeros((0, 8), np.float32))
    np.save(root / "x_text.npy", np.array([["a"] * 8]))
    np.savez(root / "x.npz", x=np.zeros((1, 8), np.float32))
    np.save(root / "pickle.npy", np.array([Pwn(root / "PWNED")], dtype=object), allow_pickle=True)
    (root / "pickle.pt").write_bytes(pickle.dumps(Pwn(root / "PWNED"), protocol=2))
    (root / "empty.npy").write_bytes(b"")
    (root / "text.npy").write_text("1 2 3 4 5 6 7 8\n")
    _npy_header(root / "truncated.npy", (1, 8), b"\0" * 8)
    _npy_header(root / "huge_header.npy", (10**12, 8), b"\0" * 64)
    (root / "notes.txt").write_text("hello\n")
    (root / "blank.txt").write_text("\n\n")
    (root / "old.npz").write_bytes(b"precious")
    (root / "a_file").write_text("x")
    (root / "existing").mkdir()
    (root / "existing" / "mine.txt").write_text("precious")
    (root / "empty_dir").mkdir()
    os.mkfifo(root / "fifo.npy")
    os.mkfifo(root / "fifo.onnx")


def _npy_header(path: Path, shape: tuple[int, ...], body: bytes) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(body)


def _write_models(root: Path) -> None:
    """ONNX files that are empty, text, cut short, too big to feed, or not alone in their directory."""
    import onnx
    from onnx import TensorProto, helper

    data = (root / "art" / "model.onnx").read_bytes()
    (root / "empty.onnx").write_bytes(b"")
    (root / "text.onnx").write_text("not a model\n")
    (root / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (root / "two").mkdir()
    for name in ("a.onnx", "b.onnx"):
        (root / "two" / name).write_bytes(data)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [100000, 100000, 100])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 100000, 100])
    huge = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # fmt: skip
    onnx.save(huge, root / "huge_fixed.onnx")


def _write_manifests(root: Path) -> None:
    """Copies of the artifact whose edgekit.json (or model file) is wrong in one way each."""
    good = json.loads((root / "art" / "edgekit.json").read_text())
    x = {"name": "x", "dtype": "float32", "shape": ["batch", 8]}
    bad: dict[str, Any] = {
        "m_invalid_json": "{not json",
        "m_null": "null",
        "m_list": "[1, 2]",
        "m_binary": b"\xff\xfe\x00garbage",
        "m_inputs_string": {**good, "inputs": "x"},
        "m_input_no_dtype": {**good, "inputs": [{"name": "x", "shape": ["batch", 8]}]},
        "m_shape_number": {**good, "inputs": [{**x, "shape": 8}]},
        "m_negative_dim": {**good, "inputs": [{**x, "shape": ["batch", -8]}]},
        "m_float_dim": {**good, "inputs": [{**x, "shape": ["batch", 8.5]}]},
        "m_unknown_dtype": {**good, "inputs": [{**x, "dtype": "float99"}]},
        "m_no_source": {k: v for k, v in good.items() if k != "source"},
        "m_newer_format": {**good, "format_version": 99},
        "m_format_text": {**good, "format_version": "one"},
        "m_model_number": {**good, "model": 5},
        "m_dims_negative": {**good, "dynamic_dims": {"batch": -3}},
        "m_dims_huge": {**good, "dynamic_dims": {"batch": 10**12}},
        "m_dims_text": {**good, "dynamic_dims": {"batch": "big"}},
        "m_huge": {**good, "inputs": [{"name": "x"}] * 400_000},  # about 6 MB
        "m_validation_keys": {**good, "validation": {"onnxruntime": {"ok": True}}},
        "m_deep": "[" * 100_000 + "]" * 100_000,
    }
    for name, content in bad.items():
        shutil.copytree(root / "art", root / name)
        target = root / name / "edgekit.json"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content if isinstance(content, str) else json.dumps(content))
    shutil.copytree(root / "art", root / "tampered")
    (root / "tampered" / "model.onnx").write_bytes((root / "art" / "model.onnx").read_bytes() + b"\0")
    shutil.copytree(root / "art", root / "no_model")
    (root / "no_model" / "model.onnx").unlink()
    shutil.copytree(root / "art", root / "manifest_dir")
    (root / "manifest_dir" / "edgekit.json").unlink()
    (root / "manifest_dir" / "edgekit.json").mkdir()


# -- the cases: (arguments with {ws} for the workspace, what the one line must say) ----------------------

A = "{ws}/art"
RUN = [
    pytest.param(("run", A, "--dim", f"batch={HUGE}"), "GiB of memory is available", id="run-dim-huge"),
    pytest.param(("run", A, "--dim", "batch=abc"), "bad dim size", id="run-dim-text"),
    pytest.param(("run", A, "--dim", "batch=-1"), "bad dim size", id="run-dim-negative"),
    pytest.param(("run", A, "--dim", "batch=0"), "bad dim size", id="run-dim-zero"),
    pytest.param(("run", A, "--dim", "batch"), "NAME=SIZE", id="run-dim-no-size"),
    pytest.param(("run", A, "--dim", "batch=²"), "bad dim size", id="run-dim-superscript"),
    pytest.param(("run", A, "--dim", "batch=2", "--dim", "batch=3"), "twice", id="run-dim-twice"),
    pytest.param(("run", A, "--dim", "bacth=2"), "no dim 'bacth'", id="run-dim-misspelt"),
    pytest.param(("run", A, "--input", "x={ws}/x.npy", "--dim", "batch=2"), "--dim", id="run-dim-with-files"),
    pytest.param(("run", A, "--threads", "0"), "threads", id="run-threads-zero"),
    pytest.param(("run", A, "--threads", "abc"), "--threads", id="run-threads-text"),
    pytest.param(("run", A, "--seed", "-1"), "seed", id="run-seed-negative"),
    pytest.param(("run", A, "--target", "nosuch"), "unknown target 'nosuch'", id="run-target-unknown"),
    pytest.param(("run", A, "--target", ""), "target", id="run-target-empty"),
    pytest.param(("run", A, "--device", "quantum"), "quantum", id="run-device-unknown"),
    pytest.param(("run", A, "--precision", "fp7"), "fp7", id="run-precision-unknown"),
    pytest.param(("run", A, "--frob"), "--frob", id="run-option-unknown"),
    pytest.param(("run",), "Missing argument", id="run-no-model"),
    pytest.param(("run", A, "--output", "{ws}/existing"), "is a directory", id="run-output-directory"),
    pytest.param(("run", A, "--output", ""), "is a directory", id="run-output-empty"),
    pytest.param(("run", A, "--output", "{ws}/a_file/y.npz"), "not a directory", id="run-output-under-file"),
    pytest.param(("run", A, "--output", "{ws}/y.npy"), ".npz", id="run-output-not-npz"),
    pytest.param(("run", A, "--output", "{ws}/old.npz", "--dim", "batch=x"), "bad dim", id="run-output-kept"),
]
FEEDS = [
    pytest.param("pickle.npy", "never unpickles", id="feed-object-array"),
    pytest.param("empty.npy", "empty or truncated", id="feed-empty-file"),
    pytest.param("truncated.npy", "truncated", id="feed-truncated"),
    pytest.param("huge_header.npy", "truncated", id="feed-header-promises-29TiB"),
    pytest.param("text.npy", "cannot read", id="feed-text-file"),
    pytest.param("x.npz", ".npz archive", id="feed-npz"),
    pytest.param("existing", "directory", id="feed-directory"),
    pytest.param("fifo.npy", "not a regular file", id="feed-fifo"),
    pytest.param("missing.npy", "not found", id="feed-missing"),
    pytest.param("x_text.npy", "dtype float32", id="feed-strings"),
    pytest.param("x_empty_batch.npy", "empty", id="feed-empty-batch"),
]
RUN_FEEDS = [pytest.param(("run", A, "--input", f"x={{ws}}/{p.values[0]}"), p.values[1], id=p.id) for p in FEEDS]
RUN_FEEDS += [
    pytest.param(("run", A, "--input", "{ws}/x.npy"), "NAME=FILE", id="feed-no-name"),
    pytest.param(("run", A, "--input", "z={ws}/x.npy"), "unknown input 'z'", id="feed-unknown-name"),
    pytest.param(("run", A, "--input", "x={ws}/x.npy", "--input", "x={ws}/x.npy"), "twice", id="feed-twice"),
]
MODEL_FILES = [
    pytest.param("missing.onnx", "not found", id="model-missing"),
    pytest.param("empty.onnx", "empty", id="model-empty"),
    pytest.param("text.onnx", "not a valid ONNX", id="model-text"),
    pytest.param("truncated.onnx", "not a valid ONNX", id="model-truncated"),
    pytest.param("x.npy", "not a valid ONNX", id="model-is-npy"),
    pytest.param("fifo.onnx", "fifo.onnx", id="model-fifo"),
    pytest.param("empty_dir", "no model in directory", id="model-empty-dir"),
    pytest.param("two", "several .onnx", id="model-two-in-dir"),
    pytest.param("tampered", "modified after conversion", id="artifact-tampered"),
    pytest.param("no_model", "missing", id="artifact-model-missing"),
    pytest.param("manifest_dir", "not an edgekit artifact", id="artifact-manifest-is-dir"),
    pytest.param("m_invalid_json", "corrupt edgekit.json", id="manifest-invalid-json"),
    pytest.param("m_null", "corrupt edgekit.json", id="manifest-null"),
    pytest.param("m_list", "corrupt edgekit.json", id="manifest-list"),
    pytest.param("m_binary", "corrupt edgekit.json", id="manifest-binary"),
    pytest.param("m_inputs_string", "corrupt edgekit.json", id="manifest-inputs-string"),
    pytest.param("m_no_source", "corrupt edgekit.json", id="manifest-no-source"),
    pytest.param("m_newer_format", "newer than this edgekit", id="manifest-newer-format"),
    pytest.param("m_format_text", "corrupt edgekit.json", id="manifest-format-text"),
    pytest.param("m_model_number", "corrupt edgekit.json", id="manifest-model-number"),
    pytest.param("m_dims_text", "corrupt edgekit.json", id="manifest-dim-text"),
]
RUN_MODELS = [pytest.param(("run", f"{{ws}}/{p.values[0]}"), p.values[1], id=f"run-{p.id}") for p in MODEL_FILES]
RUN_MODELS += [
    pytest.param(("run", "{ws}/huge_fixed.onnx"), "GiB of memory", id="run-model-fixed-dims-11TiB"),
    pytest.param(("run", "{ws}/m_input_no_dtype"), "bad tensor spec", id="run-manifest-input-no-dtype"),
    pytest.param(("run", "{ws}/m_shape_number"), "shape must be a list", id="run-manifest-shape-number"),
    pytest.param(("run", "{ws}/m_negative_dim"), "got -8", id="run-manifest-negative-dim"),
    pytest.param(("run", "{ws}/m_float_dim"), "got 8.5", id="run-manifest-float-dim"),
    pytest.param(("run", "{ws}/m_unknown_dtype"), "unknown dtype", id="run-manifest-unknown-dtype"),
    pytest.param(("run", "{ws}/m_dims_negative"), "corrupt edgekit.json", id="run-manifest-dim-negative"),
    pytest.param(("run", "{ws}/m_dims_huge"), "GiB of memory", id="run-manifest-dim-huge"),
    pytest.param(("run", "{ws}/m_huge"), "bad tensor spec", id="run-manifest-huge"),
]
INSPECT = [
    pytest.param(("inspect", f"{{ws}}/{name}"), needle, id=f"inspect-{name}")
    for name, needle in [("missing", "not found"), ("empty.onnx", "empty"), ("truncated.onnx", "not a valid ONNX"),
                         ("tampered", "modified"), ("m_invalid_json", "corrupt"), ("m_newer_format", "newer")]
] + [pytest.param(("inspect", A, A), "unexpected extra argument", id="inspect-two-models")]  # fmt: skip
OUT = "{ws}/out"
ONNX_SRC = ("convert", "{ws}/art/model.onnx", "-o", OUT)
CONVERT = [
    pytest.param((*ONNX_SRC, "--quantize", "int3"), "unknown --quantize", id="convert-quantize-unknown"),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8-dynamic", "--fidelity", "cosine>>1"), "fidelity", id="convert-fidelity-garbled"
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8-dynamic", "--fidelity", "speed>=1"),
        "unknown metric",
        id="convert-fidelity-metric",
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8-dynamic", "--fidelity", "cosine>=2"), "[0, 1]", id="convert-fidelity-range"
    ),
    pytest.param((*ONNX_SRC, "--fidelity", "cosine>=0.9"), "need --quantize", id="convert-fidelity-no-quantize"),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/nope.npz"), "not found", id="convert-calib-missing"
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/pickle.npy"),
        "cannot read",
        id="convert-calib-object-array",
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/blank.txt"), "empty", id="convert-calib-blank-text"
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/empty_dir"),
        "no .npz or .npy",
        id="convert-calib-empty-dir",
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/fifo.npy"),
        "not a regular file",
        id="convert-calib-fifo",
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calib-data", "{ws}/x.npy", "--calib-samples", "-1"),
        "--calib-samples",
        id="convert-calib-samples-negative",
    ),
    pytest.param(
        (*ONNX_SRC, "--quantize", "int8", "--calibration", "magic"), "--calibration", id="convert-calibration-unknown"
    ),
    pytest.param((*ONNX_SRC, "--target", "nosuch"), "unknown target", id="convert-target-unknown"),
    pytest.param((*ONNX_SRC, "--validate-target", "nosuch"), "unknown target", id="convert-validate-unknown"),
    pytest.param((*ONNX_SRC, "--opset", "0"), "out of range", id="convert-opset-zero"),
    pytest.param((*ONNX_SRC, "--opset", "abc"), "--opset", id="convert-opset-text"),
    pytest.param((*ONNX_SRC, "--output-kind", "y=banana"), "output kind", id="convert-output-kind-unknown"),
    pytest.param((*ONNX_SRC, "--output-kind", "z=tensor"), "'z'", id="convert-output-kind-no-such-output"),
    pytest.param((*ONNX_SRC, "--prune", "0.5"), "PyTorch model", id="convert-prune-onnx"),
    pytest.param((*ONNX_SRC[:3], "{ws}/existing"), "--force", id="convert-output-exists-kept"),
    pytest.param((*ONNX_SRC[:3], "{ws}/a_file", "--force"), "not a directory", id="convert-output-is-file"),
    pytest.param((*ONNX_SRC[:3], "{ws}/a_file/out"), "cannot write", id="convert-output-under-file"),
    pytest.param(("convert", "{ws}/missing.onnx", "-o", OUT), "does not exist", id="convert-source-missing"),
    pytest.param(("convert", "{ws}/notes.txt", "-o", OUT), "not a model source", id="convert-source-text"),
    pytest.param(("convert", "{ws}/x.npy", "-o", OUT), "not a model source", id="convert-source-npy"),
    pytest.param(("convert", "{ws}/empty.onnx", "-o", OUT), "empty", id="convert-source-empty-onnx"),
    pytest.param(("convert", "{ws}/art", "-o", OUT), "not a model", id="convert-source-artifact-dir"),
    pytest.param(("convert", "{ws}/pickle.pt", "-o", OUT), "--allow-pickle", id="convert-source-pickle-pt"),
    pytest.param(("convert", MLP, "-o", OUT, "--exporter", "magic"), "exporter", id="convert-exporter-unknown"),
    pytest.param(("convert", MLP, "-o", OUT, "--input", "x:float32"), "NAME:DTYPE", id="convert-spec-no-shape"),
    pytest.param(("convert", MLP, "-o", OUT, "--input", "x:float32[-1,16]"), "positive", id="convert-spec-negative"),
    pytest.param(("convert", MLP, "-o", OUT, "--input", "x:float99[1,16]"), "unknown dtype", id="convert-spec-dtype"),
    pytest.param(
        ("convert", MLP, "-o", OUT, "--input", "x:float32[b,16]", "--input", "x:float32[b,16]"),
        "twice",
        id="convert-spec-twice",
    ),
    pytest.param(("convert", MLP, "-o", OUT, "--dim", "batch=x"), "bad dim size", id="convert-dim-text"),
    pytest.param(("convert", MLP, "-o", OUT, "--prune", "2"), "(0, 1)", id="convert-prune-above-one"),
    pytest.param(("convert", MLP, "-o", OUT, "--prune", "nan"), "--prune", id="convert-prune-nan"),
    pytest.param(("convert", MLP, "-o", OUT, "--prune", "half"), "--prune", id="convert-prune-text"),
    pytest.param(
        ("convert", MLP, "-o", OUT, "--prune", "0.2", "--prune-kind", "3:4"), "--prune-kind", id="convert-prune-kind"
    ),
    pytest.param(
        ("convert", MLP, "-o", OUT, "--prune", "0.2", "--prune-until", "latency<=1ms"),
        "not both",
        id="convert-prune-twice",
    ),
    pytest.param(
        ("convert", MLP, "-o", OUT, "--prune-until", "speedup>=fast"), "speedup>=1.3", id="convert-prune-until-budget"
    ),
    pytest.param(
        ("convert", MLP, "-o", OUT, "--prune-until", "latency<=1ms", "--fidelity", "cosine>=0.9"),
        "held-out rows",
        id="convert-prune-until-floor-without-data",
    ),
]
BENCH = [
    pytest.param(("bench", A, "--shape", "x=1xq"), "bad --shape", id="bench-shape-letter"),
    pytest.param(("bench", A, "--shape", "x"), "bad --shape", id="bench-shape-no-size"),
    pytest.param(("bench", A, "--shape", "nosuch=1x8"), "'nosuch'", id="bench-shape-unknown"),
    pytest.param(("bench", A, "--shape", "x=1x9"), "fixed at 8", id="bench-shape-fixed-dim"),
    pytest.param(("bench", A, "--shape", f"x={HUGE}x8"), "GiB of memory", id="bench-shape-huge"),
    pytest.param(("bench", A, "--batch", HUGE), "GiB of memory", id="bench-batch-huge"),
    pytest.param(("bench", A, "--batch", "0"), "--batch", id="bench-batch-zero"),
    pytest.param(("bench", A, "--iterations", "-5"), "iterations", id="bench-iterations-negative"),
    pytest.param(("bench", A, "--threads", "0"), "threads", id="bench-threads-zero"),
    pytest.param(("bench", A, "--rounds", "0"), "rounds", id="bench-rounds-zero"),
    pytest.param(("bench", A, "--duration", "nan"), "duration", id="bench-duration-nan"),
    pytest.param(("bench", A, "--warmup", "abc"), "--warmup", id="bench-warmup-text"),
    pytest.param(("bench", A, "--mode", "turbo"), "unknown mode", id="bench-mode-unknown"),
    pytest.param(("bench", A, "-t", "nosuch"), "unknown target", id="bench-target-unknown"),
    pytest.param(("bench", A, "-t", "torch"), "--baseline torch", id="bench-target-torch"),
    pytest.param(("bench", A, "--json", "{ws}/existing"), "directory", id="bench-json-is-dir"),
    pytest.param(("bench", A, "--csv", "{ws}/a_file/r.csv"), "not a directory", id="bench-csv-under-file"),
    pytest.param(("bench",), "Missing argument", id="bench-no-model"),
    pytest.param(("bench", "{ws}/missing"), "not found", id="bench-model-missing"),
    pytest.param(("bench", "{ws}/m_invalid_json"), "corrupt edgekit.json", id="bench-manifest-invalid"),
    pytest.param(("bench", "{ws}/tampered"), "modified", id="bench-artifact-tampered"),
]
D = ("distill", "--teacher", MLP, "--student", MLP, "--data", "{ws}/x.npz", "-o", "{ws}/s.pt")
DISTILL = [
    pytest.param((*D, "--epochs", "1", "--steps", "1"), "not both", id="distill-epochs-and-steps"),
    pytest.param((*D, "--loss", "l7"), "unknown distillation loss", id="distill-loss-unknown"),
    pytest.param((*D, "--batch-size", "0"), "batch_size", id="distill-batch-zero"),
    pytest.param((*D, "--lr", "-1"), "lr", id="distill-lr-negative"),
    pytest.param((*D, "--temperature", "0"), "temperature", id="distill-temperature-zero"),
    pytest.param((*D, "--alpha", "2"), "alpha", id="distill-alpha-above-one"),
    pytest.param((*D, "--steps", "-3"), "max_steps", id="distill-steps-negative"),
    pytest.param((*D, "--epochs", "abc"), "--epochs", id="distill-epochs-text"),
    pytest.param((*D, "--feature", "fc1"), "STUDENT_LAYER=TEACHER_LAYER", id="distill-feature-malformed"),
    pytest.param((*D, "--resume"), "checkpoint directory", id="distill-resume-without-dir"),
    pytest.param((*D, "--project-outputs"), "project_outputs", id="distill-project-with-kl"),
    pytest.param(D[:5] + D[7:], "Missing option '--data'", id="distill-no-data"),
    pytest.param((*D[:6], "{ws}/missing.npz", *D[7:]), "not found", id="distill-data-missing"),
    pytest.param((*D, "--val-data", "{ws}/missing.npz"), "not found", id="distill-val-data-missing"),
    pytest.param((*D[:8], "{ws}/existing"), "is a directory", id="distill-output-directory"),
    pytest.param((*D[:8], "{ws}/s.txt"), ".pt", id="distill-output-not-pt"),
    pytest.param((*D[:4], "{ws}/pickle.pt", *D[5:]), "--allow-pickle", id="distill-student-pickle"),
]
OTHER = [pytest.param(("frobnicate",), "No such command", id="command-unknown")]
# found by this file and fixed where they belonged (artifact.py, benchmark/plan.py)
KNOWN = [
    pytest.param(("run", "{ws}/m_deep"), "corrupt", id="manifest-nested-100k-deep"),
    pytest.param(("inspect", "{ws}/m_validation_keys"), "corrupt", id="inspect-manifest-validation-keys"),
    pytest.param(("bench", A, "--shape", "x=1x²"), "bad --shape", id="bench-shape-superscript"),
]
CASES = RUN + RUN_FEEDS + RUN_MODELS + INSPECT + CONVERT + BENCH + DISTILL + OTHER + KNOWN


@pytest.mark.parametrize(("args", "needle"), CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws: Path, args: tuple[str, ...], needle: str) -> None:
    before = snapshot(ws)
    result = edgekit(*(a.format(ws=ws) for a in args), cwd=ws)
    assert_refused(result, needle)
    assert snapshot(ws) == before
    assert not (ws / "PWNED").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("name", ["art/model.onnx", "x.npy"])
def test_unreadable_file(ws: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "ws"
    shutil.copytree(ws / "art", copy / "art")
    shutil.copy(ws / "x.npy", copy / "x.npy")
    (copy / name).chmod(0)
    args = ("run", "art") if name.endswith(".onnx") else ("run", "art", "--input", "x=x.npy")
    try:
        assert_refused(edgekit(*args, cwd=copy), Path(name).name)
    finally:
        (copy / name).chmod(0o644)


def test_a_usage_error_names_the_help(ws: Path) -> None:
    result = edgekit("run", "art", "--threads", "many", cwd=ws)
    assert_refused(result, "--threads")
    assert "run --help" in result.stderr
