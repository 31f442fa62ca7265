"""One conformance suite every registered runtime must pass (scikit-learn's parametrize_with_checks idea).

Same small models -> same outputs (within the tolerance of the precision the runtime reports) and the same
errors for the same bad feeds.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError, FeedError, InputError
from edgekit.fidelity import compare_outputs, tolerance_for
from edgekit.runtimes import available_targets, runtime_capabilities
from edgekit.runtimes.base import DEVICE_KINDS

# OpenVINO may run fp32 models in bf16 by default on CPUs that have it; conformance pins f32 where possible.
_PINNED = {"openvino": "f32"}


def _load(path, runtime, **kw):
    return edgekit.load(path, target=runtime, precision=_PINNED.get(runtime), **kw)


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_match_numpy_reference(onnx_case, runtime, batch):
    with _load(onnx_case.path, runtime) as session:
        feeds = onnx_case.feeds(batch)
        got = session.run(feeds)
        ref = onnx_case.reference(feeds)
        tol = tolerance_for(session.info().precision)
        metrics = compare_outputs(ref, got, tol)
        assert all(m["passed"] for m in metrics.values()), metrics
        assert set(got) == {o.name for o in session.outputs}
        assert all(isinstance(v, np.ndarray) for v in got.values())


def test_session_reports_facts(mlp_onnx, runtime):
    with _load(mlp_onnx.path, runtime, threads=1) as session:
        info = session.info()
        assert info.target == runtime
        assert info.device and info.backend_version and info.precision
        assert info.providers
        assert [s.name for s in session.inputs] == ["x"]
        assert session.inputs[0].shape == ("batch", 8)
        assert info.to_dict()["target"] == runtime
        assert info.device_kind in DEVICE_KINDS and info.device_kind in session.capabilities.device_kinds
        assert info.to_dict()["device_kind"] == info.device_kind
        if info.device_kind == "cpu":
            assert info.threads == 1  # read back from the runtime, which was asked for one


def test_threads_are_read_from_the_runtime_when_none_were_asked_for(mlp_onnx, runtime):
    with _load(mlp_onnx.path, runtime) as session:
        info = session.info()
    if info.device_kind == "cpu":
        assert isinstance(info.threads, int) and info.threads >= 1


def test_run_throughput_runs_at_least_what_was_asked(mlp_onnx, runtime):
    with _load(mlp_onnx.path, runtime, options=dict(runtime_capabilities(runtime).throughput_options)) as session:
        done = session.run_throughput(mlp_onnx.feeds(2), min_requests=6)
        assert len(done.latencies_ns) >= 6 and all(t > 0 for t in done.latencies_ns)
        assert done.elapsed_s > 0 and done.requests_in_flight >= 1
        facts = done.facts()
        assert facts["api"] and facts["infer_requests"] == done.requests_in_flight
        capped = session.run_throughput(mlp_onnx.feeds(1), min_requests=1, min_seconds=30.0, max_requests=3)
        assert len(capped.latencies_ns) <= max(3, done.requests_in_flight)
        with pytest.raises(FeedError):
            session.run_throughput({"x": np.zeros((1, 9), np.float32)}, min_requests=1)


def test_capabilities_are_known_without_loading_a_model(runtime):
    caps = runtime_capabilities(runtime)
    assert caps.device_kinds and set(caps.device_kinds) <= set(DEVICE_KINDS)
    assert caps.has_compile_cache == (caps.compile_cache is not None)
    assert runtime in available_targets(caps.device_kinds[0])


_BAD_FEEDS = {
    "unknown name": ({"x": np.zeros((1, 8), np.float32), "z": np.zeros(1, np.float32)}, "unknown input 'z'"),
    "missing name": ({}, "missing input 'x'"),
    "wrong dtype": ({"x": np.zeros((1, 8), np.float64)}, "expected dtype float32, got float64"),
    "wrong rank": ({"x": np.zeros((1, 8, 1), np.float32)}, "expected rank 2"),
    "wrong fixed dim": ({"x": np.zeros((1, 9), np.float32)}, "dim 1 must be 8"),
    "not an array": ({"x": [[0.0] * 8]}, "expected a numpy array"),
}


@pytest.mark.parametrize("case", sorted(_BAD_FEEDS))
def test_bad_feeds_fail_the_same_way(mlp_onnx, runtime, case):
    feeds, message = _BAD_FEEDS[case]
    with _load(mlp_onnx.path, runtime) as session, pytest.raises(FeedError) as excinfo:
        session.run(feeds)
    assert message in str(excinfo.value)
    assert "x: float32[batch, 8]" in str(excinfo.value)
    assert excinfo.value.exit_code == 2


def test_inconsistent_symbolic_dims_are_rejected(tmp_path, runtime):
    from conftest import make_embedding_onnx

    case = make_embedding_onnx(tmp_path / "emb.onnx")
    feeds = {"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 6), np.float32)}
    with _load(case.path, runtime) as session, pytest.raises(FeedError, match="dim 'seq' is 6 but input 'ids'"):
        session.run(feeds)


def test_unknown_option_is_an_input_error(mlp_onnx, runtime):
    with pytest.raises(InputError, match="unknown option 'no_such_option'"):
        edgekit.load(mlp_onnx.path, target=runtime, options={"no_such_option": 1})


def test_run_after_close_is_an_error(mlp_onnx, runtime):
    session = _load(mlp_onnx.path, runtime)
    session.close()
    with pytest.raises(EdgekitError, match="closed"):
        session.run(mlp_onnx.feeds(1))


def test_corrupt_model_is_rejected_before_the_backend(tmp_path, runtime):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(edgekit.ModelFormatError):
        edgekit.load(bad, target=runtime)


def test_bad_threads_value(mlp_onnx, runtime):
    with pytest.raises(InputError, match="threads"):
        edgekit.load(mlp_onnx.path, target=runtime, threads=0)


def test_what_the_builtin_runtimes_declare():
    from edgekit.runtimes import DEFAULT_TARGET, session_class
    from edgekit.runtimes.tensorrt import TensorRTSession  # importable without TensorRT

    assert DEFAULT_TARGET == "onnxruntime" and DEFAULT_TARGET in available_targets("cpu")
    ort, ov = (session_class(n).capabilities for n in ("onnxruntime", "openvino"))
    trt = TensorRTSession.capabilities
    assert not ort.has_compile_cache and ov.compile_cache == "OpenVINO CACHE_DIR" and not ov.caches_by_default
    assert ov.throughput_options == {"performance_hint": "THROUGHPUT"} and not ort.throughput_options
    assert trt.device_kinds == ("gpu",) and trt.caches_by_default and trt.has_compile_cache


_THREADS, _RUNS_PER_THREAD = 8, 120


def _distinct_feeds(count: int) -> list[dict[str, np.ndarray]]:
    """``count`` different inputs for the MLP, batch 1 to 3, so a swapped result or shape cannot pass."""
    rng = np.random.default_rng(7)
    return [{"x": rng.standard_normal((1 + k % 3, 8)).astype(np.float32)} for k in range(count)]


def _run_concurrently(session, feeds: list[dict[str, np.ndarray]]) -> tuple[list, list[BaseException]]:
    """Thread ``t`` runs feeds ``t, t + THREADS, ...``, all starting together; returns (outputs, errors)."""
    outputs: list = [None] * len(feeds)
    errors: list[BaseException] = []
    start = threading.Barrier(_THREADS)

    def worker(first: int) -> None:
        start.wait()
        for k in range(first, len(feeds), _THREADS):
            try:
                outputs[k] = session.run(feeds[k])
            except Exception as exc:  # counted, not raised: the test reports how many and which
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a run did not return within 60 s"
    return outputs, errors


def test_concurrent_runs_give_the_serial_results(mlp_onnx, runtime):
    """8 threads sharing one session get exactly what one thread gets, input by input, with no errors."""
    feeds = _distinct_feeds(_THREADS * _RUNS_PER_THREAD)
    with _load(mlp_onnx.path, runtime) as session:
        serial = [session.run(f) for f in feeds]
        concurrent, errors = _run_concurrently(session, feeds)
    wrong = [k for k, (want, got) in enumerate(zip(serial, concurrent, strict=True)) if got and _differ(want, got)]
    assert not errors and not wrong, (
        f"of {len(feeds)} concurrent runs, {len(errors)} failed (first: {errors[:1]!r}) and "
        f"{len(wrong)} returned another result than the serial run of the same input"
    )


def _differ(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> bool:
    """Different names, shapes, or any value further than 1e-6 from the serial output."""
    if set(got) != set(want):
        return True
    return any(got[n].shape != want[n].shape or float(np.max(np.abs(got[n] - want[n]))) > 1e-6 for n in want)
