"""Runtime registry: find a backend by name, know whether it is installed without importing it.

Built-in backends live one module each in this package (tinygrad's ``ops_*`` idea); third parties
register a ``Session`` subclass under the ``edgekit.runtimes`` entry-point group::

    [project.entry-points."edgekit.runtimes"]
    mybackend = "mypkg.edgekit_backend:MySession"

What a runtime can do (device kinds, compile cache, throughput options) is declared on its Session class as
``capabilities`` and read with :func:`runtime_capabilities`. :data:`DEFAULT_TARGET` is the runtime every
install has: the default of ``edgekit.load`` and the reference that conversions are gated on first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from edgekit.errors import RuntimeUnavailableError, UnknownTargetError

if TYPE_CHECKING:
    from edgekit.runtimes.base import RuntimeCapabilities, Session

ENTRY_POINT_GROUP = "edgekit.runtimes"
DEFAULT_TARGET = "onnxruntime"  # a base dependency: always installed, runs everywhere, the reference runtime


@dataclass(frozen=True)
class RuntimeEntry:
    """A registered runtime: where its Session class lives and what it needs installed."""

    name: str
    target: str  # "package.module:ClassName"
    requires: tuple[str, ...]  # importable module names that must be present
    distribution: str  # the package whose version we report
    install: str  # what to run when it is missing
    description: str = ""

    def is_available(self) -> bool:
        """True when every required module can be found; imports nothing."""
        return all(_module_findable(m) for m in self.requires)

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None


def _module_findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


BUILTIN_RUNTIMES: tuple[RuntimeEntry, ...] = (
    RuntimeEntry(
        name="onnxruntime",
        target="edgekit.runtimes.onnxruntime:OnnxRuntimeSession",
        requires=("onnxruntime",),
        distribution="onnxruntime",
        install="pip install onnxruntime",
        description="ONNX Runtime (CPU; CUDA/TensorRT/OpenVINO execution providers when the build has them)",
    ),
    RuntimeEntry(
        name="openvino",
        target="edgekit.runtimes.openvino:OpenVINOSession",
        requires=("openvino",),
        distribution="openvino",
        install="pip install 'edgekit[openvino]'",
        description="Intel OpenVINO (CPU, GPU, NPU, AUTO)",
    ),
    RuntimeEntry(
        name="tensorrt",
        target="edgekit.runtimes.tensorrt:TensorRTSession",
        requires=("tensorrt", "cuda"),
        distribution="tensorrt",
        install="pip install 'edgekit[tensorrt]' (needs an NVIDIA GPU with its driver and CUDA)",
        description="NVIDIA TensorRT 10/11 (NVIDIA GPUs)",
    ),
)


# Sessions that time or check against the original model, never deployed: reachable by name (session_class),
# never listed as targets. Registered by import path so this package never imports the torch-side code.
BASELINE_RUNTIMES: tuple[RuntimeEntry, ...] = (
    RuntimeEntry(
        name="torch",
        target="edgekit.converters.torch_session:TorchSession",
        requires=("torch",),
        distribution="torch",
        install="pip install 'edgekit[convert]'",
        description="PyTorch eager (the baseline and reference; not a device target)",
    ),
)


@cache
def _entry_point_runtimes() -> tuple[RuntimeEntry, ...]:
    found = []
    builtin = {r.name for r in BUILTIN_RUNTIMES + BASELINE_RUNTIMES}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in builtin:
            continue
        module = ep.value.split(":")[0]
        dist = ep.dist.name if ep.dist is not None else module.split(".")[0]
        found.append(
            RuntimeEntry(
                name=ep.name,
                target=ep.value,
                requires=(module.split(".")[0],),
                distribution=dist,
                install=f"pip install {dist}",
                description=f"third-party runtime from {dist}",
            )
        )
    return tuple(found)


def registered_runtimes() -> tuple[RuntimeEntry, ...]:
    """Every known runtime, built-in first, then those from the entry-point group."""
    return BUILTIN_RUNTIMES + _entry_point_runtimes()


def runtime_entry(name: str) -> RuntimeEntry:
    """The registry entry for ``name`` (a baseline such as ``torch`` too); :class:`UnknownTargetError` lists
    the known targets."""
    for entry in BUILTIN_RUNTIMES + BASELINE_RUNTIMES:
        if entry.name == name:
            return entry
    for entry in _entry_point_runtimes():
        if entry.name == name:
            return entry
    known = ", ".join(r.name for r in registered_runtimes())
    raise UnknownTargetError(f"unknown target {name!r}; known targets: {known}")


def available_targets(device_kind: str | None = None) -> list[str]:
    """Names of the runtimes whose packages are installed here; with ``device_kind`` (``cpu``, ``gpu``, ``npu``)
    only those that can run on that kind of device.

    Imports none of the runtimes' packages; filtering by kind reads :func:`runtime_capabilities`.
    """
    names = [r.name for r in registered_runtimes() if r.is_available()]
    if device_kind is None:
        return names
    return [n for n in names if device_kind in runtime_capabilities(n).device_kinds]


def runtime_capabilities(name: str) -> RuntimeCapabilities:
    """What runtime ``name`` can do, from its Session class (declared, so no model needs loading).

    Imports the Session's module: for the built-in runtimes that module imports its runtime package (openvino,
    tensorrt) only when a model loads.
    """
    return session_class(name).capabilities


def session_class(name: str) -> type[Session]:
    """Import and return the Session class for ``name``, or say what to install."""
    entry = runtime_entry(name)
    if not entry.is_available():
        raise RuntimeUnavailableError(f"runtime {name!r} is not installed; install it with: {entry.install}")
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"runtime {name!r} failed to import ({exc}); reinstall it with: {entry.install}"
        ) from exc
    cls = getattr(module, attr)
    if not getattr(cls, "target", ""):
        cls.target = name
    return cls


def describe_targets() -> list[dict[str, Any]]:
    """For ``edgekit targets``: every runtime, installed or not, with version and devices."""
    rows = []
    for entry in registered_runtimes():
        row: dict[str, Any] = {
            "name": entry.name,
            "available": entry.is_available(),
            "version": entry.version(),
            "devices": [],
            "install": entry.install,
            "description": entry.description,
            "note": "",
        }
        if row["available"]:
            try:
                facts = session_class(entry.name).probe()
                row["devices"] = list(facts.get("devices", []))
                row["version"] = facts.get("version") or row["version"]
                row["note"] = facts.get("note", "")
                if facts.get("usable") is False:
                    row["available"] = False
            except Exception as exc:  # a broken install is reported, not fatal for the listing
                row["available"] = False
                row["note"] = f"installed but unusable: {exc}".splitlines()[0]
        rows.append(row)
    return rows
