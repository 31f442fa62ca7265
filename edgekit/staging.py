"""Writing outputs whole: staging directories renamed into place, and atomic files.

A convert builds its artifact in a hidden sibling of the output and renames it into place, so the output is
always absent or complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgekit.errors import OutputError

__all__ = ["atomic_write", "staging_dir"]


@contextlib.contextmanager
def staging_dir(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh directory next to ``out``; on success move it to ``out`` atomically, else delete it.

    Fails before any work when ``out`` cannot be written, or exists (unless ``force``), so nothing of the
    user's is ever lost or half-overwritten.
    """
    out = Path(out).absolute()
    if out.exists() and not force:
        raise OutputError(f"output path already exists: {out} (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path exists and is not a directory: {out}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write output directory {out}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(f)`` into a temporary sibling, then rename: readers never see half a file.

    An unwritable location is an :class:`OutputError`; the file gets ordinary permissions (umask), not
    mkstemp's 0600.
    """
    path = Path(path).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    backup.rmdir()
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)
