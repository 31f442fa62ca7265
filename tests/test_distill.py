"""Distillation: it recovers accuracy on real data, resumes exactly, pads text honestly, and refuses bad input
in one line. Real models and data throughout (scikit-learn digits, the repo's English sentences)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from edgekit.converters.distill import DistillOptions, DistillResult, distill
from edgekit.converters.distill.data import BatchPlan, collate, rows_from
from edgekit.converters.distill.losses import output_loss, position_weights
from edgekit.converters.distill.options import parse_duration
from edgekit.converters.distill.schedule import BUDGET_EVERY
from edgekit.converters.distill.train import lr_factor
from edgekit.errors import InputError
from edgekit.specs import TensorSpec

SENTENCES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "sentences.txt"
QUIET = {"progress": False}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and a shared CPU makes OpenMP barriers stall: use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ models


class CNN(nn.Module):
    """Two conv blocks for 8x8 digits (8x8 -> 4x4 -> 2x2); ``widths`` sets how narrow it is."""

    def __init__(self, widths: tuple[int, int]) -> None:
        super().__init__()
        c1, c2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Linear(c2 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    def __init__(self, hidden: int = 8, out: int = 4) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class BagEncoder(nn.Module):
    """Token embeddings, masked mean, a linear layer: the shape of a sentence-embedding model, tiny."""

    def __init__(self, width: int, vocab: int = 30522, pooled: bool = True) -> None:
        super().__init__()
        self.embed, self.proj, self.pooled = nn.Embedding(vocab, width), nn.Linear(width, width), pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(torch.tanh(self.embed(input_ids)))
        if not self.pooled:
            return hidden
        weights = attention_mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def mlp_data(n: int, seed: int, batch: int = 10, labels: bool = False) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return [{"x": x[i : i + batch], **({"labels": y[i : i + batch]} if labels else {})} for i in range(0, n, batch)]


# ------------------------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    d = datasets.load_digits()
    x, y = (d.images / 16.0).astype("float32")[:, None], d.target.astype("int64")
    x_rest, x_test, y_rest, y_test = selection.train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    x_tr, x_val, y_tr, y_val = selection.train_test_split(
        x_rest, y_rest, test_size=144, stratify=y_rest, random_state=0
    )
    pairs = {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    return {k: (torch.from_numpy(a), torch.from_numpy(b)) for k, (a, b) in pairs.items()}


def _train_teacher(x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = CNN((16, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def test_distilling_digits_into_a_narrower_cnn_recovers_accuracy(digits: dict) -> None:
    teacher = _train_teacher(*digits["train"], epochs=2)
    teacher_acc = _accuracy(teacher, *digits["test"])
    torch.manual_seed(1)
    student = CNN((8, 16))  # half the channels, trained from scratch by the teacher
    before = _accuracy(student, *digits["test"])
    options = DistillOptions(
        loss="kl", temperature=4.0, alpha=0.5, lr=5e-3, epochs=4, batch_size=32, weight_decay=1e-4,
        features=(("features.6", "features.6"),), eval_every=40, **QUIET,
    )  # fmt: skip
    train = [{"x": x, "labels": y} for x, y in zip(*(t.split(64) for t in digits["train"]), strict=True)]
    val = [{"x": digits["val"][0], "labels": digits["val"][1]}]
    result = distill(student, teacher, train, val, options)
    after = _accuracy(result.student, *digits["test"])
    assert teacher_acc > 0.9, teacher_acc
    assert before < 0.3 and after > 0.85, (before, after)  # chance is 0.1
    assert after >= teacher_acc - 0.05, (after, teacher_acc)
    assert result.metric == "accuracy" and result.teacher_accuracy is not None
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_fidelity == max(e["fidelity"] for e in result.evals)
    assert "feature0" in dict(result.projections.named_children())  # 8 -> 16 channels, learned on the channel axis
    assert not result.student.training


# ------------------------------------------------------------------------------------------------ resume


def test_a_run_killed_mid_way_resumes_to_the_same_student(tmp_path: Path) -> None:
    options = DistillOptions(
        lr=1e-2, max_steps=8, batch_size=16, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=3, **QUIET
    )
    torch.manual_seed(0)
    teacher, straight = MLP(32), MLP()
    interrupted = copy.deepcopy(straight)
    distill(straight, teacher, mlp_data(64, 1), options=replace(options, checkpoint_dir=None))

    calls = {"n": 0}

    def crash_on_fifth_training_step(module: nn.Module, *_: object) -> None:
        calls["n"] += module.training
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the process is killed after the step-3 checkpoint

    handle = interrupted.register_forward_hook(crash_on_fifth_training_step)
    with pytest.raises(KeyboardInterrupt):
        distill(interrupted, teacher, mlp_data(64, 1), options=options)
    handle.remove()
    assert (tmp_path / "ckpt" / "last.pt").is_file()

    fresh = MLP()  # other weights: the checkpoint must bring the step-3 student back
    resumed = distill(fresh, teacher, mlp_data(64, 1), options=replace(options, resume=True))
    assert resumed.resumed_from == 3 and resumed.steps == 8
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=1e-6)

    with pytest.raises(InputError, match="batch_size=16, this run has batch_size=8"):
        distill(MLP(), teacher, mlp_data(64, 1), options=replace(options, resume=True, batch_size=8))


# -------------------------------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def sentence_feeds() -> list[dict[str, np.ndarray]]:
    from edgekit.errors import SourceError
    from edgekit.sources import bundled_minilm_dir
    from edgekit.text import TextEncoder

    try:
        tokenizer = bundled_minilm_dir() / "tokenizer.json"
    except SourceError as exc:
        pytest.skip(str(exc))
    lines = [ln for ln in SENTENCES.read_text(encoding="utf-8").splitlines() if ln.strip()][:240]
    specs = [
        TensorSpec("input_ids", "int64", ("batch", "seq")),
        TensorSpec("attention_mask", "int64", ("batch", "seq")),
    ]
    encoder = TextEncoder(tokenizer, specs, max_length=64)
    return [encoder.encode([line]) for line in lines]  # one sentence each: natural, unpadded lengths


def test_sentence_embeddings_distill_with_cosine_and_a_projection(sentence_feeds: list) -> None:
    torch.manual_seed(0)
    teacher, student = BagEncoder(32), BagEncoder(16)  # a narrower student: a learned 16 -> 32 projection
    options = DistillOptions(loss="cosine", project_outputs=True, lr=5e-2, epochs=3, batch_size=16, **QUIET)
    result = distill(student, teacher, sentence_feeds[:200], sentence_feeds[200:], options)
    assert result.metric == "cosine"
    # held-out sentences bring words the student never saw in 200 training sentences: ~0.85 is the ceiling here
    assert result.best_fidelity > 0.75 and result.best_fidelity > result.initial_fidelity + 0.5
    assert len({f["input_ids"].shape[1] for f in sentence_feeds}) > 5  # lengths really varied: batches were padded


def test_early_stopping_can_judge_neighbours_of_sentence_embeddings(sentence_feeds: list) -> None:
    torch.manual_seed(0)
    teacher, student = BagEncoder(32), BagEncoder(32)
    options = DistillOptions(loss="cosine", metric="recall@10", lr=5e-2, epochs=2, batch_size=16, patience=2, **QUIET)
    result = distill(student, teacher, sentence_feeds[:200], sentence_feeds[200:], options)
    assert result.metric == "recall@10"
    for e in result.evals:  # every evaluation measures the whole held-out set, not a batch of it
        assert e["retrieval_texts"] == 40 and e["fidelity"] == e["recall@10"] and -1 <= e["spearman"] <= 1
    assert result.best_fidelity > result.initial_fidelity  # training moved the student's neighbours to the teacher's
    with pytest.raises(InputError, match="recall@10 needs at least 11 held-back texts"):
        distill(BagEncoder(32), teacher, sentence_feeds[:200], sentence_feeds[200:208], options)
    with pytest.raises(InputError, match="metric spearman does not apply to loss kl"):
        distill(BagEncoder(32), teacher, sentence_feeds[:200], sentence_feeds[200:], replace(options, loss="kl",
                metric="spearman"))  # fmt: skip


def test_padding_never_changes_a_token_level_loss(sentence_feeds: list) -> None:
    torch.manual_seed(0)
    teacher, student = BagEncoder(8, pooled=False), BagEncoder(8, pooled=False)
    rows = rows_from(sentence_feeds[:6], "data")
    batch = collate(rows)
    assert batch.feeds["input_ids"].shape[1] == max(r["input_ids"].shape[1] for r in rows)
    opts = DistillOptions()
    with torch.no_grad():
        together = _token_loss(student, teacher, batch, opts)
        alone = torch.cat([_token_loss(student, teacher, collate([r]), opts) for r in rows])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def _token_loss(student: nn.Module, teacher: nn.Module, batch: object, opts: DistillOptions) -> torch.Tensor:
    s, t = student(**batch.feeds), teacher(**batch.feeds)  # type: ignore[attr-defined]
    return output_loss("mse", s, t, None, opts, position_weights(t, batch.feeds["attention_mask"]))  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ data forms and scheduling


class DigitLikeDataset(torch.utils.data.Dataset):
    """Single samples without a batch axis, as torch Datasets give them."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((16,), float(i) / 10), "labels": torch.tensor(i % 4)}


def test_a_torch_dataset_of_single_samples_batches_and_shards() -> None:
    torch.manual_seed(0)
    result = distill(MLP(), MLP(32), DigitLikeDataset(), options=DistillOptions(epochs=2, batch_size=4, **QUIET))
    assert result.steps == 6 and result.train_samples == 10  # 4 + 4 + 2 rows per epoch
    plan = BatchPlan(rows=10, batch_size=4, seed=0, world=2, rank=1)
    assert plan.steps_per_epoch == 3
    local, size = plan.local_batch(0, 2)
    assert size == 2 and len(local) == 1
    assert BatchPlan(rows=9, batch_size=4, seed=0, world=2).steps_per_epoch == 2  # 1 row left for 2 processes


def test_lr_warms_up_then_decays() -> None:
    factor = lr_factor(total=100, warmup=10, schedule="cosine", min_ratio=0.1)
    assert factor(0) < factor(5) < factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.55)
    assert factor(99) == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(100, 0, "linear", 0.0)(50) == pytest.approx(0.5)


def test_a_time_budget_fits_the_steps_and_still_decays_the_rate() -> None:
    """max_seconds cuts a run planned far too long to what fits, and the schedule is fitted to the cut: the last
    steps run at a decayed learning rate, not mid-schedule."""
    torch.manual_seed(0)
    teacher, student = MLP(8), MLP(8)
    options = DistillOptions(lr=1e-2, max_steps=10**6, max_seconds=1.0, batch_size=8, **QUIET)
    result = distill(student, teacher, mlp_data(64, 1), mlp_data(32, 2), options)
    assert BUDGET_EVERY <= result.steps == result.total_steps < 10**6
    assert result.seconds < 5
    assert result.history[-1]["lr"] < 0.25 * options.lr
    assert any("time budget" in note for note in result.notes)


@pytest.mark.parametrize(("text", "seconds"), [("20m", 1200.0), ("90s", 90.0), ("1.5h", 5400.0), ("45", 45.0)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0m", "ten minutes", "-5s", "5d"])
def test_bad_durations_are_bad_input(text: str) -> None:
    with pytest.raises(InputError, match="duration"):
        parse_duration(text)


def test_early_stopping_keeps_the_best_student() -> None:
    torch.manual_seed(0)
    teacher = MLP(8)
    student = copy.deepcopy(teacher)  # already agrees with the teacher: no evaluation can beat step 0
    options = DistillOptions(lr=0.5, max_steps=50, batch_size=8, eval_every=1, patience=2, **QUIET)
    result = distill(student, teacher, mlp_data(64, 1), mlp_data(32, 2), options)
    assert result.stopped_early and result.steps == 2
    assert result.best_step == 0 and result.notes
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(result.student.state_dict()[key], value)


# ------------------------------------------------------------------------------------------ bad input


def _fails(match: str, *, teacher: nn.Module | None = None, student: nn.Module | None = None, **kwargs: object):
    torch.manual_seed(0)
    data = kwargs.pop("data", mlp_data(20, 0))
    val = kwargs.pop("val", None)
    specs = kwargs.pop("input_specs", None)
    with pytest.raises(InputError, match=match) as info:
        distill(student or MLP(), teacher or MLP(32), data, val, DistillOptions(**{**QUIET, **kwargs}),
                input_specs=specs)  # type: ignore[arg-type]  # fmt: skip
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("match", "kwargs"),
    [
        (r"has input 'inp' but the teacher takes: x", {"data": [{"inp": torch.randn(4, 16)}]}),
        (r"input 'x': dim 1 must be 16", {"data": [{"x": torch.randn(4, 15)}],
                                          "input_specs": [TensorSpec("x", "float32", ("batch", 16))]}),
        (r"does not fit the teacher \(input 'x' float32\[4, 15\]\)", {"data": [{"x": torch.randn(4, 15)}]}),
        (r"distillation sample 4: input 'x': dim 1 must be 16", {"data": [{"x": torch.randn(4, 16)},
                                                                          {"x": torch.randn(4, 15)}]}),
        (r"input 'labels' has 3 rows but input 'x' has 4", {"data": [{"x": torch.randn(4, 16),
                                                                       "labels": torch.zeros(3)}]}),
        (r"labels run from 0 to 4 but the models have 4 classes", {"data": [{"x": torch.randn(5, 16),
                                                                             "labels": torch.arange(5)}]}),
        (r"distillation data is empty", {"data": []}),
        (r"the student has no layer 'fc9'", {"features": (("fc9", "fc1"),)}),
        (r"metric accuracy needs validation data with labels", {"metric": "accuracy", "val": mlp_data(8, 1)}),
        (r"unknown distillation loss 'l1'", {"loss": "l1"}),
        (r"alpha must be within \[0, 1\]", {"alpha": 1.5}),
        (r"batch_size must be positive", {"batch_size": 0}),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(match: str, kwargs: dict) -> None:
    _fails(match, **kwargs)


def test_outputs_that_do_not_match_name_both_shapes() -> None:
    _fails(r"teacher output shape \[4, 4\] and student output shape \[4, 3\] do not match", student=MLP(8, 3))
    _fails(r"shape \[4, 4\] and student output shape \[4, 3\]", student=MLP(8, 3), loss="mse")


def test_varying_lengths_need_an_attention_mask() -> None:
    data = [{"ids": torch.ones(1, 5, dtype=torch.int64)}, {"ids": torch.ones(1, 7, dtype=torch.int64)}]
    with pytest.raises(InputError, match=r"input 'ids' varies in length \(5 and 7\) and the data has no attention"):
        distill(MLP(), MLP(), data, options=DistillOptions(**QUIET))


# ------------------------------------------------------------------------------------------------- CLI

FACTORIES = """
import torch
from torch import nn

class MLP(nn.Module):
    def __init__(self, hidden, out):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

def _mlp(hidden, out, seed):
    torch.manual_seed(seed)
    return MLP(hidden, out), (torch.randn(2, 16),)

def teacher():
    return _mlp(32, 4, 0)

def student():
    return _mlp(8, 4, 1)

def student3():
    return _mlp(8, 3, 1)
"""
LAUNCH = "from edgekit.cli import app\napp(prog_name='edgekit')\n"


@pytest.fixture
def cli_files(tmp_path: Path) -> Path:
    (tmp_path / "models.py").write_text(FACTORIES)
    rng = np.random.default_rng(0)
    for name, n in (("train", 120), ("val", 40)):
        np.savez(tmp_path / f"{name}.npz", x=rng.standard_normal((n, 16)).astype(np.float32),
                 labels=rng.integers(0, 4, n))  # fmt: skip
    np.savez(tmp_path / "wide.npz", x=rng.standard_normal((8, 17)).astype(np.float32))
    return tmp_path


def test_cli_metric_choice_reaches_the_validation(cli_files: Path) -> None:
    out = cli_files / "agree.pt"
    args = ["distill", "--teacher", f"{cli_files}/models.py:teacher", "--student", f"{cli_files}/models.py:student",
            "--data", cli_files / "train.npz", "--val-data", cli_files / "val.npz", "--steps", "4",
            "--metric", "agreement", "-o", out, "--json"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metric"] == "agreement"  # auto would be accuracy: the data has labels


def test_cli_distills_and_saves_a_loadable_state_dict(cli_files: Path) -> None:
    out = cli_files / "out" / "student.pt"
    args = ["distill", "--teacher", f"{cli_files}/models.py:teacher", "--student", f"{cli_files}/models.py:student",
            "--data", cli_files / "train.npz", "--val-data", cli_files / "val.npz", "--steps", "12", "--lr", "1e-2",
            "--batch-size", "16", "--checkpoint-dir", cli_files / "ckpt", "-o", out, "--json"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", LAUNCH, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["steps"] == 12 and summary["metric"] == "accuracy" and summary["output"] == str(out)
    assert summary["student_params"] < summary["teacher_params"]
    state = torch.load(out, weights_only=True)
    MLP(8, 4).load_state_dict(state)  # the same layout as the factory's student
    assert (cli_files / "ckpt" / "last.pt").is_file()
    assert not list(out.parent.glob(".*.tmp"))


def _app() -> typer.Typer:
    from edgekit.cli import app

    return app


@pytest.mark.parametrize(
    ("extra", "student", "needle"),
    [
        (["--data", "wide.npz"], "student", "distillation sample 0 (wide.npz): input 'x': dim 1 must be 16"),
        (["--data", "train.npz"], "student3", "teacher output shape [4, 4] and student output shape [4, 3]"),
        (["--data", "train.npz", "--epochs", "1", "--steps", "2"], "student", "give --epochs or --steps, not both"),
        (["--data", "missing.npz"], "student", "distillation data not found"),
        (
            ["--data", "train.npz", "--val-data", "val.npz", "--metric", "spearman"],
            "student",
            "metric spearman does not apply to loss kl",
        ),
        (["--data", "train.npz", "--metric", "cosine"], "student", "--metric cosine judges the student on validation"),
        (["--data", "train.npz", "--val-data", "val.npz", "--metric", "bleu"], "student", "bleu"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(cli_files: Path, extra: list, student: str, needle: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(cli_files)
    args = ["distill", "--teacher", "models.py:teacher", "--student", f"models.py:{student}", *extra, "-o", "s.pt"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert not (cli_files / "s.pt").exists()


def test_result_summary_is_json_ready() -> None:
    torch.manual_seed(0)
    result: DistillResult = distill(MLP(), MLP(32), mlp_data(20, 0), options=DistillOptions(max_steps=2, **QUIET))
    assert json.loads(json.dumps(result.summary()))["steps"] == 2
