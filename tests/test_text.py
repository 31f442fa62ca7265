"""Where a text model truncates, found in its own files as sentence-transformers and transformers find it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.artifact import Manifest, Source
from edgekit.text import FALLBACK_MAX_LENGTH, artifact_max_length, max_length_of_files


def write(directory: Path, **files: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / f"{name}.json").write_text(json.dumps(data))
    return directory


def test_sentence_transformers_max_seq_length_comes_first(tmp_path):
    d = write(tmp_path, sentence_bert_config={"max_seq_length": 256}, tokenizer_config={"model_max_length": 512})
    assert max_length_of_files(d) == (256, "sentence_bert_config.json max_seq_length")


def test_the_tokenizers_limit_is_capped_by_the_position_embeddings(tmp_path):
    d = write(tmp_path, tokenizer_config={"model_max_length": 1024}, config={"max_position_embeddings": 512})
    assert max_length_of_files(d)[0] == 512
    assert max_length_of_files(d, positions=128)[0] == 128
    write(tmp_path, config={"max_position_embeddings": 4096})
    assert max_length_of_files(d) == (1024, "tokenizer_config.json model_max_length")


def test_the_no_limit_sentinel_and_junk_are_ignored(tmp_path):
    d = write(tmp_path, tokenizer_config={"model_max_length": 1e30}, tokenizer={"truncation": {"max_length": 96}})
    assert max_length_of_files(d) == (96, "tokenizer.json truncation")
    (d / "tokenizer.json").write_text("not json")
    assert max_length_of_files(d) is None
    write(tmp_path, sentence_bert_config={"max_seq_length": True}, tokenizer={"truncation": None})
    assert max_length_of_files(d) is None


def test_an_artifact_that_says_nothing_falls_back_with_a_warning(tmp_path):
    manifest = Manifest(source=Source(kind="onnx", ref="x"), inputs=[], outputs=[])
    with pytest.warns(UserWarning, match="truncating at 128"):
        assert artifact_max_length(tmp_path, manifest) == (FALLBACK_MAX_LENGTH, "fallback")
    manifest.source.metadata["max_seq_length"] = 200
    assert artifact_max_length(tmp_path, manifest) == (200, "manifest source.metadata max_seq_length")
