"""OpenVINO backend: CPU/GPU/NPU/AUTO, latency or throughput hint, pinned or reported precision, CACHE_DIR.

On CPUs with native bf16 the CPU plugin runs FP32 models in bf16 unless told otherwise; the session always
reports the effective ``INFERENCE_PRECISION_HINT`` so a report never hides that. Throughput runs use
OpenVINO's own ``AsyncInferQueue`` with the plugin's optimal number of requests.

Thread safety: an OpenVINO infer request runs one inference at a time, and its output tensors are buffers
the next inference overwrites, so one request shared by threads fails with "Infer Request is busy" or,
worse, hands one caller another caller's result. A session therefore keeps a pool of infer requests: each
``run`` takes one (creating it when all are in use, so the pool grows to the peak number of concurrent
calls), copies the outputs out (``share_outputs=False``) and puts the request back. Concurrent ``run`` calls
give exactly the serial results and need no lock, so threads also buy throughput: inferences run in
parallel when the compiled model has several streams (``performance_hint="THROUGHPUT"`` or ``num_streams``);
with one stream they take turns on it while the rest of each call overlaps.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from edgekit.errors import BackendError, InputError, ModelFormatError, RuntimeUnavailableError
from edgekit.runtimes.base import RuntimeCapabilities, Session, SessionInfo, ThroughputRun, device_kind_of

OPTION_KEYS = frozenset({"performance_hint", "num_streams", "num_requests", "config"})
_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}
_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


@cache
def openvino_module() -> Any:
    """``import openvino``, without the usage report it sends over the network on import.

    ``import openvino`` imports its model converter, which through ``openvino_telemetry`` sends a "general
    import" event to Google Analytics (and writes a client id under the home directory) unless the user opted
    out beforehand. edgekit promises no network at run time, so unless the application imported
    ``openvino_telemetry`` itself first, it is made unimportable for this process: OpenVINO then uses its own
    built-in no-op stub, the path it takes when the package is not installed. (``tests/test_no_network.py``.)
    """
    sys.modules.setdefault("openvino_telemetry", None)  # a None entry: "not importable"
    import openvino as ov

    return ov


@cache
def shared_core() -> Any:
    """One ``ov.Core`` per process: creating it costs tens of milliseconds and it holds the plugins."""
    return openvino_module().Core()


def device_name(device: str | None, available: list[str]) -> str:
    """Normalize ``cpu``/``gpu.1``/``auto:GPU,CPU`` and check a physical device exists here."""
    name = (device or "CPU").upper()
    base = name.split(":")[0]
    if base in _VIRTUAL_DEVICES:
        return name
    family = base.split(".")[0]
    if base not in available and not any(d.split(".")[0] == family and base == family for d in available):
        raise RuntimeUnavailableError(
            f"openvino: device {name!r} is not available here (available: {', '.join(available) or 'none'})"
        )
    return name


def compile_config(
    threads: int | None, precision: str | None, cache_dir: str | None, options: Mapping[str, Any]
) -> dict[str, str]:
    """OpenVINO properties for ``compile_model`` from edgekit's options."""
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise InputError(f"openvino: unknown option {sorted(unknown)[0]!r}; accepted: {sorted(OPTION_KEYS)}")
    hint = str(options.get("performance_hint", "LATENCY")).upper()
    if hint not in _HINTS:
        raise InputError(f"openvino: performance_hint must be one of {', '.join(_HINTS)}, got {hint!r}")
    config: dict[str, str] = {"PERFORMANCE_HINT": hint}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if precision is not None:
        key = precision.lower()
        if key not in _PRECISIONS:
            raise InputError(f"openvino: precision must be one of {', '.join(sorted(_PRECISIONS))}, got {precision!r}")
        config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[key]
    if cache_dir is not None:
        config["CACHE_DIR"] = cache_dir
    if "num_streams" in options:
        config["NUM_STREAMS"] = str(options["num_streams"])
    if "num_requests" in options:
        config["PERFORMANCE_HINT_NUM_REQUESTS"] = str(options["num_requests"])
    config.update({str(k): str(v) for k, v in dict(options.get("config", {})).items()})
    return config


class OpenVINOSession(Session):
    """An OpenVINO compiled model with a pool of infer requests, one per concurrent ``run``; thread-safe."""

    target = "openvino"
    capabilities = RuntimeCapabilities(
        device_kinds=("cpu", "gpu", "npu"),
        compile_cache="OpenVINO CACHE_DIR",
        throughput_options={"performance_hint": "THROUGHPUT"},
    )

    def _load(self) -> None:
        ov = openvino_module()
        core = shared_core()
        self._device = device_name(self.config.device, list(core.available_devices))
        cache_dir = str(self.config.cache_dir) if self.config.cache_dir is not None else None
        self._config = compile_config(self.config.threads, self.config.precision, cache_dir, self.config.options)
        try:
            model = core.read_model(str(self.model.path))
        except Exception as exc:
            raise ModelFormatError(f"openvino cannot read {self.model.path}: {_first_line(exc)}") from exc
        try:
            self._compiled = core.compile_model(model, self._device, self._config)
        except Exception as exc:
            raise BackendError(f"openvino failed to compile for {self._device}: {_first_line(exc)}") from exc
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()  # idle infer requests, taken per run
        self._requests.put(self._compiled.create_infer_request())
        self._throughput_lock = threading.Lock()  # one AsyncInferQueue: one throughput run at a time
        self._queue: Any = None  # the AsyncInferQueue, made on the first throughput run and kept for the next
        self._latencies: list[int] = []
        self._output_names = [o.name for o in self.outputs]
        self._version = ov.get_version()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        requests = self._requests
        try:
            request = requests.get_nowait()
        except queue.Empty:  # every request is busy in another thread: this caller gets its own
            request = self._new_request()
        try:
            # share_outputs=False copies the outputs out of the request before another caller reuses it
            result = request.infer(feeds, share_inputs=True, share_outputs=False)
            return dict(zip(self._output_names, result.to_tuple(), strict=True))
        except Exception as exc:
            raise BackendError(f"openvino run failed: {_first_line(exc)}") from exc
        finally:
            requests.put(request)

    def _new_request(self) -> Any:
        """A fresh infer request for the pool; a session closed meanwhile makes none."""
        compiled = self._compiled
        if compiled is None:
            raise InputError(f"{self.target} session is closed")
        return compiled.create_infer_request()

    @property
    def compiled_model(self) -> Any:
        """The ``ov.CompiledModel``, for OpenVINO-specific calls; throughput runs go through ``run_throughput``."""
        return self._compiled

    def inference_precision(self) -> str:
        """The effective ``INFERENCE_PRECISION_HINT`` of the compiled model (e.g. ``bf16`` or ``f32``)."""
        try:
            value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        except Exception:  # not every device exposes it
            return "unknown"
        return value.to_string() if hasattr(value, "to_string") else str(value)

    def inference_threads(self) -> int | None:
        """``INFERENCE_NUM_THREADS`` of the compiled model: the threads OpenVINO chose, asked for or not."""
        try:
            return int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        except Exception:  # GPU and NPU plugins do not have it
            return None

    def run_throughput(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        min_requests: int,
        min_seconds: float = 0.0,
        max_requests: int | None = None,
    ) -> ThroughputRun:
        """Keep the plugin's optimal number of requests in flight through an ``AsyncInferQueue``.

        Latencies run from ``start_async`` to the request's callback, so they include time queued behind
        other requests. Runs at least as many requests as the queue holds. Throughput runs from several
        threads take turns (they share the queue); ``run`` calls meanwhile use their own requests.
        """
        if self._closed:
            raise InputError(f"{self.target} session is closed")
        self.validate(feeds)
        with self._throughput_lock:
            return self._throughput(feeds, min_requests, min_seconds, max_requests)

    def _throughput(
        self, feeds: Mapping[str, np.ndarray], min_requests: int, min_seconds: float, max_requests: int | None
    ) -> ThroughputRun:
        async_queue = self._async_queue()
        jobs = len(async_queue)
        latencies = self._latencies
        latencies.clear()
        count = max(min_requests, jobs)
        cap = max(max_requests, jobs) if max_requests is not None else None
        clock = time.perf_counter_ns
        begin = clock()
        deadline, sent = begin + int(min_seconds * 1e9), 0
        try:
            while (cap is None or sent < cap) and (sent < count or clock() < deadline):
                async_queue.start_async(feeds, userdata=clock())
                sent += 1
            async_queue.wait_all()
        except Exception as exc:
            raise BackendError(f"openvino async run failed: {_first_line(exc)}") from exc
        elapsed = (clock() - begin) / 1e9
        details: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            details["streams"] = int(self._compiled.get_property("NUM_STREAMS"))
        return ThroughputRun(list(latencies), elapsed, "openvino AsyncInferQueue", jobs, details)

    def _async_queue(self) -> Any:
        if self._queue is None:
            ov = openvino_module()
            jobs = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = ov.AsyncInferQueue(self._compiled, max(jobs, 1))
            latencies, clock = self._latencies, time.perf_counter_ns
            self._queue.set_callback(lambda _request, started: latencies.append(clock() - started))
        return self._queue

    def info(self) -> SessionInfo:
        hint = self.inference_precision()
        named = {"f32": "fp32", "f16": "fp16"}.get(hint, hint)
        precision = named if self.model.precision == "fp32" else f"{self.model.precision} ({named} elsewhere)"
        details: dict[str, Any] = {"inference_precision_hint": hint, "config": dict(self._config)}
        for prop in ("PERFORMANCE_HINT", "NUM_STREAMS", "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "EXECUTION_DEVICES"):
            try:
                value = self._compiled.get_property(prop)
                details[prop.lower()] = value if isinstance(value, int | list) else str(value)
            except Exception:
                continue
        executing = details.get("execution_devices")
        first = executing[0] if isinstance(executing, list) and executing else self._device
        return SessionInfo(
            target=self.target,
            device=self._device,
            device_kind=device_kind_of(str(first)),
            precision=precision,
            backend_version=self._version,
            providers=(self._device,),
            threads=self.inference_threads(),
            details=details,
        )

    def _close(self) -> None:
        with self._throughput_lock:
            if self._queue is not None:
                self._queue.wait_all()
                self._queue = None
        with contextlib.suppress(queue.Empty):
            while True:  # idle requests go now; one still running returns to the pool and goes with the session
                self._requests.get_nowait()
        self._compiled = None

    @classmethod
    def import_backend(cls) -> None:
        openvino_module()

    @classmethod
    def probe(cls) -> dict[str, Any]:
        ov = openvino_module()
        core = shared_core()
        devices = list(core.available_devices)
        notes = []
        for d in devices:
            try:
                notes.append(f"{d}: {core.get_property(d, 'FULL_DEVICE_NAME')}")
            except Exception:
                continue
        return {"version": ov.get_version(), "devices": devices, "note": "; ".join(notes)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # OpenVINO prefixes messages with "Exception from src/..." and "Check ... failed at ...": keep what went
    # wrong, which often spans lines ("...OpConversionFailure:" / "No conversion rule found for: Det-17")
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return " ".join(useful or lines or [text])[:400]
