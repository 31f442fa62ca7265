"""The exporters' NaN guard after masked softmax is removed at export, and the function stays the same.

The guard (``Where(IsNaN(p), 0, p)`` after ``Softmax(scores + Where(mask, 0, -inf))``) hides the attention
pattern from OpenVINO and NNCF. These tests build the pattern by hand, check that it is removed only where it
matches exactly, that every row with an unmasked key gives the same numbers, and that a real SDPA module exported
by edgekit no longer carries it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.converters.attention_guard import drop_attention_nan_guards, drop_guards

MODELS = Path(__file__).parent / "models"


def _guarded_attention(masked_value: float = -np.inf, extra_softmax_user: bool = False) -> onnx.ModelProto:
    """scores[b, q, k], keep[b, 1, k] (bool), values[b, k, d] -> softmax(scores masked) @ values."""
    const = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.array([v], np.float32))
    )
    nodes = [
        const("zero", 0.0), const("minus_inf", masked_value), const("zero2", 0.0),
        helper.make_node("Where", ["keep", "zero", "minus_inf"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("IsNaN", ["probs"], ["nan"]),
        helper.make_node("Where", ["nan", "zero2", "probs"], ["safe"]),
        helper.make_node("MatMul", ["safe", "values"], ["out"]),
    ]  # fmt: skip
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "q", 4])]
    if extra_softmax_user:
        nodes.append(helper.make_node("Identity", ["probs"], ["probs_copy"]))
        outputs.append(helper.make_tensor_value_info("probs_copy", TensorProto.FLOAT, ["b", "q", "k"]))
    graph = helper.make_graph(
        nodes, "guarded",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", "q", "k"]),
         helper.make_tensor_value_info("keep", TensorProto.BOOL, ["b", 1, "k"]),
         helper.make_tensor_value_info("values", TensorProto.FLOAT, ["b", "k", 4])],
        outputs,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["out"], feeds)[0]


def _feeds(keep: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    b, k = keep.shape
    return {
        "scores": rng.standard_normal((b, 5, k)).astype(np.float32) * 4,
        "keep": keep[:, None, :],
        "values": rng.standard_normal((b, k, 4)).astype(np.float32),
    }


def test_guard_is_removed_and_padded_rows_are_bit_identical():
    original = _guarded_attention()
    rewritten = onnx.ModelProto.FromString(original.SerializeToString())
    assert drop_guards(rewritten.graph) == 1
    onnx.checker.check_model(rewritten, full_check=True)
    assert not any(n.op_type == "IsNaN" for n in rewritten.graph.node)
    softmax = next(n for n in rewritten.graph.node if n.op_type == "Softmax")
    matmul = next(n for n in rewritten.graph.node if n.op_type == "MatMul")
    assert matmul.input[0] == softmax.output[0]  # the pattern OpenVINO and NNCF look for
    keep = np.ones((3, 9), bool)
    keep[1, 6:] = False
    keep[2, 1:] = False  # one key left
    feeds = _feeds(keep)
    np.testing.assert_array_equal(_run(rewritten, feeds), _run(original, feeds))


def test_a_fully_masked_row_is_finite_instead_of_zero():
    """The one difference, documented: an all-padding sample gets uniform weights (pooling drops it)."""
    keep = np.zeros((1, 6), bool)
    feeds = _feeds(keep)
    rewritten = _guarded_attention()
    drop_guards(rewritten.graph)
    before, after = _run(_guarded_attention(), feeds), _run(rewritten, feeds)
    np.testing.assert_array_equal(before, 0.0)
    np.testing.assert_allclose(after[0], np.broadcast_to(feeds["values"][0].mean(axis=0), (5, 4)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["finite mask", "softmax used elsewhere"])
def test_anything_but_the_exact_pattern_is_left_alone(variant):
    model = (
        _guarded_attention(masked_value=-1e4)
        if variant == "finite mask"
        else _guarded_attention(extra_softmax_user=True)
    )
    before = model.SerializeToString()
    assert drop_guards(model.graph) == 0
    assert model.SerializeToString() == before


def test_the_file_is_untouched_when_nothing_matches(tmp_path: Path):
    path = tmp_path / "m.onnx"
    onnx.save(_guarded_attention(masked_value=-1e4), str(path))
    stamp = path.read_bytes()
    assert drop_attention_nan_guards(path) == 0
    assert path.read_bytes() == stamp


def test_an_exported_sdpa_model_has_no_guard_and_matches_torch_on_padded_inputs(tmp_path: Path):
    art = tmp_path / "sdpa"
    edgekit.convert(f"{MODELS / 'sdpa.py'}:make", art, validate_targets=["onnxruntime"])
    spec = importlib.util.spec_from_file_location("_ek_test_sdpa", MODELS / "sdpa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, _ = module.make()
    graph = onnx.load(str(art / "model.onnx")).graph
    manifest = json.loads((art / "edgekit.json").read_text())
    export = next(s for s in manifest["stages"] if s["name"] == "export")
    assert export["metrics"]["attempts"][-1]["rewrites"] == {"attention_nan_guards_removed": 1}
    assert any(n.op_type == "Softmax" for n in graph.node)
    assert not any(n.op_type == "IsNaN" for n in graph.node)
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 50, (3, 11)).astype(np.int64), "attention_mask": np.ones((3, 11), np.int64)}
    feeds["attention_mask"][0, 4:] = 0
    feeds["attention_mask"][2, 9:] = 0
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    with edgekit.load(art, target="onnxruntime") as session:
        got = session.run(feeds)
    np.testing.assert_allclose(next(iter(got.values())), ref, rtol=1e-4, atol=1e-5)
