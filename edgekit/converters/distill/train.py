"""The distillation engine behind :func:`edgekit.converters.distill.distill` (see that module for the why).

One :class:`Trainer` per run: it checks the data and both models before the first step (one-line
InputErrors), probes both models once to size the projections, then runs AdamW steps over a deterministic
plan of global batches, evaluating, checkpointing and stopping early as the options say.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgekit.converters.distill.data import (
    Batch,
    BatchPlan,
    DistillData,
    check_labels,
    check_names,
    check_rows,
    collate,
    row_lengths,
    rows_from,
    shard,
    specs_from_row,
)
from edgekit.converters.distill.losses import (
    OUTPUT_KEY,
    AxisLinear,
    Distillee,
    FeatureTaps,
    device_of,
    feature_loss,
    fidelity_sums,
    first_output,
    fitted_call,
    output_loss,
    position_weights,
    projection_axis,
    retrieval_fidelity,
    run_model,
)
from edgekit.converters.distill.options import DistillOptions, DistillResult
from edgekit.converters.distill.schedule import BUDGET_EVERY, lr_factor, steps_in_budget
from edgekit.converters.distill.speed import TeacherCache, as_fp32, student_autocast, training_precision
from edgekit.converters.distill.state import (
    Distributed,
    checkpoint_path,
    load_checkpoint,
    progress_bar,
    save_atomically,
)
from edgekit.errors import InputError, one_line
from edgekit.retrieval import check_enough_texts, is_retrieval_metric, recall_ks
from edgekit.specs import TensorSpec

METRIC_KEYS = ("accuracy", "agreement", "cosine", "teacher_accuracy")


class Trainer:
    """One distillation run: checked inputs, the trainable student + projections, and the step loop."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        train_data: DistillData,
        val_data: DistillData | None,
        options: DistillOptions,
        input_specs: Sequence[TensorSpec] | None,
        ctx: Distributed,
    ) -> None:
        self.o, self.ctx, self.teacher = options, ctx, teacher
        self.home = device_of(student)
        self.teacher_home = device_of(teacher)
        self.train_rows = rows_from(train_data, "distillation data")
        if not self.train_rows:
            raise InputError("distillation data is empty")
        self.val_rows = rows_from(val_data, "validation data")
        self._check_data(student, input_specs)
        self.plan = self._plan()
        self.total = self.planned = options.max_steps or options.epochs * self.plan.steps_per_epoch
        self.metric = self._metric()
        torch.manual_seed(options.seed)
        teacher.to(ctx.device).eval()
        student.to(ctx.device)
        layers = [t for _, t in options.features]
        self.teacher_taps = FeatureTaps(teacher, layers, "teacher") if layers else None
        try:
            projections, self.feature_axes = self._probe(student)
            self.model = Distillee(student, projections, [s for s, _ in options.features]).to(ctx.device)
        except BaseException:
            self._remove_hooks()
            raise
        self.step, self.history, self.evals, self.bad_evals = 0, [], [], 0
        self.best: dict[str, Any] | None = None
        self.stopped, self.resumed_from, self.notes = False, None, []
        self._teacher_val: list[torch.Tensor] = []
        self.precision = training_precision(options.precision, ctx.device)
        why_not = "intermediate-layer losses need the teacher's hidden states every step" if layers else ""
        self.teacher_cache = TeacherCache(len(self.train_rows), options.cache_teacher and not layers, why_not)

    # ---------------------------------------------------------------------------------------------- checks

    def _check_data(self, student: nn.Module, input_specs: Sequence[TensorSpec] | None) -> None:
        specs = list(input_specs) if input_specs else specs_from_row(self.train_rows[0])
        check_rows(self.train_rows, specs, "distillation sample")
        check_rows(self.val_rows, specs, "validation sample")
        check_names(self.train_rows[0], self.teacher, "teacher")
        check_names(self.train_rows[0], student, "student")

    def _plan(self) -> BatchPlan:
        world, n, size = self.ctx.world, len(self.train_rows), self.o.batch_size
        if size < world:
            raise InputError(f"batch size {size} is smaller than the {world} processes sharing it")
        lengths = row_lengths(self.train_rows) if self.o.bucket_by_length else None
        plan = BatchPlan(n, size, self.o.seed, world, self.ctx.rank, lengths)
        if plan.steps_per_epoch == 0:
            raise InputError(f"distillation data has {n} samples, fewer than the {world} processes")
        return plan

    def _metric(self) -> str:
        if not self.val_rows:
            return ""
        labeled = "labels" in self.val_rows[0]
        metric = self.o.metric
        if metric == "auto":
            metric = ("accuracy" if labeled else "agreement") if self.o.loss == "kl" else "cosine"
        if metric == "accuracy" and not labeled:
            raise InputError("metric accuracy needs validation data with labels")
        if (metric == "cosine" or is_retrieval_metric(metric)) != (self.o.loss != "kl"):
            raise InputError(f"metric {metric} does not apply to loss {self.o.loss}")
        check_enough_texts(metric, len(self.val_rows))  # recall@10 of 8 validation texts: say so before training
        return metric

    def _probe(self, student: nn.Module) -> tuple[nn.ModuleDict, list[int]]:
        """Run both models once on a few rows: data that does not fit, or outputs that do not match, fail here."""
        batch = collate(self.train_rows[:4]).to(self.ctx.device)
        student_layers = [s for s, _ in self.o.features]
        taps = FeatureTaps(student, student_layers, "student")
        was_training = student.training
        try:
            student.eval()
            with torch.no_grad():
                t_out = first_output(fitted_call(self.teacher, batch, "teacher"), "teacher")
                s_out = first_output(fitted_call(student, batch, "student"), "student")
            s_feats = [taps.captured[n] for n in student_layers]
        finally:
            taps.remove()
            student.train(was_training)
        t_feats = self._teacher_features()
        projections = nn.ModuleDict()
        if not s_out.is_floating_point() or not t_out.is_floating_point():
            raise InputError(f"distillation needs float outputs; teacher gives {t_out.dtype}, student {s_out.dtype}")
        if self.o.project_outputs and s_out.shape != t_out.shape:
            axis = projection_axis(s_out.shape, t_out.shape, "outputs")
            projections[OUTPUT_KEY] = AxisLinear(axis, s_out.shape[axis], t_out.shape[axis])
        elif s_out.shape != t_out.shape:
            hint = "; project_outputs (--project-outputs) learns a projection" if self.o.loss != "kl" else ""
            raise InputError(
                f"teacher output shape {list(t_out.shape)} and student output shape {list(s_out.shape)} do not "
                f"match{hint}"
            )
        if self.o.loss == "kl":
            check_labels([*self.train_rows, *self.val_rows], s_out)
        axes = []
        for i, ((s_name, t_name), s, t) in enumerate(zip(self.o.features, s_feats, t_feats, strict=True)):
            axis = projection_axis(s.shape, t.shape, f"features {s_name!r} -> {t_name!r}")
            same = s.shape == t.shape and self.o.feature_projection == "when_widths_differ"
            projections[f"feature{i}"] = nn.Identity() if same else AxisLinear(axis, s.shape[axis], t.shape[axis])
            axes.append(axis)
        return projections, axes

    def _teacher_features(self) -> list[torch.Tensor]:
        if self.teacher_taps is None:
            return []
        return [self.teacher_taps.captured[t] for _, t in self.o.features]

    # ------------------------------------------------------------------------------------------------ loop

    def run(self) -> DistillResult:
        start = time.perf_counter()
        try:
            trainer_params = self._optimizer()
            self._resume(*trainer_params)
            wrapped = self._wrapped()
            if self.val_rows and not self.evals:
                self._evaluate()
            loop_start, first = time.perf_counter(), self.step
            with progress_bar(self.o.progress and self.ctx.is_main, self.total, self.step) as bar:
                while self.step < self.total and not self.stopped:
                    self._train_step(wrapped, *trainer_params)
                    self._fit_to_budget(start, loop_start, first)
                    if self._due(self.o.eval_every or self.plan.steps_per_epoch) and self.val_rows:
                        self._evaluate()
                    if self.o.checkpoint_dir and self.step % self.o.checkpoint_every == 0:
                        self._save(*trainer_params)
                    bar(self.step, self.history[-1]["loss"], self.evals[-1] if self.evals else None)
            if self.o.checkpoint_dir and (self.step % self.o.checkpoint_every or self.stopped):
                self._save(*trainer_params)
            if self.total < self.planned:
                self.notes.append(f"time budget {self.o.max_seconds:g} s: {self.total} of {self.planned} steps")
            self._restore_best()
        finally:
            self._remove_hooks()
        return self._result(time.perf_counter() - start)

    def _optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW without weight decay on biases and norm scales (1-D parameters), as is usual for fine-tuning."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": self.o.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.o.lr)

        def factor(step: int) -> float:  # reads self.total each step: a time budget may change it
            warmup = round(self.o.warmup_ratio * self.total)
            return lr_factor(self.total, warmup, self.o.schedule, self.o.min_lr_ratio)(step)

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def _fit_to_budget(self, start: float, loop_start: float, first: int) -> None:
        """Under ``max_seconds``, every few steps refit the total to the time left at the pace so far; every
        process takes the mean of their fits, so all stop at the same step."""
        done = self.step - first
        if self.o.max_seconds is None or done % BUDGET_EVERY:
            return
        now = time.perf_counter()
        fitted = steps_in_budget(self.step, (now - loop_start) / done, self.o.max_seconds - (now - start), self.planned)
        agreed = self.ctx.sum(torch.tensor([float(fitted)], dtype=torch.float64))[0] / self.ctx.world
        self.total = max(self.step, round(float(agreed)))

    def _wrapped(self) -> nn.Module:
        if self.ctx.world == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        # models often hold parameters the distilled output never uses (a BERT pooler): let DDP expect that
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.total

    def _train_step(self, wrapped: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        epoch, index = divmod(self.step, self.plan.steps_per_epoch)
        local, global_size = self.plan.local_batch(epoch, index)
        batch = collate([self.train_rows[i] for i in local]).to(self.ctx.device)
        with torch.no_grad():
            t_out = self.teacher_cache.outputs(local.tolist(), self._teacher_on)  # runs the teacher when off
            t_feats = self._teacher_features()
        self.model.train()
        with student_autocast(self.precision, self.ctx.device):
            s_out, s_feats = wrapped(batch.feeds)
        s_out, s_feats = as_fp32(s_out), [as_fp32(f) for f in s_feats]  # the loss is always computed in fp32
        per_sample = self._loss(s_out, t_out, s_feats, t_feats, batch)
        # summed, scaled by the global batch: DDP's average over W processes is then the global batch mean
        loss = per_sample.sum() * (self.ctx.world / global_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.o.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.o.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        self.step += 1
        total = self.ctx.sum(per_sample.detach().sum().double().reshape(1))
        self.history.append({"step": self.step, "loss": float(total[0]) / global_size, "lr": lr})

    def _teacher_on(self, indices: Sequence[int]) -> torch.Tensor:
        """The teacher's output (fp32) for these training rows: a whole batch, or the teacher cache's misses."""
        feeds = collate([self.train_rows[i] for i in indices]).to(self.ctx.device).feeds
        return first_output(run_model(self.teacher, feeds), "teacher")

    def _loss(self, s_out: Any, t_out: Any, s_feats: list[Any], t_feats: list[Any], batch: Batch) -> torch.Tensor:
        mask = batch.feeds.get("attention_mask")
        loss = output_loss(self.o.loss, s_out, t_out, batch.labels, self.o, position_weights(t_out, mask))
        for s, t, axis in zip(s_feats, t_feats, self.feature_axes, strict=True):
            loss = loss + self.o.feature_weight * feature_loss(self.o.feature_loss, s, t, axis, mask)
        return loss

    # ------------------------------------------------------------------------------------------ evaluation

    def _evaluate(self) -> None:
        """Fidelity on this process's share of the validation rows, summed over processes."""
        self.model.eval()
        size = self.o.eval_batch_size or self.o.batch_size
        idx = shard(len(self.val_rows), self.ctx.world, self.ctx.rank)
        totals = dict.fromkeys(("n", "loss", *METRIC_KEYS), 0.0)
        embeddings: list[tuple[torch.Tensor, torch.Tensor]] = []  # (teacher, student), for the retrieval metrics
        with torch.no_grad():
            for k, start in enumerate(range(0, len(idx), size)):
                batch = collate([self.val_rows[i] for i in idx[start : start + size]]).to(self.ctx.device)
                if k == len(self._teacher_val):  # the teacher never changes: run it once per batch
                    self._teacher_val.append(first_output(run_model(self.teacher, batch.feeds), "teacher"))
                t_out = self._teacher_val[k]
                s_out, _ = self.model(batch.feeds)
                weights = position_weights(t_out, batch.feeds.get("attention_mask"))
                totals["loss"] += float(output_loss(self.o.loss, s_out, t_out, batch.labels, self.o, weights).sum())
                totals["n"] += batch.size
                if self.o.loss != "kl":
                    embeddings.append((t_out, s_out))
                for key, value in fidelity_sums(s_out, t_out, batch.labels, weights, self.o.loss).items():
                    totals[key] += float(value)
        self.model.train()
        summed = self.ctx.sum(torch.tensor(list(totals.values()), dtype=torch.float64)).tolist()
        ks = recall_ks([self.metric])
        sets = retrieval_fidelity(embeddings, idx, len(self.val_rows), self.ctx.sum, ks) if self.o.loss != "kl" else {}
        self._record_eval(dict(zip(totals, summed, strict=True)), sets)

    def _record_eval(self, totals: dict[str, float], retrieval: dict[str, float] | None = None) -> None:
        n = max(totals.pop("n"), 1.0)
        record = {"step": self.step, "val_loss": totals.pop("loss") / n}
        record.update({k: v / n for k, v in totals.items() if k in self._metric_names()})
        record.update(retrieval or {})  # embeddings: recall@10, spearman and retrieval_texts over the whole set
        record["fidelity"] = record[self.metric]
        self.evals.append(record)
        if self.best is None or record["fidelity"] > self.best["value"] + self.o.min_delta:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best, self.bad_evals = {"step": self.step, "value": record["fidelity"], "state": state}, 0
        elif self.step > 0:
            self.bad_evals += 1
            self.stopped = self.o.patience is not None and self.bad_evals >= self.o.patience

    def _metric_names(self) -> tuple[str, ...]:
        if self.o.loss != "kl":
            return ("cosine",)
        labeled = "labels" in self.val_rows[0]
        return ("agreement", "accuracy", "teacher_accuracy") if labeled else ("agreement",)

    def _restore_best(self) -> None:
        if self.best is None:
            return
        self.model.load_state_dict(self.best["state"])
        if self.best["step"] == 0 and self.step > 0:
            self.notes.append("no evaluation beat the student before training; it is returned unchanged")

    # ----------------------------------------------------------------------------------------- checkpoints

    def _save(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        if self.ctx.is_main and self.o.checkpoint_dir:
            state = {
                "format": 1, "fingerprint": self.o.fingerprint(), "step": self.step, "total": self.total,
                "model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": self.history, "evals": self.evals,
                "best": self.best, "bad_evals": self.bad_evals, "stopped": self.stopped, "rng": torch.get_rng_state(),
            }  # fmt: skip
            save_atomically(state, checkpoint_path(self.o.checkpoint_dir))
        self.ctx.barrier()

    def _resume(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        if not self.o.resume or not self.o.checkpoint_dir:
            return
        state = load_checkpoint(self.o.checkpoint_dir, self.o.fingerprint())
        if state is None:
            self.notes.append(f"no checkpoint in {self.o.checkpoint_dir}; started from the beginning")
            return
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise InputError(
                f"checkpoint in {self.o.checkpoint_dir} does not fit this student: {one_line(exc)}"
            ) from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.step = self.resumed_from = int(state["step"])
        self.history, self.evals, self.best = list(state["history"]), list(state["evals"]), state["best"]
        self.bad_evals, self.stopped = int(state["bad_evals"]), bool(state["stopped"])
        torch.set_rng_state(state["rng"])

    # ------------------------------------------------------------------------------------------- wrapping up

    def _remove_hooks(self) -> None:
        if self.teacher_taps is not None:
            self.teacher_taps.remove()
        model = getattr(self, "model", None)
        if model is not None:
            model.taps.remove()

    def _result(self, seconds: float) -> DistillResult:
        self.teacher.to(self.teacher_home)
        student = self.model.student.to(self.home).eval()
        first = self.evals[0] if self.evals and self.evals[0]["step"] == 0 else None
        return DistillResult(
            student=student, projections=self.model.projections.to(self.home).eval(), history=self.history,
            evals=self.evals, metric=self.metric, steps=self.step, total_steps=self.total,
            best_step=self.best["step"] if self.best else None,
            best_fidelity=self.best["value"] if self.best else None,
            initial_fidelity=first["fidelity"] if first else None,
            teacher_accuracy=first.get("teacher_accuracy") if first else None,
            stopped_early=self.stopped, resumed_from=self.resumed_from, world_size=self.ctx.world,
            train_samples=len(self.train_rows), val_samples=len(self.val_rows), seconds=seconds, notes=self.notes,
            speed={"precision": self.precision, "length_buckets": self.plan.lengths is not None,
                   **self.teacher_cache.facts()},
        )  # fmt: skip
