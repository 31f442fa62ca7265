"""edgekit: compress PyTorch models, export them to ONNX with proof, run and time them on edge runtimes.

``import edgekit`` is light: the public functions resolve their modules on first use, and nothing here
imports torch, openvino or tensorrt (or onnxruntime) until a function needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgekit._version import __version__

_LAZY: dict[str, str] = {
    "load": "edgekit.runtimes.loading",
    "convert": "edgekit.converters.pipeline",
    "convert_recipe": "edgekit.converters.replay",
    "bench": "edgekit.benchmark",
    "available_targets": "edgekit.runtimes",
    "TensorSpec": "edgekit.specs",
    "Session": "edgekit.runtimes.base",
    "Manifest": "edgekit.artifact",
    "ExportOptions": "edgekit.converters.export",
    "QuantizeRequest": "edgekit.converters.quantize.variants",
    "CompressRequest": "edgekit.converters.compress",
    "Embedder": "edgekit.runtimes.embedder",
}
_ERRORS = (
    "EdgekitError",
    "InputError",
    "SourceError",
    "ModelFormatError",
    "ArtifactError",
    "FeedError",
    "UnknownTargetError",
    "RuntimeUnavailableError",
    "OutputError",
    "RemoteError",
    "ExportError",
    "ValidationError",
    "BackendError",
)

if TYPE_CHECKING:
    from edgekit.benchmark import bench as bench
    from edgekit.converters.compress_request import CompressRequest as CompressRequest
    from edgekit.converters.export import ExportOptions as ExportOptions
    from edgekit.converters.pipeline import convert as convert
    from edgekit.converters.quantize.variants import QuantizeRequest as QuantizeRequest
    from edgekit.converters.replay import convert_recipe as convert_recipe
    from edgekit.errors import *  # noqa: F403
    from edgekit.runtimes import available_targets as available_targets
    from edgekit.runtimes.base import Session as Session
    from edgekit.runtimes.embedder import Embedder as Embedder
    from edgekit.runtimes.loading import load as load
    from edgekit.specs import TensorSpec as TensorSpec


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        return getattr(importlib.import_module("edgekit.errors"), name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_ERRORS])


__all__ = ["__version__", *_LAZY, *_ERRORS]
