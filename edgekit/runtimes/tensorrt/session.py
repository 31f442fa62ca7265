"""The TensorRT Session: build (or load from cache) an engine from the ONNX file and run it on an NVIDIA GPU.

NOT RUN ON HARDWARE: no GPU or TensorRT was available when this was written. It follows the TensorRT 10/11
Python API and cuda-python's ``cudart`` as documented; the pure decisions it relies on (profile, cache keys,
flags, dtypes) live in :mod:`~edgekit.runtimes.tensorrt.plan` and :mod:`~edgekit.runtimes.tensorrt.precision`
and are unit-tested. The tests that drive a real engine are marked ``tensorrt``/``gpu`` and skip without them.

What ``Session.run`` includes, for latency reports: feed checks, host->device copies of every input, the
engine (``execute_async_v3``), device->host copies of every output and a stream synchronize. This is
trtexec 10.x's default meaning of latency (copies included), not 11.x's (copies excluded, CUDA graphs).
Host buffers are ordinary (pageable) numpy arrays, so copies are not overlapped with compute.

Precision: TensorRT turns TF32 on by default; edgekit clears ``BuilderFlag.TF32`` unless the caller asks for
``precision="tf32"``, and ``info().precision`` says ``tf32`` exactly when the engine was built with it on an
Ampere or newer GPU (:func:`~edgekit.runtimes.tensorrt.precision.precision_plan` decides both at once).

Threads and devices: calls are serialized on the one execution context by a lock (the Session contract);
the session's GPU is made current around load, run and release and the caller's device restored, so any
thread may use it; GPU memory is freed by ``close()`` or, for a session dropped unclosed, by a finalizer.
TensorRT's messages go through one process-wide logger (:mod:`~edgekit.runtimes.tensorrt.logger`), and a
BackendError carries the error line the failing call itself logged.

Engines are cached under ``SessionConfig.cache_dir`` (default ``~/.cache/edgekit/tensorrt``), keyed by
model hash, TensorRT version, GPU name and compute capability and the build options; a timing cache per
TensorRT version and GPU is shared across models. ``tensorrt`` and ``cuda`` are imported only inside
methods, so importing this module is cheap and works without them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendError, InputError, ModelFormatError, RuntimeUnavailableError
from edgekit.runtimes.base import RuntimeCapabilities, Session, SessionInfo
from edgekit.runtimes.tensorrt import cuda, plan, precision
from edgekit.runtimes.tensorrt import logger as trt_log
from edgekit.runtimes.tensorrt.cuda import import_cudart as _import_cudart

log = logging.getLogger(__name__)


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeUnavailableError(f"tensorrt failed to import ({exc}); pip install 'edgekit[tensorrt]'") from exc
    return trt


def _model_digest(path: Path) -> str:
    """sha256 over the ONNX file and its external data files, so new weights never hit an old engine."""
    from edgekit.artifact import sha256_of
    from edgekit.onnxfile import external_data_files, read_onnx

    digest = hashlib.sha256(sha256_of(path).encode())
    for extra in external_data_files(read_onnx(path, check=False), path):
        if not extra.is_file():
            raise ModelFormatError(f"external data file {extra.name} of {path.name} is missing")
        digest.update(f"{extra.name}:{sha256_of(extra)}".encode())
    return digest.hexdigest()


class TensorRTSession(Session):
    """A TensorRT engine on one NVIDIA GPU; inputs and outputs are copied between host and device per run."""

    target = "tensorrt"
    # engines are cached under ~/.cache/edgekit/tensorrt unless cache_dir says elsewhere
    capabilities = RuntimeCapabilities(
        device_kinds=("gpu",), compile_cache="TensorRT plan cache", caches_by_default=True, int8_symmetric_only=True
    )

    # -- load -----------------------------------------------------------------------------------------
    def _load(self) -> None:
        self._options = plan.parse_options(self.config.options)
        self._device_index = plan.cuda_device_index(self.config.device)
        precision.graph_precision(self.model.precision)  # graphs TensorRT cannot build fail before it loads
        precision.normalize_precision(self.config.precision)
        self._profile = plan.profile_shapes(self.model.inputs, self._options.dims, self._options.profile)
        self._lock = threading.Lock()  # one execution context and one set of buffers: one caller at a time
        self._cudart = _import_cudart()
        self._trt = _import_trt()
        self._gpu = cuda.DeviceState(self._cudart, self._device_index)
        # frees the GPU memory of a session collected without close(); it holds the state, never the session
        self._finalizer = weakref.finalize(self, cuda.release, self._gpu)
        try:
            self._gpu_name, self._cc = self._select_gpu()
            self._precision = self._decide_precision()
            self._logger = trt_log.shared_logger(self._trt)  # TensorRT keeps the first logger it sees: one for all
            with cuda.on_device(self._cudart, self._device_index), trt_log.capture():
                self._start_engine()
        except BaseException:
            self._finalizer()
            raise

    def _start_engine(self) -> None:
        """Engine, execution context and stream on the session's GPU (the caller made it current)."""
        gpu = self._gpu
        gpu.engine = self._load_engine()
        gpu.context = gpu.engine.create_execution_context()
        if gpu.context is None:
            raise BackendError(f"TensorRT could not create an execution context: {self._last_error()}")
        self._io = self._engine_io()
        gpu.stream = cuda.check(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _decide_precision(self) -> precision.PrecisionPlan:
        """The one precision decision: what the build sets and clears (TF32 included) and what info() reports."""
        trt = self._trt
        return precision.precision_plan(
            precision.trt_major_version(trt.__version__),
            self.config.precision,
            model_precision=self.model.precision,
            strongly_typed=self._options.strongly_typed,
            can_type_strongly=hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
            compute_capability=self._cc,
        )

    def _load_engine(self) -> Any:
        """Deserialize the cached or freshly built plan; a cached plan that will not load is rebuilt once."""
        runtime = self._gpu.runtime = self._trt.Runtime(self._logger)
        data, self._from_cache, self._build_s = self._engine_plan()
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None and self._from_cache:
            log.warning("cached TensorRT engine %s did not load; rebuilding it", self._plan_path)
            self._plan_path.unlink(missing_ok=True)
            data, self._from_cache, self._build_s = self._engine_plan()
            engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendError(f"TensorRT could not deserialize the engine: {self._last_error()}")
        self._plan_bytes = len(data)
        return engine

    def _select_gpu(self) -> tuple[str, tuple[int, int]]:
        """Name and compute capability of the session's GPU, after checking it exists; current only when used."""
        cudart = self._cudart
        try:
            count = int(cuda.check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        except BackendError as exc:
            raise RuntimeUnavailableError(f"no usable CUDA GPU here ({exc}); tensorrt needs an NVIDIA GPU") from exc
        if count == 0:
            raise RuntimeUnavailableError("no CUDA GPU visible; tensorrt needs an NVIDIA GPU and its driver")
        if self._device_index >= count:
            raise InputError(f"device cuda:{self._device_index} does not exist; this machine has {count} CUDA GPU(s)")
        return cuda.gpu_facts(cudart, self._device_index)

    def _build_options(self) -> dict[str, Any]:
        return {
            "precision_flags": sorted(self._precision.builder_flags),
            "cleared_flags": sorted(self._precision.cleared_flags),
            "network_flags": sorted(self._precision.network_flags),
            "workspace_bytes": self._options.workspace_bytes,
            "profile": {name: [list(s) for s in shapes] for name, shapes in self._profile.items()},
        }

    def _engine_plan(self) -> tuple[bytes, bool, float]:
        """Serialized engine from the cache when its key matches, else built and cached: (plan, cached, secs)."""
        trt_version = str(self._trt.__version__)
        self._cache_key = plan.engine_cache_key(
            _model_digest(self.model.path), trt_version, self._gpu_name, self._cc, self._build_options()
        )
        cache_dir = self.config.cache_dir or plan.default_cache_dir()
        timing_key = plan.timing_cache_key(trt_version, self._gpu_name, self._cc)
        self._plan_path, timing_path = plan.cache_paths(cache_dir, self._cache_key, timing_key)
        if self._plan_path.is_file():
            return self._plan_path.read_bytes(), True, 0.0
        start = time.perf_counter()
        data, timing = self._build(timing_path.read_bytes() if timing_path.is_file() else b"")
        seconds = time.perf_counter() - start
        try:
            plan.write_atomic(self._plan_path, data)
            if timing:
                plan.write_atomic(timing_path, timing)
        except OSError as exc:  # a read-only cache costs a rebuild next time, not this run
            log.warning("could not write TensorRT cache under %s: %s", cache_dir, exc)
        return data, False, seconds

    def _build(self, timing_bytes: bytes) -> tuple[bytes, bytes]:
        """Parse the ONNX file and build a serialized engine; returns (plan, timing cache)."""
        trt = self._trt
        builder = trt.Builder(self._logger)
        flags = 0
        for name in self._precision.network_flags:
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.model.path)):
            messages = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendError(plan.parser_error_line(self.model.path.name, messages))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._options.workspace_bytes)
        for name in self._precision.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        for name in self._precision.cleared_flags:  # TF32 is on by default: fp32 must ask for it off
            config.clear_flag(getattr(trt.BuilderFlag, name))
        dynamic = [s for s in self.model.inputs if s.symbolic_dims]
        if dynamic:
            profile = builder.create_optimization_profile()
            for spec in dynamic:
                profile.set_shape(spec.name, *self._profile[spec.name])
            if config.add_optimization_profile(profile) < 0:  # the profile's index, or -1 when it is invalid
                shapes = {s.name: [list(d) for d in self._profile[s.name]] for s in dynamic}
                raise BackendError(f"TensorRT rejected the optimization profile {shapes}: {self._last_error()}")
        cache = config.create_timing_cache(timing_bytes)
        if not config.set_timing_cache(cache, False):
            cache = config.create_timing_cache(b"")  # stale or foreign cache: start a fresh one
            config.set_timing_cache(cache, False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine for {self.model.path.name}: {self._last_error()}")
        timing = config.get_timing_cache()
        return bytes(serialized), bytes(timing.serialize()) if timing is not None else b""

    def _engine_io(self) -> dict[str, tuple[bool, str]]:
        """Engine tensor name -> (is_input, numpy dtype name); must match the model's IO names."""
        trt, engine = self._trt, self._gpu.engine
        io: dict[str, tuple[bool, str]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            io[name] = (is_input, precision.numpy_dtype_for_trt(engine.get_tensor_dtype(name).name))
        engine_inputs = {n for n, (is_in, _) in io.items() if is_in}
        if engine_inputs != set(self._names):
            raise BackendError(f"engine inputs {sorted(engine_inputs)} differ from the model's {sorted(self._names)}")
        return io

    @staticmethod
    def _last_error() -> str:
        """The newest TensorRT error this thread's call logged (see :mod:`~edgekit.runtimes.tensorrt.logger`)."""
        return trt_log.last_error()

    # -- run ------------------------------------------------------------------------------------------
    def _host_input(self, name: str, value: np.ndarray) -> np.ndarray:
        dtype = self._io[name][1]
        if dtype == "bfloat16":
            return precision.bf16_bits(value)
        return np.ascontiguousarray(value, dtype=np.dtype(dtype))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Serialized (the Session contract): concurrent callers would share the context's shapes and buffers."""
        with self._lock:
            if self._gpu.context is None:
                raise InputError(f"{self.target} session is closed")
            with cuda.on_device(self._cudart, self._device_index), trt_log.capture():
                return self._run_engine(feeds)

    def _run_engine(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        gpu, cudart = self._gpu, self._cudart
        ctx, stream, check = gpu.context, gpu.stream, cuda.check
        plan.check_shapes_in_profile(self._profile, {n: tuple(v.shape) for n, v in feeds.items()})
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # host copies must outlive the async copies: kept until the stream sync below
        for name, value in feeds.items():
            host = self._host_input(name, value)
            staged.append(host)
            if not ctx.set_input_shape(name, tuple(host.shape)):  # inside the profile, checked above
                shape = list(host.shape)
                raise BackendError(f"TensorRT rejected shape {shape} of input {name!r}: {self._last_error()}")
            ptr = gpu.buffer(name, host.nbytes)
            check(cudart, cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, stream), "H2D copy")
            self._bind(name, ptr)
        results: dict[str, np.ndarray] = {}
        for name, (is_input, dtype) in self._io.items():
            if is_input:
                continue
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"output {name!r} has a data-dependent shape {list(shape)}; not supported yet")
            host_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
            results[name] = np.empty(shape, dtype=host_dtype)
            self._bind(name, gpu.buffer(name, results[name].nbytes))
        if not ctx.execute_async_v3(int(stream)):
            raise BackendError(f"TensorRT execute_async_v3 failed: {self._last_error()}")
        for name, host in results.items():
            ptr = gpu.buffers[name][0]
            check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, stream), "D2H copy")
        check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        staged.clear()
        bf16 = precision.float32_from_bf16_bits
        return {n: bf16(a) if self._io[n][1] == "bfloat16" else a for n, a in results.items()}

    def _bind(self, name: str, ptr: int) -> None:
        """Give tensor ``name`` its device buffer; TensorRT says False (bad alignment, unknown name) and logs why."""
        if not self._gpu.context.set_tensor_address(name, ptr):
            raise BackendError(f"TensorRT refused the device buffer of tensor {name!r}: {self._last_error()}")

    # -- facts and teardown ---------------------------------------------------------------------------
    def info(self) -> SessionInfo:
        return SessionInfo(
            target=self.target,
            device=self._gpu_name,
            device_kind="gpu",
            precision=self._precision.reported,
            backend_version=str(self._trt.__version__),
            providers=(f"cuda:{self._device_index}",),  # what runs it, as OpenVINO names its device
            details={
                "device_index": self._device_index,
                "compute_capability": f"{self._cc[0]}.{self._cc[1]}",
                "cache_key": self._cache_key,
                "plan_path": str(self._plan_path),
                "plan_from_cache": self._from_cache,
                "build_seconds": round(self._build_s, 3),
                "plan_bytes": self._plan_bytes,
                "builder_flags": list(self._precision.builder_flags),
                "cleared_builder_flags": list(self._precision.cleared_flags),
                "tf32": self._precision.tf32,
                "network_flags": list(self._precision.network_flags),
                "workspace_bytes": self._options.workspace_bytes,
                "profile": {n: [list(s) for s in shapes] for n, shapes in self._profile.items()},
                "latency_includes": "host->device copies, execute_async_v3, device->host copies, stream sync",
            },
        )

    def _close(self) -> None:
        """Free the GPU memory now, after any run in flight (the finalizer then has nothing left to do)."""
        with self._lock:
            self._finalizer()

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """Version and GPUs for ``edgekit targets``; never raises: a missing GPU is ``usable: False``."""
        try:
            trt = _import_trt()
            version = str(trt.__version__)
        except Exception as exc:
            return {"version": None, "devices": [], "usable": False, "note": str(exc).splitlines()[0]}
        try:
            precision.require_supported_major(precision.trt_major_version(version))
            cudart = _import_cudart()
            count = cuda.check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
            devices = [cuda.gpu_facts(cudart, i)[0] for i in range(int(count))]
        except Exception as exc:
            return {"version": version, "devices": [], "usable": False, "note": str(exc).splitlines()[0]}
        if not devices:
            return {"version": version, "devices": [], "usable": False, "note": "no CUDA GPU visible"}
        return {"version": version, "devices": devices, "usable": True, "note": ""}
