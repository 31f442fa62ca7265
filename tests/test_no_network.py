"""No network at run time: convert, run, inspect and bench work with every socket connection refused.

A ``sitecustomize`` on ``PYTHONPATH`` makes any attempt to open a network connection (``socket.connect``,
``create_connection``, ``getaddrinfo``) raise and leave a marker, in the CLI process and in every worker
process the bench starts (they inherit the environment). A library that quietly phones home (a model hub
lookup, telemetry, an update check) then fails the test even if it swallowed the error itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).parent / "models"
QUICK = ["--iterations", "3", "--duration", "0", "--warmup", "0", "--rounds", "1"]
GUARD = """
import os, socket
_MARKER = os.environ["EDGEKIT_TEST_NETWORK_MARKER"]

def _refuse(*args, **kwargs):
    with open(_MARKER, "a") as f:
        f.write(f"{os.getpid()} {args[1:2] or args[:1]}\\n")
    raise OSError("network access attempted in an offline test")

def _connect(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(self, address)
    return _original_connect(self, address, *args)

_original_connect = socket.socket.connect
socket.socket.connect = _connect
socket.socket.connect_ex = _connect
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""


@pytest.fixture
def offline_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    marker = tmp_path / "network-attempts.txt"
    path = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "EDGEKIT_TEST_NETWORK_MARKER": str(marker)}, marker


def edgekit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_the_guard_catches_a_connection_attempt(offline_env):
    env, marker = offline_env
    probe = "import socket\ntry:\n socket.create_connection(('127.0.0.1', 9))\nexcept OSError as e:\n print(e)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert "offline test" in result.stdout and marker.exists()


def calibration(path: Path) -> Path:
    np.save(path, np.random.default_rng(0).standard_normal((60, 16)).astype(np.float32))
    return path


@pytest.mark.slow
def test_convert_run_inspect_bench_open_no_connection(offline_env, tmp_path):
    env, marker = offline_env
    out = tmp_path / "mlp"
    steps = [
        ["convert", f"{MODELS}/mlp.py:make", "-o", str(out), "--validate-target", "openvino"],
        ["run", str(out), "--target", "openvino"],
        ["inspect", str(out)],
        ["bench", str(out), "-t", "onnxruntime", "-t", "openvino", "--threads", "1", *QUICK],
        # the quantizers too: NNCF (an auto candidate for OpenVINO where installed) has telemetry of its own
        [
            "convert",
            str(out / "model.onnx"),
            "-o",
            str(tmp_path / "q"),
            "--quantize",
            "auto",
            "--target",
            "openvino",
            "--calib-data",
            str(calibration(tmp_path / "calib.npy")),
        ],
    ]
    for args in steps:
        result = edgekit(env, *args)
        assert result.returncode == 0, (args[0], result.stderr[-1500:])
    assert not marker.exists(), marker.read_text()
