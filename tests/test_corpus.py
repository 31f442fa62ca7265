"""The bundled distillation corpus: a fixed, disjoint train/eval split that ships with edgekit and reads without
torch (distillation trains on one split and judges fidelity on the other, so they must never overlap)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import corpus

ROOT = Path(__file__).resolve().parents[1]


def _make_corpus_module():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "tools" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_splits_are_disjoint_and_sized_for_distillation() -> None:
    train, evaluation = corpus.train_texts(), corpus.eval_texts()
    assert 50_000 <= len(train) <= 150_000
    assert 2_000 <= len(evaluation) <= len(train) // 10
    seen = {" ".join(s.lower().split()) for s in train}
    assert len(seen) == len(train), "train has duplicates"
    assert not seen & {" ".join(s.lower().split()) for s in evaluation}


def test_sentences_are_english_sentences_of_a_usable_length() -> None:
    for text in (*corpus.train_texts()[:2000], *corpus.eval_texts()[:500]):
        assert 4 <= len(text.split()) <= 40, text
        assert text[0].isupper() or not text[0].isalpha(), text
        assert text[-1] in ".!?", text


def test_the_split_is_the_hash_rule_so_a_rebuild_keeps_it() -> None:
    """Every sentence sits in the split its hash says: rebuilding or re-filtering cannot move one across."""
    rule = _make_corpus_module()
    assert all(rule.is_eval(s) for s in corpus.eval_texts())
    assert not any(rule.is_eval(s) for s in corpus.train_texts()[:5000])


def test_reads_are_cached_and_immutable() -> None:
    assert corpus.train_texts() is corpus.train_texts()
    assert isinstance(corpus.eval_texts(), tuple)
    facts = corpus.corpus_facts()
    assert facts == {"name": "wordnet-3.0", "train_texts": len(corpus.train_texts()),
                     "eval_texts": len(corpus.eval_texts())}  # fmt: skip


def test_the_licence_ships_next_to_the_data() -> None:
    data = ROOT / "edgekit" / "data" / "corpus"
    text = (data / corpus.LICENSE_FILE).read_text()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in text
    assert "Permission to use, copy, modify and distribute" in text
    assert sum(p.stat().st_size for p in data.iterdir()) < 4_000_000  # a few MB at most


def test_package_data_names_the_corpus_files() -> None:
    """A wheel carries only what pyproject's package-data names: the files and the licence must match it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["edgekit"]
    names = {p.relative_to(ROOT / "edgekit") for p in (ROOT / "edgekit" / "data" / "corpus").iterdir()}
    assert all(any(n.match(pattern) for pattern in patterns) for n in names), (names, patterns)


def test_reading_the_corpus_imports_no_heavy_package() -> None:
    code = (
        "import sys; from edgekit import corpus; corpus.train_texts(); corpus.eval_texts(); "
        "print(','.join(m for m in ('torch', 'numpy', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_generator_turns_a_gloss_into_sentences() -> None:
    rule = _make_corpus_module()
    definitions, examples = rule.split_gloss('scoop up or take up with a spoon; "spoon the sauce over the roast"')
    assert definitions == ["scoop up or take up with a spoon"]
    assert examples == ["spoon the sauce over the roast"]
    assert rule.as_sentence(examples[0]) == "Spoon the sauce over the roast."
    sentence = rule.gloss_sentence("spoon", "verb", definitions[0])
    assert sentence is not None and sentence.endswith("scoop up or take up with a spoon.") and "spoon" in sentence
    assert rule.as_sentence("a big car") is None  # too short to be a sentence
