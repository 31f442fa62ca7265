"""TensorRT runtime, one package: the Session (``session``), what an engine is built for and where it is cached
(``plan``), and which precision and flags TensorRT 10 and 11 need (``precision``).

Importing it imports neither ``tensorrt`` nor ``cuda``: they load when a model does.
"""

from __future__ import annotations

from edgekit.runtimes.tensorrt.session import TensorRTSession

__all__ = ["TensorRTSession"]
