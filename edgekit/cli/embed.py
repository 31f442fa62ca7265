"""``edgekit embed``: a file of texts (one per line, or stdin) to a file of vectors, on one target."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from edgekit.cli._common import err, out, print_json, shape_text

if TYPE_CHECKING:
    from edgekit.runtimes.embedfile import EmbedFileResult, ProgressFn

PROGRESS_FROM = 256  # texts; fewer finish before a bar would be worth drawing

_HELP = {
    "texts": "File with one text per line (blank lines are skipped), or - for stdin.",
    "output": "Where the vectors go: .npy (float32 [n, dim]) or .jsonl (text + vector per line).",
    "max_length": "Tokens per text (default: the model's own, e.g. sentence-transformers' max_seq_length).",
    "prompt": "Prepended to every text, e.g. 'query: '.",
    "quiet": "No progress bar.",
}


def embed_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory of a text-embedding model.")],
    texts: Annotated[str, typer.Argument(help=_HELP["texts"])] = "-",
    output: Annotated[Path | None, typer.Option("-o", "--output", help=_HELP["output"])] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Runtime to run on.")] = "onnxruntime",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per batch.")] = 32,
    max_length: Annotated[int | None, typer.Option("--max-length", help=_HELP["max_length"])] = None,
    prompt: Annotated[str | None, typer.Option(help=_HELP["prompt"])] = None,
    device: Annotated[str | None, typer.Option(help="Device (runtime-specific: cpu, cuda, GPU, AUTO...).")] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads.")] = None,
    precision: Annotated[str | None, typer.Option(help="Precision to pin (OpenVINO: f32, bf16, f16).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=_HELP["quiet"])] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed texts with a converted sentence-embedding model; write the vectors to .npy or .jsonl."""
    from edgekit.errors import InputError
    from edgekit.runtimes.embedfile import embed_file

    if output is None:
        raise InputError("give the output file: -o vectors.npy (or .jsonl)")
    source = sys.stdin if texts == "-" else Path(texts)
    with _progress_bar(enabled=not quiet) as progress:
        result = embed_file(artifact, source, output, target=target, batch_size=batch_size, max_length=max_length,
                            prompt=prompt, progress=progress, device=device, threads=threads,
                            precision=precision)  # fmt: skip
    if json_out:
        print_json(result.to_dict())
        return
    _print_summary(result)


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressFn | None]:
    """A rich bar on stderr, drawn on a terminal for inputs of :data:`PROGRESS_FROM` texts or more."""
    if not enabled or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if total < PROGRESS_FROM:
                return
            if task is None:
                task = bar.add_task("embedding", total=total)
            bar.update(task, completed=done)

        yield update


def _print_summary(r: EmbedFileResult) -> None:
    skipped = f" ({r.skipped} blank line{'s' if r.skipped != 1 else ''} skipped)" if r.skipped else ""
    out.print(f"embedded {r.count} texts{skipped} -> {escape(str(r.output))}  {shape_text([r.count, r.dim])} float32",
              soft_wrap=True)  # fmt: skip
    out.print(f"{r.seconds:.2f} s, {r.texts_per_s:,.1f} texts/s on {r.target} ({r.precision}), "
              f"max_length {r.max_length}, batch {r.batch_size}", soft_wrap=True)  # fmt: skip
