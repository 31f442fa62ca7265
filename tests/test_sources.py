"""Tests for edgekit.sources: every source form, loaded for real, and every error it reports."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekit.errors import InputError, SourceError
from edgekit.sources import LoadedSource, bundled_minilm_dir, load_source, source_kind

MODELS = Path(__file__).parent / "models"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TEXTS = [
    "Edge devices run small models.",
    "A much longer sentence, so that the batch needs padding and the mask really matters for pooling here.",
    "hi",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(source: LoadedSource) -> torch.Tensor:
    assert source.example_inputs is not None
    with torch.no_grad():
        return source.module(**source.example_inputs)


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


def mlp_and_input() -> tuple[nn.Module, torch.Tensor]:
    source = load_source(f"{MODELS / 'mlp.py'}:make")
    assert source.example_inputs is not None
    return source.module, source.example_inputs["x"]


# ------------------------------------------------------------------------------------------------ import


def test_import_does_not_import_torch() -> None:
    code = "import sys, edgekit.sources; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# ------------------------------------------------------------------------------------- python factories


def test_file_factory_names_examples_after_forward() -> None:
    file = MODELS / "mlp.py"
    source = load_source(f"{file}:make")
    assert source.kind == "python"
    assert source.ref == f"{file.resolve()}:make"
    assert source.sha256 == sha256(file)
    assert source.input_names == ["x"]
    assert source.example_inputs is not None and list(source.example_inputs) == ["x"]
    assert source.example_inputs["x"].shape == (2, 16)
    assert source.output_names is None and source.dynamic_dims is None
    assert source.metadata["architecture"] == "MLP"
    assert not source.module.training
    assert run(source).shape == (2, 4)


def test_file_factory_is_deterministic() -> None:
    a, b = load_source(f"{MODELS / 'cnn.py'}:make"), load_source(f"{MODELS / 'cnn.py'}:make")
    assert torch.equal(run(a), run(b))


def test_cnn_factory_uses_randomized_batchnorm_in_eval() -> None:
    source = load_source(f"{MODELS / 'cnn.py'}:make")
    bns = [m for m in source.module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    assert run(source).shape == (2, 10)


def test_transformer_factory_takes_ids_and_mask_of_any_batch_and_seq() -> None:
    source = load_source(f"{MODELS / 'transformer.py'}:make")
    assert source.input_names == ["input_ids", "attention_mask"]
    assert source.example_inputs is not None
    assert source.example_inputs["input_ids"].dtype == torch.int64
    assert run(source).shape == (2, 32)
    ids = torch.randint(0, 100, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.int64)
    mask[0, 12:] = 0
    with torch.no_grad():
        padded = source.module(ids, mask)
        alone = source.module(ids[:1, :12], mask[:1, :12])
    assert padded.shape == (3, 32)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)  # padding is masked out


def test_transformer_float_factory() -> None:
    source = load_source(f"{MODELS / 'transformer.py'}:make_float")
    assert source.input_names == ["x"]
    assert run(source).shape == (2, 32)


def test_bare_module_factory_has_no_examples(tmp_path: Path) -> None:
    write(
        tmp_path / "bare.py",
        """
        import torch

        class Net(torch.nn.Module):
            def forward(self, x, y, scale=2.0):
                return (x + y) * scale

        def build():
            return Net().train()
        """,
    )
    source = load_source(f"{tmp_path / 'bare.py'}:build")
    assert source.example_inputs is None
    assert source.input_names == ["x", "y"]  # parameters without a default
    assert not source.module.training


def test_dict_examples_are_put_in_forward_order(tmp_path: Path) -> None:
    write(
        tmp_path / "two.py",
        """
        import torch

        class Net(torch.nn.Module):
            def forward(self, a, b, c=None):
                return a - b

        def make():
            return Net(), {"b": torch.ones(2), "a": torch.zeros(2)}
        """,
    )
    source = load_source(f"{tmp_path / 'two.py'}:make")
    assert source.example_inputs is not None
    assert list(source.example_inputs) == ["a", "b"]
    assert source.input_names == ["a", "b"]
    torch.testing.assert_close(run(source), -torch.ones(2))


def test_single_tensor_example_is_accepted(tmp_path: Path) -> None:
    write(tmp_path / "one.py", "import torch\n\ndef make():\n    return torch.nn.ReLU(), torch.ones(3)\n")
    source = load_source(f"{tmp_path / 'one.py'}:make")
    assert source.example_inputs is not None and list(source.example_inputs) == ["input"]


def test_factory_may_import_its_neighbours_and_leaves_sys_path_alone(tmp_path: Path) -> None:
    write(tmp_path / "helper_for_edgekit_test.py", "import torch\n\ndef net():\n    return torch.nn.Tanh()\n")
    write(tmp_path / "uses.py", "from helper_for_edgekit_test import net\n\ndef make():\n    return net()\n")
    before = list(sys.path)
    assert isinstance(load_source(f"{tmp_path / 'uses.py'}:make").module, nn.Tanh)
    assert sys.path == before


def test_module_factory_from_an_importable_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "edgekit_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(MODELS / "mlp.py", package / "nets.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = load_source("edgekit_test_pkg.nets:make")
    assert source.kind == "python"
    assert source.ref == "edgekit_test_pkg.nets:make"
    assert source.sha256 == sha256(package / "nets.py")
    assert run(source).shape == (2, 4)


def test_module_factory_can_be_a_class() -> None:
    source = load_source("torch.nn:Identity")
    assert isinstance(source.module, nn.Identity)
    assert source.input_names == ["input"]


def test_factory_module_pickles_and_deepcopies() -> None:
    source = load_source(f"{MODELS / 'mlp.py'}:make")
    x = source.example_inputs["x"] if source.example_inputs else None
    for clone in (copy.deepcopy(source.module), pickle.loads(pickle.dumps(source.module))):
        torch.testing.assert_close(clone(x), source.module(x))


# ------------------------------------------------------------------------------------------- torch files


def test_exported_program_with_dynamic_batch(tmp_path: Path) -> None:
    model, x = mlp_and_input()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, tmp_path / "mlp.pt2")
    source = load_source(tmp_path / "mlp.pt2")
    assert source.kind == "exported_program"
    assert source.ref == str((tmp_path / "mlp.pt2").resolve())
    assert source.sha256 == sha256(tmp_path / "mlp.pt2")
    assert source.input_names == ["x"]
    assert source.example_inputs is not None
    torch.testing.assert_close(source.example_inputs["x"], x)
    assert source.dynamic_dims == {"x": {0: "batch"}}
    x5 = torch.randn(5, 16)
    torch.testing.assert_close(source.module(x5), model(x5))


def test_exported_program_shared_and_static_dims(tmp_path: Path) -> None:
    source = load_source(f"{MODELS / 'transformer.py'}:make")
    assert source.example_inputs is not None
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=64)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    program = torch.export.export(source.module, (), source.example_inputs, dynamic_shapes=shapes)
    torch.export.save(program, tmp_path / "enc.pt2")
    loaded = load_source(tmp_path / "enc.pt2")
    assert loaded.input_names == ["input_ids", "attention_mask"]
    assert loaded.dynamic_dims == {
        "input_ids": {0: "batch", 1: "input_ids_dim1"},
        "attention_mask": {0: "batch", 1: "input_ids_dim1"},
    }
    torch.testing.assert_close(run(loaded), run(source))

    model, x = mlp_and_input()
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "static.pt2")
    assert load_source(tmp_path / "static.pt2").dynamic_dims is None


@pytest.mark.parametrize(("how", "suffix"), [("trace", ".pt"), ("script", ".ts"), ("trace", ".pth")])
def test_torchscript(tmp_path: Path, how: str, suffix: str) -> None:
    model, x = mlp_and_input()
    scripted = torch.jit.trace(model, (x,)) if how == "trace" else torch.jit.script(model)
    path = tmp_path / f"mlp{suffix}"
    scripted.save(str(path))
    assert source_kind(path) == "torchscript"
    source = load_source(path)
    assert source.kind == "torchscript"
    assert source.input_names == ["x"]
    assert source.example_inputs is None
    assert source.sha256 == sha256(path)
    assert not source.module.training
    torch.testing.assert_close(source.module(x), model(x))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickled_module_needs_allow_pickle(tmp_path: Path, zipped: bool) -> None:
    model, x = mlp_and_input()
    path = tmp_path / "mlp.pt"
    torch.save(model, path, _use_new_zipfile_serialization=zipped)
    assert source_kind(path) == "pickle"
    with pytest.raises(SourceError, match=r"is a pickled model; loading it runs arbitrary code: pass --allow-pickle"):
        load_source(path)
    source = load_source(path, allow_pickle=True)
    assert source.kind == "pickle"
    assert source.input_names == ["x"]
    assert source.sha256 == sha256(path)
    torch.testing.assert_close(source.module(x), model(x))


def test_pickled_checkpoint_with_a_model_entry(tmp_path: Path) -> None:
    model, x = mlp_and_input()
    torch.save({"model": model, "epoch": 3}, tmp_path / "ckpt.pt")
    torch.testing.assert_close(load_source(tmp_path / "ckpt.pt", allow_pickle=True).module(x), model(x))


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_state_dict_is_refused(tmp_path: Path, allow_pickle: bool) -> None:
    model, _ = mlp_and_input()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(SourceError, match=r"state_dict .* no architecture: give a FILE\.py:FUNCTION"):
        load_source(tmp_path / "weights.pth", allow_pickle=allow_pickle)


def test_pickle_whose_class_is_gone(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import torch
        class Gone(torch.nn.Module):
            def forward(self, x):
                return x
        torch.save(Gone(), {str(tmp_path / "gone.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(SourceError, match=r"class is not importable here .*Gone"):
        load_source(tmp_path / "gone.pt", allow_pickle=True)


def test_non_module_pickle_is_refused(tmp_path: Path) -> None:
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(SourceError, match=r"holds a Tensor, not a model"):
        load_source(tmp_path / "tensor.pt")


# ------------------------------------------------------------------------------------------------ errors


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source file .*nope\.py does not exist"):
        load_source(f"{tmp_path / 'nope.py'}:make")
    with pytest.raises(SourceError, match=r"does not exist"):
        load_source(tmp_path / "nope.pt")


def test_function_not_found_names_function_and_file() -> None:
    with pytest.raises(SourceError, match=r"function 'mkae' not found in .*mlp\.py \(it defines: .*make"):
        load_source(f"{MODELS / 'mlp.py'}:mkae")


def test_module_not_importable() -> None:
    with pytest.raises(SourceError, match=r"cannot import module 'no_such_pkg_for_edgekit\.nets': ModuleNotFound"):
        load_source("no_such_pkg_for_edgekit.nets:make")


def test_function_not_found_in_module() -> None:
    with pytest.raises(SourceError, match=r"function 'NoSuchLayer' not found in module 'torch\.nn'"):
        load_source("torch.nn:NoSuchLayer")


def test_factory_raised() -> None:
    with pytest.raises(SourceError, match=r"factory .*broken\.py:raises raised RuntimeError: boom$"):
        load_source(f"{MODELS / 'broken.py'}:raises")


def test_factory_returned_no_module() -> None:
    with pytest.raises(SourceError, match=r"returned int, not an nn\.Module"):
        load_source(f"{MODELS / 'broken.py'}:not_a_module")


def test_file_that_does_not_import(tmp_path: Path) -> None:
    write(tmp_path / "bad.py", "def make(:\n    pass\n")
    with pytest.raises(SourceError, match=r"cannot import .*bad\.py: SyntaxError"):
        load_source(f"{tmp_path / 'bad.py'}:make")
    write(tmp_path / "oops.py", "raise ImportError('needs foo')\n")
    with pytest.raises(SourceError, match=r"cannot import .*oops\.py: ImportError: needs foo"):
        load_source(f"{tmp_path / 'oops.py'}:make")


def test_python_file_without_function() -> None:
    with pytest.raises(SourceError, match=r"name the function that builds the model, e\.g\. .*mlp\.py:make"):
        load_source(MODELS / "mlp.py")


def test_attribute_that_is_not_callable(tmp_path: Path) -> None:
    write(tmp_path / "const.py", "make = 3\n")
    with pytest.raises(SourceError, match=r"'make' in .*const\.py is a int, not a function"):
        load_source(f"{tmp_path / 'const.py'}:make")


def test_bad_example_inputs(tmp_path: Path) -> None:
    write(
        tmp_path / "ex.py",
        """
        import torch

        def too_many():
            return torch.nn.ReLU(), (torch.ones(1), torch.ones(1))

        def unknown_name():
            return torch.nn.ReLU(), {"inputs": torch.ones(1)}

        def not_a_tensor():
            return torch.nn.ReLU(), (3.0,)

        def missing():
            return torch.nn.Bilinear(2, 2, 2), {"input1": torch.ones(1, 2)}
        """,
    )
    base = tmp_path / "ex.py"
    with pytest.raises(SourceError, match=r"gave 2 example inputs but ReLU\.forward takes 1 \(input\)"):
        load_source(f"{base}:too_many")
    with pytest.raises(SourceError, match=r"example input 'inputs' is not a parameter of ReLU\.forward \(input\)"):
        load_source(f"{base}:unknown_name")
    with pytest.raises(SourceError, match=r"example input 'input' is a float, not a torch\.Tensor"):
        load_source(f"{base}:not_a_tensor")
    with pytest.raises(SourceError, match=r"example inputs miss forward parameter 'input2'"):
        load_source(f"{base}:missing")


def test_directory_that_is_no_model(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"is not a model: a Hugging Face model has config\.json"):
        load_source(tmp_path)


@pytest.mark.parametrize("name", ["junk.pt", "junk.pth", "junk.bin"])
def test_corrupt_torch_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match=r"cannot read .* as a PyTorch file"):
        load_source(tmp_path / name, allow_pickle=True)


def test_truncated_exported_program(tmp_path: Path) -> None:
    model, x = mlp_and_input()
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "full.pt2")
    (tmp_path / "cut.pt2").write_bytes((tmp_path / "full.pt2").read_bytes()[:2000])
    with pytest.raises(SourceError, match=r"cannot read .*cut\.pt2 as an exported program"):
        load_source(tmp_path / "cut.pt2")


def test_truncated_torchscript(tmp_path: Path) -> None:
    model, x = mlp_and_input()
    torch.jit.trace(model, (x,)).save(str(tmp_path / "full.pt"))
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-200] + bytes(200))  # zip directory intact, contents damaged
    with pytest.raises(SourceError, match=r"cannot read .*cut\.pt"):
        load_source(tmp_path / "cut.pt")


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(SourceError, match=r"notes\.txt is not a model source"):
        source_kind(tmp_path / "notes.txt")


def test_source_error_is_an_input_error_and_one_line() -> None:
    with pytest.raises(InputError) as info:
        load_source(f"{MODELS / 'broken.py'}:raises")
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------------------- source_kind


def test_source_kind_without_loading(tmp_path: Path) -> None:
    model, x = mlp_and_input()
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    torch.jit.trace(model, (x,)).save(str(tmp_path / "m.jit"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    assert source_kind(f"{MODELS / 'mlp.py'}:make") == "python"
    assert source_kind("some.package.module:build") == "python"
    assert source_kind(tmp_path / "m.pt2") == "exported_program"
    assert source_kind(tmp_path / "m.jit") == "torchscript"
    assert source_kind(tmp_path / "hf") == "huggingface"
    assert source_kind(tmp_path / "st") == "sentence_transformers"
    assert source_kind(bundled_minilm_dir()) == "sentence_transformers"
    with pytest.raises(SourceError, match=r"does not exist"):
        source_kind(tmp_path / "missing.pt2")


# ---------------------------------------------------------------------------------- Hugging Face directories


def tiny_bert_config(**overrides: object) -> object:
    import transformers

    settings = {
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        **overrides,
    }
    return transformers.BertConfig(**settings)


def save_hf(model: nn.Module, directory: Path) -> Path:
    """Save a transformers model with the MiniLM tokenizer files beside it."""
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_minilm_dir() / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers

    torch.manual_seed(0)
    return save_hf(transformers.BertModel(tiny_bert_config()), tmp_path_factory.mktemp("tiny_bert"))


def test_huggingface_sequence_classifier(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(tiny_bert_config(num_labels=3)).eval()
    save_hf(model, tmp_path)
    source = load_source(tmp_path)
    assert source.kind == "huggingface"
    assert source.ref == str(tmp_path.resolve())
    assert source.sha256 == sha256(tmp_path / "model.safetensors")
    assert source.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert source.output_names == ["logits"]
    assert source.metadata["architecture"] == "BertForSequenceClassification"
    assert source.dynamic_dims == {name: {0: "batch", 1: "seq"} for name in source.input_names}
    assert source.int_ranges == {"input_ids": (104, 30521), "attention_mask": (1, 1), "token_type_ids": (0, 0)}
    assert source.extra_files == {f"tokenizer/{n}": tmp_path / n for n in TOKENIZER_FILES}
    examples = source.example_inputs
    assert examples is not None and list(examples) == source.input_names
    assert all(t.shape == (2, 16) and t.dtype == torch.int64 for t in examples.values())
    assert int(examples["input_ids"].min()) >= 104
    assert torch.all(examples["attention_mask"] == 1) and torch.all(examples["token_type_ids"] == 0)
    with torch.no_grad():
        expected = model(**examples).logits
    torch.testing.assert_close(run(source), expected)


def test_huggingface_model_without_token_type_ids(tmp_path: Path) -> None:
    import transformers

    config = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    torch.manual_seed(0)
    save_hf(transformers.DistilBertModel(config), tmp_path)
    source = load_source(tmp_path)
    assert source.input_names == ["input_ids", "attention_mask"]
    assert source.output_names == ["last_hidden_state"]
    assert run(source).shape == (2, 16, 32)


def test_huggingface_unknown_architecture_falls_back_to_automodel(tmp_path: Path, tiny_bert_dir: Path) -> None:
    shutil.copytree(tiny_bert_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["architectures"] = ["BertForSomethingNobodyMade"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    source = load_source(tmp_path / "m")
    assert source.metadata["architecture"] == "BertModel"
    assert source.output_names == ["last_hidden_state"]


def test_huggingface_load_is_offline_and_restores_env(tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    load_source(tiny_bert_dir)
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_huggingface_wrapper_pickles_and_deepcopies(tiny_bert_dir: Path) -> None:
    source = load_source(tiny_bert_dir)
    expected = run(source)
    for clone in (copy.deepcopy(source.module), pickle.loads(pickle.dumps(source.module))):
        with torch.no_grad():
            torch.testing.assert_close(clone(**source.example_inputs), expected)


def test_huggingface_dir_without_weights(tmp_path: Path, tiny_bert_dir: Path) -> None:
    shutil.copy(tiny_bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(SourceError, match=r"cannot load Hugging Face model from .*: "):
        load_source(tmp_path)


# ----------------------------------------------------------------------------- sentence-transformers dirs


def st_module(name: str) -> type:
    from sentence_transformers.sentence_transformer import modules

    return getattr(modules, name)


def save_st(directory: Path, bert_dir: Path, pooling: object, *extra: nn.Module) -> Path:
    from sentence_transformers import SentenceTransformer

    transformer = st_module("Transformer")(str(bert_dir), max_seq_length=48)
    pool = st_module("Pooling")(32, pooling)
    SentenceTransformer(modules=[transformer, pool, *extra], device="cpu").save(str(directory))
    return directory


def st_reference(directory: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """sentence-transformers' own embeddings of TEXTS, and the tokenized batch it embedded."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    features = model.tokenize(TEXTS)
    embeddings = model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    return dict(features), embeddings


def embed(source: LoadedSource, features: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return source.module(**{name: features[name] for name in source.input_names})


def assert_same_embeddings(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=1)
    assert float(cosine.min()) >= 0.99999
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def minilm() -> LoadedSource:
    return load_source(bundled_minilm_dir())


def test_bundled_minilm_dir() -> None:
    path = bundled_minilm_dir()
    assert (path / "modules.json").is_file() and (path / "config.json").is_file()


def test_minilm_source_facts(minilm: LoadedSource) -> None:
    directory = bundled_minilm_dir()
    assert minilm.kind == "sentence_transformers"
    assert minilm.ref == str(directory.resolve())
    assert minilm.sha256 == sha256(directory / "model.safetensors")
    assert minilm.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert minilm.output_names == ["embedding"]
    assert minilm.metadata["pooling"] == "mean"
    assert minilm.metadata["normalize"] is True
    assert minilm.metadata["max_seq_length"] == 256
    assert minilm.metadata["architecture"] == "BertModel"
    assert minilm.int_ranges["input_ids"] == (104, 30521)
    assert {f"tokenizer/{n}" for n in TOKENIZER_FILES} <= set(minilm.extra_files)
    assert all(path.is_file() for path in minilm.extra_files.values())
    embedding = run(minilm)
    assert embedding.shape == (2, 384)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))


def test_minilm_matches_sentence_transformers(minilm: LoadedSource) -> None:
    features, expected = st_reference(bundled_minilm_dir())
    assert features["attention_mask"].min() == 0  # the batch is padded, so masked pooling is exercised
    assert_same_embeddings(embed(minilm, features), expected)


POOLING_MODES = ["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ("cls", "mean")]


@pytest.mark.parametrize("pooling", POOLING_MODES, ids=lambda m: m if isinstance(m, str) else "+".join(m))
def test_pooling_modes_match_sentence_transformers(tmp_path: Path, tiny_bert_dir: Path, pooling: object) -> None:
    directory = save_st(tmp_path / "st", tiny_bert_dir, pooling)
    source = load_source(directory)
    expected_mode = pooling if isinstance(pooling, str) else "+".join(pooling)
    assert source.metadata["pooling"] == expected_mode
    assert source.metadata["normalize"] is False
    assert source.metadata["max_seq_length"] == 48
    features, expected = st_reference(directory)
    assert_same_embeddings(embed(source, features), expected)


def test_dense_and_normalize_match_sentence_transformers(tmp_path: Path, tiny_bert_dir: Path) -> None:
    torch.manual_seed(0)
    dense = st_module("Dense")(32, 16)
    directory = save_st(tmp_path / "st", tiny_bert_dir, "mean", dense, st_module("Normalize")())
    source = load_source(directory)
    assert source.metadata["normalize"] is True
    weights = ["2_Dense/model.safetensors", "model.safetensors"]  # several weights files: hash of their hashes
    lines = "".join(f"{sha256(directory / name)}  {name}\n" for name in weights)
    assert source.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    features, expected = st_reference(directory)
    ours = embed(source, features)
    assert ours.shape == (3, 16)
    assert_same_embeddings(ours, expected)


def test_unsupported_st_module_is_named(tmp_path: Path, tiny_bert_dir: Path) -> None:
    directory = save_st(tmp_path / "st", tiny_bert_dir, "mean", st_module("Dropout")(0.1))
    with pytest.raises(SourceError, match=r"unsupported sentence-transformers module '.*Dropout'"):
        load_source(directory)


def test_st_dir_must_start_with_transformer_and_pooling(tmp_path: Path, tiny_bert_dir: Path) -> None:
    directory = save_st(tmp_path / "st", tiny_bert_dir, "mean")
    entries = json.loads((directory / "modules.json").read_text())
    (directory / "modules.json").write_text(json.dumps(entries[:1]))
    with pytest.raises(SourceError, match=r"a Pooling module must follow the Transformer"):
        load_source(directory)
    (directory / "modules.json").write_text(json.dumps(entries[1:]))
    with pytest.raises(SourceError, match=r"the first module in modules\.json must be a Transformer"):
        load_source(directory)


def test_st_unknown_pooling_mode(tmp_path: Path, tiny_bert_dir: Path) -> None:
    directory = save_st(tmp_path / "st", tiny_bert_dir, "mean")
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(SourceError, match=r"unsupported pooling mode 'median'"):
        load_source(directory)


def test_st_transformer_in_a_subdirectory(tmp_path: Path, tiny_bert_dir: Path) -> None:
    directory = save_st(tmp_path / "st", tiny_bert_dir, "cls")
    features, expected = st_reference(directory)
    entries = json.loads((directory / "modules.json").read_text())
    sub = directory / "0_Transformer"
    sub.mkdir()
    for path in list(directory.iterdir()):
        if path.is_file() and path.name not in ("modules.json", "config_sentence_transformers.json", "README.md"):
            path.rename(sub / path.name)
    entries[0]["path"] = "0_Transformer"
    (directory / "modules.json").write_text(json.dumps(entries))
    source = load_source(directory)
    assert source.extra_files["tokenizer/tokenizer.json"] == sub / "tokenizer.json"
    assert_same_embeddings(embed(source, features), expected)
