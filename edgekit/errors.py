"""One exception tree for edgekit.

Every error derives from :class:`EdgekitError` and from the builtin a caller would naturally catch, so
``except ValueError`` keeps working for code that does not know edgekit. ``exit_code`` is what the CLI
returns: 2 for bad input, usage or a missing runtime; 1 when a gate (validation, a failed run) fails.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Root of every error edgekit raises on purpose."""

    exit_code: int = 1


class InputError(EdgekitError, ValueError):
    """The user gave something edgekit cannot use: a bad option, path, spec or value."""

    exit_code = 2


class SourceError(InputError):
    """A PyTorch source (file, function, checkpoint, model directory) could not be loaded."""


class ModelFormatError(InputError):
    """A model file is missing, truncated, corrupt, or not the format its name says."""


class ArtifactError(ModelFormatError):
    """An artifact directory is incomplete, names a path outside itself (or an ONNX file names external data
    outside its directory), or a file in it no longer matches its recorded hash."""


class FeedError(InputError):
    """Feeds given to ``Session.run`` do not match the model's input specs."""


class UnknownTargetError(InputError, KeyError):
    """No runtime is registered under the requested target name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RuntimeUnavailableError(EdgekitError, ImportError):
    """The requested runtime (or device / execution provider) is not installed here."""

    exit_code = 2


class OutputError(EdgekitError, OSError):
    """An output path cannot be written (permissions, not a directory, exists and not replaceable)."""

    exit_code = 2


class RemoteError(EdgekitError, ConnectionError):
    """A remote device (``--host``) could not be reached, refused the login or its host key, or did not answer."""

    exit_code = 2


class ExportError(EdgekitError, RuntimeError):
    """Every exporter failed to produce a valid ONNX model."""


class ValidationError(EdgekitError, AssertionError):
    """A fidelity gate failed: a converted model does not compute what the original computes."""


class BackendError(EdgekitError, RuntimeError):
    """A runtime failed while compiling or running a model that passed input checks."""


def one_line(exc: BaseException, *, typed: bool = True, limit: int = 1000) -> str:
    """``exc``'s message on one line (its lines joined, at most ``limit`` characters), so a CLI error, a report
    cell or the wrapped library error inside one of ours never spans rows. ``typed`` puts ``Type: `` in front:
    what a library error needs to be understood; our own errors' messages stand alone."""
    text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())[:limit]
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if typed else text


__all__ = [
    "ArtifactError",
    "BackendError",
    "EdgekitError",
    "ExportError",
    "FeedError",
    "InputError",
    "ModelFormatError",
    "OutputError",
    "RemoteError",
    "RuntimeUnavailableError",
    "SourceError",
    "UnknownTargetError",
    "ValidationError",
    "one_line",
]
