"""Confined paths: the one check every reader of a name found in data (a manifest, an ONNX file) goes through.

An artifact is data from wherever the user got it. A name inside it (``../outside.bin``, ``/etc/passwd``, a
symlink that leads out) must never make edgekit read, hash or load a file outside the directory the data
came in, so each such name is resolved here, and only here, before anything opens it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from edgekit.errors import ArtifactError

__all__ = ["confined_path", "escape_reason"]


def escape_reason(rel: object, *, canonical: bool = True) -> str | None:
    """Why the name ``rel`` is not a plain relative path, or ``None`` when it is.

    ``canonical`` also asks for the one spelling (no ``./``, ``//`` or trailing ``/``), which manifest entries
    need because they are compared as strings: ``./model.onnx`` must not pass as another name than ``model.onnx``.
    """
    if not isinstance(rel, str) or not rel:
        return "is empty or not a string"
    if "\0" in rel or "\\" in rel:
        return "holds a NUL or a backslash"
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.drive or windows.root:
        return "is absolute"
    if ".." in posix.parts:
        return "climbs out with '..'"
    if canonical and posix.as_posix() != rel:
        return f"is not normalised (write {posix.as_posix()!r})"
    return None


def confined_path(root: Path, rel: object, label: str, *, canonical: bool = True) -> Path:
    """``root / rel`` once ``rel`` is relative and still inside ``root`` after symlinks are resolved.

    The returned path is not resolved, so a runtime that looks for external data next to a model finds it
    where the model's own name says. Anything else is an :class:`ArtifactError` naming ``label`` and ``rel``.
    """
    why = escape_reason(rel, canonical=canonical)
    if why is None and isinstance(rel, str):
        path = Path(root) / rel
        if _resolves_inside(path, Path(root)):
            return path
        why = "resolves outside (a symlink out?)"
    raise ArtifactError(f"{label} path {rel!r} {why}; every path must stay inside {root}")


def _resolves_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink followed, is a proper descendant of ``root`` (a loop is not)."""
    try:
        resolved, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return resolved != base and resolved.is_relative_to(base)
