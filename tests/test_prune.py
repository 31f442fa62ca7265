"""Pruning on small real models: structured (CNN channels, nn.TransformerEncoder and BERT heads/FFN), sparsity
kinds, bad input, unanalysable layers, and latency-aware pruning. Pruned models export and run on ONNX Runtime
and OpenVINO."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checks import assert_output_matches
from torch import nn

import edgekit
from edgekit.converters.prune import PruneOptions, parse_budget, prune_module, prune_until
from edgekit.converters.prune.latency import step_ratios
from edgekit.converters.prune.timing import export_for_timing
from edgekit.converters.prune.transformer import PrunedMultiheadAttention
from edgekit.errors import InputError
from edgekit.sources import load_source

# OpenVINO at its default (bf16 on CPUs with native bf16, else f32) and pinned both ways, so every CPU covers both.
TARGET_PRECISIONS = (("onnxruntime", None), ("openvino", None), ("openvino", "f32"), ("openvino", "bf16"))
MODELS = Path(__file__).parent / "models"


def _factory(name: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A test model as edgekit loads it (FILE.py:make): the module and its named example inputs."""
    source = load_source(f"{MODELS}/{name}.py:make")
    assert source.example_inputs is not None
    return source.module, source.example_inputs


def _cnn() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return _factory("cnn")


def _encoder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return _factory("transformer")


def _tiny_bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A 2-layer BERT (no download) behind edgekit's HF wrapper with sentence-transformers' mean + normalize."""
    import transformers

    from edgekit.sources.huggingface import text_wrapper
    from edgekit.sources.wrappers import torch_classes

    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    classes = torch_classes()
    head = classes["SentenceHead"](["mean"], [classes["L2Normalize"]()])
    return text_wrapper(transformers.BertModel(config).eval(), head), _text_feeds(2, 16)


def _text_feeds(batch: int, seq: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (batch, seq), generator=torch.Generator().manual_seed(seq))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _torch_out(model: nn.Module, feeds: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        return model(**feeds).numpy()


def _runs_everywhere(model: nn.Module, example: dict, other: dict, tmp_path: Path) -> None:
    """Export with edgekit's exporter; ONNX Runtime and OpenVINO match torch on inputs of another shape."""
    path = tmp_path / "pruned.onnx"
    export_for_timing(model, example, None, path)
    want = _torch_out(model, other)
    for target, precision in TARGET_PRECISIONS:
        with edgekit.load(path, target, precision=precision) as session:
            got = next(iter(session.run({k: v.numpy() for k, v in other.items()}).values()))
            assert_output_matches(session, want, got, f"{target} asked for {precision or 'its default'}")


# --- structured ----------------------------------------------------------------------------------------------


def test_cnn_half_channels_is_smaller_and_runs_on_every_runtime(tmp_path: Path) -> None:
    model, example = _cnn()
    original = copy.deepcopy(model.state_dict())
    result = prune_module(model, example, PruneOptions(0.5))
    pruned = result.module
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    assert pruned.features[0].in_channels == 3 and pruned.features[0].out_channels == 4
    assert pruned.features[4].out_channels == 8 and pruned.classifier.out_features == 10
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())  # the original is untouched
    json.dumps(result.plan)
    assert {row["name"] for row in result.plan["layers"]} == {"features.0", "features.4", "classifier"}
    _runs_everywhere(pruned, example, {"x": torch.randn(3, 3, 32, 32)}, tmp_path)


def test_cnn_ignored_layer_keeps_its_channels() -> None:
    model, example = _cnn()
    result = prune_module(model, example, PruneOptions(0.5, ignored_layers=("features.0",), importance="l2"))
    assert result.module.features[0].out_channels == 8 and result.module.features[4].out_channels == 8


def test_transformer_encoder_heads_and_ffn(tmp_path: Path) -> None:
    model, example = _encoder()
    result = prune_module(model, example, PruneOptions(0.5, heads_ratio=0.5))
    layers = result.module.encoder.layers
    for layer in layers:
        assert isinstance(layer.self_attn, PrunedMultiheadAttention) and layer.self_attn.num_heads == 1
        assert layer.linear1.out_features == 32 and layer.linear2.in_features == 32
        assert layer.norm1.normalized_shape == (32,)  # hidden size untouched
    assert result.macs_after < result.macs_before
    mask = torch.ones(3, 9, dtype=torch.int64)
    mask[0, 5:] = 0
    other = {"input_ids": torch.randint(0, 100, (3, 9)), "attention_mask": mask}
    assert _torch_out(result.module, other).shape == (3, 32)
    _runs_everywhere(result.module, example, other, tmp_path)


@pytest.mark.parametrize("batch_first", [True, False])
def test_pruned_attention_equals_attention_without_those_heads(batch_first: bool) -> None:
    """Removing heads 1 and 3 computes what the original computes with their output columns zeroed."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    pruned = PrunedMultiheadAttention(mha, [0, 2]).eval()
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    padding = torch.zeros(3, 5)
    padding[0, 3:] = float("-inf")
    per_head = torch.randn(3 * 4, 5, 5)
    with torch.no_grad():
        mha.out_proj.weight[:, 4:8] = 0
        mha.out_proj.weight[:, 12:16] = 0
        want = mha(x, x, x, key_padding_mask=padding, attn_mask=per_head, need_weights=False)[0]
        got = pruned(x, x, x, key_padding_mask=padding, attn_mask=per_head)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_tiny_bert_half_ffn_and_half_heads_stays_consistent(tmp_path: Path) -> None:
    model, example = _tiny_bert()
    result = prune_module(model, example, PruneOptions(0.5, heads_ratio=0.5, ffn_ratio=0.5))
    for layer in result.module.model.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 2 and attention.attention_head_size == 8
        assert attention.all_head_size == 16 == attention.num_attention_heads * attention.attention_head_size
        assert all(p.out_features == 16 for p in (attention.query, attention.key, attention.value))
        assert layer.attention.output.dense.in_features == 16 and layer.attention.output.dense.out_features == 32
        assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    json.dumps(result.plan)
    heads = [row for row in result.plan["layers"] if row["unit"] == "heads"]
    assert [(row["before"], row["after"], len(row["removed"])) for row in heads] == [(4, 2, 2)] * 2
    for seq in (7, 23):
        assert _torch_out(result.module, _text_feeds(3, seq)).shape == (3, 32)
    _runs_everywhere(result.module, example, _text_feeds(3, 23), tmp_path)


def test_bert_heads_only_equal_zeroed_output_columns() -> None:
    model, example = _tiny_bert()
    result = prune_module(model, example, PruneOptions(0.5, heads_ratio=0.5, ffn_ratio=0.0))
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer, row in zip(reference.model.encoder.layer, result.plan["layers"], strict=True):
            for head in row["removed"]:
                layer.attention.output.dense.weight[:, head * 8 : (head + 1) * 8] = 0
    feeds = _text_feeds(2, 11)
    np.testing.assert_allclose(_torch_out(result.module, feeds), _torch_out(reference, feeds), atol=1e-6)


def test_global_head_pruning_keeps_one_head_per_layer() -> None:
    model, example = _tiny_bert()
    result = prune_module(model, example, PruneOptions(0.75, global_pruning=True, heads_ratio=0.75, ffn_ratio=0.0))
    after = [row["after"] for row in result.plan["layers"] if row["unit"] == "heads"]
    assert sum(after) == 2 and all(n >= 1 for n in after)


def test_ignored_transformer_layer_is_left_whole() -> None:
    model, example = _tiny_bert()
    options = PruneOptions(0.5, ignored_layers=("model.encoder.layer.0",), heads_ratio=0.5)
    result = prune_module(model, example, options)
    first, second = result.module.model.encoder.layer
    assert first.attention.self.num_attention_heads == 4 and first.intermediate.dense.out_features == 64
    assert second.attention.self.num_attention_heads == 2 and second.intermediate.dense.out_features == 32


def test_taylor_removes_neurons_that_do_not_reach_the_output() -> None:
    """Neurons with big input weights but a zero output column: magnitude keeps them, Taylor drops them."""
    model, example = _encoder()
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.linear1.weight[:32] *= 10
            layer.linear2.weight[:, :32] = 0
    data = [{"input_ids": torch.randint(0, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.int64)}]
    taylor = prune_module(model, example, PruneOptions(0.5, importance="taylor"), data).module
    l1 = prune_module(model, example, PruneOptions(0.5)).module
    for t_layer, m_layer in zip(taylor.encoder.layers, l1.encoder.layers, strict=True):
        assert (t_layer.linear2.weight.abs().sum(0) > 0).all()  # every dead neuron went
        assert (m_layer.linear2.weight.abs().sum(0) == 0).any()  # magnitude kept some


def _text_batches(n: int = 3, vocab: int = 100) -> list[dict[str, torch.Tensor]]:
    """Batches of random token ids with some padding, as calibration text gives them."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        ids = torch.randint(1, vocab, (4, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_default_prunes_the_ffn_and_keeps_every_head() -> None:
    model, example = _tiny_bert()
    result = prune_module(model, example, PruneOptions(0.5))
    for layer in result.module.model.encoder.layer:
        assert layer.attention.self.num_attention_heads == 4 and layer.intermediate.dense.out_features == 32
    assert {row["unit"] for row in result.plan["layers"]} == {"ffn_neurons"}
    assert all(len(row["kept"]) == 32 for row in result.plan["layers"])


def test_activation_importance_keeps_the_neurons_that_fire() -> None:
    """Half the FFN neurons get the biggest weights of all but never fire (ReLU of a large negative bias): weight
    magnitude keeps them, activation importance keeps exactly the other half, which carries the output."""
    model, example = _encoder()
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.linear1.weight[:32] *= 5
            layer.linear1.bias[:32] = -1e3
            layer.linear2.weight[:, :32] *= 5
    data = _text_batches()
    by_activation = prune_module(model, example, PruneOptions(0.5, importance="activation"), data)
    by_weight = prune_module(model, example, PruneOptions(0.5), data)
    for row in by_activation.plan["layers"]:
        assert row["kept"] == list(range(32, 64)), row["name"]
    assert all(sum(i < 32 for i in row["kept"]) > 16 for row in by_weight.plan["layers"])  # the trap works
    feeds = _text_batches(1)[0]
    np.testing.assert_allclose(_torch_out(by_activation.module, feeds), _torch_out(model, feeds), atol=1e-5)


def test_activation_importance_drops_heads_that_add_nothing() -> None:
    """Head 0 of every layer has large query/key weights but a zero value projection: its output is zero, so the
    head goes (torch.nn.MultiheadAttention: scored through a stand-in, then put back before slicing)."""
    model, example = _encoder()
    with torch.no_grad():
        for layer in model.encoder.layers:
            attention = layer.self_attn
            attention.in_proj_weight[:16] *= 10  # query rows of head 0
            attention.in_proj_weight[32:48] *= 10  # key rows of head 0
            attention.in_proj_weight[64:80] = 0  # value rows of head 0
            attention.in_proj_bias[64:80] = 0
    options = PruneOptions(0.5, importance="activation", heads_ratio=0.5, ffn_ratio=0.0)
    result = prune_module(model, example, options, _text_batches())
    heads = [row for row in result.plan["layers"] if row["unit"] == "heads"]
    assert [row["kept"] for row in heads] == [[1], [1]]
    assert all(isinstance(layer.self_attn, nn.MultiheadAttention) for layer in model.encoder.layers)  # untouched
    feeds = _text_batches(1)[0]
    np.testing.assert_allclose(_torch_out(result.module, feeds), _torch_out(model, feeds), atol=1e-5)


def test_activation_importance_on_bert_ignores_padding() -> None:
    """Scores count real tokens only: the same sentences padded further rank the neurons the same way."""
    from edgekit.converters.prune.activation import activation_scores
    from edgekit.converters.prune.transformer import find_units

    model, _ = _tiny_bert()
    batch = _text_feeds(2, 10)
    padded = {k: torch.nn.functional.pad(v, (0, 6)) for k, v in batch.items()}
    units = find_units(model)
    short = activation_scores(model, units, [batch], heads=True, ffn=True)
    long = activation_scores(model, units, [padded], heads=True, ffn=True)
    assert short.keys() == long.keys() and len(short) == 4
    for key in short:
        torch.testing.assert_close(short[key], long[key], rtol=1e-4, atol=1e-6)


def test_activation_importance_needs_data_and_a_transformer() -> None:
    model, example = _encoder()
    with pytest.raises(InputError, match="activation importance needs data"):
        prune_module(model, example, PruneOptions(0.5, importance="activation"))
    cnn, cnn_example = _cnn()
    with pytest.raises(InputError, match="conv channels"):
        prune_module(cnn, cnn_example, PruneOptions(0.5, importance="activation"), [cnn_example])


def test_taylor_needs_data() -> None:
    model, example = _cnn()
    with pytest.raises(InputError, match="taylor importance needs data"):
        prune_module(model, example, PruneOptions(0.5, importance="taylor"))


# --- sparsity ------------------------------------------------------------------------------------------------


def test_unstructured_zeroes_the_ratio_and_keeps_shapes() -> None:
    model, example = _cnn()
    result = prune_module(model, example, PruneOptions(0.3, kind="unstructured"))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in result.module.state_dict().items()} == shapes
    for row in result.plan["layers"]:
        assert abs(row["sparsity"] - 0.3) < 0.02, row
    assert result.params_after == result.params_before and result.macs_after == result.macs_before
    assert "no latency gain" in result.plan["notes"][0]
    overall = prune_module(model, example, PruneOptions(0.3, kind="unstructured", global_pruning=True))
    assert abs(overall.plan["sparsity"] - 0.3) < 0.01


def test_two_four_leaves_two_zeros_in_every_group_of_four() -> None:
    model, example = _tiny_bert()
    result = prune_module(model, example, PruneOptions(0.5, kind="2:4"))
    dense = result.module.model.encoder.layer[0].intermediate.dense.weight
    assert dense.shape == (64, 32)
    assert ((dense.reshape(-1, 4) == 0).sum(dim=1) >= 2).all()
    cnn_result = prune_module(*_cnn(), PruneOptions(0.5, kind="2:4"))
    conv = cnn_result.module.features[4].weight.movedim(1, -1)  # groups along input channels
    assert ((conv.reshape(-1, 4) == 0).sum(dim=1) >= 2).all()
    assert any("features.0" in note for note in cnn_result.plan["notes"])  # 3 input channels: skipped, said so


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, float("nan"), True])
def test_ratio_outside_zero_one_is_bad_input(ratio: float) -> None:
    with pytest.raises(InputError, match="ratio") as info:
        PruneOptions(ratio)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"heads_ratio": 1.0}, "heads_ratio"), ({"kind": "2:8"}, "prune kind"), ({"importance": "l3"}, "importance")],
)
def test_bad_options_are_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        PruneOptions(0.5, **kwargs)


def test_torchscript_module_is_bad_input() -> None:
    model, example = _cnn()
    with pytest.raises(InputError, match="TorchScript"):
        prune_module(torch.jit.trace(model, example["x"]), example, PruneOptions(0.5))


def test_unknown_ignored_layer_is_bad_input() -> None:
    with pytest.raises(InputError, match=r"'features\.9'"):
        prune_module(*_cnn(), PruneOptions(0.5, ignored_layers=("features.9",)))


class _ThroughNumpy(nn.Module):
    """A 'custom op' that leaves torch: Torch-Pruning cannot trace what depends on the conv before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.tanh(x.detach().numpy()))


class _MyAttention(nn.Module):
    """Attention edgekit does not know: channel pruning through it could mix heads."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v


def _with(op: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), op, nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()  # fmt: skip


def test_unanalysable_layer_is_bad_input_naming_it() -> None:
    example = {"input": torch.randn(2, 3, 16, 16)}
    with pytest.raises(InputError, match=r"layer '2' \(_ThroughNumpy\)") as info:
        prune_module(_with(_ThroughNumpy()), example, PruneOptions(0.5))
    assert "\n" not in str(info.value)
    # ignoring it is the user's way out: what it hides from the trace stays whole, the rest is pruned
    result = prune_module(_with(_ThroughNumpy()), example, PruneOptions(0.5, ignored_layers=("2",)))
    assert result.module[0].out_channels == 8 and result.module[3].out_channels == 4


def test_unknown_attention_is_bad_input_naming_it() -> None:
    model = nn.Sequential(nn.Linear(8, 8), _MyAttention(), nn.Linear(8, 2)).eval()
    with pytest.raises(InputError, match=r"layer '1' \(_MyAttention\)"):
        prune_module(model, {"input": torch.randn(2, 5, 8)}, PruneOptions(0.5))


# --- latency-aware -------------------------------------------------------------------------------------------


def _params_ms(model: nn.Module) -> float:
    """A deterministic stand-in for latency: 1 ms per 1000 parameters."""
    return sum(p.numel() for p in model.parameters()) / 1000


def test_prune_until_stops_at_the_budget() -> None:
    model, example = _cnn()
    result = prune_until(model, example, budget=1.0, target="onnxruntime", step=0.1, measure=_params_ms)
    record = result.plan["prune_until"]
    steps = record["steps"]
    assert record["met"] and [s["ratio"] for s in steps] == [0.0, 0.1, 0.2]
    assert steps[-1]["latency_ms"] <= 1.0 < steps[-2]["latency_ms"]
    assert steps[-1]["params"] == result.params_after == sum(p.numel() for p in result.module.parameters())
    assert all(a["macs"] > b["macs"] for a, b in itertools.pairwise(steps))


def test_prune_until_stops_at_max_ratio_when_the_budget_is_out_of_reach() -> None:
    model, example = _cnn()
    result = prune_until(model, example, 0.001, "onnxruntime", step=0.25, max_ratio=0.6, measure=_params_ms)
    record = result.plan["prune_until"]
    assert not record["met"] and [s["ratio"] for s in record["steps"]] == [0.0, 0.25, 0.5, 0.6]
    assert result.plan["ratio"] == 0.6 and any("not met" in note for note in result.plan["notes"])


def test_prune_until_times_on_the_target() -> None:
    """One real run: export, time in a separate ONNX Runtime process; a generous budget stops at once."""
    model, example = _cnn()
    result = prune_until(model, example, budget=1000.0, target="onnxruntime")
    steps = result.plan["prune_until"]["steps"]
    assert result.plan["prune_until"]["met"] and len(steps) == 1 and 0 < steps[0]["latency_ms"] < 1000


def test_prune_until_bad_input() -> None:
    model, example = _cnn()
    with pytest.raises(InputError, match="budget"):
        prune_until(model, example, budget=0, target="onnxruntime", measure=_params_ms)
    with pytest.raises(InputError, match="max_ratio"):
        prune_until(model, example, budget=1, target="onnxruntime", max_ratio=1.0, measure=_params_ms)
    with pytest.raises(InputError, match="unknown target"):
        prune_until(model, example, budget=1, target="nope")


def test_step_ratios_end_at_max_ratio() -> None:
    assert step_ratios(0.1, 0.9) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert step_ratios(0.2, 0.5) == [0.2, 0.4, 0.5]


@pytest.mark.parametrize(("text", "ms"), [("latency<=6ms", 6.0), (" latency < 2.5 ms ", 2.5), ("latency<=0.5s", 500.0)])
def test_parse_budget(text: str, ms: float) -> None:
    budget = parse_budget(text)
    assert budget.kind == "latency" and budget.value == pytest.approx(ms)


@pytest.mark.parametrize(("text", "factor"), [("speedup>=1.3", 1.3), (" SPEEDUP > 2x ", 2.0), ("speedup>=.5", 0.5)])
def test_parse_speedup_budget(text: str, factor: float) -> None:
    budget = parse_budget(text)
    assert budget.kind == "speedup" and budget.value == pytest.approx(factor) and str(budget).startswith("speedup>=")


@pytest.mark.parametrize(
    "text",
    ["latency<=6", "latency>=6ms", "6ms", "latency<=0ms", "size<=6ms", "", "speedup<=2", "speedup>=0", "speedup"],
)
def test_parse_budget_rejects_bad_text(text: str) -> None:
    with pytest.raises(InputError, match="latency") as caught:
        parse_budget(text)
    assert "speedup>=1.3" in str(caught.value) and "\n" not in str(caught.value)


def test_prune_until_speedup_is_relative_to_the_unpruned_model() -> None:
    model, example = _cnn()
    result = prune_until(model, example, parse_budget("speedup>=1.5"), "onnxruntime", step=0.1, measure=_params_ms)
    record = result.plan["prune_until"]
    steps = record["steps"]
    assert record["met"] and record["speedup"] == 1.5 and steps[0]["speedup"] == 1.0
    assert steps[-1]["speedup"] >= 1.5 > steps[-2]["speedup"]
    assert steps[-1]["speedup"] == pytest.approx(steps[0]["latency_ms"] / steps[-1]["latency_ms"], rel=1e-3)


def _probe_until(floor_params: int) -> tuple[list[float], object]:
    """A stand-in probe: a pruned model 'keeps fidelity' while it has at least ``floor_params`` parameters."""
    seen: list[float] = []

    def probe(ratio: float, result: object) -> dict:
        seen.append(ratio)
        params = sum(p.numel() for p in result.module.parameters())  # type: ignore[attr-defined]
        return {"seconds": 0.0, "fidelity": {"params": params}, "met": params >= floor_params}

    return seen, probe


def test_prune_until_probes_upward_and_keeps_the_largest_ratio_that_passes() -> None:
    model, example = _cnn()
    first = prune_until(model, example, 1.0, "onnxruntime", step=0.1, measure=_params_ms)
    within = first.plan["prune_until"]["steps"][-1]  # ratio 0.2, the first within budget
    seen, probe = _probe_until(floor_params=within["params"] - 1)  # 0.2 passes, 0.3 has fewer params
    result = prune_until(model, example, 1.0, "onnxruntime", step=0.1, measure=_params_ms, probe=probe)
    record = result.plan["prune_until"]
    assert seen == [0.2, 0.3] and [p["met"] for p in record["probes"]] == [True, False]
    assert record["met"] and result.plan["ratio"] == 0.2 and "ratio 0.2" in record["decision"]
    assert [s["ratio"] for s in record["steps"]] == [0.0, 0.1, 0.2, 0.3]


def test_prune_until_probes_stop_at_the_cap() -> None:
    model, example = _cnn()
    seen, probe = _probe_until(floor_params=0)
    result = prune_until(model, example, 1.0, "onnxruntime", step=0.1, measure=_params_ms, probe=probe, max_probes=3)
    assert seen == [0.2, 0.3, 0.4] and result.plan["ratio"] == 0.4 and result.plan["prune_until"]["met"]


def test_prune_until_is_not_met_when_the_first_ratio_within_budget_misses_the_floor() -> None:
    model, example = _cnn()
    seen, probe = _probe_until(floor_params=10**9)
    result = prune_until(model, example, 1.0, "onnxruntime", step=0.1, measure=_params_ms, probe=probe)
    record = result.plan["prune_until"]
    assert seen == [0.2] and not record["met"] and record["decision"].startswith("none: ratio 0.2")
    seen, probe = _probe_until(floor_params=0)
    result = prune_until(model, example, 0.001, "onnxruntime", step=0.3, max_ratio=0.6, measure=_params_ms, probe=probe)
    assert seen == [] and not result.plan["prune_until"]["met"] and "not met" in result.plan["prune_until"]["decision"]


def test_prune_until_times_the_quantized_model_on_onnxruntime() -> None:
    """Real export, ONNX Runtime dynamic INT8 and timing in a separate process; a static scheme without
    calibration data is timed in FP32 and says why."""
    model, example = _encoder()
    result = prune_until(model, example, budget=1000.0, target="onnxruntime", scheme="int8-dynamic")
    record = result.plan["prune_until"]
    assert record["timed"] == "int8-dynamic" and record["steps"][0]["timed"] == "int8-dynamic"
    result = prune_until(model, example, budget=1000.0, target="onnxruntime", scheme="int8")
    step = result.plan["prune_until"]["steps"][0]
    assert step["timed"] == "fp32" and "calibration" in step["note"]
