"""Static INT8 through NNCF's ONNX backend: a QDQ ONNX model every runtime loads, ignored scope by node name,
symmetric activations on request, and a clear error where NNCF is not installed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_quantize import TARGETS, embedding_bag, mean_cosine, outputs, token_feeds, token_mlp

from edgekit.converters.quantize import nncf_engine
from edgekit.converters.quantize.model import quantize_model
from edgekit.converters.quantize.options import QuantizeOptions
from edgekit.errors import InputError, RuntimeUnavailableError

pytestmark = pytest.mark.skipif(not nncf_engine.nncf_available(), reason="NNCF is not installed (the nncf extra)")
NNCF = QuantizeOptions(mode="int8", engine="nncf")


def quantized_inputs(model: onnx.ModelProto) -> set[str]:
    """Nodes fed by a DequantizeLinear: the ones NNCF quantized."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type != "DequantizeLinear" and set(n.input) & dq}


def test_nncf_writes_qdq_onnx_that_every_runtime_runs_faithfully(tmp_path):
    src, dst = token_mlp(tmp_path / "m.onnx"), tmp_path / "m.nncf.onnx"
    result = quantize_model(src, dst, NNCF, token_feeds(40))
    model = onnx.load(str(dst))
    onnx.checker.check_model(model)
    assert result.precision.startswith("int8-qdq") and {"up", "down"} <= quantized_inputs(model)
    held = token_feeds(12, seed=9)  # NNCF also quantizes the toy's activation x activation MatMul: 0.98, not 0.99
    for target in TARGETS:
        assert mean_cosine(outputs(src, "onnxruntime", held), outputs(dst, target, held)) > 0.98, target


def test_excluded_nodes_are_nncfs_ignored_scope(tmp_path):
    src, dst = token_mlp(tmp_path / "m.onnx"), tmp_path / "m.nncf.onnx"
    quantize_model(src, dst, NNCF.excluding(["down"]), token_feeds(40))
    quantized = quantized_inputs(onnx.load(str(dst)))
    assert "up" in quantized and "down" not in quantized


def test_symmetric_activations_have_zero_point_zero(tmp_path):
    src, dst = embedding_bag(tmp_path / "m.onnx"), tmp_path / "m.nncf-sym.onnx"
    rng = np.random.default_rng(0)
    calib = [{"ids": rng.integers(0, 4000, (1, 12)).astype(np.int64)} for _ in range(32)]
    quantize_model(src, dst, QuantizeOptions(mode="int8", engine="nncf", activation_symmetric=True), calib)
    model = onnx.load(str(dst))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zps = [init[n.input[2]] for n in model.graph.node
           if n.op_type == "QuantizeLinear" and n.input[0] not in init and len(n.input) > 2]  # fmt: skip
    assert zps and all(not z.any() for z in zps)


def test_is_transformer_needs_attention_and_a_normalization(tmp_path):
    from onnx import helper

    assert not nncf_engine.is_transformer(onnx.load(str(token_mlp(tmp_path / "m.onnx"))))  # no Softmax

    def graph_of(*ops: str) -> onnx.ModelProto:
        nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"]) for i, op in enumerate(ops)]
        return helper.make_model(helper.make_graph(nodes, "g", [], []))

    assert nncf_engine.is_transformer(graph_of("MatMul", "Softmax", "LayerNormalization"))
    assert not nncf_engine.is_transformer(graph_of("MatMul", "Softmax"))  # attention alone: no normalization


def test_engine_is_checked_and_missing_nncf_says_what_to_install(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="engine 'nncf' is not one of"):
        QuantizeOptions(mode="int8-dynamic", engine="nncf")
    with pytest.raises(InputError, match="engine 'tvm'"):
        QuantizeOptions(engine="tvm")
    monkeypatch.setattr(nncf_engine, "nncf_available", lambda: False)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgekit\[nncf\]'"):
        quantize_model(token_mlp(tmp_path / "m.onnx"), tmp_path / "q.onnx", NNCF, token_feeds(4))
