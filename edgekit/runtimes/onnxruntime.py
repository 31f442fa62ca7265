"""ONNX Runtime backend: CPU by default, CUDA/TensorRT/OpenVINO execution providers when the build has them.

Thread safety: ``InferenceSession.run`` is documented thread-safe, and the session adds no state a run
changes, so threads share one session without a lock; concurrent runs give the serial results.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BackendError, InputError, ModelFormatError, RuntimeUnavailableError
from edgekit.runtimes.base import RuntimeCapabilities, Session, SessionInfo, device_kind_of

_DEVICE_PROVIDERS: dict[str, tuple[str, str]] = {
    # device -> (execution provider, package that brings it)
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu (and TensorRT)"),
    "openvino": ("OpenVINOExecutionProvider", "onnxruntime-openvino"),
}
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}
_OPT_LEVELS["all"] = "ORT_ENABLE_ALL"
OPTION_KEYS = frozenset(
    {"providers", "graph_optimization_level", "allow_spinning", "inter_op_threads", "log_severity_level"}
)


def providers_for(device: str | None, available: list[str]) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers for a device string (``cpu``, ``cuda[:N]``, ``tensorrt[:N]``, ``openvino``)."""
    kind, _, index = (device or "cpu").lower().partition(":")
    if kind not in _DEVICE_PROVIDERS:
        raise InputError(f"onnxruntime: unknown device {device!r}; expected one of: {', '.join(_DEVICE_PROVIDERS)}")
    provider, package = _DEVICE_PROVIDERS[kind]
    if provider not in available:
        raise RuntimeUnavailableError(
            f"onnxruntime: {provider} is not in this build (has {', '.join(available)}); install {package}"
        )
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    chain: list[str | tuple[str, dict[str, Any]]] = []
    opts: dict[str, Any] = {"device_id": int(index)} if index.isdigit() else {}
    chain.append((provider, opts) if opts else provider)
    if kind == "tensorrt" and "CUDAExecutionProvider" in available:
        chain.append(("CUDAExecutionProvider", opts) if opts else "CUDAExecutionProvider")
    chain.append("CPUExecutionProvider")
    return chain


@cache
def physical_core_count() -> int:
    """Physical cores of this machine: ONNX Runtime's default intra-op thread count.

    ORT sizes its default pool from the machine's cores (cpuinfo), not from the process's CPU affinity;
    measured here, a process pinned to one of two cores still got a pool of two. SMT siblings count once.
    """
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            continue
    return len(cores) or os.cpu_count() or 1


class OnnxRuntimeSession(Session):
    """An ``onnxruntime.InferenceSession``; reports the providers ONNX Runtime actually assigned."""

    target = "onnxruntime"
    capabilities = RuntimeCapabilities(device_kinds=("cpu", "gpu"))

    def _load(self) -> None:
        import onnxruntime as ort

        opts = dict(self.config.options)
        unknown = set(opts) - OPTION_KEYS
        if unknown:
            raise InputError(f"onnxruntime: unknown option {sorted(unknown)[0]!r}; accepted: {sorted(OPTION_KEYS)}")
        requested = self.config.precision
        if requested is not None and _family(requested) != _family(self.model.precision):
            raise InputError(
                f"onnxruntime runs the precision stored in the graph ({self.model.precision}), not {requested!r};"
                " convert with `edgekit convert --quantize ...` to change it"
            )
        so = ort.SessionOptions()
        # ORT's own C++ log would print failures a second time, unformatted; edgekit raises them as one line
        so.log_severity_level = int(opts.get("log_severity_level", 4))
        if self.config.threads is not None:
            so.intra_op_num_threads = self.config.threads
        if "inter_op_threads" in opts:
            so.inter_op_num_threads = int(opts["inter_op_threads"])
        level = str(opts.get("graph_optimization_level", "all"))
        if level not in _OPT_LEVELS:
            raise InputError(f"onnxruntime: graph_optimization_level must be one of {sorted(_OPT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
        if "allow_spinning" in opts:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts["allow_spinning"] else "0")
        providers = opts.get("providers") or providers_for(self.config.device, ort.get_available_providers())
        try:
            self._sess = ort.InferenceSession(str(self.model.path), sess_options=so, providers=providers)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "INVALID_PROTOBUF" in message or "INVALID_GRAPH" in message:
                raise ModelFormatError(f"onnxruntime cannot load {self.model.path}: {message}") from exc
            raise BackendError(f"onnxruntime failed to load {self.model.path.name}: {message}") from exc
        self._output_names = [o.name for o in self._sess.get_outputs()]
        self._level = level
        self._version = ort.__version__

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._sess.run(self._output_names, feeds if isinstance(feeds, dict) else dict(feeds))
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {str(exc).strip().splitlines()[0]}") from exc
        return dict(zip(self._output_names, values, strict=True))

    def effective_threads(self) -> tuple[int, str]:
        """The intra-op thread count ONNX Runtime runs with, and where that number comes from."""
        configured = int(self._sess.get_session_options().intra_op_num_threads)
        if configured > 0:
            return configured, "session options"
        return physical_core_count(), "ONNX Runtime default: one per physical core"

    def info(self) -> SessionInfo:
        providers = tuple(self._sess.get_providers())
        device = "cpu" if providers[0] == "CPUExecutionProvider" else (self.config.device or providers[0])
        threads, source = self.effective_threads()
        return SessionInfo(
            target=self.target,
            device=device,
            device_kind=self._device_kind(providers[0]),
            precision=self.model.precision,
            backend_version=self._version,
            providers=providers,
            threads=threads,
            details={"graph_optimization_level": self._level, "threads_from": source},
        )

    def _device_kind(self, provider: str) -> str:
        if provider == "OpenVINOExecutionProvider":  # its device comes from the provider's own options
            options = self._sess.get_provider_options().get(provider, {})
            return device_kind_of(str(options.get("device_type", "CPU")))
        return device_kind_of(provider.removesuffix("ExecutionProvider"))

    def _close(self) -> None:
        del self._sess

    @classmethod
    def probe(cls) -> dict[str, Any]:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        devices = [d for d, (p, _) in _DEVICE_PROVIDERS.items() if p in providers]
        return {"version": ort.__version__, "devices": devices, "note": "providers: " + ", ".join(providers)}


def _family(precision: str) -> str:
    p = precision.lower()
    return {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16"}.get(p, p)
