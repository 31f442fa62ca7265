"""An existing ONNX model as a ``convert`` source: copied and checked, no torch; the FP32 ONNX is the reference.

Used for ``edgekit convert model.onnx --quantize ...``. When the file sits in an edgekit artifact (or next to a
tokenizer), its tokenizer and valid integer input ranges come along.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import MANIFEST_NAME, TOKENIZER_DIR, Manifest, TextFacts, read_manifest
from edgekit.converters.calibration import find_tokenizer
from edgekit.converters.validate import Case
from edgekit.errors import ArtifactError
from edgekit.runtimes import DEFAULT_TARGET
from edgekit.specs import TensorSpec, random_feeds

Feeds = dict[str, np.ndarray]


def is_onnx_source(source: str | Path) -> bool:
    path = Path(source)
    return path.suffix.lower() == ".onnx" and path.is_file()


@dataclass
class OnnxSource:
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    sha256: str
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    tokenizer: Path | None = None
    text: TextFacts | None = None  # what the artifact the file sits in recorded about its text model
    output_kinds: dict[str, str] = field(default_factory=dict)  # and what its outputs are (an embedding...)


def load_onnx_source(path: Path) -> OnnxSource:
    """Parse and check ``path`` (ModelFormatError, exit 2, when it is not a usable model)."""
    from edgekit.onnxfile import io_specs, opset_of, read_onnx

    proto = read_onnx(path)
    inputs, outputs = io_specs(proto)
    ranges: dict[str, tuple[int, int]] = {}
    text: TextFacts | None = None
    kinds: dict[str, str] = {}
    if (path.parent / MANIFEST_NAME).is_file():
        with contextlib.suppress(ArtifactError):  # a damaged manifest next to the file only costs these facts
            manifest = read_manifest(path.parent)
            ranges, text, kinds = manifest.int_ranges, _text_of(path.parent, manifest), dict(manifest.output_kinds)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    tokenizer = find_tokenizer(path.parent)
    return OnnxSource(path, inputs, outputs, opset_of(proto), digest, ranges, tokenizer, text, kinds)


def _text_of(directory: Path, manifest: Manifest) -> TextFacts | None:
    """The artifact's text facts; for one written before they were recorded, found as its loader finds them."""
    from edgekit.text import text_facts

    return manifest.text or text_facts(directory, manifest.source.metadata)


def copy_model(src: OnnxSource, dst: Path) -> None:
    """Copy the model file and any external data files it references, keeping their relative names."""
    import onnx

    from edgekit.onnxfile import external_data_files

    shutil.copy2(src.path, dst)
    for data in external_data_files(onnx.load(str(src.path), load_external_data=False), src.path):
        shutil.copy2(data, dst.parent / data.name)


def copy_tokenizer(src: OnnxSource, artifact: Path) -> None:
    if src.tokenizer is None:
        return
    (artifact / TOKENIZER_DIR).mkdir(exist_ok=True)
    for f in src.tokenizer.parent.iterdir():
        if f.is_file() and (f.suffix in (".json", ".txt", ".model") and f.name != MANIFEST_NAME):
            shutil.copy2(f, artifact / TOKENIZER_DIR / f.name)


def onnx_reference(path: Path) -> Callable[[Feeds], dict[str, np.ndarray]]:
    """Outputs of the FP32 model on the default runtime (ONNX Runtime's CPU provider): an ONNX source's reference."""
    from edgekit.runtimes.loading import load, model_ref

    session = load(model_ref(path), target=DEFAULT_TARGET)
    return lambda feeds: session.run(feeds)


def gate_cases(src: OnnxSource, reference: Callable[[Feeds], Any], seed: int = 0) -> list[Case]:
    """Random inputs at two sizes of every symbolic dim, with the FP32 reference outputs."""
    cases = []
    for i, sizes in enumerate(({"batch": 1, "seq": 16}, {"batch": 2, "seq": 11})):
        dims = {d: sizes.get(d, 4 + i) for s in src.inputs for d in s.shape if isinstance(d, str)}
        feeds = random_feeds(src.inputs, dims, seed=seed + i, int_range=src.int_ranges)
        label = ",".join(f"{k}={v}" for k, v in dims.items()) or "random"
        cases.append(Case(label, feeds, reference(feeds)))
    return cases
