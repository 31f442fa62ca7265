"""What every ``edgekit`` command shares: the consoles, ``--debug``, one-line errors and JSON/rich printing.

Exit codes: 0 ok, 1 a gate failed (validation, a failed run), 2 bad input, usage or a missing runtime.
A traceback is printed only with ``edgekit --debug ...``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, ParamSpec

import typer
from rich.console import Console
from rich.markup import escape

from edgekit.errors import EdgekitError, one_line

P = ParamSpec("P")
ProgressFn = Callable[[str], None]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
_state = {"debug": False}


def root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    """The options before the command name (``edgekit --debug run ...``)."""
    _state["debug"] = debug


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn an error into one line on stderr and its exit code (the traceback only with ``--debug``)."""
    try:
        yield
    except EdgekitError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/red] {escape(one_line(exc, typed=False))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        err.print(
            f"[red]internal error:[/red] {escape(one_line(exc))} (rerun with --debug)",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def with_reported_errors(command: Callable[P, None]) -> Callable[P, None]:
    """``command`` with its errors reported as :func:`reported_errors` does; Typer still sees its signature."""

    @functools.wraps(command)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> None:
        with reported_errors():
            command(*args, **kwargs)

    return reporting


@contextlib.contextmanager
def status(message: str, enabled: bool = True) -> Iterator[ProgressFn]:
    """A spinner on stderr that the library's progress messages update (drawn only on a terminal)."""
    if not enabled or not err.is_terminal:
        yield lambda m: None
        return
    with err.status(message) as spinner:
        yield lambda m: spinner.update(m)


def shape_text(shape: Sequence[Any]) -> str:
    """``[batch, 16]``, escaped so rich does not read it as markup."""
    return escape("[" + ", ".join(str(d) for d in shape) + "]")


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no rich), so ``--json`` output pipes into other tools unchanged."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
