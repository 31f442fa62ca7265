"""Factories that fail on purpose, for testing how source loading reports them."""

from __future__ import annotations


def raises() -> None:
    """A factory that raises: loading must report the exception type and message."""
    raise RuntimeError("boom")


def not_a_module() -> int:
    """A factory that returns something that is not an nn.Module."""
    return 42
