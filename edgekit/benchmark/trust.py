"""Which PyTorch source the bench may run for a model: artifacts are data, so never one a manifest names alone.

The torch baseline and the torch fidelity reference run Python: the factory, TorchScript or pickle of the
source. That source is one the user named (``--baseline-source``), or the one the manifest records when the
user passed ``--trust-source`` and its sha256 still matches the file(s) on disk. Without either, nothing in
``edgekit.json`` is imported and the fidelity reference is the default runtime. A hash detects corruption and
accidental edits; it cannot stop someone who rewrites the manifest's hash along with the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.artifact import MANIFEST_NAME
from edgekit.errors import ArtifactError, InputError
from edgekit.provenance import SOURCE_KINDS, file_kind, source_location, source_sha256

if TYPE_CHECKING:
    from edgekit.artifact import Manifest

NAME_A_SOURCE = "name it with --baseline-source SOURCE"


def check_source_choice(baseline: str | None, named: Sequence[str], trust: bool) -> None:
    """Fail before any work when the options cannot give a torch source, or give two."""
    if named and trust:
        raise InputError("give --baseline-source SOURCE or --trust-source, not both")
    if baseline is not None and not named and not trust:
        raise InputError(
            f"--baseline {baseline} runs the original PyTorch model, and edgekit never runs code an artifact names:"
            " pass --baseline-source SOURCE, or --trust-source to run the source the manifest records once its"
            " sha256 matches"
        )


def sources_per_model(named: Sequence[str], models: int) -> list[str | None]:
    """Each model's named source: one for every model, one per model in order, or none."""
    if not named:
        return [None] * models
    if len(named) == 1:
        return [named[0]] * models
    if len(named) != models:
        raise InputError(
            f"{len(named)} sources for {models} models: give one --baseline-source for every model, or one per"
            " model in order"
        )
    return list(named)


def named_source(ref: str, *, allow_pickle: bool = False) -> str:
    """A source the user named, checked to exist and, when it is a pickle, to be allowed: refused now rather
    than by the torch worker after every other target has been measured (nothing is imported here)."""
    where = source_location(ref)
    if where is None:
        raise InputError(
            f"--baseline-source {ref!r} does not exist (expected FILE.py:FUNCTION, package.module:FUNCTION,"
            " a model file or a model directory)"
        )
    if not allow_pickle and where == Path(ref).expanduser() and where.is_file() and file_kind(where) == "pickle":
        raise InputError(f"--baseline-source {ref} is a pickled model; loading it runs arbitrary code: pass"
                         " --allow-pickle if you trust it")  # fmt: skip
    return ref


def trusted_source(path: Path, manifest: Manifest | None) -> str:
    """The source ``path``'s manifest records, once its sha256 matches what is on disk now."""
    if manifest is None or manifest.source.kind not in SOURCE_KINDS:
        what = "a bare ONNX model" if manifest is None else f"converted from a {manifest.source.kind} file"
        raise InputError(f"--trust-source: {path} is {what} and records no PyTorch source; {NAME_A_SOURCE}")
    recorded, where = manifest.source, path / MANIFEST_NAME
    if not recorded.sha256:
        raise ArtifactError(f"{where} records no sha256 for its source {recorded.ref}, so --trust-source cannot"
                            f" check it; {NAME_A_SOURCE} if you trust it")  # fmt: skip
    if source_location(recorded.ref) is None:
        raise ArtifactError(f"the source {where} records, {recorded.ref}, does not exist here; {NAME_A_SOURCE}")
    if source_sha256(recorded.kind, recorded.ref) != recorded.sha256:
        raise ArtifactError(f"the source {recorded.ref} no longer matches the sha256 in {where}: it changed after"
                            f" conversion, so it is not run; {NAME_A_SOURCE} if you trust it as it is now")  # fmt: skip
    return recorded.ref
