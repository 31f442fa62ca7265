"""What runs ON a remote device for ``edgekit bench --host``: sent as ``python -c SOURCE COMMAND [ARG]`` over SSH.

Standard library only, and no import of edgekit at module level, because it must answer before we know whether
(and which) edgekit is installed there: a missing edgekit is then one clear line, not a traceback. Commands:

- ``probe``: one line ``EDGEKIT-AGENT {json}``: python, edgekit version, the artifact format it reads, the
  device's machine facts (CPU model, the ISA flags that change numerics) and its runtimes;
- ``unpack``: a tar on stdin into a new temporary directory (only plain files and directories, every name
  inside it), then the sha256 of every file that arrived, so the sender can check them against what it sent;
- ``remove DIR``: delete a directory ``unpack`` made (nothing else: the name must carry our prefix).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

MARKER = "EDGEKIT-AGENT "
PREFIX = "edgekit-remote-"


def probe() -> dict[str, Any]:
    """What the bench needs to know about this device before it sends anything."""
    facts: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable, "edgekit_version": None}
    try:
        from edgekit._version import __version__
    except ImportError as exc:
        facts["missing"] = f"{type(exc).__name__}: {exc}"
        return facts
    facts["edgekit_version"] = __version__
    try:
        import importlib.util

        from edgekit.artifact import FORMAT_VERSION
        from edgekit.benchmark.facts import machine_facts
        from edgekit.runtimes import describe_targets

        facts["format_version"] = FORMAT_VERSION
        facts["worker"] = importlib.util.find_spec("edgekit.benchmark.worker") is not None
        facts["machine"] = machine_facts()
        facts["targets"] = describe_targets()
    except Exception as exc:  # an install that imports only partly (a dependency missing) is reported, not raised
        facts["broken"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return facts


def _safe_member(member: tarfile.TarInfo) -> bool:
    path = PurePosixPath(member.name)
    return not path.is_absolute() and ".." not in path.parts and (member.isfile() or member.isdir())


def unpack() -> dict[str, Any]:
    """Extract the tar on stdin into a fresh directory and hash what arrived; nothing is left behind on failure."""
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            for member in tar:
                if not _safe_member(member):
                    raise ValueError(f"refusing tar member {member.name!r}: not a plain file inside the directory")
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extract(member, str(root), **extra)
        hashes = {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return {"dir": str(root), "sha256": hashes}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove(directory: str) -> dict[str, Any]:
    """Delete a directory :func:`unpack` made; refuse any other path."""
    path = Path(directory)
    if not path.name.startswith(PREFIX) or not path.is_dir():
        return {"removed": False, "why": f"not a directory edgekit made: {directory}"}
    shutil.rmtree(path, ignore_errors=True)
    return {"removed": not path.exists()}


def main(argv: list[str]) -> int:
    """Answer one command; what a runtime prints while probing goes to stderr, so the marker line stays clean."""
    command = argv[0] if argv else ""
    saved = os.dup(1)
    os.dup2(2, 1)
    with os.fdopen(saved, "w", closefd=True) as real:
        if command == "probe":
            answer = probe()
        elif command == "unpack":
            answer = unpack()
        elif command == "remove" and len(argv) == 2:
            answer = remove(argv[1])
        else:
            sys.stderr.write(f"edgekit agent: unknown command {argv!r}\n")
            return 2
        real.write(MARKER + json.dumps(answer, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
