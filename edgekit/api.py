"""Deprecated home of ``load`` and ``model_ref``: they live in :mod:`edgekit.runtimes.loading`.

Kept only because ``edgekit/cli.py`` and ``edgekit/converters/latency.py`` still import it and are being
rewritten elsewhere; delete this module once they import ``edgekit.runtimes.loading``.
"""

from __future__ import annotations

from edgekit.runtimes.loading import load, model_ref

__all__ = ["load", "model_ref"]
