"""Export end to end: real test models given as file.py:function, converted, then run on ONNX Runtime and
OpenVINO at batch and sequence sizes other than the example's, compared with torch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checks import assert_output_matches

import edgekit
from edgekit.errors import InputError, ValidationError
from edgekit.specs import parse_spec

MODELS = Path(__file__).parent / "models"
CPU_TARGETS = [t for t in ("onnxruntime", "openvino") if t in edgekit.available_targets()]


def _factory(name: str, func: str = "make"):
    spec = importlib.util.spec_from_file_location(f"_ek_test_{name}", MODELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, func)()


def _torch_out(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    out = {}
    for name in ("mlp", "cnn", "transformer"):
        out[name] = root / name
        edgekit.convert(f"{MODELS / name}.py:make", out[name], validate_targets=CPU_TARGETS)
    return out


_OTHER_SIZES = {
    "mlp": lambda r: {"x": r.standard_normal((5, 16)).astype(np.float32)},
    "cnn": lambda r: {"x": r.standard_normal((3, 3, 32, 32)).astype(np.float32)},
    "transformer": lambda r: {
        "input_ids": r.integers(0, 100, (3, 21)).astype(np.int64),
        "attention_mask": np.ones((3, 21), np.int64),
    },
}


@pytest.mark.parametrize("target", CPU_TARGETS)
@pytest.mark.parametrize("name", sorted(_OTHER_SIZES))
def test_converted_models_match_torch_at_new_sizes(converted, name, target):
    model, _ = _factory(name)
    feeds = _OTHER_SIZES[name](np.random.default_rng(7))
    ref = _torch_out(model, feeds)
    with edgekit.load(converted[name], target=target, precision="f32" if target == "openvino" else None) as s:
        got = next(iter(s.run(feeds).values()))
        assert_output_matches(s, ref, got)


def test_manifest_records_dims_validation_and_source(converted):
    manifest = json.loads((converted["transformer"] / "edgekit.json").read_text())
    assert manifest["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}
    assert manifest["outputs"][0]["shape"] == ["batch", 32]
    assert manifest["source"]["kind"] == "python" and manifest["source"]["sha256"]
    for target in CPU_TARGETS:
        assert manifest["validation"][target]["passed"] is True
        assert len(manifest["validation"][target]["cases"]) >= 3  # the example plus larger and smaller sizes
    export = manifest["stages"][0]
    assert export["name"] == "export" and export["params"]["exporter"] in ("torchscript", "dynamo")
    cnn = json.loads((converted["cnn"] / "edgekit.json").read_text())
    assert cnn["inputs"][0]["shape"] == ["batch", 3, 32, 32]  # spatial dims stay fixed by default


def test_fallback_when_torchscript_bakes_in_shapes(converted):
    """nn.MultiheadAttention traced by TorchScript fixes the sequence length; the gate catches it at other
    sizes and auto falls back to dynamo. Either way the chosen exporter passed the gate."""
    export = json.loads((converted["transformer"] / "edgekit.json").read_text())["stages"][0]
    attempts = export["metrics"]["attempts"]
    assert attempts[-1]["result"] == "ok"
    assert attempts[-1]["exporter"] == export["params"]["exporter"]


def test_forced_torchscript_on_the_transformer_fails_the_gate(tmp_path):
    out = tmp_path / "ts"
    with pytest.raises(ValidationError, match="parity gate failed on onnxruntime"):
        edgekit.convert(f"{MODELS}/transformer.py:make", out, exporter="torchscript")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_each_exporter_on_the_mlp(tmp_path, exporter):
    manifest = edgekit.convert(f"{MODELS}/mlp.py:make", tmp_path / "m", exporter=exporter, opset=17)
    assert manifest.stages[0].params["exporter"] == exporter
    assert manifest.opset == 17
    assert manifest.inputs[0]["shape"] == ["batch", 16]


def test_input_specs_describe_a_model_without_examples(tmp_path):
    module = tmp_path / "bare.py"
    module.write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Tanh()).eval()\n"
    )
    with pytest.raises(InputError, match="--input"):
        edgekit.convert(f"{module}:make", tmp_path / "a")
    manifest = edgekit.convert(
        f"{module}:make", tmp_path / "b", input_specs=[parse_spec("input:float32[n,6]")], dim_sizes={"n": 4}
    )
    assert manifest.inputs == [{"name": "input", "dtype": "float32", "shape": ["n", 6]}]
    assert manifest.outputs[0]["shape"] == ["n", 3]


def test_declared_dim_that_cannot_vary_is_an_error(tmp_path):
    with pytest.raises(InputError, match="dim 'w' cannot vary"):
        edgekit.convert(
            f"{MODELS}/mlp.py:make", tmp_path / "x", input_specs=[parse_spec("x:float32[batch,w]")], dim_sizes={"w": 16}
        )


def test_exported_program_source(tmp_path):
    model, example = _factory("mlp")
    program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "mlp.pt2")
    manifest = edgekit.convert(tmp_path / "mlp.pt2", tmp_path / "art")
    assert manifest.source.kind == "exported_program"
    assert manifest.inputs[0]["shape"][0] == "batch"
    feeds = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}
    with edgekit.load(tmp_path / "art") as s:
        assert_output_matches(s, _torch_out(model, feeds), s.run(feeds)["output"])


@pytest.mark.slow
def test_minilm_embedding_matches_torch_on_every_cpu_target(tmp_path):
    from edgekit.sources import bundled_minilm_dir, load_source

    directory = bundled_minilm_dir()
    out = tmp_path / "minilm"
    manifest = edgekit.convert(directory, out, validate_targets=CPU_TARGETS)
    assert manifest.outputs == [{"name": "embedding", "dtype": "float32", "shape": ["batch", 384]}]
    assert {"tokenizer/tokenizer.json", "model.onnx"} <= set(manifest.files)
    source = load_source(directory)
    rng = np.random.default_rng(3)
    ids = rng.integers(1000, 20000, (3, 128)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v for k, v in feeds.items() if k in {s["name"] for s in manifest.inputs}}
    ref = _torch_out(source.module, feeds)
    for target in CPU_TARGETS:
        precision = "f32" if target == "openvino" else None
        with edgekit.load(out, target=target, precision=precision) as s:
            assert_output_matches(s, ref, s.run(feeds)["embedding"], target)
        if target == "openvino":
            with edgekit.load(out, target=target) as default:
                hint = default.info().details["inference_precision_hint"]
                assert hint in ("f32", "bf16", "f16")  # whatever this CPU runs by default, it is reported


@pytest.mark.slow
def test_minilm_artifact_embeds_text_like_sentence_transformers(tmp_path):
    """Tokenizer from the artifact + ONNX Runtime == sentence-transformers' own encode()."""
    from sentence_transformers import SentenceTransformer

    from edgekit.sources import bundled_minilm_dir
    from edgekit.text import TextEncoder

    sentences = ["A man is playing a guitar.", "Edge devices run compressed models.", "Hello!"]
    out = tmp_path / "minilm"
    edgekit.convert(bundled_minilm_dir(), out)
    feeds = TextEncoder.for_artifact(out).encode(sentences)
    expected = SentenceTransformer(str(bundled_minilm_dir()), device="cpu").encode(sentences)
    with edgekit.load(out) as session:
        assert_output_matches(session, expected, session.run(feeds)["embedding"])


def test_output_rename_moves_a_colliding_internal_value(tmp_path):
    """dynamo names values after modules: a wanted output name may already exist inside the graph."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.converters.export import _rename_outputs, check_onnx_file

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["embedding"]), helper.make_node("Neg", ["embedding"], ["out0"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out0", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert _rename_outputs(model.graph, ["embedding"])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    check_onnx_file(path)
    with edgekit.load(path) as session:
        out = session.run({"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(out["embedding"], [-0.0, -2.0])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_large_model_path_writes_external_data(tmp_path, monkeypatch, exporter):
    """Models over 2 GB need external data; the threshold is lowered so a small model takes that path."""
    from edgekit.converters import export

    monkeypatch.setattr(export, "_TWO_GB", 1000)
    out = tmp_path / "art"
    manifest = edgekit.convert(f"{MODELS}/mlp.py:make", out, exporter=exporter, validate_targets=CPU_TARGETS)
    data_files = [f for f in manifest.files if f != "model.onnx"]
    assert data_files == ["model.onnx.data"], manifest.files
    assert (out / "model.onnx").stat().st_size < 10_000  # weights live outside the graph file
    feeds = {"x": np.ones((2, 16), np.float32)}
    for target in CPU_TARGETS:
        with edgekit.load(out, target=target) as s:
            assert s.run(feeds)["output"].shape == (2, 4)
    with open(out / data_files[0], "r+b") as f:
        f.write(b"\1\2\3\4")
    with pytest.raises(edgekit.ArtifactError, match="modified"):
        edgekit.load(out)


def test_grouped_options_are_the_keywords_whole(tmp_path, mlp_onnx):
    """convert takes ExportOptions / QuantizeRequest objects as well as their keywords, never both at once."""
    manifest = edgekit.convert(f"{MODELS}/mlp.py:make", tmp_path / "a", export=edgekit.ExportOptions(opset=17))
    assert manifest.opset == 17
    quantized = edgekit.convert(mlp_onnx.path, tmp_path / "q", quantize=edgekit.QuantizeRequest("int8-dynamic"))
    assert quantized.variants == {"onnxruntime": "model.int8-dynamic.onnx"}
    with pytest.raises(InputError, match="not both"):
        edgekit.convert(f"{MODELS}/mlp.py:make", tmp_path / "b", opset=17, export=edgekit.ExportOptions())
    with pytest.raises(InputError, match="not both"):
        edgekit.convert(mlp_onnx.path, tmp_path / "c", quantize=edgekit.QuantizeRequest("fp16"), fidelity="cosine>=0.9")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_gate_pads_text_inputs_and_catches_a_model_that_ignores_padding(tmp_path):
    """An export that baked in a "mask is all ones" shortcut passes every all-ones input; padded rows catch it."""
    from edgekit.converters.validate import padded_feeds

    mask = padded_feeds({"attention_mask": np.ones((4, 10), np.int64), "input_ids": np.ones((4, 10), np.int64)})
    lengths = mask["attention_mask"].sum(axis=1).tolist()
    assert lengths[0] == 10 and len(set(lengths)) == 4 and min(lengths) >= 1
    assert padded_feeds({"x": np.ones((4, 10), np.float32)}) is None
    with pytest.raises(ValidationError, match="on padded inputs"):
        edgekit.convert(f"{MODELS}/skips_full_mask.py:make", tmp_path / "out")
    assert not (tmp_path / "out").exists()
