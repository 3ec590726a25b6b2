"""Sweep report: results files, a method x budget table, two plots and a self-contained HTML page.

A record is one finished cell of a label-budget sweep (a flat dict with at least `method`, `budget` and
the metric, usually also `seed` and `seconds`). Metrics are fractions in [0, 1] and are shown in percent.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskdistill.atomic import atomic_path, write_text
from taskdistill.report.markdown import markdown_table

Groups = dict[str, dict[int, list[float]]]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
LABELS_PER_CLASS = "labels per class"  # what a budget counts: this, or e.g. "labeled images" (segmentation)


# ---- number formatting (the only place numbers become text) -------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _cell(values: Sequence[float], show_n: bool) -> str:
    """`mean ± sample std` in percent; a single value has no std; `(n=k)` when cells differ in size."""
    mean, std = mean_std(values)
    text = _pct(mean) if len(values) == 1 else f"{_pct(mean)} ± {_pct(std)}"
    return f"{text} (n={len(values)})" if show_n else text


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _metric_name(metric: str) -> str:
    return {"top1": "top-1 accuracy", "macro_accuracy": "macro accuracy", "miou": "mIoU",
            "pixel_accuracy": "pixel accuracy", "mean_accuracy": "mean pixel accuracy"}.get(metric, metric)


def _unit_header(budget_unit: str) -> str:
    """Column suffix of a budget: `labels/class` (classification) or the unit as given (`labeled images`)."""
    return "labels/class" if budget_unit == LABELS_PER_CLASS else budget_unit


# ---- records --------------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1); std is 0 for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _group(records: Sequence[dict[str, Any]], metric: str) -> Groups:
    """{method: {budget: [metric per seed]}}, methods in first-seen order; clear ValueErrors on bad input."""
    if not records:
        raise ValueError("no sweep records to report: the sweep has not finished any cell yet")
    groups: Groups = {}
    for i, r in enumerate(records):
        missing = [k for k in ("method", "budget", metric) if r.get(k) is None]
        if missing:
            numeric = sorted(k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
            raise ValueError(f"record {i} (method={r.get('method')!r}, budget={r.get('budget')!r}, "
                             f"seed={r.get('seed')!r}) has no {', '.join(map(repr, missing))}; "
                             f"numeric keys it does have: {numeric}")
        groups.setdefault(str(r["method"]), {}).setdefault(int(r["budget"]), []).append(float(r[metric]))
    return groups


def _budgets(groups: Groups) -> list[int]:
    return sorted({b for per_budget in groups.values() for b in per_budget})


def _mean_seconds(records: Sequence[dict[str, Any]], method: str, budget: int | None = None) -> float | None:
    secs = [float(r["seconds"]) for r in records if str(r.get("method")) == method and r.get("seconds") is not None
            and (budget is None or int(r["budget"]) == budget)]
    return float(np.mean(secs)) if secs else None


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} in results.json")


def write_results(records: list[dict[str, Any]], folder: Path) -> None:
    """Write `results.json` (the list as is) and `results.csv` (nested dicts flattened to `a.b` columns)."""
    folder = Path(folder)
    write_text(folder / "results.json", json.dumps(records, indent=2, default=_json_default) + "\n")
    rows = [_flatten(r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(folder / "results.csv", buf.getvalue())


def load_results(folder_or_file: Path) -> list[dict[str, Any]]:
    """Read the records from `results.json` (give the file or the folder holding it)."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no sweep results at {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path} should hold a JSON list of result records (objects)")
    return data


# ---- table ----------------------------------------------------------------------------------------
def _table(records: Sequence[dict[str, Any]], metric: str,
           budget_unit: str = LABELS_PER_CLASS) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and rows of (text, bold) cells, shared by the markdown and HTML renderings."""
    groups = _group(records, metric)
    budgets = _budgets(groups)
    show_n = len({len(v) for per_budget in groups.values() for v in per_budget.values()}) > 1
    best = {b: max(round(100 * mean_std(g[b])[0], 2) for g in groups.values() if b in g) for b in budgets}
    rows = []
    for method, per_budget in groups.items():
        row = [(method, False)]
        for b in budgets:
            v = per_budget.get(b)
            row.append(("–", False) if v is None else (_cell(v, show_n), round(100 * mean_std(v)[0], 2) == best[b]))
        row.append((_secs(_mean_seconds(records, method)), False))
        rows.append(row)
    headers = ["method"] + [f"{b} {_unit_header(budget_unit)}" for b in budgets] + ["mean wall time (s)"]
    return headers, rows


def summary_table(records: Sequence[dict[str, Any]], metric: str = "top1", budget_unit: str = LABELS_PER_CLASS) -> str:
    """Markdown table: methods x budgets, `mean ± std` of `metric` in %, best mean per budget in bold."""
    headers, rows = _table(records, metric, budget_unit)
    return markdown_table(headers, [[f"**{t}**" if bold else t for t, bold in row] for row in rows])


def _html_table(records: Sequence[dict[str, Any]], metric: str, budget_unit: str = LABELS_PER_CLASS) -> str:
    headers, rows = _table(records, metric, budget_unit)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f"<td><strong>{html.escape(t)}</strong></td>" if bold else f"<td>{html.escape(t)}</td>" for t, bold in row
    ) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


# ---- plots ----------------------------------------------------------------------------------------
def _new_axes(title: str) -> tuple[Any, Any]:
    """A Figure with an Agg canvas (pyplot and the global backend are left alone) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.35)
    return fig, ax


def _log_if_wide(ax: Any, values: Sequence[float]) -> None:
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_xscale("log")


def _save(fig: Any, ax: Any, path: Path, legend_title: str = "method") -> None:
    ax.legend(title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_accuracy_vs_labels(records: Sequence[dict[str, Any]], path: Path, metric: str = "top1",
                            budget_unit: str = LABELS_PER_CLASS) -> None:
    """PNG: `metric` (%) against the label budget, one line per method with sample-std error bars."""
    groups = _group(records, metric)
    budgets = _budgets(groups)
    fig, ax = _new_axes(f"{_metric_name(metric)} vs {budget_unit} (mean ± std over seeds)")
    for i, (method, per_budget) in enumerate(groups.items()):
        xs = sorted(per_budget)
        stats = [mean_std(per_budget[b]) for b in xs]
        ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], label=method,
                    marker=MARKERS[i % len(MARKERS)], capsize=4, linewidth=1.8)
    _log_if_wide(ax, budgets)
    ax.set_xticks(budgets, labels=[str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel(budget_unit)
    ax.set_ylabel(f"{_metric_name(metric)} (%)")
    _save(fig, ax, Path(path))


def plot_accuracy_vs_compute(records: Sequence[dict[str, Any]], path: Path, metric: str = "top1",
                             budget_unit: str = LABELS_PER_CLASS) -> None:
    """PNG: `metric` (%) against mean wall-clock seconds per run, one panel per budget, one marker per method
    (sample-std error bars); the x axis is shared, so a method's cost can be read across budgets.

    Wall time is the one compute measure every cell records end to end (teacher, distillation, finetune).
    """

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _group(records, metric)
    budgets = _budgets(groups)
    points: dict[int, list[tuple[int, str, float, float, float]]] = {b: [] for b in budgets}
    for i, (method, per_budget) in enumerate(groups.items()):
        for b in sorted(per_budget):
            if (sec := _mean_seconds(records, method, b)) is not None:
                points[b].append((i, method, sec, *mean_std(per_budget[b])))
    all_x = [p[2] for pts in points.values() for p in pts]
    if not all_x:
        raise ValueError("no record has `seconds`: cannot plot accuracy against training time")
    cols = min(4, len(budgets))
    rows = math.ceil(len(budgets) / cols)
    fig = Figure(figsize=(3.2 * cols + 2.4, 3.4 * rows + 0.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    for ax, b in zip(axes, budgets, strict=False):
        for i, method, sec, mean, std in points[b]:
            handles[method] = ax.errorbar([sec], [100 * mean], yerr=[100 * std], marker=MARKERS[i % len(MARKERS)],
                                          color=f"C{i % 10}", markersize=8, capsize=4, linestyle="none")
        ax.set_title(f"{b} {budget_unit}")
        ax.grid(True, which="major", alpha=0.35)
        _log_if_wide(ax, all_x)
        ax.set_ylabel(f"{_metric_name(metric)} (%)")
        ax.set_xlabel("training time per run (s)")
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    fig.suptitle(f"{_metric_name(metric)} vs wall-clock training time (mean ± std over seeds)")
    fig.legend(list(handles.values()), list(handles), title="method", loc="outside right upper", frameon=False)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")


# ---- report ---------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;
padding:.35em .7em;text-align:right}th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#666;font-size:.9em}"""


def how_sure(records: Sequence[dict[str, Any]], metric: str) -> list[str]:
    """Lines on how sure the table is: each budget's best method against the runner-up, with the seed spread
    and (for image-level proportions, when records carry `num_images`) the test set's 95% noise."""
    groups = _group(records, metric)
    n = min((int(r["num_images"]) for r in records if r.get("num_images")), default=0)
    proportion = metric in ("top1", "macro_accuracy") and n > 0
    lines = []
    for b in _budgets(groups):
        ranked = sorted(((mean_std(v[b])[0], m, v[b]) for m, v in groups.items() if b in v), reverse=True)
        if len(ranked) < 2:
            continue
        (m1, best, v1), (m2, second, v2) = ranked[0], ranked[1]
        seeds = min(len(v1), len(v2))
        spread = math.sqrt((mean_std(v1)[1] ** 2 + mean_std(v2)[1] ** 2) / max(seeds, 1)) if seeds > 1 else 0.0
        test = 1.96 * math.sqrt((m1 * (1 - m1) + m2 * (1 - m2)) / (n * max(seeds, 1))) if proportion else 0.0
        noise = 1.96 * spread + test if seeds > 1 or proportion else None
        if noise is None:
            continue
        gap = m1 - m2
        verdict = "separated" if gap > noise else "NOT separated"
        lines.append(f"- budget {b}: {best} leads {second} by {100 * gap:.2f} points; 95% noise ±{100 * noise:.2f} "
                     f"(seed spread over {seeds} seeds" + (f" + test set of {n:,} images" if proportion else "")
                     + f"): {verdict}")
    if not lines:
        return []
    return ["How sure: the best method of each budget against the runner-up (a gap below the noise needs more "
            "seeds or a larger test set):", "", *lines]


def write_sweep_report(records: list[dict[str, Any]], folder: Path, title: str,
                       metric: str = "top1", budget_unit: str = LABELS_PER_CLASS) -> dict[str, Path]:
    """Write results.json/.csv, the two PNGs, report.md and a self-contained report.html; return their paths.

    `metric`: the record key tabled and plotted (`top1`; `miou` for segmentation); `budget_unit`: what a
    budget counts (`labels per class`; `labeled images` for segmentation)."""
    folder = Path(folder)
    table = summary_table(records, metric, budget_unit)  # validates before anything is written
    write_results(records, folder)
    paths = {"results_json": folder / "results.json", "results_csv": folder / "results.csv",
             "accuracy_vs_labels": folder / "accuracy_vs_labels.png"}
    plot_accuracy_vs_labels(records, paths["accuracy_vs_labels"], metric, budget_unit)
    if any(r.get("seconds") is not None for r in records):
        paths["accuracy_vs_compute"] = folder / "accuracy_vs_compute.png"
        plot_accuracy_vs_compute(records, paths["accuracy_vs_compute"], metric, budget_unit)
    seeds = {r.get("seed") for r in records}
    note = (f"Cells: `{metric}` in %, mean ± sample std (ddof=1) over seeds ({len(seeds)} distinct); "
            "best mean per budget in bold. Wall time: mean `seconds` per run of the method.")
    sure = how_sure(records, metric)
    pngs = [(k, p) for k, p in paths.items() if p.suffix == ".png"]
    md = [f"# {title}", "", note, "", table, "", *sure, ""] + [f"![{k}]({p.name})\n" for k, p in pngs]
    paths["report_md"] = folder / "report.md"
    write_text(paths["report_md"], "\n".join(md))
    imgs = "".join(f'<h2>{html.escape(k.replace("_", " "))}</h2>\n<img alt="{k}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode("ascii")}">\n' for k, p in pngs)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="note">{html.escape(note).replace("`", "")}</p>\n{_html_table(records, metric, budget_unit)}\n'
            + "".join(f'<p class="note">{html.escape(line.lstrip("- ")).replace("`", "").replace("**", "")}</p>\n'
                      for line in sure if line)
            + f"{imgs}</body></html>\n")
    paths["report_html"] = folder / "report.html"
    write_text(paths["report_html"], page)
    return paths


__all__ = ["load_results", "plot_accuracy_vs_compute", "plot_accuracy_vs_labels", "summary_table",
           "write_results", "write_sweep_report"]
