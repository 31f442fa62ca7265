"""Distillation data: feed dicts in, deterministic shardable padded batches out.

Every source becomes a list of *rows* (one sample each, every tensor with a leading batch axis of 1) before
training starts, so bad data fails before the first step and every process of a distributed run sees the
same rows in the same order. Iterables yield feed dicts that carry a batch axis (a single sample is a batch
of 1, as calibration data and :class:`edgekit.text.TextEncoder` produce); a ``torch.utils.data.Dataset``
yields single samples without one (torch's convention). The optional ``"labels"`` key holds class indices.

Variable-length token inputs (rank 2 integer tensors that differ only in length) are padded with 0 to the
longest row of each batch; that needs an ``attention_mask`` in the data, padded the same way, so padding is
invisible to the model.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.artifact import TOKENIZER_FILE
from edgekit.converters.calibration import CalibrationOptions, check_feeds, load_calibration
from edgekit.errors import InputError
from edgekit.sources.examples import forward_params
from edgekit.specs import TensorSpec, canonical_dtype

LABELS = "labels"
MASK = "attention_mask"
Row = dict[str, torch.Tensor]
BUCKET_BATCHES = 50  # batches sorted by length together: similar lengths, still a random stretch of the data
DistillData = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]] | torch.utils.data.Dataset


@dataclass
class Batch:
    """Model feeds plus optional labels, moved together."""

    feeds: dict[str, torch.Tensor]
    labels: torch.Tensor | None

    def to(self, device: torch.device) -> Batch:
        feeds = {k: v.to(device) for k, v in self.feeds.items()}
        return Batch(feeds, None if self.labels is None else self.labels.to(device))

    @property
    def size(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])


# ------------------------------------------------------------------------------------------------- rows


def rows_from(data: DistillData | None, where: str) -> list[Row]:
    """Every sample of ``data`` as a row; errors name the item and input (one-line InputErrors)."""
    if data is None:
        return []
    if isinstance(data, torch.utils.data.IterableDataset):
        return [_sample_row(item, f"{where} item {i}") for i, item in enumerate(data)]
    if isinstance(data, torch.utils.data.Dataset):
        return [_sample_row(data[i], f"{where} item {i}") for i in range(len(data))]  # type: ignore[arg-type]
    items = data() if callable(data) else data
    if isinstance(items, Mapping):
        items = [items]
    rows: list[Row] = []
    for i, item in enumerate(items):
        rows.extend(_split_batch(_as_tensors(item, f"{where} item {i}"), f"{where} item {i}"))
    return rows


def _as_tensors(item: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(item, Mapping):
        raise InputError(f"{where} is a {type(item).__name__}, expected a dict of input name -> tensor")
    out = {}
    for name, value in item.items():
        try:
            if isinstance(value, torch.Tensor):
                tensor = value.detach().cpu()
            elif isinstance(value, np.ndarray):
                tensor = torch.from_numpy(np.ascontiguousarray(value))
            else:
                tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{where}: input {name!r} is not an array ({type(value).__name__})") from exc
        out[str(name)] = tensor.long() if name == LABELS else tensor
    return out


def _sample_row(item: Any, where: str) -> Row:
    """A Dataset sample (no batch axis) as a row of batch 1."""
    return {k: v.reshape(1, *v.shape) for k, v in _as_tensors(item, where).items()}


def _split_batch(feeds: dict[str, torch.Tensor], where: str) -> list[Row]:
    inputs = {k: v for k, v in feeds.items() if k != LABELS}
    if not inputs:
        raise InputError(f"{where} has no inputs (only {sorted(feeds)})")
    first = next(iter(inputs))
    n = _rows_in(inputs[first], first, where)
    for name, value in feeds.items():
        if _rows_in(value, name, where) != n:
            raise InputError(
                f"{where}: input {name!r} has {value.shape[0]} rows but input {first!r} has {n} "
                "(iterable data needs a leading batch axis on every input)"
            )
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(n)]


def _rows_in(value: torch.Tensor, name: str, where: str) -> int:
    if value.ndim == 0:
        raise InputError(f"{where}: input {name!r} is a scalar; iterable data needs a leading batch axis")
    return int(value.shape[0])


# ------------------------------------------------------------------------------------------------ checks


def specs_from_examples(
    examples: Mapping[str, torch.Tensor], dynamic_dims: Mapping[str, Mapping[int, str]] | None = None
) -> list[TensorSpec]:
    """Input specs a model's example inputs imply: axis 0 is the batch, the source's dynamic dims stay free."""
    specs = []
    for name, value in examples.items():
        dims: list[int | str] = list(value.shape)
        for axis, sym in {0: "batch", **(dynamic_dims or {}).get(name, {})}.items():
            if axis < len(dims):
                dims[axis] = sym
        specs.append(TensorSpec(name, canonical_dtype(str(value.dtype)), tuple(dims)))
    return specs


def specs_from_row(row: Row) -> list[TensorSpec]:
    """Specs the first row implies when the model gives none, so later rows must look like it."""
    specs = []
    for name, value in row.items():
        if name == LABELS:
            continue
        dims: list[int | str] = ["batch", *value.shape[1:]]
        if value.ndim == 2 and not value.is_floating_point():
            dims[1] = "seq"
        specs.append(TensorSpec(name, canonical_dtype(str(value.dtype)), tuple(dims)))
    return specs


def check_rows(rows: Sequence[Row], specs: Sequence[TensorSpec], where: str) -> None:
    """Names, dtypes, ranks and fixed dims of every row against ``specs``; labels one class index per row."""
    for i, row in enumerate(rows):
        feeds = {k: v.numpy() for k, v in row.items() if k != LABELS}
        check_feeds(feeds, specs, f"{where} {i}")
        labels = row.get(LABELS)
        if labels is not None and labels.shape != (1,):
            raise InputError(
                f"{where} {i}: labels must hold one class index per sample, got shape {list(labels.shape)}"
            )
    if rows and any((LABELS in r) != (LABELS in rows[0]) for r in rows):
        raise InputError(f"{where}s: some samples have labels and some do not")
    _check_padding(rows, where)


def _check_padding(rows: Sequence[Row], where: str) -> None:
    """Rows must stack: equal shapes, except rank 2 token inputs that an attention mask lets us pad."""
    if not rows:
        return
    for name, first in rows[0].items():
        for i, row in enumerate(rows):
            shape = row[name].shape
            if shape == first.shape:
                continue
            if first.ndim != 2 or len(shape) != 2:
                raise InputError(
                    f"{where} {i}: input {name!r} has shape {list(shape)} but {where} 0 has {list(first.shape)}; "
                    "only rank 2 token inputs may vary in length"
                )
            if MASK not in rows[0]:
                raise InputError(
                    f"{where}s: input {name!r} varies in length ({first.shape[1]} and {shape[1]}) and the data has "
                    f"no {MASK} to mark padding"
                )


def check_names(row: Row, model: torch.nn.Module, role: str) -> None:
    """The data's input names must be ones ``forward`` takes, and cover every parameter it requires."""
    params = forward_params(model)
    names = [p.name for p in params]
    given = [k for k in row if k != LABELS]
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in _all_params(model))  # forward(**kwargs) takes any name
    for name in given:
        if name not in names and not takes_kwargs:
            raise InputError(f"distillation data has input {name!r} but the {role} takes: {', '.join(names) or 'none'}")
    for p in params:
        if p.default is p.empty and p.name not in given:
            raise InputError(f"distillation data lacks input {p.name!r} that the {role} needs")


def _all_params(model: torch.nn.Module) -> list[Any]:
    try:
        return list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return []


def check_labels(rows: Sequence[Row], logits: torch.Tensor) -> None:
    """Labels (kl only) must be class indices of ``[batch, classes]`` logits, or cross-entropy fails mid-run."""
    labeled = [r for r in rows if LABELS in r]
    if not labeled:
        return
    if logits.ndim != 2:
        raise InputError(f"labels need logits of shape [batch, classes]; the student returns {list(logits.shape)}")
    labels = torch.cat([r[LABELS] for r in labeled])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= logits.shape[1]:
        raise InputError(f"labels run from {low} to {high} but the models have {logits.shape[1]} classes")


def describe_feeds(feeds: Mapping[str, torch.Tensor]) -> str:
    """``input 'x' float32[2, 1, 8, 8]`` for each input, for errors about data that does not fit a model."""
    parts = [f"input {k!r} {str(v.dtype).removeprefix('torch.')}{list(v.shape)}" for k, v in feeds.items()]
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- batching


def collate(rows: Sequence[Row]) -> Batch:
    """Stack rows into a batch, padding variable-length rank 2 inputs with 0 to the longest row."""
    feeds: dict[str, torch.Tensor] = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if values[0].ndim == 2 and len({v.shape[1] for v in values}) > 1:
            longest = max(v.shape[1] for v in values)
            values = [torch.nn.functional.pad(v, (0, longest - v.shape[1])) for v in values]
        feeds[name] = torch.cat(values)
    labels = feeds.pop(LABELS, None)
    return Batch(feeds, None if labels is None else labels.reshape(-1))


class BatchPlan:
    """Which rows each step of each epoch takes, the same on every process: a seeded shuffle per epoch, cut
    into global batches of ``batch_size``; under ``world`` processes each takes a contiguous, near-equal share.

    With ``lengths`` (tokens per row), each run of :data:`BUCKET_BATCHES` batches of the shuffle is sorted by
    length before it is cut and the batches are then shuffled: a batch pads to its longest row, so grouping rows
    of similar length saves the compute padding wastes, while every batch still comes from a random stretch.
    A last partial batch is kept when every process gets at least one row of it, else dropped.
    """

    def __init__(
        self, rows: int, batch_size: int, seed: int, world: int = 1, rank: int = 0, lengths: Any = None
    ) -> None:
        self.rows, self.batch_size, self.seed, self.world, self.rank = rows, batch_size, seed, world, rank
        self.lengths = None if lengths is None else np.asarray(lengths)
        full, rest = divmod(rows, batch_size)
        self.steps_per_epoch = full + (1 if rest >= world else 0)
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def global_batch(self, epoch: int, index: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        if self.lengths is None:
            return order[index * self.batch_size : (index + 1) * self.batch_size]
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._bucketed(order, epoch))
        return self._epoch[1][index]

    def _bucketed(self, order: np.ndarray, epoch: int) -> list[np.ndarray]:
        assert self.lengths is not None
        span = self.batch_size * BUCKET_BATCHES
        runs = [order[i : i + span] for i in range(0, len(order), span)]
        ordered = np.concatenate([r[np.argsort(-self.lengths[r], kind="stable")] for r in runs])
        batches = [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        batches = batches[: self.steps_per_epoch]  # the partial tail, when dropped, is always last
        shuffle = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
        return [batches[i] for i in shuffle]

    def local_batch(self, epoch: int, index: int) -> tuple[np.ndarray, int]:
        """This process's row indices and the global batch size they belong to."""
        rows = self.global_batch(epoch, index)
        return np.array_split(rows, self.world)[self.rank], len(rows)


def row_lengths(rows: Sequence[Row]) -> np.ndarray | None:
    """Tokens per row (the longest rank 2 input's second axis), or None when no row has a length to pad."""
    lengths = [max((v.shape[1] for v in r.values() if v.ndim == 2), default=0) for r in rows]
    return np.asarray(lengths) if len(set(lengths)) > 1 else None


def shard(n: int, world: int, rank: int) -> np.ndarray:
    """This process's contiguous share of ``range(n)`` (validation rows)."""
    return np.array_split(np.arange(n), world)[rank]


# ------------------------------------------------------------------------------------------------- paths


def rows_from_path(
    path: str | os.PathLike[str], specs: Sequence[TensorSpec], tokenizer: Path | None, max_length: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Feeds from the same files calibration reads (.npz/.npy, a directory of them, text), nothing held back.

    Text is truncated at ``max_length`` tokens, by default the model's own (from the files beside its tokenizer).

    An ``.npz`` with a ``labels`` array (int64 class indices, one per row) also gives labels.
    """
    if not Path(path).exists():
        raise InputError(f"distillation data not found: {path}")
    specs = list(specs)
    if _has_labels(Path(path)):
        specs.append(TensorSpec(LABELS, "int64", ("batch",)))
    options = CalibrationOptions(samples=10**9, holdout=0, max_length=max_length, pack_every=10**9)
    try:
        return load_calibration(path, specs, options, tokenizer=tokenizer).calibration
    except InputError as exc:  # the loader words its errors for calibration: say what this data is for
        raise InputError(_reworded(str(exc))) from exc


def _reworded(message: str) -> str:
    for old, new in (("calibration sample", "distillation sample"), ("text calibration data", "text data"),
                     ("calibration ", "distillation ")):  # fmt: skip
        message = message.replace(old, new)
    return message


def _has_labels(path: Path) -> bool:
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files or files[0].suffix.lower() != ".npz":
        return False
    try:
        with np.load(files[0], allow_pickle=False) as data:
            return LABELS in data.files
    except Exception:  # unreadable: let calibration's loader say why, in its words
        return False


@dataclass
class LoadedPair:
    """Teacher and student modules, the input specs the data must fit, and the data as feed dicts."""

    teacher: torch.nn.Module
    student: torch.nn.Module
    specs: list[TensorSpec]
    train: list[dict[str, np.ndarray]]
    val: list[dict[str, np.ndarray]]


def load_pair_and_data(
    teacher: str | os.PathLike[str],
    student: str | os.PathLike[str],
    data: str | os.PathLike[str],
    val_data: str | os.PathLike[str] | None,
    *,
    allow_pickle: bool,
    max_length: int | None = None,
) -> LoadedPair:
    """Both sources and their data: specs from the teacher's example inputs, text through its tokenizer."""
    from edgekit.sources import load_source

    for path in (data, val_data):
        if path is not None and not Path(path).exists():
            raise InputError(f"distillation data not found: {path}")
    t, s = load_source(teacher, allow_pickle=allow_pickle), load_source(student, allow_pickle=allow_pickle)
    ref = t if t.example_inputs is not None else s
    if ref.example_inputs is None:
        raise InputError("neither source gives example inputs: return (model, example_inputs) from the factory")
    specs = specs_from_examples(ref.example_inputs, ref.dynamic_dims)
    tokenizer = _shared_tokenizer(t.extra_files, s.extra_files)
    train = rows_from_path(data, specs, tokenizer, max_length)
    val = rows_from_path(val_data, specs, tokenizer, max_length) if val_data is not None else []
    return LoadedPair(t.module, s.module, specs, train, val)


def _shared_tokenizer(teacher_files: Mapping[str, Path], student_files: Mapping[str, Path]) -> Path | None:
    t, s = teacher_files.get(TOKENIZER_FILE), student_files.get(TOKENIZER_FILE)
    if t is not None and s is not None and t.read_bytes() != s.read_bytes():
        raise InputError(f"teacher and student tokenizers differ ({t} vs {s}); distillation needs the same tokens")
    return t or s
