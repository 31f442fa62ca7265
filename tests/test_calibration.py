"""Calibration data: every source form, the checks that make bad data a one-line InputError, and the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.converters.calibration import (
    CalibrationOptions,
    find_tokenizer,
    load_calibration,
    split_indices,
)
from edgekit.errors import InputError
from edgekit.specs import TensorSpec

X = [TensorSpec("x", "float32", ("batch", 8))]
TEXT = [TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq"))]
WORDS = [
    "the",
    "a",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "models",
    "run",
    "on",
    "small",
    "devices",
    "near",
    "data",
    "fast",
]


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def write_tokenizer(directory: Path) -> Path:
    """A tiny word-level tokenizer.json, the format the artifact's tokenizer/ holds."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer" / "tokenizer.json"
    tok.save(str(path))
    return path


def test_npz_rows_become_samples_and_the_split_is_disjoint(tmp_path):
    data = rows(30)
    np.savez(tmp_path / "c.npz", x=data)
    cs = load_calibration(tmp_path / "c.npz", X, CalibrationOptions(holdout=8))
    assert len(cs.heldout) == 8 and len(cs.calibration) == 22
    assert all(f["x"].shape == (1, 8) for f in cs.calibration + cs.heldout)
    seen = {f["x"].tobytes() for f in cs.calibration}
    assert not seen & {f["x"].tobytes() for f in cs.heldout}
    assert cs.summary()["calibration_samples"] == 22


def test_npy_for_a_single_input_and_a_directory_of_files(tmp_path):
    np.save(tmp_path / "a.npy", rows(4, 1))
    np.savez(tmp_path / "b.npz", x=rows(5, 2))
    (tmp_path / "notes.txt").write_text("ignored")
    cs = load_calibration(tmp_path, X, CalibrationOptions(holdout=0))
    assert len(cs.calibration) == 9 and cs.kind == "arrays"


def test_iterable_and_callable_sources_and_samples_cap():
    feeds = [{"x": rows(1, i)} for i in range(12)]
    cs = load_calibration(feeds, X, CalibrationOptions(samples=5, holdout=3))
    assert len(cs.calibration) == 5 and len(cs.heldout) == 3
    again = load_calibration(lambda: iter(feeds), X, CalibrationOptions(samples=5, holdout=3))
    assert [f["x"].tobytes() for f in again.heldout] == [f["x"].tobytes() for f in cs.heldout]


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"y": np.zeros((2, 8), np.float32)}, "unknown input 'y'"),
        ({"x": np.zeros((2, 7), np.float32)}, "dim 1 must be 8"),
        ({"x": np.zeros((2, 8), np.float64)}, "expected dtype float32"),
        ({"x": np.zeros((8,), np.float32)}, "expected rank 2"),
    ],
)
def test_wrong_names_shapes_and_dtypes_are_input_errors(tmp_path, arrays, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=needle) as info:
        load_calibration(tmp_path / "bad.npz", X)
    assert "bad.npz" in str(info.value) and "\n" not in str(info.value)


def test_empty_and_missing_data_are_input_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "empty_dir").mkdir()
    for source, needle in [
        (tmp_path / "empty.txt", "empty"),
        (tmp_path / "empty_dir", "no .npz"),
        (tmp_path / "nope.npz", "not found"),
        ([], "empty"),
    ]:
        with pytest.raises(InputError, match=needle):
            load_calibration(source, X)


def test_corrupt_files_are_input_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    for name in ("bad.npz", "obj.npy"):
        with pytest.raises(InputError, match="cannot read calibration file"):
            load_calibration(tmp_path / name, X)


def test_npy_for_a_model_with_two_inputs_is_an_input_error(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.int64))
    with pytest.raises(InputError, match=r"use \.npz"):
        load_calibration(tmp_path / "a.npy", TEXT)


def test_text_lines_are_tokenized_split_before_packing_and_packed_to_length(tmp_path):
    tokenizer = write_tokenizer(tmp_path)
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, int(rng.integers(3, 9)))) for _ in range(60)]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    opts = CalibrationOptions(holdout=20, max_length=24, pack_every=3)
    cs = load_calibration(tmp_path / "s.txt", TEXT, opts, tokenizer=find_tokenizer(tmp_path))
    assert tokenizer == find_tokenizer(tmp_path)
    assert len(cs.heldout) == 40 and len(cs.calibration) == 40  # 20 held-back lines + 20 from the corpus
    assert cs.details["heldout_sources"] == {str(tmp_path / "s.txt"): 20, "corpus": 20}
    assert all(set(f) == {"input_ids", "attention_mask"} and f["input_ids"].dtype == np.int64 for f in cs.calibration)
    lengths = sorted(f["input_ids"].shape[1] for f in cs.calibration)
    assert lengths[0] < 9 and lengths[-1] > 9  # natural sentences and packed long sequences
    assert max(f["input_ids"].shape[1] for f in cs.heldout[:20]) < 9  # held-back lines are never packed
    assert cs.details["packed_samples"] > 0


def test_text_is_also_judged_on_the_corpus_evaluation_split_across_lengths():
    """Held-back text from the user's file resembles their calibration text; the corpus's evaluation split
    (never trained or calibrated on) is of another kind, spread over its lengths, some packed to full length."""
    from edgekit.converters.calibration import corpus_heldout_texts
    from edgekit.corpus import eval_texts, train_texts
    from edgekit.sources import bundled_minilm_dir
    from edgekit.text import TextEncoder

    encoder = TextEncoder(bundled_minilm_dir() / "tokenizer.json", TEXT)
    picked = corpus_heldout_texts(64, 4, encoder)
    assert picked == corpus_heldout_texts(64, 4, encoder) and len(picked) == 64
    singles = [t for t in picked if t in set(eval_texts())]
    assert len(singles) >= 48 and not set(singles) & set(train_texts())
    lengths = sorted(len(t) for t in singles)
    assert lengths[-1] > 3 * lengths[0]  # short and long sentences, not one length
    packed = [len(e.ids) for e in encoder.encodings([t for t in picked if t not in singles])]
    assert packed and max(packed) > 0.8 * encoder.max_length  # near full-length samples too
    assert corpus_heldout_texts(0, 4, encoder) == []


def test_text_without_a_tokenizer_is_an_input_error(tmp_path):
    (tmp_path / "s.txt").write_text("one line\nanother line\n")
    with pytest.raises(InputError, match="tokenizer"):
        load_calibration(tmp_path / "s.txt", TEXT)


def test_split_is_deterministic_and_keeps_two_thirds_for_calibration():
    calib, held = split_indices(10, holdout=100, seed=3)
    assert len(held) == 3 and sorted(calib + held) == list(range(10))
    assert split_indices(10, 100, 3) == (calib, held)
    assert split_indices(2, 100, 0) == ([0, 1], [])


def test_text_calibration_tokenizes_at_the_models_own_length(tmp_path):
    """MiniLM reads 256 tokens (its sentence_bert_config.json), so packed calibration samples reach past 128."""
    from edgekit.sources import bundled_minilm_dir

    sentences = Path(__file__).parents[1] / "benchmarks" / "data" / "sentences.txt"
    cs = load_calibration(sentences, TEXT, CalibrationOptions(samples=40, holdout=8),
                          tokenizer=bundled_minilm_dir() / "tokenizer.json")  # fmt: skip
    lengths = [f["input_ids"].shape[1] for f in cs.calibration]
    assert cs.details["max_length"] == 256 and 128 < max(lengths) <= 256
    given = load_calibration(sentences, TEXT, CalibrationOptions(samples=40, holdout=8, max_length=64),
                             tokenizer=bundled_minilm_dir() / "tokenizer.json")  # fmt: skip
    assert given.details["max_length"] == 64 and max(f["input_ids"].shape[1] for f in given.calibration) == 64
