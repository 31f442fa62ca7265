"""What makes distillation steps cheaper: length-bucketed batches, the per-sample teacher cache and bf16 autocast.
Each must leave what is learnt from unchanged (every row once per epoch, the same teacher targets) and say
in the result what ran."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.converters.distill import DistillOptions, distill
from edgekit.converters.distill.data import BUCKET_BATCHES, BatchPlan, row_lengths
from edgekit.converters.distill.speed import TeacherCache, training_precision
from edgekit.cpu import BF16_FLAGS, numeric_cpu_flags
from edgekit.errors import InputError

QUIET = {"progress": False}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Bag(nn.Module):
    """Token embeddings and a masked mean: a sentence-embedding model, tiny (``pooled=False``: token outputs)."""

    def __init__(self, width: int, pooled: bool = True) -> None:
        super().__init__()
        self.embed, self.proj, self.pooled = nn.Embedding(100, width), nn.Linear(width, width), pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(torch.tanh(self.embed(input_ids)))
        if not self.pooled:
            return hidden
        weights = attention_mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def text_rows(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """One sentence-like row each, 2 to 30 tokens long."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 31, (1,), generator=g))
        ids = torch.randint(1, 100, (1, length), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return rows


# ------------------------------------------------------------------------------------------ length buckets


def test_bucketed_batches_cover_every_row_once_and_pad_less() -> None:
    lengths = np.random.default_rng(0).integers(2, 128, size=1000)
    plain, bucketed = BatchPlan(1000, 16, seed=3), BatchPlan(1000, 16, seed=3, lengths=lengths)
    assert bucketed.steps_per_epoch == plain.steps_per_epoch == 63
    for epoch in (0, 1):
        batches = [bucketed.global_batch(epoch, i) for i in range(bucketed.steps_per_epoch)]
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))

    def padded(plan: BatchPlan) -> int:
        return sum(int(lengths[b].max()) * len(b) for b in (plan.global_batch(0, i) for i in range(63)))

    assert padded(bucketed) < 0.8 * padded(plain)
    order = [bucketed.global_batch(0, i)[0] for i in range(63)]
    assert order != sorted(order, key=lambda r: -lengths[r])  # the batches themselves are shuffled


def test_bucketed_batches_are_the_same_on_every_process_and_differ_per_epoch() -> None:
    lengths = np.random.default_rng(1).integers(2, 64, size=16 * BUCKET_BATCHES + 7)
    plans = [BatchPlan(len(lengths), 16, seed=0, world=2, rank=r, lengths=lengths) for r in (0, 1)]
    for i in (0, 5, plans[0].steps_per_epoch - 1):
        (a, size_a), (b, size_b) = plans[0].local_batch(0, i), plans[1].local_batch(0, i)
        assert size_a == size_b and not set(a.tolist()) & set(b.tolist())
    assert not np.array_equal(plans[0].global_batch(0, 0), plans[0].global_batch(1, 0))
    again = BatchPlan(len(lengths), 16, seed=0, world=2, rank=0, lengths=lengths)
    assert np.array_equal(again.global_batch(1, 3), plans[0].global_batch(1, 3))


def test_only_rows_of_different_lengths_are_bucketed() -> None:
    assert row_lengths([{"x": torch.zeros(1, 16)}, {"x": torch.zeros(1, 16)}]) is None
    assert row_lengths(text_rows(3, seed=2)).tolist() == [r["input_ids"].shape[1] for r in text_rows(3, seed=2)]


# -------------------------------------------------------------------------------------------- teacher cache


def test_the_teacher_cache_returns_what_the_teacher_computes_and_runs_it_once_per_sample() -> None:
    torch.manual_seed(0)
    teacher = Bag(8).eval()
    rows = text_rows(12)
    calls: list[int] = []

    def run(indices: list[int]) -> torch.Tensor:
        calls.extend(indices)
        from edgekit.converters.distill.data import collate

        with torch.no_grad():
            return teacher(**collate([rows[i] for i in indices]).feeds)

    cache = TeacherCache(len(rows), enabled=True)
    first = cache.outputs([0, 3, 5], run)
    second = cache.outputs([5, 3, 7], run)
    assert calls == [0, 3, 5, 7]
    torch.testing.assert_close(second[:2], first.flip(0)[:2])
    torch.testing.assert_close(second[2], run([7])[0], rtol=1e-5, atol=1e-6)
    assert cache.facts() == {"teacher_cache": True, "teacher_cache_hit_rate": 0.3333}


def test_the_teacher_cache_turns_itself_off_for_token_level_outputs() -> None:
    teacher = Bag(8, pooled=False).eval()
    rows = text_rows(4)
    from edgekit.converters.distill.data import collate

    def run(indices: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return teacher(**collate([rows[i] for i in indices]).feeds)

    cache = TeacherCache(len(rows), enabled=True)
    out = cache.outputs([0, 1], run)
    assert out.ndim == 3 and not cache.enabled
    assert "one row per sample" in cache.facts()["teacher_cache_off"]


def test_a_run_says_what_made_it_faster_and_caches_only_without_feature_losses() -> None:
    torch.manual_seed(0)
    teacher, student = Bag(16).eval(), Bag(8)
    rows, val = text_rows(48), text_rows(16, seed=1)
    options = DistillOptions(loss="cosine", project_outputs=True, epochs=2, batch_size=8, **QUIET)
    speed = distill(student, teacher, rows, val, options).speed
    assert speed["teacher_cache"] is True and speed["teacher_cache_hit_rate"] == 0.5  # epoch 2 hits every sample
    assert speed["length_buckets"] is True
    featured = DistillOptions(loss="cosine", project_outputs=True, epochs=1, batch_size=8,
                              features=(("proj", "proj"),), bucket_by_length=False, **QUIET)  # fmt: skip
    speed = distill(Bag(8), teacher, rows, val, featured).speed
    assert speed["teacher_cache"] is False and "hidden states" in speed["teacher_cache_off"]
    assert speed["length_buckets"] is False


def test_the_cached_run_learns_what_the_uncached_run_learns() -> None:
    """Same seed, fp32, same batches: caching the teacher changes no step (up to float summation order)."""
    teacher = Bag(16).eval()
    rows = text_rows(40)
    students = []
    for cache in (True, False):
        torch.manual_seed(0)
        student = Bag(8)
        options = DistillOptions(loss="cosine", project_outputs=True, epochs=2, batch_size=8, precision="fp32",
                                 cache_teacher=cache, **QUIET)  # fmt: skip
        students.append(distill(student, teacher, rows, None, options).student)
    for a, b in zip(students[0].parameters(), students[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- precision


def test_auto_precision_is_bf16_only_on_cpus_that_have_it() -> None:
    native = any(f in numeric_cpu_flags() for f in BF16_FLAGS)
    assert training_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert training_precision("auto", torch.device("cuda", 0)) == "fp32"
    assert training_precision("fp32", torch.device("cpu")) == "fp32"
    with mock.patch("edgekit.converters.distill.speed.numeric_cpu_flags", return_value=["avx2"]):
        assert training_precision("auto", torch.device("cpu")) == "fp32"
    with mock.patch("edgekit.converters.distill.speed.numeric_cpu_flags", return_value=["avx2", "amx_bf16"]):
        assert training_precision("auto", torch.device("cpu")) == "bf16"


def test_bf16_autocast_trains_and_keeps_weights_loss_and_evaluation_in_fp32() -> None:
    torch.manual_seed(0)
    teacher, student = Bag(16).eval(), Bag(16)
    rows, val = text_rows(64), text_rows(16, seed=1)
    options = DistillOptions(loss="cosine", epochs=4, batch_size=8, lr=1e-2, precision="bf16", **QUIET)
    result = distill(student, teacher, rows, val, options)
    assert result.speed["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in result.student.parameters())
    assert result.best_fidelity is not None and result.initial_fidelity is not None
    assert result.best_fidelity > result.initial_fidelity + 0.05


def test_an_unknown_precision_is_bad_input() -> None:
    with pytest.raises(InputError, match="precision"):
        DistillOptions(precision="fp8")  # type: ignore[arg-type]
