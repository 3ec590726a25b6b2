"""Markdown tables of run results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskdistill.results import interval95


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _speed(r: dict[str, Any]) -> list[str]:
    lat = r.get("latency")
    gflops = "-" if r.get("gflops") is None else f"{r['gflops']:.3f}"
    if not lat:
        return [gflops, "-", "-"]
    return [gflops, f"{lat['p50_ms']:.2f} / {lat['p95_ms']:.2f}", f"{lat['throughput']:,.0f}"]


def speed_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """One sentence on what the student buys over the teacher (size, compute, measured latency), or None."""
    by = {r["stage"]: r for r in rows}
    t, s = by.get("teacher"), by.get("student")
    if not t or not s or not t.get("latency") or not s.get("latency") or not t.get("gflops") or not s.get("gflops"):
        return None
    speed = t["latency"]["p50_ms"] / max(s["latency"]["p50_ms"], 1e-9)
    flops = t["gflops"] / max(s["gflops"], 1e-12)
    size = t["params"] / max(s["params"], 1)
    if flops < 1.2:
        return (f"The student needs about the teacher's compute in this configuration ({s['gflops']:.3f} vs "
                f"{t['gflops']:.3f} GFLOPs; measured batch-1 p50 {s['latency']['p50_ms']:.2f} vs "
                f"{t['latency']['p50_ms']:.2f} ms): choose a smaller student architecture or input size to ship.")
    note = (f"The student needs {flops:.1f}x fewer FLOPs than the teacher and answers a single image "
            f"{speed:.1f}x faster (p50 {s['latency']['p50_ms']:.2f} vs {t['latency']['p50_ms']:.2f} ms, measured "
            f"here); it has {s['params'] / 1e6:.2f} M parameters against the teacher's {t['params'] / 1e6:.2f} M")
    if size < 1.5:
        note += (" (not fewer: its gain is compute at a smaller input size, not weights; pick a narrower student, "
                 "e.g. --set student.model.name=mobilenetv3_small_050, when the model file's size matters)")
    return note + "."


def separation(p1: float, p2: float, n: int) -> float:
    """Half-width (fraction) of the 95% interval of the difference of two accuracies on `n` test images each
    (unpaired normal approximation: conservative for two models scored on the same images)."""
    import math

    return 1.959963984540054 * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 1e-12) / max(n, 1))


def _with_interval(p: float, n: int) -> str:
    lo, hi = interval95(p, n)
    return f"{100 * p:.2f} ({100 * lo:.1f}-{100 * hi:.1f})"


def run_report(name: str, task: str, data_summary: dict[str, int], rows: list[dict[str, Any]], skipped: list[str],
               score_columns: Sequence[tuple[str, str]], class_names: Sequence[str],
               interval_scores: Sequence[str] = ()) -> str:
    """report.md of a run: one row per finished stage (`what`, `model`, `params`, `test` metrics, `seconds`,
    and `gflops` / `latency` where measured), the per-class scores, the speed note, and how sure the scores are.

    Scores in `interval_scores` (proportions over test images) carry their 95% Wilson interval, and pairs of
    rows whose headline scores the test set cannot tell apart are named.
    """
    headers = ["model", "architecture", "params (M)"]
    headers += [f"{title} %" + (" (95% CI)" if key in interval_scores else "") for title, key in score_columns]
    headers += ["train s", "GFLOPs", "batch-1 ms p50 / p95", "img/s"]

    def score(r: dict[str, Any], key: str) -> str:
        test = r["test"]
        return _with_interval(test[key], test["num_images"]) if key in interval_scores else fmt_pct(test[key])

    table = markdown_table(headers, [[r["what"], r["model"], f"{r['params'] / 1e6:.2f}",
                                      *[score(r, key) for _, key in score_columns], f"{r['seconds']:.0f}", *_speed(r)]
                                     for r in rows])
    data = ", ".join(f"{k}: {v}" for k, v in data_summary.items())
    out = [f"# {task.capitalize()} run `{name}`", "", f"Data: {data}.", "", table, ""]
    note = speed_note(rows)
    if note:
        out += [note, ""]
    out += _noise_notes(rows, score_columns[0], interval_scores)
    if rows:
        per_key = next(k for k in rows[0]["test"] if k.startswith("per_class_"))
        what = per_key[len("per_class_"):].replace("iou", "IoU")
        per_class = markdown_table(["class"] + [r["stage"] for r in rows],
                                   [[c] + [fmt_pct(r["test"][per_key].get(c)) for r in rows] for c in class_names])
        out += [f"Per-class {what} % (`-`: class absent from labels and predictions):", "", per_class, ""]
    if skipped:
        out += [f"{len(skipped)} unreadable image(s) were skipped:", ""] + [f"- `{p}`" for p in skipped[:50]] + [""]
    return "\n".join(out)


def _noise_notes(rows: list[dict[str, Any]], headline: tuple[str, str], interval_scores: Sequence[str]) -> list[str]:
    """Lines naming the pairs of rows the test set is too small to separate, or why no interval is shown."""
    title, key = headline
    if key not in interval_scores:
        return [f"No interval is shown for {title}: it is a per-pixel score over images that are not independent "
                f"samples of pixels; compare seeds (`taskdistill sweep`) to see its spread.", ""]
    close = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            n = min(a["test"]["num_images"], b["test"]["num_images"])
            gap, half = abs(a["test"][key] - b["test"][key]), separation(a["test"][key], b["test"][key], n)
            if gap < half:
                close.append(f"- {a['stage']} vs {b['stage']}: {100 * gap:.2f} points apart, within the test set's "
                             f"95% noise of ±{100 * half:.2f} points ({n:,} images)")
    if not close:
        return [f"Every pair of rows differs in {title} by more than the 95% noise of the test set.", ""]
    return ["**The test set is too small to separate these rows** (a larger test set or more seeds would):", "",
            *close, ""]
