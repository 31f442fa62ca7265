"""The ``edgekit`` command: thin, one library call per command, one-line errors.

Exit codes: 0 ok, 1 a gate failed (validation, a failed run), 2 bad input, usage or a missing runtime.
A traceback is printed only with ``edgekit --debug ...``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgekit.errors import EdgekitError, InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress PyTorch models, export them to ONNX with proof, run and time them on edge runtimes.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn edgekit errors into one line on stderr and the right exit code."""
    try:
        yield
    except EdgekitError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/red] {escape(_one_line(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        err.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(_one_line(exc))} (rerun with --debug)",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines)[:1000] if lines else type(exc).__name__


@contextlib.contextmanager
def _status(message: str, enabled: bool = True) -> Iterator[Any]:
    if not enabled or not err.is_terminal:
        yield lambda m: None
        return
    with err.status(message) as status:
        yield lambda m: status.update(m)


def _shape(shape: list[Any]) -> str:
    return escape("[" + ", ".join(str(d) for d in shape) + "]")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def targets(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every runtime, available or not, with version, devices and what to install."""
    with _errors():
        from edgekit.runtimes import describe_targets

        rows = describe_targets()
        if json_out:
            _print_json(rows)
            return
        table = Table(title="edgekit targets")
        for col in ("target", "available", "version", "devices", "install / note"):
            table.add_column(col)
        for r in rows:
            note = r["note"] if r["available"] else (r["note"] or r["install"])
            cells = (r["name"], "yes" if r["available"] else "no", r["version"] or "-", ", ".join(r["devices"]), note)
            table.add_row(*map(escape, cells))
        out.print(table)


@app.command()
def convert(
    source: Annotated[
        str, typer.Argument(help="file.py:function, package.module:function, .pt2, .pt, a model dir, or model.onnx")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Artifact directory to write.")],
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
        str | None, typer.Option(help='Fidelity target, e.g. "cosine>=0.99", "top1>=0.99", "max_abs<=1e-2".')
    ] = None,
    target: Annotated[
        list[str], typer.Option("--target", help="Runtime to build and validate a variant for (repeatable).")
    ] = [],  # noqa: B006
    prune: Annotated[float | None, typer.Option(help="Prune this fraction (0-1) of channels/neurons/heads.")] = None,
    prune_until: Annotated[
        str | None, typer.Option("--prune-until", help='Prune in steps until e.g. "latency<=6ms" on --target.')
    ] = None,
    prune_kind: Annotated[str, typer.Option("--prune-kind", help="structured, unstructured or 2:4.")] = "structured",
    prune_heads: Annotated[
        float | None, typer.Option("--prune-heads", help="Fraction of attention heads (default: --prune).")
    ] = None,
    prune_importance: Annotated[str, typer.Option("--prune-importance", help="l1, l2 or taylor.")] = "l1",
    distill_data: Annotated[
        str | None, typer.Option("--distill-data", help="Distill the pruned model from the original on this data.")
    ] = None,
    distill_epochs: Annotated[int, typer.Option("--distill-epochs", help="Distillation epochs.")] = 3,
    distill_steps: Annotated[
        int | None, typer.Option("--distill-steps", help="Distillation steps (overrides epochs).")
    ] = None,
    distill_loss: Annotated[
        str | None,
        typer.Option("--distill-loss", help="kl, mse or cosine (default: kl for logits, cosine for embeddings)."),
    ] = None,
    distill_lr: Annotated[float, typer.Option("--distill-lr", help="Distillation learning rate.")] = 1e-4,
) -> None:
    """Export a PyTorch model (or take an ONNX model) to a validated artifact, optionally quantized per target."""
    with _errors():
        from edgekit.converters.compress import CompressRequest
        from edgekit.converters.pipeline import convert as convert_model
        from edgekit.specs import parse_dim_sizes, parse_spec

        specs = [parse_spec(s) for s in inputs]
        sizes = parse_dim_sizes(dims)
        shrink = CompressRequest(
            prune=prune, prune_until=prune_until, prune_kind=prune_kind, prune_heads=prune_heads,
            prune_importance=prune_importance, prune_target=(target or ["onnxruntime"])[0],
            distill_data=distill_data, distill_epochs=distill_epochs, distill_steps=distill_steps,
            distill_loss=distill_loss, distill_lr=distill_lr,
        )  # fmt: skip
        with _status("converting", enabled=not json_out) as say:
            manifest = convert_model(
                source, output, input_specs=specs, dim_sizes=sizes, opset=opset, exporter=exporter,
                allow_pickle=allow_pickle, validate_targets=validate_target, force=force, progress=say,
                quantize=quantize, calib_data=calib_data, calib_samples=calib_samples, calibration=calibration,
                fidelity=fidelity, targets=target, compress=shrink,
            )  # fmt: skip
        if json_out:
            _print_json(manifest.model_dump())
            return
        _print_convert_summary(manifest, output)


def _print_convert_summary(manifest: Any, output: Path) -> None:
    export = next((s for s in manifest.stages if s.name == "export"), None)
    how = f"exporter {export.params['exporter']}" if export else f"from {manifest.source.kind}"
    out.print(f"[green]wrote[/green] {output}  ({how}, opset {manifest.opset})")
    io = Table(title="inputs / outputs")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, specs in (("in", manifest.inputs), ("out", manifest.outputs)):
        for s in specs:
            io.add_row(kind, s["name"], s["dtype"], _shape(s["shape"]))
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


def _print_variants(manifest: Any, stage: Any) -> None:
    """Each target's model, and for ``auto`` every candidate with its fidelity and latency."""
    table = Table(title="variants")
    for col in ("target", "file", "precision"):
        table.add_column(col)
    for t, f in manifest.variants.items():
        table.add_row(t, f, manifest.variant_precisions.get(f, "-"))
    out.print(table)
    rows = stage.metrics.get("candidates", [])
    if not rows:
        return
    cand = Table(title=f"auto candidates (goal {stage.metrics.get('goal')})")
    for col in ("target", "scheme", "kept float", "cosine", "min cosine", "meets", "p50 ms", "vs fp32", "chosen"):
        cand.add_column(col)
    for r in rows:
        f = r["fidelity"]
        cand.add_row(
            r["target"], r["scheme"], str(len(r["excluded_nodes"])), f"{f.get('cosine', float('nan')):.5f}",
            f"{f.get('min_cosine', float('nan')):.5f}", "yes" if r["meets"] else "no",
            f"{r['latency']['p50_ms']:.2f}", f"{r['speedup_vs_fp32']:.2f}x", "*" if r.get("chosen") else "",
        )  # fmt: skip
    out.print(cand)


def _load_feed_files(items: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"bad --input {item!r}; expected NAME=FILE.npy")
        p = Path(path)
        if not p.is_file():
            raise InputError(f"input file not found: {p}")
        try:
            feeds[name] = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read {p} as a .npy array: {_one_line(exc)}") from exc
    return feeds


def _write_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from edgekit.artifact import atomic_write

    atomic_write(path, lambda f: np.savez(f, **arrays))


@app.command()
def run(
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
    with _errors():
        import time

        from edgekit.api import load, model_ref
        from edgekit.specs import parse_dim_sizes, random_feeds

        ref = model_ref(model, target)
        feeds = _load_feed_files(inputs)
        sizes = parse_dim_sizes(dims)
        if not feeds:
            extras = (ref.manifest or {}).get("extras", {})
            ranges = {k: tuple(v) for k, v in extras.get("int_ranges", {}).items()}
            base = dict((ref.manifest or {}).get("dynamic_dims", {}))
            feeds = random_feeds(ref.inputs, {**base, **sizes}, seed=seed, int_range=ranges)
        with load(ref, target=target, device=device, threads=threads, precision=precision) as session:
            session.validate(feeds)
            start = time.perf_counter()
            result = session.run(feeds)
            elapsed = time.perf_counter() - start
            info = session.info()
        if output is not None:
            _write_npz_atomically(output, result)
        summary = {
            name: {
                "shape": list(v.shape),
                "dtype": str(v.dtype),
                "mean": float(v.mean()) if v.size else None,
                "min": float(v.min()) if v.size else None,
                "max": float(v.max()) if v.size else None,
            }
            for name, v in result.items()
        }
        if json_out:
            _print_json({"info": info.to_dict(), "seconds": elapsed, "outputs": summary,
                         "inputs": {k: list(v.shape) for k, v in feeds.items()}})  # fmt: skip
            return
        table = Table(title=f"{model.name} on {info.target} ({info.device}, {info.precision})")
        for col in ("output", "shape", "dtype", "mean", "min", "max"):
            table.add_column(col)
        for name, s in summary.items():
            table.add_row(name, _shape(s["shape"]), s["dtype"], *(f"{s[k]:.5g}" if s[k] is not None else "-"
                                                               for k in ("mean", "min", "max")))  # fmt: skip
        out.print(table)
        out.print(f"first run {elapsed * 1000:.2f} ms; providers: {', '.join(info.providers)}")
        if output is not None:
            out.print(f"wrote {output}")


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="Artifact directory or .onnx file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's inputs/outputs, opset, ops, parameters, size, precision and manifest summary."""
    with _errors():
        from edgekit.artifact import find_model
        from edgekit.onnxfile import model_summary, read_onnx

        path, manifest = find_model(model)
        summary = model_summary(read_onnx(path, check=manifest is None), path)
        if manifest is not None:
            summary["manifest"] = {
                "source": manifest.source.model_dump(),
                "created": manifest.created,
                "edgekit_version": manifest.edgekit_version,
                "stages": [s.name for s in manifest.stages],
                "validation": {
                    t: {"passed": r["passed"], "precision": r["precision"], "min_cosine": r["min_cosine"]}
                    for t, r in manifest.validation.items()
                },
                "files": len(manifest.files),
            }
        if json_out:
            _print_json(summary)
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
            io.add_row(kind[:-1], spec["name"], spec["dtype"], _shape(spec["shape"]))
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


from edgekit.benchmark.cli import register as _register_bench  # noqa: E402

_register_bench(app)

from edgekit.distill_cli import register as _register_distill  # noqa: E402

_register_distill(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
