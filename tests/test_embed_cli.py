"""`edgekit embed` as a user runs it: a texts file or stdin to .npy / .jsonl, blank lines skipped and counted,
a --json summary, a progress bar only on a terminal, and bad input as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit

pytestmark = pytest.mark.slow  # the MiniLM artifact (converted once per run)

LINES = ["The first sentence.", "", "A second, somewhat longer sentence about edge devices.", "   ",
         "Zoë's café — naïve résumé 🙂", "short", ""]  # fmt: skip
TEXTS = [ln for ln in LINES if ln.strip()]


def edgekit_cli(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", "embed", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.fixture(scope="module")
def expected(minilm_artifact) -> np.ndarray:
    with edgekit.Embedder(minilm_artifact) as embedder:
        return embedder.encode(TEXTS)


@pytest.fixture
def texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_embed_a_file_to_npy_with_a_json_summary(minilm_artifact, texts_file, tmp_path, expected):
    out = tmp_path / "vectors.npy"
    result = edgekit_cli(minilm_artifact, texts_file, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    facts = {"count": 4, "skipped": 3, "dim": 384, "target": "onnxruntime", "precision": "fp32", "max_length": 256}
    assert {k: summary[k] for k in facts} == facts
    assert summary["seconds"] > 0 and summary["texts_per_s"] > 0
    assert result.stderr == ""  # no bar when stderr is not a terminal
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt", "vectors.npy"]  # no temporary left


def test_embed_stdin_to_jsonl_on_openvino(minilm_artifact, tmp_path, expected):
    out = tmp_path / "vectors.jsonl"
    result = edgekit_cli(minilm_artifact, "-", "-o", out, "-t", "openvino", "--precision", "f32",
                         stdin="\n".join(LINES) + "\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "embedded 4 texts (3 blank lines skipped)" in result.stdout and "texts/s on openvino (fp32)" in result.stdout
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
    assert (vectors * expected).sum(1).min() >= 0.9999


def test_prompt_max_length_and_batch_size_reach_the_embedder(minilm_artifact, texts_file, tmp_path):
    out = tmp_path / "v.npy"
    result = edgekit_cli(minilm_artifact, texts_file, "-o", out, "--prompt", "query: ", "--max-length", "8",
                         "--batch-size", "3", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["max_length"] == 8 and summary["batch_size"] == 3
    with edgekit.Embedder(minilm_artifact) as embedder:
        np.testing.assert_allclose(np.load(out), embedder.encode(TEXTS, prompt="query: ", max_length=8), atol=1e-6)


def test_a_progress_bar_on_a_terminal_unless_quiet(minilm_artifact, tmp_path):
    import pty

    texts = tmp_path / "many.txt"
    texts.write_text("\n".join(f"sentence number {i}" for i in range(300)))

    def stderr_on_a_terminal(*extra: str) -> str:
        leader, follower = pty.openpty()
        args = [sys.executable, "-m", "edgekit", "embed", minilm_artifact, texts, "-o", tmp_path / "v.npy", *extra]
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
        with subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=follower, env=env) as proc:
            os.close(follower)
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the follower closed: the process is done
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            assert proc.wait(timeout=300) == 0
        os.close(leader)
        return b"".join(chunks).decode("utf-8", "replace")

    assert "300/300" in stderr_on_a_terminal()
    assert stderr_on_a_terminal("--quiet").strip() == ""


@pytest.mark.parametrize(
    ("args", "stdin", "needles"),
    [
        (["{texts}", "-o", "{tmp}/v.txt"], None, ["must end in .npy or .jsonl"]),
        (["{texts}"], None, ["give the output file"]),
        (["{tmp}/missing.txt", "-o", "{tmp}/v.npy"], None, ["texts file not found"]),
        (["-", "-o", "{tmp}/v.npy"], "\n  \n\n", ["no texts in", "every line is blank"]),
        (["{texts}", "-o", "{tmp}/v.npy", "--batch-size", "0"], None, ["batch_size must be a positive integer"]),
        (["{texts}", "-o", "{tmp}/v.npy", "--max-length", "1"], None, ["max_length must be"]),
        (["{texts}", "-o", "{tmp}/v.npy", "-t", "nosuchruntime"], None, ["nosuchruntime"]),
        (["{texts}", "-o", "{texts}/v.npy"], None, ["is not a directory"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_written(minilm_artifact, texts_file, tmp_path, args, stdin, needles):
    filled = [a.format(texts=texts_file, tmp=tmp_path) for a in args]
    result = edgekit_cli(minilm_artifact, *filled, stdin=stdin)
    assert_one_line_error(result, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt"]


def test_an_artifact_that_does_not_embed_text_is_one_line_exit_2(mlp_onnx, texts_file, tmp_path):
    assert_one_line_error(edgekit_cli(mlp_onnx.path, texts_file, "-o", tmp_path / "v.npy"), "bare ONNX file")
    assert not (tmp_path / "v.npy").exists()
