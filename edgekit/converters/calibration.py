"""Calibration data: what the quantizer sees, and the held-back samples fidelity is judged on.

Sources: ``.npz`` (arrays named after the inputs) or ``.npy`` (a single-input model) files, a directory of
them, a text file with one sample per line (tokenized with the model's own tokenizer), or any iterable of feed
dicts (or a callable returning one) through the API. Arrays whose first axis is a shared symbolic dim are split
into single samples, so one file with 500 rows is 500 samples.

Samples are split *before* they are turned into feeds: a held-back sentence is never part of a packed
calibration sequence. Text calibration also packs consecutive lines up to the maximum length, so activation
ranges cover the long sequences users run, not only short sentences.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import TOKENIZER_FILE
from edgekit.errors import FeedError, InputError
from edgekit.specs import TensorSpec, check_feeds_fit

Feeds = dict[str, np.ndarray]
CalibSource = str | os.PathLike | Iterable[Mapping[str, np.ndarray]] | Callable[[], Iterable[Mapping[str, Any]]]
ARRAY_SUFFIXES = (".npz", ".npy")
TOKENIZER_CANDIDATES = (TOKENIZER_FILE, "tokenizer.json")  # in an artifact, then in a bare model directory


@dataclass(frozen=True)
class CalibrationOptions:
    """How many samples calibrate, how many are held back, and how text is packed."""

    samples: int = 200  # at most this many calibration samples
    holdout: int = 256  # at most this many held-back samples (never more than a third of the data)
    max_length: int | None = None  # tokens per text; None: the model's own (edgekit.text), as it will run
    pack_every: int = 4  # every Nth text calibration sample packs lines up to max_length
    # text: held-back samples also drawn from the bundled corpus's evaluation split (never trained or calibrated
    # on), as many as from the user's file up to this many, so a fidelity estimate holds on text of another kind
    corpus_heldout: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"--calib-samples must be at least 1, got {self.samples}")
        if self.holdout < 0 or (self.max_length is not None and self.max_length < 2) or self.pack_every < 1:
            raise InputError("calibration holdout, max_length and pack_every must be positive")


@dataclass
class CalibrationSet:
    """Feeds for calibration and held-back feeds for fidelity, with where they came from."""

    calibration: list[Feeds]
    heldout: list[Feeds]
    source: str
    kind: str  # "arrays", "text" or "iterable"
    details: dict[str, Any] = field(default_factory=dict)

    def heldout_slices(self) -> dict[str, slice]:
        """Where each source's held-back samples are (text: the user's lines, then the corpus's); one slice
        for data from a single source."""
        counts = self.details.get("heldout_sources") or {self.source: len(self.heldout)}
        out, start = {}, 0
        for name, n in counts.items():
            if n:
                out[name] = slice(start, start + n)
            start += n
        return out

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "calibration_samples": len(self.calibration),
                "heldout_samples": len(self.heldout), **self.details}  # fmt: skip


def check_source_exists(source: CalibSource | None) -> None:
    """Fail fast, before export, when a calibration path does not exist."""
    if isinstance(source, str | os.PathLike) and not Path(source).exists():
        raise InputError(f"calibration data not found: {source}")
    if isinstance(source, str | os.PathLike) and not (Path(source).is_file() or Path(source).is_dir()):
        raise InputError(f"calibration data {source} is not a regular file or a directory")


def load_calibration(
    source: CalibSource,
    inputs: Sequence[TensorSpec],
    options: CalibrationOptions = CalibrationOptions(),
    *,
    tokenizer: Path | None = None,
) -> CalibrationSet:
    """Read, check and split calibration data for a model with ``inputs``; errors are one-line InputErrors."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        check_source_exists(path)
        if path.is_dir() or path.suffix.lower() in ARRAY_SUFFIXES:
            units = _units_from_arrays(_array_files(path), inputs)
            return _split_arrays(units, inputs, options, str(path), "arrays")
        return _text_set(path, inputs, options, tokenizer)
    items = source() if callable(source) else source
    if isinstance(items, Mapping):
        items = [items]
    units = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InputError(f"calibration sample {i} is a {type(item).__name__}, expected a dict of input arrays")
        units.extend(_split_rows(_as_feeds(item, f"calibration sample {i}"), inputs))
    return _split_arrays(units, inputs, options, "<iterable>", "iterable")


def split_indices(n: int, holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic shuffle, then ``(calibration, held-back)`` index lists; held-back at most a third."""
    take = min(holdout, n // 3) if n >= 3 else 0
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[take:]), sorted(order[:take])


def check_feeds(feeds: Mapping[str, Any], inputs: Sequence[TensorSpec], where: str) -> None:
    """Names, dtypes, ranks and fixed dims must match the model, exactly as a Session would demand."""
    try:
        check_feeds_fit(inputs, feeds)
    except FeedError as exc:
        raise InputError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------------------------ arrays


def _array_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"calibration directory {path} has no .npz or .npy files")
    return files


def _units_from_arrays(files: Sequence[Path], inputs: Sequence[TensorSpec]) -> list[Feeds]:
    units: list[Feeds] = []
    for f in files:
        units.extend(_split_rows(_read_array_file(f, inputs), inputs))
    return units


def _read_array_file(path: Path, inputs: Sequence[TensorSpec]) -> Feeds:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            array, feeds = data, None
        else:
            with data:
                feeds = {k: data[k] for k in data.files}
    except Exception as exc:  # truncated, not numpy, pickled objects, a bad zip: all the user's file
        message = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot read calibration file {path}: {message}") from exc
    if feeds is None:
        if len(inputs) != 1:
            names = ", ".join(s.name for s in inputs)
            raise InputError(f"{path} holds one array but the model has {len(inputs)} inputs ({names}); use .npz")
        feeds = {inputs[0].name: array}
    return _as_feeds(feeds, str(path))


def _as_feeds(item: Mapping[str, Any], where: str) -> Feeds:
    feeds = {}
    for k, v in item.items():
        if not isinstance(v, np.ndarray):
            try:
                v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
            except Exception as exc:
                raise InputError(f"{where}: input {k!r} is not an array") from exc
        feeds[str(k)] = v
    return feeds


def _split_rows(feeds: Feeds, inputs: Sequence[TensorSpec]) -> list[Feeds]:
    """One sample per row when every input's first axis is the same symbolic dim (a batch)."""
    firsts = {s.shape[0] if s.rank else None for s in inputs}
    sizes = {v.shape[0] if v.ndim else None for v in feeds.values()}
    if len(firsts) != 1 or not isinstance(next(iter(firsts)), str) or len(sizes) != 1 or None in sizes:
        return [feeds]
    n = next(iter(sizes))
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(n)] if n and n > 1 else [feeds]


def _split_arrays(
    units: list[Feeds], inputs: Sequence[TensorSpec], options: CalibrationOptions, source: str, kind: str
) -> CalibrationSet:
    if not units:
        raise InputError(f"calibration data is empty: {source}")
    for i, u in enumerate(units):
        check_feeds(u, inputs, f"calibration sample {i} ({source})")
    calib_idx, held_idx = split_indices(len(units), options.holdout, options.seed)
    calibration = [units[i] for i in calib_idx[: options.samples]]
    return CalibrationSet(calibration, [units[i] for i in held_idx], source, kind)


# -------------------------------------------------------------------------------------------------- text


def _text_set(
    path: Path, inputs: Sequence[TensorSpec], options: CalibrationOptions, tokenizer: Path | None
) -> CalibrationSet:
    from edgekit.text import TextEncoder

    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read calibration text {path}: {exc}") from exc
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"calibration data is empty: {path} has no non-blank lines")
    if tokenizer is None:
        raise InputError(
            f"text calibration data ({path.name}) needs the model's tokenizer, and this model has none; "
            "give .npz/.npy feeds instead"
        )
    encoder = TextEncoder(tokenizer, inputs, max_length=options.max_length)
    calib_idx, held_idx = split_indices(len(lines), options.holdout, options.seed)
    calib_lines = [lines[i] for i in calib_idx]
    texts = _packed(calib_lines, options.pack_every, encoder)[: options.samples]
    calibration = [encoder.encode([t]) for t in texts]
    corpus = corpus_heldout_texts(min(len(held_idx), options.corpus_heldout), options.pack_every, encoder)
    heldout = [encoder.encode([t]) for t in [*(lines[i] for i in held_idx), *corpus]]
    for i, f in enumerate(calibration[:1] + heldout[:1]):
        check_feeds(f, inputs, f"tokenized calibration sample {i} ({path})")
    originals = set(calib_lines)
    details = {
        "lines": len(lines),
        "packed_samples": sum(1 for t in texts if t not in originals),
        "max_length": encoder.max_length,
        "heldout_sources": {str(path): len(held_idx), "corpus": len(corpus)},
    }
    return CalibrationSet(calibration, heldout, str(path), "text", details)


def corpus_heldout_texts(n: int, pack_every: int, encoder: Any) -> list[str]:
    """``n`` texts from the corpus's evaluation split spread across its lengths (evenly spaced by rank of
    length), every ``pack_every``-th packed to the model's length as calibration text is; [] without it."""
    if n < 1:
        return []
    from edgekit.corpus import eval_texts
    from edgekit.errors import RuntimeUnavailableError

    try:
        pool = sorted(eval_texts(), key=lambda t: (len(t), t))
    except RuntimeUnavailableError:
        return []
    picks = [pool[round(i * (len(pool) - 1) / max(n - 1, 1))] for i in range(min(n, len(pool)))]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(picks)).tolist()  # packing joins neighbours of different lengths
    mixed = [picks[i] for i in order]
    return _packed(mixed, pack_every, encoder)


def _packed(lines: Sequence[str], pack_every: int, encoder: Any) -> list[str]:
    """Lines in order; every ``pack_every``-th sample joins the following lines until it fills the encoder's
    max_length (the model's own: a long calibration text is as long as the model reads)."""
    lengths = [len(e.ids) for e in encoder.encodings(lines)]  # tokens, specials included
    out: list[str] = []
    for i, line in enumerate(lines):
        if i % pack_every != pack_every - 1:
            out.append(line)
            continue
        parts, total, j = [line], lengths[i], i + 1
        while j < len(lines) and total < encoder.max_length:
            parts.append(lines[j])
            total, j = total + lengths[j], j + 1
        out.append(" ".join(parts))
    return out


def find_tokenizer(*directories: Path | None) -> Path | None:
    """The first ``tokenizer/tokenizer.json`` (or ``tokenizer.json``) found in ``directories``."""
    for d in directories:
        if d is None:
            continue
        for rel in TOKENIZER_CANDIDATES:
            if (Path(d) / rel).is_file():
                return Path(d) / rel
    return None
