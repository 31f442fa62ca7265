"""edgekit.Embedder against sentence-transformers itself, on every CPU runtime: the same vectors for ~300 varied
texts (short, long past 128 and past 256 tokens, mixed in one batch), input order kept under length sorting,
prompts, clear errors, and threads sharing one Embedder."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.artifact import MANIFEST_NAME, read_manifest, sha256_of
from edgekit.errors import InputError

pytestmark = pytest.mark.slow  # MiniLM conversion (once per run) and sentence-transformers' own encode

TARGET_OPTIONS = {"onnxruntime": {}, "openvino": {"precision": "f32"}}  # f32 pinned: what equality is judged at
SUBJECTS = ["The committee", "A small robot", "My grandmother", "Every engineer on the night shift", "Zoë",
            "The river near the old mill", "Our quarterly revenue", "This recipe", "Der Zug nach Berlin",
            "The patient in room 12", "An unexpected error", "Le café du coin", "The 3.5 GHz processor"]  # fmt: skip
VERBS = ["approved", "painted", "forgot", "measured", "rejected", "translated", "compiled", "celebrated",
         "predicted", "flooded", "simplified", "delayed"]  # fmt: skip
OBJECTS = ["the new budget", "a blue fence", "her keys again", "the latency of every request", "twelve eggs",
           "the naïve approach", "the 2024 results", "北京的天气", "the deployment pipeline", "an Ångström-scale film",
           "the last train home", "all pending invoices 🙂"]  # fmt: skip
TAILS = ["", " yesterday", " before the deadline", " despite the storm", ", which surprised nobody",
         " in under 40 ms", "?", "!", " (again).", " — or so they said."]  # fmt: skip
SHORT = ["ok", "Hello!", "why?", "GPU", "42", "naïve", "über-fast inference", "see you soon", "§ 3(b)", "…"]


def varied_texts(n: int = 300, seed: int = 7) -> list[str]:
    """Short words, one sentence, paragraphs of 60-120 tokens and documents of 150-450 tokens, shuffled."""
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        parts = (SUBJECTS, VERBS, OBJECTS, TAILS)
        return " ".join(str(p[rng.integers(len(p))]) for p in parts[:3]) + str(TAILS[rng.integers(len(TAILS))])

    def joined(lo: int, hi: int) -> str:
        return " ".join(sentence() for _ in range(int(rng.integers(lo, hi))))

    texts = [*SHORT, *(sentence() for _ in range(170)), *(joined(5, 10) for _ in range(70))]
    texts += [joined(15, 45) for _ in range(n - len(texts))]
    return [texts[i] for i in rng.permutation(len(texts))]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return varied_texts()


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    from edgekit.sources import bundled_minilm_dir

    return SentenceTransformer(str(bundled_minilm_dir()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def st_vectors(st_model, texts) -> np.ndarray:
    return st_model.encode(texts, batch_size=32, convert_to_numpy=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_texts_cover_short_long_and_past_the_models_length(minilm_artifact, texts):
    from edgekit.text import TextEncoder

    lengths = [len(e.ids) for e in TextEncoder.for_artifact(minilm_artifact, max_length=4096).encodings(texts)]
    assert len(texts) == 300 and min(lengths) <= 4
    assert sum(n > 128 for n in lengths) >= 40 and sum(n > 256 for n in lengths) >= 10


@pytest.mark.parametrize("target", sorted(TARGET_OPTIONS))
def test_encode_matches_sentence_transformers(minilm_artifact, texts, st_vectors, target):
    with edgekit.Embedder(minilm_artifact, target=target, **TARGET_OPTIONS[target]) as embedder:
        assert embedder.max_length == 256 and embedder.dim == 384
        sorted_batches = embedder.encode(texts, batch_size=32)
        one_batch = embedder.encode(texts[:64], batch_size=64)  # 2 to 256 tokens padded together
        precision = embedder.info().precision
    assert sorted_batches.dtype == np.float32 and sorted_batches.shape == (300, 384)
    for vectors, expected in ((sorted_batches, st_vectors), (one_batch, st_vectors[:64])):
        cos = cosines(vectors, expected)
        print(f"{target} ({precision}), {len(vectors)} texts: min cosine {cos.min():.7f}, mean {cos.mean():.7f}")
        assert cos.min() >= 0.9999, (target, float(cos.min()))


def test_openvino_at_its_default_precision_says_what_it_runs(minilm_artifact, texts, st_vectors):
    with edgekit.Embedder(minilm_artifact, target="openvino") as embedder:
        vectors, precision = embedder.encode(texts), embedder.info().precision
    cos = cosines(vectors, st_vectors)
    print(f"openvino default ({precision}): min cosine {cos.min():.5f}, mean {cos.mean():.5f}")
    assert precision in ("fp32", "bf16", "f16", "fp16") and cos.min() >= 0.99, (precision, float(cos.min()))


def test_long_texts_truncate_at_the_models_own_length(minilm_artifact, texts):
    manifest = read_manifest(minilm_artifact)
    assert manifest.text is not None and manifest.text.max_length == 256
    long_text = next(t for t in texts if len(t.split()) > 300)
    with edgekit.Embedder(minilm_artifact) as embedder:
        full, at_128 = embedder.encode([long_text]), embedder.encode([long_text], max_length=128)
        words = long_text.split()
        cut = embedder.encode([" ".join(words[: len(words) // 2])])
    assert cosines(full, at_128)[0] < 0.9999  # the tokens past 128 count, as in sentence-transformers
    assert cosines(full, cut)[0] < 0.9999


def test_results_come_back_in_input_order(minilm_artifact, texts):
    with edgekit.Embedder(minilm_artifact) as embedder:
        batched = embedder.encode(texts[:64], batch_size=8)
        singles = np.concatenate([embedder.encode([t]) for t in texts[:64]])
        reversed_ = embedder.encode(texts[:64][::-1], batch_size=8)
    np.testing.assert_allclose(batched, singles, atol=2e-6)
    np.testing.assert_allclose(reversed_[::-1], batched, atol=2e-6)


def test_prompt_is_prepended_as_sentence_transformers_does(minilm_artifact, texts, st_model):
    queries = texts[:20]
    with edgekit.Embedder(minilm_artifact) as embedder:
        prompted = embedder.encode(queries, prompt="query: ")
        by_hand = embedder.encode(["query: " + q for q in queries])
        plain = embedder.encode(queries)
    np.testing.assert_allclose(prompted, by_hand, atol=2e-6)
    assert cosines(prompted, st_model.encode(queries, prompt="query: ")).min() >= 0.9999
    assert cosines(prompted, plain).min() < 0.999


def test_threads_sharing_one_embedder_get_the_serial_results(minilm_artifact, texts):
    chunks = [texts[i:120:4] for i in range(4)]
    with edgekit.Embedder(minilm_artifact, threads=1) as embedder:
        serial = [embedder.encode(c, batch_size=8) for c in chunks]
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                embedder.encode(chunks[i], batch_size=8, max_length=128)  # tokenizers for a new length, at once
                results[i] = embedder.encode(chunks[i], batch_size=8)
            except BaseException as exc:  # re-raised below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(chunks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for i, expected in enumerate(serial):
        np.testing.assert_array_equal(results[i], expected)


@pytest.mark.parametrize(
    ("texts_in", "message"),
    [([], "empty"), ("one string", "not one string"), (["ok", 3], "text 1 is a int"), ([None], "text 0"),
     (42, "list of texts")],
)  # fmt: skip
def test_bad_texts_are_input_errors(minilm_artifact, texts_in, message):
    with edgekit.Embedder(minilm_artifact) as embedder, pytest.raises(InputError, match=message):
        embedder.encode(texts_in)


def test_bad_options_are_input_errors(minilm_artifact):
    with edgekit.Embedder(minilm_artifact) as embedder:
        for kwargs in ({"batch_size": 0}, {"batch_size": 2.5}, {"prompt": 3}, {"max_length": 0}):
            with pytest.raises(InputError):
                embedder.encode(["text"], **kwargs)
    with pytest.raises(InputError, match="closed"):
        embedder.encode(["text"])


def _edited_copy(artifact: Path, dest: Path, edit) -> Path:
    """A copy of ``artifact`` whose edgekit.json ``edit(data)`` changed (the manifest itself is not hashed)."""
    shutil.copytree(artifact, dest)
    data = json.loads((dest / MANIFEST_NAME).read_text())
    edit(data)
    (dest / MANIFEST_NAME).write_text(json.dumps(data))
    return dest


def test_an_artifact_that_is_not_a_text_embedding_model_is_refused(minilm_artifact, mlp_onnx, tmp_path):
    with pytest.raises(InputError, match="bare ONNX file"):
        edgekit.Embedder(minilm_artifact / "model.onnx")
    with pytest.raises(InputError, match="bare ONNX file"):
        edgekit.Embedder(mlp_onnx.path)

    def no_embedding(data):
        data["output_kinds"] = {"embedding": "tensor"}

    def no_tokenizer(data):
        data["files"] = {k: v for k, v in data["files"].items() if not k.startswith("tokenizer/")}

    with pytest.raises(InputError, match="not a text-embedding model: no output of kind 'embedding'"):
        edgekit.Embedder(_edited_copy(minilm_artifact, tmp_path / "tensor", no_embedding))
    with pytest.raises(InputError, match="not a text model: the artifact has no tokenizer"):
        edgekit.Embedder(_edited_copy(minilm_artifact, tmp_path / "untokenized", no_tokenizer))


def test_artifacts_converted_before_the_length_was_recorded_still_load(minilm_artifact, tmp_path, texts):
    """An older edgekit wrote no ``text``: the ST max_seq_length in the source metadata, else the tokenizer's
    files, give the length; with nothing at all it is 128 and a warning says so."""
    from edgekit.text import FALLBACK_MAX_LENGTH

    def old(data):
        data.pop("text")

    def older(data):
        data.pop("text")
        data["source"]["metadata"].pop("max_seq_length")

    def bare(data):
        older(data)
        data["files"] = {k: v for k, v in data["files"].items() if k in ("model.onnx", "tokenizer/tokenizer.json")}

    with edgekit.Embedder(minilm_artifact) as embedder:
        expected = embedder.encode(texts[:40])
    old_copy = _edited_copy(minilm_artifact, tmp_path / "old", old)
    with edgekit.Embedder(old_copy) as embedder:
        assert (embedder.max_length, embedder.max_length_from) == (256, "manifest source.metadata max_seq_length")
        np.testing.assert_array_equal(embedder.encode(texts[:40]), expected)
    with edgekit.Embedder(_edited_copy(minilm_artifact, tmp_path / "older", older)) as embedder:
        assert (embedder.max_length, embedder.max_length_from) == (256, "sentence_bert_config.json max_seq_length")
    bare_copy = _edited_copy(minilm_artifact, tmp_path / "bare", bare)
    for name in ("sentence_bert_config.json", "tokenizer_config.json"):
        (bare_copy / "tokenizer" / name).unlink()
    with edgekit.Embedder(bare_copy) as embedder:  # tokenizer.json itself truncates all-MiniLM-L6-v2 at 128
        assert (embedder.max_length, embedder.max_length_from) == (128, "tokenizer.json truncation")
    data = json.loads((bare_copy / "tokenizer" / "tokenizer.json").read_text())
    data["truncation"] = None
    (bare_copy / "tokenizer" / "tokenizer.json").write_text(json.dumps(data))
    manifest = read_manifest(bare_copy)
    manifest.files["tokenizer/tokenizer.json"] = sha256_of(bare_copy / "tokenizer" / "tokenizer.json")
    (bare_copy / MANIFEST_NAME).write_text(manifest.model_dump_json())
    with pytest.warns(UserWarning, match="nothing in the artifact says how many tokens"):
        embedder = edgekit.Embedder(bare_copy)
    with embedder:
        assert (embedder.max_length, embedder.max_length_from) == (FALLBACK_MAX_LENGTH, "fallback")
        assert embedder.encode(["still works"]).shape == (1, 384)


def test_an_artifacts_onnx_converted_again_is_still_an_embedder(minilm_artifact, tmp_path, texts):
    """``edgekit convert artifact/model.onnx`` (the path quantizing an ONNX file takes) keeps the output kinds
    and the text facts of the artifact the file sits in."""
    manifest = edgekit.convert(minilm_artifact / "model.onnx", tmp_path / "again")
    assert manifest.output_kinds == {"embedding": "embedding"} and manifest.text == read_manifest(minilm_artifact).text
    with edgekit.Embedder(minilm_artifact) as a, edgekit.Embedder(tmp_path / "again") as b:
        np.testing.assert_array_equal(a.encode(texts[:16]), b.encode(texts[:16]))
