"""``edgekit recipe``: the resolved recipe an artifact recorded (YAML, or JSON), or the recipe JSON Schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli._common import print_json
from edgekit.errors import InputError


def recipe_command(
    path: Annotated[
        Path | None, typer.Argument(help="An artifact (or its edgekit.json, or a recipe file to check).")
    ] = None,
    schema: Annotated[bool, typer.Option("--schema", help="Print the recipe's JSON Schema.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the recipe an artifact was converted with: replay it with `edgekit convert --recipe`."""
    from edgekit.converters.recipe import read_recipe, recipe_data, recipe_schema, recipe_yaml

    if schema:
        print_json(recipe_schema())
        return
    if path is None:
        raise InputError("give an artifact (or a recipe file), or --schema")
    recipe, _ = read_recipe(path)
    if json_out:
        print_json(recipe_data(recipe))
        return
    sys.stdout.write(recipe_yaml(recipe))
