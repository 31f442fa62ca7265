"""The pure TensorRT decisions: profiles, cache keys, dtypes, flags, options. No TensorRT or GPU needed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.errors import FeedError, InputError, RuntimeUnavailableError
from edgekit.runtimes.tensorrt import plan
from edgekit.runtimes.tensorrt import precision as prec
from edgekit.specs import TensorSpec

X = TensorSpec("x", "float32", ("batch", 3, "seq"))
MASK = TensorSpec("mask", "int64", ("batch", "seq"))
FIXED = TensorSpec("f", "float32", (2, 5))
SHA = "ab" * 32


# -- profile ----------------------------------------------------------------------------------------------


def test_default_dim_ranges_are_the_documented_ones() -> None:
    assert plan.default_dim_range("batch") == (1, 1, 32)
    assert plan.default_dim_range("batch_size") == (1, 1, 32)
    assert plan.default_dim_range("seq") == (1, 128, 512)
    assert plan.default_dim_range("x_dim0") == (1, 128, 512)


def test_profile_uses_defaults_and_keeps_fixed_dims() -> None:
    profile = plan.profile_shapes([X, FIXED])
    assert profile["x"] == ((1, 3, 1), (1, 3, 128), (32, 3, 512))
    assert profile["f"] == ((2, 5), (2, 5), (2, 5))


def test_profile_dims_override_a_symbol_in_every_input() -> None:
    profile = plan.profile_shapes([X, MASK], dims={"seq": (8, 64, 256)})
    assert profile["x"] == ((1, 3, 8), (1, 3, 64), (32, 3, 256))
    assert profile["mask"] == ((1, 8), (1, 64), (32, 256))


def test_profile_override_replaces_one_input_only() -> None:
    over = {"mask": ((2, 4), (4, 16), [8, 32])}
    profile = plan.profile_shapes([X, MASK], overrides=over)
    assert profile["mask"] == ((2, 4), (4, 16), (8, 32))
    assert profile["x"] == ((1, 3, 1), (1, 3, 128), (32, 3, 512))


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ({"seq": (4, 2, 8)}, "min <= opt <= max"),
        ({"seq": (1, 9, 8)}, "min <= opt <= max"),
        ({"seq": (0, 1, 8)}, "positive"),
        ({"seq": (1, 2)}, "expected (min, opt, max)"),
        ({"seq": "1,2,3"}, "expected (min, opt, max)"),
        ({"seq": (1, 2.5, 3)}, "integers"),
        ({"seq": (True, 1, 2)}, "integers"),
        ({"sequence": (1, 2, 3)}, "no symbolic dim 'sequence'"),
    ],
)
def test_profile_rejects_bad_dims(dims: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as info:
        plan.profile_shapes([X], dims=dims)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (((1, 3, 1), (1, 3, 8)), "expected (min_shape, opt_shape, max_shape)"),
        (((1, 3), (1, 3, 8), (2, 3, 8)), "must have rank 3"),
        (((1, 4, 1), (1, 4, 8), (2, 4, 8)), "dim 1 is fixed at 3"),
        (((2, 3, 1), (1, 3, 8), (4, 3, 8)), "min <= opt <= max"),
        (((1, 3, 0), (1, 3, 8), (4, 3, 8)), "positive"),
    ],
)
def test_profile_rejects_bad_overrides(override: Any, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        plan.profile_shapes([X], overrides={"x": override})


def test_profile_rejects_override_for_unknown_input() -> None:
    with pytest.raises(InputError, match="no input 'y'; its inputs: x"):
        plan.profile_shapes([X], overrides={"y": ((1,), (1,), (1,))})


def test_feed_shapes_checked_against_profile() -> None:
    profile = plan.profile_shapes([X], dims={"batch": (1, 2, 4), "seq": (8, 16, 32)})
    plan.check_shapes_in_profile(profile, {"x": (1, 3, 8)})  # both bounds inclusive
    plan.check_shapes_in_profile(profile, {"x": (4, 3, 32)})
    with pytest.raises(FeedError, match=r"shape \[5, 3, 8\] is outside the engine's profile min \[1, 3, 8\]"):
        plan.check_shapes_in_profile(profile, {"x": (5, 3, 8)})
    with pytest.raises(FeedError, match="outside"):
        plan.check_shapes_in_profile(profile, {"x": (1, 3, 7)})
    with pytest.raises(FeedError, match="outside"):
        plan.check_shapes_in_profile(profile, {"x": (1, 3)})


# -- cache keys and paths ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "model_sha256": SHA,
    "trt_version": "10.3.0",
    "gpu_name": "NVIDIA H100",
    "compute_capability": (9, 0),
    "build_options": {"precision_flags": ["FP16"], "workspace_bytes": 1 << 30},
}


def test_engine_cache_key_is_a_stable_hex_digest() -> None:
    key = plan.engine_cache_key(**BASE)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert plan.engine_cache_key(**BASE) == key
    reordered = dict(BASE, build_options={"workspace_bytes": 1 << 30, "precision_flags": ["FP16"]})
    assert plan.engine_cache_key(**reordered) == key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_sha256", "cd" * 32),
        ("trt_version", "10.3.1"),
        ("gpu_name", "NVIDIA A100"),
        ("compute_capability", (8, 0)),
        ("compute_capability", (9, 1)),
        ("build_options", {"precision_flags": [], "workspace_bytes": 1 << 30}),
        ("build_options", {"precision_flags": ["FP16"], "workspace_bytes": 1 << 29}),
        ("build_options", {"precision_flags": ["FP16"], "workspace_bytes": 1 << 30, "profile": {"x": [[1]]}}),
    ],
)
def test_engine_cache_key_changes_with_every_part(field: str, value: Any) -> None:
    assert plan.engine_cache_key(**dict(BASE, **{field: value})) != plan.engine_cache_key(**BASE)


def test_engine_cache_key_rejects_bad_inputs() -> None:
    with pytest.raises(InputError, match="64 hex"):
        plan.engine_cache_key(**dict(BASE, model_sha256="abc"))
    with pytest.raises(InputError, match="JSON"):
        plan.engine_cache_key(**dict(BASE, build_options={"x": object()}))
    with pytest.raises(InputError, match="GPU name"):
        plan.engine_cache_key(**dict(BASE, gpu_name=""))


def test_timing_cache_key_depends_on_trt_and_gpu_only() -> None:
    key = plan.timing_cache_key("10.3.0", "NVIDIA H100", (9, 0))
    assert key == plan.timing_cache_key("10.3.0", "NVIDIA H100", (9, 0))
    assert key != plan.timing_cache_key("10.4.0", "NVIDIA H100", (9, 0))
    assert key != plan.timing_cache_key("10.3.0", "NVIDIA L4", (9, 0))
    assert key != plan.timing_cache_key("10.3.0", "NVIDIA H100", (8, 9))


def test_cache_paths_share_the_timing_cache_across_models(tmp_path: Path) -> None:
    timing = plan.timing_cache_key("10.3.0", "NVIDIA H100", (9, 0))
    key_a = plan.engine_cache_key(**BASE)
    key_b = plan.engine_cache_key(**dict(BASE, model_sha256="cd" * 32))
    plan_a, timing_a = plan.cache_paths(tmp_path, key_a, timing)
    plan_b, timing_b = plan.cache_paths(tmp_path, key_b, timing)
    assert plan_a != plan_b and timing_a == timing_b
    assert plan_a.parent == tmp_path and timing_a.parent == tmp_path
    assert plan_a != timing_a


@pytest.mark.parametrize("key", ["../../etc/passwd", "ABCDEF0123456789", "abc", ""])
def test_cache_paths_reject_keys_that_are_not_digests(tmp_path: Path, key: str) -> None:
    with pytest.raises(InputError, match="hex digest"):
        plan.cache_paths(tmp_path, key, "0" * 32)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert plan.default_cache_dir() == tmp_path / ".cache" / "edgekit" / "tensorrt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert plan.default_cache_dir() == tmp_path / "xdg" / "edgekit" / "tensorrt"


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "engine.plan"
    plan.write_atomic(target, b"one")
    plan.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["engine.plan"]


def test_write_atomic_keeps_the_old_file_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "engine.plan"
    target.write_bytes(b"old")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(plan.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        plan.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["engine.plan"]


# -- dtypes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trt_name", "numpy_name"),
    [
        ("FLOAT", "float32"),
        ("HALF", "float16"),
        ("BF16", "bfloat16"),
        ("INT8", "int8"),
        ("INT32", "int32"),
        ("INT64", "int64"),
        ("BOOL", "bool"),
        ("UINT8", "uint8"),
    ],
)
def test_dtype_mapping_both_ways(trt_name: str, numpy_name: str) -> None:
    assert prec.numpy_dtype_for_trt(trt_name) == numpy_name
    assert prec.numpy_dtype_for_trt(f"DataType.{trt_name}") == numpy_name
    assert prec.trt_dtype_for_numpy(numpy_name) == trt_name


@pytest.mark.parametrize("name", ["FP8", "INT4", "FP4"])
def test_low_precision_trt_types_are_not_io_types(name: str) -> None:
    with pytest.raises(InputError, match=f"{name} has no numpy equivalent"):
        prec.numpy_dtype_for_trt(name)


def test_unknown_dtypes_are_errors() -> None:
    with pytest.raises(InputError, match="unknown TensorRT data type"):
        prec.numpy_dtype_for_trt("COMPLEX")
    with pytest.raises(InputError, match="TensorRT has no float64 tensors"):
        prec.trt_dtype_for_numpy("float64")


def test_bf16_bits_known_values_and_rounding() -> None:
    values = np.array([1.0, -2.0, 0.0, np.inf, 1.0 + 2**-8, 1.0 + 3 * 2**-8], dtype=np.float32)
    # 1 + 2^-8 is a tie between 1.0 and 1 + 2^-7: round to even (1.0); 1 + 3*2^-8 rounds up to even 1 + 2^-6
    assert prec.bf16_bits(values).tolist() == [0x3F80, 0xC000, 0x0000, 0x7F80, 0x3F80, 0x3F82]
    assert np.isnan(prec.float32_from_bf16_bits(prec.bf16_bits(np.array([np.nan], np.float32))))[0]


def test_bf16_round_trip_error_is_within_half_an_ulp() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((64, 8)).astype(np.float32)
    back = prec.float32_from_bf16_bits(prec.bf16_bits(values))
    assert back.shape == values.shape and back.dtype == np.float32
    assert np.all(np.abs(back - values) <= np.abs(values) * 2**-8)
    assert np.array_equal(prec.float32_from_bf16_bits(prec.bf16_bits(back)), back)


# -- versions and flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "major"), [("10.3.0.26", 10), ("11.0.0", 11), ("10", 10), (" 12.1", 12)])
def test_trt_major_version(text: str, major: int) -> None:
    assert prec.trt_major_version(text) == major


def test_trt_major_version_rejects_garbage() -> None:
    with pytest.raises(InputError, match="cannot read a TensorRT version"):
        prec.trt_major_version("unknown")


def test_old_tensorrt_is_unavailable() -> None:
    with pytest.raises(RuntimeUnavailableError, match="TensorRT 10 or newer"):
        prec.network_flags_for(8, False)
    with pytest.raises(RuntimeUnavailableError):
        prec.builder_precision_flags(9, "fp16")


@pytest.mark.parametrize(
    ("major", "typed", "flags"),
    [(10, False, ()), (10, True, ("STRONGLY_TYPED",)), (11, False, ()), (11, True, ()), (12, True, ())],
)
def test_network_flags(major: int, typed: bool, flags: tuple[str, ...]) -> None:
    assert prec.network_flags_for(major, typed) == flags
    assert "EXPLICIT_BATCH" not in prec.network_flags_for(major, typed)


@pytest.mark.parametrize(
    ("major", "requested", "graph", "precision", "typed"),
    [
        (11, None, "fp32", None, True),
        (11, True, "fp32", "fp16", True),
        (10, None, "fp32", None, False),
        (10, None, "fp32", "fp16", False),
        (10, None, "fp16", None, True),
        (10, None, "int8", "int8", True),
        (10, None, "int8", "fp16", False),
        (10, True, "fp32", None, True),
        (10, False, "fp16", None, False),
    ],
)
def test_resolve_strongly_typed(major: int, requested: bool | None, graph: str, precision: str | None, typed: bool):
    assert prec.resolve_strongly_typed(major, requested, graph, precision) is typed


def test_trt11_cannot_be_weakly_typed() -> None:
    with pytest.raises(InputError, match="always strongly typed"):
        prec.resolve_strongly_typed(11, False, "fp32", None)


@pytest.mark.parametrize(
    ("precision", "graph", "flags"),
    [
        (None, "fp32", ()),
        ("fp32", "fp32", ()),
        ("fp16", "fp32", ("FP16",)),
        ("float16", "fp32", ("FP16",)),
        ("bf16", "fp32", ("BF16",)),
        (None, "fp16", ("FP16",)),
        (None, "int8", ("INT8",)),
        ("int8", "int8", ("INT8",)),
        ("fp16", "int8", ("FP16", "INT8")),
    ],
)
def test_trt10_weakly_typed_builder_flags(precision: str | None, graph: str, flags: tuple[str, ...]) -> None:
    assert prec.builder_precision_flags(10, precision, graph=graph) == flags


def test_trt10_int8_needs_a_qdq_graph() -> None:
    with pytest.raises(InputError, match="edgekit convert --quantize int8"):
        prec.builder_precision_flags(10, "int8", graph="fp32")
    with pytest.raises(InputError, match="cannot run as fp32"):
        prec.builder_precision_flags(10, "fp32", graph="int8")


@pytest.mark.parametrize(("major", "typed"), [(11, False), (11, True), (10, True)])
def test_strongly_typed_takes_precision_from_the_graph(major: int, typed: bool) -> None:
    assert prec.builder_precision_flags(major, None, graph="fp32", strongly_typed=typed) == ()
    assert prec.builder_precision_flags(major, "fp16", graph="fp16", strongly_typed=typed) == ()
    assert prec.builder_precision_flags(major, "int8", graph="int8", strongly_typed=typed) == ()
    with pytest.raises(InputError, match=re.escape("edgekit convert --quantize fp16")) as info:
        prec.builder_precision_flags(major, "fp16", graph="fp32", strongly_typed=typed)
    assert "this graph is fp32" in str(info.value)
    assert ("strongly_typed': False" in str(info.value)) is (major == 10)


def test_graph_and_requested_precision_names() -> None:
    assert prec.graph_precision("int8-qdq") == "int8"
    assert prec.graph_precision("fp16") == "fp16"
    assert prec.graph_precision("fp32") == "fp32"
    with pytest.raises(InputError, match="dynamic-INT8"):
        prec.graph_precision("int8-dynamic")
    assert prec.normalize_precision(None) is None
    assert prec.normalize_precision("Half") == "fp16"
    assert prec.normalize_precision("bfloat16") == "bf16"
    assert prec.normalize_precision("TF32") == "tf32"
    with pytest.raises(InputError, match="expected one of: fp32, tf32, fp16, bf16, int8"):
        prec.normalize_precision("int4")


def test_effective_precision_reports_builder_flags_over_the_graph() -> None:
    assert prec.effective_precision("fp32", ()) == "fp32"
    assert prec.effective_precision("fp32", ("FP16",)) == "fp16"
    assert prec.effective_precision("fp32", ("BF16",)) == "bf16"
    assert prec.effective_precision("int8-qdq", ("FP16", "INT8")) == "int8-qdq"


@pytest.mark.parametrize(
    ("major", "requested", "graph", "flags", "cleared", "reported"),
    [
        (10, None, "fp32", (), ("TF32",), "fp32"),
        (10, "fp32", "fp32", (), ("TF32",), "fp32"),
        (10, "tf32", "fp32", ("TF32",), (), "tf32"),
        (11, None, "fp32", (), ("TF32",), "fp32"),
        (11, "tf32", "fp32", ("TF32",), (), "tf32"),
        (10, "fp16", "fp32", ("FP16",), ("TF32",), "fp16"),
        (10, None, "int8-qdq", (), ("TF32",), "int8-qdq"),
        (11, None, "fp16", (), ("TF32",), "fp16"),
    ],
)
def test_precision_plan_decides_tf32_flags_and_report_together(
    major: int, requested: str | None, graph: str, flags: tuple[str, ...], cleared: tuple[str, ...], reported: str
) -> None:
    """Guards finding 7.1: TF32 is cleared unless asked for, and the report follows the same decision."""
    decided = prec.precision_plan(major, requested, model_precision=graph, compute_capability=(8, 0))
    assert decided.builder_flags == flags and decided.cleared_flags == cleared and decided.reported == reported
    assert decided.tf32 is ("TF32" in flags)


def test_precision_plan_tf32_needs_an_fp32_graph_and_ampere() -> None:
    with pytest.raises(InputError, match="'tf32' applies to fp32 graphs; this graph is fp16"):
        prec.precision_plan(10, "tf32", model_precision="fp16")
    old_gpu = prec.precision_plan(10, "tf32", model_precision="fp32", compute_capability=(7, 5))
    assert old_gpu.tf32 and old_gpu.reported == "fp32"  # no TF32 units before compute capability 8.0
    with pytest.raises(InputError, match="not an ONNX graph precision"):
        prec.graph_precision("tf32")


def test_precision_plan_falls_back_where_trt10_predates_strong_typing() -> None:
    decided = prec.precision_plan(10, None, model_precision="fp16", can_type_strongly=False)
    assert decided.network_flags == () and decided.builder_flags == ("FP16",)
    with pytest.raises(InputError, match="STRONGLY_TYPED networks"):
        prec.precision_plan(10, None, model_precision="fp16", strongly_typed=True, can_type_strongly=False)


# -- options, device, parser errors -----------------------------------------------------------------------


def test_parse_options_defaults_and_values() -> None:
    assert plan.parse_options({}) == plan.TensorRTOptions()
    assert plan.parse_options({}).workspace_bytes == 1 << 30
    opts = plan.parse_options({"workspace_bytes": 1 << 28, "dims": {"seq": (1, 8, 16)}, "strongly_typed": True})
    assert opts.workspace_bytes == 1 << 28 and opts.dims == {"seq": (1, 8, 16)} and opts.strongly_typed is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workspace": 1}, "tensorrt: unknown option 'workspace'; accepted: workspace_bytes, profile, dims"),
        ({"workspace_bytes": 0}, "workspace_bytes must be a positive integer"),
        ({"workspace_bytes": True}, "workspace_bytes must be a positive integer"),
        ({"strongly_typed": "yes"}, "strongly_typed must be true or false"),
        ({"profile": [1, 2]}, "profile must be a mapping"),
        ({"dims": "seq=4"}, "dims must be a mapping"),
    ],
)
def test_parse_options_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        plan.parse_options(options)


@pytest.mark.parametrize(("device", "index"), [(None, 0), ("cuda", 0), ("cuda:0", 0), ("cuda:3", 3), ("CUDA:1", 1)])
def test_cuda_device_index(device: str | None, index: int) -> None:
    assert plan.cuda_device_index(device) == index


@pytest.mark.parametrize("device", ["cpu", "gpu", "cuda:", "cuda:-1", "cuda:x"])
def test_cuda_device_index_rejects_other_devices(device: str) -> None:
    with pytest.raises(InputError, match="'cuda' or 'cuda:N'"):
        plan.cuda_device_index(device)


def test_parser_error_line_is_one_line() -> None:
    line = plan.parser_error_line("m.onnx", ["In node 3 (Foo):\n  UNSUPPORTED_NODE", "second"])
    assert line == "TensorRT could not parse m.onnx: In node 3 (Foo): UNSUPPORTED_NODE (+1 more)"
    assert plan.parser_error_line("m.onnx", ["only"]) == "TensorRT could not parse m.onnx: only"
    assert "no parser error" in plan.parser_error_line("m.onnx", [])
