"""An INT8 variant made on a CPU with INT8 dot products (VNNI, AMX) is not silently used on a CPU without them:
the manifest records the CPU it was judged on, and loading falls back to the base model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgekit
import edgekit.cpu
from edgekit.artifact import MANIFEST_NAME
from edgekit.converters.quantize.model import quantize_model
from edgekit.converters.quantize.nncf_engine import nncf_available
from edgekit.converters.quantize.options import QuantizeOptions
from edgekit.runtimes.loading import model_ref


@pytest.fixture
def int8_artifact(tmp_path: Path, mlp_onnx) -> Path:
    np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32))
    out = tmp_path / "art"
    edgekit.convert(mlp_onnx.path, out, quantize="int8-dynamic", calib_data=tmp_path / "c.npy")
    return out


def _record_flags(artifact: Path, flags: dict[str, list[str]]) -> None:
    path = artifact / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["variant_cpu_flags"] = flags
    path.write_text(json.dumps(data))


def test_the_speed_flags_of_a_precision_are_the_ones_this_cpu_has():
    have = set(edgekit.cpu.numeric_cpu_flags())
    assert set(edgekit.cpu.speed_flags_for("int8-dynamic")) == have & set(edgekit.cpu.INT8_DOT_FLAGS)
    assert set(edgekit.cpu.speed_flags_for("bf16")) == have & set(edgekit.cpu.BF16_FLAGS)
    assert edgekit.cpu.speed_flags_for("fp32") == []


def test_a_variant_loads_where_the_cpu_has_what_it_was_chosen_for(int8_artifact, monkeypatch):
    monkeypatch.setattr(edgekit.cpu, "numeric_cpu_flags", lambda: ["avx2", "avx512_vnni"])
    _record_flags(int8_artifact, {"onnxruntime": ["avx512_vnni", "amx_int8"]})
    assert model_ref(int8_artifact, "onnxruntime").path.name == "model.int8-dynamic.onnx"


def test_without_those_flags_the_base_model_is_loaded_with_a_warning(int8_artifact, monkeypatch):
    monkeypatch.setattr(edgekit.cpu, "numeric_cpu_flags", lambda: ["avx2"])
    _record_flags(int8_artifact, {"onnxruntime": ["avx512_vnni"]})
    with pytest.warns(UserWarning, match="chosen on a CPU with avx512_vnni; this CPU has none of them"):
        ref = model_ref(int8_artifact, "onnxruntime")
    assert ref.path.name == "model.onnx" and ref.precision == "fp32"
    with edgekit.load(int8_artifact, "onnxruntime", variant="int8-dynamic") as session:  # asked for: loaded
        assert session.info().precision.startswith("int8")


def test_an_explicit_int8_variant_records_the_int8_instructions_it_was_judged_with(int8_artifact):
    manifest = json.loads((int8_artifact / MANIFEST_NAME).read_text())
    needed = edgekit.cpu.speed_flags_for("int8-dynamic")  # this CPU's VNNI/AMX, none on an AVX2-only CPU
    assert manifest["variant_cpu_flags"] == ({"onnxruntime": needed} if needed else {})


def test_an_artifact_without_recorded_flags_loads_its_variant_anywhere(int8_artifact, monkeypatch):
    monkeypatch.setattr(edgekit.cpu, "numeric_cpu_flags", lambda: [])
    _record_flags(int8_artifact, {})
    assert model_ref(int8_artifact, "onnxruntime").path.name == "model.int8-dynamic.onnx"


def test_bench_reports_the_size_of_the_file_each_target_runs(int8_artifact):
    from edgekit.benchmark import bench

    report = bench(int8_artifact, ["onnxruntime", "openvino"], iterations=1, duration=0.0, warmup=0.0,
                   warmup_iterations=1, rounds=1, cold_start=False, fidelity=False)  # fmt: skip
    sizes = {r.target: r.model_bytes for r in report.results}
    assert sizes["onnxruntime"] == (int8_artifact / "model.int8-dynamic.onnx").stat().st_size  # its variant
    assert sizes["openvino"] == (int8_artifact / "model.onnx").stat().st_size  # no variant: the FP32 model


def test_a_models_size_includes_its_external_data(tmp_path, mlp_onnx):
    import onnx

    from edgekit.benchmark.plan import onnx_file_bytes

    model = onnx.load(str(mlp_onnx.path))
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    assert (tmp_path / "w.bin").stat().st_size > 0
    assert onnx_file_bytes(path) == path.stat().st_size + (tmp_path / "w.bin").stat().st_size
    assert onnx_file_bytes(mlp_onnx.path) == mlp_onnx.path.stat().st_size


@pytest.mark.parametrize(
    ("machine", "flags", "saturates"),
    [("x86_64", ["avx2"], True), ("x86_64", ["avx2", "avx512f"], True), ("x86_64", ["avx2", "avx_vnni"], False),
     ("x86_64", ["avx2", "avx512f", "avx512_vnni"], False), ("AMD64", [], True), ("aarch64", [], False)],
)  # fmt: skip
def test_int8_products_saturate_on_x86_without_int8_dot_products(monkeypatch, machine, flags, saturates):
    monkeypatch.setattr(edgekit.cpu.platform, "machine", lambda: machine)
    monkeypatch.setattr(edgekit.cpu, "numeric_cpu_flags", lambda: flags)
    assert edgekit.cpu.int8_products_saturate() is saturates
    dynamic = QuantizeOptions(mode="int8-dynamic").for_this_cpu()
    assert dynamic.reduce_range is saturates  # 7-bit weights only where 8-bit ones would saturate
    assert QuantizeOptions(mode="int8").for_this_cpu().reduce_range is saturates
    assert QuantizeOptions(mode="int8", engine="nncf").for_this_cpu().reduce_range is saturates
    assert QuantizeOptions(mode="fp16").for_this_cpu().reduce_range is False
    assert QuantizeOptions(mode="int8-dynamic", reduce_range=True).for_this_cpu().reduce_range is True


@pytest.mark.parametrize("engine_mode", ["onnxruntime:int8-dynamic", "onnxruntime:int8", "nncf:int8"])
def test_reduce_range_gives_7_bit_weights_in_every_engine(tmp_path, mlp_onnx, engine_mode):
    engine, mode = engine_mode.split(":")
    if engine == "nncf" and not nncf_available():
        pytest.skip("the NNCF engine needs NNCF (pip install 'edgekit[nncf]')")
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(40)]
    widest = {}
    for reduce in (False, True):
        options = QuantizeOptions(mode=mode, engine=engine, reduce_range=reduce)
        dst = quantize_model(mlp_onnx.path, tmp_path / f"{reduce}.onnx", options, calib).path
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer if t.data_type == 3]
        assert weights, "no int8 weights"
        widest[reduce] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert widest[False] == 127 and widest[True] <= 64, widest  # [-64, 63] cannot overflow 16-bit pair sums
