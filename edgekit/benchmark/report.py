"""Renderings of a :class:`BenchReport`: terminal tables, CSV, Markdown and a PNG of the latency distributions.

Every rendering shows the same numbers from the same rows; the JSON (``BenchReport.to_json``) is the
complete record, these are views of it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import RuntimeUnavailableError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from edgekit.benchmark.results import BenchReport, TargetResult

LATENCY_COLUMNS = ("model", "target", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std", "CV", "items/s",
                   "speedup", "status")  # fmt: skip
START_COLUMNS = ("model", "target", "load ms", "1st run ms", "cache cold→warm ms", "peak RSS", "model size",
                 "device/providers")  # fmt: skip
FIDELITY_COLUMNS = ("model", "target", "precision", "reference", "min cosine", "recall@10", "spearman", "max abs",
                    "rel err", "top-1", "in tol")  # fmt: skip
# Terminal headers: short, so three tables fit an 80-column terminal (Markdown keeps the long ones).
_SHORT = {"1st run ms": "1st ms", "cache cold→warm ms": "cache c→w ms", "peak RSS": "RSS", "model size": "size",
          "device/providers": "device", "precision": "prec", "reference": "ref", "min cosine": "cosine"}  # fmt: skip
_NUMERIC = ("ms", "std", "CV", "/s", "speedup", "batch", "RSS", "size", "cosine", "abs", "err", "top-1", "recall",
            "spearman")  # fmt: skip


_HEADLINE = {"latency": "p90", "texts": "texts/s"}


def _header(name: str, report: BenchReport, *, short: bool = True) -> str:
    """A column's header; with ``--texts`` the items counted are texts."""
    if name == "items/s" and report.method["mode"] == "texts":
        return "texts/s"
    return _SHORT.get(name, name) if short else name


def _short_reference(name: str | None) -> str:
    """The fidelity reference in a column that fits; "st" is sentence-transformers (the method lines say so)."""
    return "st" if name == "sentence-transformers" else (name or "-")


def _f(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _ms(value: float | None) -> str:
    """Three significant figures below 100 ms, whole-ish numbers above: 0.0165, 1.23, 17.3, 1234."""
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _size(value: int | None) -> str:
    if not value:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _speedup(r: TargetResult) -> str:
    if r.is_baseline:
        return "base"
    s = r.speedup or {}
    value = s.get("items_per_s") if "items_per_s" in s else s.get("p50")
    return _f(value, ".2f", "x")


def latency_cells(r: TargetResult) -> list[str]:
    lat = r.latency
    status = "ok" if r.ok else f"FAILED: {r.to_dict()['error']}"
    if lat is None:
        return [r.model_name, r.label, str(r.batch), *["-"] * 7, status]
    cv = f"{lat.cv:.1%}" + (" !" if r.high_cv else "")
    return [
        r.model_name, r.label, str(r.batch), _ms(lat.p50), _ms(lat.p90), _ms(lat.p99),
        f"{_ms(lat.mean)} ± {_ms(lat.std)}", cv, _rate(r.items_per_s), _speedup(r), status,
    ]  # fmt: skip


def start_cells(r: TargetResult) -> list[str]:
    cold = r.cold_start()
    cache = r.cache or {}
    cached = "-"
    if "cold_load_ms" in cache:
        cached = f"{cache['cold_load_ms']:.0f}→{cache['warm_load_ms']:.0f}"
    elif cache.get("error"):
        cached = "failed"
    session = r.session or {}
    providers = [p.removesuffix("ExecutionProvider") for p in session.get("providers", [])]
    device = f"{session.get('device', '-')}: {', '.join(providers) or '-'}"
    return [
        r.model_name, r.label, _ms(cold["load_ms"]), _ms(cold["first_inference_ms"]), cached,
        _size(r.memory()["peak_rss_bytes"]), _size(r.model_bytes), device,
    ]  # fmt: skip


def fidelity_cells(r: TargetResult) -> list[str]:
    fid = r.fidelity or {}
    ok = "-" if not fid else ("yes" if fid.get("passed") else "NO")
    return [
        r.model_name, r.label, (r.session or {}).get("precision", "-"), _short_reference(fid.get("reference")),
        _f(fid.get("min_cosine"), ".6f"), *_retrieval_cells(fid), _f(fid.get("max_abs"), ".3g"),
        _f(fid.get("rel_l2"), ".3g"),
        _f(fid.get("top1_agreement"), ".0%"), ok,
    ]  # fmt: skip


def _retrieval_cells(fid: dict) -> list[str]:
    """recall@10 and spearman; over fewer than RETRIEVAL_MIN_TEXTS texts they are coarse, so the count is shown."""
    from edgekit.retrieval import RETRIEVAL_MIN_TEXTS

    n = fid.get("retrieval_texts")
    note = f" (n={n})" if n is not None and n < RETRIEVAL_MIN_TEXTS else ""
    return [_f(fid.get("recall@10"), ".3f", note), _f(fid.get("spearman"), ".4f", note)]


SECTIONS: tuple[tuple[str, tuple[str, ...], Callable[[TargetResult], list[str]]], ...] = (
    ("latency", LATENCY_COLUMNS, latency_cells),
    ("cold start · memory", START_COLUMNS, start_cells),
    ("fidelity", FIDELITY_COLUMNS, fidelity_cells),
)


def method_lines(report: BenchReport) -> list[str]:
    m, machine = report.method, report.machine
    threads = m["threads"] if m["threads"] is not None else "runtime default"
    return [
        f"headline: {m['headline']}; percentiles: {m['percentiles']}",
        f"{m['rounds']} rounds, {m['order']}; {m['isolation']}",
        f"per round: warm-up >= {m['warmup_iterations']} runs and >= {m['warmup_s']:g} s, then >= "
        f"{m['iterations_min']} runs and >= {m['duration_min_s']:g} s; threads: {threads}",
        f"ONNX Runtime spinning: {m['ort_spinning']}",
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable of {machine['logical_cores']} cores, "
        f"{machine['system']}, python {machine['python']}",
        f"CPU features that change numerics: {' '.join(machine.get('cpu_flags') or []) or 'none edgekit knows'}",
        *_device_lines(report),
        *_text_lines(m),
    ]


def _device_lines(report: BenchReport) -> list[str]:
    """One line per remote device (``bench --host``): its CPU, the ISA flags that change numerics, edgekit, python."""
    devices = {r.host: r.remote for r in report.results if r.host and r.remote}
    return [
        f"device {host}: {d.get('cpu_model', '?')}, {d.get('usable_cores', '?')} usable cores, {d.get('system', '?')},"
        f" python {d.get('python', '?')}, edgekit {d.get('edgekit_version', '?')}; CPU features:"
        f" {' '.join(d.get('cpu_flags') or []) or 'none edgekit knows'}"
        for host, d in devices.items()
    ]


def _text_lines(method: dict[str, Any]) -> list[str]:
    texts = method.get("texts")
    if not texts:
        return []
    return [f"texts: {texts['count']} (sha256 {texts['sha256'][:12]}), {texts['chars_min']}-{texts['chars_max']}"
            " characters; every call tokenizes, batches and runs (ref st = sentence-transformers' encode)"]  # fmt: skip


def _terminal_hidden(report: BenchReport) -> set[str]:
    """Columns left to the files on a terminal, so the tables fit: mean ± std, items/s outside throughput, and
    recall@10/spearman when no model has an embedding output measured over a set of texts."""
    retrieval = any((r.fidelity or {}).get("recall@10") is not None for r in report.results)
    return (
        {"mean ± std"}
        | ({"items/s"} if report.method["mode"] == "latency" else set())
        | (set() if retrieval else {"recall@10", "spearman"})
    )


def tables(report: BenchReport, *, with_warnings: bool = True) -> list[RenderableType]:
    """Rich renderables for the terminal: the three tables, failures, method notes and (optionally) warnings."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    hidden = _terminal_hidden(report)
    out: list[RenderableType] = []
    for title, columns, cells in SECTIONS:
        if title == "latency":
            mode = report.method["mode"]
            title = f"edgekit bench · {mode} (headline: {_HEADLINE.get(mode, 'items/s')})"
        table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold underline")
        keep = [i for i, c in enumerate(columns) if c not in hidden]
        rows = [cells(r) for r in report.results]
        for i in keep:
            name, widest = columns[i], max((len(row[i]) for row in rows), default=1)
            numeric = name.endswith(_NUMERIC)
            floor = widest if numeric or name in ("model", "target") else None
            table.add_column(_header(name, report), justify="right" if numeric else "left", min_width=floor,
                             overflow="fold")  # fmt: skip
        for r, row in zip(report.results, rows, strict=True):
            if columns is LATENCY_COLUMNS and not r.ok:
                row[-1] = "FAILED"
            bad = not r.ok or (columns is FIDELITY_COLUMNS and bool(r.fidelity) and not r.fidelity["passed"])
            style = "red" if bad else ("yellow" if columns is LATENCY_COLUMNS and r.high_cv else None)
            table.add_row(*[escape(row[i]) for i in keep], style=style)
        out.append(table)
    out += [Text(f"failed: {r.model_name} · {r.label}: {r.to_dict()['error']}", style="red") for r in report.failed]
    out += [Text(line, style="dim") for line in method_lines(report)]
    if with_warnings:
        out += warning_lines(report)
    return out


def warning_lines(report: BenchReport) -> list[RenderableType]:
    from rich.text import Text

    return [Text(f"warning: {w}", style="yellow") for w in report.warnings]


def csv_text(report: BenchReport) -> str:
    """One CSV row per result (no raw samples: those are in the JSON)."""
    buf = io.StringIO()
    fields = ["model", "target", "host", "batch", "status", "error", "precision", "device", "providers", "threads",
              "backend_version", "n", "min_ms", "mean_ms", "std_ms", "cv", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
              "max_ms", "items_per_s", "speedup_p50", "speedup_p90", "load_ms", "first_inference_ms",
              "cache_cold_load_ms", "cache_warm_load_ms", "peak_rss_bytes", "model_bytes", "fidelity_reference",
              "fidelity_passed", "min_cosine", "recall_at_10", "spearman", "retrieval_texts", "max_abs", "rel_l2",
              "top1_agreement"]  # fmt: skip
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in report.results:
        d = r.to_dict()
        lat, session, fid = d["latency_ms"] or {}, d["session"] or {}, d["fidelity"] or {}
        cache, speed = r.cache or {}, r.speedup or {}
        writer.writerow({
            "model": r.model_name, "target": r.target, "host": r.host, "batch": r.batch, "status": d["status"],
            "error": d["error"],
            "precision": session.get("precision"), "device": session.get("device"),
            "providers": ";".join(session.get("providers", [])), "threads": session.get("threads"),
            "backend_version": session.get("backend_version"), "n": lat.get("n"),
            **{f"{k}_ms": lat.get(k) for k in ("min", "mean", "std", "p50", "p90", "p95", "p99", "max")},
            "cv": lat.get("cv"), "items_per_s": r.items_per_s if r.ok else None,
            "speedup_p50": speed.get("p50"), "speedup_p90": speed.get("p90"),
            "load_ms": d["cold_start"]["load_ms"], "first_inference_ms": d["cold_start"]["first_inference_ms"],
            "cache_cold_load_ms": cache.get("cold_load_ms"), "cache_warm_load_ms": cache.get("warm_load_ms"),
            "peak_rss_bytes": d["memory"]["peak_rss_bytes"], "model_bytes": r.model_bytes,
            "fidelity_reference": fid.get("reference"), "fidelity_passed": fid.get("passed"),
            "min_cosine": fid.get("min_cosine"), "recall_at_10": fid.get("recall@10"), "spearman": fid.get("spearman"),
            "retrieval_texts": fid.get("retrieval_texts"), "max_abs": fid.get("max_abs"), "rel_l2": fid.get("rel_l2"),
            "top1_agreement": fid.get("top1_agreement"),
        })  # fmt: skip
    return buf.getvalue()


def _md_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def markdown_text(report: BenchReport) -> str:
    """The report as Markdown: both tables, the method, the machine and every warning."""
    m = report.machine
    lines = [f"# edgekit bench · {report.method['mode']}", "",
             f"{report.created} · edgekit {report.edgekit_version} · {m['cpu_model']} · "
             f"{m['usable_cores']} cores · {m['system']}", ""]  # fmt: skip
    for title, columns, cells in SECTIONS:
        table = _md_table([_header(c, report, short=False) for c in columns], [cells(r) for r in report.results])
        lines += [f"## {title[0].upper()}{title[1:]}", "", *table, ""]
    lines += ["## Method", ""] + [f"- {line}" for line in method_lines(report)]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    lines += [f"- libraries: {libs}"]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a report."""
    return _atomic(Path(path), lambda f: f.write(text.encode()))


def _atomic(path: Path, write: Callable[[Any], object]) -> Path:
    from edgekit.artifact import atomic_write

    return atomic_write(path, write)


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """A PNG of every row's latency distribution (violin + box, p50 and p90 marked); needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeUnavailableError("the latency plot needs matplotlib: pip install 'edgekit[plot]'") from exc
    rows = [r for r in report.results if r.ok and r.samples_ms]
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.7 * max(len(rows), 1)), dpi=120)
    if rows:
        data = [r.samples_ms for r in rows]
        labels = [f"{r.model_name} · {r.label} · b{r.batch}" for r in rows]
        pos = list(range(1, len(rows) + 1))
        # matplotlib 3.10 added orientation= and deprecated vert=; pyproject admits 3.7
        major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
        horizontal: dict[str, Any] = {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}
        ax.violinplot(data, positions=pos, showextrema=False, widths=0.8, **horizontal)
        ax.boxplot(data, positions=pos, widths=0.25, showfliers=False, medianprops={"color": "black"}, **horizontal)
        for y, r in zip(pos, rows, strict=True):
            lat = r.latency
            assert lat is not None
            ax.plot([lat.p90], [y], marker="v", color="crimson", markersize=7)
            ax.annotate(f"p50 {_ms(lat.p50)}  p90 {_ms(lat.p90)} ms", (lat.p90, y), xytext=(6, 6),
                        textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()  # first row on top, as in the tables
        lo, hi = min(min(d) for d in data), max(max(d) for d in data)
        if lo > 0 and hi / lo > 20:
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no successful measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency per request (ms); ▼ = p90")
    m = report.machine
    ax.set_title(f"edgekit bench · {report.method['mode']} · {m['cpu_model']} ({m['usable_cores']} cores)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    try:
        return _atomic(Path(path), lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
