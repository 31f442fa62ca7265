"""``--quantize auto``: fidelity expressions, layer sensitivity, the search that keeps sensitive layers in float,
the per-target choice with every candidate recorded, and the failure when nothing meets the target."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.benchmark.plan import BenchConfig
from edgekit.converters.calibration import CalibrationOptions, load_calibration
from edgekit.converters.quantize import QuantizeOptions, quantize_model
from edgekit.converters.quantize.auto import AutoOptions, auto_quantize, keep_files
from edgekit.converters.quantize.nncf_engine import nncf_available
from edgekit.converters.quantize.sensitivity import rank_nodes
from edgekit.errors import InputError, ValidationError
from edgekit.fidelity import fidelity_metrics, parse_fidelity
from edgekit.specs import TensorSpec

FAST = BenchConfig(warmup_iterations=2, warmup_s=0.0, iterations=5, duration_s=0.05, rounds=1)
SPECS = [TensorSpec("x", "float32", ("batch", "seq", 8))]


def outlier_model(path: Path, width: int = 8, hidden: int = 16, outlier: float = 300.0) -> Path:
    """Two MatMuls; the second one's input has one channel 300x larger than the rest (a transformer-like
    outlier), so quantizing that input loses the small channels while the first MatMul quantizes well."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((width, hidden)).astype(np.float32)
    boost = np.ones(hidden, np.float32)
    boost[3] = outlier
    w2 = rng.standard_normal((hidden, width)).astype(np.float32)
    w2[3] /= outlier
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
        helper.make_node("Mul", ["h", "boost"], ["hb"], name="boost"),
        helper.make_node("MatMul", ["hb", "w2"], ["y"], name="down"),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", width])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(boost, "boost"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def samples(n: int, seed: int = 0, width: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 2 + i % 4, width)).astype(np.float32)} for i in range(n)]


def references(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from edgekit.runtimes.loading import load, model_ref

    with load(model_ref(path)) as session:
        return [session.run(f) for f in feeds]


@pytest.mark.parametrize(
    ("expr", "metric", "op", "value"),
    [("cosine>=0.99", "cosine", ">=", 0.99), (" top1 >= 0.995 ", "top1", ">=", 0.995),
     ("max_abs<=1e-2", "max_abs", "<=", 0.01), ("min_cosine>0.9", "min_cosine", ">", 0.9)],
)  # fmt: skip
def test_fidelity_expressions_parse(expr, metric, op, value):
    (goal,) = parse_fidelity(expr).targets
    assert (goal.metric, goal.op, goal.threshold) == (metric, op, value)


@pytest.mark.parametrize("expr", ["cosine", "cosine=0.99", "cos>=0.99", "cosine>=abc", "max_abs>=0.1",
                                  "cosine>=1.5", "", "cosine>=0.99 and top1>=0.9"])  # fmt: skip
def test_bad_fidelity_expressions_are_input_errors(expr):
    with pytest.raises(InputError, match="bad fidelity expression"):
        parse_fidelity(expr)


def test_fidelity_metrics_take_the_worst_output():
    ref = [{"a": np.array([[1.0, 0.0, 0.0]]), "b": np.array([[0.0, 2.0, 1.0]])}]
    got = [{"a": np.array([[1.0, 0.0, 0.0]]), "b": np.array([[0.0, 1.0, 2.0]])}]
    m = fidelity_metrics(ref, got, {"a": "classifier", "b": "classifier"})
    assert m["cosine"] == pytest.approx(0.8) and m["top1"] == 0.0 and m["max_abs"] == 1.0 and m["samples"] == 1
    assert parse_fidelity("cosine>=0.79").met(m) and not parse_fidelity("top1>=0.5").met(m)


def test_sensitivity_ranks_the_outlier_layer_first(tmp_path):
    src = outlier_model(tmp_path / "m.onnx")
    for mode in ("int8", "int8-dynamic"):
        q = quantize_model(src, tmp_path / f"{mode}.onnx", QuantizeOptions(mode=mode), samples(20))
        ranking = rank_nodes(src, q.path, q.quantized_nodes, samples(8, 1))
        assert [n for n, _ in ranking] == ["down", "up"], mode
        assert ranking[0][1] > 10 * ranking[1][1]


def test_auto_keeps_the_sensitive_layer_in_float_and_records_every_candidate(tmp_path):
    src = outlier_model(tmp_path / "m.onnx")
    data = load_calibration(samples(60), SPECS, CalibrationOptions(holdout=20))
    refs = references(src, data.heldout)
    work = tmp_path / "work"
    work.mkdir()
    options = AutoOptions(parse_fidelity("cosine>=0.95"), ("onnxruntime", "openvino"), latency=FAST)
    result = auto_quantize(src, work, data, refs, data.calibration[0], options, lambda _: None)
    rows = {(r["target"], r["scheme"]): r for r in result.candidates}
    nncf = {("openvino", "int8-nncf"), ("openvino", "int8-nncf-sym")} if nncf_available() else set()
    assert set(rows) == {("onnxruntime", "fp32"), ("onnxruntime", "int8-dynamic"), ("onnxruntime", "int8"),
                         ("openvino", "fp32"), ("openvino", "int8"), *nncf}  # fmt: skip
    for row in rows.values():
        assert row["latency"]["p50_ms"] > 0 and "cosine" in row["fidelity"]
    for key in [("onnxruntime", "int8"), ("openvino", "int8"), ("onnxruntime", "int8-dynamic")]:
        assert rows[key]["meets"] and rows[key]["excluded_nodes"] == ["down"], key  # found by the search
    assert sum(bool(r.get("chosen")) for r in rows.values()) == 2
    for target in ("onnxruntime", "openvino"):  # the rule: the fastest of FP32 and the candidates meeting the goal
        eligible = sorted((r for (t, s), r in rows.items() if t == target and (r["meets"] or s == "fp32")),
                          key=lambda r: r["latency"]["p50_ms"])  # fmt: skip
        chosen = next(r for (t, _), r in rows.items() if t == target and r.get("chosen"))
        again = [r for r in eligible if "remeasured" in r]  # a near tie: the fastest and those within noise of it
        if again:
            assert len(again) >= 2 and again[0] is eligible[0], target
            assert chosen is min(again, key=lambda r: r["remeasured"]["p50_ms"]), target
        else:
            assert chosen is eligible[0], target
    art = tmp_path / "art"
    art.mkdir()
    variants = keep_files(result, art, "model.onnx")
    assert set(variants) == {"onnxruntime", "openvino"}
    for target, file in variants.items():
        assert file == "model.onnx" or (art / file).is_file(), target


def _row(scheme: str, path: Path | None, p50: float, rounds: list[float]) -> dict:
    return {"scheme": scheme, "path": str(path) if path else None, "meets": True,
            "latency": {"p50_ms": p50, "rounds_p50_ms": rounds}}  # fmt: skip


def test_a_clear_winner_is_kept_and_a_near_tie_is_timed_again(tmp_path):
    from edgekit.converters.quantize import auto

    src = outlier_model(tmp_path / "m.onnx")
    q = quantize_model(src, tmp_path / "q.onnx", QuantizeOptions(mode="int8-dynamic"), samples(10)).path
    options = AutoOptions(parse_fidelity("cosine>=0.5"), ("onnxruntime",), latency=FAST)
    ctx = auto._Context(src, tmp_path, None, [], options, lambda _: None)
    feeds = samples(1)[0]
    clear = [_row("fp32", None, 2.0, [2.0, 2.02]), _row("int8", q, 1.0, [1.0, 1.01])]
    assert auto._settle_near_tie(ctx, "onnxruntime", clear, clear[1], feeds) is clear[1]
    assert not any("remeasured" in r for r in clear)  # 2x apart: nothing to settle
    noisy = [_row("fp32", None, 1.1, [1.0, 1.6]), _row("int8", q, 1.0, [0.9, 1.4])]  # 10% apart, rounds 50%
    noisy[1]["chosen"] = True
    winner = auto._settle_near_tie(ctx, "onnxruntime", noisy, noisy[1], feeds)
    assert all(r["remeasured"]["p50_ms"] > 0 for r in noisy)
    assert winner is min(noisy, key=lambda r: r["remeasured"]["p50_ms"]) and winner.get("chosen")
    assert sum(bool(r.get("chosen")) for r in noisy) == 1


def test_every_candidate_within_noise_of_the_winner_is_timed_again_not_just_the_runner_up(tmp_path):
    from edgekit.converters.quantize import auto

    src = outlier_model(tmp_path / "m.onnx")
    q = quantize_model(src, tmp_path / "q.onnx", QuantizeOptions(mode="int8-dynamic"), samples(10)).path
    s = quantize_model(src, tmp_path / "s.onnx", QuantizeOptions(mode="int8"), samples(10)).path
    options = AutoOptions(parse_fidelity("cosine>=0.5"), ("onnxruntime",), latency=FAST)
    ctx = auto._Context(src, tmp_path, None, [], options, lambda _: None)
    rows = [_row("fp32", None, 2.0, [2.0, 2.01]), _row("int8-dynamic", q, 1.0, [1.0, 1.01]),
            _row("int8", s, 1.03, [1.03, 1.04])]  # fmt: skip
    rows[1]["chosen"] = True
    winner = auto._settle_near_tie(ctx, "onnxruntime", rows, rows[1], samples(1)[0])
    assert "remeasured" not in rows[0]  # FP32, 2x slower, is not within noise
    assert all(r["remeasured"]["p50_ms"] > 0 for r in rows[1:])
    assert winner is min(rows[1:], key=lambda r: r["remeasured"]["p50_ms"]) and winner.get("chosen")


def test_fp32_is_chosen_where_every_quantized_candidate_that_meets_the_goal_is_slower():
    """A CPU without INT8 dot products can run INT8 slower than FP32 (OpenVINO's static INT8 on AVX2): the FP32
    baseline is in the race, so auto never picks a variant slower than it."""
    from edgekit.converters.quantize import auto

    goal = parse_fidelity("cosine>=0.99")
    rows = [_row("fp32", None, 10.0, [10.0]), _row("int8", None, 11.0, [11.0]), _row("int8-nncf", None, 10.5, [10.5])]
    assert auto._choose("openvino", rows, goal)["scheme"] == "fp32"
    rows = [_row("fp32", None, 10.0, [10.0]), _row("int8-dynamic", None, 7.0, [7.0])]
    assert auto._choose("onnxruntime", rows, goal)["scheme"] == "int8-dynamic"


def test_auto_fails_with_the_best_candidates_numbers_when_nothing_meets(tmp_path):
    src = outlier_model(tmp_path / "m.onnx")
    data = load_calibration(samples(30), SPECS, CalibrationOptions(holdout=10))
    work = tmp_path / "work"
    work.mkdir()
    options = AutoOptions(parse_fidelity("max_abs<=1e-9"), ("onnxruntime",), latency=FAST)
    with pytest.raises(ValidationError, match=r"no candidate meets max_abs<=1e-09 on onnxruntime; best was .*p50"):
        auto_quantize(src, work, data, references(src, data.heldout), data.calibration[0], options, lambda _: None)


def test_cli_auto_on_an_onnx_model(tmp_path, mlp_onnx):
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32))
    out = tmp_path / "auto"
    result = subprocess.run(
        [sys.executable, "-m", "edgekit", "convert", str(mlp_onnx.path), "-o", str(out), "--quantize", "auto",
         "--calib-data", str(tmp_path / "c.npz"), "--fidelity", "cosine>=0.99", "--target", "onnxruntime", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    stage = manifest["stages"][-1]
    assert stage["name"] == "quantize" and stage["metrics"]["goal"] == "cosine>=0.99"
    chosen = [r for r in stage["metrics"]["candidates"] if r.get("chosen")]
    assert len(chosen) == 1 and manifest["variants"]["onnxruntime"] == (chosen[0]["file"] or "model.onnx")
    assert {r["scheme"] for r in stage["metrics"]["candidates"]} == {"fp32", "int8-dynamic", "int8"}
    from edgekit.cpu import numeric_cpu_flags, speed_flags_for

    decided = stage["metrics"]["decided_on"]  # so a reader knows which CPU the choice was made on
    assert decided["cpu_flags"] == numeric_cpu_flags() and decided["cpu_model"]
    file = manifest["variants"]["onnxruntime"]
    needed = speed_flags_for(manifest["variant_precisions"][file]) if file != "model.onnx" else []
    assert manifest["variant_cpu_flags"] == ({"onnxruntime": needed} if needed else {})


def test_auto_takes_a_candidate_only_when_the_lower_bound_of_its_mean_clears_the_goal(tmp_path):
    """A goal between a candidate's lower confidence bound and its mean: the mean alone would pass it, auto must
    not, and searches on (keeping nodes in float) instead."""
    src = outlier_model(tmp_path / "m.onnx")
    data = load_calibration(samples(60), SPECS, CalibrationOptions(holdout=20))
    refs = references(src, data.heldout)
    from edgekit.fidelity import run_all
    from edgekit.runtimes.loading import load, model_ref

    plain = quantize_model(src, tmp_path / "d.onnx", QuantizeOptions(mode="int8-dynamic"), data.calibration)
    with load(model_ref(plain.path), target="onnxruntime") as session:
        measured = fidelity_metrics(refs, run_all(session.run, data.heldout))
    threshold = (measured["cosine"] + measured["cosine_lcb"]) / 2
    assert parse_fidelity(f"cosine>={threshold}").met(measured)  # the mean alone passes
    work = tmp_path / "work"
    work.mkdir()
    options = AutoOptions(parse_fidelity(f"cosine>={threshold}"), ("onnxruntime",), latency=FAST)
    result = auto_quantize(src, work, data, refs, data.calibration[0], options, lambda _: None)
    first = next(s for s in result.search["int8-dynamic"] if s["kept_float"] == 0)
    assert first["fidelity"]["onnxruntime"]["cosine"] == pytest.approx(measured["cosine"])
    assert len(result.search["int8-dynamic"]) > 1  # not taken as it was: the search went on


def test_a_goal_must_hold_on_every_held_back_source_not_only_on_their_pool():
    """Held-back lines like the calibration text flatter a model; the worst source decides the per-sample
    metrics, and each source's numbers are kept."""
    from edgekit.converters.quantize.auto import worst_over_sources

    rng = np.random.default_rng(0)
    refs = [{"y": rng.standard_normal((1, 8))} for _ in range(40)]
    close = [{"y": r["y"] + 0.01 * rng.standard_normal((1, 8))} for r in refs[:30]]
    far = [{"y": r["y"] + 0.4 * rng.standard_normal((1, 8))} for r in refs[30:]]
    outputs = close + far
    pooled = fidelity_metrics(refs, outputs)
    slices = {"calib.txt": slice(0, 30), "corpus": slice(30, 40)}
    judged = worst_over_sources(pooled, slices, refs, outputs, {})
    corpus = fidelity_metrics(refs[30:], outputs[30:])
    assert judged["cosine"] == corpus["cosine"] < pooled["cosine"]
    assert judged["cosine_lcb"] == corpus["cosine_lcb"] and judged["max_abs"] == pooled["max_abs"]
    assert set(judged["by_source"]) == {"calib.txt", "corpus"} and judged["by_source"]["corpus"]["samples"] == 10
    goal = parse_fidelity(f"cosine>={(pooled['cosine_lcb'] + corpus['cosine']) / 2}")
    assert goal.met(pooled, conservative=True) and not goal.met(judged, conservative=True)
    assert worst_over_sources(pooled, {"one": slice(0, 40)}, refs, outputs, {}) is pooled


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic"])
def test_excluded_nodes_keep_float_activations_but_int8_weights(tmp_path, mode):
    """The search backs off activation quantization only: an excluded MatMul reads its weight through a
    per-channel DequantizeLinear (a quarter of the float size), and computes nearly what float does."""
    from edgekit.runtimes.loading import load, model_ref

    src = outlier_model(tmp_path / "m.onnx", width=64, hidden=128, outlier=1.0)  # weights worth compressing
    feeds = samples(20, width=64)
    options = QuantizeOptions(mode=mode).excluding(["down"])
    q = quantize_model(src, tmp_path / "q.onnx", options, feeds)
    as_float = quantize_model(src, tmp_path / "f.onnx", replace(options, excluded_weights="float"), feeds)
    model = onnx.load(str(q.path))
    down = next(n for n in model.graph.node if n.name == "down")
    dq = next(n for n in model.graph.node if down.input[1] in n.output)
    assert dq.op_type == "DequantizeLinear" and dq.input[0] == "w2_wq"
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert init["w2_wq"].dtype == np.int8 and init["w2_wq_scale"].shape == (64,) and "w2" not in init
    assert "w2" in {i.name for i in onnx.load(str(as_float.path)).graph.initializer}  # left float when asked
    refs = references(src, feeds[:4])
    for target in ("onnxruntime", "openvino"):
        with load(model_ref(q.path), target=target, precision="f32" if target == "openvino" else None) as s:
            got = [s.run(f) for f in feeds[:4]]
        assert fidelity_metrics(refs, got)["cosine"] > 0.99, target


def test_a_candidate_with_one_sample_outside_the_gate_is_not_taken():
    """The chosen variant must pass the parity gate afterwards: a mean that meets the goal is not enough when a
    held-back sample is outside the gate's per-sample bounds for that precision."""
    from edgekit.converters.quantize.auto import _meets, within_gate
    from edgekit.fidelity import tolerance_for

    tol = tolerance_for("int8-qdq")
    good = {"cosine": 0.995, "cosine_lcb": 0.994, "min_cosine": tol.min_cosine + 0.01, "rel_l2": tol.rel_l2 / 2}
    bad = {**good, "min_cosine": tol.min_cosine - 0.02}
    goal = parse_fidelity("cosine>=0.99")
    assert within_gate(good, "int8-qdq") and not within_gate(bad, "int8-qdq")
    assert _meets(goal, {**good, "within_gate": True}) and not _meets(goal, {**bad, "within_gate": False})


def _scores_model(path: Path) -> Path:
    """x[b, 4, 8] -> softmax(h @ h^T), h = norm(x) @ W: one weight MatMul and one activation x activation MatMul,
    attention-like (so NNCF takes it for a transformer and quantizes both)."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    gamma = numpy_helper.from_array(np.ones(8, np.float32), "gamma")
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma"], ["n"], name="norm", axis=-1),
        helper.make_node("MatMul", ["n", "w"], ["h"], name="proj"),
        helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1], name="t"),
        helper.make_node("MatMul", ["h", "ht"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "scores", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, 4])], [w, gamma],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.skipif(not nncf_available(), reason="NNCF (the nncf extra) is not installed")
def test_activation_matmuls_are_found_in_nncf_output_and_can_be_kept_in_float(tmp_path):
    from edgekit.converters.quantize.sensitivity import activation_matmuls

    src = _scores_model(tmp_path / "m.onnx")
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 4, 8)).astype(np.float32)} for i in range(8)]
    options = QuantizeOptions(mode="int8", engine="nncf")
    quantized = quantize_model(src, tmp_path / "q.onnx", options, feeds)
    assert activation_matmuls(quantized.path) == ["scores"]  # the weight MatMul is not one
    kept = quantize_model(src, tmp_path / "k.onnx", options.excluding(["scores"]), feeds)
    assert activation_matmuls(kept.path) == []
    assert activation_matmuls(src) == []  # a float model has none


@pytest.mark.skipif(not nncf_available(), reason="NNCF (the nncf extra) is not installed")
def test_a_missing_nncf_candidate_first_keeps_its_activation_matmuls_in_float(tmp_path):
    src = _scores_model(tmp_path / "m.onnx")
    specs = [TensorSpec("x", "float32", ("batch", 4, 8))]
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 4, 8)).astype(np.float32)} for i in range(30)]
    data = load_calibration(feeds, specs, CalibrationOptions(holdout=10))
    work = tmp_path / "work"
    work.mkdir()
    said: list[str] = []
    options = AutoOptions(parse_fidelity("max_abs<=1e-9"), ("openvino",), latency=FAST)
    with pytest.raises(ValidationError):  # nothing quantized is that exact; the search order is what is tested
        auto_quantize(src, work, data, references(src, data.heldout), data.calibration[0], options, said.append)
    for scheme in ("int8-nncf", "int8-nncf-sym"):
        group = said.index(f"auto: {scheme} with its 1 activation x activation MatMul(s) in float")
        assert said.index(f"auto: quantizing {scheme}") < group < said.index(f"auto: {scheme} misses max_abs<=1e-09; "
                                                                             "ranking layer sensitivity")  # fmt: skip
