"""``--drop-layers`` (whole encoder layers, chosen by measured effect) and ``--distill-hidden`` (intermediate-layer
losses) in ``edgekit convert``, and the trainer pieces they rely on."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from tiny_minilm import write_tiny_minilm
from torch import nn

import edgekit
from edgekit.converters.compress_request import CompressRequest
from edgekit.converters.distill.losses import feature_loss
from edgekit.converters.prune.layers import drop_layers, find_layer_stack, layer_pairs
from edgekit.errors import InputError

MODELS = Path(__file__).parent / "models"


def _bert(layers: int = 4) -> transformers.BertModel:
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


class Pooled(nn.Module):
    """BERT's mean-pooled last hidden state: one vector per text, as an embedding model returns."""

    def __init__(self, bert: transformers.BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1)


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 100, (8, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[:4, 9:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _silence(layer: nn.Module) -> None:
    """Make a BERT layer add nothing to the residual stream (its LayerNorms then return their input)."""
    with torch.no_grad():
        for dense in (layer.attention.output.dense, layer.output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
        for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()


def test_the_layer_that_does_least_is_dropped_wherever_it_sits():
    """Layer 2 of 4 is made (nearly) a no-op: measurement must find it, though position-based habits (the top
    layers, every other layer) would drop 3 or 1."""
    model = Pooled(_bert(4))
    _silence(model.bert.encoder.layer[2])
    before = [model(**b) for b in _batches()]
    plan = drop_layers(model, 1, _batches())
    assert plan["dropped"] == [2] and plan["kept"] == [0, 1, 3] and plan["stack"] == "bert.encoder.layer"
    effects = plan["rounds"][0]["mean_cosine_without"]
    assert set(effects) == {"0", "1", "2", "3"} and effects["2"] == max(effects.values()) > 0.999
    assert len(model.bert.encoder.layer) == 3
    after = [model(**b) for b in _batches()]
    cos = torch.cat([nn.functional.cosine_similarity(a, b) for a, b in zip(before, after, strict=True)])
    assert float(cos.mean().detach()) == pytest.approx(plan["mean_cosine_after"], abs=1e-4)


def test_greedy_rounds_measure_again_after_each_drop():
    model = Pooled(_bert(4))
    plan = drop_layers(model, 2, _batches(2))
    assert (
        len(plan["rounds"]) == 2 and len(plan["kept"]) == 2 and sorted(plan["dropped"] + plan["kept"]) == [0, 1, 2, 3]
    )
    first, second = plan["rounds"]
    assert str(first["dropped"]) not in second["mean_cosine_without"] and len(second["mean_cosine_without"]) == 3


def test_a_torch_transformer_encoder_keeps_its_layer_count_consistent():
    spec = importlib.util.spec_from_file_location("tiny_transformer", MODELS / "transformer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, _ = module.make()
    stack = find_layer_stack(model)
    assert stack is not None and stack.name == "encoder.layers"
    batches = [{"input_ids": torch.randint(0, 100, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long)}]
    drop_layers(model, 1, batches)
    assert len(model.encoder.layers) == 1 and model.encoder.num_layers == 1
    assert model(**batches[0]).shape == (4, 32)


@pytest.mark.parametrize("count", [0, 4, 5])
def test_a_count_outside_the_stack_is_bad_input(count):
    with pytest.raises(InputError, match="between 1 and 3"):
        drop_layers(Pooled(_bert(4)), count, _batches(1))


def test_a_model_without_an_encoder_stack_is_bad_input():
    with pytest.raises(InputError, match="transformer encoder"):
        drop_layers(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), 1, [{"x": torch.zeros(2, 4)}])


def test_student_layers_are_matched_to_the_teacher_layers_they_came_from():
    assert layer_pairs("enc.layer", [0, 3, 5]) == [("enc.layer.0", "enc.layer.0"), ("enc.layer.1", "enc.layer.3"),
                                                   ("enc.layer.2", "enc.layer.5")]  # fmt: skip


def test_hidden_state_loss_ignores_padding_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    changed = s.clone()
    changed[0, 3:] = 100.0  # only padded positions differ
    for kind in ("cosine", "mse"):
        base = feature_loss(kind, s, t, 2, mask)
        assert torch.allclose(base, feature_loss(kind, changed, t, 2, mask)), kind
        assert not torch.allclose(base, feature_loss(kind, changed, t, 2, None)), kind


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"drop_layers": -1}, "whole number"), ({"drop_layers": True}, "whole number"),
     ({"drop_layers": 1, "prune_until": "speedup>=1.2"}, "not both")],
)  # fmt: skip
def test_bad_drop_layer_requests_fail_before_any_work(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        CompressRequest(**kwargs)


def test_dropping_layers_alone_is_a_smaller_student_to_distil():
    request = CompressRequest(drop_layers=1, distill=True)
    assert request.prunes and request.active


# --- through convert --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_st3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's shape (tokenizer, pooling) around a 3-layer, 32-wide BERT."""
    return write_tiny_minilm(tmp_path_factory.mktemp("tiny_st3"), layers=3)


def test_convert_drops_layers_thins_the_rest_and_distils_hidden_states(tiny_st3, tmp_path):
    request = CompressRequest(prune=0.5, drop_layers=1, distill=True, distill_hidden=True, distill_texts=40,
                              distill_steps=2)  # fmt: skip
    manifest = edgekit.convert(tiny_st3, tmp_path / "art", compress=request)
    prune, distill = manifest.stages[0], manifest.stages[1]
    dropped = prune.metrics["layers_dropped"]
    assert len(dropped["kept"]) == 2 and len(dropped["rounds"][0]["mean_cosine_without"]) == 3
    assert prune.params["drop_layers"] == 1 and prune.params["ratio"] == 0.5
    assert [row["unit"] for row in prune.metrics["layers"]] == ["ffn_neurons"] * 2  # only the kept layers thinned
    assert prune.metrics["params_after"] < prune.metrics["params_before"]
    assert "fidelity_before_distillation" in prune.metrics
    stack = dropped["stack"]
    assert distill.params["hidden_layers"] == [[f"{stack}.{j}", f"{stack}.{t}"] for j, t in enumerate(dropped["kept"])]
    assert manifest.recipe["prune"]["drop_layers"] == 1 and manifest.recipe["distill"]["hidden"] is True
    with edgekit.Embedder(tmp_path / "art") as embedder:
        assert embedder.encode(["a short sentence", "another one, a little longer"]).shape == (2, 32)


def test_convert_can_drop_layers_without_thinning(tiny_st3, tmp_path):
    manifest = edgekit.convert(tiny_st3, tmp_path / "art", compress=CompressRequest(drop_layers=2))
    prune = manifest.stages[0]
    assert prune.params == {"drop_layers": 2} and "layers" not in prune.metrics
    assert len(prune.metrics["layers_dropped"]["kept"]) == 1
    assert prune.metrics["macs_after"] < prune.metrics["macs_before"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300)


def test_cli_drop_layers_without_data_to_measure_on_exits_2_and_writes_nothing(tmp_path):
    result = _cli("convert", f"{MODELS}/transformer.py:make", "-o", str(tmp_path / "t"), "--drop-layers", "1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--drop-layers" in result.stderr and not (tmp_path / "t").exists()


def test_cli_drop_layers_with_user_data_and_hidden_losses(tmp_path):
    ids = np.random.default_rng(0).integers(1, 100, (24, 12)).astype(np.int64)
    data = tmp_path / "d.npz"
    np.savez(data, input_ids=ids, attention_mask=np.ones_like(ids))
    result = _cli("convert", f"{MODELS}/transformer.py:make", "-o", str(tmp_path / "t"), "--drop-layers", "1",
                  "--distill-data", str(data), "--distill-steps", "2", "--distill-hidden", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    stages = json.loads(result.stdout)["stages"]
    assert stages[0]["metrics"]["layers_dropped"]["stack"] == "encoder.layers"
    assert len(stages[1]["params"]["hidden_layers"]) == 1


def test_hidden_state_losses_are_on_by_default_for_encoders_and_can_be_turned_off(tiny_st3, tmp_path):
    on = edgekit.convert(
        tiny_st3, tmp_path / "on", compress=CompressRequest(prune=0.5, distill=True, distill_texts=24, distill_steps=1)
    )
    pairs = on.stages[1].params["hidden_layers"]
    assert [s for s, _ in pairs] == [t for _, t in pairs] and len(pairs) == 3  # every layer against itself
    assert on.recipe["distill"]["hidden"] is True  # auto, as decided
    off = edgekit.convert(
        tiny_st3,
        tmp_path / "off",
        compress=CompressRequest(prune=0.5, distill=True, distill_texts=24, distill_steps=1, distill_hidden=False),
    )
    assert off.stages[1].params["hidden_layers"] == [] and off.recipe["distill"]["hidden"] is False
    assert off.stages[1].metrics["speed"]["teacher_cache"] is True
    assert "intermediate-layer" in on.stages[1].metrics["speed"]["teacher_cache_off"]
