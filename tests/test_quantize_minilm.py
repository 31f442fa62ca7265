"""all-MiniLM-L6-v2 quantized to static INT8 QDQ from real sentences: symmetric per-channel weights with zero point
0, onnx.checker, and faithful embeddings on ONNX Runtime and OpenVINO (timings live in benchmarks/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgekit
from edgekit.artifact import read_manifest

SENTENCES = Path(__file__).parents[1] / "benchmarks" / "data" / "sentences.txt"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_int8(tmp_path_factory) -> Path:
    from edgekit.sources import bundled_minilm_dir

    out = tmp_path_factory.mktemp("minilm") / "int8"
    edgekit.convert(bundled_minilm_dir(), out, quantize="int8", calib_data=SENTENCES, calib_samples=96,
                    targets=["openvino"])  # fmt: skip
    return out


def test_qdq_weights_are_symmetric_per_channel_and_the_model_checks(minilm_int8):
    manifest = read_manifest(minilm_int8)
    assert manifest.variants == {"onnxruntime": "model.int8.onnx", "openvino": "model.int8.onnx"}
    path = minilm_int8 / "model.int8.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init]
    gathered = {i for n in model.graph.node if n.op_type == "Gather" for i in n.input}
    tables = [n for n in weight_dqs if n.output[0] in gathered]
    linears = [n for n in weight_dqs if n.output[0] not in gathered]
    assert len(tables) == 3  # word, position and token-type embeddings, in 8 bits (most of the file)
    assert path.stat().st_size < 25e6 < (minilm_int8 / "model.onnx").stat().st_size
    assert len(linears) == 36  # every Linear of the 6 layers: q, k, v, out, up, down
    for n in linears:
        q, scale, zero = init[n.input[0]], init[n.input[1]], init[n.input[2]]
        assert q.dtype == np.int8 and zero.dtype == np.int8 and not zero.any(), n.name
        assert scale.shape == (q.shape[1],) and np.abs(q).max() <= 127, n.name


def test_int8_embeddings_stay_close_to_torch_on_every_cpu_target(minilm_int8):
    manifest = read_manifest(minilm_int8)
    stage = next(s for s in manifest.stages if s.name == "quantize")
    assert stage.params["data"]["heldout_samples"] == 256 + 128  # held-back lines + the corpus's evaluation split
    for target in ("onnxruntime", "openvino"):
        fid = stage.metrics["heldout_fidelity"][target]
        assert fid["cosine"] >= 0.985 and fid["samples"] == 384, (target, fid)
        report = manifest.validation[f"{target}:model.int8.onnx"]
        assert report["passed"] and report["precision"].startswith("int8-qdq"), target
    with edgekit.load(minilm_int8, target="openvino") as session:
        assert session.model.path.name == "model.int8.onnx"
