"""``edgekit targets``: every runtime edgekit knows, available or not, and what to install for the missing ones."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgekit.cli._common import out, print_json


def targets_command(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every runtime, available or not, with version, devices and what to install."""
    from edgekit.runtimes import describe_targets

    rows = describe_targets()
    if json_out:
        print_json(rows)
        return
    _print_targets(rows)


def _print_targets(rows: list[dict[str, Any]]) -> None:
    table = Table(title="edgekit targets")
    for col in ("target", "available", "version", "devices", "install / note"):
        table.add_column(col)
    for r in rows:
        note = r["note"] if r["available"] else (r["note"] or r["install"])
        cells = (r["name"], "yes" if r["available"] else "no", r["version"] or "-", ", ".join(r["devices"]), note)
        table.add_row(*map(escape, cells))
    out.print(table)
