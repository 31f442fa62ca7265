"""``edgekit distill``: train a student to match a teacher, save its state_dict.

Light at import (typer only); torch loads when the command runs. Under ``torchrun --nproc_per_node N -m edgekit
distill ...`` every process trains its share of each global batch and rank 0 writes the output and the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgekit.cli._common import out, print_json

if TYPE_CHECKING:
    from edgekit.converters.distill import DistillFilesResult

_HELP = {
    "teacher": "Teacher source: file.py:function, package.module:function, .pt2, .pt or a model directory.",
    "student": "Student source (for example the pruned teacher), in any form --teacher takes.",
    "data": "Distillation data: .npz/.npy (with an optional 'labels' array), a directory of them, or a text file.",
    "val_data": "Validation data (same forms): fidelity is measured on it, the best student is kept.",
    "output": "Where to write the student's state_dict (.pt).",
    "loss": "kl (logits, with cross-entropy when the data has labels), mse or cosine (embeddings).",
    "epochs": "Passes over the data (default 3 unless --steps is given).",
    "steps": "Optimizer steps instead of epochs.",
    "batch_size": "Global batch size (split across processes under torchrun).",
    "temperature": "KL temperature.",
    "alpha": "Weight of hard-label cross-entropy (kl with labels).",
    "feature": "Match an intermediate layer, STUDENT_LAYER=TEACHER_LAYER (repeatable), through a learned projection.",
    "project": "mse/cosine: learn a projection when the student's output width differs from the teacher's.",
    "eval_every": "Evaluate every N steps (default: every epoch).",
    "patience": "Stop after this many evaluations without improvement.",
    "metric": "What validation fidelity means, for the best student and early stopping: auto (accuracy with labels,"
    " agreement for logits, cosine for embeddings), accuracy, agreement, cosine, spearman or recall@K (e.g."
    " recall@10: the teacher's nearest neighbours kept; embeddings over at least K+1 validation samples).",
    "checkpoint_dir": "Write a resumable checkpoint (last.pt) here.",
    "resume": "Continue from the checkpoint in --checkpoint-dir when there is one.",
    "max_length": "Tokens per text sample (default: the model's own, e.g. max_seq_length).",
    "no_progress": "Hide the progress bar.",
    "allow_pickle": "Allow loading pickled modules (runs code).",
    "json": "Print the summary as JSON.",
}


def distill_command(
    teacher: Annotated[str, typer.Option("--teacher", help=_HELP["teacher"])],
    student: Annotated[str, typer.Option("--student", help=_HELP["student"])],
    data: Annotated[Path, typer.Option("--data", help=_HELP["data"])],
    output: Annotated[Path, typer.Option("-o", "--output", help=_HELP["output"])],
    val_data: Annotated[Path | None, typer.Option("--val-data", help=_HELP["val_data"])] = None,
    loss: Annotated[str, typer.Option(help=_HELP["loss"])] = "kl",
    epochs: Annotated[int | None, typer.Option(help=_HELP["epochs"])] = None,
    steps: Annotated[int | None, typer.Option(help=_HELP["steps"])] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help=_HELP["batch_size"])] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.01,
    temperature: Annotated[float, typer.Option(help=_HELP["temperature"])] = 2.0,
    alpha: Annotated[float, typer.Option(help=_HELP["alpha"])] = 0.5,
    feature: Annotated[list[str], typer.Option("--feature", help=_HELP["feature"])] = [],  # noqa: B006
    project_outputs: Annotated[bool, typer.Option("--project-outputs", help=_HELP["project"])] = False,
    eval_every: Annotated[int | None, typer.Option("--eval-every", help=_HELP["eval_every"])] = None,
    patience: Annotated[int | None, typer.Option(help=_HELP["patience"])] = None,
    metric: Annotated[str, typer.Option(help=_HELP["metric"])] = "auto",
    checkpoint_dir: Annotated[str | None, typer.Option("--checkpoint-dir", help=_HELP["checkpoint_dir"])] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Checkpoint every N steps.")] = 100,
    resume: Annotated[bool, typer.Option("--resume", help=_HELP["resume"])] = False,
    seed: Annotated[int, typer.Option(help="Seed for initialization and data order.")] = 0,
    max_length: Annotated[int | None, typer.Option("--max-length", help=_HELP["max_length"])] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help=_HELP["allow_pickle"])] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help=_HELP["no_progress"])] = False,
    json_out: Annotated[bool, typer.Option("--json", help=_HELP["json"])] = False,
) -> None:
    """Distill a teacher into a student (KL/MSE/cosine, optional feature matching); save the student's weights."""
    from edgekit.converters.distill import DistillOptions, distill_files
    from edgekit.errors import InputError

    if epochs is not None and steps is not None:
        raise InputError("give --epochs or --steps, not both")
    if metric != "auto" and val_data is None:
        raise InputError(f"--metric {metric} judges the student on validation data: give --val-data")
    options = DistillOptions(
        loss=loss, epochs=epochs or 3, max_steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        temperature=temperature, alpha=alpha, features=layer_pairs_from(feature), project_outputs=project_outputs,
        eval_every=eval_every, patience=patience, metric=metric, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, seed=seed, progress=not (no_progress or json_out),
    )  # fmt: skip
    done = distill_files(teacher, student, data, output, options, val_data=val_data,
                         allow_pickle=allow_pickle, max_length=max_length)  # fmt: skip
    if done.output is not None:  # under torchrun only rank 0 wrote a file, and only it reports
        _print_summary(done, json_out)


def layer_pairs_from(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``--feature STUDENT_LAYER=TEACHER_LAYER`` items as (student layer, teacher layer) pairs."""
    from edgekit.errors import InputError

    pairs = []
    for item in items:
        student, sep, teacher = item.partition("=")
        if not sep or not student or not teacher:
            raise InputError(f"bad --feature {item!r}; expected STUDENT_LAYER=TEACHER_LAYER")
        pairs.append((student, teacher))
    return tuple(pairs)


def _print_summary(done: DistillFilesResult, as_json: bool) -> None:
    r = done.result
    summary = {**r.summary(), "output": str(done.output), "teacher_params": done.teacher_params,
               "student_params": done.student_params}  # fmt: skip
    if as_json:
        print_json(summary)
        return
    ratio = done.student_params / max(done.teacher_params, 1)
    out.print(f"[green]wrote[/green] {done.output}  (student state_dict, {done.student_params:,} parameters, "
              f"{ratio:.0%} of the teacher's {done.teacher_params:,})", soft_wrap=True)  # fmt: skip
    stop = ", stopped early" if r.stopped_early else ""
    loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
    out.print(f"{r.steps} steps on {r.train_samples} samples, {r.world_size} process(es), {r.seconds:.1f} s{stop}; "
              f"last loss {loss}", soft_wrap=True)  # fmt: skip
    if r.metric:
        teacher = f"; teacher {r.teacher_accuracy:.4f}" if r.teacher_accuracy is not None else ""
        out.print(f"validation {r.metric} ({r.val_samples} samples): {r.initial_fidelity:.4f} before -> "
                  f"{r.best_fidelity:.4f} best (step {r.best_step}){teacher}", soft_wrap=True)  # fmt: skip
    best = next((e for e in r.evals if e["step"] == r.best_step and "recall@10" in e), None)
    if best is not None:  # sentence embeddings: do the student's neighbours stay the teacher's?
        out.print(f"at the best step: recall@10 {best['recall@10']:.4f}, spearman {best.get('spearman', 0):.4f} "
                  f"over {best['retrieval_texts']} validation texts", soft_wrap=True)  # fmt: skip
    for note in r.notes:
        out.print(f"note: {note}", soft_wrap=True)
