"""The TensorRT session's process and thread hygiene against the stand-ins in ``trt_fakes.py`` (issue 10, finding 7).

One logger per process with errors routed to the session that caused them, work on the session's own GPU
whatever thread or device is current, buffers freed without close(), TensorRT's return values checked, the
conformance suite's expectations, and one execution context used by one caller at a time. None of this
needs a GPU; what it cannot show (real TensorRT and CUDA behaviour) the ``tensorrt``/``gpu`` tests cover.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from trt_fakes import FakeCudart, FakeTRT, affine_model, install_fakes

from edgekit.errors import BackendError, InputError
from edgekit.runtimes.base import SessionConfig
from edgekit.runtimes.tensorrt import logger as trt_log
from edgekit.runtimes.tensorrt.session import TensorRTSession

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTRT, FakeCudart]:
    return install_fakes(monkeypatch)


def _session(tmp_path: Path, **config: object) -> TensorRTSession:
    return TensorRTSession(affine_model(tmp_path), SessionConfig(cache_dir=tmp_path / "cache", **config))


# -- one logger per process -------------------------------------------------------------------------------


def test_every_session_hands_tensorrt_the_same_logger(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.2: a logger per session; TensorRT keeps the first, so later sessions' loggers heard nothing."""
    trt, _ = fakes
    with _session(tmp_path), _session(tmp_path, options={"workspace_bytes": 1 << 20}):
        pass
    assert len(trt.loggers) >= 4 and all(lg is trt.loggers[0] for lg in trt.loggers)
    assert trt.logger_inits == 1


def test_the_logger_is_created_once_when_threads_race(fakes: tuple[FakeTRT, FakeCudart]) -> None:
    """Guards 7.2's lazy creation: eight threads asking at once must still get one logger."""
    trt, _ = fakes
    trt.logger_init_delay = 0.01
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(trt_log.shared_logger(trt))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(got) == 8 and all(g is got[0] for g in got) and trt.logger_inits == 1


def test_a_second_session_gets_the_error_its_own_call_caused(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.2: the second session's errors went to the first session's logger, so its message said nothing."""
    trt, _ = fakes
    with _session(tmp_path) as first, _session(tmp_path) as second:
        first.run({"x": X})
        trt.fail_execute = "engine-cpp: out of memory in layer MatMul_0"
        with pytest.raises(BackendError, match="execute_async_v3 failed: engine-cpp: out of memory in layer MatMul_0"):
            second.run({"x": X})


def test_concurrent_failures_each_report_their_own_error(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.2's routing: two sessions failing at once on two threads never swap error messages."""
    trt, _ = fakes
    both_logged = threading.Barrier(2, timeout=10)

    def log_then_wait() -> None:  # each call logs its own line, then waits until the other call logged too
        trt.log_error(f"failure on {threading.current_thread().name}")
        both_logged.wait()

    messages: dict[str, str] = {}

    def run(session: TensorRTSession) -> None:
        try:
            session.run({"x": X})
        except BackendError as exc:
            messages[threading.current_thread().name] = str(exc)

    with _session(tmp_path) as a, _session(tmp_path) as b:
        trt.execute_hook, trt.fail_execute = log_then_wait, ""
        threads = [threading.Thread(target=run, args=(s,), name=f"caller-{k}") for k, s in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
    assert set(messages) == {"caller-0", "caller-1"}
    for name, message in messages.items():
        assert message.endswith(f"failure on {name}"), message


def test_router_keeps_captures_apart_and_falls_back_to_lines_from_other_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards 7.2's documented fallback: a line logged on a TensorRT worker thread is still reported, marked."""
    router = trt_log.ErrorRouter()
    router.record(logging.ERROR, "stale line from before the call")
    with router.capture():
        assert router.last_error() == trt_log.NO_MESSAGE
        worker = threading.Thread(target=router.record, args=(logging.ERROR, "builder worker:\n  failed"))
        worker.start()
        worker.join()
        assert router.last_error() == "builder worker: failed (logged on another thread)"
        with router.capture():
            router.record(logging.ERROR, "inner call failed")
            router.record(logging.WARNING, "a warning is logged but never reported as the error")
            assert router.last_error() == "inner call failed"
        router.record(logging.CRITICAL, "outer call failed")
        assert router.last_error() == "outer call failed"
    assert router.last_error() == trt_log.NO_MESSAGE
    assert "TensorRT: a warning is logged" in caplog.text


# -- the session's own GPU, whatever is current -----------------------------------------------------------


def test_buffers_streams_and_runs_land_on_the_sessions_gpu(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.3: the device was set once at load, so a run from another thread (whose current device is 0)
    or after other code switched devices allocated and launched on the wrong GPU; and load left cuda:1 current.
    """
    trt, cudart = fakes
    cudart.gpus = 2
    with _session(tmp_path, device="cuda:1") as session:
        assert cudart.current() == 0  # loading gave the caller its own device back
        session.run({"x": X})
        worker = threading.Thread(target=session.run, args=({"x": np.ones((5, 4), np.float32)},))
        worker.start()  # a new thread starts on device 0, and needs a bigger buffer: a fresh allocation
        worker.join(timeout=10)
        assert cudart.current() == 0
        assert set(cudart.block_device.values()) == {1} and len(cudart.block_device) == 2
        assert set(cudart.streams.values()) == {1}
    assert trt.execute_devices == [1, 1] and cudart.off_device == []


def test_a_session_on_the_current_device_leaves_it_alone(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    _, cudart = fakes
    cudart.gpus = 2
    assert cudart.cudaSetDevice(1) == (0,)
    with _session(tmp_path, device="cuda:1") as session:
        session.run({"x": X})
    assert cudart.current() == 1 and cudart.off_device == []


# -- freed without close() --------------------------------------------------------------------------------


def test_an_unclosed_session_frees_its_gpu_memory_when_collected(
    fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path
) -> None:
    """Guards 7.4: buffers and the stream were freed only by close(); a dropped session leaked GPU memory.
    The finalizer must not hold the session either, or it would never be collected."""
    _, cudart = fakes
    session = _session(tmp_path)
    session.run({"x": X})
    assert cudart.blocks and cudart.streams
    alive = weakref.ref(session)
    del session
    gc.collect()
    assert alive() is None
    assert cudart.blocks == {} and cudart.streams == {}


def test_close_then_collect_frees_once(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """close() and the finalizer share one release: memory is never freed twice."""
    _, cudart = fakes
    freed: list[int] = []
    real_free = cudart.cudaFree
    cudart.cudaFree = lambda ptr: (freed.append(ptr), real_free(ptr))[1]  # type: ignore[method-assign]
    session = _session(tmp_path)
    session.run({"x": X})
    session.close()
    session.close()
    del session
    gc.collect()
    assert len(freed) == 2 and cudart.blocks == {}


# -- TensorRT's return values -----------------------------------------------------------------------------


def test_an_invalid_optimization_profile_is_a_backend_error(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.5: add_optimization_profile's -1 was ignored and the build went on without the profile."""
    trt, _ = fakes
    trt.profile_index = -1
    with pytest.raises(BackendError, match=r"rejected the optimization profile .*invalid dimensions for input x"):
        _session(tmp_path)
    assert trt.builds == []


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("reject_shape", r"rejected shape \[2, 4\] of input 'x': .*not in the profile"),
        ("reject_address", r"refused the device buffer of tensor 'x': .*address is not aligned"),
    ],
)
def test_refused_shapes_and_addresses_are_backend_errors(
    fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path, flag: str, message: str
) -> None:
    """Guards 7.5: set_tensor_address's False was ignored (the engine ran on a stale or no buffer), and a refused
    input shape was called the caller's FeedError although the feed had passed the profile check."""
    trt, _ = fakes
    with _session(tmp_path) as session:
        setattr(trt, flag, True)
        with pytest.raises(BackendError, match=message):
            session.run({"x": X})
    assert trt.execute_devices == []  # the engine never ran


# -- what the conformance suite expects of every runtime ----------------------------------------------------


def test_conformance_expectations_that_need_no_gpu(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """Guards 7.6: tests/test_runtimes_conformance.py asks every runtime for non-empty ``info().providers`` and an
    unknown option error matching "unknown option 'no_such_option'"; TensorRT would have failed both on its
    first GPU run (it reported no providers and said "unknown tensorrt option")."""
    with _session(tmp_path, device="cuda:0") as session:
        info = session.info()
    assert info.providers == ("cuda:0",) and info.to_dict()["providers"] == ["cuda:0"]
    with pytest.raises(InputError, match="unknown option 'no_such_option'") as excinfo:
        _session(tmp_path, options={"no_such_option": 1})
    assert str(excinfo.value).startswith("tensorrt: unknown option 'no_such_option'; accepted: workspace_bytes")


def test_concurrent_runs_use_the_execution_context_one_at_a_time(
    fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path
) -> None:
    """Guards 7.6's thread safety: the Session contract says TensorRT serializes calls on its one execution
    context. Unlocked, eight threads overlapped inside execute_async_v3 and read each other's shapes and
    buffers, so callers got another input's result."""
    trt, _ = fakes
    inside, most = [0], [0]
    guard = threading.Lock()

    def count_overlap() -> None:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.002)  # long enough for another thread to get in, if it can
        with guard:
            inside[0] -= 1

    rng = np.random.default_rng(3)
    feeds = [rng.standard_normal((1 + k % 3, 4)).astype(np.float32) for k in range(64)]
    got: list[np.ndarray | None] = [None] * len(feeds)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(first: int) -> None:
        start.wait()
        for k in range(first, len(feeds), 8):
            try:
                got[k] = session.run({"x": feeds[k]})["y"]
            except Exception as exc:
                errors.append(exc)

    with _session(tmp_path) as session:
        trt.execute_hook = count_overlap
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors and most[0] == 1
    assert all(y is not None and np.array_equal(y, 2 * x + 1) for x, y in zip(feeds, got, strict=True))


def test_a_run_waiting_for_the_lock_after_close_says_closed(fakes: tuple[FakeTRT, FakeCudart], tmp_path: Path) -> None:
    """close() takes the same lock, so it waits for a run in flight and a later run never touches freed memory."""
    _, cudart = fakes
    session = _session(tmp_path)
    session.run({"x": X})
    session._close()  # as if close() won the race against a run that had passed the base's closed check
    with pytest.raises(InputError, match="tensorrt session is closed"):
        session._infer({"x": X})
    assert cudart.blocks == {}
