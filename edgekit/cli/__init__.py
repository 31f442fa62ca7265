"""The ``edgekit`` command: one module per command, each parses its options, makes one library call, prints.

Every command is registered here, the one way: wrapped so an error becomes one line on stderr and an exit
code (:mod:`edgekit.cli._common`). Importing this package stays light; heavy libraries load inside the
command that needs them. No library module imports this package.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from edgekit.cli._common import root, with_reported_errors
from edgekit.cli.bench import bench_command
from edgekit.cli.convert import convert_command
from edgekit.cli.distill import distill_command
from edgekit.cli.embed import embed_command
from edgekit.cli.inspect import inspect_command
from edgekit.cli.run import run_command
from edgekit.cli.targets import targets_command

COMMANDS: dict[str, Callable[..., None]] = {
    "targets": targets_command,
    "convert": convert_command,
    "run": run_command,
    "embed": embed_command,
    "inspect": inspect_command,
    "bench": bench_command,
    "distill": distill_command,
}

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress PyTorch models, export them to ONNX with proof, run and time them on edge runtimes.",
)
app.callback()(root)
for _name, _command in COMMANDS.items():
    app.command(_name)(with_reported_errors(_command))


def main() -> None:
    """Console-script entry point (``edgekit`` and ``python -m edgekit``)."""
    app()


__all__ = ["COMMANDS", "app", "main"]
