"""The Session contract every runtime implements; the one feed check they all share is in :mod:`edgekit.specs`.

The shape follows Polygraphy's runners: the base validates inputs once, then calls the backend's own
``_infer``; loading and closing are explicit. Feed validation is precompiled per input so it costs a few
microseconds per call (``benchmarks/overhead.py`` measures it against the bare backend call).

A runtime also declares what it can do (:class:`RuntimeCapabilities`: device kinds, compile cache, the
options that suit throughput) and may override :meth:`Session.run_throughput` with its own asynchronous
API, so callers such as the benchmark decide by capability and never by comparing target names.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgekit.errors import InputError
from edgekit.specs import TensorSpec, compile_feed_checks, validate_feeds

if TYPE_CHECKING:
    from edgekit.artifact import Manifest


@dataclass(frozen=True)
class SessionConfig:
    """What the caller asked for; each backend reads the fields it understands."""

    device: str | None = None
    threads: int | None = None
    precision: str | None = None
    cache_dir: Path | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InputError(f"threads must be a positive integer, got {self.threads!r}")


@dataclass(frozen=True)
class ModelRef:
    """An ONNX model ready to hand to a runtime: its file, its IO specs, and its artifact's manifest if any."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str = "fp32"
    manifest: Manifest | None = None  # None for a bare .onnx file


DEVICE_KINDS = ("cpu", "gpu", "npu")


def device_kind_of(device: str) -> str:
    """The kind (``cpu``, ``gpu``, ``npu``) of a device as a runtime names it (``CPU``, ``GPU.1``, ``cuda:0``)."""
    name = device.strip().lower()
    if name.startswith(("gpu", "cuda", "tensorrt", "rocm", "dml")):
        return "gpu"
    if name.startswith("npu"):
        return "npu"
    return "cpu"


@dataclass(frozen=True)
class RuntimeCapabilities:
    """What a runtime can do, known before any model loads: callers decide by these, not by target name."""

    device_kinds: tuple[str, ...] = ("cpu",)  # the kinds of device it can run on, first the one it uses by default
    compile_cache: str | None = None  # what its compile cache is called ("OpenVINO CACHE_DIR"); None: none
    caches_by_default: bool = False  # writes a persistent cache even when no cache_dir is given (TensorRT)
    throughput_options: Mapping[str, Any] = field(default_factory=dict)  # load options that suit throughput
    # its INT8 takes zero point 0 only (TensorRT's explicit quantization): static INT8 for it needs symmetric
    # int8 activations, which CPU runtimes run slower and less faithfully than uint8 ones
    int8_symmetric_only: bool = False

    @property
    def has_compile_cache(self) -> bool:
        """A second load of the same model can be faster than the first: cold and warm start differ."""
        return self.compile_cache is not None


@dataclass(frozen=True)
class SessionInfo:
    """Facts about a live session, for reports: what actually runs, not what was asked.

    ``threads`` is the intra-op thread count read back from the runtime (``None`` where the notion does not
    apply, e.g. a GPU engine); ``device_kind`` is ``cpu``, ``gpu`` or ``npu``.
    """

    target: str
    device: str
    precision: str
    backend_version: str
    providers: tuple[str, ...] = ()
    threads: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    device_kind: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "device": self.device,
            "device_kind": self.device_kind,
            "precision": self.precision,
            "backend_version": self.backend_version,
            "providers": list(self.providers),
            "threads": self.threads,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class ThroughputRun:
    """What :meth:`Session.run_throughput` did: per-request latencies, wall time, and how requests were issued."""

    latencies_ns: list[int]
    elapsed_s: float
    api: str  # "synchronous loop (one request at a time)", "openvino AsyncInferQueue", ...
    requests_in_flight: int
    details: Mapping[str, Any] = field(default_factory=dict)  # backend facts such as the number of streams

    def facts(self) -> dict[str, Any]:
        """``api``, ``infer_requests`` and the backend's details, as a report records them."""
        return {"api": self.api, "infer_requests": self.requests_in_flight, **self.details}


class Session(ABC):
    """A loaded model on one runtime. ``run`` validates feeds, then calls the backend's ``_infer``.

    Thread safety, a contract every runtime keeps (``tests/test_runtimes_conformance.py`` checks it): one
    session may be shared by threads, and concurrent ``run`` calls return exactly what serial calls would,
    each caller its own outputs. How is the backend's business: ONNX Runtime's ``InferenceSession.run`` is
    thread-safe itself, OpenVINO takes an infer request from a pool per call, TensorRT serializes calls on
    its one execution context. ``close`` once the runs you started have returned.
    """

    target: ClassVar[str] = ""
    capabilities: ClassVar[RuntimeCapabilities] = RuntimeCapabilities()

    def __init__(self, model: ModelRef, config: SessionConfig) -> None:
        self.model = model
        self.config = config
        self.inputs: list[TensorSpec] = list(model.inputs)
        self.outputs: list[TensorSpec] = list(model.outputs)
        self._checks = compile_feed_checks(model.inputs)
        self._names = frozenset(s.name for s in model.inputs)
        self._closed = False
        self._load()

    # -- what backends implement -------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Compile/prepare the model; raise BackendError/InputError with one clear line on failure."""

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; return outputs by name as host numpy arrays the caller owns."""

    @abstractmethod
    def info(self) -> SessionInfo:
        """What actually runs: device, effective precision, providers, versions."""

    def _close(self) -> None:  # noqa: B027 - a no-op default backends override when they hold resources
        """Release backend resources."""

    @classmethod
    def import_backend(cls) -> None:
        """Import the runtime's package as loading a model would (the bench does it before it times a load);
        a backend whose import needs care (OpenVINO's telemetry) overrides this."""
        return None

    @classmethod
    def probe(cls) -> dict[str, Any]:
        """Import the backend and report ``{"version": ..., "devices": [...]}`` for ``edgekit targets``."""
        return {}

    # -- the shared contract ------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (name -> array) and return outputs by name."""
        if self._closed:
            raise InputError(f"{self.target} session is closed")
        validate_feeds(self._checks, self._names, feeds)
        return self._infer(feeds)

    def run_throughput(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        min_requests: int,
        min_seconds: float = 0.0,
        max_requests: int | None = None,
    ) -> ThroughputRun:
        """Run ``feeds`` over and over until at least ``min_requests`` ran and ``min_seconds`` passed.

        For items/s rather than single-stream latency. This default runs one request at a time through
        :meth:`run`; a backend with an asynchronous API overrides it to keep several requests in flight.
        ``max_requests`` caps the count (``None``: no cap beyond the two minimums).
        """
        run, clock = self.run, time.perf_counter_ns
        cap = max_requests if max_requests is not None else sys.maxsize
        samples: list[int] = []
        begin = clock()
        deadline = begin + int(min_seconds * 1e9)
        while len(samples) < cap and (len(samples) < min_requests or clock() < deadline):
            t0 = clock()
            run(feeds)
            samples.append(clock() - t0)
        return ThroughputRun(samples, (clock() - begin) / 1e9, "synchronous loop (one request at a time)", 1)

    def validate(self, feeds: Mapping[str, Any]) -> None:
        """Check feeds without running them."""
        validate_feeds(self._checks, self._names, feeds)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model.path.name} on {self.target}>"
