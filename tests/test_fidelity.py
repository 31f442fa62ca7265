"""The fidelity core: scale-aware tolerances, one cosine, output kinds, the one expression parser; and the gate
that uses them passing a correct deep CNN with large outputs while catching a 1% error in one conv weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgekit
from edgekit.converters.validate import Case, build_cases, check_session, require_passed
from edgekit.errors import InputError, ValidationError
from edgekit.fidelity import (
    TOLERANCES,
    compare_outputs,
    cosines,
    fidelity_metrics,
    output_kinds,
    parse_fidelity,
    parse_output_kinds,
    sample_cosines,
    tolerance_for,
)
from edgekit.runtimes.base import ModelRef
from edgekit.specs import TensorSpec

MODELS = Path(__file__).parent / "models"
CPU_TARGETS = [t for t in ("onnxruntime", "openvino") if t in edgekit.available_targets()]


# --- metrics ---------------------------------------------------------------------------------------------------


def test_cosines_per_row_and_per_sample() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(cosines(a, b), [0.0, 1.0, 1.0])  # two zero rows agree
    stacked = np.stack([a, b])  # two samples of shape [3, 2], each flattened
    assert sample_cosines(stacked, stacked).tolist() == pytest.approx([1.0, 1.0])
    assert cosines(np.array([1.0, 0.0]), np.array([np.nan, 0.0])) == -1.0  # undefined is a disagreement


def test_scale_error_is_caught_although_cosine_is_one() -> None:
    ref = {"y": np.random.default_rng(0).standard_normal((4, 50)) * 300}
    scaled = {"y": ref["y"] * 1.001}
    metrics = compare_outputs(ref, scaled, TOLERANCES["fp32"])["y"]
    assert metrics["min_cosine"] == pytest.approx(1.0) and not metrics["passed"]
    assert metrics["rel_l2"] == pytest.approx(1e-3, rel=1e-6)
    assert compare_outputs(ref, scaled, TOLERANCES["bf16"])["y"]["passed"]


def test_error_is_judged_relative_to_the_outputs_scale() -> None:
    """The same relative error passes at any magnitude: what 1e-6 relative is at 1 is 3e-4 absolute at 300."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 50))
    noise = rng.standard_normal((4, 50)) * 1e-6
    for scale in (1.0, 300.0, 1e5):
        ref, got = {"y": base * scale}, {"y": (base + noise) * scale}
        assert compare_outputs(ref, got, TOLERANCES["fp32"])["y"]["passed"], scale


def test_missing_misshapen_and_non_finite_outputs_fail() -> None:
    ref = {"y": np.ones((2, 3))}
    tol = TOLERANCES["int8"]
    assert compare_outputs(ref, {}, tol)["y"] == {"error": "output missing", "passed": False}
    assert "shape" in compare_outputs(ref, {"y": np.ones((3, 2))}, tol)["y"]["error"]
    assert "non-finite" in compare_outputs(ref, {"y": np.full((2, 3), np.inf)}, tol)["y"]["error"]


@pytest.mark.parametrize(
    ("precision", "key"),
    [("fp32", "fp32"), ("bf16", "bf16"), ("f16", "fp16"), ("tf32", "fp16"), ("int8-qdq (fp32 elsewhere)", "int8")],
)
def test_tolerance_follows_the_reported_precision(precision: str, key: str) -> None:
    assert tolerance_for(precision) == TOLERANCES[key]


# --- kinds and expressions -------------------------------------------------------------------------------------

_OUTS = [TensorSpec("logits", "float32", ("batch", 10)), TensorSpec("emb", "float32", ("batch", 8)),
         TensorSpec("seq", "float32", ("batch", "seq", 8)), TensorSpec("ids", "int64", ("batch", 5))]  # fmt: skip


def test_output_kinds_requested_over_declared_over_default() -> None:
    assert output_kinds(_OUTS) == {"logits": "classifier", "emb": "classifier", "seq": "tensor", "ids": "tensor"}
    declared = output_kinds(_OUTS, declared={"emb": "embedding"})
    assert declared["emb"] == "embedding" and declared["logits"] == "classifier"
    assert output_kinds(_OUTS, {"emb": "embedding"}, {"emb": "tensor"})["emb"] == "tensor"
    with pytest.raises(InputError, match="names output 'nope'"):
        output_kinds(_OUTS, requested={"nope": "classifier"})
    with pytest.raises(InputError, match="must be one of"):
        output_kinds(_OUTS, requested={"emb": "vector"})
    assert parse_output_kinds(["emb=embedding", " logits = classifier "]) == {
        "emb": "embedding",
        "logits": "classifier",
    }
    with pytest.raises(InputError, match="bad output kind"):
        parse_output_kinds(["emb"])


def test_top1_applies_to_classifiers_only() -> None:
    ref = [{"emb": np.array([[3.0, 1.0, 0.0]])}]
    got = [{"emb": np.array([[1.0, 3.0, 0.0]])}]
    assert "top1" not in fidelity_metrics(ref, got, {"emb": "embedding"})
    assert fidelity_metrics(ref, got, {"emb": "classifier"})["top1"] == 0.0
    goal = parse_fidelity("top1>=0.99")
    with pytest.raises(InputError, match="needs a classifier output"):
        goal.check_applies({"emb": "embedding"})
    goal.check_applies({"emb": "embedding", "logits": "classifier"})


def test_rel_l2_is_a_fidelity_metric() -> None:
    goal = parse_fidelity("rel_l2<=0.05")
    ref = [{"y": np.ones((2, 4))}]
    assert goal.met(fidelity_metrics(ref, [{"y": np.full((2, 4), 1.01)}]))
    assert not goal.met(fidelity_metrics(ref, [{"y": np.full((2, 4), 1.1)}]))
    with pytest.raises(InputError, match="bounded with <="):
        parse_fidelity("rel_l2>=0.05")


# --- the gate on a deep CNN with large outputs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, edgekit.Manifest]:
    out = tmp_path_factory.mktemp("deep") / "art"
    return out, edgekit.convert(f"{MODELS}/deep_cnn.py:make", out, validate_targets=CPU_TARGETS)


def test_deep_cnn_with_large_outputs_passes_the_gate(deep_cnn) -> None:
    _, manifest = deep_cnn
    assert set(manifest.validation) == set(CPU_TARGETS)
    ort = manifest.validation["onnxruntime"]
    assert ort["passed"] and ort["precision"] == "fp32"
    assert ort["max_abs"] > 0 and ort["rel_l2"] < TOLERANCES["fp32"].rel_l2
    assert manifest.output_kinds == {"output": "classifier"}  # float [batch, 100]: class scores by default


@pytest.mark.skipif("openvino" not in CPU_TARGETS, reason="needs openvino (pip install 'edgekit[openvino]')")
def test_deep_cnn_passes_on_openvino_pinned_f32(deep_cnn) -> None:
    out, _ = deep_cnn
    cases = _cases(_source(f"{MODELS}/deep_cnn.py:make"))
    with edgekit.load(out, "openvino", precision="f32") as session:
        report = check_session(session, cases)
    assert report.passed and report.precision == "fp32", report.failure


def test_one_conv_weight_off_by_one_percent_fails_the_gate(deep_cnn, tmp_path: Path) -> None:
    out, manifest = deep_cnn
    model = onnx.load(str(out / "model.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weight_name = convs[len(convs) // 2].input[1]  # a pointwise conv in the middle of the network
    init = next(i for i in model.graph.initializer if i.name == weight_name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), weight_name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, str(wrong))
    ref = ModelRef(path=wrong, inputs=tuple(manifest.input_specs()), outputs=tuple(manifest.output_specs()))
    cases = _cases(_source(f"{MODELS}/deep_cnn.py:make"))
    for target in CPU_TARGETS:
        precision = "f32" if target == "openvino" else None
        with edgekit.load(ref, target, precision=precision) as session:
            report = check_session(session, cases)
        assert not report.passed and "rel_l2" in report.failure, (target, report.rel_l2)
        assert report.min_cosine > 0.999  # cosine alone would have let it through
    with pytest.raises(ValidationError, match="parity gate failed"):
        require_passed(report)


def _source(ref: str) -> Any:
    from edgekit.sources import load_source

    return load_source(ref)


def _cases(source: Any) -> list[Case]:
    """The gate's own cases for ``source``: its example and fresh inputs at other batch sizes, torch references."""
    from edgekit.converters.export import ExportOptions, plan_io

    plan = plan_io(source, ExportOptions())
    return build_cases(source.module, plan.inputs, [o.name for o in plan.outputs], plan.example, plan.dim_sizes, {})


def test_convert_and_bench_read_the_same_output_kinds(tmp_path: Path, mlp_onnx) -> None:
    """An output marked as an embedding gets no top-1 in bench; the same output left alone is a classifier."""
    marked, plain = tmp_path / "marked", tmp_path / "plain"
    assert edgekit.convert(mlp_onnx.path, marked, kinds={"y": "embedding"}).output_kinds == {"y": "embedding"}
    assert edgekit.convert(mlp_onnx.path, plain).output_kinds == {"y": "classifier"}
    report = edgekit.bench([marked, plain], "onnxruntime", iterations=5, duration=0.0, warmup=0.0, rounds=1,
                           cold_start=False)  # fmt: skip
    top1 = {Path(r.model).name: r.fidelity["top1_agreement"] for r in report.results}
    assert top1 == {"marked": None, "plain": 1.0}


def test_the_mean_cosine_has_a_lower_confidence_bound_that_auto_judges_by():
    """A candidate scraping past ``cosine>=0.99`` on 256 held-back samples missed it on other text; auto reads
    the 95% lower bound of the mean instead, and a sample-size-aware bound tightens as samples grow."""
    from edgekit.fidelity import fidelity_metrics, parse_fidelity

    rng = np.random.default_rng(0)
    ref = [{"e": rng.standard_normal((1, 32))} for _ in range(256)]
    got = [{"e": r["e"] + rng.standard_normal((1, 32)) * rng.uniform(0.05, 0.2)} for r in ref]
    m = fidelity_metrics(ref, got, {"e": "embedding"})
    cos = np.array([float(np.dot(r["e"][0], g["e"][0]) / np.linalg.norm(r["e"]) / np.linalg.norm(g["e"]))
                    for r, g in zip(ref, got, strict=True)])  # fmt: skip
    assert m["cosine_lcb"] == pytest.approx(cos.mean() - 1.645 * cos.std(ddof=1) / np.sqrt(cos.size), abs=1e-9)
    assert m["cosine_lcb"] < m["cosine"]
    between = parse_fidelity(f"cosine>={(m['cosine'] + m['cosine_lcb']) / 2}")
    assert between.met(m) and not between.met(m, conservative=True)
    assert parse_fidelity("cosine>=0.5").met(m, conservative=True)
    assert parse_fidelity("min_cosine>=0.5").met(m, conservative=True)  # metrics without a bound: as measured
    old = {k: v for k, v in m.items() if k != "cosine_lcb"}  # recorded before the bound existed
    assert between.met(old, conservative=True)
    one = fidelity_metrics(ref[:1], got[:1], {"e": "embedding"})
    assert one["cosine_lcb"] == one["cosine"]
