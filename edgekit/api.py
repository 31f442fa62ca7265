"""``edgekit.load``: an artifact directory or a bare ``.onnx`` onto one runtime, as a Session."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import atomic_write, find_model, variant_for
from edgekit.errors import InputError
from edgekit.runtimes import session_class
from edgekit.runtimes.base import ModelRef, Session, SessionConfig, SessionInfo
from edgekit.specs import random_feeds, read_feed_files


def model_ref(model: str | Path, target: str | None = None, *, variant: str | None = None) -> ModelRef:
    """Resolve and check a model path: artifact hashes verified, or a bare ONNX file parsed and checked.

    For an artifact with per-target variants, ``target`` picks the file that target runs best (the manifest's
    ``variants``); ``variant`` (a file name, or a mode such as ``int8`` / ``fp32``) overrides it.
    """
    onnx_path, manifest = find_model(Path(model))
    if manifest is not None:
        chosen = variant_for(manifest, target, variant)
        return ModelRef(
            path=onnx_path.parent / chosen,
            inputs=tuple(manifest.input_specs()),
            outputs=tuple(manifest.output_specs()),
            precision=manifest.variant_precisions.get(chosen, manifest.precision),
            manifest=manifest.model_dump(),
        )
    if variant is not None:
        raise InputError(f"variant= needs an artifact directory; {model} is a bare model file")
    from edgekit.onnxfile import io_specs, precision_of, read_onnx

    proto = read_onnx(onnx_path)
    inputs, outputs = io_specs(proto)
    return ModelRef(path=onnx_path, inputs=tuple(inputs), outputs=tuple(outputs), precision=precision_of(proto))


def load(
    model: str | Path | ModelRef,
    target: str = "onnxruntime",
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


def random_feeds_for(ref: ModelRef, dims: Mapping[str, int] | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``ref`` at the dim sizes and integer ranges its artifact recorded; ``dims`` overrides.

    An artifact of a text model records its token-id range, so random ids stay inside the vocabulary and the
    run exercises the model as real text would.
    """
    manifest = ref.manifest or {}
    ranges = {k: (int(v[0]), int(v[1])) for k, v in manifest.get("extras", {}).get("int_ranges", {}).items()}
    recorded = {k: int(v) for k, v in manifest.get("dynamic_dims", {}).items()}
    return random_feeds(ref.inputs, {**recorded, **(dims or {})}, seed=seed, int_range=ranges)


@dataclass(frozen=True)
class RunResult:
    """One run of a model: what went in, what came out, how long the call took and what actually ran it."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    seconds: float
    info: SessionInfo

    def write_npz(self, path: str | Path) -> Path:
        """Save the outputs by name, atomically: an interrupted write never leaves a partial file."""
        return atomic_write(Path(path), lambda f: np.savez(f, **self.outputs))


def run_once(
    model: str | Path | ModelRef,
    target: str = "onnxruntime",
    feeds: Mapping[str, np.ndarray | str | Path] | None = None,
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> RunResult:
    """Run ``model`` once on ``target`` and time that one call (loading and feed checks excluded).

    A feed given as a path is read as a ``.npy`` file. Without feeds the inputs are random
    (:func:`random_feeds_for`, sized by ``dims``), so any model can be tried on a device with nothing but the
    artifact. One call is a smoke test, not a measurement: ``edgekit.bench`` is the measurement.
    """
    ref = model if isinstance(model, ModelRef) else model_ref(model, target)
    given = dict(feeds or {})
    files = read_feed_files({k: v for k, v in given.items() if isinstance(v, str | Path)})
    arrays = {k: files[k] if k in files else np.asarray(v) for k, v in given.items()}
    if not arrays:
        arrays = random_feeds_for(ref, dims, seed=seed)
    with load(ref, target=target, device=device, threads=threads, precision=precision) as session:
        session.validate(arrays)
        start = time.perf_counter()
        outputs = session.run(arrays)
        seconds = time.perf_counter() - start
        info = session.info()
    return RunResult(inputs=arrays, outputs=outputs, seconds=seconds, info=info)
