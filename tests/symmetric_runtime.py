"""A registered runtime whose INT8 takes zero point 0 only, as TensorRT's does, so CPU tests can drive it.

It is ONNX Runtime (real inference) declaring ``int8_symmetric_only``: what the converter decides from that
capability is then checked end to end on any machine, without a GPU.
"""

from __future__ import annotations

from dataclasses import replace

from edgekit.runtimes.onnxruntime import OnnxRuntimeSession


class SymmetricInt8Session(OnnxRuntimeSession):
    target = "symmetric-int8"
    capabilities = replace(OnnxRuntimeSession.capabilities, int8_symmetric_only=True)
