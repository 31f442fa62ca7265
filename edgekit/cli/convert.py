"""``edgekit convert``: a PyTorch model (or an ONNX file) to a validated artifact, optionally compressed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgekit.cli._common import out, print_json, shape_text, status
from edgekit.errors import InputError
from edgekit.retrieval import RETRIEVAL_MIN_TEXTS

if TYPE_CHECKING:
    from edgekit.artifact import Manifest, Stage


def convert_command(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Argument(help="file.py:function, package.module:function, .pt2, .pt, a model dir, or model.onnx"),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Artifact directory to write.")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="Convert as this recipe says (YAML, or an artifact's edgekit.json to replay)."),
    ] = None,
    allow_source_change: Annotated[
        bool, typer.Option("--allow-source-change", help="Replay a recipe even if its source's sha256 changed.")
    ] = False,
    inputs: Annotated[list[str], typer.Option("--input", help="Input spec NAME:DTYPE[DIM,...] (repeatable).")] = [],  # noqa: B006
    dims: Annotated[list[str], typer.Option("--dim", help="Example size of a symbolic dim, NAME=SIZE.")] = [],  # noqa: B006
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    exporter: Annotated[str, typer.Option(help="auto, dynamo or torchscript.")] = "auto",
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow loading a pickled module (runs code).")
    ] = False,
    validate_target: Annotated[
        list[str], typer.Option("--validate-target", help="Also validate on this runtime.")
    ] = [],  # noqa: B006
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    quantize: Annotated[str, typer.Option(help="none, int8-dynamic, int8 (static QDQ), fp16 or auto.")] = "none",
    calib_data: Annotated[
        str | None, typer.Option("--calib-data", help="Calibration data: .npz/.npy, a directory of them, or text.")
    ] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="At most this many calibration samples.")] = 200,
    calibration: Annotated[str, typer.Option(help="Activation calibration: minmax, entropy or percentile.")] = "minmax",
    fidelity: Annotated[
        str | None,
        typer.Option(
            help='Fidelity target, e.g. "cosine>=0.99", "rel_l2<=0.05", "top1>=0.99" (classifiers); with'
            " --prune-until also the pruning search's floor."
        ),
    ] = None,
    output_kind: Annotated[
        list[str],
        typer.Option(
            "--output-kind", help="NAME=classifier|embedding|tensor: what an output is (top-1 needs a classifier)."
        ),
    ] = [],  # noqa: B006
    target: Annotated[
        list[str], typer.Option("--target", help="Runtime to build and validate a variant for (repeatable).")
    ] = [],  # noqa: B006
    prune: Annotated[
        float | None, typer.Option(help="Prune this fraction (0-1) of FFN neurons (transformers) or conv channels.")
    ] = None,
    prune_until: Annotated[
        str | None,
        typer.Option(
            "--prune-until",
            help='Prune in steps until e.g. "latency<=6ms" or "speedup>=1.3" on --target; with --fidelity, the'
            " largest ratio that also keeps it.",
        ),
    ] = None,
    prune_kind: Annotated[str, typer.Option("--prune-kind", help="structured, unstructured or 2:4.")] = "structured",
    prune_heads: Annotated[
        float | None,
        typer.Option("--prune-heads", help="Also remove this fraction of attention heads (default none)."),
    ] = None,
    drop_layers: Annotated[
        int,
        typer.Option(
            "--drop-layers",
            help="Remove this many whole encoder layers, those whose absence changes the output least on the data.",
        ),
    ] = 0,
    prune_importance: Annotated[
        str,
        typer.Option(
            "--prune-importance",
            help="auto (activations on the data for transformers, else l1), activation, l1, l2 or taylor.",
        ),
    ] = "auto",
    distill: Annotated[
        bool, typer.Option("--distill", help="Distill the pruned model from the original on edgekit's corpus.")
    ] = False,
    distill_data: Annotated[
        str | None, typer.Option("--distill-data", help="Add this data to the distillation (implies --distill).")
    ] = None,
    distill_texts: Annotated[
        int, typer.Option("--distill-texts", help="Sentences of edgekit's corpus to distil on (text models).")
    ] = 20_000,
    distill_epochs: Annotated[int, typer.Option("--distill-epochs", help="Distillation epochs.")] = 3,
    distill_steps: Annotated[
        int | None, typer.Option("--distill-steps", help="Distillation steps (overrides epochs).")
    ] = None,
    distill_time: Annotated[
        str | None,
        typer.Option(
            "--distill-time", help='Distillation time budget, e.g. "20m" (with epochs/steps: whichever ends first).'
        ),
    ] = None,
    distill_loss: Annotated[
        str | None,
        typer.Option("--distill-loss", help="kl, mse or cosine (default: kl for logits, cosine for embeddings)."),
    ] = None,
    distill_lr: Annotated[float, typer.Option("--distill-lr", help="Distillation learning rate.")] = 1e-4,
    distill_hidden: Annotated[
        bool | None,
        typer.Option(
            "--distill-hidden/--no-distill-hidden",
            help="Also match each layer's hidden states to its teacher layer's (default: on for transformer encoders).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of export probes, pruning, distillation, calibration split.")] = 0,
) -> None:
    """Export a PyTorch model (or take an ONNX model) to a validated artifact, optionally quantized per target.

    With --recipe the recipe says what to do; options given on the command line override its values (and the
    manifest records each override)."""
    if recipe is not None:
        _convert_recipe(ctx, recipe, output, allow_source_change, force, json_out)
        return
    if source is None or output is None:
        raise InputError("give SOURCE and -o OUT, or --recipe FILE")
    from edgekit.converters.compress_request import compress_request
    from edgekit.converters.pipeline import convert
    from edgekit.fidelity import parse_output_kinds
    from edgekit.specs import parse_dim_sizes, parse_specs

    specs = parse_specs(inputs)
    sizes = parse_dim_sizes(dims)
    kinds = parse_output_kinds(output_kind)
    shrink = compress_request(
        prune=prune, prune_until=prune_until, prune_kind=prune_kind, prune_heads=prune_heads,
        prune_importance=prune_importance, distill=distill, distill_data=distill_data, distill_texts=distill_texts,
        distill_epochs=distill_epochs, distill_steps=distill_steps, distill_time=distill_time,
        distill_loss=distill_loss, distill_lr=distill_lr, distill_hidden=distill_hidden, drop_layers=drop_layers,
        targets=target, seed=seed,
    )  # fmt: skip
    with status("converting", enabled=not json_out) as say:
        manifest = convert(
            source, output, input_specs=specs, dim_sizes=sizes, opset=opset, exporter=exporter,
            allow_pickle=allow_pickle, validate_targets=validate_target, force=force, progress=say,
            quantize=quantize, calib_data=calib_data, calib_samples=calib_samples, calibration=calibration,
            fidelity=fidelity, targets=target, compress=shrink, kinds=kinds, seed=seed,
        )  # fmt: skip
    _print_result(manifest, output, json_out)


def _convert_recipe(
    ctx: typer.Context, recipe: Path, output: Path | None, allow_source_change: bool, force: bool, json_out: bool
) -> None:
    """``--recipe``: the options given on the command line (not their defaults) override the recipe's values."""
    from edgekit.converters.replay import convert_recipe

    given = {
        p.name: (p.opts[0] if p.opts else p.name, ctx.params[p.name])
        for p in ctx.command.params
        if p.name and getattr(ctx.get_parameter_source(p.name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }  # by name: typer may carry its own copy of click's ParameterSource
    with status("converting", enabled=not json_out) as say:
        manifest = convert_recipe(recipe, output, overrides=given, allow_source_change=allow_source_change,
                                  force=force, progress=say)  # fmt: skip
    _print_result(manifest, Path(manifest.recipe["output"]) if manifest.recipe else output, json_out)


def _print_result(manifest: Manifest, output: Path | None, json_out: bool) -> None:
    if json_out:
        print_json(manifest.model_dump())
        return
    _print_convert_summary(manifest, output or Path("."))


def _print_convert_summary(manifest: Manifest, output: Path) -> None:
    export = next((s for s in manifest.stages if s.name == "export"), None)
    how = f"exporter {export.params['exporter']}" if export else f"from {manifest.source.kind}"
    out.print(f"[green]wrote[/green] {output}  ({how}, opset {manifest.opset})")
    io = Table(title="inputs / outputs")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("in", manifest.inputs), ("out", manifest.outputs)):
        for s in specs:
            io.add_row(kind, s["name"], s["dtype"], shape_text(s["shape"]))
    out.print(io)
    val = Table(title="validation against torch")
    for col in ("target", "precision", "min cosine", "max abs err", "cases", "result"):
        val.add_column(col)
    for t, r in manifest.validation.items():
        val.add_row(
            t, r["precision"], f"{r['min_cosine']:.6f}", f"{r['max_abs']:.3g}", str(len(r["cases"])),
            "[green]pass[/green]" if r["passed"] else "[red]fail[/red]",
        )  # fmt: skip
    out.print(val)
    for note in export.metrics.get("notes", []) if export else []:
        out.print(f"note: {note}")
    quant = next((s for s in manifest.stages if s.name == "quantize"), None)
    if quant is not None:
        _print_variants(manifest, quant)


def _print_variants(manifest: Manifest, stage: Stage) -> None:
    """Each target's model, and for ``auto`` every candidate with its fidelity and latency."""
    held = stage.metrics.get("heldout_fidelity") or {}
    table = Table(title="variants" + (" (fidelity on held-back samples)" if held else ""))
    for col in ("target", "file", "precision", *(("cosine", "min cosine", "recall@10", "spearman") if held else ())):
        table.add_column(col)
    for t, f in manifest.variants.items():
        fid = held.get(t)
        table.add_row(t, f, manifest.variant_precisions.get(f, "-"), *(_fidelity_cells(fid) if fid else ()))
    out.print(table)
    rows = stage.metrics.get("candidates", [])
    if not rows:
        return
    cand = Table(title=f"auto candidates (goal {stage.metrics.get('goal')})")
    for col in ("target", "scheme", "kept float", "cosine", "min cosine", "recall@10", "spearman", "meets", "p50 ms",
                "vs fp32", "chosen"):  # fmt: skip
        cand.add_column(col)
    for r in rows:
        cand.add_row(
            r["target"], r["scheme"], str(len(r["excluded_nodes"])), *_fidelity_cells(r["fidelity"]),
            "yes" if r["meets"] else "no",
            f"{r['latency']['p50_ms']:.2f}", f"{r['speedup_vs_fp32']:.2f}x", "*" if r.get("chosen") else "",
        )  # fmt: skip
    out.print(cand)


def _fidelity_cells(f: dict) -> list[str]:
    """cosine, min cosine, recall@10 and spearman ("-" where not measured: not an embedding, or too few texts)."""
    n = f.get("retrieval_texts")
    cells = [f"{f[k]:.5f}" if f.get(k) is not None else "-" for k in ("cosine", "min_cosine", "recall@10", "spearman")]
    return cells if n is None or n >= RETRIEVAL_MIN_TEXTS else [*cells[:2], *(f"{c} (n={n})" for c in cells[2:])]
