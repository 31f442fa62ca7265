"""Static INT8 for a target whose INT8 takes zero point 0 only (TensorRT): symmetric int8 activations for it,
uint8 activations with zero points kept for CPU runtimes (faster and more faithful there; see the README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgekit
import edgekit.runtimes as registry
from edgekit.artifact import read_manifest
from edgekit.converters.quantize.variants import QuantizeRequest, scheme_groups
from edgekit.runtimes import RuntimeEntry

MODELS = Path(__file__).parent / "models"
SYMMETRIC = RuntimeEntry(
    name="symmetric-int8",
    target="symmetric_runtime:SymmetricInt8Session",
    requires=("onnxruntime",),
    distribution="onnxruntime",
    install="(defined in tests)",
)


@pytest.fixture
def symmetric_target(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers the test runtime as a third-party one (the entry-point path), for this test only."""
    monkeypatch.setattr(registry, "_entry_point_runtimes", lambda: (SYMMETRIC,))
    return SYMMETRIC.name


def activation_zero_points(path: Path) -> list[np.ndarray]:
    """The zero points of every QuantizeLinear/DequantizeLinear on activations (not on weight initializers)."""
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    return [init[n.input[2]] for n in qdq if n.input[0] not in init]


def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(n)]


def test_tensorrt_declares_symmetric_int8_and_cpu_runtimes_do_not():
    from edgekit.runtimes.tensorrt import TensorRTSession  # importable without TensorRT installed

    assert TensorRTSession.capabilities.int8_symmetric_only
    assert not registry.runtime_capabilities("onnxruntime").int8_symmetric_only
    assert not registry.runtime_capabilities("openvino").int8_symmetric_only


def test_groups_split_static_int8_by_activation_scheme(symmetric_target):
    groups = scheme_groups(QuantizeRequest("int8", calib_data=feeds(3, 0), targets=(symmetric_target, "openvino")))
    by_symmetry = {o.activation_symmetric: t for o, t in groups.items()}
    assert by_symmetry == {False: ["onnxruntime", "openvino"], True: [symmetric_target]}
    dynamic = scheme_groups(QuantizeRequest("int8-dynamic", targets=(symmetric_target,)))
    assert list(dynamic.values()) == [["onnxruntime", symmetric_target]]  # one model: no activation scheme


def test_convert_gives_a_symmetric_target_int8_activations_with_zero_point_zero(tmp_path, symmetric_target):
    out = tmp_path / "mlp"
    edgekit.convert(f"{MODELS}/mlp.py:make", out, quantize="int8", calib_data=feeds(300, 1),
                    targets=[symmetric_target])  # fmt: skip
    manifest = read_manifest(out)
    assert manifest.variants == {"onnxruntime": "model.int8.onnx", symmetric_target: "model.int8-sym.onnx"}
    sym, cpu = activation_zero_points(out / "model.int8-sym.onnx"), activation_zero_points(out / "model.int8.onnx")
    assert sym and all(z.dtype == np.int8 and not z.any() for z in sym)
    assert cpu and all(z.dtype == np.uint8 for z in cpu) and any(z.any() for z in cpu)
    assert manifest.validation[f"{symmetric_target}:model.int8-sym.onnx"]["passed"]
    with edgekit.load(out, target=symmetric_target) as session:
        assert session.model.path.name == "model.int8-sym.onnx"
