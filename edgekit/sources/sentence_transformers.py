"""sentence-transformers model directories: Transformer -> Pooling -> [Dense | Normalize]*, built from the
directory's files without importing sentence-transformers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import SourceError, one_line
from edgekit.sources._util import read_json
from edgekit.sources.huggingface import hf_metadata, hf_model, text_source, text_wrapper
from edgekit.sources.loaded import LoadedSource
from edgekit.sources.wrappers import torch_classes

if TYPE_CHECKING:
    import torch

# Legacy boolean pooling keys, in the order sentence-transformers concatenates the modes.
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json")


def load_sentence_transformers(path: Path) -> LoadedSource:
    """Transformer -> Pooling -> [Dense | Normalize]* built from the directory's files, without importing ST."""
    entries = _modules(path)
    if not entries or _module_type(entries[0]) != "Transformer":
        raise SourceError(f"{path}: the first module in modules.json must be a Transformer")
    if len(entries) < 2 or _module_type(entries[1]) != "Pooling":
        raise SourceError(f"{path}: a Pooling module must follow the Transformer in modules.json")
    transformer_dir = path / entries[0].get("path", "")
    modes = _pooling_modes(read_json(path / entries[1].get("path", "") / "config.json"), path)
    steps = [_step(entry, path) for entry in entries[2:]]
    st_config = _transformer_config(transformer_dir)
    model = hf_model(transformer_dir)
    wrapper = text_wrapper(model, torch_classes()["SentenceHead"](modes, steps))
    metadata = {
        **hf_metadata(model),
        "pooling": "+".join(modes),
        "normalize": bool(steps) and _module_type(entries[-1]) == "Normalize",
        "max_seq_length": st_config.get("max_seq_length") or _tokenizer_max_length(transformer_dir),
        "do_lower_case": bool(st_config.get("do_lower_case", False)),
    }
    return text_source(
        wrapper,
        model,
        path,
        transformer_dir,
        kind="sentence_transformers",
        metadata=metadata,
        output_names=["embedding"],
        output_kinds={"embedding": "embedding"},
    )


def _modules(path: Path) -> list[dict[str, Any]]:
    entries = read_json(path / "modules.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise SourceError(f"{path / 'modules.json'} is not a list of modules with a type each")
    return sorted(entries, key=lambda e: int(e.get("idx", 0)))


def _module_type(entry: dict[str, Any]) -> str:
    """The class name of a modules.json entry; ST's own classes only (others need trust_remote_code)."""
    type_name = str(entry["type"])
    return type_name.rsplit(".", 1)[-1] if type_name.startswith("sentence_transformers.") else type_name


def _pooling_modes(config: dict[str, Any], path: Path) -> list[str]:
    supported = tuple(_LEGACY_POOLING.values())
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [m for key, m in _LEGACY_POOLING.items() if config.get(key)] or ["mean"]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    unknown = [m for m in modes if m not in supported]
    if unknown:
        raise SourceError(f"{path}: unsupported pooling mode {unknown[0]!r} (supported: {', '.join(supported)})")
    return modes


def _step(entry: dict[str, Any], root: Path) -> torch.nn.Module:
    kind = _module_type(entry)
    directory = root / entry.get("path", "")
    config = read_json(directory / "config.json") if (directory / "config.json").is_file() else {}
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise SourceError(f"{root}: {kind} module on {config[key]!r} is not supported (only sentence_embedding)")
    if kind == "Normalize":
        return torch_classes()["L2Normalize"]()
    if kind == "Dense":
        return _dense(config, directory)
    raise SourceError(
        f"{root}: unsupported sentence-transformers module {entry['type']!r} (supported: Transformer, Pooling, "
        "Dense, Normalize)"
    )


def _dense(config: dict[str, Any], directory: Path) -> torch.nn.Module:
    from torch import nn

    activation_name = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    activation = getattr(nn, activation_name.rsplit(".", 1)[-1], None)
    if not activation_name.startswith("torch.") or not (
        isinstance(activation, type) and issubclass(activation, nn.Module)
    ):
        raise SourceError(f"{directory}: Dense activation {activation_name!r} is not a torch.nn module class")
    dense = torch_classes()["DenseLayer"](
        int(config["in_features"]),
        int(config["out_features"]),
        bias=bool(config.get("bias", True)),
        activation=activation(),
        residual=bool(config.get("use_residual", False)),
    )
    try:
        dense.load_state_dict(_module_weights(directory))
    except RuntimeError as exc:
        raise SourceError(f"{directory}: Dense weights do not match its config: {one_line(exc)}") from exc
    return dense


def _module_weights(directory: Path) -> dict[str, torch.Tensor]:
    import torch

    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(str(directory / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    raise SourceError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _transformer_config(directory: Path) -> dict[str, Any]:
    config = next((read_json(directory / n) for n in _CONFIG_FILES if (directory / n).is_file()), {})
    task = config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise SourceError(f"{directory}: Transformer task {task!r} is not supported (only feature-extraction)")
    return config


def _tokenizer_max_length(directory: Path) -> int | None:
    """Where sentence-transformers >= 5 keeps max_seq_length: the tokenizer's model_max_length."""
    path = directory / "tokenizer_config.json"
    value = read_json(path).get("model_max_length") if path.is_file() else None
    return int(value) if isinstance(value, (int, float)) and 0 < value < 1_000_000 else None
