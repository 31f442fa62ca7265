"""TensorRT runtime: registry behaviour without TensorRT, the session's wiring against a stand-in, real GPU runs.

The stand-in (``FakeTRT``/``FakeCudart``) mimics the documented TensorRT 10/11 and cuda-python call
shapes with host memory, so the session's own logic (cache hits, flags, profile, copies, errors) is tested
here. It proves nothing about TensorRT itself: the ``tensorrt``/``gpu`` tests below do, where a GPU exists.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from checks import assert_output_matches

from edgekit.errors import BackendError, FeedError, InputError, RuntimeUnavailableError
from edgekit.fidelity import tolerance_for
from edgekit.runtimes import runtime_entry, session_class
from edgekit.runtimes.base import ModelRef, Session, SessionConfig
from edgekit.runtimes.tensorrt import session as trt_runtime
from edgekit.specs import TensorSpec

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("cuda") is not None
no_trt_here = pytest.mark.skipif(HAVE_TRT, reason="TensorRT and cuda-python are installed here")


# -- without TensorRT ---------------------------------------------------------------------------------------


@no_trt_here
def test_tensorrt_is_not_available_and_says_what_to_install() -> None:
    assert runtime_entry("tensorrt").is_available() is False
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgekit\[tensorrt\]'"):
        session_class("tensorrt")


def test_importing_the_runtime_module_imports_neither_tensorrt_nor_cuda() -> None:
    code = (
        "import sys, edgekit.runtimes.tensorrt as m; "
        "assert m.TensorRTSession.target == 'tensorrt'; "
        "bad = [n for n in ('tensorrt', 'cuda', 'torch') if n in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@no_trt_here
def test_probe_without_tensorrt_reports_unusable_instead_of_raising() -> None:
    facts = trt_runtime.TensorRTSession.probe()
    assert facts["usable"] is False and facts["devices"] == []
    assert "tensorrt" in facts["note"]


def _affine_onnx(path: Path, scale: float = 2.0, *, external: bool = False) -> None:
    """y = x * scale + 1 over float32[batch, 4], written with onnx.helper (optionally with external weights)."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Add", ["xs", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(np.full(4, scale, np.float32), "s"),
            numpy_helper.from_array(np.ones(4, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=0,
    )


def _model(tmp_path: Path, precision: str = "fp32", *, external: bool = False) -> ModelRef:
    path = tmp_path / "m.onnx"
    if not path.exists():
        _affine_onnx(path, external=external)
    x = TensorSpec("x", "float32", ("batch", 4))
    return ModelRef(path=path, inputs=(x,), outputs=(TensorSpec("y", "float32", ("batch", 4)),), precision=precision)


def test_options_and_precision_are_checked_before_tensorrt_is_needed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown tensorrt option 'threads'"):
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(options={"threads": 2}))
    with pytest.raises(InputError, match="'cuda' or 'cuda:N'"):
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(device="cpu"))
    with pytest.raises(InputError, match="dynamic-INT8"):
        trt_runtime.TensorRTSession(_model(tmp_path, "int8-dynamic"), SessionConfig())


# -- the session's wiring, against a stand-in for TensorRT and cudart ----------------------------------------


def _flag_enum(*names: str) -> SimpleNamespace:
    return SimpleNamespace(**{n: i for i, n in enumerate(names)})


class FakeCudart:
    """cuda-python's cudart call shapes over host memory: ``(err, value)`` tuples, int pointers."""

    cudaError_t = SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, gpus: int = 1) -> None:
        self.gpus = gpus
        self.compute_capability = (8, 9)
        self.blocks: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.streams: set[int] = set()

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, self.gpus

    def cudaSetDevice(self, index: int) -> tuple[int]:
        return (0,)

    def cudaGetDeviceProperties(self, index: int) -> tuple[int, Any]:
        major, minor = self.compute_capability
        return 0, SimpleNamespace(name=b"Fake GPU\x00\x00", major=major, minor=minor)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaFree(self, ptr: int) -> tuple[int]:
        del self.blocks[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
        assert stream in self.streams
        device = dst if kind == 1 else src
        assert device in self.blocks and nbytes <= len(self.blocks[device])
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        self.streams.add(4242)
        return 0, 4242

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.streams.discard(stream)
        return (0,)


class FakeTRT:
    """The TensorRT calls the session makes; the 'engine' computes y = 2 * x + 1 on float32."""

    Severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)
    NetworkDefinitionCreationFlag = _flag_enum("STRONGLY_TYPED")
    BuilderFlag = _flag_enum("FP16", "BF16", "INT8", "TF32")
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")

    def __init__(self, version: str = "10.3.0", parse_ok: bool = True) -> None:
        self.__version__ = version
        self.builds: list[dict[str, Any]] = []
        self.parse_ok = parse_ok
        fake = self

        class ILogger:
            Severity = FakeTRT.Severity

            def __init__(self) -> None:
                pass

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> dict[str, Any]:
                return {"flags": flags}

            def create_builder_config(self) -> Any:
                return FakeConfig()

            def create_optimization_profile(self) -> Any:
                return FakeProfile()

            def build_serialized_network(self, network: dict[str, Any], config: Any) -> bytes:
                record = {"network_flags": network["flags"], **config.facts}
                fake.builds.append(record)
                return b"PLAN" + json.dumps(record, sort_keys=True).encode()

        class OnnxParser:
            num_errors = 2

            def __init__(self, network: Any, logger: Any) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                assert Path(path).is_file()
                return fake.parse_ok

            def get_error(self, i: int) -> str:
                return ["In node 0 (Bogus):\nUNSUPPORTED_NODE: no importer", "second error"][i]

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                return FakeEngine() if data.startswith(b"PLAN") else None

        self.ILogger, self.Builder, self.OnnxParser, self.Runtime = ILogger, Builder, OnnxParser, Runtime


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class FakeConfig:
    def __init__(self) -> None:
        self.facts: dict[str, Any] = {"builder_flags": [], "cleared_flags": [], "profiles": []}

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.facts[pool] = size

    def set_flag(self, flag: int) -> None:
        self.facts["builder_flags"].append(flag)

    def clear_flag(self, flag: int) -> None:
        self.facts["cleared_flags"].append(flag)

    def add_optimization_profile(self, profile: FakeProfile) -> None:
        self.facts["profiles"].append(profile.shapes)

    def create_timing_cache(self, data: bytes) -> bytes:
        self.facts["timing_in"] = data.decode()
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        return True

    def get_timing_cache(self) -> Any:
        return SimpleNamespace(serialize=lambda: b"timing-v1")


class FakeEngine:
    num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return ["x", "y"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name: str) -> Any:
        return SimpleNamespace(name="FLOAT")

    def create_execution_context(self) -> Any:
        return FakeContext()


class FakeContext:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["x"]

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int)
        n = int(np.prod(self.shapes["x"]))
        x = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["x"]), dtype=np.float32)
        y = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["y"]), dtype=np.float32)
        y[:] = 2 * x + 1
        return True


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTRT, FakeCudart]]:
    trt, cudart = FakeTRT(), FakeCudart()
    monkeypatch.setattr(trt_runtime, "_import_trt", lambda: trt)
    monkeypatch.setattr(trt_runtime, "_import_cudart", lambda: cudart)
    yield trt, cudart


def test_build_run_and_cache_hit(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = fakes
    config = SessionConfig(cache_dir=tmp_path / "cache", options={"dims": {"batch": (1, 2, 8)}})
    with trt_runtime.TensorRTSession(_model(tmp_path), config) as session:
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        out = session.run({"x": x})
        np.testing.assert_array_equal(out["y"], 2 * x + 1)
        bigger = np.ones((8, 4), np.float32)
        np.testing.assert_array_equal(session.run({"x": bigger})["y"], 3 * bigger)
        burst = session.run_throughput({"x": x}, min_requests=3)  # the contract's synchronous default
        assert len(burst.latencies_ns) == 3 and burst.requests_in_flight == 1
        first = session.info()
    assert cudart.blocks == {} and cudart.streams == set()  # close freed every buffer and the stream
    assert first.device == "Fake GPU" and first.precision == "fp32" and first.backend_version == "10.3.0"
    assert first.device_kind == "gpu" and first.threads is None  # no intra-op CPU threads to report
    assert first.details["plan_from_cache"] is False and first.details["compute_capability"] == "8.9"
    assert len(trt.builds) == 1
    assert trt.builds[0]["profiles"] == [{"x": [[1, 4], [2, 4], [8, 4]]}]
    assert trt.builds[0]["workspace"] == 1 << 30 and trt.builds[0]["timing_in"] == ""
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["engine", "timing"]

    with trt_runtime.TensorRTSession(_model(tmp_path), config) as again:
        assert again.info().details["plan_from_cache"] is True
        assert again.info().details["cache_key"] == first.details["cache_key"]
    assert len(trt.builds) == 1

    other = SessionConfig(cache_dir=tmp_path / "cache", options={"dims": {"batch": (1, 1, 4)}})
    with trt_runtime.TensorRTSession(_model(tmp_path), other) as rebuilt:
        assert rebuilt.info().details["plan_from_cache"] is False
    assert len(trt.builds) == 2 and trt.builds[1]["timing_in"] == "timing-v1"  # timing cache reused


def test_a_cached_plan_that_does_not_load_is_rebuilt(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    config = SessionConfig(cache_dir=tmp_path / "cache")
    with trt_runtime.TensorRTSession(_model(tmp_path), config) as session:
        plan_path = Path(session.info().details["plan_path"])
    plan_path.write_bytes(b"garbage from an older TensorRT")
    with trt_runtime.TensorRTSession(_model(tmp_path), config) as session:
        assert session.info().details["plan_from_cache"] is False
    assert len(trt.builds) == 2 and plan_path.read_bytes().startswith(b"PLAN")


def test_new_external_weights_never_hit_an_old_engine(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    ref = _model(tmp_path, external=True)
    data = tmp_path / "m.data"
    assert data.is_file()
    config = SessionConfig(cache_dir=tmp_path / "cache")
    trt_runtime.TensorRTSession(ref, config).close()
    data.write_bytes(data.read_bytes()[::-1])  # same .onnx file, different weights
    with trt_runtime.TensorRTSession(ref, config) as session:
        assert session.info().details["plan_from_cache"] is False
    assert len(trt.builds) == 2


def test_precision_flags_reach_the_builder(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    config = SessionConfig(precision="fp16", cache_dir=tmp_path)
    with trt_runtime.TensorRTSession(_model(tmp_path), config) as session:
        assert session.info().precision == "fp16"
    assert trt.builds[-1]["builder_flags"] == [FakeTRT.BuilderFlag.FP16]
    assert trt.builds[-1]["network_flags"] == 0

    typed = SessionConfig(cache_dir=tmp_path, options={"strongly_typed": True})
    trt_runtime.TensorRTSession(_model(tmp_path), typed).close()
    assert trt.builds[-1]["network_flags"] == 1 << FakeTRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED


def test_fp32_clears_tf32_and_tf32_is_reported_and_cached_apart(
    fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path
) -> None:
    """Guards finding 7.1: TensorRT's TF32 default made "fp32" engines TF32 while the gate used fp32's tolerance.

    fp32 must clear BuilderFlag.TF32; precision="tf32" must set it and report tf32 (fp16's tolerance); the two
    builds must have different cache keys so one is never served for the other.
    """
    trt, _ = fakes
    flag = FakeTRT.BuilderFlag.TF32
    with trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(cache_dir=tmp_path)) as fp32:
        assert fp32.info().precision == "fp32" and fp32.info().details["tf32"] is False
        fp32_key = fp32.info().details["cache_key"]
    assert trt.builds[-1]["cleared_flags"] == [flag] and flag not in trt.builds[-1]["builder_flags"]
    with trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(precision="tf32", cache_dir=tmp_path)) as tf32:
        info = tf32.info()
    assert info.precision == "tf32" and info.details["tf32"] is True and info.details["plan_from_cache"] is False
    assert info.details["cache_key"] != fp32_key and len(trt.builds) == 2
    assert trt.builds[-1]["builder_flags"] == [flag] and trt.builds[-1]["cleared_flags"] == []
    assert tolerance_for(info.precision) == tolerance_for("fp16")


def test_tf32_on_a_gpu_without_tf32_reports_fp32(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards the report on pre-Ampere GPUs (compute capability < 8.0): the TF32 flag changes nothing there."""
    _, cudart = fakes
    cudart.compute_capability = (7, 5)
    with trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(precision="tf32", cache_dir=tmp_path)) as s:
        assert s.info().precision == "fp32" and s.info().details["tf32"] is True


def test_trt11_refuses_fp16_on_an_fp32_graph(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    trt.__version__ = "11.0.0"
    with pytest.raises(InputError, match=re.escape("edgekit convert --quantize fp16")):
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(precision="fp16", cache_dir=tmp_path))
    trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(cache_dir=tmp_path)).close()
    assert trt.builds[-1]["network_flags"] == 0 and trt.builds[-1]["builder_flags"] == []


def test_parser_errors_become_one_line(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    trt.parse_ok = False
    with pytest.raises(BackendError) as info:
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(cache_dir=tmp_path))
    assert (
        str(info.value) == "TensorRT could not parse m.onnx: In node 0 (Bogus): UNSUPPORTED_NODE: no importer (+1 more)"
    )


def test_feed_outside_the_profile_is_a_feed_error(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    config = SessionConfig(cache_dir=tmp_path, options={"profile": {"x": ((1, 4), (1, 4), (2, 4))}})
    session = trt_runtime.TensorRTSession(_model(tmp_path), config)
    with session, pytest.raises(FeedError, match="outside the engine's profile"):
        session.run({"x": np.zeros((3, 4), np.float32)})


def test_missing_gpu_and_missing_device(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    _, cudart = fakes
    with pytest.raises(InputError, match="cuda:1 does not exist; this machine has 1 CUDA GPU"):
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(device="cuda:1", cache_dir=tmp_path))
    cudart.gpus = 0
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU visible"):
        trt_runtime.TensorRTSession(_model(tmp_path), SessionConfig(cache_dir=tmp_path))
    facts = trt_runtime.TensorRTSession.probe()
    assert facts == {"version": "10.3.0", "devices": [], "usable": False, "note": "no CUDA GPU visible"}


def test_probe_lists_gpus(fakes: tuple[FakeTRT, FakeCudart]) -> None:
    assert trt_runtime.TensorRTSession.probe() == {
        "version": "10.3.0",
        "devices": ["Fake GPU"],
        "usable": True,
        "note": "",
    }


# -- on a real GPU with TensorRT ----------------------------------------------------------------------------


@pytest.fixture
def real_trt() -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'edgekit[tensorrt]') and an NVIDIA GPU")
    pytest.importorskip("cuda", reason="needs cuda-python (pip install cuda-python) and an NVIDIA GPU")
    facts = session_class("tensorrt").probe()
    if not facts.get("usable"):
        pytest.skip(f"TensorRT installed but no usable GPU: {facts.get('note')}")


def _tiny_onnx(tmp_path: Path) -> tuple[ModelRef, np.ndarray, np.ndarray]:
    """y = relu(x @ W + b) with a symbolic batch, written with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "tiny.onnx"
    save(model, str(path))
    ref = ModelRef(
        path=path,
        inputs=(TensorSpec("x", "float32", ("batch", 4)),),
        outputs=(TensorSpec("y", "float32", ("batch", 3)),),
    )
    return ref, w, b


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_engine_matches_numpy_and_caches(real_trt: None, tmp_path: Path) -> None:
    ref, w, b = _tiny_onnx(tmp_path)
    cls = session_class("tensorrt")
    config = SessionConfig(device="cuda:0", cache_dir=tmp_path / "cache")
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with cls(ref, config) as session:
        assert isinstance(session, Session)
        y = session.run({"x": x})["y"]
        assert session.info().details["plan_from_cache"] is False
        assert_output_matches(session, np.maximum(x @ w + b, 0), y)  # TF32 on Ampere+: judged at what it reports
    with cls(ref, config) as again:
        assert again.info().details["plan_from_cache"] is True
        assert_output_matches(again, y[:1], again.run({"x": x[:1]})["y"])


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_engine_rejects_feeds_outside_profile(real_trt: None, tmp_path: Path) -> None:
    ref, _, _ = _tiny_onnx(tmp_path)
    config = SessionConfig(cache_dir=tmp_path / "cache", options={"dims": {"batch": (1, 1, 2)}})
    with session_class("tensorrt")(ref, config) as session, pytest.raises(FeedError, match="profile"):
        session.run({"x": np.zeros((3, 4), np.float32)})
