"""``edgekit bench``: time models on every target; the measuring happens in :mod:`edgekit.benchmark`.

Exit codes follow the rest of the CLI: 2 for bad usage (checked before anything is measured; with ``--host`` that
includes an unreachable device, a refused key or host key, and a device without a usable edgekit), 1 when any
target failed to load or run (its row says why; the others are still measured and reported), else 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgekit.cli._common import err, out
from edgekit.cli._remote import AcceptNew, ConnectTimeout, Hosts, Identity, RemotePython, SSHConfig, ssh_options

if TYPE_CHECKING:
    from rich.console import Console

    from edgekit.benchmark.results import BenchReport

_HELP = {
    "models": "Artifact directories or .onnx files.",
    "target": "Runtime to time (repeatable); default: every available one.",
    "shape": "Input shape NAME=D0xD1... (e.g. input_ids=1x128), or DIM=N for a symbolic dim.",
    "batch": "Batch size(s), N[,N...]: one row per size.",
    "threads": "Intra-op threads for every target (default: each runtime's own).",
    "precision": "Precision to pin where the runtime allows it (OpenVINO: f32, bf16, f16).",
    "iterations": "Minimum timed runs per round.",
    "duration": "Minimum timed seconds per round.",
    "warmup": "Minimum warm-up seconds per round (and at least 5 runs).",
    "mode": "latency (single stream) or throughput (batches; OpenVINO async requests and streams).",
    "baseline": "'torch': also time the original PyTorch model (eager); with --texts, 'sentence-transformers': time"
    " SentenceTransformer.encode of the source directory. Either needs --baseline-source or --trust-source.",
    "texts": "Time Embedder.encode on these texts (one per line, blank lines skipped) at their natural lengths:"
    " --batch is texts per call (default 32), every round encodes them all; reports texts/s.",
    "baseline_source": "The PyTorch source for the torch baseline and fidelity reference, e.g. model.py:make"
    " (once for every model, or once per model in order). Without it nothing the artifact names is run.",
    "trust_source": "Use the source the artifact records, after checking its recorded sha256 (exit 2 if it changed).",
    "allow_pickle": "Allow a pickled PyTorch source (loading it runs code).",
    "rounds": "Rounds, alternating across targets; every measurement is a fresh process.",
    "json": "Write the full report (every sample) as JSON.",
    "csv": "Write one CSV row per result.",
    "markdown": "Write the report as Markdown.",
    "plot": "Write a PNG of the latency distributions (needs matplotlib).",
}
_Paths = Annotated[list[Path], typer.Argument(help=_HELP["models"], show_default=False)]
_Strs = list[str]
_OptPath = Path | None


def bench_command(
    models: _Paths,
    target: Annotated[_Strs, typer.Option("--target", "-t", help=_HELP["target"])] = [],  # noqa: B006
    shape: Annotated[_Strs, typer.Option("--shape", help=_HELP["shape"])] = [],  # noqa: B006
    batch: Annotated[str | None, typer.Option("--batch", help=_HELP["batch"])] = None,
    texts: Annotated[_OptPath, typer.Option("--texts", help=_HELP["texts"])] = None,
    threads: Annotated[int | None, typer.Option(help=_HELP["threads"])] = None,
    precision: Annotated[str | None, typer.Option(help=_HELP["precision"])] = None,
    iterations: Annotated[int, typer.Option(help=_HELP["iterations"])] = 50,
    duration: Annotated[float, typer.Option(help=_HELP["duration"])] = 2.0,
    warmup: Annotated[float, typer.Option(help=_HELP["warmup"])] = 1.0,
    mode: Annotated[str, typer.Option(help=_HELP["mode"])] = "latency",
    baseline: Annotated[str | None, typer.Option(help=_HELP["baseline"])] = None,
    baseline_source: Annotated[_Strs, typer.Option("--baseline-source", help=_HELP["baseline_source"])] = [],  # noqa: B006
    trust_source: Annotated[bool, typer.Option("--trust-source", help=_HELP["trust_source"])] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help=_HELP["allow_pickle"])] = False,
    rounds: Annotated[int, typer.Option(help=_HELP["rounds"])] = 3,
    json_path: Annotated[_OptPath, typer.Option("--json", help=_HELP["json"])] = None,
    csv_path: Annotated[_OptPath, typer.Option("--csv", help=_HELP["csv"])] = None,
    markdown_path: Annotated[_OptPath, typer.Option("--markdown", help=_HELP["markdown"])] = None,
    plot_path: Annotated[_OptPath, typer.Option("--plot", help=_HELP["plot"])] = None,
    host: Hosts = [],  # noqa: B006
    remote_python: RemotePython = "python3",
    identity: Identity = None,
    accept_new_host_key: AcceptNew = False,
    ssh_config: SSHConfig = None,
    connect_timeout: ConnectTimeout = 10.0,
) -> None:
    """Time models on every target: latency, cold start, memory and fidelity, each target in its own process."""
    import importlib.util

    from edgekit.benchmark import bench
    from edgekit.benchmark.plan import parse_batches
    from edgekit.errors import BackendError, RuntimeUnavailableError

    for path, what in ((json_path, "JSON"), (csv_path, "CSV"), (markdown_path, "Markdown"), (plot_path, "plot")):
        _check_output(path, what)
    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise RuntimeUnavailableError("--plot needs matplotlib: pip install 'edgekit[plot]'")
    batches = parse_batches(batch) if batch is not None else None
    ssh = ssh_options(remote_python, identity, accept_new_host_key, ssh_config, connect_timeout) if host else None
    with _progress(err) as progress:
        report = bench(
            models, target or None, shapes=shape, batches=batches, threads=threads, precision=precision,
            iterations=iterations, duration=duration, warmup=warmup, mode=mode, baseline=baseline,
            baseline_source=baseline_source, trust_source=trust_source, allow_pickle=allow_pickle,
            rounds=rounds, texts=texts, progress=progress, hosts=host, ssh=ssh,
        )  # fmt: skip
    _print_report(report)
    writers = ((json_path, report.write_json), (csv_path, report.write_csv),
               (markdown_path, report.write_markdown), (plot_path, report.write_plot))  # fmt: skip
    for path, write in writers:
        if path is not None:
            out.print(f"wrote {write(path)}")
    if report.failed:
        raise BackendError(_failure_line(report))


def _check_output(path: Path | None, what: str) -> None:
    """Fail on an unwritable report path now, not after minutes of measuring."""
    from edgekit.staging import check_writable_file

    if path is not None:
        check_writable_file(path, what)


def _print_report(report: BenchReport) -> None:
    from edgekit.benchmark.report import tables, warning_lines

    for item in tables(report, with_warnings=False):
        out.print(item)
    for line in warning_lines(report):
        err.print(line, soft_wrap=True)


def _failure_line(report: BenchReport) -> str:
    parts = [f"{r.model_name} on {r.label}: {r.to_dict()['error']}" for r in report.failed]
    return f"{len(report.failed)} of {len(report.results)} measurements failed: " + "; ".join(parts)


class _progress:
    """A rich progress bar on stderr while the worker processes run (drawn only on a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self) -> Callable[[int, int, str], None]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )  # fmt: skip
        self.bar.__enter__()
        self.task = self.bar.add_task("starting", total=None)

        def update(done: int, total: int, label: str) -> None:
            self.bar.update(self.task, completed=done, total=total, description=label)

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)
