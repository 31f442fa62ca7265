"""The Session contract every runtime implements; the one feed check they all share is in :mod:`edgekit.specs`.

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

from edgekit.errors import InputError
from edgekit.specs import TensorSpec, compile_feed_checks, validate_feeds


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


class Session(ABC):
    """A loaded model on one runtime. ``run`` validates feeds, then calls the backend's ``_infer``."""

    target: ClassVar[str] = ""

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
