from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import edgekit
from edgekit.artifact import MANIFEST_NAME, Manifest, Source, find_model, read_manifest, staging_dir, write_manifest
from edgekit.errors import ArtifactError, ModelFormatError, OutputError


def _artifact(tmp_path: Path, mlp_onnx) -> Path:
    out = tmp_path / "art"
    with staging_dir(out) as tmp:
        shutil.copy(mlp_onnx.path, tmp / "model.onnx")
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "vocab.txt").write_text("a\nb\n")
        write_manifest(
            tmp,
            Manifest(
                source=Source(kind="test", ref="x"),
                inputs=[{"name": "x", "dtype": "float32", "shape": ["batch", 8]}],
                outputs=[{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
            ),
        )
    return out


def test_manifest_records_every_file_hash(tmp_path, mlp_onnx):
    out = _artifact(tmp_path, mlp_onnx)
    manifest = read_manifest(out)
    assert set(manifest.files) == {"model.onnx", "tokenizer/vocab.txt"}
    assert manifest.edgekit_version == edgekit.__version__
    assert manifest.created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "mlp.onnx"]  # no staging leftovers


def test_load_artifact_and_detect_modification(tmp_path, mlp_onnx):
    out = _artifact(tmp_path, mlp_onnx)
    with edgekit.load(out) as session:
        assert session.run(mlp_onnx.feeds(2))["y"].shape == (2, 4)
    with open(out / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="modified after conversion"):
        edgekit.load(out)


def test_missing_artifact_file(tmp_path, mlp_onnx):
    out = _artifact(tmp_path, mlp_onnx)
    (out / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        find_model(out)


def test_corrupt_manifest(tmp_path, mlp_onnx):
    out = _artifact(tmp_path, mlp_onnx)
    (out / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        find_model(out)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staging_dir(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force_and_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(OutputError, match="--force"), staging_dir(out):
        pass
    assert (out / "old.txt").read_text() == "keep me"
    with staging_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission bits do not stop it")
def test_unwritable_parent(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"), staging_dir(parent / "out"):
            pass
    finally:
        parent.chmod(0o700)


def test_output_under_a_file_is_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"), staging_dir(blocker / "out"):
        pass


def test_find_model_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        find_model(tmp_path / "nope.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match="no model in directory"):
        find_model(empty)


def test_bare_onnx_in_a_directory(tmp_path, mlp_onnx):
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(mlp_onnx.path, d / "m.onnx")
    path, manifest = find_model(d)
    assert path == d / "m.onnx" and manifest is None


def test_truncated_and_random_onnx(tmp_path, mlp_onnx):
    data = mlp_onnx.path.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError):
        edgekit.load(trunc)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        edgekit.load(empty)


def _old_style_manifest(tmp_path: Path, mlp_onnx) -> Path:
    """An artifact as edgekit wrote it before int_ranges and source metadata were typed: both under extras."""
    import json

    out = _artifact(tmp_path, mlp_onnx)
    data = json.loads((out / MANIFEST_NAME).read_text())
    del data["int_ranges"], data["source"]["metadata"]
    data["extras"] = {"int_ranges": {"ids": [104, 30521]}, "source": {"architecture": "BertModel"}, "note": "kept"}
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    return out


def test_old_artifacts_load_into_the_typed_fields(tmp_path, mlp_onnx):
    manifest = read_manifest(_old_style_manifest(tmp_path, mlp_onnx))
    assert manifest.int_ranges == {"ids": (104, 30521)}
    assert manifest.source.metadata == {"architecture": "BertModel"}
    assert manifest.extras == {"note": "kept"}


def test_new_artifacts_write_typed_fields_not_extras(tmp_path, mlp_onnx):
    import json

    out = _artifact(tmp_path, mlp_onnx)
    manifest = read_manifest(out)
    again = manifest.model_copy(update={"int_ranges": {"ids": (0, 9)}})
    write_manifest(out, again)
    data = json.loads((out / MANIFEST_NAME).read_text())
    assert data["int_ranges"] == {"ids": [0, 9]} and data["extras"] == {}
    assert read_manifest(out).int_ranges == {"ids": (0, 9)}


def test_model_ref_carries_the_typed_manifest(tmp_path, mlp_onnx):
    from edgekit.runtimes.loading import model_ref

    ref = model_ref(_old_style_manifest(tmp_path, mlp_onnx))
    assert isinstance(ref.manifest, Manifest) and ref.manifest.int_ranges == {"ids": (104, 30521)}
    assert model_ref(mlp_onnx.path).manifest is None
