"""Hugging Face model directories, loaded offline behind a plain-tensor wrapper with text example inputs."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.artifact import TOKENIZER_DIR
from edgekit.errors import SourceError, one_line
from edgekit.provenance import weights_sha256
from edgekit.sources.examples import forward_names
from edgekit.sources.loaded import TOKENIZER_FILES, LoadedSource
from edgekit.sources.wrappers import torch_classes

if TYPE_CHECKING:
    import torch

_EXAMPLE_BATCH, _EXAMPLE_SEQ = 2, 16
_TEXT_DIMS = {0: "batch", 1: "seq"}


def load_huggingface(path: Path) -> LoadedSource:
    model = hf_model(path)
    wrapper = text_wrapper(model, head=None)
    return text_source(wrapper, model, path, path, kind="huggingface", metadata=hf_metadata(model))


def text_source(
    wrapper: torch.nn.Module,
    model: Any,
    path: Path,
    tokenizer_dir: Path,
    *,
    kind: str,
    metadata: dict[str, Any],
    output_names: list[str] | None = None,
    output_kinds: dict[str, str] | None = None,
) -> LoadedSource:
    """The LoadedSource for a text model behind ``wrapper``: random ordinary token ids, batch and seq axes,
    the tokenizer files; without ``output_names``, the name of the model's first output, which is a classifier's
    scores when the model is a ``*For...Classification`` head."""
    names = forward_names(wrapper)
    id_range = _token_id_range(tokenizer_dir, _vocab_size(model))
    examples = _text_examples(names, id_range)
    if output_names is None:
        output_names = [_first_output_name(model, examples)]
        if type(model).__name__.endswith("Classification"):
            output_kinds = {output_names[0]: "classifier", **(output_kinds or {})}
    return LoadedSource(
        module=wrapper,
        example_inputs=examples,
        kind=kind,
        ref=str(path),
        sha256=weights_sha256(path),
        input_names=names,
        output_names=output_names,
        dynamic_dims={name: dict(_TEXT_DIMS) for name in names},
        int_ranges=_text_int_ranges(names, id_range),
        extra_files=_tokenizer_files(tokenizer_dir),
        metadata=metadata,
        output_kinds=dict(output_kinds or {}),
    )


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Forbid the Hub for the duration of a load, and hide transformers' progress bars."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(dict.fromkeys(saved, "1"))
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def hf_model(path: Path) -> Any:
    """The model class named by ``config.architectures[0]`` when transformers has it, else AutoModel."""
    import torch

    with _offline():
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            model_cls = _architecture_class(transformers, config)
            model = model_cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except Exception as exc:
            raise SourceError(f"cannot load Hugging Face model from {path}: {one_line(exc)}") from exc
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # no past_key_values in the outputs
    return model.eval()


def _architecture_class(transformers: Any, config: Any) -> Any:
    name = (getattr(config, "architectures", None) or [None])[0]
    if name:
        with contextlib.suppress(Exception):
            cls = getattr(transformers, name, None)
            if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
                return cls
    return transformers.AutoModel


def text_wrapper(model: Any, head: Any) -> torch.nn.Module:
    params = inspect.signature(model.forward).parameters
    if "input_ids" not in params or "attention_mask" not in params:
        raise SourceError(
            f"{type(model).__name__} does not take input_ids and attention_mask: write a FILE.py:FUNCTION that wraps it"
        )
    classes = torch_classes()
    cls = classes["TextModelWithTypes"] if "token_type_ids" in params else classes["TextModel"]
    return cls(model, head).eval()


def _vocab_size(model: Any) -> int:
    embeddings = model.get_input_embeddings()
    return int(getattr(embeddings, "num_embeddings", None) or model.config.vocab_size)


def _token_id_range(directory: Path, vocab_size: int) -> tuple[int, int]:
    """The widest run of ordinary token ids: random ids from it never hit [CLS], [SEP], [PAD] and friends."""
    hi = vocab_size - 1
    try:
        data = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
        added = [t for t in data.get("added_tokens", []) if isinstance(t.get("id"), int)]
        size = max([len(data.get("model", {}).get("vocab") or ()), *(t["id"] + 1 for t in added)])
    except (OSError, ValueError, AttributeError, TypeError):
        return 0, hi
    hi = min(hi, size - 1) if size > 0 else hi
    specials = sorted({t["id"] for t in added if t.get("special") and 0 <= t["id"] <= hi})
    best, start = (0, -1), 0
    for stop in [*specials, hi + 1]:
        if stop - 1 - start > best[1] - best[0]:
            best = (start, stop - 1)
        start = stop + 1
    return best if best[1] >= best[0] else (0, hi)


def _text_examples(names: list[str], id_range: tuple[int, int]) -> dict[str, torch.Tensor]:
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (_EXAMPLE_BATCH, _EXAMPLE_SEQ)
    values = {
        "input_ids": torch.randint(id_range[0], id_range[1] + 1, shape, generator=generator, dtype=torch.int64),
        "attention_mask": torch.ones(shape, dtype=torch.int64),
        "token_type_ids": torch.zeros(shape, dtype=torch.int64),
    }
    return {name: values[name] for name in names}


def _text_int_ranges(names: list[str], id_range: tuple[int, int]) -> dict[str, tuple[int, int]]:
    ranges = {"input_ids": id_range, "attention_mask": (1, 1), "token_type_ids": (0, 0)}
    return {name: ranges[name] for name in names}


def _first_output_name(model: Any, examples: dict[str, torch.Tensor]) -> str:
    """The name of the output the wrapper returns (the first one), found by one run on the example inputs."""
    import torch

    try:
        with torch.no_grad():
            outputs = model(**examples, return_dict=True)
    except Exception as exc:
        raise SourceError(f"{type(model).__name__} failed on example text inputs: {one_line(exc)}") from exc
    return next(iter(outputs.keys()))


def hf_metadata(model: Any) -> dict[str, Any]:
    config = model.config
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "vocab_size": _vocab_size(model),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
    }


def _tokenizer_files(directory: Path) -> dict[str, Path]:
    return {f"{TOKENIZER_DIR}/{name}": directory / name for name in TOKENIZER_FILES if (directory / name).is_file()}
