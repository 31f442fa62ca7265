"""torch eager as a registered Session: reachable by name for baselines, never offered as a device target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from checks import assert_outputs_match

import edgekit
from edgekit.errors import InputError
from edgekit.runtimes import available_targets, registered_runtimes, session_class

MODELS = Path(__file__).parent / "models"


@pytest.fixture(scope="module")
def mlp_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch") / "mlp"
    edgekit.convert(f"{MODELS}/mlp.py:make", out)
    return out


def test_torch_is_a_baseline_not_a_target() -> None:
    assert "torch" not in available_targets() and "torch" not in {r.name for r in registered_runtimes()}
    assert session_class("torch").target == "torch"


def test_torch_session_runs_the_source_like_the_exported_model(mlp_artifact: Path) -> None:
    feeds = {"x": np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)}
    options = {"source": f"{MODELS}/mlp.py:make"}
    with edgekit.load(mlp_artifact, "torch", options=options, threads=1) as torch_session:
        reference = torch_session.run(feeds)
        info = torch_session.info()
    assert info.target == "torch" and info.providers == ("eager",) and info.threads == 1
    assert info.details["parameter_bytes"] > 0
    with edgekit.load(mlp_artifact) as ort:
        assert_outputs_match(ort, reference, ort.run(feeds))


@pytest.mark.parametrize(
    ("options", "message"),
    [({}, "name the PyTorch source"), ({"source": "x.py:make", "device": "cuda"}, "unknown option 'device'")],
)
def test_torch_session_options_are_checked(mlp_artifact: Path, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        edgekit.load(mlp_artifact, "torch", options=options)
