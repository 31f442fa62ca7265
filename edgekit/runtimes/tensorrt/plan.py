"""What a TensorRT engine is built for and where it is kept: decisions that need neither TensorRT nor a GPU.

What lives here: the optimization profile (min/opt/max shape per input) derived from TensorSpecs, the
engine and timing cache keys and paths, and the option parsing of ``TensorRTSession``. Which precision,
network and builder flags to use on TensorRT 10 versus 11, and the dtype names, are in
:mod:`edgekit.runtimes.tensorrt.precision`.

Default profile ranges for symbolic dims (override per symbol with ``dims``, per input with ``profile``):

- ``batch`` / ``batch_size``: min 1, opt 1, max 32 (edge inference is mostly one query at a time);
- any other symbol (``seq``, ``height``, exporter names such as ``x_dim0``): min 1, opt 128, max 512.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import FeedError, InputError
from edgekit.specs import TensorSpec

Shape = tuple[int, ...]
DimRange = tuple[int, int, int]
ProfileEntry = tuple[Shape, Shape, Shape]
Profile = dict[str, ProfileEntry]

BATCH_SYMBOLS: frozenset[str] = frozenset({"batch", "batch_size"})
DEFAULT_BATCH_RANGE: DimRange = (1, 1, 32)
DEFAULT_DIM_RANGE: DimRange = (1, 128, 512)
DEFAULT_WORKSPACE_BYTES = 1 << 30  # 1 GiB: enough for small and mid-size models; TensorRT uses less if it can
PLAN_FORMAT = 2  # bump when what goes into a plan changes in a way the key does not capture
# 2: TF32 is cleared unless asked for; format-1 "fp32" plans were built with TensorRT's default TF32 on

# ---------------------------------------------------------------------------------------------- profile


def default_dim_range(symbol: str) -> DimRange:
    """The documented default (min, opt, max) for a symbolic dim: batch-like symbols differ from the rest."""
    return DEFAULT_BATCH_RANGE if symbol in BATCH_SYMBOLS else DEFAULT_DIM_RANGE


def checked_range(what: str, value: Any) -> DimRange:
    """``value`` as (min, opt, max) positive ints with min <= opt <= max, else one-line InputError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise InputError(f"{what}: expected (min, opt, max), got {value!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise InputError(f"{what}: min, opt and max must be integers, got {value!r}")
    lo, opt, hi = (int(v) for v in value)
    if lo < 1:
        raise InputError(f"{what}: sizes must be positive, got {list(value)}")
    if not lo <= opt <= hi:
        raise InputError(f"{what}: need min <= opt <= max, got {list(value)}")
    return lo, opt, hi


def _symbols(specs: Sequence[TensorSpec]) -> set[str]:
    return {d for s in specs for d in s.shape if isinstance(d, str)}


def _spec_profile(spec: TensorSpec, ranges: Mapping[str, DimRange]) -> ProfileEntry:
    lo, opt, hi = [], [], []
    for d in spec.shape:
        r = (d, d, d) if isinstance(d, int) else ranges[d]
        lo.append(r[0])
        opt.append(r[1])
        hi.append(r[2])
    return tuple(lo), tuple(opt), tuple(hi)


def _checked_override(spec: TensorSpec, value: Any) -> ProfileEntry:
    what = f"profile for input {spec.name!r}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise InputError(f"{what}: expected (min_shape, opt_shape, max_shape), got {value!r}")
    shapes = []
    for label, shape in zip(("min", "opt", "max"), value, strict=True):
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != spec.rank:
            raise InputError(f"{what}: {label} shape {shape!r} must have rank {spec.rank} ({spec.describe()})")
        shapes.append(shape)
    out: list[list[int]] = [[], [], []]
    for axis, dim in enumerate(spec.shape):
        lo, opt, hi = checked_range(f"{what}, dim {axis}", [s[axis] for s in shapes])
        if isinstance(dim, int) and (lo, opt, hi) != (dim, dim, dim):
            raise InputError(f"{what}: dim {axis} is fixed at {dim}, got {[lo, opt, hi]} ({spec.describe()})")
        for k, v in enumerate((lo, opt, hi)):
            out[k].append(v)
    return tuple(out[0]), tuple(out[1]), tuple(out[2])


def profile_shapes(
    specs: Sequence[TensorSpec],
    dims: Mapping[str, Sequence[int]] | None = None,
    overrides: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> Profile:
    """One optimization profile: input name -> (min, opt, max) shapes.

    Symbolic dims take ``dims[symbol]`` when given, else :func:`default_dim_range`; ``overrides[name]``
    replaces a whole input's shapes. Fixed dims never change. Unknown symbols or inputs are an error, so a
    typo does not silently fall back to a default.
    """
    dims = dims or {}
    overrides = overrides or {}
    known_symbols = _symbols(specs)
    for symbol in dims:
        if symbol not in known_symbols:
            shown = ", ".join(sorted(known_symbols)) or "none"
            raise InputError(f"dims: the model has no symbolic dim {symbol!r}; its symbolic dims: {shown}")
    names = [s.name for s in specs]
    for name in overrides:
        if name not in names:
            raise InputError(f"profile: the model has no input {name!r}; its inputs: {', '.join(names)}")
    ranges = {
        sym: checked_range(f"dims[{sym!r}]", dims[sym]) if sym in dims else default_dim_range(sym)
        for sym in known_symbols
    }
    return {
        s.name: _checked_override(s, overrides[s.name]) if s.name in overrides else _spec_profile(s, ranges)
        for s in specs
    }


def check_shapes_in_profile(profile: Mapping[str, ProfileEntry], shapes: Mapping[str, Shape]) -> None:
    """Raise :class:`FeedError` when a feed shape lies outside the profile the engine was built for."""
    for name, shape in shapes.items():
        entry = profile.get(name)
        if entry is None:
            continue
        lo, _, hi = entry
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi, strict=True)):
            raise FeedError(
                f"input {name!r}: shape {list(shape)} is outside the engine's profile "
                f"min {list(lo)} .. max {list(hi)}; rebuild with options={{'profile': ...}} or {{'dims': ...}}"
            )


# ---------------------------------------------------------------------------------------------- caches


def canonical_json(value: Mapping[str, Any]) -> str:
    """Sorted, compact JSON: equal options give equal text whatever their insertion order."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"build options must be JSON values with string keys: {exc}") from exc


def timing_cache_key(trt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> str:
    """Key of the timing cache: TensorRT version and GPU only, so every model on that pair shares it."""
    text = canonical_json({"trt": trt_version, "gpu": gpu_name, "cc": list(compute_capability)})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def engine_cache_key(
    model_sha256: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    build_options: Mapping[str, Any],
) -> str:
    """Hex digest naming one engine: any change in model, TensorRT, GPU or build options changes it."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", model_sha256):
        raise InputError(f"model_sha256 must be 64 hex characters, got {model_sha256!r}")
    if not trt_version or not gpu_name:
        raise InputError("engine cache key needs a TensorRT version and a GPU name")
    text = canonical_json(
        {
            "format": PLAN_FORMAT,
            "model": model_sha256.lower(),
            "trt": trt_version,
            "gpu": gpu_name,
            "cc": [int(c) for c in compute_capability],
            "options": dict(build_options),
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgekit/tensorrt``, i.e. ``~/.cache/edgekit/tensorrt`` by default."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgekit" / "tensorrt"


def cache_paths(cache_dir: Path | str, key: str, timing_key: str) -> tuple[Path, Path]:
    """``(plan_path, timing_cache_path)`` under ``cache_dir``; keys must be hex so they cannot escape it."""
    for label, k in (("key", key), ("timing_key", timing_key)):
        if not re.fullmatch(r"[0-9a-f]{16,64}", k):
            raise InputError(f"cache {label} must be a lowercase hex digest, got {k!r}")
    root = Path(cache_dir).expanduser()
    return root / f"engine-{key}.plan", root / f"timing-{timing_key}.cache"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place: no half-written cache."""
    from edgekit.artifact import atomic_write

    atomic_write(path, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------- options

OPTION_KEYS = ("workspace_bytes", "profile", "dims", "strongly_typed")


@dataclass(frozen=True)
class TensorRTOptions:
    """``SessionConfig.options`` as understood by the TensorRT runtime."""

    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    profile: Mapping[str, Any] = field(default_factory=dict)
    dims: Mapping[str, Any] = field(default_factory=dict)
    strongly_typed: bool | None = None


def parse_options(options: Mapping[str, Any]) -> TensorRTOptions:
    """Check option keys and value types; unknown keys are an InputError listing the accepted ones.

    The message has the shape every runtime uses (``<target>: unknown option 'x'; accepted: ...``), which the
    conformance suite checks."""
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InputError(f"tensorrt: unknown option {unknown[0]!r}; accepted: {', '.join(OPTION_KEYS)}")
    workspace = options.get("workspace_bytes", DEFAULT_WORKSPACE_BYTES)
    if isinstance(workspace, bool) or not isinstance(workspace, int) or workspace < 1:
        raise InputError(f"workspace_bytes must be a positive integer, got {workspace!r}")
    typed = options.get("strongly_typed")
    if typed is not None and not isinstance(typed, bool):
        raise InputError(f"strongly_typed must be true or false, got {typed!r}")
    for key in ("profile", "dims"):
        if not isinstance(options.get(key, {}), Mapping):
            raise InputError(f"{key} must be a mapping, got {type(options[key]).__name__}")
    return TensorRTOptions(
        workspace_bytes=workspace,
        profile=dict(options.get("profile", {})),
        dims=dict(options.get("dims", {})),
        strongly_typed=typed,
    )


def cuda_device_index(device: str | None) -> int:
    """``None``/``"cuda"`` -> 0, ``"cuda:N"`` -> N; anything else is an InputError."""
    if device is None:
        return 0
    m = re.fullmatch(r"\s*cuda(?::(\d+))?\s*", str(device).lower())
    if not m:
        raise InputError(f"tensorrt runs on NVIDIA GPUs: device must be 'cuda' or 'cuda:N', got {device!r}")
    return int(m.group(1) or 0)


def parser_error_line(path_name: str, messages: Sequence[str]) -> str:
    """One line for ONNX parser failures: the first error, and how many more there were."""
    if not messages:
        return f"TensorRT could not parse {path_name} (no parser error reported)"
    first = " ".join(str(messages[0]).split())
    more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
    return f"TensorRT could not parse {path_name}: {first}{more}"
