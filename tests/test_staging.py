"""Staging directories: a killed convert's leftovers are swept by the next run, a live one's never are.

The output path itself is always absent or complete; ``kill -9`` at random points proves it on a real convert.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.artifact import find_model, staging_dir

MODELS = Path(__file__).parent / "models"
CONVERT = [sys.executable, "-m", "edgekit", "convert", f"{MODELS}/mlp.py:make"]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def leftovers(out: Path) -> list[str]:
    """Hidden siblings of ``out`` that a run made: staging (``.tmp``) and backup (``.old``) directories."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _start_ticks() -> int:
    stat = Path("/proc/self/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[19])


def test_a_dead_runs_staging_is_swept_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    for suffix in ("tmp", "old"):
        (tmp_path / f".out.{dead_pid()}-12345.k2j4h5g6.{suffix}" / "tokenizer").mkdir(parents=True)
    with staging_dir(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"x")
    assert leftovers(out) == []
    assert (out / "model.onnx").is_file()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times are read from /proc")
def test_a_reused_pid_does_not_keep_a_dead_runs_staging(tmp_path):
    """The pid in the name now belongs to another process (this one, started at another time): swept."""
    from edgekit.staging import stale_staging

    stale = tmp_path / f".out.{os.getpid()}-{_start_ticks() + 1}.abcdefgh.tmp"
    stale.mkdir()
    assert stale_staging(tmp_path / "out") == [stale]


def test_only_our_own_staging_names_are_ever_touched(tmp_path):
    """Older releases' unnamed staging, other outputs' names, and a file or symlink named like ours all stay."""
    kept = [".out.abcdefgh.tmp", ".out.txt", ".outer.1-2.abcdefgh.tmp", ".out.1-2.x.y.tmp", "out.1-2.abc.tmp"]
    for name in kept:
        (tmp_path / name).mkdir()
    not_dirs = [f".out.{dead_pid()}-1.file0000.tmp", f".out.{dead_pid()}-1.link0000.tmp"]
    (tmp_path / not_dirs[0]).write_text("a file, not a staging directory")
    (tmp_path / not_dirs[1]).symlink_to(tmp_path / kept[0])
    with staging_dir(tmp_path / "out"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, *not_dirs, "out"])


def _hold(code: str) -> subprocess.Popen[str]:
    """A live process that runs ``code`` (which prints a line when ready), then waits for a line on stdin."""
    proc = subprocess.Popen([sys.executable, "-c", f"{code}\nimport sys\nsys.stdin.readline()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline()
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def test_a_held_lock_keeps_staging_whatever_its_pid_says(tmp_path):
    """The owner's lock outlives pid checks (a pid from another namespace, or a reused one): never swept."""
    from edgekit.staging import stale_staging

    held = tmp_path / f".out.{dead_pid()}-1.abcdefgh.tmp"
    held.mkdir()
    holder = _hold(f"import fcntl, os\nfd = os.open({str(held)!r}, os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                   "print('locked', flush=True)")  # fmt: skip
    try:
        assert stale_staging(tmp_path / "out") == []
    finally:
        _release(holder)
    assert stale_staging(tmp_path / "out") == [held]


def test_a_live_concurrent_converts_staging_is_not_swept(tmp_path):
    """A convert runs to the same output while another process is inside its staging directory."""
    out = tmp_path / "out"
    holder = _hold(f"from edgekit.artifact import staging_dir\nimport contextlib, sys\n"
                   f"stack = contextlib.ExitStack()\ntmp = stack.enter_context(staging_dir({str(out)!r}))\n"
                   "(tmp / 'mine').write_text('x')\nprint(tmp, flush=True)\n"
                   "sys.stdin.readline()\nstack.close()")  # fmt: skip
    try:
        theirs = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
        assert len(theirs) == 1 and (theirs[0] / "mine").is_file()
        result = subprocess.run([*CONVERT, "-o", str(out)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert (theirs[0] / "mine").is_file(), "a live run's staging directory was swept"
        find_model(out)
    finally:
        _release(holder)
    assert leftovers(out) == [] and (out / "mine").is_file()  # the holder finished and replaced it whole


def _staging_appears(proc: subprocess.Popen[bytes], out: Path, before: set[str], timeout: float = 120) -> bool:
    """Wait until ``proc`` has made its staging directory (a name not in ``before``) or exited; whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(name.endswith(".tmp") for name in set(leftovers(out)) - before):
            return True
        time.sleep(0.005)
    return False


def _killed_runs(out: Path, delays: list[float]) -> Iterator[tuple[set[str], bool]]:
    """Start a convert to ``out`` for each delay and ``kill -9`` it that long after its staging appears; yield
    the hidden names that were there before it started, and whether it reached its staging."""
    for delay in delays:
        before = set(leftovers(out))
        proc = subprocess.Popen([*CONVERT, "-o", str(out), "--force"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        staged = _staging_appears(proc, out, before)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)
        yield before, staged


@pytest.mark.slow
def test_kill_9_never_leaves_a_partial_output_and_the_next_run_sweeps(tmp_path):
    """Five converts killed at random points: each leaves the output absent or complete, each run sweeps what
    the run before it left, and a run that finishes leaves nothing hidden behind."""
    out = tmp_path / "out"
    rng = random.Random(9)
    delays = [rng.uniform(lo, lo + 0.3) for lo in (0.0, 0.3, 0.6, 1.0, 1.4)]
    left_behind = 0
    for before, staged in _killed_runs(out, delays):
        assert staged, "the convert never reached its staging directory"
        if out.exists():
            find_model(out)  # complete: every recorded file present, every hash right
        names = set(leftovers(out))
        assert not names & before, f"an earlier run's staging survived this run: {sorted(names & before)}"
        left_behind += bool(names)
    assert left_behind, "no kill landed inside the staging window; the sweep went untested"
    result = subprocess.run([*CONVERT, "-o", str(out), "--force"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == [] and [p.name for p in tmp_path.iterdir()] == ["out"]
    find_model(out)
