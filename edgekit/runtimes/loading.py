"""``edgekit.load``: an artifact directory or a bare ``.onnx`` onto one runtime, as a Session.

Lives below every room (converters, benchmark and the CLI all load models through it) and depends only on
the registry and the core modules, so loading a model never imports torch or a converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.artifact import find_model
from edgekit.errors import InputError
from edgekit.runtimes import DEFAULT_TARGET, session_class
from edgekit.runtimes.base import ModelRef, Session, SessionConfig


def model_ref(model: str | Path, target: str | None = None, *, variant: str | None = None) -> ModelRef:
    """Resolve and check a model path: artifact paths confined and hashes verified, or a bare ONNX file parsed
    and checked (its external data confined to its directory).

    For an artifact with per-target variants, ``target`` picks the file that target runs best (the manifest's
    ``variants``); ``variant`` (a file name, or a mode such as ``int8`` / ``fp32``) overrides it.
    """
    onnx_path, manifest = find_model(Path(model), target, variant)  # the one path checked is the one loaded
    if manifest is not None:
        chosen = onnx_path.relative_to(Path(model)).as_posix()  # find_model's choice, not asked twice
        return ModelRef(
            path=onnx_path,
            inputs=tuple(manifest.input_specs()),
            outputs=tuple(manifest.output_specs()),
            precision=manifest.variant_precisions.get(chosen, manifest.precision),
            manifest=manifest,
        )
    if variant is not None:
        raise InputError(f"variant= needs an artifact directory; {model} is a bare model file")
    from edgekit.onnxfile import io_specs, precision_of, read_onnx

    proto = read_onnx(onnx_path)
    inputs, outputs = io_specs(proto)
    return ModelRef(path=onnx_path, inputs=tuple(inputs), outputs=tuple(outputs), precision=precision_of(proto))


def load(
    model: str | Path | ModelRef,
    target: str = DEFAULT_TARGET,
    *,
    device: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
    cache_dir: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    variant: str | None = None,
) -> Session:
    """Load ``model`` (artifact directory or ``.onnx``) on ``target`` and return a ready Session.

    ``options`` carries backend-specific settings (for example ``{"performance_hint": "THROUGHPUT"}`` for
    OpenVINO or ``{"graph_optimization_level": "basic"}`` for ONNX Runtime); unknown keys are an error.
    An artifact converted with ``--quantize`` loads the variant recorded for ``target``; ``variant`` overrides it.
    """
    if not isinstance(target, str) or not target:
        raise InputError("target must be a runtime name such as 'onnxruntime' or 'openvino'")
    cls = session_class(target)
    ref = model if isinstance(model, ModelRef) else model_ref(model, target, variant=variant)
    config = SessionConfig(
        device=device,
        threads=threads,
        precision=precision,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        options=dict(options or {}),
    )
    return cls(ref, config)
