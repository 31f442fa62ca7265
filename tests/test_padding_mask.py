"""An exported ``[batch, 1, seq, seq]`` padding mask becomes ``attention_mask[:, None, None, :]``, only where that
is provably the same function.

Hand-built graphs cover the rewrite and what must be left alone (a causal mask, a mask that is already the
broadcast form); a tiny Hugging Face BERT exported by edgekit covers the pattern transformers really emits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.converters.padding_mask import attention_mask_conditions, simplify_padding_masks
from edgekit.sources import bundled_minilm_dir


def _attention(mask: str) -> onnx.ModelProto:
    """input_ids, attention_mask [b, s] -> softmax(x x^T masked) x, pooled; the mask built as ``mask`` says:
    ``expanded`` ([b, 1, s, s] from Shape/Expand, as transformers does), ``causal`` (that AND a lower triangle),
    ``broadcast`` (already [b, 1, 1, s])."""
    rng = np.random.default_rng(0)
    init = [
        numpy_helper.from_array(rng.standard_normal((20, 8)).astype(np.float32), "emb"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "one_1d"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "lowest"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["s3"]),
        helper.make_node("Unsqueeze", ["s3", "one_1d"], ["scores"]),
        helper.make_node("Cast", ["attention_mask"], ["keep"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["keep", "axes12"], ["keep4"]),
    ]
    if mask == "broadcast":
        cond = "keep4"
    else:
        nodes += [
            helper.make_node("Shape", ["scores"], ["shape"]),
            helper.make_node("Expand", ["keep4", "shape"], ["expanded"]),
        ]
        cond = "expanded"
        if mask == "causal":
            nodes += [
                helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
                helper.make_node("Gather", ["ids_shape", "one"], ["seq"]),
                helper.make_node("Range", ["zero_i", "seq", "one"], ["pos"]),
                helper.make_node("Unsqueeze", ["pos", "zero_1d"], ["row"]),
                helper.make_node("Unsqueeze", ["pos", "one_1d"], ["col"]),
                helper.make_node("LessOrEqual", ["row", "col"], ["tri"]),
                helper.make_node("And", ["expanded", "tri"], ["causal"]),
            ]
            init.append(numpy_helper.from_array(np.array(0, np.int64), "zero_i"))
            cond = "causal"
    nodes += [
        helper.make_node("Where", [cond, "zero", "lowest"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("Unsqueeze", ["x", "one_1d"], ["x4"]),
        helper.make_node("MatMul", ["probs", "x4"], ["ctx"]),
        helper.make_node("ReduceMean", ["ctx", "axes12"], ["out"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, f"attention_{mask}",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
        init,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _padded_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    cases = []
    for batch, seq in ((1, 5), (3, 12), (2, 40)):
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq // 2 :] = 0  # right padding
        if batch > 1:
            mask[1, : seq // 3] = 0  # left padding
        cases.append({"input_ids": rng.integers(0, 20, (batch, seq)), "attention_mask": mask})
    return cases


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["out"], feeds)[0]


def test_an_expanded_padding_mask_becomes_the_broadcast_one_and_outputs_are_bit_identical(tmp_path: Path):
    original, rewritten = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_attention("expanded"), str(original))
    shutil.copy(original, rewritten)
    assert attention_mask_conditions(onnx.load(str(rewritten)).graph) == ["expanded"]
    assert simplify_padding_masks(rewritten) == 1
    graph = onnx.load(str(rewritten)).graph
    onnx.checker.check_model(onnx.load(str(rewritten)), full_check=True)
    assert not any(n.op_type == "Expand" for n in graph.node)  # the construction is gone, not just bypassed
    where = next(n for n in graph.node if n.op_type == "Where")
    assert where.input[0].startswith("edgekit_padding_mask")
    for feeds in _padded_feeds():
        np.testing.assert_array_equal(_outputs(rewritten, feeds), _outputs(original, feeds))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # the probe copies are cleaned up


def test_a_model_with_external_data_is_rewritten_in_place_and_its_data_file_kept(tmp_path: Path):
    original, path = tmp_path / "orig" / "a.onnx", tmp_path / "art" / "m.onnx"
    original.parent.mkdir()
    path.parent.mkdir()
    onnx.save(_attention("expanded"), str(original))
    # the embedding table goes to external data, as large weights do; small constants stay inline
    onnx.save(_attention("expanded"), str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=64)
    assert simplify_padding_masks(path) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx", "m.onnx.data"]  # no probe left behind
    for feeds in _padded_feeds():
        np.testing.assert_array_equal(_outputs(path, feeds), _outputs(original, feeds))


@pytest.mark.parametrize("mask", ["causal", "broadcast"])
def test_a_mask_that_is_not_an_expanded_padding_mask_is_left_alone(tmp_path: Path, mask: str):
    path = tmp_path / "m.onnx"
    onnx.save(_attention(mask), str(path))
    stamp = path.read_bytes()
    assert simplify_padding_masks(path) == 0
    assert path.read_bytes() == stamp


def test_a_graph_without_masked_softmax_is_untouched(tmp_path: Path, mlp_onnx):
    stamp = mlp_onnx.path.read_bytes()
    assert simplify_padding_masks(mlp_onnx.path) == 0
    assert mlp_onnx.path.read_bytes() == stamp


def test_a_hugging_face_bert_export_gets_the_broadcast_mask_and_matches_torch_on_padding(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    source = tmp_path / "bert"
    model.save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (bundled_minilm_dir() / name).exists():
            shutil.copy(bundled_minilm_dir() / name, source / name)
    art = tmp_path / "art"
    edgekit.convert(str(source), art)
    manifest = json.loads((art / "edgekit.json").read_text())
    export = next(s for s in manifest["stages"] if s["name"] == "export")
    assert export["metrics"]["attempts"][-1]["rewrites"].get("attention_padding_masks_simplified") == 1
    graph = onnx.load(str(art / "model.onnx")).graph
    assert not any(n.op_type == "Range" for n in graph.node)
    rng = np.random.default_rng(2)
    ids = rng.integers(1000, 2000, (3, 13))
    mask = np.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 10:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    with edgekit.load(art, target="onnxruntime") as session:
        got = session.run(feeds)["last_hidden_state"]
    keep = mask.astype(bool)  # padded positions' states are not defined by the mask's contract; compare the rest
    np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-4, atol=1e-4)
