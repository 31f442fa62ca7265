from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import FeedError, InputError
from edgekit.specs import (
    TensorSpec,
    available_memory_bytes,
    canonical_dtype,
    check_feeds_fit_memory,
    parse_dim_sizes,
    parse_spec,
    random_feeds,
)


def test_parse_spec_mixes_fixed_and_symbolic_dims():
    spec = parse_spec("pixel_values:float32[batch,3,224,224]")
    assert spec == TensorSpec("pixel_values", "float32", ("batch", 3, 224, 224))
    assert spec.symbolic_dims == {0: "batch"}
    assert spec.describe() == "pixel_values: float32[batch, 3, 224, 224]"


@pytest.mark.parametrize("text", ["x", "x:float32", "x:float32[a b]", "x:nope[1]", "x:float32[0]", "x:float32[-2]"])
def test_parse_spec_rejects_malformed(text):
    with pytest.raises(InputError):
        parse_spec(text)


def test_dtype_aliases():
    assert canonical_dtype("fp16") == "float16"
    assert canonical_dtype("torch.int64") == "int64"
    with pytest.raises(InputError, match="unknown dtype"):
        canonical_dtype("complex64")


def test_parse_dim_sizes():
    assert parse_dim_sizes(["batch=4", "seq=128"]) == {"batch": 4, "seq": 128}
    for bad in ("batch", "batch=0", "=3", "seq=x"):
        with pytest.raises(InputError):
            parse_dim_sizes([bad])


def test_concrete_shape_and_missing_dim():
    spec = TensorSpec("ids", "int64", ("batch", "seq"))
    assert spec.concrete_shape({"batch": 2, "seq": 7}) == (2, 7)
    with pytest.raises(InputError, match="--dim seq=N"):
        spec.concrete_shape({"batch": 2})


def test_random_feeds_follow_specs_and_ranges():
    specs = [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("x", "float16", ("batch", 4))]
    feeds = random_feeds(specs, {"batch": 3, "seq": 5}, int_range={"ids": (10, 12)})
    assert feeds["ids"].shape == (3, 5) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 10 and feeds["ids"].max() <= 12
    assert feeds["x"].shape == (3, 4) and feeds["x"].dtype == np.float16


def test_spec_round_trips_through_dict():
    spec = TensorSpec("y", "float32", ("batch", 384))
    assert TensorSpec.from_dict(spec.to_dict()) == spec


def test_feed_checks_are_public_and_match_what_a_session_says():
    from edgekit.errors import FeedError
    from edgekit.specs import check_feeds_fit, compile_feed_checks, validate_feeds

    specs = [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("mask", "int64", ("batch", "seq"))]
    checks = compile_feed_checks(specs)
    good = {"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), np.int64)}
    validate_feeds(checks, frozenset({"ids", "mask"}), good)
    check_feeds_fit(specs, good)
    with pytest.raises(FeedError, match="dim 'seq' is 6 but input 'ids'"):
        check_feeds_fit(specs, {**good, "mask": np.ones((2, 6), np.int64)})


def test_feeds_beyond_available_memory_fail_before_allocating():
    available = available_memory_bytes()
    assert available is not None and available > 0  # Linux CI: /proc/meminfo
    specs = [TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("x", "float16", ("batch", 4))]
    rows = available // 8 + 1  # one int64 input alone is just over what is available
    with pytest.raises(FeedError, match=r"'ids' alone is \[\d+, 1\] int64") as err:
        random_feeds(specs, {"batch": rows, "seq": 1})
    assert "GiB of memory is available" in str(err.value)
    check_feeds_fit_memory({"x": ((rows // 2,), np.dtype("int64"))})  # half of it passes the check
