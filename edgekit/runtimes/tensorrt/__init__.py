"""TensorRT runtime, one package: the Session (``session``), what an engine is built for and where it is cached
(``plan``), which precision and flags TensorRT 10 and 11 need, TF32 included (``precision``), the one
process-wide TensorRT logger and its per-call error routing (``logger``), and the session's GPU: current
device, buffers, and their release by ``close()`` or a finalizer (``cuda``).

Importing it imports neither ``tensorrt`` nor ``cuda``: they load when a model does.
"""

from __future__ import annotations

from edgekit.runtimes.tensorrt.session import TensorRTSession

__all__ = ["TensorRTSession"]
