"""The Session contract every runtime implements, and the one feed check they all share.

The shape follows Polygraphy's runners: the base validates inputs once, then calls the backend's own
``_infer``; loading and closing are explicit. Feed validation is precompiled per input so it costs a few
microseconds per call (``benchmarks/overhead.py`` measures it against the bare backend call).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import FeedError, InputError
from edgekit.specs import TensorSpec


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
    """An ONNX model ready to hand to a runtime: its file and its IO specs."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str = "fp32"
    manifest: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SessionInfo:
    """Facts about a live session, for reports: what actually runs, not what was asked."""

    target: str
    device: str
    precision: str
    backend_version: str
    providers: tuple[str, ...] = ()
    threads: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "device": self.device,
            "precision": self.precision,
            "backend_version": self.backend_version,
            "providers": list(self.providers),
            "threads": self.threads,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class _InputCheck:
    name: str
    dtype: np.dtype
    rank: int
    fixed: tuple[tuple[int, int], ...]  # (axis, size)
    symbolic: tuple[tuple[int, str], ...]  # (axis, symbol)
    spec: TensorSpec


def _compile_checks(specs: tuple[TensorSpec, ...]) -> tuple[_InputCheck, ...]:
    checks = []
    for s in specs:
        dtype = np.dtype("float32") if s.dtype == "bfloat16" else np.dtype(s.dtype)
        fixed = tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int))
        symbolic = tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, str))
        checks.append(_InputCheck(s.name, dtype, s.rank, fixed, symbolic, s))
    return tuple(checks)


def validate_feeds(checks: tuple[_InputCheck, ...], names: frozenset[str], feeds: Mapping[str, Any]) -> None:
    """Raise :class:`FeedError` naming the input and its expected spec when ``feeds`` does not fit."""
    if feeds.keys() != names:
        missing = sorted(names - feeds.keys())
        unknown = sorted(set(feeds.keys()) - names)
        expected = "; ".join(c.spec.describe() for c in checks)
        if unknown:
            raise FeedError(f"unknown input {unknown[0]!r}; the model's inputs are: {expected}")
        raise FeedError(f"missing input {missing[0]!r}; the model's inputs are: {expected}")
    seen: dict[str, tuple[int, str]] = {}
    for c in checks:
        value = feeds[c.name]
        if not isinstance(value, np.ndarray):
            raise FeedError(
                f"input {c.name!r}: expected a numpy array ({c.spec.describe()}), got {type(value).__name__}"
            )
        if value.dtype != c.dtype:
            raise FeedError(
                f"input {c.name!r}: expected dtype {c.dtype.name}, got {value.dtype.name} ({c.spec.describe()})"
            )
        shape = value.shape
        if len(shape) != c.rank:
            raise FeedError(f"input {c.name!r}: expected rank {c.rank}, got shape {list(shape)} ({c.spec.describe()})")
        for axis, size in c.fixed:
            if shape[axis] != size:
                raise FeedError(
                    f"input {c.name!r}: dim {axis} must be {size}, got shape {list(shape)} ({c.spec.describe()})"
                )
        for axis, sym in c.symbolic:
            size = shape[axis]
            if size == 0:
                raise FeedError(f"input {c.name!r}: dim {axis} ({sym}) is empty, got shape {list(shape)}")
            prev = seen.get(sym)
            if prev is None:
                seen[sym] = (size, c.name)
            elif prev[0] != size:
                raise FeedError(f"input {c.name!r}: dim {sym!r} is {size} but input {prev[1]!r} has {sym}={prev[0]}")


class Session(ABC):
    """A loaded model on one runtime. ``run`` validates feeds, then calls the backend's ``_infer``."""

    target: ClassVar[str] = ""

    def __init__(self, model: ModelRef, config: SessionConfig) -> None:
        self.model = model
        self.config = config
        self.inputs: list[TensorSpec] = list(model.inputs)
        self.outputs: list[TensorSpec] = list(model.outputs)
        self._checks = _compile_checks(model.inputs)
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
