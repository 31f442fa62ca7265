"""``edgekit.provenance``: a source's sha256 recomputed as the loaders record it, found without importing it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.provenance import module_file, source_location, source_sha256

MODELS = Path(__file__).parent / "models"


def test_a_module_is_found_without_running_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "trapped"
    package.mkdir()
    (package / "__init__.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    (package / "factory.py").write_text("def make(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_file("trapped.factory") == package / "factory.py"
    assert source_location("trapped.factory:make") == package / "factory.py"
    assert module_file("trapped.missing") is None and module_file("trapped.factory.deeper") is None
    assert "trapped" not in sys.modules and not (package / "__init__.py.ran").exists()


def test_source_sha256_is_what_each_loader_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from edgekit.sources import load_source

    monkeypatch.syspath_prepend(str(MODELS))
    script = tmp_path / "mlp.ts"
    torch.jit.save(torch.jit.script(load_source(f"{MODELS}/mlp.py:make").module), str(script))
    try:
        for ref in (f"{MODELS}/mlp.py:make", "mlp:make", str(script)):
            loaded = load_source(ref)
            assert loaded.sha256 and source_sha256(loaded.kind, loaded.ref) == loaded.sha256, ref
    finally:
        sys.modules.pop("mlp", None)
    assert source_sha256("python", f"{tmp_path / 'gone.py'}:make") is None
    assert source_sha256("onnx", str(script)) is None  # not a PyTorch source: nothing the bench may trust
