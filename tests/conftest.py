"""Shared fixtures: small real ONNX models built with onnx.helper (no torch needed) and their numpy references."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.runtimes import registered_runtimes

MODELS_DIR = Path(__file__).parent / "models"


@dataclass
class OnnxCase:
    """An ONNX file plus a numpy function computing what it should output."""

    path: Path
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    feeds: Callable[[int], dict[str, np.ndarray]]  # batch size -> feeds


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_mlp_onnx(path: Path) -> OnnxCase:
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.maximum(feeds["x"] @ w1 + b1, 0) @ w2}

    def feeds(batch: int) -> dict[str, np.ndarray]:
        return {"x": np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)}

    return OnnxCase(_save(model, path), reference, feeds)


def make_embedding_onnx(path: Path) -> OnnxCase:
    """int64 ids [batch, seq] and a float mask -> masked mean of embeddings [batch, 6]: two inputs sharing dims."""
    rng = np.random.default_rng(1)
    table = rng.standard_normal((50, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["m3"]),
        helper.make_node("Mul", ["emb", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "emb",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 6])],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = table[feeds["ids"]] * feeds["mask"][..., None]
        return {"pooled": emb.sum(1) / feeds["mask"].sum(1, keepdims=True)}

    def feeds(batch: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng(batch)
        seq = 5 + batch
        return {"ids": r.integers(0, 50, (batch, seq)).astype(np.int64), "mask": np.ones((batch, seq), np.float32)}

    return OnnxCase(_save(model, path), reference, feeds)


def make_conv_onnx(path: Path) -> OnnxCase:
    """Conv + Relu + global average pool, fixed 3x8x8 images, dynamic batch."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.pad(feeds["x"], ((0, 0), (0, 0), (1, 1), (1, 1)))
        n = x.shape[0]
        out = np.zeros((n, 4, 8, 8), np.float64)
        for i in range(3):
            for j in range(3):
                patch = x[:, :, i : i + 8, j : j + 8]
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        out = np.maximum(out + b[None, :, None, None], 0)
        return {"y": out.mean(axis=(2, 3)).astype(np.float32)}

    def feeds(batch: int) -> dict[str, np.ndarray]:
        return {"x": np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)}

    return OnnxCase(_save(model, path), reference, feeds)


ONNX_BUILDERS = {"mlp": make_mlp_onnx, "embedding": make_embedding_onnx, "conv": make_conv_onnx}


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> OnnxCase:
    return make_mlp_onnx(tmp_path / "mlp.onnx")


@pytest.fixture(params=sorted(ONNX_BUILDERS))
def onnx_case(request: pytest.FixtureRequest, tmp_path: Path) -> OnnxCase:
    return ONNX_BUILDERS[request.param](tmp_path / f"{request.param}.onnx")


def _runtime_params() -> list:
    params = []
    for entry in registered_runtimes():
        marks = []
        if not entry.is_available():
            marks.append(pytest.mark.skip(reason=f"{entry.name} is not installed here ({entry.install})"))
        if entry.name == "tensorrt":
            marks += [pytest.mark.tensorrt, pytest.mark.gpu]
        params.append(pytest.param(entry.name, marks=marks, id=entry.name))
    return params


@pytest.fixture(params=_runtime_params())
def runtime(request: pytest.FixtureRequest) -> str:
    """Every registered runtime; those not installed here skip with what to install."""
    return request.param


def _cpu_line() -> str:
    from edgekit.benchmark.facts import cpu_model, numeric_cpu_flags

    return f"cpu: {cpu_model()}; numerics flags: {' '.join(numeric_cpu_flags()) or 'none of those checked'}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which kind of CPU a run came from: these features change INT8/bf16 results and OpenVINO's defaults."""
    return [_cpu_line()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The same line at the end, where ``-q`` (which hides the header) and failure reports still show it."""
    terminalreporter.write_line(_cpu_line())


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 (the bundled sentence-transformers directory) converted once for the whole run, gated on
    ONNX Runtime and OpenVINO (about 10-30 s). Tests that change an artifact copy it first."""
    import edgekit
    from edgekit.sources import bundled_minilm_dir

    out = tmp_path_factory.mktemp("minilm") / "artifact"
    edgekit.convert(bundled_minilm_dir(), out, validate_targets=["openvino"])
    return out
