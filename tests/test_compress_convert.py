"""`edgekit convert --prune ... --distill [--distill-data ...]`: the torch-side stages inside the one pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_minilm import write_tiny_minilm

import edgekit
from edgekit.converters.compress_request import CompressRequest
from edgekit.errors import InputError

MODELS = Path(__file__).parent / "models"
CPU_TARGETS = [t for t in ("onnxruntime", "openvino") if t in edgekit.available_targets()]


def _cnn_data(path: Path, n: int = 48) -> Path:
    x = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)
    np.savez(path, x=x)
    return path


def test_prune_and_distill_cnn_into_one_artifact(tmp_path):
    data = _cnn_data(tmp_path / "x.npz")
    request = CompressRequest(prune=0.5, distill_data=data, distill_steps=6, distill_lr=1e-3)
    manifest = edgekit.convert(
        f"{MODELS}/cnn.py:make", tmp_path / "art", compress=request, validate_targets=CPU_TARGETS
    )
    names = [s.name for s in manifest.stages]
    assert names[:3] == ["prune", "distill", "export"]
    prune = manifest.stages[0].metrics
    assert prune["params_after"] < prune["params_before"] and prune["macs_after"] < prune["macs_before"]
    distill = manifest.stages[1]
    assert distill.params["loss"] == "mse" and distill.metrics["steps"] == 6
    assert "mean_cosine" in distill.metrics["fidelity_to_original_on_examples"]
    assert all(manifest.validation[t]["passed"] for t in CPU_TARGETS)
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)}
    for target in CPU_TARGETS:
        with edgekit.load(tmp_path / "art", target=target) as s:
            assert s.run(feeds)["output"].shape == (3, 10)


def test_pruned_transformer_runs_at_other_sequence_lengths(tmp_path):
    manifest = edgekit.convert(f"{MODELS}/transformer.py:make", tmp_path / "t", compress=CompressRequest(prune=0.5))
    assert manifest.stages[0].name == "prune"
    ids = np.random.default_rng(2).integers(0, 100, (2, 23)).astype(np.int64)
    with edgekit.load(tmp_path / "t") as s:
        assert s.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["output"].shape == (2, 32)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_zero_one_is_rejected(ratio):
    with pytest.raises(InputError, match="ratio"):
        CompressRequest(prune=ratio)


def test_distillation_without_a_smaller_student_is_refused(tmp_path):
    """Distilling the unpruned model would train the teacher against itself and record fidelity 1.0."""
    with pytest.raises(InputError, match="needs --prune, --prune-until or --drop-layers"):
        CompressRequest(distill_data=tmp_path / "data.npz")
    with pytest.raises(InputError, match="--distill needs --prune"):
        CompressRequest(distill=True)
    result = _cli("convert", f"{MODELS}/mlp.py:make", "-o", str(tmp_path / "m"), "--distill-data", str(tmp_path))
    assert result.returncode == 2 and "needs --prune" in result.stderr and not (tmp_path / "m").exists()


def test_a_bad_distillation_time_is_rejected_before_any_work():
    with pytest.raises(InputError, match="duration"):
        CompressRequest(prune=0.5, distill=True, distill_time="soon")


def test_prune_and_prune_until_together_is_rejected():
    with pytest.raises(InputError, match="not both"):
        CompressRequest(prune=0.5, prune_until="latency<=5ms")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300)


def test_cli_bad_ratio_and_bad_data_exit_2_with_one_line(tmp_path):
    result = _cli("convert", f"{MODELS}/cnn.py:make", "-o", str(tmp_path / "a"), "--prune", "1.5")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "ratio" in result.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 16, 16), np.float32))
    result = _cli("convert", f"{MODELS}/cnn.py:make", "-o", str(tmp_path / "b"), "--prune", "0.5",
                  "--distill-data", str(bad), "--distill-steps", "2")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "'x'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_cli_prune_json_manifest(tmp_path):
    result = _cli("convert", f"{MODELS}/mlp.py:make", "-o", str(tmp_path / "m"), "--prune", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["stages"][0]["name"] == "prune"


# --- the bundled corpus -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's shape (tokenizer, pooling) around a 2-layer, 32-wide BERT."""
    return write_tiny_minilm(tmp_path_factory.mktemp("tiny_st"), layers=2)


def test_distill_on_the_bundled_corpus_judges_on_its_eval_split(tiny_st_dir, tmp_path):
    """--distill with no data: importance and training read the corpus train split, the manifest's fidelity
    before and after distillation is measured on the evaluation split only."""
    from edgekit import corpus

    request = CompressRequest(prune=0.5, distill=True, distill_texts=48, distill_steps=3)
    manifest = edgekit.convert(tiny_st_dir, tmp_path / "art", compress=request)
    prune, distill = manifest.stages[0], manifest.stages[1]
    assert prune.params["importance"] == "activation" and prune.params["heads_ratio"] == 0.0
    rows = prune.metrics["layers"]
    assert [row["unit"] for row in rows] == ["ffn_neurons"] * 2 and all(len(row["kept"]) == 32 for row in rows)
    assert prune.metrics["importance_data"]["samples"] == 48
    before = prune.metrics["fidelity_before_distillation"]
    assert before["samples"] == 256 and 0 < before["mean_cosine"] <= 1 and "recall@10" in before
    facts = distill.metrics["data"]
    assert facts["corpus"]["train_used"] == 48 and facts["corpus"]["eval_used"] == 256 and "user_data" not in facts
    assert distill.metrics["train_samples"] == 48 and distill.metrics["held_out_samples"] == 256
    assert distill.metrics["fidelity_after_distillation"]["samples"] == 256
    assert corpus.eval_texts()[0] not in corpus.train_texts()[:48]


def test_user_text_is_mixed_into_the_corpus_and_part_held_back(tiny_st_dir, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("\n".join(f"Invoice {i} for the blue widget was paid on day {i}." for i in range(20)) + "\n")
    request = CompressRequest(prune=0.5, distill_data=text, distill_texts=16, distill_steps=2)
    assert request.distill  # --distill-data implies --distill
    manifest = edgekit.convert(tiny_st_dir, tmp_path / "art", compress=request)
    facts = manifest.stages[1].metrics["data"]
    assert facts["user_data"]["train"] == 16 and facts["user_data"]["heldout"] == 4
    assert facts["train_samples"] == 32 and facts["heldout_samples"] == 260


def test_each_shipped_variant_is_judged_against_the_original_not_only_the_pruned_model(tiny_st_dir, tmp_path):
    """The quantize stage of a compressed artifact records, per target, what the file that target loads keeps of
    the original model on the held-out rows: the whole chain, recomputed here independently."""
    from edgekit.converters.compress_data import compress_data
    from edgekit.converters.torch_io import run_torch
    from edgekit.fidelity import sample_cosines
    from edgekit.sources import load_source

    request = CompressRequest(prune=0.5, distill=True, distill_texts=32, distill_steps=2)
    art = tmp_path / "art"
    manifest = edgekit.convert(tiny_st_dir, art, compress=request, quantize="int8-dynamic", targets=["openvino"])
    judged = manifest.stages[-1].metrics["fidelity_to_original"]
    assert set(judged) == set(manifest.variants) == {"onnxruntime", "openvino"}
    for target, row in judged.items():
        assert row["file"] == manifest.variants[target] and row["samples"] == 256, target
        assert 0 < row["min_cosine"] <= row["cosine"] <= 1 and "recall@10" in row, target
    original = load_source(tiny_st_dir)
    rows = compress_data(original, None, 1).heldout
    names = original.output_names or ["output"]
    with edgekit.load(art, target="onnxruntime") as session:
        got = [session.run(r)[names[0]] for r in rows]
    want = [run_torch(original.module, r, names)[names[0]] for r in rows]
    cos = sample_cosines(np.concatenate(want), np.concatenate(got))
    assert judged["onnxruntime"]["cosine"] == pytest.approx(float(cos.mean()), abs=1e-5)


def test_distill_without_a_tokenizer_or_data_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="no tokenizer"):
        edgekit.convert(f"{MODELS}/cnn.py:make", tmp_path / "a", compress=CompressRequest(prune=0.5, distill=True))
    assert not (tmp_path / "a").exists()


def test_cli_distill_flag_needs_prune_and_heads_need_their_flag(tmp_path):
    result = _cli("convert", f"{MODELS}/mlp.py:make", "-o", str(tmp_path / "m"), "--distill")
    assert result.returncode == 2 and "--distill needs --prune" in result.stderr
    result = _cli("convert", f"{MODELS}/transformer.py:make", "-o", str(tmp_path / "t"), "--prune", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["stages"][0]["metrics"]["layers"]
    assert {row["unit"] for row in rows} == {"ffn_neurons"}
    result = _cli("convert", f"{MODELS}/transformer.py:make", "-o", str(tmp_path / "h"), "--prune", "0.5",
                  "--prune-heads", "0.5", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "heads" in {row["unit"] for row in json.loads(result.stdout)["stages"][0]["metrics"]["layers"]}


# --- --prune-until with a fidelity floor ----------------------------------------------------------------------


def _rows(path: Path, **shapes: tuple[int, ...]) -> Path:
    """An .npz of distillation rows: int64 token ids for ``input_ids``, ones for masks, normal floats otherwise."""
    rng = np.random.default_rng(0)
    arrays = {k: rng.integers(0, 100, s).astype(np.int64) if k == "input_ids" else rng.standard_normal(s).astype(
        np.float32) for k, s in shapes.items()}  # fmt: skip
    if "input_ids" in arrays:
        arrays["attention_mask"] = np.ones_like(arrays["input_ids"])
    np.savez(path, **arrays)
    return path


def test_prune_until_meets_budget_and_floor_and_times_the_quantized_model(tmp_path):
    """A generous budget and a low floor: every step timed as ONNX Runtime dynamic INT8 (what ships), every probe
    judged on held-out rows, the largest probed ratio wins and its distilled fidelity is recorded."""
    from edgekit.converters.recipe import parse_recipe
    from edgekit.converters.recipe_options import options_of

    data = _rows(tmp_path / "d.npz", input_ids=(40, 12))
    request = CompressRequest(prune_until="latency<=1000ms", distill_data=data, distill_steps=2, probe_seconds=1.0)
    manifest = edgekit.convert(f"{MODELS}/transformer.py:make", tmp_path / "art", compress=request,
                               quantize="int8-dynamic", fidelity="cosine>=0.1")  # fmt: skip
    record = manifest.stages[0].metrics["prune_until"]
    assert record["met"] and record["floor"] == "cosine>=0.1" and record["timed"] == "int8-dynamic"
    assert {s["timed"] for s in record["steps"]} == {"int8-dynamic"} and record["steps"][0]["ratio"] == 0.0
    probes = record["probes"]
    assert [p["ratio"] for p in probes] == [0.0, 0.1, 0.2, 0.3]  # the original's probe is free, then the cap of 3
    assert all(p["met"] and p["fidelity"]["samples"] == 8 and p["seconds"] >= 0 for p in probes)
    assert probes[0]["time_box_s"] is None and probes[1]["time_box_s"] == 1.0
    assert manifest.stages[0].metrics["ratio"] == 0.3 and record["decision"].startswith("ratio 0.3")
    assert record["final"]["met"] and record["final"]["fidelity"]["samples"] == 8
    assert manifest.recipe["prune"]["fidelity"] == "cosine>=0.1"
    assert options_of(parse_recipe(manifest.recipe, "manifest")).compress.fidelity == "cosine>=0.1"


def test_cli_prune_until_that_cannot_keep_the_floor_exits_1_and_writes_nothing(tmp_path):
    """A speed-up budget the wide MLP meets by pruning, and a floor no pruned ratio keeps after a short probe."""
    data = _rows(tmp_path / "x.npz", input=(40, 64))
    result = _cli("convert", f"{MODELS}/wide_mlp.py:make", "-o", str(tmp_path / "out"), "--prune-until", "speedup>=1.3",
                  "--fidelity", "cosine>=0.9999", "--distill-data", str(data), "--distill-steps", "2")  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "fidelity floor cosine>=0.9999" in line and "speed-up" in line and "reaches cosine=" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_a_floor_that_nothing_within_budget_reaches_names_the_best_candidate():
    from edgekit.converters.prune import parse_budget
    from edgekit.converters.prune_floor import require_search_met
    from edgekit.errors import ValidationError
    from edgekit.goals import parse_fidelity

    steps = [{"ratio": 0.0, "latency_ms": 8.0}, {"ratio": 0.9, "latency_ms": 7.0}]
    record = {"met": False, "target": "onnxruntime", "steps": steps}
    with pytest.raises(ValidationError, match=r"no ratio meets the budget.*ratio 0.9, reaches 7 ms") as caught:
        require_search_met(record, parse_budget("latency<=6ms"), parse_fidelity("cosine>=0.9"))
    assert caught.value.exit_code == 1


def test_floor_and_budget_errors_are_bad_input_before_any_work(tmp_path):
    with pytest.raises(InputError, match="needs --prune-until"):
        CompressRequest(prune=0.5, fidelity="cosine>=0.9")
    with pytest.raises(InputError, match=r"speedup>=1\.3"):
        CompressRequest(prune_until="speedup>=fast")
    with pytest.raises(InputError, match="fidelity"):
        CompressRequest(prune_until="latency<=5ms", fidelity="cosine>=2")
    with pytest.raises(InputError, match="held-out rows"):  # no tokenizer and no data: nothing to judge on
        edgekit.convert(f"{MODELS}/mlp.py:make", tmp_path / "m", compress=CompressRequest(prune_until="latency<=5ms"),
                        fidelity="cosine>=0.9")  # fmt: skip
    assert not (tmp_path / "m").exists()
