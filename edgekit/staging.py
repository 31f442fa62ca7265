"""Writing outputs whole: staging directories renamed into place, atomic files, and the sweep of dead staging.

A convert builds its artifact in a hidden sibling of the output and renames it into place, so the output is
always absent or complete. A process killed mid-way (``kill -9``, OOM, a power cut) cannot delete its own
staging directory, so each one is named after its owner (pid and process start time) and holds an advisory
lock (``flock``) while the owner lives. The next run to the same output removes those whose owner is gone,
and never one whose owner still runs: a held lock or a live owner process keeps a directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgekit.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, the owner's pid alone says whether it lives
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "check_writable_file", "staging_dir", "stale_staging", "sweep_stale_staging"]

# what follows ``.{output name}.`` in a staging (``.tmp``) or backup (``.old``) directory's name
_OWNED = re.compile(r"(?P<pid>\d+)-(?P<start>\d+)\.[A-Za-z0-9_]+\.(?:tmp|old)")


@contextlib.contextmanager
def staging_dir(out: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh directory next to ``out``; on success move it to ``out`` atomically, else delete it.

    Fails before any work when ``out`` cannot be written, or exists (unless ``force``), so nothing of the
    user's is ever lost or half-overwritten. Staging left by dead runs to the same output is swept first.
    """
    out = Path(out).absolute()
    if out.exists() and not force:
        raise OutputError(f"output path already exists: {out} (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path exists and is not a directory: {out}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_staging(out)
        tmp = Path(tempfile.mkdtemp(prefix=_owned_prefix(out), suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write output directory {out}: {exc.strerror or exc}") from exc
    try:
        with _held_lock(tmp):
            yield tmp
            _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_staging(out: Path) -> list[Path]:
    """The staging and backup directories next to ``out`` whose owning process is gone."""
    out = Path(out).absolute()
    prefix = f".{out.name}."
    try:
        siblings = sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []
    return [p for p in siblings if _owner_gone(p, p.name[len(prefix) :])]


def _owner_gone(path: Path, rest: str) -> bool:
    """Whether ``path`` is an edgekit staging or backup directory that neither a lock nor its owner keeps."""
    owner = _OWNED.fullmatch(rest)
    if owner is None or path.is_symlink() or not path.is_dir():
        return False  # not ours (or from a release that did not name its owner): never touched
    return not _locked(path) and not _process_runs(int(owner["pid"]), int(owner["start"]))


def sweep_stale_staging(out: Path) -> list[Path]:
    """Remove :func:`stale_staging` directories of ``out``; return what was removed."""
    removed = stale_staging(out)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def check_writable_file(path: Path, what: str = "output") -> None:
    """Fail now, before any work, when ``path`` cannot become a file: it is a directory, or what would have to be
    its parent directory is a file. (Permissions are checked by the write itself; it is atomic.)"""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} path is a directory: {path}")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {parent} is not a directory")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(f)`` into a temporary sibling, then rename: readers never see half a file.

    An unwritable location is an :class:`OutputError`; the file gets ordinary permissions (umask), not
    mkstemp's 0600.
    """
    path = Path(path).absolute()
    check_writable_file(path)
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
    backup = Path(tempfile.mkdtemp(prefix=_owned_prefix(out), suffix=".old", dir=out.parent))
    backup.rmdir()
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _owned_prefix(out: Path) -> str:
    """``.{name}.{pid}-{start}.``: who owns a directory, readable by a later run without opening it."""
    pid = os.getpid()
    return f".{out.name}.{pid}-{_start_ticks(pid) or 0}."


@contextlib.contextmanager
def _held_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` for the block; the kernel drops it when the process dies."""
    fd = _open_dir(directory)
    try:
        if fd is not None and fcntl is not None:
            # blocking: a sweeper may hold it for the instant it takes to probe; without flock support on this
            # filesystem the pid and start time in the name still tell
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _locked(directory: Path) -> bool:
    """Whether a live process holds ``directory``'s lock (taking it for a moment to find out)."""
    fd = _open_dir(directory)
    if fd is None or fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _open_dir(directory: Path) -> int | None:
    try:
        return os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


def _process_runs(pid: int, start: int) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``start`` (a reused pid is another process).

    ``start`` is 0 where the start time cannot be read; then any process with that pid counts as the owner,
    which can only delay a sweep, never remove a live run's directory.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, ticks = stat
    return state != "Z" and (not start or ticks == start)  # a zombie is dead, only not yet reaped


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat is not None else None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``pid``'s state letter and start time in clock ticks after boot (``/proc/PID/stat``); ``None`` off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
