"""``edgekit run``: one run of a model on one target, with its outputs shown (or saved)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from edgekit.cli._common import out, print_json, shape_text

if TYPE_CHECKING:
    import numpy as np

    from edgekit.runtimes.oneshot import RunResult


def run_command(
    model: Annotated[Path, typer.Argument(help="Artifact directory or .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Runtime to run on.")] = "onnxruntime",
    inputs: Annotated[list[str], typer.Option("--input", help="NAME=FILE.npy (repeatable); random when none.")] = [],  # noqa: B006
    dims: Annotated[list[str], typer.Option("--dim", help="Size of a symbolic dim for random inputs.")] = [],  # noqa: B006
    output: Annotated[Path | None, typer.Option("--output", help="Write outputs to this .npz.")] = None,
    device: Annotated[str | None, typer.Option(help="Device (runtime-specific: cpu, cuda, GPU, AUTO...).")] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads.")] = None,
    precision: Annotated[str | None, typer.Option(help="Precision to pin (OpenVINO: f32, bf16, f16).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for random inputs.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a model once on a target and show (or save) its outputs."""
    from edgekit.errors import InputError
    from edgekit.runtimes.oneshot import run_once
    from edgekit.specs import parse_dim_sizes
    from edgekit.staging import check_writable_file

    files, sizes = feed_files_from(inputs), parse_dim_sizes(dims)
    if files and sizes:
        raise InputError("--dim sizes random inputs; with --input files the shapes come from the files")
    if output is not None:
        check_writable_file(output)
        if output.suffix.lower() != ".npz":
            raise InputError(f"--output {output} should end in .npz (the outputs are saved as an .npz archive)")
    result = run_once(model, target, files, dims=sizes, seed=seed, device=device, threads=threads, precision=precision)
    if output is not None:
        result.write_npz(output)
    summary = {name: _output_summary(v) for name, v in result.outputs.items()}
    if json_out:
        print_json({"info": result.info.to_dict(), "seconds": result.seconds, "outputs": summary,
                    "inputs": {k: list(v.shape) for k, v in result.inputs.items()}})  # fmt: skip
        return
    _print_run(model, result, summary, output)


def feed_files_from(items: list[str]) -> dict[str, Path]:
    """``--input NAME=FILE.npy`` items as input name -> file."""
    from edgekit.errors import InputError

    files: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"bad --input {item!r}; expected NAME=FILE.npy")
        if name in files:
            raise InputError(f"--input {name} is given twice")
        files[name] = Path(path)
    return files


def _output_summary(v: np.ndarray) -> dict[str, Any]:
    return {
        "shape": list(v.shape),
        "dtype": str(v.dtype),
        "mean": float(v.mean()) if v.size else None,
        "min": float(v.min()) if v.size else None,
        "max": float(v.max()) if v.size else None,
    }


def _print_run(model: Path, result: RunResult, summary: dict[str, dict[str, Any]], output: Path | None) -> None:
    info = result.info
    table = Table(title=f"{model.name} on {info.target} ({info.device}, {info.precision})")
    for col in ("output", "shape", "dtype", "mean", "min", "max"):
        table.add_column(col)
    for name, s in summary.items():
        table.add_row(name, shape_text(s["shape"]), s["dtype"], *(f"{s[k]:.5g}" if s[k] is not None else "-"
                                                                for k in ("mean", "min", "max")))  # fmt: skip
    out.print(table)
    out.print(f"first run {result.seconds * 1000:.2f} ms; providers: {', '.join(info.providers)}")
    if output is not None:
        out.print(f"wrote {output}")
