"""cuda-python's runtime API as the TensorRT session uses it: checked calls, the session's GPU made current
around its work, and what a session holds on its GPU kept apart from the session so a finalizer can free it.

The runtime API's current device is per thread and process-wide state other code changes (torch, another
session on ``cuda:1``): a session that only set its device once at load would allocate and launch on
whatever device the calling thread has current. :func:`on_device` makes the session's device current for
a block and gives the caller its own back afterwards.

NOT RUN ON HARDWARE: written against cuda-python's documented ``cudart`` call shapes (``(err, *values)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import BackendError, RuntimeUnavailableError

log = logging.getLogger(__name__)


def import_cudart() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (12.6+), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise RuntimeUnavailableError(f"cuda-python failed to import ({exc}); pip install cuda-python") from exc
    return cudart


def check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cudart ``(err, *values)`` tuple; a non-success error becomes a one-line BackendError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise BackendError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_facts(cudart: Any, index: int) -> tuple[str, tuple[int, int]]:
    """Name and compute capability of GPU ``index``."""
    prop = check(cudart, cudart.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = prop.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return name.split("\x00", 1)[0].strip(), (int(prop.major), int(prop.minor))


@contextmanager
def on_device(cudart: Any, index: int) -> Iterator[None]:
    """GPU ``index`` current on this thread for the block; the thread's previous device current again after."""
    previous = int(check(cudart, cudart.cudaGetDevice(), "cudaGetDevice"))
    if previous != index:
        check(cudart, cudart.cudaSetDevice(index), f"cudaSetDevice({index})")
    try:
        yield
    finally:
        if previous != index:
            cudart.cudaSetDevice(previous)  # best effort: an error here must not hide the block's own


@dataclass(eq=False)
class DeviceState:
    """What one session holds on its GPU. Never refers to the session, so a finalizer can own it."""

    cudart: Any
    index: int
    buffers: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (device pointer, capacity)
    stream: Any = None
    runtime: Any = None  # TensorRT objects live here too, so they go before the memory they point at
    engine: Any = None
    context: Any = None

    def buffer(self, name: str, nbytes: int) -> int:
        """A device pointer with at least ``nbytes`` for tensor ``name``; grows (never shrinks) across runs."""
        ptr, capacity = self.buffers.get(name, (0, 0))
        if nbytes <= capacity:
            return ptr
        if ptr:
            check(self.cudart, self.cudart.cudaFree(ptr), "cudaFree")
            del self.buffers[name]
        size = max(nbytes, 1)
        ptr = int(check(self.cudart, self.cudart.cudaMalloc(size), f"cudaMalloc({nbytes}) for {name!r}"))
        self.buffers[name] = (ptr, size)
        return ptr


def release(state: DeviceState) -> None:
    """Free what ``state`` holds on its own GPU, TensorRT objects first; a second call does nothing.

    Called by ``close()`` and by the session's ``weakref.finalize`` when it is collected unclosed, so it
    never raises: a failure is logged.
    """
    cudart = state.cudart
    try:
        with on_device(cudart, state.index):
            if state.stream is not None:
                cudart.cudaStreamSynchronize(state.stream)
            state.context = state.engine = state.runtime = None
            for ptr, _ in state.buffers.values():
                cudart.cudaFree(ptr)
            state.buffers.clear()
            if state.stream is not None:
                cudart.cudaStreamDestroy(state.stream)
                state.stream = None
    except Exception as exc:  # a finalizer has nobody to raise to
        log.warning("freeing a TensorRT session's memory on cuda:%d failed: %s", state.index, exc)
