"""TensorRT runtime: registry behaviour without TensorRT, the session's wiring against a stand-in, real GPU runs.

The stand-in (``FakeTRT``/``FakeCudart``, in ``trt_fakes.py``) mimics the documented TensorRT 10/11 and
cuda-python call shapes with host memory, so the session's own logic (cache hits, flags, profile, copies,
errors) is tested here. It proves nothing about TensorRT itself: the ``tensorrt``/``gpu`` tests below do.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from checks import assert_output_matches
from trt_fakes import FakeCudart, FakeTRT, affine_model, install_fakes

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


def test_options_and_precision_are_checked_before_tensorrt_is_needed(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="tensorrt: unknown option 'threads'"):
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(options={"threads": 2}))
    with pytest.raises(InputError, match="'cuda' or 'cuda:N'"):
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(device="cpu"))
    with pytest.raises(InputError, match="dynamic-INT8"):
        trt_runtime.TensorRTSession(affine_model(tmp_path, "int8-dynamic"), SessionConfig())


# -- the session's wiring, against a stand-in for TensorRT and cudart ----------------------------------------


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTRT, FakeCudart]:
    return install_fakes(monkeypatch)


def test_build_run_and_cache_hit(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, cudart = fakes
    config = SessionConfig(cache_dir=tmp_path / "cache", options={"dims": {"batch": (1, 2, 8)}})
    with trt_runtime.TensorRTSession(affine_model(tmp_path), config) as session:
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        out = session.run({"x": x})
        np.testing.assert_array_equal(out["y"], 2 * x + 1)
        bigger = np.ones((8, 4), np.float32)
        np.testing.assert_array_equal(session.run({"x": bigger})["y"], 3 * bigger)
        burst = session.run_throughput({"x": x}, min_requests=3)  # the contract's synchronous default
        assert len(burst.latencies_ns) == 3 and burst.requests_in_flight == 1
        first = session.info()
    assert cudart.blocks == {} and cudart.streams == {}  # close freed every buffer and the stream
    assert first.device == "Fake GPU" and first.precision == "fp32" and first.backend_version == "10.3.0"
    assert first.device_kind == "gpu" and first.threads is None  # no intra-op CPU threads to report
    assert first.details["plan_from_cache"] is False and first.details["compute_capability"] == "8.9"
    assert len(trt.builds) == 1
    assert trt.builds[0]["profiles"] == [{"x": [[1, 4], [2, 4], [8, 4]]}]
    assert trt.builds[0]["workspace"] == 1 << 30 and trt.builds[0]["timing_in"] == ""
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["engine", "timing"]

    with trt_runtime.TensorRTSession(affine_model(tmp_path), config) as again:
        assert again.info().details["plan_from_cache"] is True
        assert again.info().details["cache_key"] == first.details["cache_key"]
    assert len(trt.builds) == 1

    other = SessionConfig(cache_dir=tmp_path / "cache", options={"dims": {"batch": (1, 1, 4)}})
    with trt_runtime.TensorRTSession(affine_model(tmp_path), other) as rebuilt:
        assert rebuilt.info().details["plan_from_cache"] is False
    assert len(trt.builds) == 2 and trt.builds[1]["timing_in"] == "timing-v1"  # timing cache reused


def test_a_cached_plan_that_does_not_load_is_rebuilt(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    config = SessionConfig(cache_dir=tmp_path / "cache")
    with trt_runtime.TensorRTSession(affine_model(tmp_path), config) as session:
        plan_path = Path(session.info().details["plan_path"])
    plan_path.write_bytes(b"garbage from an older TensorRT")
    with trt_runtime.TensorRTSession(affine_model(tmp_path), config) as session:
        assert session.info().details["plan_from_cache"] is False
    assert len(trt.builds) == 2 and plan_path.read_bytes().startswith(b"PLAN")


def test_new_external_weights_never_hit_an_old_engine(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    ref = affine_model(tmp_path, external=True)
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
    with trt_runtime.TensorRTSession(affine_model(tmp_path), config) as session:
        assert session.info().precision == "fp16"
    assert trt.builds[-1]["builder_flags"] == [FakeTRT.BuilderFlag.FP16]
    assert trt.builds[-1]["network_flags"] == 0

    typed = SessionConfig(cache_dir=tmp_path, options={"strongly_typed": True})
    trt_runtime.TensorRTSession(affine_model(tmp_path), typed).close()
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
    with trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(cache_dir=tmp_path)) as fp32:
        assert fp32.info().precision == "fp32" and fp32.info().details["tf32"] is False
        fp32_key = fp32.info().details["cache_key"]
    assert trt.builds[-1]["cleared_flags"] == [flag] and flag not in trt.builds[-1]["builder_flags"]
    tf32 = SessionConfig(precision="tf32", cache_dir=tmp_path)
    with trt_runtime.TensorRTSession(affine_model(tmp_path), tf32) as session:
        info = session.info()
    assert info.precision == "tf32" and info.details["tf32"] is True and info.details["plan_from_cache"] is False
    assert info.details["cache_key"] != fp32_key and len(trt.builds) == 2
    assert trt.builds[-1]["builder_flags"] == [flag] and trt.builds[-1]["cleared_flags"] == []
    assert tolerance_for(info.precision) == tolerance_for("fp16")


def test_tf32_on_a_gpu_without_tf32_reports_fp32(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards the report on pre-Ampere GPUs (compute capability < 8.0): the TF32 flag changes nothing there."""
    _, cudart = fakes
    cudart.compute_capability = (7, 5)
    with trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(precision="tf32", cache_dir=tmp_path)) as s:
        assert s.info().precision == "fp32" and s.info().details["tf32"] is True


def test_trt11_refuses_fp16_on_an_fp32_graph(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    trt.__version__ = "11.0.0"
    with pytest.raises(InputError, match=re.escape("edgekit convert --quantize fp16")):
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(precision="fp16", cache_dir=tmp_path))
    trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(cache_dir=tmp_path)).close()
    assert trt.builds[-1]["network_flags"] == 0 and trt.builds[-1]["builder_flags"] == []


def test_parser_errors_become_one_line(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    trt, _ = fakes
    trt.parse_ok = False
    with pytest.raises(BackendError) as info:
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(cache_dir=tmp_path))
    assert (
        str(info.value) == "TensorRT could not parse m.onnx: In node 0 (Bogus): UNSUPPORTED_NODE: no importer (+1 more)"
    )


def test_feed_outside_the_profile_is_a_feed_error(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    config = SessionConfig(cache_dir=tmp_path, options={"profile": {"x": ((1, 4), (1, 4), (2, 4))}})
    session = trt_runtime.TensorRTSession(affine_model(tmp_path), config)
    with session, pytest.raises(FeedError, match="outside the engine's profile"):
        session.run({"x": np.zeros((3, 4), np.float32)})


def test_missing_gpu_and_missing_device(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    _, cudart = fakes
    with pytest.raises(InputError, match="cuda:1 does not exist; this machine has 1 CUDA GPU"):
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(device="cuda:1", cache_dir=tmp_path))
    cudart.gpus = 0
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU visible"):
        trt_runtime.TensorRTSession(affine_model(tmp_path), SessionConfig(cache_dir=tmp_path))
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
        assert session.info().precision == "fp32"  # TF32 cleared: fp32 is judged at fp32's tolerance
        assert_output_matches(session, np.maximum(x @ w + b, 0), y)
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


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tf32_is_asked_for_and_reported(real_trt: None, tmp_path: Path) -> None:
    """On a real GPU: precision='tf32' builds a separate engine and reports tf32 on Ampere and newer."""
    ref, w, b = _tiny_onnx(tmp_path)
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    config = SessionConfig(precision="tf32", cache_dir=tmp_path / "cache")
    with session_class("tensorrt")(ref, config) as session:
        info = session.info()
        major = int(info.details["compute_capability"].split(".")[0])
        assert info.precision == ("tf32" if major >= 8 else "fp32") and info.details["tf32"] is True
        assert_output_matches(session, np.maximum(x @ w + b, 0), session.run({"x": x})["y"])
