"""Artifacts are data: no path in a manifest or an ONNX file makes edgekit read, hash or load a file outside.

Each hostile artifact below is refused with an ArtifactError that names the entry, on load and on inspect,
and through the CLI with exit 2, one stderr line and nothing written. Artifacts made by today's convert
(external data included) keep loading.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgekit
from edgekit.artifact import (
    MANIFEST_NAME,
    Manifest,
    Source,
    describe_model,
    find_model,
    sha256_of,
    staging_dir,
    write_manifest,
)
from edgekit.errors import ArtifactError
from edgekit.runtimes.loading import model_ref

MODELS = Path(__file__).parent / "models"
Edit = Callable[[Path, dict], None]


def make_artifact(tmp_path: Path, model: Path, name: str = "art", *, model_rel: str = "model.onnx") -> Path:
    """An artifact as convert writes it: the model (at ``model_rel``), a tokenizer file, ``edgekit.json``."""
    out = tmp_path / name
    with staging_dir(out) as tmp:
        (tmp / model_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model, tmp / model_rel)
        for extra in model.parent.glob(f"{model.name}.data"):
            shutil.copy(extra, (tmp / model_rel).parent / extra.name)
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "vocab.txt").write_text("a\nb\n")
        write_manifest(tmp, Manifest(
            source=Source(kind="test", ref="x"), model=model_rel,
            inputs=[{"name": "x", "dtype": "float32", "shape": ["batch", 8]}],
            outputs=[{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
        ))  # fmt: skip
    return out


def edit_manifest(art: Path, edit: Edit) -> None:
    path = art / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(art, data)
    path.write_text(json.dumps(data))


def _outside(art: Path, name: str = "outside.bin") -> Path:
    """A file beside the artifact (what a hostile entry reaches for)."""
    path = art.parent / name
    path.write_bytes(b"secret")
    return path


def _files_dotdot(art: Path, data: dict) -> None:
    data["files"]["../outside.bin"] = sha256_of(_outside(art))


def _files_absolute(art: Path, data: dict) -> None:
    outside = _outside(art)
    data["files"][str(outside)] = sha256_of(outside)


def _files_symlink_out(art: Path, data: dict) -> None:
    (art / "link.bin").symlink_to(_outside(art))
    data["files"]["link.bin"] = sha256_of(art / "link.bin")


def _files_not_normalised(art: Path, data: dict) -> None:
    data["files"]["./model.onnx"] = data["files"]["model.onnx"]


def _model_dotdot(art: Path, data: dict) -> None:
    shutil.copy(art / "model.onnx", art.parent / "elsewhere.onnx")
    data["model"] = "../elsewhere.onnx"


def _model_symlink_out(art: Path, data: dict) -> None:
    shutil.copy(art / "model.onnx", art.parent / "elsewhere.onnx")
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to(art.parent / "elsewhere.onnx")


def _variant_absolute(art: Path, data: dict) -> None:
    shutil.copy(art / "model.onnx", art.parent / "elsewhere.onnx")
    data["variants"] = {"onnxruntime": str(art.parent / "elsewhere.onnx")}


def _variant_unhashed(art: Path, data: dict) -> None:
    shutil.copy(art / "model.onnx", art / "model.rogue.onnx")
    data["variants"] = {"onnxruntime": "model.rogue.onnx"}


def _hash_mismatch(art: Path, data: dict) -> None:
    data["files"]["tokenizer/vocab.txt"] = "0" * 64


HOSTILE: dict[str, tuple[Edit, str]] = {
    "files ../": (_files_dotdot, "files entry path '../outside.bin' climbs out"),
    "files absolute": (_files_absolute, "is absolute"),
    "files symlink out": (_files_symlink_out, "files entry path 'link.bin' resolves outside"),
    "files not normalised": (_files_not_normalised, "files entry path './model.onnx' is not normalised"),
    "model ../": (_model_dotdot, "model path '../elsewhere.onnx' climbs out"),
    "model symlink out": (_model_symlink_out, "files entry path 'model.onnx' resolves outside"),
    "variant absolute": (_variant_absolute, "variants['onnxruntime'] path"),
    "variant unhashed": (_variant_unhashed, "variants['onnxruntime'] 'model.rogue.onnx' is not among the"),
    "hash mismatch": (_hash_mismatch, "modified after conversion (sha256 mismatch)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest_is_refused_naming_the_entry(tmp_path, mlp_onnx, case):
    edit, needle = HOSTILE[case]
    art = make_artifact(tmp_path, mlp_onnx.path)
    edit_manifest(art, edit)
    for action in (lambda: edgekit.load(art), lambda: model_ref(art, "onnxruntime"), lambda: describe_model(art)):
        with pytest.raises(ArtifactError, match=_literal(needle)):
            action()


def _literal(text: str) -> str:
    return re.escape(text)


def test_a_model_in_a_subdirectory_is_checked_and_loaded_at_one_path(tmp_path, mlp_onnx):
    """The loader used to check ``art/sub/model.onnx`` and then load ``art/sub/sub/model.onnx``."""
    art = make_artifact(tmp_path, mlp_onnx.path, model_rel="sub/model.onnx")
    assert model_ref(art).path == art / "sub" / "model.onnx"
    with edgekit.load(art) as session:
        np.testing.assert_allclose(session.run(mlp_onnx.feeds(2))["y"], mlp_onnx.reference(mlp_onnx.feeds(2))["y"],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


# --- external data ------------------------------------------------------------------------------------------------


def with_external_data(model: Path, dest: Path, location: str) -> Path:
    """``model`` saved at ``dest`` with its weights in external data at ``location`` (relative to ``dest``)."""
    proto = onnx.load(str(model))
    onnx.save_model(proto, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{dest.name}.data", size_threshold=0)  # fmt: skip
    if location == f"{dest.name}.data":
        return dest
    _relocate(dest, location)
    target = dest.parent / location
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(dest.parent / f"{dest.name}.data"), target)
    return dest


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink out"])
def test_bare_onnx_with_external_data_outside_its_directory_is_refused(tmp_path, mlp_onnx, kind):
    outside = tmp_path / "outside" / "w.data"
    (tmp_path / "m").mkdir()
    dest = with_external_data(mlp_onnx.path, tmp_path / "m" / "m.onnx", "../outside/w.data")
    if kind == "absolute":
        _relocate(dest, str(outside))
    if kind == "symlink out":
        (tmp_path / "m" / "link.data").symlink_to(outside)
        _relocate(dest, "link.data")
    for action in (lambda: edgekit.load(dest), lambda: describe_model(dest)):
        with pytest.raises(ArtifactError, match=_literal("external data of m.onnx path")):
            action()


def _relocate(model: Path, location: str) -> None:
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))


def test_bare_onnx_with_external_data_inside_loads(tmp_path, mlp_onnx):
    (tmp_path / "m").mkdir()
    dest = with_external_data(mlp_onnx.path, tmp_path / "m" / "m.onnx", "weights/w.data")
    with edgekit.load(dest) as session:
        assert session.run(mlp_onnx.feeds(1))["y"].shape == (1, 4)


def test_artifact_model_with_external_data_pointing_out_is_refused(tmp_path, mlp_onnx):
    """The model file is hashed, but it names its own external data: that name must be confined and hashed too."""
    (tmp_path / "src").mkdir()
    src = with_external_data(mlp_onnx.path, tmp_path / "src" / "model.onnx", "model.onnx.data")
    art = make_artifact(tmp_path, src)
    shutil.copy(art / "model.onnx.data", tmp_path / "stolen.data")
    _relocate(art / "model.onnx", "../stolen.data")
    edit_manifest(art, lambda a, d: d["files"].update({"model.onnx": sha256_of(a / "model.onnx")}))
    with pytest.raises(ArtifactError, match=_literal("external data of model.onnx path '../stolen.data' climbs out")):
        edgekit.load(art)


def test_artifact_external_data_not_in_files_is_refused(tmp_path, mlp_onnx):
    (tmp_path / "src").mkdir()
    src = with_external_data(mlp_onnx.path, tmp_path / "src" / "model.onnx", "model.onnx.data")
    art = make_artifact(tmp_path, src)
    edit_manifest(art, lambda a, d: d["files"].pop("model.onnx.data"))
    with pytest.raises(ArtifactError, match=_literal("external data of model 'model.onnx' 'model.onnx.data' is not")):
        edgekit.load(art)


def test_todays_convert_with_external_data_keeps_loading(tmp_path, monkeypatch):
    """An artifact written by this release's convert, weights in external data (threshold lowered as in
    tests/test_export.py), passes every check: load, run, inspect."""
    from edgekit.converters import export

    monkeypatch.setattr(export, "_TWO_GB", 1000)
    out = tmp_path / "art"
    manifest = edgekit.convert(f"{MODELS}/mlp.py:make", out, exporter="torchscript", quantize="int8-dynamic")
    assert "model.onnx.data" in manifest.files and manifest.variants
    for target in ("onnxruntime", "openvino"):
        with edgekit.load(out, target=target) as session:
            assert session.run({"x": np.ones((2, 16), np.float32)})["output"].shape == (2, 4)
    assert describe_model(out)["size_bytes"] > (out / "model.onnx").stat().st_size
    assert find_model(out)[0] == out / "model.onnx"


# --- provenance is a record, never opened -------------------------------------------------------------------------


def test_source_ref_is_never_opened_by_load_run_or_inspect(tmp_path, mlp_onnx):
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef make():\n    raise SystemExit(1)\n")
    art = make_artifact(tmp_path, mlp_onnx.path)
    edit_manifest(art, lambda a, d: d.update(source={"kind": "python", "ref": f"{evil}:make", "sha256": None}))
    from edgekit.runtimes.oneshot import run_once

    run_once(art)
    describe_model(art)
    edgekit.load(art).close()
    assert not marker.exists()
    edit_manifest(art, lambda a, d: d.update(source={"kind": "python", "ref": "../../nowhere.py:make"}))
    assert describe_model(art)["manifest"]["source"]["ref"] == "../../nowhere.py:make"


# --- the one confinement function -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "why"),
    [("", "empty"), ("/etc/passwd", "absolute"), ("C:/x", "absolute"), ("a\\b", "backslash"), ("a/../../b", ".."),
     ("..", ".."), ("./a", "not normalised"), ("a//b", "not normalised"), ("a/", "not normalised"), (3, "string")],
)  # fmt: skip
def test_escape_reasons(rel, why):
    from edgekit.paths import escape_reason

    assert why in (escape_reason(rel) or "")


def test_plain_names_are_confined(tmp_path):
    from edgekit.paths import confined_path, escape_reason

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner").symlink_to(tmp_path / "a.bin")  # a symlink that stays inside is fine
    assert confined_path(tmp_path, "sub/inner", "x") == tmp_path / "sub" / "inner"
    assert escape_reason("./a", canonical=False) is None
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ArtifactError, match="resolves outside"):
        confined_path(tmp_path, "loop", "x")


def test_convert_refuses_to_record_a_file_that_leads_out(tmp_path, mlp_onnx):
    _outside(tmp_path / "art")
    with pytest.raises(ArtifactError, match="resolves outside"), staging_dir(tmp_path / "art") as tmp:
        shutil.copy(mlp_onnx.path, tmp / "model.onnx")
        (tmp / "leak.bin").symlink_to(tmp_path / "outside.bin")
        write_manifest(tmp, Manifest(source=Source(kind="t", ref="x"), inputs=[], outputs=[]))
    assert not (tmp_path / "art").exists()


# --- the command line: exit 2, one line, nothing written ---------------------------------------------------------


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize("case", ["files ../", "model ../", "variant absolute", "variant unhashed"])
def test_cli_refuses_hostile_artifacts_with_one_line_and_writes_nothing(tmp_path, mlp_onnx, case):
    edit, needle = HOSTILE[case]
    art = make_artifact(tmp_path, mlp_onnx.path)
    edit_manifest(art, edit)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args in (("run", art, "--output", tmp_path / "y.npz"), ("inspect", art)):
        result = _cli(*args)
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
