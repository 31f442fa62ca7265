"""``edgekit inspect``: what a model is (IO, opset, ops, size, precision) and, for an artifact, its history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli._common import out, print_json, shape_text


def inspect_command(
    model: Annotated[Path, typer.Argument(help="Artifact directory or .onnx file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's inputs/outputs, opset, ops, parameters, size, precision and manifest summary."""
    from edgekit.artifact import describe_model

    summary = describe_model(model)
    if json_out:
        print_json(summary)
        return
    _print_inspect(summary)


def _print_inspect(s: dict[str, Any]) -> None:
    out.print(f"[bold]{s['path']}[/bold]  opset {s['opset']}  precision {s['precision']}  "
              f"{s['parameters']:,} parameters  {s['size_bytes'] / 1e6:.2f} MB  {s['nodes']} nodes")  # fmt: skip
    io = Table(title="inputs / outputs")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for spec in s[kind]:
            io.add_row(kind[:-1], spec["name"], spec["dtype"], shape_text(spec["shape"]))
    out.print(io)
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in list(s["ops"].items())[:25]:
        ops.add_row(op, str(n))
    out.print(ops)
    if "manifest" in s:
        m = s["manifest"]
        out.print(f"source: {m['source']['kind']} {m['source']['ref']}")
        out.print(f"stages: {', '.join(m['stages'])}; created {m['created']} by edgekit {m['edgekit_version']}")
        for t, v in m["validation"].items():
            state = "pass" if v["passed"] else "FAIL"
            out.print(f"validated on {t}: {state} ({v['precision']}, min cosine {v['min_cosine']:.6f})")
