"""The ``edgekit`` command: one module per command, each parses its options, makes one library call, prints.

Every command is registered here, the one way: wrapped so an error becomes one line on stderr and an exit
code (:mod:`edgekit.cli._common`). Importing this package stays light; heavy libraries load inside the
command that needs them. No library module imports this package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from edgekit.cli._common import root, with_reported_errors
from edgekit.cli.bench import bench_command
from edgekit.cli.convert import convert_command
from edgekit.cli.distill import distill_command
from edgekit.cli.embed import embed_command
from edgekit.cli.inspect import inspect_command
from edgekit.cli.recipe import recipe_command
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
    "recipe": recipe_command,
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
    """Console-script entry point (``edgekit`` and ``python -m edgekit``).

    Usage errors (an unknown option, a value of the wrong type, a missing argument) are one ``error:`` line
    and exit 2 like every other bad input, instead of click's usage box; ``--help`` shows the usage.
    """
    from typer.exceptions import TyperException  # the base of the click exceptions typer carries

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("error: aborted\n")
        raise SystemExit(130) from None
    except TyperException as exc:
        message, ctx = exc.format_message(), getattr(exc, "ctx", None)  # type: ignore[attr-defined]
        if message:  # none after the help that a bare ``edgekit`` prints
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            sys.stderr.write(f"error: {message}{hint}\n")
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


__all__ = ["COMMANDS", "app", "main"]
