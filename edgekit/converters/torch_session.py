"""torch eager as a Session: the baseline ``edgekit bench --baseline torch`` times and the reference it compares to.

It lives with the torch-side code and is registered in :mod:`edgekit.runtimes` by its import path (a string,
like an entry point), so the runtimes package never imports it and the bench reaches it through the registry
without importing converters or sources. It is not a device target: ``available_targets`` never lists it.

The PyTorch source is named by the caller in ``options={"source": REF}`` (``"allow_pickle": True`` to load a
pickled module); the ModelRef gives the input and output specs the ONNX export has, so feeds are checked the
same way as on every other runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import InputError
from edgekit.runtimes.base import RuntimeCapabilities, Session, SessionInfo

Feeds = Mapping[str, np.ndarray]
OPTIONS = ("source", "allow_pickle")


class TorchSession(Session):
    """``module(**feeds)`` under ``inference_mode`` on the CPU, outputs named like the exported model's."""

    target: ClassVar[str] = "torch"
    capabilities: ClassVar[RuntimeCapabilities] = RuntimeCapabilities(device_kinds=("cpu",))

    def _load(self) -> None:
        import torch

        from edgekit.sources import load_source

        options = dict(self.config.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InputError(f"torch: unknown option {unknown[0]!r}; accepted: {', '.join(OPTIONS)}")
        if not options.get("source"):
            raise InputError('torch: name the PyTorch source to run, options={"source": REF}')
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self._source = str(options["source"])
        loaded = load_source(self._source, allow_pickle=bool(options.get("allow_pickle", False)))
        self._module = loaded.module.eval()
        self._output_names = [o.name for o in self.outputs]
        self._prepared: dict[int, tuple[Feeds, tuple[Any, ...], dict[str, Any]]] = {}

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        import torch

        from edgekit.converters.torch_io import call_args, flatten_outputs, to_torch_feeds

        # tensors and the positional/keyword split are made once per feeds dict, outside the timed loop's calls
        entry = self._prepared.get(id(feeds))
        if entry is None or entry[0] is not feeds:
            entry = self._prepared[id(feeds)] = (feeds, *call_args(self._module, to_torch_feeds(feeds)))
        with torch.inference_mode():
            outs = flatten_outputs(self._module(*entry[1], **entry[2]))
        return {n: t.detach().numpy() for n, t in zip(self._output_names, outs, strict=False)}

    def info(self) -> SessionInfo:
        import torch

        params = list(self._module.parameters())
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in params if p.is_floating_point()})
        tensors = [*params, *self._module.buffers()]
        return SessionInfo(
            target=self.target,
            device="cpu",
            precision="fp32" if dtypes in (["float32"], []) else ",".join(dtypes),
            backend_version=torch.__version__,
            providers=("eager",),
            threads=torch.get_num_threads(),
            details={
                "source": self._source,
                "interop_threads": torch.get_num_interop_threads(),
                "parameter_bytes": int(sum(t.numel() * t.element_size() for t in tensors)),
            },
        )

    def _close(self) -> None:
        self._prepared.clear()
