"""TensorSpec: the one description of a model input or output that every stage shares, and the feed checks.

A dim is an ``int`` when fixed and a ``str`` (``"batch"``, ``"seq"``) when symbolic. The dtype is a numpy
name (``"float32"``, ``"int64"``), so specs serialize to JSON and compare without importing a runtime.

The feed checks live here, not in a runtime, so every Session and every stage that takes feed dicts
(calibration, distillation) rejects the same bad feeds with the same message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import FeedError, InputError, one_line

Dim = int | str

# ONNX TensorProto element types <-> numpy names (kept here so onnx is not needed to read a spec).
ONNX_TO_NUMPY: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
}
NUMPY_TO_ONNX: dict[str, int] = {v: k for k, v in ONNX_TO_NUMPY.items()}
_DTYPE_ALIASES = {
    "float": "float32",
    "fp32": "float32",
    "f32": "float32",
    "half": "float16",
    "fp16": "float16",
    "f16": "float16",
    "double": "float64",
    "long": "int64",
    "int": "int32",
    "i64": "int64",
    "i32": "int32",
}


def canonical_dtype(name: str) -> str:
    """Return the numpy name for a dtype given as numpy name, ONNX-ish alias or torch name."""
    key = str(name).strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in NUMPY_TO_ONNX:
        known = ", ".join(sorted(NUMPY_TO_ONNX))
        raise InputError(f"unknown dtype {name!r}; expected one of: {known}")
    return key


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape (ints fixed, strings symbolic) of one model input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def symbolic_dims(self) -> dict[int, str]:
        """Axis index -> symbol for every dim that is not fixed."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with every symbolic dim replaced by its size in ``dims``."""
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
            elif d in dims:
                out.append(int(dims[d]))
            else:
                raise InputError(f"input {self.name!r}: no size given for dim {d!r} (use --dim {d}=N)")
        return tuple(out)

    def describe(self) -> str:
        """``name: dtype[d0, d1]``, the form used in error messages and tables."""
        return f"{self.name}: {self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """A spec as stored in a manifest: data that may be damaged, so every field is checked."""
        if not isinstance(data, Mapping) or not all(isinstance(data.get(k), str) for k in ("name", "dtype")):
            raise InputError(f"bad tensor spec {_clipped(data)}: needs a name and a dtype (strings) and a shape")
        shape = data.get("shape")
        if not isinstance(shape, list | tuple):
            raise InputError(f"bad tensor spec {data['name']!r}: shape must be a list, got {_clipped(shape)}")
        for d in shape:
            if isinstance(d, bool) or not ((isinstance(d, int) and d > 0) or (isinstance(d, str) and d)):
                raise InputError(f"bad tensor spec {data['name']!r}: dims are positive ints or names, got {d!r}")
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(shape))


def _clipped(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SPEC_RE = re.compile(r"^\s*([^:\s]+)\s*:\s*([A-Za-z0-9_.]+)\s*\[([^\]]*)\]\s*$")


def parse_specs(texts: Sequence[str]) -> list[TensorSpec]:
    """``--input`` specs, each name once."""
    specs = [parse_spec(t) for t in texts]
    seen = [s.name for s in specs]
    twice = next((n for n in seen if seen.count(n) > 1), None)
    if twice is not None:
        raise InputError(f"--input {twice} is given twice")
    return specs


def parse_spec(text: str) -> TensorSpec:
    """Parse ``NAME:DTYPE[DIM,...]`` (dims are ints or symbols), as given to ``--input``."""
    m = _SPEC_RE.match(text)
    if not m:
        raise InputError(f"bad input spec {text!r}; expected NAME:DTYPE[DIM,...], e.g. x:float32[batch,3,224,224]")
    name, dtype, dims_text = m.groups()
    dims: list[Dim] = []
    for raw in (p.strip() for p in dims_text.split(",")):
        if not raw:
            continue
        if raw.lstrip("-").isdigit():
            if int(raw) <= 0:
                raise InputError(f"bad input spec {text!r}: fixed dims must be positive")
            dims.append(int(raw))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", raw):
            dims.append(raw)
        else:
            raise InputError(f"bad dim {raw!r} in input spec {text!r}")
    return TensorSpec(name=name, dtype=dtype, shape=tuple(dims))


def parse_dim_sizes(items: Sequence[str]) -> dict[str, int]:
    """Parse ``NAME=SIZE`` items (``--dim``) into a dict."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not name or not re.fullmatch(r"[0-9]+", value) or int(value) <= 0:
            raise InputError(f"bad dim size {item!r}; expected NAME=SIZE with SIZE a positive integer")
        if name in out:
            raise InputError(f"--dim {name} is given twice")
        out[name] = int(value)
    return out


DEFAULT_DIM_SIZES: dict[str, int] = {"batch": 1, "seq": 16}


def random_feeds(
    specs: Sequence[TensorSpec],
    dims: Mapping[str, int] | None = None,
    *,
    seed: int = 0,
    int_range: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs matching ``specs``; symbolic dims take ``dims``, else a default (batch 1, others 16).

    Integer inputs draw from ``int_range[name]`` (inclusive) when given, else [0, 100].
    """
    rng = np.random.default_rng(seed)
    sizes = {**DEFAULT_DIM_SIZES, **(dims or {})}
    planned = {s.name: (tuple(d if isinstance(d, int) else sizes.get(d, 16) for d in s.shape), _host_dtype(s))
               for s in specs}  # fmt: skip
    check_feeds_fit_memory(planned)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape, dtype = planned[spec.name]
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            lo, hi = (int_range or {}).get(spec.name, (0, 100))
            feeds[spec.name] = rng.integers(lo, hi + 1, shape).astype(dtype)
    return feeds


def _host_dtype(spec: TensorSpec) -> np.dtype:
    """numpy has no bfloat16: such inputs are fed as float32."""
    return np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")


def check_feeds_fit_memory(planned: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Refuse feeds that cannot fit in the memory available now, before allocating any (a MemoryError or the
    OOM killer is no message). The model needs memory too; this only rules out the impossible."""
    need = {name: int(np.prod(shape, dtype=object)) * dtype.itemsize for name, (shape, dtype) in planned.items()}
    available = available_memory_bytes()
    if available is None or sum(need.values()) <= available:
        return
    name = max(need, key=lambda n: need[n])
    shape, dtype = planned[name]
    raise FeedError(
        f"inputs need {sum(need.values()) / 2**30:.1f} GiB ({name!r} alone is {list(shape)} {dtype.name}, "
        f"{need[name] / 2**30:.1f} GiB) but {available / 2**30:.1f} GiB of memory is available; use smaller --dim sizes"
    )


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def read_feed_files(files: Mapping[str, str | Path]) -> dict[str, np.ndarray]:
    """Feeds from ``.npy`` files, one per input name; never unpickled, since a feed file is data, not code."""
    return {name: read_npy(Path(path)) for name, path in files.items()}


def read_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array, checked before it is read: a regular file whose header promises no more data than the
    file holds (a 30-byte file claiming 29 TiB is refused, not allocated) and no objects (never unpickled)."""
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if not path.is_file():
        raise InputError(f"input {path} is {'a directory' if path.is_dir() else 'not a regular file'}")
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise InputError(f"{path} is an .npz archive; --input takes one .npy file per input")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            header_end = f.tell()
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a .npy array (empty or truncated?): {one_line(exc)}") from None
    if dtype.hasobject:
        raise InputError(f"{path} holds Python objects; edgekit never unpickles input files")
    if header_end + int(np.prod(shape, dtype=object)) * dtype.itemsize > path.stat().st_size:
        raise InputError(f"{path} is truncated: its header promises {list(shape)} {dtype} but the file is shorter")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a .npy array: {one_line(exc)}") from None


def specs_from_onnx_values(values: Sequence[Any]) -> list[TensorSpec]:
    """TensorSpecs from ONNX ``ValueInfoProto`` entries (graph inputs or outputs)."""
    specs = []
    for i, v in enumerate(values):
        t = v.type.tensor_type
        dims: list[Dim] = []
        for j, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(f"{v.name}_dim{j}")
        dtype = ONNX_TO_NUMPY.get(t.elem_type)
        if dtype is None:
            raise InputError(f"tensor {v.name!r} (#{i}) has unsupported ONNX element type {t.elem_type}")
        specs.append(TensorSpec(name=v.name, dtype=dtype, shape=tuple(dims)))
    return specs


# ------------------------------------------------------------------------------------------ feed checks


@dataclass(frozen=True)
class InputCheck:
    """One input's spec compiled for fast checking: the numpy dtype object and fixed/symbolic axes split out."""

    name: str
    dtype: np.dtype
    rank: int
    fixed: tuple[tuple[int, int], ...]  # (axis, size)
    symbolic: tuple[tuple[int, str], ...]  # (axis, symbol)
    spec: TensorSpec


def compile_feed_checks(specs: Sequence[TensorSpec]) -> tuple[InputCheck, ...]:
    """Checks for ``specs``, compiled once so that checking a feed dict costs microseconds per call."""
    checks = []
    for s in specs:
        dtype = np.dtype("float32") if s.dtype == "bfloat16" else np.dtype(s.dtype)
        fixed = tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int))
        symbolic = tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, str))
        checks.append(InputCheck(s.name, dtype, s.rank, fixed, symbolic, s))
    return tuple(checks)


def validate_feeds(checks: tuple[InputCheck, ...], names: frozenset[str], feeds: Mapping[str, Any]) -> None:
    """Raise :class:`FeedError` naming the input and its expected spec when ``feeds`` does not fit.

    ``checks`` come from :func:`compile_feed_checks` and ``names`` is the set of their names; both are made
    once per model so that this, which runs before every inference, does no setup work.
    """
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


def check_feeds_fit(specs: Sequence[TensorSpec], feeds: Mapping[str, Any]) -> None:
    """One-off form of :func:`validate_feeds` for code outside the inference hot path (calibration data)."""
    validate_feeds(compile_feed_checks(specs), frozenset(s.name for s in specs), feeds)
