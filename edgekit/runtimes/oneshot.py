"""One run of a model with whatever inputs are at hand: what ``edgekit run`` does, as a library call."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.artifact import atomic_write
from edgekit.errors import InputError
from edgekit.runtimes import DEFAULT_TARGET
from edgekit.runtimes.base import ModelRef, SessionInfo
from edgekit.runtimes.loading import load, model_ref
from edgekit.specs import random_feeds, read_feed_files


def random_feeds_for(ref: ModelRef, dims: Mapping[str, int] | None = None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for ``ref`` at the dim sizes and integer ranges its artifact recorded; ``dims`` overrides.

    An artifact of a text model records its token-id range, so random ids stay inside the vocabulary and the
    run exercises the model as real text would.
    """
    symbols = {d for s in ref.inputs for d in s.shape if isinstance(d, str)}
    unknown = sorted(set(dims or {}) - symbols)
    if unknown:
        known = ", ".join(sorted(symbols)) or "none: every dim is fixed"
        raise InputError(f"the model has no dim {unknown[0]!r} (its symbolic dims: {known})")
    manifest = ref.manifest
    ranges = dict(manifest.int_ranges) if manifest is not None else {}
    recorded = dict(manifest.dynamic_dims) if manifest is not None else {}
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
    target: str = DEFAULT_TARGET,
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
    if seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
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
