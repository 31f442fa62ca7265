"""Stand-ins for TensorRT and cuda-python's cudart, shared by the TensorRT session tests.

``FakeTRT``/``FakeCudart`` mimic the documented TensorRT 10/11 and cuda-python call shapes with host memory,
so the session's own logic (cache hits, flags, profile, copies, errors, devices, logging) can be tested
without a GPU. They prove nothing about TensorRT itself: the ``tensorrt``/``gpu`` tests do, where a GPU exists.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgekit.runtimes.base import ModelRef
from edgekit.runtimes.tensorrt import logger as trt_log
from edgekit.runtimes.tensorrt import session as trt_runtime
from edgekit.specs import TensorSpec


def affine_onnx(path: Path, scale: float = 2.0, *, external: bool = False) -> None:
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


def affine_model(tmp_path: Path, precision: str = "fp32", *, external: bool = False) -> ModelRef:
    path = tmp_path / "m.onnx"
    if not path.exists():
        affine_onnx(path, external=external)
    x = TensorSpec("x", "float32", ("batch", 4))
    return ModelRef(path=path, inputs=(x,), outputs=(TensorSpec("y", "float32", ("batch", 4)),), precision=precision)


def _flag_enum(*names: str) -> SimpleNamespace:
    return SimpleNamespace(**{n: i for i, n in enumerate(names)})


class FakeCudart:
    """cuda-python's cudart call shapes over host memory: ``(err, value)`` tuples, int pointers.

    Like the CUDA runtime, the current device is per thread (0 on a new thread); every allocation, stream and
    copy records the device current when it was made, so a test can see work land on the wrong GPU.
    """

    cudaError_t = SimpleNamespace(cudaSuccess=0, cudaErrorInvalidDevice=101)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, gpus: int = 1) -> None:
        self.gpus = gpus
        self.compute_capability = (8, 9)
        self.blocks: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.block_device: dict[int, int] = {}
        self.streams: dict[int, int] = {}  # stream -> device it was created on
        self.off_device: list[str] = []  # calls made while another device than their stream's was current
        self._current = threading.local()
        self._next_stream = itertools.count(4242)

    def current(self) -> int:
        return getattr(self._current, "device", 0)

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, self.gpus

    def cudaGetDevice(self) -> tuple[int, int]:
        return 0, self.current()

    def cudaSetDevice(self, index: int) -> tuple[int]:
        if not 0 <= index < self.gpus:
            return (self.cudaError_t.cudaErrorInvalidDevice,)
        self._current.device = index
        return (0,)

    def cudaGetDeviceProperties(self, index: int) -> tuple[int, Any]:
        major, minor = self.compute_capability
        return 0, SimpleNamespace(name=b"Fake GPU\x00\x00", major=major, minor=minor)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        self.block_device[ctypes.addressof(block)] = self.current()
        return 0, ctypes.addressof(block)

    def cudaFree(self, ptr: int) -> tuple[int]:
        del self.blocks[ptr]
        del self.block_device[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
        assert stream in self.streams
        device = dst if kind == 1 else src
        assert device in self.blocks and nbytes <= len(self.blocks[device])
        if self.current() != self.streams[stream]:
            self.off_device.append("cudaMemcpyAsync")
        ctypes.memmove(dst, src, nbytes)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        stream = next(self._next_stream)
        self.streams[stream] = self.current()
        return 0, stream

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.streams.pop(stream, None)
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
        self.loggers: list[Any] = []  # every logger handed to a Builder, OnnxParser or Runtime
        self.logger_inits = 0
        self.logger_init_delay = 0.0  # widens the window in which two threads could both create a logger
        self.profile_index = 0  # what add_optimization_profile returns: -1 is TensorRT's "invalid profile"
        self.reject_shape = self.reject_address = False
        self.fail_execute: str | None = None  # fail execute_async_v3, logging this line unless it is empty
        self.execute_hook: Callable[[], None] | None = None  # runs inside execute_async_v3
        self.cudart: FakeCudart | None = None  # to record the device current when the engine runs
        self.execute_devices: list[int] = []
        fake = self

        class ILogger:
            Severity = FakeTRT.Severity

            def __init__(self) -> None:
                fake.logger_inits += 1
                time.sleep(fake.logger_init_delay)

        class Builder:
            def __init__(self, logger: Any) -> None:
                fake.loggers.append(logger)

            def create_network(self, flags: int) -> dict[str, Any]:
                return {"flags": flags}

            def create_builder_config(self) -> Any:
                return FakeConfig(fake)

            def create_optimization_profile(self) -> Any:
                return FakeProfile()

            def build_serialized_network(self, network: dict[str, Any], config: Any) -> bytes:
                record = {"network_flags": network["flags"], **config.facts}
                fake.builds.append(record)
                return b"PLAN" + json.dumps(record, sort_keys=True).encode()

        class OnnxParser:
            num_errors = 2

            def __init__(self, network: Any, logger: Any) -> None:
                fake.loggers.append(logger)

            def parse_from_file(self, path: str) -> bool:
                assert Path(path).is_file()
                return fake.parse_ok

            def get_error(self, i: int) -> str:
                return ["In node 0 (Bogus):\nUNSUPPORTED_NODE: no importer", "second error"][i]

        class Runtime:
            def __init__(self, logger: Any) -> None:
                fake.loggers.append(logger)

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                return FakeEngine(fake) if data.startswith(b"PLAN") else None

        self.ILogger, self.Builder, self.OnnxParser, self.Runtime = ILogger, Builder, OnnxParser, Runtime

    def log_error(self, message: str) -> None:
        """Log as TensorRT does: to the first logger the process gave it, whoever's call this is."""
        self.loggers[0].log(self.Severity.ERROR, message)


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class FakeConfig:
    def __init__(self, fake: FakeTRT) -> None:
        self.fake = fake
        self.facts: dict[str, Any] = {"builder_flags": [], "cleared_flags": [], "profiles": []}

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.facts[pool] = size

    def set_flag(self, flag: int) -> None:
        self.facts["builder_flags"].append(flag)

    def clear_flag(self, flag: int) -> None:
        self.facts["cleared_flags"].append(flag)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        if self.fake.profile_index < 0:
            self.fake.log_error("IOptimizationProfile: invalid dimensions for input x")
            return self.fake.profile_index
        self.facts["profiles"].append(profile.shapes)
        return len(self.facts["profiles"]) - 1

    def create_timing_cache(self, data: bytes) -> bytes:
        self.facts["timing_in"] = data.decode()
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        return True

    def get_timing_cache(self) -> Any:
        return SimpleNamespace(serialize=lambda: b"timing-v1")


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, fake: FakeTRT) -> None:
        self.fake = fake

    def get_tensor_name(self, i: int) -> str:
        return ["x", "y"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name: str) -> Any:
        return SimpleNamespace(name="FLOAT")

    def create_execution_context(self) -> Any:
        return FakeContext(self.fake)


class FakeContext:
    def __init__(self, fake: FakeTRT) -> None:
        self.fake = fake
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if self.fake.reject_shape:
            self.fake.log_error(f"IExecutionContext::setInputShape: shape of {name} is not in the profile")
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["x"]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if self.fake.reject_address:
            self.fake.log_error(f"IExecutionContext::setTensorAddress: {name} address is not aligned")
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int)
        if self.fake.cudart is not None:
            self.fake.execute_devices.append(self.fake.cudart.current())
        if self.fake.execute_hook is not None:
            self.fake.execute_hook()
        if self.fake.fail_execute is not None:
            if self.fake.fail_execute:
                self.fake.log_error(self.fake.fail_execute)
            return False
        n = int(np.prod(self.shapes["x"]))
        x = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["x"]), dtype=np.float32)
        y = np.frombuffer((ctypes.c_float * n).from_address(self.addresses["y"]), dtype=np.float32)
        y[:] = 2 * x + 1
        return True


def install_fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeTRT, FakeCudart]:
    """Make the session import the stand-ins instead of ``tensorrt`` and ``cudart``, for one test."""
    trt, cudart = FakeTRT(), FakeCudart()
    trt.cudart = cudart
    monkeypatch.setattr(trt_log, "_shared", None)  # a fresh process-wide logger for each fake TensorRT
    monkeypatch.setattr(trt_runtime, "_import_trt", lambda: trt)
    monkeypatch.setattr(trt_runtime, "_import_cudart", lambda: cudart)
    return trt, cudart
